"""SIGKILL crash test driver: `dnpair run --venue nado` against one `dnpair venue serve`.

Each point: a fresh journal; the engine runs with `DNPAIR_CRASH_AT=POINT:N` (or is
killed after a seeded random delay) and must die by SIGKILL; `journal verify` (a torn
tail is truncated with `--truncate` and reported); then the engine restarts on the same
journal and venue without the hook (the `mid_emergency` and `during_restore` points need
a residual first: a `between_ack_and_fill` crash, then the crash under test, then the
clean restart). Checked on the final state:

- every journal verifies; the restart exits 0 (3 is accepted only with a halt reason);
- the restart's restore answered positions and open orders before its first PlaceOrder;
- no order twice: every accepted digest is unique across all runs of the journal, each
  order id of a run maps to one digest, and the venue lists no open order afterwards;
- the restart's summary says flat (final_positions all zero, by the venue's answer).

`python -m tests.crash.harness --seeds 1-4 --occurrences 1-3 --random 24` (make crash).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from engine.runtime.crashpoints import ENV
from engine.runtime.crashpoints import POINTS

KEY = "0x" + "11" * 32
BIN = Path(sys.executable).with_name("dnpair")
START_S, RUN_S, DIE_S = 30.0, 90.0, 60.0
FAST = {"DN_HOLD_S": "0.2", "DN_PAUSE_S": "0.1"}
NEEDS_RESIDUAL = ("mid_emergency", "during_restore")


def _cmd(*args: str) -> list[str]:
    head = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "engine.runtime.cli"]
    return [*head, *args]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DN_", "NADO_", ENV))}
    env.update(FAST)
    env["NADO_PRIVATE_KEY"] = KEY
    env.update(extra)
    return env


@contextmanager
def venue_serve(workdir: Path, seed: int = 5) -> Iterator[str]:
    """One `dnpair venue serve` process; yields its gateway URL."""
    err = (workdir / "serve.stderr").open("w")
    proc = subprocess.Popen(
        _cmd("venue", "serve", "--port", "0", "--seed", str(seed)),
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_S)
        if not ready:
            raise RuntimeError("no output from dnpair venue serve")
        line = proc.stdout.readline()
        match = re.fullmatch(r"listening on (http://\S+/v1)\n", line)
        if not match:
            raise RuntimeError(f"unexpected first line from venue serve: {line!r}")
        yield match.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        err.close()


@attrs.define
class Point:
    name: str  # an enumerated crash point, or "random"
    n: int = 1  # occurrence (enumerated) or seed (random)
    delay_s: float = 0.0  # random: kill after this many seconds

    @property
    def label(self) -> str:
        if self.name == "random":
            return f"random/{self.n}@{self.delay_s:.2f}s"
        return f"{self.name}:{self.n}"


@attrs.define
class Outcome:
    point: Point
    ok: bool
    died: str  # how the crashed run ended: "sigkill", "exit N" (the point never came)
    torn: bool = False
    restart_code: int | None = None
    problems: list[str] = attrs.Factory(list)
    seconds: float = 0.0


def _run_args(url: str, journal: Path, summary: Path, cycles: int) -> list[str]:
    return _cmd(
        "run",
        "--pair",
        "ETH-SOL",
        "--venue",
        "nado",
        "--gateway",
        url,
        "--cycles",
        str(cycles),
        "--journal",
        str(journal),
        "--summary-json",
        str(summary),
        "--status",
        "plain",
        "--quiet",
    )


def _crash_run(
    url: str, journal: Path, cycles: int, *, at: str | None, delay_s: float, **extra: str
) -> str:
    """Run the engine until it dies; 'sigkill' or 'exit N'."""
    env = _env(**({ENV: at} if at else {}), **extra)
    log = journal.with_suffix(".crash.log").open("a")
    proc = subprocess.Popen(
        _run_args(url, journal, journal.with_suffix(".crash.json"), cycles),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        if at is None:
            try:
                proc.wait(timeout=delay_s)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=DIE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    return "sigkill" if code == -signal.SIGKILL else f"exit {code}"


def _cli(*args: str) -> tuple[int, str]:
    """`dnpair ARGS` (the offline journal commands) in this process: the same `main` as
    the command line, without a Python start-up per call (three to five calls a point);
    (exit code, stdout + stderr)."""
    from engine.runtime.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(args))
    return code, out.getvalue()


def _verify(journal: Path) -> tuple[bool, bool, str]:
    """(ok, torn, text): verify, truncating a torn tail."""
    code, text = _cli("journal", "verify", str(journal))
    if code == 0 and "torn" not in text.lower():
        return True, False, text
    if "torn" in text.lower():
        _, fixed = _cli("journal", "verify", "--truncate", str(journal))
        again_code, again = _cli("journal", "verify", str(journal))
        return again_code == 0, True, text + fixed + again
    return False, False, text


def _records(journal: Path) -> list[dict[str, Any]]:
    out = journal.with_suffix(".jsonl")
    code, text = _cli("journal", "export", str(journal), "--jsonl", str(out))
    assert code == 0, text
    return [json.loads(line) for line in out.read_text().splitlines()]


def _runs(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    runs: list[list[dict[str, Any]]] = []
    for r in records:
        if r["kind"] == "note" and r["machine"] == "engine" and "app" in r["payload"]:
            runs.append([])
        if runs:
            runs[-1].append(r)
    return runs


def restore_first(run: list[dict[str, Any]]) -> str | None:
    """None if restore's position and open-order answers precede the run's first PlaceOrder."""
    seen: set[str] = set()
    for r in run:
        p = r["payload"]
        if r["kind"] == "event" and str(p.get("request_id") or "").startswith("restore:"):
            seen.add(p.get("kind", ""))
        if r["kind"] == "intent" and p.get("kind") == "place_order":
            missing = {"position_snapshot", "open_orders_snapshot"} - seen
            if missing:
                return f"PlaceOrder {p['order_id']} before restore's {sorted(missing)}"
            return None
    return None


def duplicates(runs: list[list[dict[str, Any]]]) -> list[str]:
    """Digests accepted twice across runs, or an order id with two digests in one run."""
    problems: list[str] = []
    owner: dict[str, str] = {}
    for i, run in enumerate(runs):
        by_oid: dict[str, str] = {}
        for r in run:
            p = r["payload"]
            if r["kind"] != "event" or p.get("kind") != "order_accepted":
                continue
            oid, digest = str(p["order_id"]), str(p["digest"])
            if by_oid.setdefault(oid, digest) != digest:
                problems.append(f"run {i}: {oid} accepted with two digests")
            where = f"run {i} {oid}"
            if owner.setdefault(digest, where) not in (where,):
                problems.append(f"digest {digest[:12]} for {owner[digest]} and {where}")
    return problems


def open_orders(url: str) -> list[str]:
    """Digests the venue still lists as open for our subaccount (both legs)."""
    import httpx

    from adapters.nado.signing import Secret
    from adapters.nado.signing import Signer
    from adapters.sim.server import SIM_CHAIN_ID
    from adapters.sim.server import SIM_ENDPOINT

    sender = Signer(Secret(KEY), chain_id=SIM_CHAIN_ID, endpoint_addr=SIM_ENDPOINT).sender
    r = httpx.post(
        url + "/query",
        json={"type": "orders", "sender": sender, "product_ids": [4, 8]},
        timeout=10,
    )
    data = r.json()["data"]
    return [str(o["digest"]) for po in data["product_orders"] for o in po["orders"]]


def run_point(url: str, workdir: Path, point: Point, *, cycles: int = 2) -> Outcome:
    """One crash point. Each point is its own account as far as the engine's account
    state goes (locks, halt markers: engine/runtime/account.py), so a halt in one point does not
    refuse the next one on the same venue."""
    tag = re.sub(r"[^A-Za-z0-9]+", "_", point.label)
    before = os.environ.get("DNPAIR_STATE_DIR")
    os.environ["DNPAIR_STATE_DIR"] = str(workdir / f"{tag}.state")
    try:
        return _run_point(url, workdir, point, tag, cycles)
    finally:
        if before is None:
            os.environ.pop("DNPAIR_STATE_DIR", None)
        else:
            os.environ["DNPAIR_STATE_DIR"] = before


def _run_point(url: str, workdir: Path, point: Point, tag: str, cycles: int) -> Outcome:
    start = time.monotonic()
    journal = workdir / f"{tag}.db"
    for old in workdir.glob(f"{tag}.*"):
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    out = Outcome(point=point, ok=False, died="")
    if point.name in NEEDS_RESIDUAL:
        # taker: the first order is an IOC that fills after the ack, so the crash leaves
        # one leg open (a maker_first first order rests unfilled: its restore only
        # cancels it, and no emergency exit follows to crash in)
        pre = _crash_run(
            url, journal, cycles, at="between_ack_and_fill:1", delay_s=0, DN_EXECUTION="taker"
        )
        if pre != "sigkill":
            out.problems.append(f"setup crash did not happen ({pre})")
    if point.name == "random":
        out.died = _crash_run(url, journal, cycles, at=None, delay_s=point.delay_s)
    else:
        out.died = _crash_run(url, journal, cycles, at=f"{point.name}:{point.n}", delay_s=0)
    if journal.exists():  # a kill before the journal was created leaves nothing to verify
        ok, out.torn, text = _verify(journal)
        if not ok:
            out.problems.append(f"journal verify failed: {text.strip()[-300:]}")
    summary = journal.with_suffix(".summary.json")
    done = subprocess.run(
        _run_args(url, journal, summary, 1),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=RUN_S,
    )
    out.restart_code = done.returncode
    result: dict[str, Any] = json.loads(summary.read_text()) if summary.exists() else {}
    if done.returncode == 3:
        out.problems.append(f"restart halted: {result.get('halt_reason')}")
    elif done.returncode != 0:
        out.problems.append(f"restart exit {done.returncode}: {done.stderr.strip()[-400:]}")
    ok, _, text = _verify(journal)
    if not ok:
        out.problems.append(f"journal verify after restart failed: {text.strip()[-300:]}")
    runs = _runs(_records(journal))
    if runs:
        why = restore_first(runs[-1])
        if why:
            out.problems.append(why)
    out.problems += duplicates(runs)
    left = open_orders(url)
    if left:
        out.problems.append(f"venue still lists {len(left)} open order(s)")
    finals = result.get("final_positions", {})
    if not finals or any(v != "0" for v in finals.values()) or result.get("flat") is not True:
        out.problems.append(f"not flat by the venue's word: {finals}")
    out.ok = not out.problems
    out.seconds = time.monotonic() - start
    return out


def plan(seeds: range, occurrences: range, n_random: int, random_seed: int = 1) -> list[Point]:
    points = [Point(name, n) for _ in seeds for name in POINTS for n in occurrences]
    rng = random.Random(random_seed)
    points += [Point("random", i, round(rng.uniform(1.0, 4.0), 2)) for i in range(n_random)]
    return points


def _range(text: str) -> range:
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def table(outcomes: list[Outcome]) -> str:
    rows: dict[str, list[int]] = {}
    for o in outcomes:
        row = rows.setdefault(o.point.name, [0, 0, 0, 0])
        row[0] += 1
        row[1] += o.ok
        row[2] += o.died == "sigkill"
        row[3] += o.torn
    lines = [f"{'point':<24}{'run':>6}{'pass':>6}{'killed':>8}{'torn':>6}"]
    for name, (n, ok, killed, torn) in rows.items():
        lines.append(f"{name:<24}{n:>6}{ok:>6}{killed:>8}{torn:>6}")
    total = [sum(r[i] for r in rows.values()) for i in range(4)]
    lines.append(f"{'total':<24}{total[0]:>6}{total[1]:>6}{total[2]:>8}{total[3]:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.crash.harness")
    ap.add_argument("--seeds", default="1-4", help="repetitions of the enumerated points")
    ap.add_argument("--occurrences", default="1-3", help="N of POINT:N")
    ap.add_argument("--random", type=int, default=24, help="random-instant kills")
    ap.add_argument("--random-seed", type=int, default=1)
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--workdir", default="runs/crash")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    points = plan(_range(args.seeds), _range(args.occurrences), args.random, args.random_seed)
    outcomes: list[Outcome] = []
    t0 = time.monotonic()
    with venue_serve(workdir) as url:
        for i, point in enumerate(points, 1):
            o = run_point(url, workdir, point, cycles=args.cycles)
            outcomes.append(o)
            status = "ok" if o.ok else "FAIL " + "; ".join(o.problems)
            print(
                f"[{i}/{len(points)}] {point.label:<32} {o.died:<8} torn={int(o.torn)} "
                f"restart={o.restart_code} {o.seconds:5.1f}s {status}",
                flush=True,
            )
    print(table(outcomes))
    bad = [o for o in outcomes if not o.ok]
    print(f"{len(outcomes)} points, {len(bad)} failed, {time.monotonic() - t0:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
