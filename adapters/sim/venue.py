"""SimVenue: the exchange core behind the engine's VenuePort, with latency and faults.

Intents become requests (rest.py) that reach the exchange after a latency and answer
after another; what the exchange does on its own (fills of resting orders, IOC expiry,
BBO) is pushed through a faulty stream (feed.py). Time comes only from the engine Clock.
One SimVenue drives an exchange at a time (it drains the exchange's records); pass
`exchange=` to keep positions across a simulated client restart.

Like the Nado adapter (adapters/nado/venue.py), the adapter side keeps two promises of
issue 11: a product whose stream said nothing for `quiet_quote_s` (half the engine's BBO
age limit) while the stream is up is asked by REST (`QueryMarketPrices`), so a quiet book
stays tradable; and an IOC/FOK whose end no push told within `probe_rtts` measured round
trips after its ack is asked about at once (`QueryOrder`), its terminal answer passed on
as an unsolicited `OrderStatus` (request_id None). Answers to these requests of its own
that decide nothing (errors, "open") stay here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from decimal import Decimal

from adapters.base import EventSink
from adapters.base import ProductInfo
from adapters.sim.accounts import PositionState
from adapters.sim.exchange import Exchange
from adapters.sim.faultplan import FaultPlan
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
from engine.core.clock import Clock
from engine.core.events import BboUpdated
from engine.core.events import ConnectionChanged
from engine.core.events import Event
from engine.core.events import FillReceived
from engine.core.events import OpenOrder
from engine.core.events import OrderAccepted
from engine.core.events import OrderCancelled
from engine.core.events import OrderExpired
from engine.core.events import OrderRejected
from engine.core.events import OrderStatus
from engine.core.events import VenueError
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryMarketPrices
from engine.core.intents import QueryOrder

__all__ = ["DEFAULT_SYMBOLS", "SIM_SUBACCOUNT", "SimVenue"]

DEFAULT_SYMBOLS = ("ETH-PERP", "SOL-PERP")
# bytes32: a 20-byte owner followed by the 12-byte name "default", as Nado spells it.
SIM_SUBACCOUNT = "0x" + "51" * 20 + b"default".hex().ljust(24, "0")
ZERO = Decimal(0)
NS = 1_000_000_000
OWN = "sim-venue:"  # request ids of the adapter's own queries
TERMINAL = frozenset({"filled", "cancelled", "expired", "rejected"})
# Finished orders (and their fills, and refused order ids) the in-process venue keeps for
# status and history queries; open orders are always kept. About 1 KB an order and 0.8 KB
# a fill, 4 orders a cycle: 1 000 is a few hundred cycles, the same window as the
# engine's own (`engine.core.ledger.MAX_ORDERS`), which never asks about older orders.
HISTORY_LIMIT = 1_000


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
        history_limit: int = HISTORY_LIMIT,
        quiet_quote_s: Decimal = Decimal(1),
        probe_rtts: int = 2,
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
        self._quiet_ns = max(int(quiet_quote_s * NS), 1)
        self._probe_rtts = probe_rtts
        self._confirmed: dict[int, int] = {}  # pid -> ns a quote last reached the engine
        self._stream_up = True
        self._sent: dict[str, tuple[PlaceOrder, int]] = {}  # IOC/FOK in flight: sent ns
        self._open_immediate: set[str] = set()  # acked IOC/FOK whose end is unheard
        self._probes: dict[str, int] = {}  # order id -> its probe's timer (Scheduler key)
        self.adapter_stats = dict.fromkeys(
            ("quote_refresh", "probes", "probe_resolved", "probe_undecided"), 0
        )
        self._sched = Scheduler(clock)
        self.plan = plan = FaultPlan(profile, seed)  # one plan: the feed's and REST's faults
        self._feed = Feed(
            exchange=exchange,
            profile=profile,
            plan=plan,
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
            plan=plan,
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
        self._sched.later(self._quiet_ns, self._quote_check)
        for i, ff in enumerate(self.profile.venue.foreign_fills):
            self._sched.at(self._origin + ff.at_ns, functools.partial(self._foreign, i, ff))

    def submit(self, intent: Intent) -> None:
        if self._sched.closed:
            return
        if self._sink is None:
            raise RuntimeError("SimVenue.submit before start")
        if isinstance(intent, PlaceOrder):
            self._note_sent(intent)
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
        own = {f"adapter_{k}": v for k, v in self.adapter_stats.items()}
        return {"events": self._events, **self._rest.stats, **self._feed.stats, **ws, **own}

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
        own = getattr(ev, "request_id", None)
        if isinstance(own, str) and own.startswith(OWN):
            ev = self._own_answer(ev)  # type: ignore[assignment]
            if ev is None:
                return
        self._observe(ev)
        self._events += 1
        self._sink(ev)

    # -- the adapter's own watch: quotes confirmed, IOC ends heard ------------------------
    def _observe(self, ev: Event) -> None:
        if isinstance(ev, BboUpdated):
            self._confirmed[ev.product_id] = self._sched.now()
        elif isinstance(ev, ConnectionChanged):
            self._stream_up = ev.state == "connected"
        elif isinstance(ev, OrderAccepted):
            sent = self._sent.pop(ev.order_id, None)
            if sent is not None:
                self._open_immediate.add(ev.order_id)
                wait = self._probe_rtts * max(self._sched.now() - sent[1], 1)
                key = self._sched.later(wait, lambda: self._probe(sent[0]))
                self._probes[ev.order_id] = key
        elif isinstance(ev, VenueError) and ev.order_id is not None:
            self._sent.pop(ev.order_id, None)
        elif isinstance(ev, FillReceived):
            if ev.remaining_qty is not None and ev.remaining_qty == 0:
                self._ended(ev.order_id)
        elif isinstance(ev, OrderExpired | OrderCancelled | OrderRejected) or (
            isinstance(ev, OrderStatus) and ev.state in TERMINAL
        ):
            self._ended(ev.order_id)

    def _note_sent(self, intent: PlaceOrder) -> None:
        if intent.tif in ("ioc", "fok") and intent.order_id not in self._sent:
            self._sent[intent.order_id] = (intent, self._sched.now())

    def _ended(self, order_id: str) -> None:
        self._sent.pop(order_id, None)
        self._open_immediate.discard(order_id)
        # Its probe would find nothing to ask (the end is heard): it is not left to fire.
        # (An order id is never accepted again after its end: a re-sent placement has
        # the same digest and is refused as a duplicate.)
        key = self._probes.pop(order_id, None)
        if key is not None:
            self._sched.cancel(key)

    def _probe(self, intent: PlaceOrder) -> None:
        """Two round trips after an IOC/FOK's ack and its end unheard: ask at once."""
        self._probes.pop(intent.order_id, None)
        if intent.order_id not in self._open_immediate:
            return
        self._open_immediate.discard(intent.order_id)  # one probe per order
        self.adapter_stats["probes"] += 1
        rid = f"{OWN}probe:{intent.order_id}"
        self._rest.submit(
            QueryOrder(request_id=rid, order_id=intent.order_id, product_id=intent.product_id)
        )

    def _quote_check(self) -> None:
        now = self._sched.now()
        quiet = self._quiet_ns
        due = tuple(p for p in self._pids if now - self._confirmed.get(p, now - quiet) >= quiet)
        if due and self._stream_up:  # at most one ask per quiet/2 (the re-check below)
            self.adapter_stats["quote_refresh"] += 1
            self._rest.submit(QueryMarketPrices(request_id=f"{OWN}quotes", product_ids=due))
        # The next product to go quiet; one just asked (its answer due): half a period.
        nxt = min(self._confirmed.get(p, now) + quiet for p in self._pids)
        self._sched.later(nxt - now if nxt > now else quiet // 2, self._quote_check)

    def _own_answer(self, ev: Event) -> Event | None:
        """An answer to the adapter's own request: pass on what decides something."""
        rid = getattr(ev, "request_id", "")
        if isinstance(ev, OrderStatus) and ev.state in TERMINAL:
            self.adapter_stats["probe_resolved"] += 1
            return OrderStatus(
                order_id=ev.order_id,
                state=ev.state,
                filled_qty=ev.filled_qty,
                remaining_qty=ev.remaining_qty,
            )
        if isinstance(ev, OrderStatus | VenueError) and rid.startswith(f"{OWN}probe:"):
            self.adapter_stats["probe_undecided"] += 1
        return None

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
