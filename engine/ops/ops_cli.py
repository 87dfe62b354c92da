"""Operator subcommands: `report`, `status`, `flatten`, `resume`, `runbook`, and the
operations flags of `run`. Registered by `engine.runtime.cli.build_parser` through
`add_ops_parsers` so the other subcommands stay untouched.

- `dnpair report JOURNAL [--csv OUT] [--chart OUT.png|.svg|.html]`
- `dnpair status [JOURNAL | --journal J] [--json]`: the running engine's live view when
  one answers on the journal's control socket, else the state as of the journal's last
  record.
- `dnpair flatten --journal J`: ask the engine running on J to cancel all, close both
  legs and verify flat, then exit; with no engine running, `dnpair flatten --pair A-B`
  starts one that syncs with the venue (cancel orphans, close residuals, verify) and
  stops (a `run --cycles 0`).
- `dnpair resume --journal J`: the engine running on J (with `--stay-on-halt`) leaves
  HALT through a fresh venue sync; a stopped engine resumes with `dnpair run --resume`.
- `dnpair runbook [--check]`: regenerate the DN_* flag table of docs/runbook.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_ops_parsers", "ops_run_options"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_HALTED = 0, 1, 2, 3


def add_run_flags(r: argparse.ArgumentParser) -> None:
    r.add_argument("--metrics-host", default="127.0.0.1", help="metrics bind address")
    r.add_argument(
        "--log-json",
        metavar="PATH",
        help="JSON-lines log (default: beside the journal, JOURNAL.log.jsonl; 'off': none)",
    )
    r.add_argument(
        "--log-format",
        choices=("human", "json"),
        default="human",
        help="console lines: human text or JSON",
    )
    r.add_argument(
        "--status",
        choices=("auto", "live", "plain"),
        default="auto",
        help="live terminal view (auto: when stdout is a terminal, on the wall clock)",
    )
    r.add_argument(
        "--alert-webhook",
        metavar="URL",
        help="POST alerts here as JSON (else $DNPAIR_ALERT_WEBHOOK); never printed",
    )
    r.add_argument(
        "--stay-on-halt",
        action="store_true",
        help="wall clock: keep running after HALT, waiting for `dnpair resume` or a stop",
    )
    r.add_argument(
        "--resume",
        action="store_true",
        help="start on a journal whose last run halted (an operator has checked the venue)",
    )


def ops_run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The operations fields of RunOptions, from `run`'s parsed arguments."""
    return {
        "metrics_host": getattr(args, "metrics_host", "127.0.0.1"),
        "log_json": getattr(args, "log_json", None),
        "log_format": getattr(args, "log_format", "human"),
        "status": getattr(args, "status", "auto"),
        "alert_webhook": getattr(args, "alert_webhook", None),
        "stay_on_halt": getattr(args, "stay_on_halt", False),
        "resume": getattr(args, "resume", False),
    }


def add_ops_parsers(sub: Any, run_parser: argparse.ArgumentParser | None = None) -> None:
    if run_parser is not None:
        add_run_flags(run_parser)
    rep = sub.add_parser("report", help="per-cycle trade table and totals from a journal")
    rep.add_argument("path", help="journal (.db or a .jsonl export)")
    rep.add_argument("--csv", metavar="OUT", help="write one row per cycle")
    rep.add_argument("--chart", metavar="OUT", help="cumulative PnL + cycle times (.png/.html)")
    rep.add_argument("--json", action="store_true", help="totals as JSON instead of the table")
    rep.set_defaults(func=cmd_report)

    st = sub.add_parser("status", help="what a running engine (or its journal) shows")
    st.add_argument("path", nargs="?", help="journal of the run")
    st.add_argument("--journal", dest="journal_opt", metavar="PATH", help="journal of the run")
    st.add_argument("--json", action="store_true", help="the snapshot as JSON")
    st.set_defaults(func=cmd_status)

    fl = sub.add_parser("flatten", help="cancel all, close both legs, verify flat")
    fl.add_argument("--journal", metavar="PATH", help="the running engine's journal")
    fl.add_argument("--pair", help="no engine running: start one for this pair that flattens")
    fl.add_argument("--venue", choices=("sim", "nado"), default="sim", help="as for run")
    fl.add_argument(
        "--network", choices=("local", "testnet", "mainnet"), default="local", help="as for run"
    )
    fl.add_argument("--gateway", help="as for run")
    fl.add_argument("--seed", type=int, default=0, help="as for run")
    fl.add_argument("--faults", metavar="FILE.toml", help="as for run (sim only)")
    fl.add_argument("--clock", choices=("wall", "virtual"), default="wall", help="as for run")
    fl.add_argument("--summary-json", metavar="PATH", help="write the summary as JSON")
    fl.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the result")
    fl.set_defaults(func=cmd_flatten)

    rs = sub.add_parser(
        "resume",
        help="leave HALT: on the running engine (--stay-on-halt), else lift the account's halt",
    )
    rs.add_argument("--journal", required=True, metavar="PATH", help="journal of the halted run")
    rs.set_defaults(func=cmd_resume)

    rb = sub.add_parser("runbook", help="regenerate the DN_* flag table in docs/runbook.md")
    rb.add_argument("--path", default="docs/runbook.md", help="the runbook to update")
    rb.add_argument("--check", action="store_true", help="exit 1 if the table is out of date")
    rb.set_defaults(func=cmd_runbook)


