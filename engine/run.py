"""`dnpair run`: wire settings, venue, journal, clock and the pair app together.

Exit codes: 0 finished and flat; 3 halted safely (the summary says why and what is
open); 2 bad arguments or configuration (nothing sent); 1 anything else.

Around the engine: every journal record is folded (`engine.trades.RunFold`) for the
metrics, the status view and the control socket, and turned into log lines
(`engine.logs`: human console lines, JSON lines beside the journal). Alerts from the
machines and from the Monitor (exposure above tolerance for too long, reconnect storms,
journal damage, engine errors) go through one `Alerter` (log + optional webhook). On
the wall clock the run listens on a local control socket (`dnpair status|flatten|resume
--journal J`) and, in a terminal, shows a live status view. One engine per journal and
per account (`engine.account`: flock, taken before any network); a HALT sticks to the
account until an operator resumes (`dnpair resume` or `--resume`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from adapters.base import ProductInfo
from adapters.base import VenuePort
from engine import crashpoints
from engine.account import Account
from engine.account import LockHeld
from engine.account import ProcessLock
from engine.account import clear_halt
from engine.account import global_state_dir
from engine.account import read_halt
from engine.account import sim_account
from engine.account import write_halt
from engine.alerts import Alert
from engine.alerts import Alerter
from engine.alerts import mask_url
from engine.app import SESSION_ID
from engine.clock import NS_PER_S
from engine.clock import Clock
from engine.clock import VirtualClock
from engine.clock import WallClock
from engine.config import ConfigError
from engine.config import Settings
from engine.events import ConnectionChanged
from engine.events import OperatorCommand
from engine.events import PositionSnapshot
from engine.events import VenueError
from engine.exposure import FillTimeline
from engine.exposure import in_flight_hedge_usd
from engine.intents import Halt
from engine.intents import Intent
from engine.intents import PlaceOrder
from engine.intents import QueryPositions
from engine.intents import SendAlert
from engine.journal import Journal
from engine.journal import JournalError
from engine.journal import Record
from engine.journal import read_records
from engine.journal_verify import truncate_torn_tail
from engine.journal_verify import verify
from engine.logs import JournalLogger
from engine.logs import LogSetup
from engine.logs import configure
from engine.logs import run_logger
from engine.loop import Engine
from engine.loop import MachineError
from engine.runner import run_virtual
from engine.trades import RunFold

__all__ = ["RunOptions", "UsageError", "parse_pair", "run"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_HALTED = 0, 1, 2, 3
FINAL_QUERY = "final-positions"
FINAL_TRIES, FINAL_WAIT_S = 5, 6  # the venue's last word on positions: bounded re-asks
WEBHOOK_ENV = "DNPAIR_ALERT_WEBHOOK"  # not DN_*: a webhook URL is a secret, never printed
LIVE_CYCLES = 200  # closed cycles the live fold keeps (the journal keeps them all)
STORM_DISCONNECTS, STORM_WINDOW_S = 3, 60  # stream disconnects in a window = a storm
STARTUP_FIRST_DELAY_S, STARTUP_MAX_DELAY_S = 1.0, 10.0  # venue start-up retry backoff
# The runner's settings, not the machines': kept out of the run header (replay, goldens).
RUNNER_SETTINGS = frozenset({"startup_budget_s", "min_free_disk_mb", "journal_max_mb"})
DISK_CHECK_S = 5  # engine seconds between free-space checks beside the journal
EXIT_INTERRUPTED = 130  # a signal during start-up, before anything was sent


class UsageError(Exception):
    """Bad arguments or configuration: exit 2, nothing sent."""


class StartupFailed(Exception):
    """The venue never became usable inside the start-up budget: exit 3, nothing sent."""


class Interrupted(Exception):
    """A signal arrived before trading started: nothing was sent."""


@attrs.frozen(kw_only=True)
class RunOptions:
    pair: tuple[str, str]
    venue: str = "sim"
    network: str = "local"
    gateway: str | None = None
    cycles: int | None = None
    clock: str = "wall"
    seed: int = 0
    faults: str | None = None
    journal: str | None = None
    summary_json: str | None = None
    metrics_port: int | None = None
    quiet: bool = False
    # operations (issue 7); every default keeps the earlier behaviour
    metrics_host: str = "127.0.0.1"
    log_json: str | None = None  # None: beside the journal (JOURNAL.log.jsonl); "off": none
    log_format: str = "human"  # console lines: human | json
    status: str = "auto"  # auto (live view in a terminal on the wall clock) | live | plain
    alert_webhook: str | None = None  # else $DNPAIR_ALERT_WEBHOOK
    stay_on_halt: bool = False  # wall clock: keep running after HALT, wait for resume/stop
    resume: bool = False  # start on a journal whose last run halted
    control: bool = True  # wall clock: listen on the journal's control socket


def parse_pair(text: str) -> tuple[str, str]:
    m = re.fullmatch(r"([A-Z0-9]{2,12})-([A-Z0-9]{2,12})", text.strip().upper())
    if not m or m.group(1) == m.group(2):
        raise UsageError(f"--pair: expected two different symbols like ETH-SOL, got {text!r}")
    return (f"{m.group(1)}-PERP", f"{m.group(2)}-PERP")


_TIMELINE_KEYS = ('"fill_received"', '"order_accepted"', '"place_order"', '"filled_qty"')


class Monitor:
    """Watches every record: unhedged notional and its duration, orders, 429s, halts.

    Raises `exposure_above_tolerance` once per episode when the unhedged notional stays
    above tolerance longer than `exposure_alert_s`, and `reconnect_storm` when the stream
    drops `STORM_DISCONNECTS` times within `STORM_WINDOW_S` (engine time)."""

    def __init__(
        self,
        engine: Engine,
        products: list[ProductInfo],
        tolerance_usd: Decimal,
        *,
        alert: Callable[[Alert], object] = lambda _a: None,
        exposure_alert_s: Decimal = Decimal(5),
    ):
        self.engine = engine
        self.products = products
        self.tolerance = tolerance_usd
        self.max_unhedged = Decimal(0)
        self.unhedged_since: int | None = None
        self.max_unhedged_ns = 0
        self.orders_sent = 0
        self.rate_limited = 0
        self.halt: Halt | None = None
        self.alerts: list[SendAlert] = []
        self.alert = alert
        self.exposure_alert_ns = int(exposure_alert_s * NS_PER_S)
        self._exposure_alerted = False
        self._disconnects: deque[int] = deque(maxlen=STORM_DISCONNECTS)
        # Exposure as the venue's fill timestamps show it (issue 11 item 8), named apart
        # from the believed one above.
        self.timeline = FillTimeline([p.product_id for p in products], tolerance_usd)

    def unhedged_usd(self) -> Decimal:
        return abs(self._net_usd())

    def _net_usd(self) -> Decimal:
        net = Decimal(0)
        for p in self.products:
            quote = self.engine.ledger.quote(p.product_id)
            if quote is not None:
                net += self.engine.ledger.best_position(p.product_id) * quote.mid
        return net

    def after_step(self) -> None:
        now = self.engine.now_ns
        exposure = self.unhedged_usd()
        self.max_unhedged = max(self.max_unhedged, exposure)
        if exposure > self.tolerance:
            if self.unhedged_since is None:
                self.unhedged_since = now
            held = now - self.unhedged_since
            self.max_unhedged_ns = max(self.max_unhedged_ns, held)
            # Not while the orders still working could hedge it (their fills may be
            # on the way: a lost push is not an open leg).
            proven = in_flight_hedge_usd(self.engine.ledger, self._net_usd()) > self.tolerance
            if held > self.exposure_alert_ns and not self._exposure_alerted and proven:
                self._exposure_alerted = True
                self._alert_exposure(exposure, held)
        else:
            self.unhedged_since = None
            self._exposure_alerted = False

    def _alert_exposure(self, exposure: Decimal, held_ns: int) -> None:
        state = "/".join(self.engine.ledger.state_of(SESSION_ID)) or "?"
        filled_usd, filled_s = self.timeline.summary()
        self.alert(
            Alert(
                event="exposure_above_tolerance",
                severity="critical",
                message=f"unhedged {exposure:.2f} USD above tolerance {self.tolerance} USD "
                f"for {Decimal(held_ns) / NS_PER_S:.1f} s as the engine believes it; "
                f"as the venue's fill timestamps show it: at most {filled_usd:.2f} USD, "
                f"{filled_s:.3f} s",
                exposure_usd=exposure.quantize(Decimal("0.01")),
                state=state,
                action=f"session {state}: the live machine keeps working it under its "
                "deadlines (repair, unwind or emergency exit), else HALT",
                engine_ns=self.engine.now_ns,
                source="monitor",
            )
        )

    def observe(self, rec: Record) -> None:
        if rec.kind in ("event", "intent") and any(k in rec.payload for k in _TIMELINE_KEYS):
            self.timeline.observe(rec.kind, rec.data, rec.ts)
        if rec.kind != "event" or rec.machine == "engine":
            return
        if '"rate_limited"' in rec.payload:
            data = rec.data
            if data.get("kind") == VenueError.kind and data.get("error_class") == "rate_limited":
                self.rate_limited += 1
        elif f'"kind":"{ConnectionChanged.kind}"' in rec.payload:
            data = rec.data
            if data.get("channel") == "ws" and data.get("state") == "disconnected":
                self._disconnects.append(rec.ts)
                window = STORM_WINDOW_S * NS_PER_S
                if (
                    len(self._disconnects) == STORM_DISCONNECTS
                    and rec.ts - self._disconnects[0] <= window
                ):
                    self.alert(
                        Alert(
                            event="reconnect_storm",
                            severity="warning",
                            message=f"stream dropped {STORM_DISCONNECTS} times within "
                            f"{STORM_WINDOW_S} s",
                            state="/".join(self.engine.ledger.state_of("health")) or "?",
                            action="health degrades (no new entries while the stream is "
                            "down); REST carries exits",
                            engine_ns=rec.ts,
                            source="monitor",
                        )
                    )


class Session:
    """One `dnpair run`: owns the engine, the venue, the logs, alerts and views."""

    def __init__(
        self,
        opts: RunOptions,
        settings: Settings,
        venue: VenuePort,
        clock: Clock,
        journal: Journal,
        out: Callable[[str], None],
        *,
        logger: logging.Logger | None = None,
        alerter: Alerter | None = None,
    ) -> None:
        self.opts, self.settings, self.venue, self.clock = opts, settings, venue, clock
        self.engine = Engine(clock, journal)
        self.engine.coalesce_quotes = True  # journal quotes only where a step reads them
        self.out = out
        self.monitor: Monitor | None = None
        self.session_machine: Any = None  # kept after it finishes, for the summary
        self.final: PositionSnapshot | None = None
        self.stopping = False  # a signal or an operator stop/flatten arrived
        self.stop_signalled: asyncio.Event | None = None  # wall clock: set by a signal
        self.fold = RunFold(ledger=self.engine.ledger, keep_cycles=LIVE_CYCLES)
        self.engine.observers.append(self.fold.feed)
        self.engine.observers.append(self._observe)
        if crashpoints.ENV in os.environ:
            self.engine.observers.append(crashpoints.observe)
        self._log_setup: LogSetup | None = None
        if logger is None:
            logger = run_logger()
            self._log_setup = configure(logger, console=self._console)
        self.logger = logger
        self.console_sink: Callable[[str], None] = out
        self.alerter = alerter or Alerter(
            pair=self.pair_name, run=journal.path, now_ns=clock.now_ns, logger=logger
        )
        if alerter is not None:
            alerter.now_ns = clock.now_ns
        if not opts.quiet or self._logs_to_file():
            self.engine.observers.append(
                JournalLogger(
                    logger,
                    self.fold.machine_cycle.get,
                    transitions_to_console=not opts.quiet,
                    cycle_of_order=self._cycle_of_order,
                )
            )
        self.account: Account | None = None  # set by run(): where a HALT sticks
        self.disk_stop: str | None = None  # why the run stopped for journal space
        self._disk_next_ns = 0
        self.metrics: Any = None  # engine.metrics.RunMetrics when --metrics-port is given
        self.view: Any = None  # engine.status.LiveView in a terminal

    @property
    def pair_name(self) -> str:
        return "-".join(s.removesuffix("-PERP") for s in self.opts.pair)

    def _cycle_of_order(self, order_id: str) -> int | None:
        facts = self.fold.orders.get(order_id)
        return facts.cycle if facts is not None else None

    def _console(self, line: str) -> None:
        self.console_sink(line)

    def _logs_to_file(self) -> bool:
        return self.logger is not None and any(
            isinstance(h, logging.FileHandler) for h in self.logger.handlers
        )

    def info(self, line: str, level: int = logging.INFO, **fields: Any) -> None:
        self.logger.log(level, line, extra={"fields": fields} if fields else None)

    # -- plumbing ---------------------------------------------------------------------
    def send(self, intent: Intent) -> None:
        assert self.monitor is not None
        if isinstance(intent, Halt):
            self.monitor.halt = intent
            if self.account is not None and self.engine.journal.path != ":memory:":
                try:
                    write_halt(
                        self.account, str(Path(self.engine.journal.path).resolve()), intent.reason
                    )
                except OSError as exc:
                    self.info(f"[CIRCUIT] cannot record the halt for the account: {exc}")
            self.info(
                f"[CIRCUIT] HALT: {intent.reason} (open exposure {intent.exposure_usd} USD)",
                logging.ERROR,
                reason=intent.reason,
                exposure_usd=str(intent.exposure_usd),
            )
            return
        if isinstance(intent, SendAlert):
            self.monitor.alerts.append(intent)
            self.alerter.raise_alert(
                Alert(
                    event=intent.event,
                    severity=intent.severity,
                    message=intent.message,
                    pair=self.pair_name,
                    exposure_usd=intent.exposure_usd,
                    state=intent.state,
                    action=intent.action,
                    engine_ns=self.engine.now_ns,
                    source="machines",
                )
            )
            return
        if isinstance(intent, PlaceOrder):
            self.monitor.orders_sent += 1
            crashpoints.placing(intent.order_id)  # no-op unless DNPAIR_CRASH_AT
        self.venue.submit(intent)

    def _observe(self, rec: Record) -> None:
        if self.monitor is not None:
            self.monitor.observe(rec)
        if rec.kind == "event" and rec.machine != "engine" and FINAL_QUERY in rec.payload:
            data = rec.data
            rid = str(data.get("request_id") or "")
            if rid.startswith(FINAL_QUERY) and data.get("kind") == "position_snapshot":
                self.final = PositionSnapshot(**{k: v for k, v in data.items() if k != "kind"})

    def raise_alert(self, alert: Alert) -> None:
        self.alerter.raise_alert(alert)

    # -- views --------------------------------------------------------------------------
    def symbols(self) -> dict[int, str]:
        return {p.product_id: p.symbol for p in self.products()}

    def snapshot(self) -> dict[str, Any]:
        from engine.status import snapshot_live

        view = self.view
        events = list(view.events) if view is not None else []
        tolerance = self.monitor.tolerance if self.monitor is not None else Decimal(0)
        return snapshot_live(
            self.engine,
            self.fold,
            symbols=self.symbols(),
            events=events,
            extra={
                "cycles_completed": getattr(self.session_machine, "cycles_completed", 0),
                "tolerance_usd": str(tolerance),
                "journal": self.engine.journal.path,
                "stopping": self.stopping,
            },
        )

    def control(self, cmd: str) -> dict[str, Any]:
        """A command from the control socket (wall clock)."""
        halted = self.monitor is not None and self.monitor.halt is not None
        if cmd == "status":
            return {"ok": True, "message": "running", "status": self.snapshot()}
        if cmd in ("flatten", "stop"):
            self.stopping = True
            if halted:
                # Halted ignores stops: resume into a sync, which flattens when stopping.
                self.engine.submit(
                    OperatorCommand(command="resume", reason=f"operator {cmd} while halted"),
                    "operator",
                )
            self.engine.submit(OperatorCommand(command=cmd, reason="operator"), "operator")
            self.info(f"[OPERATOR] {cmd} requested over the control socket", logging.WARNING)
            return {
                "ok": True,
                "message": f"{cmd} accepted: cancelling, closing both legs and verifying flat",
            }
        if cmd == "resume":
            if not halted:
                return {"ok": False, "message": "not halted: nothing to resume"}
            self.engine.submit(OperatorCommand(command="resume", reason="operator"), "operator")
            self.info("[RECOVERY] operator resume requested: re-syncing with the venue")
            return {"ok": True, "message": "resume accepted: re-syncing with the venue first"}
        return {"ok": False, "message": f"unknown command {cmd!r}"}

    def products(self) -> list[ProductInfo]:
        known = self.venue.products
        missing = [s for s in self.opts.pair if s not in known]
        if missing:
            raise UsageError(f"--pair: venue does not list {', '.join(missing)}")
        products = [known[s] for s in self.opts.pair]
        size = self.settings.size_usd
        for p in products:
            if size < p.min_order_value_usd:
                raise UsageError(
                    f"DN_SIZE_USD={size} ({self.settings.sources['size_usd']}) is below "
                    f"{p.symbol}'s minimum order value on the venue "
                    f"({p.min_order_value_usd} USD); nothing was sent"
                )
        return products

    def app_config(self, products: list[ProductInfo]) -> dict[str, Any]:
        values = {
            k: ([str(x) for x in v] if isinstance(v, tuple) else v)
            for k, v in self.settings.values.items()
            if k not in RUNNER_SETTINGS
        }
        values = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in values.items()}
        return {
            "pair": list(self.opts.pair),
            "cycles": self.opts.cycles,
            "seed": self.opts.seed,
            "venue": self.opts.venue,
            # UTC seconds at engine time zero (0 on the virtual clock: deterministic days).
            "epoch_utc_s": 0 if isinstance(self.clock, VirtualClock) else self._epoch(),
            "legs": [
                {
                    "symbol": p.symbol,
                    "product_id": p.product_id,
                    "tick_size": str(p.tick_size),
                    "size_increment": str(p.size_increment),
                    "min_order_value_usd": str(p.min_order_value_usd),
                }
                for p in products
            ],
            "settings": values,
        }

    def _epoch(self) -> int:
        import time

        return int(time.time() - self.clock.now_ns() / NS_PER_S)

    @property
    def session_over(self) -> bool:
        finished = SESSION_ID in self.engine.finished
        halted = self.monitor is not None and self.monitor.halt is not None
        if halted and self.opts.stay_on_halt and not self.stopping:
            return finished  # wait for an operator: resume, flatten or a signal
        return finished or halted

    def check_disk(self) -> None:
        """Journal space (RELIABILITY P5): below DN_MIN_FREE_DISK_MB free beside the journal,
        no new entries: alert once, then stop like an operator would (the session flattens
        and verifies; exits still have the reserve to journal into). Checked every
        DISK_CHECK_S of engine time."""
        path = self.engine.journal.path
        now = self.engine.now_ns
        if path == ":memory:" or self.disk_stop or now < self._disk_next_ns:
            return
        self._disk_next_ns = now + DISK_CHECK_S * NS_PER_S
        try:
            free = shutil.disk_usage(Path(path).resolve().parent).free
        except OSError:
            return
        floor = int(self.settings.min_free_disk_mb) * 1024 * 1024
        if free >= floor:
            return
        self.disk_stop = (
            f"free disk space beside the journal {free // (1024 * 1024)} MB < "
            f"DN_MIN_FREE_DISK_MB={self.settings.min_free_disk_mb}: no new cycles; flattened "
            "and stopped"
        )
        self.raise_alert(
            Alert(
                event="disk_low",
                severity="critical",
                message=self.disk_stop,
                exposure_usd=self.monitor.unhedged_usd() if self.monitor else None,
                state="/".join(self.engine.ledger.state_of(SESSION_ID)) or "?",
                action="no new entries: cancelling, closing both legs, verifying flat, "
                "stopping; free space, then start again",
                engine_ns=now,
                source="engine",
            )
        )
        if not self.stopping:
            self.stopping = True
            self.engine.submit(OperatorCommand(command="stop", reason="disk low"), "operator")

    def after_step(self) -> None:
        self.check_disk()
        if self.monitor is not None:
            self.monitor.after_step()
            if self.monitor.halt is not None and not self.fold.halted:
                self.monitor.halt = None  # an operator resumed: the session left halted
                if self.account is not None:
                    clear_halt(self.account)
                self.info("[RECOVERY] resumed after HALT: the session re-syncs with the venue")

    def final_query(self, attempt: int) -> Intent:
        ids = tuple(p.product_id for p in self.products())
        rid = f"{FINAL_QUERY}-{attempt}"
        self.engine.annotate("final position query", request_id=rid)
        return QueryPositions(request_id=rid, product_ids=ids)

    # -- drivers ------------------------------------------------------------------------
    async def run_virtual(self) -> None:
        """Synchronous on simulated time: SIGINT/SIGTERM set a flag the step callback turns
        into a stop (flatten, verify, exit), like the wall clock's handlers."""
        signals = {"n": 0}

        def on_signal(_sig: int, _frame: Any) -> None:
            signals["n"] += 1

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            await self._run_virtual(signals)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def _run_virtual(self, signals: dict[str, int]) -> None:
        assert isinstance(self.clock, VirtualClock)
        await self.venue.start(self.engine.submit)
        if signals["n"]:
            raise Interrupted("interrupted during start-up")
        products = self.products()
        self._arm_monitor(products)
        if self.opts.metrics_port is not None:
            self.attach_metrics()  # scraped after the run only: the loop is busy until then
        first = self.engine.start("engine.app:start_pair", self.app_config(products))
        self.session_machine = self.engine.machines.get(SESSION_ID)
        limit = self._virtual_limit_ns()

        handled = 0

        def until() -> bool:
            nonlocal handled
            if signals["n"] > handled:
                handled = signals["n"]
                if not self.stopping:
                    self.stopping = True
                    self.info("[EXIT] signal: cancelling, flattening and verifying")
                    self.engine.submit(OperatorCommand(command="stop", reason="signal"), "operator")
                else:
                    self.info("[EXIT] already stopping: still flattening and verifying")
            self.after_step()
            return self.session_over

        why = run_virtual(
            self.engine, self.clock, self.send, until=until, deadline_ns=limit, initial=first
        )
        if why != "until":
            raise RuntimeError(f"session did not finish ({why} at {self.clock.now_ns()} ns)")
        for attempt in range(1, FINAL_TRIES + 1):
            self.send(self.final_query(attempt))
            run_virtual(
                self.engine,
                self.clock,
                self.send,
                until=lambda: self.final is not None,
                deadline_ns=self.clock.now_ns() + FINAL_WAIT_S * NS_PER_S,
            )
            if self.final is not None:
                break
        await self.venue.close()

    async def run_wall(self) -> None:
        loop = asyncio.get_running_loop()
        stop_signalled = self.stop_signalled = asyncio.Event()
        wake = asyncio.Event()
        self.engine.on_inbox = wake.set
        stops = 0

        def on_signal() -> None:
            nonlocal stops
            stops += 1
            self.stopping = True
            stop_signalled.set()
            if stops > 1:
                self.info("[EXIT] already stopping: still flattening and verifying")
            self.engine.submit(OperatorCommand(command="stop", reason="signal"), "operator")

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        services = _Services(self)
        try:
            await self.start_venue()
            if self.stopping:
                raise Interrupted("interrupted during start-up")
            products = self.products()
            self._arm_monitor(products)
            await services.start()
            first = self.engine.start("engine.app:start_pair", self.app_config(products))
            self.session_machine = self.engine.machines.get(SESSION_ID)
            for intent in first:
                self.send(intent)
            while not self.session_over:
                await wake.wait()
                wake.clear()
                for intent in self.engine.drain():
                    self.send(intent)
                self.after_step()
            for attempt in range(1, FINAL_TRIES + 1):
                self.send(self.final_query(attempt))
                try:
                    async with asyncio.timeout(FINAL_WAIT_S):
                        while self.final is None:
                            await wake.wait()
                            wake.clear()
                            for intent in self.engine.drain():
                                self.send(intent)
                    break
                except TimeoutError:
                    self.info(f"[EXIT] no answer to final position query {attempt}")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await services.close()
            await self.venue.close()
            await self.alerter.aclose(timeout_s=5.0)  # on this loop, while it runs

    async def start_venue(self) -> None:
        """Start the venue; a venue that is down, rate limiting or answering garbage is
        retried with backoff inside the start-up budget (DN_STARTUP_BUDGET_S), then
        StartupFailed (exit 3). A venue that is not what the configuration says is a
        ConfigError at once (exit 2). Nothing is sent before this returns."""
        unavailable: tuple[type[BaseException], ...] = ()
        if self.opts.venue == "nado":
            from adapters.nado.discovery import VenueUnavailable

            unavailable = (VenueUnavailable,)
        loop = asyncio.get_running_loop()
        budget = float(self.settings.startup_budget_s)
        deadline = loop.time() + budget
        delay, attempt = STARTUP_FIRST_DELAY_S, 0
        while True:
            attempt += 1
            try:
                await self.venue.start(self.engine.submit)
                return
            except unavailable as exc:
                if self.stopping:
                    raise Interrupted("interrupted during start-up") from None
                left = deadline - loop.time()
                if left <= 0:
                    raise StartupFailed(
                        f"the venue did not become usable within the start-up budget "
                        f"({budget:g} s, {attempt} attempts): {exc}; nothing was sent"
                    ) from None
                self.info(
                    f"[START] venue not usable (attempt {attempt}): {exc}; "
                    f"retrying in {min(delay, left):.1f} s",
                    logging.WARNING,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(delay, left)):
                        await (self.stop_signalled or asyncio.Event()).wait()
                if self.stopping:
                    raise Interrupted("interrupted during start-up") from None
                delay = min(delay * 2, STARTUP_MAX_DELAY_S)
                self.venue = make_venue(self.opts, self.clock)

    def _arm_monitor(self, products: list[ProductInfo]) -> None:
        tolerance = Decimal("0.05") * self.settings.size_usd
        self.monitor = Monitor(
            self.engine,
            products,
            tolerance,
            alert=self.raise_alert,
            exposure_alert_s=self.settings.fill_timeout_s,
        )

    def attach_metrics(self) -> Any:
        from engine.metrics import RunMetrics

        if self.metrics is None:
            self.metrics = RunMetrics(
                self.engine,
                self.fold,
                symbols=self.symbols(),
                extra=lambda: {
                    "max_unhedged_usd": self.monitor.max_unhedged if self.monitor else 0,
                    "cycles_completed": getattr(self.session_machine, "cycles_completed", 0),
                },
            )
        return self.metrics

    def _virtual_limit_ns(self) -> int:
        s = self.settings
        per_cycle = (
            s.hold_s
            + s.pause_s
            + s.pause_jitter_s
            + 4 * s.fill_timeout_s
            + 4 * s.verify_timeout_s
            + 3 * s.exit_budget_s
        )
        cycles = self.opts.cycles if self.opts.cycles is not None else 1000
        # MAX_DAILY_LOSS parks the session until the next UTC midnight, at most once a day
        # per cycle: simulated days cost nothing, so they are part of the bound.
        parked = 86400 * (cycles + 1)
        return int((per_cycle * (cycles + 3) + 300 + parked) * NS_PER_S)

    # -- the result ---------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        assert self.monitor is not None
        info = self.session_machine
        final = {}
        if self.final is not None:
            by_id = {p.product_id: p.symbol for p in self.products()}
            final = {
                by_id.get(p.product_id, str(p.product_id)): str(p.qty) for p in self.final.positions
            }
        halt = self.monitor.halt
        return {
            "pair": "-".join(s.removesuffix("-PERP") for s in self.opts.pair),
            "venue": self.opts.venue,
            "seed": self.opts.seed,
            "cycles_requested": self.opts.cycles,
            "cycles_completed": getattr(info, "cycles_completed", 0),
            "halted": halt is not None,
            "halt_reason": halt.reason
            if halt is not None
            else (self.unverified_reason() or self.disk_stop),
            "final_positions": final,
            # The same book from the fills the venue reported; when the two disagree the
            # fills are trusted and `flat` is false (issue 11: a read can lag the fills).
            "fill_positions": self.fill_positions(),
            "positions_trusted": "venue read" if self.read_agrees_fills() else "fills",
            "flat": self.is_flat(),
            "max_unhedged_notional_usd": str(self.monitor.max_unhedged),
            "max_unhedged_seconds": str(Decimal(self.monitor.max_unhedged_ns) / NS_PER_S),
            # The two above are exposure as the engine believed it; these, as the venue's
            # fill timestamps show it (fills known only by a total: at their order's ack).
            **self.exposure_as_filled(),
            "emergency_exits": getattr(info, "emergency_exits", 0),
            "orders_sent": self.monitor.orders_sent,
            "rate_limited": self.monitor.rate_limited,
            "realized_pnl_usd": str(self.engine.ledger.realized_pnl),
            "fees_usd": str(self.engine.ledger.fees),
            "alerts": [a.event for a in self.monitor.alerts],
            "journal": self.engine.journal.path,
            "alerts_raised": [a.event for a in self.alerter.history],
            "alert_webhook": {
                "sent": self.alerter.stats.sent,
                "failed": self.alerter.stats.failed,
                "deduped": self.alerter.stats.deduped,
            },
        }

    def exposure_as_filled(self) -> dict[str, str | int]:
        assert self.monitor is not None
        usd, seconds = self.monitor.timeline.summary()
        return {
            "max_unhedged_notional_usd_as_filled": str(usd.quantize(Decimal("0.01"))),
            "max_unhedged_seconds_as_filled": str(seconds),
            "fills_without_venue_time": self.monitor.timeline.untimed(),
        }

    def unverified_reason(self) -> str | None:
        """Why a run that did not halt still exits 3 (not verified flat at the end)."""
        if self.is_flat():
            return None
        if self.final is None:
            return "the venue never answered the final position query: flat not verified"
        if not self.read_agrees_fills():
            return (
                f"the final position read {self.final_read()} contradicts the reported fills "
                f"{self.fill_positions()}: trusting the fills, not flat"
            )
        return "the final position query shows open positions"

    def fill_positions(self) -> dict[str, str]:
        ledger = self.engine.ledger
        return {p.symbol: str(ledger.position(p.product_id)) for p in self.products()}

    def final_read(self) -> dict[str, str]:
        if self.final is None:
            return {}
        by_id = {p.product_id: p.symbol for p in self.products()}
        return {
            by_id.get(p.product_id, str(p.product_id)): str(p.qty) for p in self.final.positions
        }

    def read_agrees_fills(self) -> bool:
        """The final read matches the fill-derived position within one increment."""
        if self.final is None:
            return False
        read = {p.product_id: p.qty for p in self.final.positions}
        for prod in self.products():
            fills = self.engine.ledger.position(prod.product_id)
            if abs(read.get(prod.product_id, Decimal(0)) - fills) >= prod.size_increment:
                return False
        return True

    def is_flat(self) -> bool:
        if self.final is None:
            return False
        dust = self.settings.dust_usd
        if not self.read_agrees_fills():
            return False  # a flat read the reported fills contradict is not flat
        for p in self.final.positions:
            quote = self.engine.ledger.quote(p.product_id)
            px = quote.mid if quote is not None else Decimal(1)
            if abs(p.qty) * px > dust:
                return False
        return True


