"""Inbound events: facts the engine learns from the venue, the clock or the operator.

Each class's `kind` doubles as the python-statemachine event name, so a machine
declares `fill_received = placing.to(...)` and the engine calls
`sm.send(ev.kind, ev=ev)`. An event with a `target` goes to that machine only.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any
from typing import ClassVar
from typing import Literal

import attrs

from engine.core.messages import Message
from engine.core.messages import dec
from engine.core.messages import message
from engine.core.messages import opt_dec
from engine.core.messages import tuple_of

__all__ = [
    "BboUpdated",
    "ConnectionChanged",
    "DeadlineExpired",
    "Event",
    "FillReceived",
    "MachineFinished",
    "OpenOrder",
    "OpenOrdersSnapshot",
    "OperatorCommand",
    "OrderAccepted",
    "OrderCancelled",
    "OrderExpired",
    "OrderRejected",
    "OrderStatus",
    "Position",
    "PositionSnapshot",
    "VenueError",
]

Side = Literal["buy", "sell"]
ErrorClass = Literal["retryable", "rate_limited", "permanent", "unknown_outcome"]
OrderState = Literal["open", "filled", "cancelled", "expired", "rejected", "not_found"]


def _side(value: str) -> str:
    if value not in ("buy", "sell"):
        raise ValueError(f"side must be 'buy' or 'sell', got {value!r}")
    return value


def _non_negative(_inst: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _positive(_inst: object, attribute: attrs.Attribute[Decimal], value: Decimal) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value}")


class Event(Message):
    """Base of all inbound events."""

    target: str | None


@message
@attrs.frozen(kw_only=True)
class BboUpdated(Event):
    """Best bid/offer of one product. Crossed or stale quotes are rejected by the market view."""

    kind: ClassVar[str] = "bbo_updated"
    product_id: int
    bid: Decimal = attrs.field(converter=dec, validator=_non_negative)
    bid_qty: Decimal = attrs.field(converter=dec, validator=_non_negative)
    ask: Decimal = attrs.field(converter=dec, validator=_non_negative)
    ask_qty: Decimal = attrs.field(converter=dec, validator=_non_negative)
    ts_venue_ns: int | None = None
    target: str | None = None
    # The venue's oracle (index) price of the product when the venue gives one: the
    # reference of the price band (RELIABILITY D5). None: unknown, the band is not checked.
    oracle_price: Decimal | None = attrs.field(default=None, converter=opt_dec)

    @oracle_price.validator
    def _oracle_positive(self, _attribute: Any, value: Decimal | None) -> None:
        if value is not None and value <= 0:
            raise ValueError(f"oracle_price must be > 0, got {value}")


@message
@attrs.frozen(kw_only=True)
class OrderAccepted(Event):
    kind: ClassVar[str] = "order_accepted"
    order_id: str
    digest: str | None = None
    target: str | None = None


@message
@attrs.frozen(kw_only=True)
class OrderRejected(Event):
    kind: ClassVar[str] = "order_rejected"
    order_id: str
    reason: str
    code: int | None = None
    target: str | None = None


@message
@attrs.frozen(kw_only=True)
class OrderCancelled(Event):
    """The venue confirmed the order is no longer working. Fills may still arrive late."""

    kind: ClassVar[str] = "order_cancelled"
    order_id: str
    filled_qty: Decimal | None = attrs.field(default=None, converter=opt_dec)
    reason: str = ""
    target: str | None = None


@message
@attrs.frozen(kw_only=True)
class OrderExpired(Event):
    """An IOC/FOK order's unfilled remainder was cancelled by the venue."""

    kind: ClassVar[str] = "order_expired"
    order_id: str
    filled_qty: Decimal | None = attrs.field(default=None, converter=opt_dec)
    target: str | None = None


@message
@attrs.frozen(kw_only=True)
class FillReceived(Event):
    """One execution. `fill_id` is the venue's identity for de-duplication.

    `qty` is this fill's size; `cumulative_qty`/`remaining_qty` are the order's totals
    after it, when the venue gives them (they win over summing deltas).
    """

    kind: ClassVar[str] = "fill_received"
    order_id: str
    fill_id: str
    product_id: int
    side: str = attrs.field(converter=_side)
    price: Decimal = attrs.field(converter=dec, validator=_positive)
    qty: Decimal = attrs.field(converter=dec, validator=_non_negative)
    fee: Decimal = attrs.field(default=Decimal(0), converter=dec)
    cumulative_qty: Decimal | None = attrs.field(default=None, converter=opt_dec)
    remaining_qty: Decimal | None = attrs.field(default=None, converter=opt_dec)
    is_maker: bool = False
    ts_venue_ns: int | None = None
    target: str | None = None


