"""What the adapter knows about each order it placed: the signed body and what was heard.

An `OrderEntry` is made once per engine order id, when the `PlaceOrder` is first seen:
the order is signed then, its digest is known before anything is sent, and every later
(re-)send of that id sends the same body (same nonce, same digest), so a placement is
never duplicated under a new nonce. Beside it the entry keeps the venue's words about
the order: the placement answer, stream events (with the stream epoch they arrived in)
and the cancel answer.

What ends an order (nado-protocol.md §13): Nado sends one `order_update` per match,
reason `filled` with `amount` = the size still **unfilled**; `placed` for a remainder
that rests; an IOC ends `(0, "filled")` or `(0, "cancelled")`. So a `filled` update ends
the order only when its amount is 0, and a `cancelled` one always does (its amount is
never read as a fill). The order's filled size is the larger of the fills heard and
`original - remaining` from the `filled`/`placed` updates (`filled_evidence`): either
source may be short when a frame is lost or late, neither ever overstates.

`status_from_knowledge` answers the question Nado's `order` query cannot (it lists
resting orders only, nado-protocol.md §6.4): how did an order that is no longer
resting end? It answers only when what the adapter heard is complete — the stream was
up, without a gap, from before the placement left until the order's end — and
otherwise says it does not know (the archive, not served by the sim, would be the next
source; the position query stays the final arbiter).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Literal

import attrs

from adapters.nado.signing import SignedOrder
from engine.events import OrderStatus
from engine.intents import PlaceOrder

__all__ = ["OrderEntry", "Placement", "Unknown", "status_from_knowledge"]

ZERO = Decimal(0)
# new: signed, never sent; sending: a request is out; accepted: the venue has it;
# refused: provably not placed (rate limit, connect failure, withdrawn); rejected: the
# venue said no; unknown: sent, outcome unknown (timeout, 5xx, lost answer).
Placement = Literal["new", "sending", "accepted", "refused", "rejected", "unknown"]


@attrs.define(eq=False)
class OrderEntry:
    intent: PlaceOrder
    signed: SignedOrder
    placement: Placement = "new"
    sends: int = 0
    had_unknown: bool = False  # some send of this body ended with an unknown outcome
    sent_epoch: int | None = None  # stream epoch when the first send left (None: stream down)
    sent_unix_s: int | None = None  # wall time of the first send
    accepted_reported: bool = False
    end_reported: bool = False
    seen_placed: bool = False  # an order_update "placed" or a fill proves it reached the venue
    heard_qty: Decimal = ZERO  # the largest cumulative fill heard
    fill_ids: set[str] = attrs.field(factory=set)
    # The smallest `amount` (size still unfilled) of a `filled`/`placed` order_update.
    least_remaining: Decimal | None = None
    ended: str | None = None  # "filled" (amount 0) | "cancelled", from order_update
    ended_epoch: int | None = None
    reported_filled: Decimal | None = None  # the total told the engine when it ended
    acked_ns: int | None = None  # engine clock when the placement was answered
    cancel_filled: Decimal | None = None  # the cancel answer's word on the total fill
    cancels_in_flight: int = 0
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)

    @property
    def order_id(self) -> str:
        return self.intent.order_id

    @property
    def digest(self) -> str:
        return self.signed.digest

    @property
    def qty(self) -> Decimal:
        return self.intent.qty

    @property
    def immediate(self) -> bool:
        return self.intent.tif in ("ioc", "fok")

    def hear_fill(self, fill_id: str, cumulative: Decimal | None, qty: Decimal) -> bool:
        """Record one fill; False if this fill id was heard before (a duplicate frame)."""
        self.seen_placed = True
        if fill_id in self.fill_ids:
            return False
        self.fill_ids.add(fill_id)
        total = cumulative if cumulative is not None else self.heard_qty + qty
        self.heard_qty = max(self.heard_qty, total)
        return True

    def hear_update(self, reason: str, remaining: Decimal, epoch: int) -> bool:
        """Record one order_update; True if it ended the order (the first end heard).

        `placed`/`filled` carry the size still unfilled; only `filled` with amount 0 or
        `cancelled` ends the order. Duplicated or reordered updates change nothing more
        (the least remaining wins; the first end is kept)."""
        self.seen_placed = True
        heard = self.least_remaining
        if reason in ("placed", "filled") and (heard is None or remaining < heard):
            self.least_remaining = remaining
        ends = reason == "cancelled" or (reason == "filled" and remaining == 0)
        if not ends or self.ended is not None:
            return False
        self.ended, self.ended_epoch = reason, epoch
        return True

    @property
    def filled_evidence(self) -> Decimal:
        """The order's filled size as heard: the larger of the fills and original -
        remaining (clipped to the order's size)."""
        by_update = ZERO if self.least_remaining is None else self.qty - self.least_remaining
        return min(max(self.heard_qty, by_update, ZERO), self.qty)


class Unknown(Exception):
    """The adapter cannot say how this order ended; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def status_from_knowledge(
    entry: OrderEntry,
    *,
    request_id: str | None,
    stream_epoch: int,
    stream_up: bool,
) -> OrderStatus:
    """The state of an order the venue no longer lists as resting. Raises `Unknown`."""
    oid, qty = entry.order_id, entry.qty

    def status(state: str, filled: Decimal) -> OrderStatus:
        filled = min(max(filled, ZERO), qty)
        remaining = ZERO if state != "not_found" else qty - filled
        return OrderStatus(
            order_id=oid,
            state=state,
            filled_qty=filled,
            remaining_qty=remaining,
            request_id=request_id,
        )

    if entry.placement == "rejected":
        return status("rejected", ZERO)
    if entry.placement in ("new", "refused"):
        return status("not_found", ZERO)
    evidence = entry.filled_evidence
    if evidence >= qty:
        return status("filled", qty)
    if entry.cancel_filled is not None:
        return status("cancelled", max(entry.cancel_filled, evidence))
    sent = entry.sent_epoch
    complete_to_end = sent is not None and entry.ended_epoch == sent
    if entry.ended is not None:
        if not complete_to_end:
            raise Unknown("ended while the stream had a gap: its fills may be unheard")
        return status("expired" if entry.immediate else "cancelled", evidence)
    complete_now = sent is not None and stream_up and stream_epoch == sent
    if not entry.seen_placed and entry.placement == "unknown" and complete_now:
        # Sent with the stream up and no gap since: an order that reached the venue would
        # have been announced (order_update "placed"). The venue does not know it.
        return status("not_found", ZERO)
    raise Unknown(
        "not resting at the venue and its end was not heard"
        + ("" if complete_now else " (stream gap)")
    )