class _Services:
    """What a wall-clock run adds around the loop: metrics endpoint, control socket,
    live status view and the alert sender. Each failure to start one is logged, and
    trading goes on without it (the metrics port excepted: asked for, it must work)."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.metrics_server: Any = None
        self.control: Any = None

    async def start(self) -> None:
        s = self.s
        s.alerter.start()
        if s.opts.metrics_port is not None:
            from engine.metrics import MetricsServer

            self.metrics_server = MetricsServer(
                s.attach_metrics(), s.opts.metrics_host, s.opts.metrics_port
            )
            port = await self.metrics_server.start()
            s.info(f"[METRICS] serving http://{s.opts.metrics_host}:{port}/metrics", port=port)
        journal = s.engine.journal.path
        if s.opts.control and journal != ":memory:":
            from engine.control import ControlServer

            server = ControlServer(journal, s.control)
            try:
                path = await server.start()
            except (OSError, RuntimeError) as exc:
                s.info(f"[CONTROL] no control socket: {exc}", logging.WARNING)
            else:
                self.control = server
                s.info(f"[CONTROL] operator commands on {path} (dnpair status --journal ...)")
        if _wants_live_view(s.opts):
            from engine.status import LiveView

            s.view = LiveView(s.snapshot)
            s.console_sink = s.view.add_event
            s.view.start()

    async def close(self) -> None:
        s = self.s
        if s.view is not None:
            await s.view.stop()
            s.console_sink = s.out
        if self.control is not None:
            await self.control.close()
        if self.metrics_server is not None:
            await self.metrics_server.close()


def _wants_live_view(opts: RunOptions) -> bool:
    if opts.status == "live":
        return True
    if opts.status == "plain" or opts.quiet or opts.clock != "wall":
        return False
    return sys.stdout.isatty()


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


def _json_log_path(opts: RunOptions, journal_path: str) -> str | None:
    if opts.log_json is not None:
        return None if opts.log_json in ("", "off", "none") else opts.log_json
    if journal_path == ":memory:":
        return None
    return str(Path(journal_path).with_suffix("")) + ".log.jsonl"


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
    pair = "-".join(s.removesuffix("-PERP") for s in opts.pair)
    alerter = Alerter(pair=pair, webhook_url=webhook, logger=logger)
    try:
        return _run(opts, settings, out, logger, holder, alerter)
    finally:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            asyncio.run(alerter.aclose(timeout_s=5.0))  # flush what was raised after the loop
        console.close()


def make_venue(opts: RunOptions, clock: Clock, bbo_max_age_s: Decimal | None = None) -> VenuePort:
    """The venue of `--venue`: the sim, or Nado's gateway (key from NADO_PRIVATE_KEY;
    a missing or bad key, network or gateway raises ConfigError: exit 2, nothing sent).
    Either asks REST for a quote the stream left unconfirmed for half `bbo_max_age_s`."""
    if opts.venue in ("paper", "nado"):
        if opts.faults is not None:
            raise UsageError("--faults: only for the sim venue (serve it: dnpair venue serve)")
        make: Callable[..., VenuePort]
        if opts.venue == "paper":
            from adapters.paper import make_paper_venue as make
        else:
            from adapters.nado.factory import make_nado_venue as make
        return make(
            clock=clock,
            network=opts.network,
            gateway=opts.gateway,
            pair=opts.pair,
            seed=opts.seed,
            bbo_max_age_s=bbo_max_age_s,
        )
    from adapters.sim import make_sim_venue

    return make_sim_venue(
        clock=clock,
        seed=opts.seed,
        faults_path=opts.faults,
        symbols=list(opts.pair),
        bbo_max_age_s=bbo_max_age_s,
    )


def _run(
    opts: RunOptions,
    settings: Settings,
    out: Callable[[str], None],
    logger: logging.Logger,
    holder: dict[str, Callable[[str], None]],
    alerter: Alerter,
) -> int:
    clock: Clock = VirtualClock() if opts.clock == "virtual" else WallClock()
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


def account_of(opts: RunOptions, venue: VenuePort, path: str) -> Account:
    """The account this run trades (engine/account.py), computed without any I/O."""
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
    flattening = opts.cycles == 0  # flattening is always allowed, halted or not
    if Path(path).exists() and not flattening and verify(path).ok:
        reason = last_halt(path)
        if reason is not None and not opts.resume:
            raise UsageError(
                f"{path}: the last run on this journal HALTED ({reason}) and no "
                "operator has resumed it; check the venue (`dnpair status --journal "
                f"{path}`), flatten if needed (`dnpair flatten`), then run "
                "again with --resume"
            )
    marker = read_halt(account)
    if marker is not None and not flattening and not opts.resume:
        raise UsageError(marker.describe())
    # Simulated time needs its journal to survive a killed process, not a power cut.
    journal = open_journal(
        path,
        opts.pair,
        say,
        durable="process" if opts.clock == "virtual" else True,
        alert=alerter.raise_alert,
        max_bytes=int(settings.journal_max_mb * 1024 * 1024),
    )
    json_log = _json_log_path(opts, journal.path)
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
    session = Session(opts, settings, venue, clock, journal, out, logger=logger, alerter=alerter)
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
    holder["sink"] = session._console
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
            _write_summary(opts, _startup_summary(session, str(exc)))
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
            _write_summary(opts, summary)
            if session.metrics is not None and opts.clock == "virtual":
                say(f"[METRICS] final scrape: {session.metrics.render().count(b'dnpair_')} samples")
            req = summary["cycles_requested"]
            flat = summary["flat"]
            say(
                f"[SUMMARY] cycles {summary['cycles_completed']}/{'∞' if req is None else req}"
                f" {'HALTED' if summary['halted'] else 'not halted'}"
                f" {'verified flat' if flat else 'NOT verified flat'}"
                f" pnl {summary['realized_pnl_usd']} USD fees {summary['fees_usd']} USD"
                f" max unhedged {summary['max_unhedged_notional_usd']} USD"
                + (f" reason: {summary['halt_reason']}" if summary["halt_reason"] else "")
            )
        if file_logs is not None:
            file_logs.close()
    return code


def _write_summary(opts: RunOptions, summary: dict[str, Any]) -> None:
    if opts.summary_json:
        text = json.dumps(summary, indent=2, sort_keys=True)
        Path(opts.summary_json).write_text(text + "\n", encoding="utf-8")


def _startup_summary(session: Session, reason: str) -> dict[str, Any]:
    return {
        "pair": session.pair_name,
        "venue": session.opts.venue,
        "seed": session.opts.seed,
        "cycles_requested": session.opts.cycles,
        "cycles_completed": 0,
        "halted": False,
        "halt_reason": reason,
        "final_positions": {},
        "flat": None,
        "orders_sent": 0,
        "journal": session.engine.journal.path,
    }


def fail_usage(message: str) -> int:
    print(f"dnpair run: {message}", file=sys.stderr)
    return EXIT_USAGE


__all__ += ["ConfigError", "fail_usage"]
