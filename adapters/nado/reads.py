"""The read intents: positions, open orders, and one order's status.

- QueryPositions: `PositionSnapshot(request_id)` from `subaccount_info`; a failure is a
  `VenueError` with the request id, never a zero position.
- QueryOpenOrders: `OpenOrdersSnapshot(request_id)` from `orders` (orders this process
  did not place keep their digest as id).
- QueryOrder: `OrderStatus(open)` from the `order` query; for an order no longer resting,
  the end heard on the stream when that knowledge is complete (orders.py), else the
  archive's word once settled, else a `VenueError(retryable)` saying it cannot tell.
"""

from __future__ import annotations

from adapters.nado.archive import ArchiveOrder
from adapters.nado.client import GatewayError
from adapters.nado.core import NS
from adapters.nado.core import Core
from adapters.nado.orders import OrderEntry
from adapters.nado.orders import Unknown
from adapters.nado.orders import status_from_knowledge
from adapters.nado.queries import open_orders_snapshot
from adapters.nado.queries import parse_multi_orders
from adapters.nado.queries import parse_order
from adapters.nado.queries import parse_subaccount_info
from adapters.nado.ratelimit import priority_for
from adapters.nado.ratelimit import query_weight
from adapters.nado.wire import MalformedFrame
from engine.core.events import Event
from engine.core.events import OrderStatus
from engine.core.events import VenueError
from engine.core.intents import QueryOpenOrders
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions

__all__ = ["NOT_FOUND_CODES", "Reads"]

NOT_FOUND_CODES = frozenset({2020, 2058})


class Reads:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def positions(self, intent: QueryPositions) -> None:
        core = self.core
        assert core.signer is not None
        rid = intent.request_id
        try:
            data = await core.client.query(
                {"type": "subaccount_info", "subaccount": core.signer.sender},
                request=intent.kind,
                priority=priority_for(intent),
            )
            snapshot = parse_subaccount_info(data).position_snapshot(
                core.pids(intent.product_ids), request_id=rid
            )
        except GatewayError as exc:
            core.error(exc.classified, intent.kind, request_id=rid)
            return
        except MalformedFrame as exc:
            core.unreadable(intent.kind, "positions", exc, request_id=rid)
            return
        core.emit(snapshot)

    async def open_orders(self, intent: QueryOpenOrders) -> None:
        core = self.core
        assert core.signer is not None
        rid = intent.request_id
        pids = core.pids(intent.product_ids)
        try:
            data = await core.client.query(
                {"type": "orders", "sender": core.signer.sender, "product_ids": list(pids)},
                request=intent.kind,
                priority=priority_for(intent),
                weight=query_weight("orders", n_products=len(pids)),
            )
            by_product = parse_multi_orders(data)
        except GatewayError as exc:
            core.error(exc.classified, intent.kind, request_id=rid)
            return
        except MalformedFrame as exc:
            core.unreadable(intent.kind, "open orders", exc, request_id=rid)
            return
        orders = [o for pid in pids for o in by_product.get(pid, [])]
        for order in orders:
            entry = core.by_digest.get(order.digest)
            if entry is not None:
                entry.announced = True
        core.emit(open_orders_snapshot(orders, pids, core.order_id_for, request_id=rid))

    async def order_status(self, intent: QueryOrder) -> None:
        core = self.core
        rid, oid = intent.request_id, intent.order_id
        entry = core.orders.get(oid)
        if entry is None:
            core.emit(
                VenueError(
                    error_class="permanent",
                    request=intent.kind,
                    request_id=rid,
                    order_id=oid,
                    message="order id not placed by this process: its digest is unknown here",
                )
            )
            return
        async with entry.lock:
            if entry.never_reached:
                core.emit(await self.ended(entry, rid))
                return
            try:
                data = await core.client.query(
                    {
                        "type": "order",
                        "product_id": entry.intent.product_id,
                        "digest": entry.digest,
                    },
                    request=intent.kind,
                    priority=priority_for(intent),
                )
                order = parse_order(data)
            except GatewayError as exc:
                if exc.code in NOT_FOUND_CODES:
                    core.emit(await self.ended(entry, rid))
                else:
                    core.error(exc.classified, intent.kind, order_id=oid, request_id=rid)
                return
            except MalformedFrame as exc:
                core.unreadable(intent.kind, "order", exc, request_id=rid, order_id=oid)
                return
            entry.announced = True
            entry.answer = "placed"  # the venue lists it, whatever answer was lost
            core.emit(order.to_status(oid, request_id=rid))

    async def ended(self, entry: OrderEntry, rid: str | None) -> Event:
        """How an order the venue no longer lists as resting ended: from what this process
        heard when that is complete, else from the archive, else "cannot tell"."""
        core = self.core
        epoch, up = core.stream_epoch()
        try:
            return status_from_knowledge(entry, request_id=rid, stream_epoch=epoch, stream_up=up)
        except Unknown as exc:
            reason = exc.reason
        if core.archive is not None:
            try:
                found = (await core.archive.orders([entry.digest], request="query_order")).get(
                    entry.digest
                )
            except GatewayError as err:
                reason += f"; archive: {err.classified.reason}"
            else:
                status = self._from_archive(entry, found, rid)
                if status is not None:
                    core.stats["status_from_archive"] += 1
                    return status
                reason += "; not in the archive yet"
        core.stats["status_unknown"] += 1
        return VenueError(
            error_class="retryable",
            request="query_order",
            request_id=rid,
            order_id=entry.order_id,
            message=f"cannot tell how it ended: {reason}",
        )

    def _from_archive(
        self, entry: OrderEntry, found: ArchiveOrder | None, rid: str | None
    ) -> OrderStatus | None:
        archive = self.core.archive
        assert archive is not None
        oid = entry.order_id
        if found is None:
            # Not indexed: believable as "never placed" only long after the send.
            sent = entry.sent_unix_s
            quiet = sent is not None and self.core.unix_ns() // NS - sent >= archive.settle_s
            lost = entry.answer == "lost" and not entry.in_flight
            if lost and not entry.announced and quiet:
                return OrderStatus(order_id=oid, state="not_found", request_id=rid)
            return None
        if not archive.settled(found):
            return None
        filled = min(max(found.filled, entry.filled_evidence), entry.qty)
        ended = "expired" if entry.immediate else "cancelled"
        state = "filled" if filled >= entry.qty else ended
        return OrderStatus(order_id=oid, state=state, filled_qty=filled, request_id=rid)
