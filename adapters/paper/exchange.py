"""The simulator's exchange core matching paper orders against the live book.

`PaperExchange` is `adapters.sim.exchange.Exchange` with its synthetic crowd replaced
by one `LiveBook` per product and its price process frozen: prices move only when the
venue's market data says so (`book_changed`). Everything else is the simulator's: order
validation, takers walking the book level by level (`matching.candidates`), IOC / FOK /
post-only semantics, reduce-only caps, positions, fees on the taker's first match of at
least `min_size` notional, and the records a face turns into engine events.

Resting (maker) orders fill, at their own price, when
- the book trades through them: the opposite side's best reaches their price (the
  simulator's `crossed` rule), or a public trade prints beyond their price; or
- their queue is worked off: an order joining a level queues behind the size the venue
  showed there; public trades at that price eat the queue first, and a level that
  shrinks below the queue ahead moves the order up (cancels ahead of it). Without a
  `trade` stream only trade-through fills a resting order (conservative).
Fees are the venue's published per-product rates (`symbols` maker / taker fee rates).
This fill model is a modelling choice (`unverified` against real Nado queues).
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from decimal import Decimal

from adapters.paper.book import LiveBook
from adapters.sim.book import BookSide
from adapters.sim.book import CrowdBook
from adapters.sim.exchange import Exchange
from adapters.sim.faults import FaultProfile
from adapters.sim.products import ProductSpec
from adapters.sim.products import floor_to
from adapters.sim.records import Cause
from adapters.sim.records import OrderRequest
from adapters.sim.records import OrderState
from adapters.sim.records import PlaceResult
from adapters.sim.records import SimOrder

__all__ = ["FeeRates", "PaperExchange"]

ZERO = Decimal(0)
FeeRates = tuple[Decimal, Decimal]  # (maker, taker) as fractions of notional


class PaperExchange(Exchange):
    def __init__(
        self,
        specs: Sequence[ProductSpec],
        books: Mapping[int, LiveBook],
        fees: Mapping[int, FeeRates],
        *,
        seed: int,
        profile: FaultProfile | None = None,
        start_ns: int = 0,
        history_limit: int = 5_000,
    ) -> None:
        super().__init__(
            specs, seed=seed, profile=profile, start_ns=start_ns, history_limit=history_limit
        )
        self.live: dict[int, LiveBook] = {s.product_id: books[s.product_id] for s in specs}
        self.books: dict[int, CrowdBook] = dict(self.live)
        self.fees = {s.product_id: fees[s.product_id] for s in specs}
        self._jumps = []  # the live market has no scheduled jumps
        self.queue_ahead: dict[str, Decimal] = {}  # digest -> size ahead at its level
        for pid, book in self.live.items():
            mid = book.live_mid()
            if mid is not None:
                self.prices.mids[pid] = mid

    def funded(self, subaccount: str) -> bool:
        """A paper account holds the simulator's collateral: it never needs a deposit (the
        sim's exchange core may require one of other subaccounts)."""
        return True

    # -- time: the market moves only when the venue says so -------------------------------
    def advance_to(self, now_ns: int) -> None:
        self.now_ns = max(self.now_ns, now_ns)

    def book_changed(self, product_id: int, now_ns: int) -> None:
        """The live book of `product_id` changed: new mid, queues, resting orders crossed."""
        self.advance_to(now_ns)
        book = self.live[product_id]
        mid = book.live_mid()
        if mid is not None:
            self.prices.mids[product_id] = mid
        for order in list(self._open[product_id]):
            if order.state != "open":
                continue
            side: BookSide = "bid" if order.side == "buy" else "ask"
            ahead = self.queue_ahead.get(order.digest)
            if ahead is not None:
                self.queue_ahead[order.digest] = min(ahead, book.level_qty(side, order.price))
            self._maker_check(order, book, self.now_ns, False)

    def trade(
        self, product_id: int, price: Decimal, qty: Decimal, taker_buy: bool, now_ns: int
    ) -> None:
        """A public trade: resting orders it trades through fill; at their price it works
        off the queue ahead of them first."""
        self.advance_to(now_ns)
        inc = self.specs[product_id].size_increment
        for order in list(self._open[product_id]):
            if order.state != "open" or (order.side == "buy") == taker_buy:
                continue  # only a taker on the other side trades against a resting order
            buy = order.side == "buy"
            through = price < order.price if buy else price > order.price
            fill = ZERO
            if through:
                fill = order.remaining
            elif price == order.price:
                ahead = self.queue_ahead.get(order.digest, ZERO)
                fill = floor_to(max(ZERO, qty - ahead), inc)
                self.queue_ahead[order.digest] = max(ZERO, ahead - qty)
            fill = min(fill, order.remaining)
            cap = self._reduce_cap(order.request)
            if cap is not None:
                fill = min(fill, cap)
            if fill > 0:
                self._fill(order, fill, order.price, False, self.now_ns)

    # -- orders -----------------------------------------------------------------------------
    def place(self, now_ns: int, req: OrderRequest) -> PlaceResult:
        result = super().place(now_ns, req)
        if result.digest is not None:
            order = self._orders.get(result.digest)
            if order is not None and order.state == "open":
                side: BookSide = "bid" if order.side == "buy" else "ask"
                book = self.live[order.product_id]
                self.queue_ahead[order.digest] = book.level_qty(side, order.price)
        return result

    def _maker_check(self, order: SimOrder, book: CrowdBook, now: int, flow: bool) -> None:
        super()._maker_check(order, book, now, False)  # trade-through only: no random flow
        if order.state != "open":
            self.queue_ahead.pop(order.digest, None)

    def _fill(self, order: SimOrder, qty: Decimal, price: Decimal, taker: bool, now: int) -> None:
        self.maker_rate, self.taker_rate = self.fees[order.product_id]
        super()._fill(order, qty, price, taker, now)
        if order.state != "open":
            self.queue_ahead.pop(order.digest, None)

    def _close(self, order: SimOrder, state: OrderState, cause: Cause, now: int) -> None:
        super()._close(order, state, cause, now)
        self.queue_ahead.pop(order.digest, None)
