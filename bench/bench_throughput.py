"""Simulated cycles per second on the virtual clock, and memory over 10 000 cycles.

(c) whole sessions (engine + machines + sim venue + journal + the operations observers)
with default settings (hold 2 s, pause 0.5 s: about 60 BBO events per cycle) and with
hold and pause at 0; the journal in memory, and on a file as `dnpair run --clock
virtual` keeps it (synchronous=NORMAL). A cProfile of a short run names where the time
goes. (f) RSS sampled every 1 000 cycles over 10 000 cycles (hold/pause 0, file journal
without fsync), with the sizes of the structures that grow per cycle. Prints JSON lines;
a measurement, not a test. DESIGN.md §5: ≥ 50 cycles/s; memory flat.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.sim import SimVenue
from engine.core.clock import VirtualClock
from engine.core.journal import Journal
from engine.runtime.compose import build_session
from engine.runtime.config import load_settings
from engine.runtime.run import RunOptions
from engine.runtime.run import Session
from engine.runtime.run import parse_pair

PAIR = parse_pair("ETH-SOL")
FAST = {"DN_HOLD_S": "0", "DN_PAUSE_S": "0"}


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def session(cycles: int, env: dict[str, str], journal: Journal, seed: int = 1) -> Session:
    clock = VirtualClock()
    venue = SimVenue(clock, seed, None, PAIR)
    opts = RunOptions(pair=PAIR, cycles=cycles, clock="virtual", seed=seed, quiet=True)
    return build_session(
        opts,
        load_settings(env=env),
        venue=venue,
        clock=clock,
        journal=journal,
        out=lambda _l: None,
    )


def cycles_per_s(cycles: int, env: dict[str, str], where: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        journal = (
            Journal(":memory:", durable=False)
            if where == "memory"
            else Journal(str(Path(tmp) / "j.db"), durable="process")
        )
        s = session(cycles, env, journal)
        t0 = time.perf_counter()
        asyncio.run(s.run_virtual())
        elapsed = time.perf_counter() - t0
        journal.close()
    assert s.summary()["cycles_completed"] == cycles
    return cycles / elapsed


def where_time_goes(cycles: int = 60) -> list[str]:
    s = session(cycles, {}, Journal(":memory:", durable=False))
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(s.run_virtual())
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    groups = {
        "python-statemachine (send, callbacks, construction)": "statemachine",
        "journal (sqlite + json + sha256)": "journal.py",
        "sim venue": "adapters/sim",
        "ledger": "ledger.py",
        "operations observers (fold, logs, monitor)": (
            "trades.py",
            "logs.py",
            "monitor.py",
            "run_session.py",
            "router.py",
        ),
        "engine loop": "loop.py",
    }
    shares: dict[str, float] = dict.fromkeys(groups, 0.0)
    for (filename, _line, _fn), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for name, marks in groups.items():
            marks_t = marks if isinstance(marks, tuple) else (marks,)
            if any(m in filename for m in marks_t):
                shares[name] += tt
                break
    ranked = sorted(shares.items(), key=lambda kv: -kv[1])
    return [f"{name}: {100 * t / total:.0f}%" for name, t in ranked if t]


def throughput() -> dict[str, Any]:
    return {
        "bench": "sim_cycles_per_s_virtual_clock",
        "default_settings_memory_journal": round(cycles_per_s(200, {}, "memory"), 1),
        "default_settings_file_journal": round(cycles_per_s(200, {}, "file"), 1),
        "hold0_pause0_memory_journal": round(cycles_per_s(300, FAST, "memory"), 1),
        "hold0_pause0_file_journal": round(cycles_per_s(300, FAST, "file"), 1),
        "self_time_by_component": where_time_goes(),
        "target": ">= 50 cycles/s",
    }


def memory(cycles: int = 10_000, every: int = 1_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(str(Path(tmp) / "m.db"), durable=False)
        s = session(cycles, FAST, journal)
        samples: list[tuple[int, float]] = []
        sizes: dict[str, int] = {}
        base = session_rss = rss_mb()

        def until_hook() -> None:
            done = getattr(s.session_machine, "cycles_completed", 0)
            if done and done % every == 0 and (not samples or samples[-1][0] != done):
                gc.collect()
                samples.append((done, rss_mb()))

        original = s.after_step

        def after_step() -> None:
            original()
            until_hook()

        s.after_step = after_step  # type: ignore[method-assign]
        t0 = time.perf_counter()
        asyncio.run(s.run_virtual())
        elapsed = time.perf_counter() - t0
        sizes = {
            "ledger_orders": len(s.engine.ledger.orders),
            "engine_finished_machines": len(s.engine.finished),
            "fold_cycles": len(s.fold.cycles),
            "fold_orders": len(s.fold.orders),
            "sim_fills_kept": len(s.venue.fills()),  # type: ignore[attr-defined]
        }
        journal.close()
    first = next((m for n, m in samples if n >= 2 * every), samples[0][1])
    last = samples[-1][1]
    span = samples[-1][0] - next(n for n, _ in samples if n >= 2 * every)
    return {
        "bench": "rss_over_10000_virtual_cycles",
        "cycles": samples[-1][0],
        "seconds": round(elapsed, 1),
        "rss_mb_start": round(session_rss, 1),
        "rss_mb_by_1000_cycles": [round(m, 1) for _, m in samples],
        "growth_mb_2000_to_end": round(last - first, 1),
        "growth_kb_per_cycle": round((last - first) * 1024 / max(span, 1), 2),
        "per_cycle_structures_at_end": sizes,
        "baseline_mb": round(base, 1),
        "target": "flat",
    }


def main() -> None:
    print(json.dumps(throughput()))
    if os.environ.get("BENCH_QUICK"):
        print(json.dumps(memory(cycles=2000, every=500)))
    else:
        print(json.dumps(memory()))


if __name__ == "__main__":
    main()