@attrs.frozen(kw_only=True)
class Position:
    product_id: int
    qty: Decimal = attrs.field(converter=dec)  # signed: long > 0, short < 0
    entry_price: Decimal | None = attrs.field(default=None, converter=opt_dec)


def _positions(values: Iterable[Any]) -> tuple[Position, ...]:
    return tuple_of(Position)(values)


@message
@attrs.frozen(kw_only=True)
class PositionSnapshot(Event):
    """Positions as the venue reports them; `request_id` ties it to a QueryPositions."""

    kind: ClassVar[str] = "position_snapshot"
    positions: tuple[Position, ...] = attrs.field(converter=_positions)
    request_id: str | None = None
    target: str | None = None


@attrs.frozen(kw_only=True)
class OpenOrder:
    order_id: str
    product_id: int
    side: str = attrs.field(converter=_side)
    price: Decimal = attrs.field(converter=dec)
    qty: Decimal = attrs.field(converter=dec)
    remaining_qty: Decimal = attrs.field(converter=dec)
    digest: str | None = None


def _open_orders(values: Iterable[Any]) -> tuple[OpenOrder, ...]:
    return tuple_of(OpenOrder)(values)


def _ints(values: Iterable[Any]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


@message
@attrs.frozen(kw_only=True)
class OpenOrdersSnapshot(Event):
    kind: ClassVar[str] = "open_orders_snapshot"
    orders: tuple[OpenOrder, ...] = attrs.field(converter=_open_orders)
    product_ids: tuple[int, ...] = attrs.field(converter=_ints)
    request_id: str | None = None
    target: str | None = None


@message
@attrs.frozen(kw_only=True)
class OrderStatus(Event):
    """Answer to QueryOrder: how the venue sees one order right now."""

    kind: ClassVar[str] = "order_status"
    order_id: str
    state: str
    filled_qty: Decimal = attrs.field(default=Decimal(0), converter=dec)
    remaining_qty: Decimal = attrs.field(default=Decimal(0), converter=dec)
    request_id: str | None = None
    target: str | None = None


@message
@attrs.frozen(kw_only=True)
class ConnectionChanged(Event):
    kind: ClassVar[str] = "connection_changed"
    channel: str  # "ws" | "rest"
    state: str  # "connected" | "disconnected" | "degraded"
    detail: str = ""
    target: str | None = None


@message
@attrs.frozen(kw_only=True)
class VenueError(Event):
    """A classified failure of a request. `unknown_outcome` means it may have taken effect."""

    kind: ClassVar[str] = "venue_error"
    error_class: str = attrs.field(
        validator=attrs.validators.in_(
            ("retryable", "rate_limited", "permanent", "unknown_outcome")
        )
    )
    request: str  # the intent kind that failed
    message: str = ""
    order_id: str | None = None
    request_id: str | None = None
    code: int | None = None
    retry_after_s: Decimal | None = attrs.field(default=None, converter=opt_dec)
    target: str | None = None


@message
@attrs.frozen(kw_only=True)
class DeadlineExpired(Event):
    """A named deadline fired. `generation` lets the engine drop an expiry that went stale."""

    kind: ClassVar[str] = "deadline_expired"
    name: str
    generation: int
    target: str | None = None  # the machine that armed it


@message
@attrs.frozen(kw_only=True)
class OperatorCommand(Event):
    kind: ClassVar[str] = "operator_command"
    command: str  # "stop" | "flatten" | "resume" | "sync" | "halt"
    reason: str = ""
    target: str | None = None


@message
@attrs.frozen(kw_only=True)
class MachineFinished(Event):
    """Engine-made: a child machine reached a final state; sent to its parent."""

    kind: ClassVar[str] = "machine_finished"
    machine: str
    outcome: str  # id of the final state
    target: str | None = None
