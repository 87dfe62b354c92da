"""The composition root: the one place a run's parts are built and wired.

`build_session` makes the clock, venue and journal a run asks for (or takes the ones a
test or a benchmark hands in), the engine, the journal fold, the logger and alerter, and
connects the observers; the session's drivers (`engine.runtime.drivers`) run it. `dnpair run`
(engine/runtime/run.py), the chaos harness, the benchmarks and the tests all build through it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters.base import VenuePort
from engine.core.clock import Clock
from engine.core.clock import VirtualClock
from engine.core.clock import WallClock
from engine.core.journal import Journal
from engine.core.loop import Engine
from engine.ops.alerts import Alerter
from engine.ops.logs import JournalLogger
from engine.ops.logs import configure
from engine.ops.logs import run_logger
from engine.ops.trades import RunFold
from engine.runtime import crashpoints
from engine.runtime.account import Account
from engine.runtime.account import LockHeld
from engine.runtime.account import ProcessLock
from engine.runtime.account import global_state_dir
from engine.runtime.account import sim_account
from engine.runtime.config import Settings
from engine.runtime.options import RunOptions
from engine.runtime.options import UsageError
from engine.runtime.options import pair_name
from engine.runtime.run_session import Session

__all__ = ["LIVE_CYCLES", "account_of", "build_session", "make_clock", "make_venue", "take_locks"]

LIVE_CYCLES = 200  # closed cycles the live fold keeps (the journal keeps them all)


def make_clock(opts: RunOptions) -> Clock:
    return VirtualClock() if opts.clock == "virtual" else WallClock()


def make_venue(opts: RunOptions, clock: Clock, bbo_max_age_s: Decimal | None = None) -> VenuePort:
    """The venue of `--venue`: the sim, or Nado's gateway (key from NADO_PRIVATE_KEY;
    a missing or bad key, network or gateway raises ConfigError: exit 2, nothing sent).
    Either asks REST for a quote the stream left unconfirmed for half `bbo_max_age_s`."""
    if opts.venue in ("paper", "nado"):
        if opts.faults is not None:
            raise UsageError("--faults: only for the sim venue (serve it: dnpair venue serve)")
        make: Callable[..., VenuePort]
        hooks: dict[str, Any] = {}
        if opts.venue == "paper":
            from adapters.paper import make_paper_venue as make
        else:
            from adapters.nado.factory import make_nado_venue as make

            crash = crashpoints.from_env(os.environ)  # the crash test's injected hook
            if crash is not None:
                hooks["on_sent"] = crash.sent
        return make(
            clock=clock,
            network=opts.network,
            gateway=opts.gateway,
            pair=opts.pair,
            seed=opts.seed,
            bbo_max_age_s=bbo_max_age_s,
            **hooks,
        )
    from adapters.sim import make_sim_venue

    return make_sim_venue(
        clock=clock,
        seed=opts.seed,
        faults_path=opts.faults,
        symbols=list(opts.pair),
        bbo_max_age_s=bbo_max_age_s,
    )


def account_of(opts: RunOptions, venue: VenuePort, path: str) -> Account:
    """The account this run trades (engine/runtime/account.py), computed without any I/O."""
    if opts.venue == "nado":
        from adapters.nado.factory import account_key

        return Account(key=account_key(venue, opts.network), state=global_state_dir())  # type: ignore[arg-type]
    return sim_account(path)


def take_locks(account: Account, path: str) -> list[ProcessLock]:
    """The journal's lock, then the account's: exit 2 naming the holder if either is held."""
    taken: list[ProcessLock] = []
    wanted = [ProcessLock(Path(path + ".lock"), f"the journal {path}")]
    if account.locked:
        wanted.append(ProcessLock(account.lock_path, f"the account {account.key}"))
    try:
        for lock in wanted:
            lock.acquire(path)
            taken.append(lock)
    except LockHeld as exc:
        for lock in taken:
            lock.release()
        raise UsageError(str(exc)) from None
    return taken


def build_session(
    opts: RunOptions,
    settings: Settings,
    *,
    venue: VenuePort | None = None,
    clock: Clock | None = None,
    journal: Journal | None = None,
    out: Callable[[str], None] = print,
    logger: logging.Logger | None = None,
    alerter: Alerter | None = None,
    session_cls: type[Session] = Session,
) -> Session:
    """Build a run: clock, venue, engine, fold, logs, alerts and observers, wired.

    Without `venue` / `clock` / `journal` the options decide (an in-memory journal when
    none is given); `logger` and `alerter` default to a console logger on `out` and a
    log-only alerter. The observers, in order: the fold (statuses, metrics, logs read
    it), the session's Monitor and final-position watch, the crash points when armed, and
    the journal logger."""
    clock = clock if clock is not None else make_clock(opts)
    if venue is None:
        venue = make_venue(opts, clock, settings.values["bbo_max_age_seconds"])
    journal = journal if journal is not None else Journal(":memory:", durable=False)
    engine = Engine(clock, journal)
    engine.coalesce_quotes = True  # journal quotes only where a step reads them
    fold = RunFold(ledger=engine.ledger, keep_cycles=LIVE_CYCLES)
    holder: dict[str, Callable[[str], None]] = {}
    if logger is None:
        logger = run_logger()
        configure(logger, console=lambda line: holder["console"](line))
    if alerter is None:
        alerter = Alerter(
            pair=pair_name(opts.pair), run=journal.path, now_ns=clock.now_ns, logger=logger
        )
    else:
        alerter.now_ns = clock.now_ns
    session = session_cls(
        opts, settings, venue, clock, engine, fold, out, logger=logger, alerter=alerter
    )
    holder["console"] = session.console
    engine.observers.append(fold.observe)
    engine.observers.append(session.observe)
    crash = crashpoints.from_env(os.environ)  # a crash test's hook, None unless DNPAIR_CRASH_AT
    session.crash = crash
    if crash is not None:
        engine.observers.append(lambda seen: crash.observe(seen.rec))
    to_file = any(isinstance(h, logging.FileHandler) for h in logger.handlers)
    if not opts.quiet or to_file:
        engine.observers.append(
            JournalLogger(
                logger,
                fold.machine_cycle.get,
                transitions_to_console=not opts.quiet,
                cycle_of_order=session.cycle_of_order,
            )
        )
    return session
