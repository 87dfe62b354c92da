"""Issue 13's numbers, side by side: commit 7255a66 (main when the issue was filed) and
this working tree, on the same machine, in alternating rounds so load affects both alike.

For each tree, in a child process with that tree first on PYTHONPATH (this venv's python):

- `cycles_per_s`: whole simulated sessions on the virtual clock, hold 0 and pause 0, the
  journal on a file as `dnpair run --clock virtual` keeps it; the best of the rounds;
- `replay_records_per_s`: that journal read back and replayed (`dnpair replay`'s work:
  read_records + replay_records); the best of the rounds;
- `statemachine_cpu_share`: under cProfile, the share of self time spent in
  python-statemachine's modules over one such session (and, separately, with the stdlib
  modules it calls per callback and per machine: inspect, enum, queue, threading).

Prints one JSON line per tree, then one with the ratios and the issue's targets (>= 5x
cycles/s, statemachine <= 20 % of CPU, replay >= 6x). A measurement, not a test.
`BENCH_COMPARE_CYCLES` / `BENCH_COMPARE_ROUNDS` override the size (default 150 and 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The reference; BENCH_COMPARE_BASE measures against another commit instead.
BASE_COMMIT = os.environ.get("BENCH_COMPARE_BASE", "7255a66")

# Runs inside the child: only APIs both trees have.
CHILD = r"""
import asyncio, cProfile, json, pstats, sys, tempfile, time
from pathlib import Path
from adapters.sim import SimVenue
# Which layout this tree has, from its files: this venv's editable install of the
# working tree would otherwise answer `engine.core...` imports inside the old tree.
LAYERED = Path("engine/core").is_dir()
if LAYERED:  # engine/ in layers (issue 13)
    from engine.core.clock import VirtualClock
    from engine.runtime.config import load_settings
    from engine.core.journal import Journal, read_records
    from engine.core.replay import replay_records
    from engine.runtime.run import RunOptions, Session, parse_pair
else:  # 7255a66: engine/ flat
    from engine.clock import VirtualClock
    from engine.config import load_settings
    from engine.journal import Journal, read_records
    from engine.replay import replay_records
    from engine.run import RunOptions, Session, parse_pair

cycles, what = int(sys.argv[1]), sys.argv[2]
PAIR = parse_pair("ETH-SOL")
FAST = {"DN_HOLD_S": "0", "DN_PAUSE_S": "0"}
# The same work on both sides: 7255a66 only knew taker cycles, and the default is now
# maker_first (resting orders: more steps per cycle). A tree that knows the flag runs taker.
if "execution" in Path("engine/runtime/config.py" if LAYERED else "engine/config.py").read_text():
    FAST["DN_EXECUTION"] = "taker"


def session(journal):
    clock = VirtualClock()
    venue = SimVenue(clock, 1, None, PAIR)
    opts = RunOptions(pair=PAIR, cycles=cycles, clock="virtual", seed=1, quiet=True)
    settings = load_settings(env=FAST)
    if LAYERED:  # after issue 13's runtime split: one composition root
        from engine.runtime.compose import build_session
    elif Path("engine/compose.py").is_file():  # the runtime split before the layers
        from engine.compose import build_session
    else:  # 7255a66
        build_session = None
    if build_session is None:
        return Session(opts, settings, venue, clock, journal, lambda _l: None)
    return build_session(
        opts, settings, venue=venue, clock=clock, journal=journal, out=lambda _l: None
    )


