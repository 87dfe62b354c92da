"""What the adapter knows about each order it placed: wire facts only, the signed body and
what the venue said (the order's state is the engine's ledger's, machines/order.py).

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
from engine.core.events import OrderStatus
from engine.core.intents import PlaceOrder

__all__ = ["Answer", "OrderEntry", "Told", "Unknown", "status_from_knowledge"]

ZERO = Decimal(0)
# The venue's last word on a placement of this body: placed (a digest, a duplicate-digest
# refusal, or a stream event proving it), rejected (a venue refusal), not_sent (provably
# never reached the venue: rate limit, connect failure, held back), lost (sent, the answer
# never came: timeout, 5xx, unreadable). None: no send of it has been answered yet.
Answer = Literal["placed", "rejected", "not_sent", "lost"]


@attrs.define(eq=False)
class Told:
    """What the adapter already told the engine about the order, so it says each thing
    once (the engine's ledger owns the order's state; this is only de-duplication)."""

    accepted: bool = False
    end: bool = False  # an end (cancelled, expired, filled, or an archive status)
    end_filled: Decimal | None = None  # the total given with it


@attrs.define(eq=False)
class OrderEntry:
    """Wire facts of one order this process signed: the body as sent (digest, nonce,
    x18 sizes and prices), and what the venue said about it on REST and on the stream."""

    intent: PlaceOrder  # sizes and prices as the engine asked
    signed: SignedOrder  # the body every (re-)send carries
    # -- what we sent
    sends: int = 0
    in_flight: bool = False  # a placement request is out now
    sent_epoch: int | None = None  # stream epoch when the first send left (None: stream down)
    sent_unix_s: int | None = None  # wall time of the first send
    # -- what the venue said on REST
    answer: Answer | None = None
    any_lost: bool = False  # some send of this body ended with its answer lost
    acked_ns: int | None = None  # engine clock when a placement was answered "placed"
    cancel_filled: Decimal | None = None  # the cancel answer's word on the total fill
    # -- what the stream said
    announced: bool = False  # an order_update or a fill proves the venue has it
    heard_qty: Decimal = ZERO  # the largest cumulative fill heard
    fill_ids: set[str] = attrs.field(factory=set)
    # The smallest `amount` (size still unfilled) of a `filled`/`placed` order_update.
    least_remaining: Decimal | None = None
    ended: str | None = None  # "filled" (amount 0) | "cancelled", from order_update
    ended_epoch: int | None = None
    # -- said to the engine, and the per-order request sequencing
    told: Told = attrs.field(factory=Told)
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

    @property
    def never_reached(self) -> bool:
        """Nothing of it can be at the venue: never sent, refused unsent, or rejected."""
        return not self.in_flight and (self.sends == 0 or self.answer in ("not_sent", "rejected"))

    @property
    def fate_open(self) -> bool:
        """Sent, and the venue has not said whether it has it (out now, or answer lost)."""
        return self.in_flight or self.answer == "lost"

    def hear_fill(self, fill_id: str, cumulative: Decimal | None, qty: Decimal) -> bool:
        """Record one fill; False if this fill id was heard before (a duplicate frame)."""
        self.announced = True
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
        self.announced = True
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

    if entry.never_reached:
        return status("rejected" if entry.answer == "rejected" else "not_found", ZERO)
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
    if not entry.announced and entry.answer == "lost" and not entry.in_flight and complete_now:
        # Sent with the stream up and no gap since: an order that reached the venue would
        # have been announced (order_update "placed"). The venue does not know it.
        return status("not_found", ZERO)
    raise Unknown(
        "not resting at the venue and its end was not heard"
        + ("" if complete_now else " (stream gap)")
    )
