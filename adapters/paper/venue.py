"""PaperVenue: live market data in, orders matched locally, nothing ever executed.

The engine's VenuePort for `dnpair run --venue paper`. Two halves:

- a **market source** (`MarketSource`): the venue's public market data, with the
  products (symbols, increments, minimums), the published fee rates, one `LiveBook` per
  product kept current (REST snapshot + `book_depth` + `best_bid_offer`), and the quotes
  and stream states the engine hears: `BboUpdated` after the BBO gate, `ConnectionChanged`
  for the market-data stream (so stream gaps, drops and silences go through the same
  connection machine as live trading), REST quotes for `QueryMarketPrices`. Over the
  network it is `adapters.paper.source.NadoMarketSource` (the Nado adapter's public code:
  discovery, stream, BBO gate; no key, no signer); on the virtual clock it is the
  in-process simulator (`adapters.paper.simsource.SimMarketSource`).
- the **local matcher**: the simulator's exchange core over those books
  (`adapters.paper.exchange.PaperExchange`) behind the simulator's request face
  (`adapters.sim.rest.RestFace`), so orders, cancels and the position / order / open-order
  queries answer in exactly the sim venue's vocabulary (adapters/sim/README.md), after
  the sim's request latency. Fills and venue-side order ends are pushed after the sim's
  push latency.

There is no code path from here to an execute endpoint: the market source holds a
query-only gateway (`adapters.paper.source.QueryOnlyGateway`) and no signer exists.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Protocol

from adapters.base import EventSink
from adapters.base import ProductInfo
from adapters.paper.book import LiveBook
from adapters.paper.book import TradeEvent
from adapters.paper.exchange import FeeRates
from adapters.paper.exchange import PaperExchange
from adapters.sim.faultplan import FaultPlan
from adapters.sim.faults import NS_PER_MS
from adapters.sim.faults import FaultProfile
from adapters.sim.mapping import VENUE_INTENTS
from adapters.sim.mapping import open_order
from adapters.sim.mapping import push_event
from adapters.sim.products import ProductSpec
from adapters.sim.rest import RestFace
from adapters.sim.scheduler import Scheduler
from engine.core.clock import Clock
from engine.core.events import Event
from engine.core.events import FillReceived
from engine.core.events import OpenOrder
from engine.core.intents import Intent
from engine.core.intents import QueryMarketPrices
from engine.core.intents import StreamConnect
from engine.runtime.config import ConfigError

__all__ = ["PAPER_SUBACCOUNT", "MarketHooks", "MarketSource", "PaperVenue"]

# bytes32 like Nado's: a 20-byte owner (not an address anyone holds) and the name "paper".
PAPER_SUBACCOUNT = "0x" + "00" * 19 + "01" + b"paper".hex().ljust(24, "0")
ZERO = Decimal(0)


class MarketHooks(Protocol):
    """What a market source tells the paper venue."""

    def emit(self, ev: Event) -> None:
        """An event for the engine: a gated quote, a stream state, a failed quote read."""

    def book_changed(self, product_id: int) -> None:
        """The live book of `product_id` changed (resting paper orders may fill)."""

    def trade(self, ev: TradeEvent) -> None:
        """A public trade (queues of resting paper orders)."""


class MarketSource(Protocol):
    name: str  # where the data comes from, for logs

    @property
    def products(self) -> dict[str, ProductInfo]: ...

    @property
    def fees(self) -> dict[int, FeeRates]: ...

    @property
    def books(self) -> dict[int, LiveBook]: ...

    async def start(self, hooks: MarketHooks) -> None:
        """Discover the products and seed every book; raise ConfigError if impossible."""

    def connect(self, attempt: int) -> None:
        """`StreamConnect`: (re)open the market-data stream; answer with ConnectionChanged."""

    def query_prices(self, intent: QueryMarketPrices) -> None:
        """`QueryMarketPrices`: REST quotes through the BBO gate (or a VenueError)."""

    async def close(self) -> None: ...


class PaperVenue:
    name = "paper"

    def __init__(
        self,
        source: MarketSource,
        clock: Clock,
        *,
        seed: int = 0,
        profile: FaultProfile | None = None,
        history_limit: int = 5_000,
    ) -> None:
        """`profile`: the local matcher's latencies (`[sim]`) and, for chaos runs only,
        the order / REST faults of the simulator (a real paper run has none)."""
        self.source = source
        self.clock = clock
        self.seed = seed
        self.profile = profile or FaultProfile()
        self.history_limit = history_limit
        self.subaccount = PAPER_SUBACCOUNT
        self.exchange: PaperExchange | None = None
        self._rest: RestFace | None = None
        self._sink: EventSink | None = None
        self._sched = Scheduler(clock)
        self._push_ns = int(self.profile.sim.push_latency_ms * NS_PER_MS)
        self._fills: deque[FillReceived] = deque(maxlen=history_limit)
        self.stats: dict[str, int] = dict.fromkeys(("events", "fills", "book_changes", "trades"), 0)

    # -- VenuePort ------------------------------------------------------------------------
    @property
    def products(self) -> dict[str, ProductInfo]:
        return self.source.products

    async def start(self, sink: EventSink) -> None:
        if self._sink is not None:
            raise RuntimeError("PaperVenue already started")
        self._sink = sink
        try:
            await self.source.start(self)
            self._build()
        except BaseException:
            await self.close()
            raise

    def _build(self) -> None:
        specs: list[ProductSpec] = []
        books = self.source.books
        for info in self.source.products.values():
            book = books.get(info.product_id)
            mid = None if book is None else book.live_mid()
            if mid is None:
                raise ConfigError(
                    f"paper: {info.symbol} has no two-sided book at {self.source.name}; "
                    "nothing to match against"
                )
            specs.append(
                ProductSpec(
                    symbol=info.symbol,
                    product_id=info.product_id,
                    start_mid=mid,
                    tick=info.tick_size,
                    size_increment=info.size_increment,
                    min_notional=info.min_order_value_usd,
                )
            )
        origin = self.clock.now_ns()
        self.exchange = PaperExchange(
            specs,
            books,
            self.source.fees,
            seed=self.seed,
            profile=self.profile,
            start_ns=origin,
            history_limit=self.history_limit,
        )
        self._rest = RestFace(
            exchange=self.exchange,
            profile=self.profile,
            plan=FaultPlan(self.profile, self.seed),
            subaccount=self.subaccount,
            product_ids=[s.product_id for s in specs],
            origin_ns=origin,
            sched=self._sched,
            emit=self.emit,
            flush=self._flush,
            history_limit=self.history_limit,
        )

    def submit(self, intent: Intent) -> None:
        if self._sched.closed:
            return
        if self._sink is None or self._rest is None:
            raise RuntimeError("PaperVenue.submit before start")
        if isinstance(intent, VENUE_INTENTS):
            self._rest.submit(intent)  # matched here, never sent anywhere
        elif isinstance(intent, QueryMarketPrices):
            self.source.query_prices(intent)
        elif isinstance(intent, StreamConnect):
            self.source.connect(intent.attempt)
        # Engine-side intents (alerts, halt) have nothing to do with the venue.

    async def close(self) -> None:
        if self._sched.closed:
            return
        self._sched.close()
        await self.source.close()

    # -- MarketHooks ----------------------------------------------------------------------
    def emit(self, ev: Event) -> None:
        if self._sched.closed or self._sink is None:
            return
        self.stats["events"] += 1
        self._sink(ev)

    def book_changed(self, product_id: int) -> None:
        exchange = self.exchange
        if exchange is None or product_id not in exchange.live or self._sched.closed:
            return
        self.stats["book_changes"] += 1
        exchange.book_changed(product_id, self._sched.now())
        self._flush()

    def trade(self, ev: TradeEvent) -> None:
        exchange = self.exchange
        if exchange is None or ev.product_id not in exchange.live or self._sched.closed:
            return
        self.stats["trades"] += 1
        exchange.trade(ev.product_id, ev.price, ev.qty, ev.taker_buy, self._sched.now())
        self._flush()

    # -- the local matcher's pushes --------------------------------------------------------
    def _flush(self) -> None:
        """Push what the matcher recorded (fills, venue-side order ends), in order."""
        assert self.exchange is not None
        for rec in self.exchange.drain():
            if rec.subaccount != self.subaccount:
                continue
            ev = push_event(rec)
            if ev is None:
                continue
            if isinstance(ev, FillReceived):
                self._fills.append(ev)
                self.stats["fills"] += 1
            self._sched.later(self._push_ns, lambda ev=ev: self.emit(ev))  # type: ignore[misc]

    # -- ground truth (tests, chaos, summaries) -------------------------------------------
    def _pid(self, product: str | int) -> int:
        return product if isinstance(product, int) else self.products[product].product_id

    def position(self, product: str | int) -> Decimal:
        if self.exchange is None:
            return ZERO
        return self.exchange.position(self.subaccount, self._pid(product)).qty

    def venue_positions(self) -> dict[str, Decimal]:
        return {s: self.position(s) for s in self.products}

    def mid(self, product: str | int) -> Decimal:
        book = self.source.books[self._pid(product)]
        mid = book.live_mid()
        if mid is None and self.exchange is not None:
            return self.exchange.mid(self._pid(product))
        return ZERO if mid is None else mid

    def fills(self) -> list[FillReceived]:
        """Every paper fill as the matcher made it."""
        return list(self._fills)

    def open_orders(self) -> list[OpenOrder]:
        if self.exchange is None:
            return []
        pids = list(self.exchange.live)
        return [open_order(o) for o in self.exchange.open_orders(self.subaccount, pids)]

    def fees_paid(self) -> Decimal:
        if self.exchange is None:
            return ZERO
        return sum(
            (self.exchange.position(self.subaccount, p).fees for p in self.exchange.live), ZERO
        )
