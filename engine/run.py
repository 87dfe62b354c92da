"""`dnpair run`: wire settings, venue, journal, clock and the pair app together.

Exit codes: 0 finished and flat; 3 halted safely (the summary says why and what is
open); 2 bad arguments or configuration (nothing sent); 1 anything else.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from adapters.base import ProductInfo
from adapters.base import VenuePort
from engine.app import SESSION_ID
from engine.clock import NS_PER_S
from engine.clock import Clock
from engine.clock import VirtualClock
from engine.clock import WallClock
from engine.config import ConfigError
from engine.config import Settings
from engine.events import OperatorCommand
from engine.events import PositionSnapshot
from engine.events import VenueError
from engine.intents import Halt
from engine.intents import Intent
from engine.intents import PlaceOrder
from engine.intents import QueryPositions
from engine.intents import SendAlert
from engine.journal import Journal
from engine.journal import Record
from engine.journal_verify import truncate_torn_tail
from engine.journal_verify import verify
from engine.loop import Engine
from engine.runner import run_virtual

__all__ = ["RunOptions", "UsageError", "parse_pair", "run"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_HALTED = 0, 1, 2, 3
FINAL_QUERY = "final-positions"
FINAL_TRIES, FINAL_WAIT_S = 5, 6  # the venue's last word on positions: bounded re-asks


class UsageError(Exception):
    """Bad arguments or configuration: exit 2, nothing sent."""


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


def parse_pair(text: str) -> tuple[str, str]:
    m = re.fullmatch(r"([A-Z0-9]{2,12})-([A-Z0-9]{2,12})", text.strip().upper())
    if not m or m.group(1) == m.group(2):
        raise UsageError(f"--pair: expected two different symbols like ETH-SOL, got {text!r}")
    return (f"{m.group(1)}-PERP", f"{m.group(2)}-PERP")


class Monitor:
    """Watches every record: unhedged notional and its duration, orders, 429s, halts."""

    def __init__(self, engine: Engine, products: list[ProductInfo], tolerance_usd: Decimal):
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

    def unhedged_usd(self) -> Decimal:
        net = Decimal(0)
        for p in self.products:
            quote = self.engine.ledger.quote(p.product_id)
            if quote is not None:
                net += self.engine.ledger.best_position(p.product_id) * quote.mid
        return abs(net)

    def after_step(self) -> None:
        now = self.engine.now_ns
        exposure = self.unhedged_usd()
        self.max_unhedged = max(self.max_unhedged, exposure)
        if exposure > self.tolerance:
            if self.unhedged_since is None:
                self.unhedged_since = now
            self.max_unhedged_ns = max(self.max_unhedged_ns, now - self.unhedged_since)
        else:
            self.unhedged_since = None

    def observe(self, rec: Record) -> None:
        if rec.kind == "event" and '"rate_limited"' in rec.payload:
            data = rec.data
            if data.get("kind") == VenueError.kind and data.get("error_class") == "rate_limited":
                self.rate_limited += 1


class Session:
    """One `dnpair run`: owns the engine, the venue and the printing."""

    def __init__(
        self,
        opts: RunOptions,
        settings: Settings,
        venue: VenuePort,
        clock: Clock,
        journal: Journal,
        out: Callable[[str], None],
    ) -> None:
        self.opts, self.settings, self.venue, self.clock = opts, settings, venue, clock
        self.engine = Engine(clock, journal)
        self.out = out
        self.monitor: Monitor | None = None
        self.session_machine: Any = None  # kept after it finishes, for the summary
        self.final: PositionSnapshot | None = None
        self.engine.observers.append(self._observe)

    # -- plumbing ---------------------------------------------------------------------
    def send(self, intent: Intent) -> None:
        assert self.monitor is not None
        if isinstance(intent, Halt):
            self.monitor.halt = intent
            self.out(f"[CIRCUIT] HALT: {intent.reason} (open exposure {intent.exposure_usd} USD)")
            return
        if isinstance(intent, SendAlert):
            self.monitor.alerts.append(intent)
            self.out(f"[ALERT] {intent.severity}: {intent.event}: {intent.message}")
            return
        if isinstance(intent, PlaceOrder):
            self.monitor.orders_sent += 1
        self.venue.submit(intent)

    def _observe(self, rec: Record) -> None:
        if self.monitor is not None:
            self.monitor.observe(rec)
        if rec.kind == "event" and rec.machine != "engine":
            data = rec.data
            rid = str(data.get("request_id") or "")
            if rid.startswith(FINAL_QUERY) and data.get("kind") == "position_snapshot":
                self.final = PositionSnapshot(**{k: v for k, v in data.items() if k != "kind"})
        if self.opts.quiet:
            return
        if rec.kind == "transition":
            d = rec.data
            if d["to"] is None:
                return  # consumed without a state change: journal only
            secs = Decimal(rec.ts) / NS_PER_S
            why = d["event"] if d["event"] not in (None, "None") else "auto"
            self.out(f"{secs:10.3f}s [{rec.machine}] {d['from']} → {d['to']} ({why})")

    def products(self) -> list[ProductInfo]:
        known = self.venue.products
        missing = [s for s in self.opts.pair if s not in known]
        if missing:
            raise UsageError(f"--pair: venue does not list {', '.join(missing)}")
        return [known[s] for s in self.opts.pair]

    def app_config(self, products: list[ProductInfo]) -> dict[str, Any]:
        values = {
            k: ([str(x) for x in v] if isinstance(v, tuple) else v)
            for k, v in self.settings.values.items()
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
        return finished or halted

    def after_step(self) -> None:
        if self.monitor is not None:
            self.monitor.after_step()

    def final_query(self, attempt: int) -> Intent:
        ids = tuple(p.product_id for p in self.products())
        rid = f"{FINAL_QUERY}-{attempt}"
        self.engine.annotate("final position query", request_id=rid)
        return QueryPositions(request_id=rid, product_ids=ids)

    # -- drivers ------------------------------------------------------------------------
    async def run_virtual(self) -> None:
        assert isinstance(self.clock, VirtualClock)
        await self.venue.start(self.engine.submit)
        products = self.products()
        self._arm_monitor(products)
        first = self.engine.start("engine.app:start_pair", self.app_config(products))
        self.session_machine = self.engine.machines.get(SESSION_ID)
        limit = self._virtual_limit_ns()

        def until() -> bool:
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
        wake = asyncio.Event()
        self.engine.on_inbox = wake.set
        stops = 0

        def on_signal() -> None:
            nonlocal stops
            stops += 1
            if stops > 1:
                self.out("[EXIT] already stopping: still flattening and verifying")
            self.engine.submit(OperatorCommand(command="stop", reason="signal"), "operator")

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            await self.venue.start(self.engine.submit)
            products = self.products()
            self._arm_monitor(products)
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
                    self.out(f"[EXIT] no answer to final position query {attempt}")
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.venue.close()

    def _arm_monitor(self, products: list[ProductInfo]) -> None:
        tolerance = Decimal("0.05") * self.settings.size_usd
        self.monitor = Monitor(self.engine, products, tolerance)

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
        return int((per_cycle * (cycles + 3) + 300) * NS_PER_S)

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
            "halt_reason": halt.reason if halt is not None else None,
            "final_positions": final,
            "flat": self.is_flat(),
            "max_unhedged_notional_usd": str(self.monitor.max_unhedged),
            "max_unhedged_seconds": str(Decimal(self.monitor.max_unhedged_ns) / NS_PER_S),
            "emergency_exits": getattr(info, "emergency_exits", 0),
            "orders_sent": self.monitor.orders_sent,
            "rate_limited": self.monitor.rate_limited,
            "realized_pnl_usd": str(self.engine.ledger.realized_pnl),
            "fees_usd": str(self.engine.ledger.fees),
            "alerts": [a.event for a in self.monitor.alerts],
            "journal": self.engine.journal.path,
        }

    def is_flat(self) -> bool:
        if self.final is None:
            return False
        dust = self.settings.dust_usd
        for p in self.final.positions:
            quote = self.engine.ledger.quote(p.product_id)
            px = quote.mid if quote is not None else Decimal(1)
            if abs(p.qty) * px > dust:
                return False
        return True


def open_journal(
    path: str | None,
    pair: tuple[str, str],
    out: Callable[[str], None],
    durable: bool | str = True,
) -> Journal:
    if path is None:
        Path("runs").mkdir(exist_ok=True)
        stem = "-".join(s.removesuffix("-PERP") for s in pair)
        n = 1
        while Path(f"runs/{stem}-{n}.db").exists():
            n += 1
        path = f"runs/{stem}-{n}.db"
    if Path(path).exists():
        report = verify(path)
        if report.status == "corrupt":
            raise UsageError(
                f"{report.describe(path)}\nrefusing to trade on a damaged journal; "
                "inspect it, then start with a new --journal"
            )
        if report.status == "torn_tail":
            out(report.describe(path))
            truncate_torn_tail(path)
            out(f"{path}: torn tail truncated to {report.intact} records")
    return Journal(path, durable=durable)


def run(opts: RunOptions, settings: Settings, out: Callable[[str], None] = print) -> int:
    """Run a session; returns the process exit code."""
    from adapters.sim import make_sim_venue

    if opts.venue != "sim":
        raise UsageError(f"--venue {opts.venue}: not available in this build yet")
    clock: Clock = VirtualClock() if opts.clock == "virtual" else WallClock()
    try:
        venue = make_sim_venue(
            clock=clock, seed=opts.seed, faults_path=opts.faults, symbols=list(opts.pair)
        )
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    # Simulated time needs its journal to survive a killed process, not a power cut.
    journal = open_journal(
        opts.journal, opts.pair, out, durable="process" if opts.clock == "virtual" else True
    )
    out(
        f"[START] pair {'/'.join(opts.pair)} venue {opts.venue} clock {opts.clock} "
        f"seed {opts.seed} journal {journal.path}"
    )
    for line in settings.describe():
        out(f"[FLAG] {line}")
    session = Session(opts, settings, venue, clock, journal, out)
    code = EXIT_ERROR
    try:
        if opts.clock == "virtual":
            asyncio.run(session.run_virtual())
        else:
            asyncio.run(session.run_wall())
        code = EXIT_HALTED if session.monitor and session.monitor.halt else EXIT_OK
        if code == EXIT_OK and not session.is_flat():
            code = EXIT_HALTED
    finally:
        journal.close()
        if session.monitor is not None:
            summary = session.summary()
            text = json.dumps(summary, indent=2, sort_keys=True)
            if opts.summary_json:
                Path(opts.summary_json).write_text(text + "\n", encoding="utf-8")
            out(
                f"[SUMMARY] cycles {summary['cycles_completed']}/{summary['cycles_requested']}"
                f" halted={summary['halted']} flat={summary['flat']}"
                f" pnl={summary['realized_pnl_usd']} fees={summary['fees_usd']}"
            )
    return code


def fail_usage(message: str) -> int:
    print(f"dnpair run: {message}", file=sys.stderr)
    return EXIT_USAGE


__all__ += ["ConfigError", "fail_usage"]
