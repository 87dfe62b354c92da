"""Between engine messages and the exchange core's requests and records."""

from __future__ import annotations

import hashlib
from decimal import ROUND_CEILING
from decimal import Decimal

from adapters.sim.matching import Top
from adapters.sim.products import floor_to
from adapters.sim.records import FillRecord
from adapters.sim.records import OrderRequest
from adapters.sim.records import OrderType
from adapters.sim.records import OrderUpdateRecord
from adapters.sim.records import Record
from adapters.sim.records import SimOrder
from engine.core.events import BboUpdated
from engine.core.events import Event
from engine.core.events import FillReceived
from engine.core.events import OpenOrder
from engine.core.events import OrderCancelled
from engine.core.events import OrderExpired
from engine.core.events import VenueError
from engine.core.intents import CancelOrder
from engine.core.intents import CancelProductOrders
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryMarketPrices
from engine.core.intents import QueryOpenOrders
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions

__all__ = [
    "EFFECTFUL",
    "VENUE_INTENTS",
    "crossed",
    "fill_event",
    "ids",
    "lost_answer",
    "open_order",
    "order_request",
    "push_event",
    "retry_after",
    "skewed",
    "top_event",
]

VENUE_INTENTS = (
    PlaceOrder,
    CancelOrder,
    CancelProductOrders,
    QueryPositions,
    QueryOrder,
    QueryOpenOrders,
    QueryMarketPrices,
)
# Requests that change venue state: a lost answer leaves their outcome unknown.
EFFECTFUL = (PlaceOrder, CancelOrder, CancelProductOrders)
_NONCE_MASK = (1 << 63) - 1  # bit 63 marks trigger-service orders on Nado


def order_nonce(subaccount: str, order_id: str) -> int:
    """Derived from the order id, so re-sending a PlaceOrder reproduces its digest."""
    h = hashlib.sha256(f"{subaccount}|{order_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") & _NONCE_MASK


def order_request(subaccount: str, intent: PlaceOrder) -> OrderRequest:
    tif: OrderType = intent.tif  # type: ignore[assignment]
    return OrderRequest(
        subaccount=subaccount,
        product_id=intent.product_id,
        side="buy" if intent.side == "buy" else "sell",
        qty=intent.qty,
        price=intent.price,
        order_type=tif,
        reduce_only=intent.reduce_only,
        nonce=order_nonce(subaccount, intent.order_id),
        client_id=intent.order_id,
    )


def client_order_id(order: SimOrder) -> str:
    return order.request.client_id or order.digest


def fill_event(rec: FillRecord) -> FillReceived:
    return FillReceived(
        order_id=rec.client_id or rec.digest,
        fill_id=rec.fill_id,
        product_id=rec.product_id,
        side=rec.side,
        price=rec.price,
        qty=rec.qty,
        fee=rec.fee,
        cumulative_qty=rec.cumulative,
        remaining_qty=rec.remaining,
        is_maker=not rec.is_taker,
        ts_venue_ns=rec.ts_ns,
    )


def push_event(rec: Record) -> Event | None:
    """The pushed engine event for one record, if the engine hears of it by push.

    Cancels the client asked for are answered by the cancel request, not pushed here.
    """
    if isinstance(rec, FillRecord):
        return fill_event(rec)
    if not isinstance(rec, OrderUpdateRecord) or rec.reason != "cancelled" or rec.cause == "user":
        return None
    order_id = rec.client_id or rec.digest
    if rec.cause == "reduce_only":
        return OrderCancelled(
            order_id=order_id,
            filled_qty=rec.filled,
            reason="reduce-only: no position left to reduce",
        )
    return OrderExpired(order_id=order_id, filled_qty=rec.filled)


def open_order(order: SimOrder) -> OpenOrder:
    return OpenOrder(
        order_id=client_order_id(order),
        product_id=order.product_id,
        side=order.side,
        price=order.price,
        qty=order.request.qty,
        remaining_qty=order.remaining,
        digest=order.digest,
    )


def top_event(product_id: int, shown: Top, ts_ns: int, oracle: Decimal | None) -> BboUpdated:
    """A pushed quote from the (bid, bid qty, ask, ask qty) it shows (`skewed`: what
    `market.skew` shows), with the oracle price (the sim's oracle is the fair mid its own
    oracle band checks against)."""
    bid, bid_qty, ask, ask_qty = shown
    return BboUpdated(
        product_id=product_id,
        bid=bid,
        bid_qty=bid_qty,
        ask=ask,
        ask_qty=ask_qty,
        ts_venue_ns=ts_ns,
        oracle_price=oracle,
    )


def skewed(top: Top, skew: Decimal | None, tick: Decimal | None) -> Top:
    """`top` with `market.skew` applied to both prices (rounded down to `tick`)."""
    bid, bid_qty, ask, ask_qty = top
    if skew is not None and bid > 0 and ask > 0:
        bid, ask = bid * skew, ask * skew
        if tick is not None:
            bid, ask = floor_to(bid, tick), floor_to(ask, tick)
    return bid, bid_qty, ask, ask_qty


def crossed(ev: BboUpdated) -> BboUpdated:
    """The same quote with its sides swapped: ask < bid."""
    return BboUpdated(
        product_id=ev.product_id,
        bid=ev.ask,
        bid_qty=ev.ask_qty,
        ask=ev.bid,
        ask_qty=ev.bid_qty,
        ts_venue_ns=ev.ts_venue_ns,
        oracle_price=ev.oracle_price,
    )


def ids(intent: Intent) -> tuple[str | None, str | None]:
    """(order_id, request_id) that an answer to this intent carries."""
    order_id = (
        intent.order_id if isinstance(intent, PlaceOrder | CancelOrder | QueryOrder) else None
    )
    request_id = (
        intent.request_id
        if isinstance(
            intent,
            CancelProductOrders | QueryPositions | QueryOrder | QueryOpenOrders | QueryMarketPrices,
        )
        else None
    )
    return order_id, request_id


def lost_answer(intent: Intent, timeout_s: Decimal) -> VenueError:
    order_id, request_id = ids(intent)
    effectful = isinstance(intent, EFFECTFUL)
    return VenueError(
        error_class="unknown_outcome" if effectful else "retryable",
        request=intent.kind,
        message=f"no answer within {timeout_s}s"
        + ("; it may have taken effect" if effectful else ""),
        order_id=order_id,
        request_id=request_id,
    )


def retry_after(ns: int) -> Decimal:
    return (Decimal(ns) / 1_000_000_000).quantize(Decimal("0.001"), rounding=ROUND_CEILING)
