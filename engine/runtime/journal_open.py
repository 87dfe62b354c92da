"""Which journal a run writes, and whether it may: the path policy, the verify-before-
append policy (refuse damage, truncate a crash-shaped torn tail), one pair per journal,
a sticky HALT, and the deadlines a stopped run left armed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from engine.core.clock import NS_PER_S
from engine.core.journal import Journal
from engine.core.journal import read_records
from engine.core.journal_verify import truncate_torn_tail
from engine.core.journal_verify import verify
from engine.ops.alerts import Alert
from engine.ops.trades import RunFold
from engine.runtime.options import RunOptions
from engine.runtime.options import UsageError

__all__ = ["journal_path", "json_log_path", "last_halt", "open_journal", "passed_deadlines"]


def last_halt(path: str) -> str | None:
    """The reason a journal's last trading run halted, unless an operator resumed since."""
    fold = RunFold()
    for rec in read_records(path):
        fold.feed(rec)
    return fold.sticky_halt


def passed_deadlines(path: str, now_utc_s: float) -> list[tuple[str, str, float]]:
    """Deadlines the journal's last run left armed (the engine stopped or died with them
    pending), as (machine, name, seconds overdue) for those already past at `now_utc_s`.
    Engine times become UTC through the run header's epoch (wall-clock runs only)."""
    fold = RunFold()
    for rec in read_records(path):
        fold.feed(rec)
    epoch = fold.config.get("epoch_utc_s") if fold.config else None
    if not isinstance(epoch, int) or epoch == 0:
        return []  # simulated time: no wall-clock meaning
    out = []
    for machine, armed in sorted(fold.deadlines.items()):
        for name, due_ns in sorted(armed.items()):
            overdue = now_utc_s - (epoch + due_ns / NS_PER_S)
            if overdue > 0:
                out.append((machine, name, overdue))
    return out


def journal_path(path: str | None, pair: tuple[str, str]) -> str:
    """The journal of a run: `--journal`, checked before anything else happens, or the
    next free `runs/PAIR-N.db`."""
    if path is None:
        Path("runs").mkdir(exist_ok=True)
        stem = "-".join(s.removesuffix("-PERP") for s in pair)
        n = 1
        while Path(f"runs/{stem}-{n}.db").exists():
            n += 1
        return f"runs/{stem}-{n}.db"
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"--journal {path}: is a directory; give a file path like {path}/run.db")
    if not p.parent.is_dir():
        raise UsageError(f"--journal {path}: the folder {p.parent} does not exist; create it first")
    if p.exists() and not os.access(p, os.R_OK | os.W_OK):
        raise UsageError(f"--journal {path}: not readable and writable by this user")
    if not p.exists() and not os.access(p.parent, os.W_OK | os.X_OK):
        raise UsageError(f"--journal {path}: cannot create files in {p.parent}")
    return path


def open_journal(
    path: str,
    pair: tuple[str, str],
    out: Callable[[str], None],
    durable: bool | str = True,
    *,
    alert: Callable[[Alert], object] = lambda _a: None,
    max_bytes: int = 0,
) -> Journal:
    if Path(path).exists():
        report = verify(path)
        if report.status == "other_version":  # its layout and hashes are not this engine's
            raise UsageError(f"{report.describe(path)}; start a new --journal")
        if report.status == "corrupt":
            alert(
                Alert(
                    event="journal_corrupt",
                    severity="critical",
                    message=report.describe(path),
                    action="refused to start; nothing was sent",
                    source="journal",
                )
            )
            raise UsageError(
                f"{report.describe(path)}; refusing to trade on a damaged journal: "
                "inspect it, then start with a new --journal"
            )
        if report.status == "torn_tail" and not report.crash_shaped:
            raise UsageError(
                f"{path}: damaged: {report.detail}, more than a crash leaves (at most the "
                f"last page); refusing to repair it automatically. Inspect it (`dnpair journal "
                f"verify {path}`), then truncate (`dnpair journal verify --truncate {path}`) "
                "or start with a new --journal"
            )
        if report.status == "torn_tail":
            out(report.describe(path))
            truncate_torn_tail(path)
            out(f"{path}: torn tail truncated to {report.intact} records")
            alert(
                Alert(
                    event="journal_torn_tail",
                    severity="warning",
                    message=f"{path}: torn tail truncated to {report.intact} records",
                    action="truncated the unreadable last record; the venue is re-synced "
                    "before any new order",
                    source="journal",
                )
            )
        _check_pair(path, pair)
    return Journal(path, durable=durable, max_bytes=max_bytes)


def _check_pair(path: str, pair: tuple[str, str]) -> None:
    """A journal records one pair: appending another pair's run is refused."""
    for rec in read_records(path):
        if rec.kind == "note" and rec.machine == "engine" and '"run_started"' in rec.payload:
            config = rec.data.get("config") or {}
            theirs = tuple(config.get("pair") or ())
            if theirs and theirs != pair:
                raise UsageError(
                    f"--journal {path}: it is a journal of {'/'.join(theirs)}, not "
                    f"{'/'.join(pair)}; give this pair its own journal"
                )
            return


def json_log_path(opts: RunOptions, journal_path: str) -> str | None:
    if opts.log_json is not None:
        return None if opts.log_json in ("", "off", "none") else opts.log_json
    if journal_path == ":memory:":
        return None
    return str(Path(journal_path).with_suffix("")) + ".log.jsonl"
