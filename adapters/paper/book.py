"""One product's live order book for paper trading: what the local matcher walks.

`LiveBook` holds absolute level quantities (price -> qty) per side, as Nado's public
market data gives them: a REST snapshot (`market_liquidity`, nado-protocol.md §6.2)
replaces the whole book, a `book_depth` event sets levels (absolute quantities, `0` =
level removed, §7.5), and a `best_bid_offer` quote confirms the top (levels better than
it are gone, its sizes are the top levels'). It subclasses the simulator's `CrowdBook`
so the simulator's exchange core matches against it unchanged (`available`, `best`,
`consume`).

What paper takers eat is remembered per level (`eaten`) until the venue next states
that level (an update or a snapshot): the real book does not know our paper trades, so
without this a taker could hit the same size twice. Unverified modelling choice, like
every fill model of a paper venue (Hummingbot's paper connector and NautilusTrader's
sandbox make the same one).

`DepthChain` is the `last_max_timestamp` chain of one product's `book_depth` events:
events received before the book is seeded wait; after a snapshot stamped T the events
with `max_timestamp <= T` are already in it; from then on each event's
`last_max_timestamp` must equal the previous event's `max_timestamp`, else the book has
a gap and must be re-seeded from REST (§7.5; ccxt's pro `nado` drops the book on a
mismatch). Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from typing import Literal

import attrs

from adapters.nado.mapping import from_x18
from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import as_int
from adapters.nado.wire import req_bool
from adapters.nado.wire import req_int
from adapters.nado.wire import req_list
from adapters.sim.book import BookSide
from adapters.sim.book import CrowdBook
from adapters.sim.book import Level
from adapters.sim.faults import SimSettings
from adapters.sim.products import ProductSpec
from adapters.sim.products import floor_to

__all__ = [
    "DepthChain",
    "DepthEvent",
    "LiveBook",
    "Snapshot",
    "TradeEvent",
    "parse_book_depth",
    "parse_liquidity",
    "parse_trade",
]

ZERO = Decimal(0)
MAX_LEVELS = 1000  # a book event or snapshot with more levels per side is refused


# -- wire ---------------------------------------------------------------------------------
def _levels(raw: list[Any], where: str) -> list[Level]:
    if len(raw) > MAX_LEVELS:
        raise MalformedFrame(f"more than {MAX_LEVELS} levels", where=where)
    out: list[Level] = []
    for entry in raw:
        if not isinstance(entry, list | tuple) or len(entry) != 2:
            raise MalformedFrame("a level must be [price_x18, qty_x18]", where=where)
        price = as_int(entry[0], "price", where, min_value=1)
        qty = as_int(entry[1], "qty", where, min_value=0)
        out.append((from_x18(price), from_x18(qty)))
    return out


@attrs.frozen(kw_only=True)
class Snapshot:
    """`market_liquidity` data: absolute levels and the venue time (unix ns)."""

    bids: list[Level]
    asks: list[Level]
    ts_ns: int


def parse_liquidity(data: Any) -> Snapshot:
    """`{bids: [[price_x18, qty_x18]...], asks, timestamp}` (§6.2). The timestamp's unit
    is `unverified` (taken as ns, like the stream's stamps; `venue serve` answers ns). A
    coarser unit would only make the chain apply waiting events the snapshot already
    holds: harmless, their level quantities are absolute."""
    w = "market_liquidity"
    if not isinstance(data, Mapping):
        raise MalformedFrame("expected an object", where=w)
    return Snapshot(
        bids=_levels(req_list(data, "bids", w), w),
        asks=_levels(req_list(data, "asks", w), w),
        ts_ns=req_int(data, "timestamp", w, min_value=0),
    )


@attrs.frozen(kw_only=True)
class DepthEvent:
    """One `book_depth` event (§7.5): absolute level quantities, `0` removes a level."""

    product_id: int
    min_ts: int
    max_ts: int
    last_max_ts: int
    bids: list[Level]
    asks: list[Level]


def parse_book_depth(obj: Mapping[str, Any]) -> DepthEvent:
    w = "book_depth"
    event = DepthEvent(
        product_id=req_int(obj, "product_id", w, min_value=0),
        min_ts=req_int(obj, "min_timestamp", w, min_value=0),
        max_ts=req_int(obj, "max_timestamp", w, min_value=0),
        last_max_ts=req_int(obj, "last_max_timestamp", w, min_value=0),
        bids=_levels(req_list(obj, "bids", w), w),
        asks=_levels(req_list(obj, "asks", w), w),
    )
    if event.max_ts < event.min_ts:
        raise MalformedFrame("max_timestamp before min_timestamp", where=w)
    return event


@attrs.frozen(kw_only=True)
class TradeEvent:
    """One public `trade` (§7.5): `taker_qty` is the size that traded at `price`."""

    product_id: int
    ts_ns: int
    price: Decimal
    qty: Decimal
    taker_buy: bool


def parse_trade(obj: Mapping[str, Any]) -> TradeEvent:
    w = "trade"
    price = as_int(obj.get("price"), "price", w, min_value=1)
    qty = abs(as_int(obj.get("taker_qty"), "taker_qty", w))
    return TradeEvent(
        product_id=req_int(obj, "product_id", w, min_value=0),
        ts_ns=req_int(obj, "timestamp", w, min_value=0),
        price=from_x18(price),
        qty=from_x18(qty),
        taker_buy=req_bool(obj, "is_taker_buyer", w),
    )


# -- the chain ----------------------------------------------------------------------------
Verdict = Literal["apply", "skip", "wait", "gap"]


class DepthChain:
    """The `last_max_timestamp` chain of one product (see the module docstring)."""

    def __init__(self, max_waiting: int = 500) -> None:
        self.seeded_ts: int | None = None  # None: no snapshot since the last reset
        self.last_max: int | None = None  # max_timestamp of the last event applied
        self.waiting: list[DepthEvent] = []
        self.max_waiting = max_waiting
        self.gaps = 0

    @property
    def synced(self) -> bool:
        return self.seeded_ts is not None

    def reset(self) -> None:
        """The stream dropped or the chain broke: wait for a new snapshot."""
        self.seeded_ts = None
        self.last_max = None
        self.waiting = []

    def offer(self, ev: DepthEvent) -> Verdict:
        if self.seeded_ts is None:
            self.waiting.append(ev)
            del self.waiting[: -self.max_waiting]
            return "wait"
        if self.last_max is None:
            if ev.max_ts <= self.seeded_ts:
                return "skip"  # already in the snapshot
            self.last_max = ev.max_ts
            return "apply"
        if ev.last_max_ts != self.last_max:
            if ev.max_ts <= self.last_max:
                return "skip"  # a duplicate or an older event
            self.gaps += 1
            self.reset()
            return "gap"
        self.last_max = ev.max_ts
        return "apply"

    def seeded(self, ts_ns: int) -> list[DepthEvent]:
        """A snapshot stamped `ts_ns` was applied; returns the waiting events to apply
        on top of it, in order (the chain then continues from them)."""
        self.seeded_ts, self.last_max = ts_ns, None
        waiting, self.waiting = self.waiting, []
        out: list[DepthEvent] = []
        for ev in waiting:
            verdict = self.offer(ev)
            if verdict == "apply":
                out.append(ev)
            elif verdict == "gap":
                return []  # the waiting events do not chain: seed again
        return out


# -- the book -----------------------------------------------------------------------------
class LiveBook(CrowdBook):
    def __init__(self, spec: ProductSpec) -> None:
        super().__init__(spec, SimSettings())
        self.levels: dict[BookSide, dict[Decimal, Decimal]] = {"bid": {}, "ask": {}}
        self._eaten_at: dict[BookSide, dict[Decimal, Decimal]] = {"bid": {}, "ask": {}}
        self.updated_ns: int | None = None  # engine clock of the last statement
        self.venue_ts_ns = 0  # venue stamp of the last statement (snapshot, event, quote)

    # -- what the venue says ----------------------------------------------------------
    def seed(self, snap: Snapshot, now_ns: int) -> None:
        for side, levels in (("bid", snap.bids), ("ask", snap.asks)):
            book: BookSide = "bid" if side == "bid" else "ask"
            self.levels[book] = {p: q for p, q in levels if q > 0}
            self._eaten_at[book] = {}
        self.venue_ts_ns = snap.ts_ns
        self.updated_ns = now_ns

    def apply(self, ev: DepthEvent, now_ns: int) -> None:
        self._set("bid", ev.bids)
        self._set("ask", ev.asks)
        self.venue_ts_ns = max(self.venue_ts_ns, ev.max_ts)
        self.updated_ns = now_ns

    def confirm_top(
        self,
        bid: Decimal,
        bid_qty: Decimal,
        ask: Decimal,
        ask_qty: Decimal,
        ts_ns: int,
        now_ns: int,
    ) -> None:
        """A quote the BBO gate accepted: nothing rests better than it, and its sizes
        are the top levels' (a REST quote without sizes keeps the levels' own)."""
        if ts_ns < self.venue_ts_ns:
            return  # older than what the book already says
        for side, price, qty in (("bid", bid, bid_qty), ("ask", ask, ask_qty)):
            book: BookSide = "bid" if side == "bid" else "ask"
            better = [p for p in self.levels[book] if (p > price if book == "bid" else p < price)]
            for p in better:
                del self.levels[book][p]
                self._eaten_at[book].pop(p, None)
            if qty > 0:
                self._set(book, [(price, qty)])
        self.venue_ts_ns = ts_ns
        self.updated_ns = now_ns

    def _set(self, side: BookSide, levels: Iterable[Level]) -> None:
        book, eaten = self.levels[side], self._eaten_at[side]
        for price, qty in levels:
            eaten.pop(price, None)  # the venue restated this level
            if qty > 0:
                book[price] = qty
            else:
                book.pop(price, None)

    def level_qty(self, side: BookSide, price: Decimal) -> Decimal:
        """What the venue shows at `price` (before paper takers ate any of it)."""
        return self.levels[side].get(price, ZERO)

    def live_mid(self) -> Decimal | None:
        bid, ask = self.best("bid", 0), self.best("ask", 0)
        if bid is None or ask is None:
            return None
        return (bid[0] + ask[0]) / 2

    def depth(self, side: BookSide, n: int = 10) -> list[Level]:
        return self.available(side, 0)[:n]

    # -- CrowdBook: what the simulator's matcher reads ---------------------------------
    def set_market(self, mid: Decimal, factors: tuple[float, float]) -> None:
        return None  # the live book is not a synthetic crowd: nothing to rebuild

    def full(self, side: BookSide) -> list[Level]:
        levels = getattr(self, "levels", None)
        if levels is None:  # during CrowdBook.__init__
            return []
        return sorted(levels[side].items(), reverse=side == "bid")

    def eaten(self, side: BookSide, now_ns: int) -> Decimal:
        return sum(self._eaten_at[side].values(), ZERO)

    def available(self, side: BookSide, now_ns: int) -> list[Level]:
        inc = self.spec.size_increment
        eaten = self._eaten_at[side]
        out: list[Level] = []
        for price, qty in self.full(side):
            left = floor_to(qty - eaten.get(price, ZERO), inc)
            if left > 0:
                out.append((price, left))
        return out

    def best(self, side: BookSide, now_ns: int) -> Level | None:
        levels = self.available(side, now_ns)
        return levels[0] if levels else None

    def consume(self, side: BookSide, qty: Decimal, now_ns: int) -> None:
        """A paper taker ate `qty` from the top of `side`."""
        eaten = self._eaten_at[side]
        for price, left in self.available(side, now_ns):
            if qty <= 0:
                break
            take = min(qty, left)
            eaten[price] = eaten.get(price, ZERO) + take
            qty -= take