def _readable(path: str) -> tuple[int | None, str]:
    """Intact record count (None: unusable) and a message."""
    from engine.core.journal_verify import verify

    if path.endswith((".jsonl", ".ndjson")):
        return (None, "") if Path(path).is_file() else (0, f"no journal at {path}")
    report = verify(path)
    if report.status == "other_version":
        return None, ""  # another engine's chain: read as it is (report and status only)
    if report.status in ("missing", "corrupt"):
        return 0, report.describe(path)
    note = report.describe(path) if report.status == "torn_tail" else ""
    return report.intact, note


def _fold(path: str) -> Any:
    from engine.core.journal import read_records
    from engine.ops.trades import RunFold

    intact, note = _readable(path)
    if intact == 0:
        raise FileNotFoundError(note)
    if note:
        print(note, file=sys.stderr)
    fold = RunFold()
    for n, rec in enumerate(read_records(path)):
        if intact is not None and n >= intact:
            break
        fold.feed(rec)
    return fold.finish()


def cmd_report(args: argparse.Namespace) -> int:
    from engine.ops import report

    try:
        fold = _fold(args.path)
    except (FileNotFoundError, OSError, ValueError) as exc:
        print(f"dnpair report: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        totals = report.totals(fold)
        print(json.dumps(totals, default=str, indent=2, sort_keys=True))
    else:
        print(report.render_table(fold))
    if args.csv:
        n = report.write_csv(fold, args.csv)
        print(f"wrote {n} rows to {args.csv}")
    if args.chart:
        try:
            report.write_chart(fold, args.chart, title=f"dnpair report: {Path(args.path).name}")
        except ValueError as exc:
            print(f"dnpair report: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"wrote chart to {args.chart}")
    return EXIT_OK


def _journal_arg(args: argparse.Namespace) -> str | None:
    return getattr(args, "path", None) or getattr(args, "journal_opt", None)


def cmd_status(args: argparse.Namespace) -> int:
    from engine.ops.status import render_text
    from engine.ops.status import snapshot_fold
    from engine.runtime.control import NoEngine
    from engine.runtime.control import request

    path = _journal_arg(args)
    if path is None:
        print(
            "dnpair status: give the run's journal (dnpair status runs/ETH-SOL-1.db)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    snap: dict[str, Any] | None = None
    try:
        reply = request(path, "status", timeout_s=3.0)
        snap = reply.get("status")
    except (NoEngine, OSError, ValueError):
        snap = None
    if snap is None:
        try:
            snap = snapshot_fold(_fold(path))
        except (FileNotFoundError, OSError, ValueError) as exc:
            print(f"dnpair status: {exc}", file=sys.stderr)
            return EXIT_FAIL
    if args.json:
        print(json.dumps(snap, indent=2, sort_keys=True))
    else:
        print(render_text(snap), end="")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    from engine.runtime.control import NoEngine
    from engine.runtime.control import request

    try:
        reply = request(args.journal, "resume")
    except NoEngine as exc:
        return _resume_stopped(args.journal, str(exc))
    print(reply.get("message", ""))
    return EXIT_OK if reply.get("ok") else EXIT_FAIL


def _resume_stopped(journal: str, why: str) -> int:
    """No engine on the journal: lift the account's HALT (engine/runtime/account.py) and mark the
    journal resumed, so the next `dnpair run` (this journal or a new one) may trade. It
    re-syncs with the venue before any new order, like every start."""
    from engine.core.journal import Journal
    from engine.core.journal import JournalError
    from engine.core.journal_verify import verify
    from engine.runtime.account import LockHeld
    from engine.runtime.account import ProcessLock
    from engine.runtime.account import clear_halts_for_journal
    from engine.runtime.run import last_halt

    cleared = clear_halts_for_journal(journal)
    halted = Path(journal).is_file() and verify(journal).ok and last_halt(journal) is not None
    if not cleared and not halted:
        print(
            f"dnpair resume: {why}, and neither it nor its account is halted: "
            f"nothing to resume (a stopped engine restarts with `dnpair run ... "
            f"--journal {journal}`; --resume also lifts a halt)",
            file=sys.stderr,
        )
        return EXIT_FAIL
    if halted:
        lock = ProcessLock(Path(journal + ".lock"), f"the journal {journal}")
        try:
            lock.acquire(journal)
            j = Journal(journal)
            last_ts = j.records()[-1].ts if not j.is_empty else 0
            note = {"note": "operator resumed after halt", "via": "dnpair resume"}
            j.append("note", "runner", note, last_ts)
            j.close()
        except (LockHeld, JournalError, OSError) as exc:
            print(f"dnpair resume: {journal}: {exc}", file=sys.stderr)
            return EXIT_FAIL
        finally:
            lock.release()
    for marker in cleared:
        print(f"halt lifted for the account {marker.account} ({marker.reason})")
    print(
        f"resumed: {journal} is no longer halted; the next `dnpair run` re-syncs with "
        "the venue (cancels orphans, closes residuals) before any new entry"
    )
    return EXIT_OK


def cmd_flatten(args: argparse.Namespace) -> int:
    from engine.runtime.control import NoEngine
    from engine.runtime.control import request

    if args.journal:
        try:
            reply = request(args.journal, "flatten")
        except NoEngine:
            if not args.pair:
                print(
                    f"dnpair flatten: no engine is running on {args.journal}; "
                    "pass --pair to start one that flattens",
                    file=sys.stderr,
                )
                return EXIT_FAIL
        else:
            print(reply.get("message", ""))
            if not reply.get("ok"):
                return EXIT_FAIL
            return _wait_for_end(args.journal, args.wait)
    if not args.pair:
        print("dnpair flatten: give --journal of a running engine or --pair", file=sys.stderr)
        return EXIT_USAGE
    return _flatten_run(args)


def _wait_for_end(journal: str, wait_s: float) -> int:
    """Poll the control socket until the engine exits, then read the journal."""
    from engine.runtime.control import NoEngine
    from engine.runtime.control import request

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            request(journal, "status", timeout_s=2.0)
        except (NoEngine, OSError, ValueError):
            break
        time.sleep(0.2)
    else:
        print(f"dnpair flatten: the engine is still running after {wait_s:.0f} s", file=sys.stderr)
        return EXIT_HALTED
    fold = _fold(journal)
    flat = any(c.outcome == "flattened" for c in fold.cycles if c.run == fold.run) or _ended_done(
        fold
    )
    state = "verified flat" if flat and not fold.halted else "NOT verified flat"
    print(f"engine stopped: {state} (journal {journal}, seq {fold.last_seq})")
    return EXIT_OK if flat and not fold.halted else EXIT_HALTED


def _ended_done(fold: Any) -> bool:
    return any(
        mid.startswith("flatten:") and outcome == "done" for mid, outcome in fold.finished.items()
    )


def _flatten_run(args: argparse.Namespace) -> int:
    from engine.runtime.config import ConfigError
    from engine.runtime.config import load_settings
    from engine.runtime.run import RunOptions
    from engine.runtime.run import UsageError
    from engine.runtime.run import parse_pair
    from engine.runtime.run import run

    try:
        settings = load_settings()
        opts = RunOptions(
            pair=parse_pair(args.pair),
            venue=args.venue,
            network=args.network,
            gateway=args.gateway,
            cycles=0,
            clock=args.clock,
            seed=args.seed,
            faults=args.faults,
            journal=args.journal,
            summary_json=args.summary_json,
            quiet=False,
            status="plain",
        )
        return run(opts, settings)
    except (UsageError, ConfigError) as exc:
        print(f"dnpair flatten: {exc}", file=sys.stderr)
        return EXIT_USAGE


def cmd_runbook(args: argparse.Namespace) -> int:
    from engine.ops.runbook import update_runbook

    try:
        changed = update_runbook(args.path, check=args.check)
    except FileNotFoundError as exc:
        print(f"dnpair runbook: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if args.check:
        if changed:
            print(f"{args.path}: the DN_* flag table is out of date; run `make runbook`")
            return EXIT_FAIL
        print(f"{args.path}: flag table up to date")
        return EXIT_OK
    print(f"{args.path}: {'updated' if changed else 'already up to date'}")
    return EXIT_OK
