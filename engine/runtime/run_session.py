"""One `dnpair run` session: the parts `engine.runtime.compose` built (engine, venue, fold,
logger, alerter) and the little state a run keeps around them (the Monitor, the final
position answer, stopping). The jobs live in their own modules of engine/runtime/:
intents go out through `router`, operator commands and the disk guard are `commands`, the
drivers and their shared final-position loop are `drivers`, the result is `summary`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from adapters.base import ProductInfo
from adapters.base import VenuePort
from engine.core.clock import NS_PER_S
from engine.core.clock import Clock
from engine.core.clock import VirtualClock
from engine.core.events import PositionSnapshot
from engine.core.flatness import exposure_tolerance_usd
from engine.core.intents import Intent
from engine.core.intents import QueryPositions
from engine.core.loop import Engine
from engine.core.observed import Observed
from engine.ops.alerts import Alert
from engine.ops.alerts import Alerter
from engine.ops.trades import RunFold
from engine.runtime.account import Account
from engine.runtime.account import clear_halt
from engine.runtime.app import SESSION_ID
from engine.runtime.commands import DiskGuard
from engine.runtime.commands import command
from engine.runtime.config import Settings
from engine.runtime.crashpoints import CrashPoints
from engine.runtime.monitor import Monitor
from engine.runtime.options import RunOptions
from engine.runtime.options import UsageError
from engine.runtime.options import pair_name
from engine.runtime.router import route
from engine.runtime.summary import FinalBook
from engine.runtime.summary import summary

__all__ = ["FINAL_QUERY", "RUNNER_SETTINGS", "Session"]

FINAL_QUERY = "final-positions"
# The runner's settings, not the machines': kept out of the run header (replay, goldens).
RUNNER_SETTINGS = frozenset({"startup_budget_s", "min_free_disk_mb", "journal_max_mb"})


class Session:
    """One `dnpair run`; built by `engine.runtime.compose.build_session`."""

    def __init__(
        self,
        opts: RunOptions,
        settings: Settings,
        venue: VenuePort,
        clock: Clock,
        engine: Engine,
        fold: RunFold,
        out: Callable[[str], None],
        *,
        logger: logging.Logger,
        alerter: Alerter,
    ) -> None:
        self.opts, self.settings, self.venue, self.clock = opts, settings, venue, clock
        self.engine = engine
        self.fold = fold
        self.out = out
        self.logger = logger
        self.alerter = alerter
        self.console_sink: Callable[[str], None] = out
        self.monitor: Monitor | None = None
        self.session_machine: Any = None  # kept after it finishes, for the summary
        self.final: PositionSnapshot | None = None
        self.stopping = False  # a signal or an operator stop/flatten arrived
        self.stop_signalled: Any = None  # wall clock: an asyncio.Event set by a signal
        self.account: Account | None = None  # set by run(): where a HALT sticks
        self.disk = DiskGuard()
        self.crash: CrashPoints | None = None  # the crash test's hook (compose.build_session)
        self.metrics: Any = None  # engine.metrics.RunMetrics when --metrics-port is given
        self.view: Any = None  # engine.status.LiveView in a terminal
        self.after_step_hooks: list[Callable[[], None]] = []  # harnesses (chaos checker)

    @property
    def pair_name(self) -> str:
        return pair_name(self.opts.pair)

    @property
    def disk_stop(self) -> str | None:
        """Why the run stopped for journal space (None: it did not)."""
        return self.disk.stop

    def cycle_of_order(self, order_id: str) -> int | None:
        facts = self.fold.orders.get(order_id)
        return facts.cycle if facts is not None else None

    def console(self, line: str) -> None:
        self.console_sink(line)

    def info(self, line: str, level: int = logging.INFO, **fields: Any) -> None:
        self.logger.log(level, line, extra={"fields": fields} if fields else None)

    # -- plumbing ---------------------------------------------------------------------
    def send(self, intent: Intent) -> None:
        route(self, intent)

    def observe(self, seen: Observed) -> None:
        msg = seen.msg
        if msg is None:
            return  # a note or a transition: nothing for the Monitor or the final answer
        if self.monitor is not None:
            self.monitor.observe(seen)
        if (
            isinstance(msg, PositionSnapshot)
            and seen.rec.machine != "engine"
            and (msg.request_id or "").startswith(FINAL_QUERY)
        ):
            self.final = msg

    def raise_alert(self, alert: Alert) -> None:
        self.alerter.raise_alert(alert)

    # -- views --------------------------------------------------------------------------
    def symbols(self) -> dict[int, str]:
        return {p.product_id: p.symbol for p in self.products()}

    def snapshot(self) -> dict[str, Any]:
        from engine.ops.status import snapshot_live

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
        return command(self, cmd)

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
        self.disk.check(self)

    def after_step(self) -> None:
        self.check_disk()
        if self.monitor is not None:
            self.monitor.after_step()
            if self.monitor.halt is not None and not self.fold.halted:
                self.monitor.halt = None  # an operator resumed: the session left halted
                if self.account is not None:
                    clear_halt(self.account)
                self.info("[RECOVERY] resumed after HALT: the session re-syncs with the venue")
        for hook in self.after_step_hooks:
            hook()

    def final_query(self, attempt: int) -> Intent:
        ids = tuple(p.product_id for p in self.products())
        rid = f"{FINAL_QUERY}-{attempt}"
        self.engine.annotate("final position query", request_id=rid)
        return QueryPositions(request_id=rid, product_ids=ids)

    # -- drivers ------------------------------------------------------------------------
    async def run_virtual(self) -> None:
        from engine.runtime.drivers import drive_virtual

        await drive_virtual(self)

    async def run_wall(self) -> None:
        from engine.runtime.drivers import drive_wall

        await drive_wall(self)

    def arm_monitor(self, products: list[ProductInfo]) -> None:
        tolerance = exposure_tolerance_usd(self.settings.size_usd)
        self.monitor = Monitor(
            self.engine,
            products,
            tolerance,
            alert=self.raise_alert,
            exposure_alert_s=self.settings.fill_timeout_s,
        )

    def attach_metrics(self) -> Any:
        from engine.ops.metrics import RunMetrics

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

    # -- the result ---------------------------------------------------------------------
    def final_book(self) -> FinalBook:
        return FinalBook(self.final, self.products(), self.engine.ledger, self.settings.dust_usd)

    def summary(self) -> dict[str, Any]:
        return summary(self)

    def is_flat(self) -> bool:
        return self.final_book().is_flat()