out = {}
with tempfile.TemporaryDirectory() as tmp:
    path = str(Path(tmp) / "j.db")
    journal = Journal(path, durable="process")
    s = session(journal)
    if what == "profile":
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(s.run_virtual())
        prof.disable()
        stats = pstats.Stats(prof)
        total = sum(v[2] for v in stats.stats.values())
        sm = sum(v[2] for k, v in stats.stats.items() if "/statemachine/" in k[0])
        # the stdlib it leans on per callback and per machine (signature binding, enum
        # flags, the event queues and their locks); the engine barely uses these itself
        lib = ("/inspect.py", "/enum.py", "/queue.py", "/threading.py")
        used = sum(v[2] for k, v in stats.stats.items() if k[0].endswith(lib))
        out["statemachine_cpu_share"] = round(sm / total, 3)
        out["statemachine_and_stdlib_it_calls_share"] = round((sm + used) / total, 3)
    else:
        t0 = time.perf_counter()
        asyncio.run(s.run_virtual())
        out["cycles_per_s"] = cycles / (time.perf_counter() - t0)
        journal.close()
        t0 = time.perf_counter()
        records = list(read_records(path))
        result = replay_records(records)
        elapsed = time.perf_counter() - t0
        assert result.divergence is None, result.divergence
        out["replay_records_per_s"] = len(records) / elapsed
        out["records"] = len(records)
    assert s.summary()["cycles_completed"] == cycles
out["engine_file"] = sys.modules[type(s).__module__].__file__
print(json.dumps(out))
"""


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def _measure(tree: Path, cycles: int, what: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(cycles), what],
        cwd=tree,
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"{what} in {tree} failed:\n{done.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not str(out.get("engine_file", "")).startswith(str(tree)):
        raise RuntimeError(f"{tree}: the child ran another tree's engine ({out})")
    return out


def main() -> None:
    cycles = int(os.environ.get("BENCH_COMPARE_CYCLES", "150"))
    rounds = int(os.environ.get("BENCH_COMPARE_ROUNDS", "3"))
    with tempfile.TemporaryDirectory(prefix="dn-base-") as tmp:
        base = Path(tmp) / "tree"
        _git("worktree", "add", "--detach", str(base), BASE_COMMIT)
        try:
            trees = {f"commit {BASE_COMMIT}": base, "working tree": ROOT}
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
            for _ in range(rounds):  # alternate, so a busy spell hits both
                for name, tree in trees.items():
                    runs[name].append(_measure(tree, cycles, "run"))
            share = {
                name: _measure(tree, min(cycles, 60), "profile") for name, tree in trees.items()
            }
        finally:
            _git("worktree", "remove", "--force", str(base))
    results = {}
    for name in trees:
        results[name] = {
            "bench": "issue13_compare",
            "tree": name,
            "cycles": cycles,
            "rounds": rounds,
            "cycles_per_s": round(max(r["cycles_per_s"] for r in runs[name]), 1),
            "cycles_per_s_all": [round(r["cycles_per_s"], 1) for r in runs[name]],
            "replay_records_per_s": round(max(r["replay_records_per_s"] for r in runs[name])),
            "journal_records": runs[name][0]["records"],
            "statemachine_cpu_share": share[name]["statemachine_cpu_share"],
            "statemachine_and_stdlib_it_calls_share": share[name][
                "statemachine_and_stdlib_it_calls_share"
            ],
        }
        print(json.dumps(results[name]))
    old, new = (results[n] for n in trees)
    print(
        json.dumps(
            {
                "bench": "issue13_compare_ratio",
                "cycles_per_s_x": round(new["cycles_per_s"] / old["cycles_per_s"], 2),
                "replay_records_per_s_x": round(
                    new["replay_records_per_s"] / old["replay_records_per_s"], 2
                ),
                "replay_seconds_per_cycle_x": round(
                    (old["journal_records"] / old["replay_records_per_s"])
                    / (new["journal_records"] / new["replay_records_per_s"]),
                    2,
                ),
                "statemachine_cpu_share": new["statemachine_cpu_share"],
                "targets": {
                    "cycles_per_s_x": ">= 5",
                    "statemachine_cpu_share": "<= 0.20",
                    "replay_x": ">= 6",
                },
            }
        )
    )


if __name__ == "__main__":
    main()
