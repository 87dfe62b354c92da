"""SimVenue: the exchange core behind the engine's VenuePort, with latency and faults.

Intents become requests (rest.py) that reach the exchange after a latency and answer
after another; what the exchange does on its own (fills of resting orders, IOC expiry,
BBO) is pushed through a faulty stream (feed.py). Time comes only from the engine Clock.
One SimVenue drives an exchange at a time (it drains the exchange's records); pass
`exchange=` to keep positions across a simulated client restart.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from decimal import Decimal

from adapters.base import EventSink
from adapters.base import ProductInfo
from adapters.sim.accounts import PositionState
from adapters.sim.exchange import Exchange
from adapters.sim.faults import FaultProfile
from adapters.sim.faults import ForeignFill
from adapters.sim.feed import Feed
from adapters.sim.mapping import VENUE_INTENTS
from adapters.sim.mapping import open_order
from adapters.sim.mapping import order_nonce
from adapters.sim.products import floor_to
from adapters.sim.products import resolve
from adapters.sim.records import OrderRequest
from adapters.sim.rest import RestFace
from adapters.sim.scheduler import Scheduler
from engine.clock import Clock
from engine.events import Event
from engine.events import FillReceived
from engine.events import OpenOrder
from engine.intents import Intent

__all__ = ["DEFAULT_SYMBOLS", "SIM_SUBACCOUNT", "SimVenue"]

DEFAULT_SYMBOLS = ("ETH-PERP", "SOL-PERP")
# bytes32: a 20-byte owner followed by the 12-byte name "default", as Nado spells it.
SIM_SUBACCOUNT = "0x" + "51" * 20 + b"default".hex().ljust(24, "0")
ZERO = Decimal(0)


class SimVenue:
    name = "sim"

    def __init__(
        self,
        clock: Clock,
        seed: int = 0,
        faults: FaultProfile | None = None,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        *,
        subaccount: str = SIM_SUBACCOUNT,
        exchange: Exchange | None = None,
        history_limit: int = 5_000,
    ) -> None:
        self.profile = profile = faults or FaultProfile()
        specs = resolve(symbols)
        origin = clock.now_ns()
        if exchange is None:
            exchange = Exchange(
                specs, seed=seed, profile=profile, start_ns=origin, history_limit=history_limit
            )
            _start_positions(exchange, subaccount, profile, origin)
        missing = [s.symbol for s in specs if s.product_id not in exchange.specs]
        if missing:
            raise ValueError(f"the shared exchange does not list {', '.join(missing)}")
        self.clock = clock
        self._origin = origin
        self.exchange = exchange
        self.subaccount = subaccount
        self._products = {s.symbol: s.info() for s in specs}
        self._pids = [s.product_id for s in specs]
        self._sink: EventSink | None = None
        self._events = 0
        self._sched = Scheduler(clock)
        self._feed = Feed(
            exchange=exchange,
            profile=profile,
            seed=seed,
            subaccount=subaccount,
            product_ids=self._pids,
            origin_ns=origin,
            sched=self._sched,
            emit=self._emit,
            history_limit=history_limit,
        )
        self._rest = RestFace(
            exchange=exchange,
            profile=profile,
            seed=seed,
            subaccount=subaccount,
            product_ids=self._pids,
            origin_ns=origin,
            sched=self._sched,
            emit=self._emit,
            flush=self._feed.flush,
            history_limit=history_limit,
        )

    # -- VenuePort ------------------------------------------------------------------------
    @property
    def products(self) -> dict[str, ProductInfo]:
        return dict(self._products)

    async def start(self, sink: EventSink) -> None:
        if self._sink is not None:
            raise RuntimeError("SimVenue already started")
        self._sink = sink
        self._feed.start()
        for i, ff in enumerate(self.profile.venue.foreign_fills):
            self._sched.at(self._origin + ff.at_ns, functools.partial(self._foreign, i, ff))

    def submit(self, intent: Intent) -> None:
        if self._sched.closed:
            return
        if self._sink is None:
            raise RuntimeError("SimVenue.submit before start")
        if isinstance(intent, VENUE_INTENTS):
            self._rest.submit(intent)
        # Engine-side intents (alerts, halt) have nothing to do with the venue.

    async def close(self) -> None:
        self._sched.close()

    # -- ground truth (tests, chaos, summaries) -------------------------------------------
    def venue_positions(self) -> dict[str, Decimal]:
        """Signed position per symbol as the venue holds it right now (never lagged)."""
        return {s: self.position(s) for s in self._products}

    def position(self, product: str | int) -> Decimal:
        return self.exchange.position(self.subaccount, self._pid(product)).qty

    def open_orders(self) -> list[OpenOrder]:
        return [open_order(o) for o in self.exchange.open_orders(self.subaccount, self._pids)]

    def fills(self) -> list[FillReceived]:
        """Every fill of ours as it happened at the venue, before any push fault."""
        return list(self._feed.fills)

    def realized_pnl(self, product: str | int | None = None) -> Decimal:
        """Closed PnL, fees not included."""
        return sum((p.realized_pnl for p in self._positions(product)), ZERO)

    def fees_paid(self, product: str | int | None = None) -> Decimal:
        return sum((p.fees for p in self._positions(product)), ZERO)

    def mid(self, product: str | int) -> Decimal:
        return self.exchange.mid(self._pid(product))

    @property
    def stats(self) -> dict[str, int]:
        """Counters: events delivered, requests, faults applied (ws_* for the push stream)."""
        ws = {f"ws_{k}": v for k, v in self._feed.channel.stats.items()}
        return {"events": self._events, **self._rest.stats, **self._feed.stats, **ws}

    # -- faults -----------------------------------------------------------------------------
    def _foreign(self, i: int, ff: ForeignFill) -> None:
        """`venue.foreign_fills`: an IOC on our subaccount from another client (no client
        id the engine knows), 5 % through the book; its fills are pushed like ours."""
        now = self._sched.now()
        self.exchange.advance_to(now)
        spec = self.exchange.by_symbol.get(ff.product)
        if spec is None:
            return
        mid = self.exchange.mid(spec.product_id)
        raw = mid * Decimal("1.05") if ff.side == "buy" else mid * Decimal("0.95")
        req = OrderRequest(
            subaccount=self.subaccount,
            product_id=spec.product_id,
            side="buy" if ff.side == "buy" else "sell",
            qty=floor_to(ff.qty, spec.size_increment),
            price=floor_to(raw, spec.tick),
            order_type="ioc",
            nonce=order_nonce(self.subaccount, f"foreign/{i}"),
        )
        self.exchange.place(now, req)
        self._feed.flush()

    # -- plumbing -------------------------------------------------------------------------
    def _emit(self, ev: Event) -> None:
        if self._sched.closed or self._sink is None:
            return
        self._events += 1
        self._sink(ev)

    def _pid(self, product: str | int) -> int:
        return product if isinstance(product, int) else self._products[product].product_id

    def _positions(self, product: str | int | None) -> list[PositionState]:
        pids = self._pids if product is None else [self._pid(product)]
        return [self.exchange.position(self.subaccount, pid) for pid in pids]


def _start_positions(exchange: Exchange, subaccount: str, profile: FaultProfile, at: int) -> None:
    """`venue.start_positions`: what the account holds before anything happens."""
    account = exchange.account(subaccount)
    for symbol, qty in profile.venue.start_positions:
        spec = exchange.by_symbol.get(symbol)
        if spec is None or not qty:
            continue
        pos = account.position(spec.product_id)
        pos.qty, pos.entry = qty, exchange.mid(spec.product_id)
        # Lagging position reads see it too: it was there long before.
        account.seed_history(spec.product_id, at - exchange.lag_ns - 1, pos.qty, pos.entry)
