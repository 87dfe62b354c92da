"""CancelOrder and CancelProductOrders.

- CancelOrder: `OrderCancelled(filled_qty)` from the cancel answer; `VenueError
  (permanent, 2020)` when it was not open; `unknown_outcome` when the answer was lost.
  A cancel waits behind its order's placement (the order's lock), so it never overtakes it.
- CancelProductOrders: one `OrderCancelled` per order cancelled.
"""

from __future__ import annotations

from typing import Any

from adapters.nado.client import GatewayError
from adapters.nado.core import Core
from adapters.nado.orders import OrderEntry
from adapters.nado.queries import NadoOrder
from adapters.nado.queries import parse_cancel_result
from adapters.nado.ratelimit import Priority
from adapters.nado.ratelimit import execute_weight
from adapters.nado.wire import MalformedFrame
from engine.core.events import OrderCancelled
from engine.core.events import VenueError
from engine.core.intents import CancelOrder
from engine.core.intents import CancelProductOrders

__all__ = ["Cancelling"]


class Cancelling:
    def __init__(self, core: Core) -> None:
        self.core = core

    def _not_open(self, intent: CancelOrder, message: str) -> None:
        self.core.emit(
            VenueError(
                error_class="permanent",
                request=intent.kind,
                order_id=intent.order_id,
                code=2020,
                message=message,
            )
        )

    async def cancel(self, intent: CancelOrder) -> None:
        entry = self.core.orders.get(intent.order_id)
        digest = entry.digest if entry is not None else intent.digest
        if digest is None:
            self._not_open(intent, "unknown order id: no digest to cancel")
            return
        if entry is None:
            await self._send(intent, None, digest)
            return
        entry.cancels_in_flight += 1
        try:
            async with entry.lock:
                if entry.never_reached:
                    self._not_open(intent, "not open: the placement never reached the venue")
                    return
                await self._send(intent, entry, digest)
        finally:
            entry.cancels_in_flight -= 1

    async def _execute(
        self,
        body: dict[str, Any],
        request: str,
        weight: int,
        order_id: str | None = None,
        request_id: str | None = None,
    ) -> list[NadoOrder] | None:
        """Send one signed cancel on the risk lane; the orders it took off the book, or
        None when the gateway refused (classified) or answered unreadably (unknown outcome),
        both already reported to the engine under the order's or the request's id."""
        core = self.core
        try:
            data = await core.client.execute(
                body, request=request, priority=Priority.RISK, weight=weight
            )
            return parse_cancel_result(data)
        except GatewayError as exc:
            core.error(exc.classified, request, order_id=order_id, request_id=request_id)
        except MalformedFrame:
            core.emit(
                VenueError(
                    error_class="unknown_outcome",
                    request=request,
                    message="unreadable cancel answer",
                    order_id=order_id,
                    request_id=request_id,
                )
            )
        return None

    async def _send(self, intent: CancelOrder, entry: OrderEntry | None, digest: str) -> None:
        core = self.core
        assert core.signer is not None
        signed = core.signer.sign_cancel([intent.product_id], [digest], nonce=core.nonce())
        weight = execute_weight("cancel_orders", n_digests=1)
        gone = await self._execute(signed.body(), intent.kind, weight, order_id=intent.order_id)
        if gone is None:
            return
        mine = next((o for o in gone if o.digest == digest), None)
        if mine is None:
            self._not_open(intent, "not open (filled, expired or cancelled already)")
            return
        if entry is not None:
            entry.cancel_filled = mine.filled_qty
            entry.announced = True
            entry.told.end = True
            entry.told.end_filled = max(mine.filled_qty, entry.filled_evidence)
        core.emit(
            OrderCancelled(order_id=intent.order_id, filled_qty=mine.filled_qty, reason="cancelled")
        )

    async def cancel_products(self, intent: CancelProductOrders) -> None:
        core = self.core
        assert core.signer is not None
        pids = core.pids(intent.product_ids)
        signed = core.signer.sign_cancel(pids, None, nonce=core.nonce())
        weight = execute_weight("cancel_product_orders", n_products=len(pids))
        gone = await self._execute(signed.body(), intent.kind, weight, request_id=intent.request_id)
        if gone is None:
            return
        for order in gone:
            entry = core.by_digest.get(order.digest)
            if entry is not None:
                entry.cancel_filled = order.filled_qty
                entry.told.end = True
            oid = entry.order_id if entry is not None else order.digest
            core.emit(OrderCancelled(order_id=oid, filled_qty=order.filled_qty, reason="product"))
