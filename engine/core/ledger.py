"""The ledger: what the engine knows about orders, fills and positions.

Updated by the loop before machines see an event, and read-only to machines.

It is the one holder of every order's lifecycle state (`OrderRecord.state`, stepped
through the table in `machines.order`): the venue's facts (acks with or without the
filled amount, fills, rejects, order statuses, a place request's error) and the engine's
own cancel requests step it here and nowhere else. A working machine reads it once it has
taken each word about its order (`OrderRecord.words`, `machines.pricing`); adapters keep
only wire facts.

Fills are applied idempotently by venue fill id; when the venue states the
order's cumulative filled amount it wins over summing deltas, so duplicated,
late or reordered fills never double-count. Venue position snapshots are kept
beside the fill-derived positions; a difference is reported, never papered over.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal

import attrs

from engine.core.events import BboUpdated
from engine.core.events import ConnectionChanged
from engine.core.events import Event
from engine.core.events import FillReceived
from engine.core.events import OrderAccepted
from engine.core.events import OrderCancelled
from engine.core.events import OrderExpired
from engine.core.events import OrderRejected
from engine.core.events import OrderStatus
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import AdoptVenuePositions
from engine.core.intents import CancelOrder
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from machines import order as lifecycle

__all__ = ["Ledger", "OrderRecord", "Quote"]

ZERO = Decimal(0)
# Long runs keep memory flat: finished orders beyond this many are forgotten (their fill
# ids stay in a larger window, so a late duplicate of their fills is still recognised).
MAX_ORDERS = 1_000
# 4 096 fill ids (as the exposure fold's FILL_IDS_KEPT): about a thousand cycles of fills,
# reached early in a long run (20 000 took ~5 000 cycles to fill, growing ~0.4 KB a cycle
# until then: issue 13, memory flat)
MAX_FILL_IDS = 4_096
# A read equal to a position the fills held within this window lags them (issue 11).
LAG_WINDOW_NS = 120 * 1_000_000_000
TINY = Decimal("1e-12")
# A status "not found" this many times with nothing filled: it never reached the venue
# (denied). The order's machine asks again a retry apart when it is not found (V7).
NOT_FOUND_LIMIT = 2


@attrs.define
class OrderRecord:
    order_id: str
    product_id: int
    side: str
    qty: Decimal
    price: Decimal
    tif: str
    reduce_only: bool
    purpose: str
    # The order's lifecycle state, held here only: stepped through `machines.order` (the
    # lifecycle table) by the venue's facts and the engine's cancel requests.
    state: str = lifecycle.PENDING
    digest: str | None = None
    filled: Decimal = ZERO
    notional: Decimal = ZERO  # sum of price * qty applied
    fees: Decimal = ZERO
    fill_ids: set[str] = attrs.field(factory=set)
    placed_ns: int = 0  # engine time the intent was journaled
    heard: Decimal = ZERO  # sum of the unique fills heard
    venue_total: Decimal = ZERO  # the venue's largest word on the cumulative fill
    not_found: int = 0  # status answers "not found"
    # Venue words about it a working machine takes (every one with its id but `accepted`):
    # the machine reads `state` only once it has taken as many (`machines.pricing`).
    words: int = 0

    @property
    def remaining(self) -> Decimal:
        return max(self.qty - self.filled, ZERO)

    @property
    def avg_price(self) -> Decimal | None:
        return self.notional / self.filled if self.filled else None

    @property
    def is_done(self) -> bool:
        return self.state in lifecycle.TERMINAL


@attrs.frozen
class Quote:
    bid: Decimal
    ask: Decimal
    bid_qty: Decimal
    ask_qty: Decimal
    ts_ns: int  # engine time at ingress
    ts_venue_ns: int | None = None  # the venue's own stamp, when it gives one
    # (bid + ask) / 2, worked out once per quote: the Monitor, the fold and the machines
    # read it many times (after every step) for each quote stored
    mid: Decimal = attrs.field(
        init=False,
        eq=False,
        repr=False,
        default=attrs.Factory(lambda q: (q.bid + q.ask) / 2, takes_self=True),
    )


@attrs.define
class ProductBook:
    position: Decimal = ZERO  # from applied fills
    entry_price: Decimal = ZERO  # average entry of the open position
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    venue_position: Decimal | None = None  # last venue snapshot
    venue_position_ts: int | None = None
    last_fill_ts: int | None = None  # engine time of the last fill applied
    adopted: Decimal = ZERO  # moved by AdoptVenuePositions (not by fills), summed
    # (engine ns, position before, position after) of the latest fills: a position read
    # that shows one of these recent states lags the fills (issue 11), it is not news.
    moves: deque[tuple[int, Decimal, Decimal]] = attrs.field(factory=lambda: deque(maxlen=64))

    def held_since(self, qty: Decimal, since_ns: int, tolerance: Decimal) -> bool:
        """Did the fill-derived position equal `qty` (within `tolerance`) at some time
        since `since_ns`, before the latest fills moved it?"""
        return any(
            ts >= since_ns and (abs(before - qty) < tolerance or abs(after - qty) < tolerance)
            for ts, before, after in self.moves
        )


# The lifecycle event each venue fact about an order is (fills are stepped by amount;
# cancel/expiry acks, statuses and place errors by `Ledger._lifecycle_event`).
_VENUE_FACT: dict[type, str] = {
    OrderAccepted: "accepted",
    OrderRejected: "rejected",
}
# A place request's error: the outcome is unknown, or the venue refused it for good.
_PLACE_ERROR = {"unknown_outcome": "outcome_unknown", "permanent": "rejected"}
# Answers that may state the order's cumulative fill, and those that end it (as tuples:
# `A | B` in an isinstance check builds a new union object on every call).
_STATES_FILLED = (OrderCancelled, OrderExpired, OrderStatus)
_ENDED = (OrderCancelled, OrderExpired)


class Ledger:
    def __init__(self) -> None:
        self.orders: dict[str, OrderRecord] = {}
        # The orders that may still be open, in placing order: `open_orders` runs after
        # every step (the Monitor), so it must not walk every order kept (up to
        # MAX_ORDERS); a done order is dropped from here the first time it is seen done.
        self._maybe_open: dict[str, OrderRecord] = {}
        self.products: dict[int, ProductBook] = {}
        self.quotes: dict[int, Quote] = {}
        self.oracles: dict[int, Decimal] = {}  # the venue's oracle price, last known
        # Products whose quotes carried an oracle price and whose latest quote carries
        # none: the venue's oracle is no longer known (the Nado adapter stops stamping an
        # oracle older than its bound), so the price band cannot be checked (D5).
        self.oracles_lost: set[int] = set()
        self.unknown_fills: deque[FillReceived] = deque(maxlen=1000)
        self._fill_window: dict[str, None] = {}  # recent fill ids, oldest first
        self.now_ns = 0
        # Read-only view of every live machine's state, kept by the engine, so a guard
        # can ask "is the breaker open?" without touching another machine.
        self.machine_states: dict[str, tuple[str, ...]] = {}
        self.fills_applied = 0
        self.fills_duplicate = 0
        # Bumped by every write (apply_intent / apply_event): a reader that derives
        # something from the ledger after every step (the Monitor's exposure) recomputes
        # it only when this moved.
        self.revision = 0
        # The venue stream as the adapter last reported it (channel "ws"): None never
        # reported, and the engine time it was last reported anything but `connected`
        # (dropped, failed, silent): pushes (fills) may have been lost from then on.
        self.stream_up: bool | None = None
        self.stream_lost_ns: int | None = None

    # -- read side -------------------------------------------------------------------
    def book(self, product_id: int) -> ProductBook:
        found = self.products.get(product_id)
        if found is None:  # (setdefault would build a ProductBook on every read)
            found = self.products[product_id] = ProductBook()
        return found

    def position(self, product_id: int) -> Decimal:
        return self.book(product_id).position

    def best_position(self, product_id: int) -> Decimal:
        """The venue's word when it is newer than our last fill, else our fills' sum.
        For monitoring exposure; decisions use `venue_position` from a fresh query."""
        book = self.book(product_id)
        if book.venue_position is not None and (
            book.last_fill_ts is None
            or (book.venue_position_ts is not None and book.venue_position_ts > book.last_fill_ts)
        ):
            venue = book.venue_position
            if venue != book.position and book.held_since(venue, self.now_ns - LAG_WINDOW_NS, TINY):
                return book.position  # the read shows a state the fills left: it lags them
            return venue
        return book.position

    def venue_position(self, product_id: int) -> Decimal | None:
        return self.book(product_id).venue_position

    def order(self, order_id: str) -> OrderRecord | None:
        return self.orders.get(order_id)

    def quote(self, product_id: int) -> Quote | None:
        return self.quotes.get(product_id)

    def oracle(self, product_id: int) -> Decimal | None:
        return self.oracles.get(product_id)

    def oracle_lost(self, product_id: int) -> bool:
        """The venue gave an oracle price for this product and its latest quote came
        without one: unknown now, not "no band" (a venue that never gives one is not
        band-checked at all)."""
        return product_id in self.oracles_lost

    def state_of(self, machine_id: str) -> tuple[str, ...]:
        return self.machine_states.get(machine_id, ())

    def open_orders(self) -> list[OrderRecord]:
        maybe = self._maybe_open
        done = [oid for oid, o in maybe.items() if o.is_done]
        for oid in done:
            del maybe[oid]
        return list(maybe.values())

    @property
    def realized_pnl(self) -> Decimal:
        return sum((b.realized_pnl for b in self.products.values()), ZERO)

    @property
    def fees(self) -> Decimal:
        return sum((b.fees for b in self.products.values()), ZERO)

    # -- write side (the loop only) --------------------------------------------------
    def apply_intent(self, intent: Intent) -> None:
        self.revision += 1
        if isinstance(intent, AdoptVenuePositions):
            for pid in intent.product_ids:
                book = self.book(pid)
                if book.venue_position is not None and book.venue_position != book.position:
                    book.adopted += book.venue_position - book.position
                    book.position = book.venue_position
                    book.entry_price = ZERO  # unknown from a snapshot; PnL restarts here
            return
        if isinstance(intent, CancelOrder):
            rec = self.orders.get(intent.order_id)
            if rec is not None:
                rec.state = lifecycle.step(rec.state, "cancel_requested")
            return
        if isinstance(intent, PlaceOrder) and intent.order_id not in self.orders:
            self._forget_old_orders()
            record = OrderRecord(
                order_id=intent.order_id,
                product_id=intent.product_id,
                side=intent.side,
                qty=intent.qty,
                price=intent.price,
                tif=intent.tif,
                reduce_only=intent.reduce_only,
                purpose=intent.purpose,
                placed_ns=self.now_ns,
            )
            self.orders[intent.order_id] = record
            self._maybe_open[intent.order_id] = record

    def apply_event(self, ev: Event, now_ns: int) -> list[str]:
        """Apply one event; returns notes worth journaling (duplicates, anomalies)."""
        self.revision += 1
        self.now_ns = now_ns
        if isinstance(ev, FillReceived):
            return self._apply_fill(ev)
        if isinstance(ev, BboUpdated):
            return self._apply_bbo(ev, now_ns)
        if isinstance(ev, PositionSnapshot):
            for pos in ev.positions:
                book = self.book(pos.product_id)
                book.venue_position, book.venue_position_ts = pos.qty, now_ns
            return []
        if isinstance(ev, ConnectionChanged):
            if ev.channel == "ws":
                self.stream_up = ev.state == "connected"
                if not self.stream_up:
                    self.stream_lost_ns = now_ns
            return []
        order = self.orders.get(getattr(ev, "order_id", "") or "")
        if order is None:
            return []
        notes: list[str] = []
        if not isinstance(ev, OrderAccepted):
            order.words += 1  # a word the order's working machine takes (module doc)
        if isinstance(ev, _STATES_FILLED) and ev.filled_qty:
            notes = self._venue_says_filled(order, ev.filled_qty)
        if isinstance(ev, OrderAccepted):
            order.digest = ev.digest or order.digest
        if isinstance(ev, OrderStatus) and ev.state == "not_found":
            order.not_found += 1
        order.state = lifecycle.step(order.state, self._lifecycle_event(order, ev))
        return notes

    @staticmethod
    def _lifecycle_event(order: OrderRecord, ev: Event) -> str:
        """The lifecycle event (`machines.order`) a venue fact about `order` is ("": none;
        fills are stepped by amount in `_settle_filled`)."""
        if isinstance(ev, _ENDED):
            # Without the filled amount it ended uncounted: asked about before anything
            # is re-traded (fills may still be in flight, seed 002).
            return (
                ev.kind.removeprefix("order_") if ev.filled_qty is not None else "ended_uncounted"
            )
        if isinstance(ev, OrderStatus):
            if ev.state == "open":
                return "reported_open"
            if ev.state == "not_found":
                # Never found, asked twice, nothing filled: it never reached the venue.
                never = order.not_found >= NOT_FOUND_LIMIT and order.filled == 0
                return "denied" if never else ""
            return ev.state  # filled, cancelled, expired, rejected
        if isinstance(ev, VenueError):
            if ev.request != "place_order":
                return ""  # a failed cancel or query says nothing of the order itself
            # Refused before the book (429, retryable): provably not placed.
            return _PLACE_ERROR.get(ev.error_class, "denied")
        return _VENUE_FACT.get(type(ev), "")

    def _venue_says_filled(self, order: OrderRecord, total: Decimal) -> list[str]:
        """A cancel/expiry ack or an order status states the order's cumulative fill. If
        it is more than the fills heard (their pushes were lost), the difference moves the
        position now, at the order's limit price (the venue did not say at what price);
        fills of it that arrive later add nothing (their total is already counted)."""
        order.venue_total = max(order.venue_total, total)
        return self._settle_filled(order, order.price, ZERO, "the venue's cumulative word")

    def _settle_filled(
        self, order: OrderRecord, price: Decimal, fee: Decimal, source: str
    ) -> list[str]:
        """Raise `filled` to the best lower bound of what really filled: the larger of
        the unique fills heard and the venue's cumulative word (never their sum)."""
        total = max(order.heard, order.venue_total)
        notes: list[str] = []
        if total > order.qty:
            notes.append(f"overfill on {order.order_id}: {total} > {order.qty}, clipped")
            total = order.qty
        delta = max(total - order.filled, ZERO)
        if source != "fill" and delta:
            notes.append(
                f"fills not heard on {order.order_id}: {source} is {total}, fills heard "
                f"{order.filled}; {delta} applied at the limit price {price}"
            )
        order.filled += delta
        order.notional += delta * price
        order.fees += fee
        if order.filled >= order.qty:
            order.state = lifecycle.step(order.state, "filled")
        elif delta:
            order.state = lifecycle.step(order.state, "partially_filled")
        if delta or source == "fill":
            self._move_position(order.product_id, order.side, delta, price, fee)
        return notes

    def _apply_bbo(self, ev: BboUpdated, now_ns: int) -> list[str]:
        if ev.oracle_price is not None:
            self.oracles[ev.product_id] = ev.oracle_price
            self.oracles_lost.discard(ev.product_id)
        elif self.oracles.pop(ev.product_id, None) is not None:
            self.oracles_lost.add(ev.product_id)
        if ev.bid <= 0 or ev.ask <= 0 or ev.ask < ev.bid:
            return [f"bbo rejected for product {ev.product_id}: bid {ev.bid} ask {ev.ask}"]
        held = self.quotes.get(ev.product_id)
        if (
            held is not None
            and held.ts_venue_ns is not None
            and ev.ts_venue_ns is not None
            and ev.ts_venue_ns < held.ts_venue_ns
        ):
            # An older quote re-sent (stale or reordered push): never newer than what we
            # hold, and it must not make the book look fresh (D2).
            return [f"stale bbo ignored for product {ev.product_id}: venue time went back"]
        if held is not None and ev.ts_venue_ns is not None and ev.ts_venue_ns == held.ts_venue_ns:
            return []  # the same quote again: no news, its age keeps growing
        # A quote's age runs from its last confirmation at ingress (`ts_ns`): a push, or a
        # REST answer (no venue stamp; Nado pushes only on change, so a quiet book is kept
        # fresh by REST). A REST answer keeps the newest venue stamp seen, so an older push
        # arriving after it is still refused above.
        stamp = ev.ts_venue_ns
        if stamp is None and held is not None:
            stamp = held.ts_venue_ns
        self.quotes[ev.product_id] = Quote(ev.bid, ev.ask, ev.bid_qty, ev.ask_qty, now_ns, stamp)
        return []

    def _forget_old_orders(self) -> None:
        if len(self.orders) < MAX_ORDERS:
            return
        for oid in [oid for oid, o in self.orders.items() if o.is_done][: MAX_ORDERS // 5]:
            del self.orders[oid]
            self._maybe_open.pop(oid, None)

    def _first_time(self, fill_id: str) -> bool:
        if fill_id in self._fill_window:
            return False
        self._fill_window[fill_id] = None
        if len(self._fill_window) > MAX_FILL_IDS:
            del self._fill_window[next(iter(self._fill_window))]
        return True

    def _apply_fill(self, ev: FillReceived) -> list[str]:
        order = self.orders.get(ev.order_id)
        if order is None and not self._first_time(ev.fill_id):
            self.fills_duplicate += 1
            return [f"duplicate fill {ev.fill_id} ignored"]
        if order is None:
            # A fill for an order this run never placed (e.g. one from before a restart):
            # the position still moves, and restore/reconciliation will look at it.
            self.unknown_fills.append(ev)
            self._move_position(ev.product_id, ev.side, ev.qty, ev.price, ev.fee)
            return [f"fill {ev.fill_id} for unknown order {ev.order_id}"]
        order.words += 1
        if ev.fill_id in order.fill_ids:
            self.fills_duplicate += 1
            return [f"duplicate fill {ev.fill_id} ignored"]
        order.fill_ids.add(ev.fill_id)
        self._first_time(ev.fill_id)
        order.heard += ev.qty
        if ev.cumulative_qty is not None:
            # Cumulative wins: a reordered earlier fill adds nothing once a later total is known.
            order.venue_total = max(order.venue_total, ev.cumulative_qty)
        self.fills_applied += 1
        return self._settle_filled(order, ev.price, ev.fee, "fill")

    def _move_position(
        self, product_id: int, side: str, qty: Decimal, price: Decimal, fee: Decimal
    ) -> None:
        book = self.book(product_id)
        book.last_fill_ts = self.now_ns
        book.fees += fee
        book.realized_pnl -= fee
        signed = qty if side == "buy" else -qty
        old = book.position
        new = old + signed
        if old == 0 or (old > 0) == (signed > 0):
            # Opening or adding: new volume-weighted entry.
            total = abs(old) + abs(signed)
            if total:
                book.entry_price = (abs(old) * book.entry_price + abs(signed) * price) / total
        else:
            closed = min(abs(old), abs(signed))
            direction = 1 if old > 0 else -1
            book.realized_pnl += (price - book.entry_price) * closed * direction
            if new == 0:
                book.entry_price = ZERO
            elif (new > 0) != (old > 0):
                book.entry_price = price  # flipped through zero
        book.position = new
        book.moves.append((self.now_ns, old, new))
