"""Outbound intents: what the machines ask the adapters to do. Imperative names.

Intent ids are deterministic (`{machine}:{n}`), never random, so a replay emits
byte-identical intents and a restart can query an order by the id it journaled.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any
from typing import ClassVar

import attrs

from engine.core.messages import Message
from engine.core.messages import dec
from engine.core.messages import message
from engine.core.messages import opt_dec

__all__ = [
    "ENGINE_ONLY",
    "RISK_REDUCING",
    "AdoptVenuePositions",
    "CancelOrder",
    "CancelProductOrders",
    "Halt",
    "Intent",
    "PlaceOrder",
    "QueryMarketPrices",
    "QueryOpenOrders",
    "QueryOrder",
    "QueryPositions",
    "SendAlert",
    "StreamConnect",
]

TIME_IN_FORCE = ("ioc", "fok", "post_only", "default")


def _positive(_inst: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


def _ints(values: Iterable[Any]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


class Intent(Message):
    """Base of all outbound intents."""


@message
@attrs.frozen(kw_only=True)
class PlaceOrder(Intent):
    """A limit order. A "market" order is an IOC priced through the book by a slippage cap."""

    kind: ClassVar[str] = "place_order"
    order_id: str
    product_id: int
    side: str = attrs.field(validator=attrs.validators.in_(("buy", "sell")))
    qty: Decimal = attrs.field(converter=dec, validator=_positive)
    price: Decimal = attrs.field(converter=dec, validator=_positive)
    tif: str = attrs.field(validator=attrs.validators.in_(TIME_IN_FORCE))
    reduce_only: bool = False
    purpose: str = ""  # e.g. "build", "unwind", "repair", "emergency"


@message
@attrs.frozen(kw_only=True)
class CancelOrder(Intent):
    kind: ClassVar[str] = "cancel_order"
    order_id: str
    product_id: int
    digest: str | None = None  # for orphans known only by their venue digest


@message
@attrs.frozen(kw_only=True)
class CancelProductOrders(Intent):
    kind: ClassVar[str] = "cancel_product_orders"
    request_id: str
    product_ids: tuple[int, ...] = attrs.field(converter=_ints)


@message
@attrs.frozen(kw_only=True)
class QueryPositions(Intent):
    kind: ClassVar[str] = "query_positions"
    request_id: str
    product_ids: tuple[int, ...] = attrs.field(converter=_ints)


@message
@attrs.frozen(kw_only=True)
class QueryOrder(Intent):
    kind: ClassVar[str] = "query_order"
    request_id: str
    order_id: str
    product_id: int


@message
@attrs.frozen(kw_only=True)
class QueryOpenOrders(Intent):
    kind: ClassVar[str] = "query_open_orders"
    request_id: str
    product_ids: tuple[int, ...] = attrs.field(converter=_ints)


@message
@attrs.frozen(kw_only=True)
class QueryMarketPrices(Intent):
    """A REST best bid/offer per product, answered with `BboUpdated` (no venue stamp) or a
    `VenueError` carrying `request_id`. Asked while the stream is down."""

    kind: ClassVar[str] = "query_market_prices"
    request_id: str
    product_ids: tuple[int, ...] = attrs.field(converter=_ints)


@message
@attrs.frozen(kw_only=True)
class StreamConnect(Intent):
    """Open the venue's stream, replacing any socket still held (authenticate, subscribe).

    The adapter answers every one with exactly one `ConnectionChanged(channel="ws")`:
    `connected` once subscribed, else `failed` with the reason. It never reconnects on
    its own: the connection machine decides when (backoff, jitter) and asks again.
    """

    kind: ClassVar[str] = "stream_connect"
    attempt: int
    reason: str = ""


@message
@attrs.frozen(kw_only=True)
class SendAlert(Intent):
    kind: ClassVar[str] = "send_alert"
    event: str
    severity: str = attrs.field(validator=attrs.validators.in_(("info", "warning", "critical")))
    message: str
    exposure_usd: Decimal | None = attrs.field(default=None, converter=opt_dec)
    state: str = ""
    action: str = ""


@message
@attrs.frozen(kw_only=True)
class Halt(Intent):
    """Stop opening risk. Sticky until an operator resumes; states what is still open."""

    kind: ClassVar[str] = "halt"
    reason: str
    exposure_usd: Decimal = attrs.field(default=Decimal(0), converter=dec)


RISK_REDUCING: frozenset[str] = frozenset(
    {CancelOrder.kind, CancelProductOrders.kind, QueryPositions.kind, QueryOrder.kind}
)


@message
@attrs.frozen(kw_only=True)
class AdoptVenuePositions(Intent):
    """Engine-handled, never sent: rebuild the ledger's positions from the last venue
    snapshot (restore does this once the venue has answered)."""

    kind: ClassVar[str] = "adopt_venue_positions"
    product_ids: tuple[int, ...] = attrs.field(converter=_ints)


# Intents the engine itself carries out; they are journaled but never handed out.
ENGINE_ONLY: frozenset[str] = frozenset({AdoptVenuePositions.kind})
