"""Telling the engine that an order was accepted and how the venue ended it, once each.

When the venue ends an order on its own (an `order_update` with amount 0, or `cancelled`;
orders.py): `OrderExpired(filled_qty)` for an IOC/FOK, `OrderCancelled(filled_qty)` for a
resting order, `OrderStatus(filled)` when the fills heard fall short of a complete fill
(nothing when they cover it). `filled_qty` is the larger of the fills heard and `original -
remaining`; the report waits up to two round trips for fill frames still on their way
(their prices), and a later update that raises the total is reported again as an
`OrderStatus`. An order that ended across a stream gap is reported with `filled_qty=None`
(the engine asks QueryOrder).
"""

from __future__ import annotations

from decimal import Decimal

from adapters.nado.core import Core
from adapters.nado.orders import OrderEntry
from engine.core.events import OrderAccepted
from engine.core.events import OrderCancelled
from engine.core.events import OrderExpired
from engine.core.events import OrderStatus

__all__ = ["Ends"]


class Ends:
    def __init__(self, core: Core) -> None:
        self.core = core

    def accepted(self, entry: OrderEntry) -> None:
        """The venue has the order: say `OrderAccepted` once."""
        entry.answer = "placed"
        if not entry.told.accepted:
            entry.told.accepted = True
            self.core.emit(OrderAccepted(order_id=entry.order_id, digest=entry.digest))

    def accepted_by_stream(self, entry: OrderEntry) -> None:
        """Any fill or order_update of an order proves the venue has it: while its
        placement answer is still out (or was lost), say `OrderAccepted` now, so the
        engine hears accepted -> fills -> end whichever of stream and REST is first."""
        if entry.fate_open:
            self.accepted(entry)

    def settle(self, entry: OrderEntry, *, final: bool) -> None:
        """Tell the engine how an order the venue ended on its own ended, once.

        Not while our own cancel is out (its answer says it). The total is the larger of
        the fills heard and original - remaining; when the updates say more than the fills
        heard, the report waits (until `final`, two round trips) for the fill frames, so
        the ledger books their prices rather than the limit price."""
        core = self.core
        if entry.ended is None or entry.told.end or entry.cancels_in_flight:
            return
        evidence = entry.filled_evidence
        if entry.heard_qty < evidence and not final:
            core.later_ns(core.probe_ns(), lambda: self.settle(entry, final=True))
            return
        entry.told.end = True
        oid = entry.order_id
        complete = entry.sent_epoch is not None and entry.ended_epoch == entry.sent_epoch
        if not complete:
            # Ended across a stream gap: updates or fills of it may be unheard; the
            # engine asks QueryOrder (answered from the archive, or "cannot tell").
            filled: Decimal | None = None
        else:
            filled = entry.told.end_filled = evidence
        if filled is not None and filled >= entry.qty:
            if entry.heard_qty < entry.qty:
                core.stats["ends_filled_unheard"] += 1
                core.emit(
                    OrderStatus(order_id=oid, state="filled", filled_qty=filled, remaining_qty=0)
                )
            return  # else the fills said it all
        if entry.immediate:
            core.emit(OrderExpired(order_id=oid, filled_qty=filled))
        else:
            core.emit(OrderCancelled(order_id=oid, filled_qty=filled, reason="by the venue"))

    def correct(self, entry: OrderEntry) -> None:
        """An update heard after the end was reported raises the total beyond what was
        said and what the fills carry: say the new total (the ledger takes the larger)."""
        said = entry.told.end_filled
        evidence = entry.filled_evidence
        if said is None or evidence <= said or entry.heard_qty >= evidence:
            return
        entry.told.end_filled = evidence
        self.core.stats["ends_corrected"] += 1
        state = (
            "filled" if evidence >= entry.qty else ("expired" if entry.immediate else "cancelled")
        )
        self.core.emit(
            OrderStatus(order_id=entry.order_id, state=state, filled_qty=evidence, remaining_qty=0)
        )
