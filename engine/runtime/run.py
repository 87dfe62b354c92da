"""`dnpair run`: the process around one session: locks, journal policy, exit codes.

Exit codes: 0 finished and flat; 3 halted safely (the summary says why and what is
open); 2 bad arguments or configuration (nothing sent); 1 anything else.

The parts live beside this module in engine/runtime/: options and exit codes
(`options`); the composition root: venue, engine, fold, logs, observers (`compose`); the
session (`run_session`), its drivers and their shared final-position loop (`drivers`); the
Monitor (`monitor`); intents to the venue (`router`); operator commands and the disk guard
(`commands`); journal choice and open policy (`journal_open`); the summary JSON
(`summary`); the wall clock's services: metrics, control socket, live view (`services`).
One engine per journal and per account (`engine.runtime.account`: flock, taken before any
network); a HALT sticks to the account until an operator resumes (`dnpair resume` or `--resume`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from adapters.base import VenuePort
from engine.core.clock import Clock
from engine.core.journal import JournalError
from engine.core.journal_verify import verify
from engine.core.loop import MachineError
from engine.ops.alerts import Alert
from engine.ops.alerts import Alerter
from engine.ops.alerts import mask_url
from engine.ops.logs import configure
from engine.ops.logs import run_logger
from engine.runtime.account import Account
from engine.runtime.account import clear_halt
from engine.runtime.account import read_halt
from engine.runtime.app import SESSION_ID
from engine.runtime.compose import account_of
from engine.runtime.compose import build_session
from engine.runtime.compose import make_clock
from engine.runtime.compose import make_venue
from engine.runtime.compose import take_locks
from engine.runtime.config import ConfigError
from engine.runtime.config import Settings
from engine.runtime.journal_open import journal_path
from engine.runtime.journal_open import json_log_path
from engine.runtime.journal_open import last_halt
from engine.runtime.journal_open import open_journal
from engine.runtime.journal_open import passed_deadlines
from engine.runtime.monitor import Monitor
from engine.runtime.options import EXIT_ERROR
from engine.runtime.options import EXIT_HALTED
from engine.runtime.options import EXIT_INTERRUPTED
from engine.runtime.options import EXIT_OK
from engine.runtime.options import EXIT_USAGE
from engine.runtime.options import Interrupted
from engine.runtime.options import RunOptions
from engine.runtime.options import StartupFailed
from engine.runtime.options import UsageError
from engine.runtime.options import pair_name
from engine.runtime.options import parse_pair
from engine.runtime.run_session import Session
from engine.runtime.summary import startup_summary
from engine.runtime.summary import summary_line
from engine.runtime.summary import write_summary

__all__ = [
    "ConfigError",
    "Monitor",
    "RunOptions",
    "Session",
    "UsageError",
    "fail_usage",
    "last_halt",
    "make_venue",
    "parse_pair",
    "run",
]

WEBHOOK_ENV = "DNPAIR_ALERT_WEBHOOK"  # not DN_*: a webhook URL is a secret, never printed


def run(opts: RunOptions, settings: Settings, out: Callable[[str], None] = print) -> int:
    """Run a session; returns the process exit code."""
    if opts.venue not in ("sim", "nado", "paper"):
        raise UsageError(f"--venue {opts.venue}: not available in this build")
    logger = run_logger()
    holder: dict[str, Callable[[str], None]] = {"sink": out}
    console = configure(
        logger, console=lambda line: holder["sink"](line), console_format=opts.log_format
    )
    webhook = opts.alert_webhook or os.environ.get(WEBHOOK_ENV) or None
    alerter = Alerter(pair=pair_name(opts.pair), webhook_url=webhook, logger=logger)
    try:
        return _run(opts, settings, out, logger, holder, alerter)
    finally:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            asyncio.run(alerter.aclose(timeout_s=5.0))  # flush what was raised after the loop
        console.close()


def _run(
    opts: RunOptions,
    settings: Settings,
    out: Callable[[str], None],
    logger: logging.Logger,
    holder: dict[str, Callable[[str], None]],
    alerter: Alerter,
) -> int:
    clock = make_clock(opts)
    try:
        venue = make_venue(opts, clock, settings.values["bbo_max_age_seconds"])
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    path = journal_path(opts.journal, opts.pair)
    account = account_of(opts, venue, path)
    locks = take_locks(account, path)
    try:
        return _run_locked(
            opts, settings, out, logger, holder, alerter, clock, venue, path, account
        )
    finally:
        for lock in locks:
            lock.release()


def _refuse_halted(opts: RunOptions, path: str, account: Account) -> None:
    """A HALT sticks to the journal and the account until an operator resumes;
    flattening (`--cycles 0`) is always allowed."""
    if opts.cycles == 0:
        return
    if Path(path).exists() and verify(path).ok:
        reason = last_halt(path)
        if reason is not None and not opts.resume:
            raise UsageError(
                f"{path}: the last run on this journal HALTED ({reason}) and no "
                "operator has resumed it; check the venue (`dnpair status --journal "
                f"{path}`), flatten if needed (`dnpair flatten`), then run "
                "again with --resume"
            )
    marker = read_halt(account)
    if marker is not None and not opts.resume:
        raise UsageError(marker.describe())


def _run_locked(
    opts: RunOptions,
    settings: Settings,
    out: Callable[[str], None],
    logger: logging.Logger,
    holder: dict[str, Callable[[str], None]],
    alerter: Alerter,
    clock: Clock,
    venue: VenuePort,
    path: str,
    account: Account,
) -> int:
    say: Callable[[str], None] = logger.info
    _refuse_halted(opts, path, account)
    # Simulated time needs its journal to survive a killed process, not a power cut.
    journal = open_journal(
        path,
        opts.pair,
        say,
        durable="process" if opts.clock == "virtual" else True,
        alert=alerter.raise_alert,
        max_bytes=int(settings.journal_max_mb * 1024 * 1024),
    )
    json_log = json_log_path(opts, journal.path)
    file_logs = configure(logger, json_path=json_log) if json_log else None
    alerter.run = journal.path
    say(
        f"[START] pair {'/'.join(opts.pair)} venue {opts.venue} clock {opts.clock} "
        f"seed {opts.seed} journal {journal.path}" + (f" log {json_log}" if json_log else "")
    )
    for line in settings.describe():
        say(f"[FLAG] {line}")
    if alerter.webhook_url:
        say(f"[ALERT] webhook {mask_url(alerter.webhook_url)}")
    overdue = []
    if opts.clock == "wall" and not journal.is_empty:
        import time

        overdue = passed_deadlines(journal.path, time.time())
    session = build_session(
        opts,
        settings,
        venue=venue,
        clock=clock,
        journal=journal,
        out=out,
        logger=logger,
        alerter=alerter,
    )
    session.account = account
    for machine, name, late in overdue:
        # RELIABILITY P7: the restart syncs first (restore), and an open position goes
        # straight to the emergency exit; no BUILD starts before the venue is flat.
        text = (
            f"[RECOVERY] {machine}'s deadline '{name}' passed {late:.1f} s ago while the "
            "engine was down: re-syncing with the venue; any open position goes straight "
            "to the emergency exit, no new BUILD before it is flat"
        )
        session.engine.annotate(
            "deadline passed while down", machine=machine, name=name, overdue_s=round(late, 3)
        )
        say(text)
    holder["sink"] = session.console
    if opts.resume:
        session.engine.annotate("operator resumed after halt", via="dnpair run --resume")
        clear_halt(account)
    code = EXIT_ERROR
    try:
        try:
            if opts.clock == "virtual":
                asyncio.run(session.run_virtual())
            else:
                asyncio.run(session.run_wall())
        except StartupFailed as exc:
            session.engine.annotate("start-up failed", reason=str(exc))
            print(f"dnpair run: {exc}", file=sys.stderr)
            write_summary(opts.summary_json, startup_summary(session, str(exc)))
            return EXIT_HALTED
        except Interrupted as exc:
            session.engine.annotate("start-up interrupted")
            print(f"dnpair run: {exc}; nothing was sent", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (MachineError, JournalError, RuntimeError) as exc:
            event = "journal_write_failed" if isinstance(exc, JournalError) else "engine_error"
            alerter.raise_alert(
                Alert(
                    event=event,
                    severity="critical",
                    message=f"{type(exc).__name__}: {exc}",
                    exposure_usd=session.monitor.unhedged_usd() if session.monitor else None,
                    state="/".join(session.engine.ledger.state_of(SESSION_ID)),
                    action="the engine stopped; positions may be open: check the venue and "
                    "flatten (`dnpair flatten`)",
                    source="engine",
                )
            )
            raise
        code = EXIT_HALTED if session.monitor and session.monitor.halt else EXIT_OK
        if code == EXIT_OK and (not session.is_flat() or session.disk_stop):
            code = EXIT_HALTED
    finally:
        journal.close()
        if session.monitor is not None:
            summary = session.summary()
            summary["log_json"] = json_log
            write_summary(opts.summary_json, summary)
            if session.metrics is not None and opts.clock == "virtual":
                say(f"[METRICS] final scrape: {session.metrics.render().count(b'dnpair_')} samples")
            summary_line(summary, say)
        if file_logs is not None:
            file_logs.close()
    return code


def fail_usage(message: str) -> int:
    print(f"dnpair run: {message}", file=sys.stderr)
    return EXIT_USAGE
