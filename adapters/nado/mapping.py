"""Engine Decimals <-> Nado x18 integers, and the stream frames of nado-protocol.md §7.

This module holds the only implementation of the x18 conversion (`to_x18`,
`from_x18`); every other module calls these. Conversions are exact: a value
with more than 18 decimal places, or one that is not a whole multiple of the
product's increment, is refused rather than rounded.

Stream frames (§7.2 control replies, §7.5 events) are decoded into small records
with Decimal fields; each record turns into an engine event once the adapter
has matched the venue digest to the engine's order id (`to_event`).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from typing import Literal

import attrs

from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import loads
from adapters.nado.wire import opt_int
from adapters.nado.wire import opt_str
from adapters.nado.wire import req_bool
from adapters.nado.wire import req_hex
from adapters.nado.wire import req_int
from adapters.nado.wire import req_obj
from adapters.nado.wire import req_str
from engine.core.events import BboUpdated
from engine.core.events import Event
from engine.core.events import FillReceived
from engine.core.events import OrderAccepted
from engine.core.events import OrderCancelled
from engine.core.events import OrderExpired
from engine.core.messages import dec

__all__ = [
    "MAX_X18",
    "NadoFill",
    "NadoOrderUpdate",
    "NadoPositionChange",
    "NotRepresentable",
    "StreamError",
    "StreamFrame",
    "StreamReply",
    "decode_stream",
    "from_x18",
    "meets_min_size",
    "order_amount_x18",
    "order_price_x18",
    "parse_stream_frame",
    "to_x18",
    "to_x18_multiple",
    "x18_field",
]

Side = Literal["buy", "sell"]
SCALE = 18
MAX_X18 = 2**127 - 1  # int128: priceX18 and amount in the signed Order struct
U64 = 2**64 - 1


class NotRepresentable(ValueError):
    """An engine number that cannot be sent exactly as an x18 integer."""


def _pow10(n: int) -> int:
    return int(10**n)


# --- x18 conversion ---------------------------------------------------------------------


def to_x18(value: Decimal | int | str, *, what: str = "value") -> int:
    """Exact Decimal -> x18 integer; more than 18 decimal places or > int128 is refused."""
    d = dec(value)
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)  # dec() only returns finite values
    coeff = int("".join(map(str, digits)))
    shift = exponent + SCALE
    if coeff == 0:
        return 0
    if shift >= 0:
        if len(digits) + shift > 40:
            raise NotRepresentable(f"{what} {d} is too large for an x18 integer")
        n = coeff * _pow10(shift)
    else:
        if -shift > len(digits):
            raise NotRepresentable(f"{what} {d} has more than 18 decimal places")
        n, rest = divmod(coeff, _pow10(-shift))
        if rest:
            raise NotRepresentable(f"{what} {d} has more than 18 decimal places")
    if n > MAX_X18:
        raise NotRepresentable(f"{what} {d} is too large for an x18 integer")
    return -n if sign else n


def from_x18(value: int) -> Decimal:
    """Exact x18 integer -> Decimal, with trailing zeros dropped (3500e18 -> Decimal('3500'))."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"x18 value must be an int, got {type(value).__name__}")
    if value == 0:
        return Decimal(0)
    text = str(abs(value))
    stripped = text.rstrip("0")
    exponent = -SCALE + (len(text) - len(stripped))
    if exponent > 0:  # keep integers in plain notation: 10**20 -> Decimal('100')
        stripped += "0" * exponent
        exponent = 0
    return Decimal((1 if value < 0 else 0, tuple(int(c) for c in stripped), exponent))


def to_x18_multiple(value: Decimal | int | str, increment_x18: int, *, what: str) -> int:
    """x18 of `value`, which must be a whole multiple of the increment (never rounded here)."""
    if increment_x18 <= 0:
        raise ValueError(f"{what}: increment must be > 0, got {increment_x18}")
    n = to_x18(value, what=what)
    if n % increment_x18:
        step = from_x18(increment_x18)
        raise NotRepresentable(f"{what} {dec(value)} is not a multiple of {step}")
    return n


def order_price_x18(price: Decimal, price_increment_x18: int) -> int:
    if price <= 0:
        raise NotRepresentable(f"price must be > 0, got {price}")
    return to_x18_multiple(price, price_increment_x18, what="price")


def order_amount_x18(side: str, qty: Decimal, size_increment_x18: int) -> int:
    """The signed order `amount`: > 0 buys, < 0 sells (nado-protocol.md §2)."""
    if side not in ("buy", "sell"):
        raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
    if qty <= 0:
        raise NotRepresentable(f"qty must be > 0, got {qty}")
    n = to_x18_multiple(qty, size_increment_x18, what="qty")
    return n if side == "buy" else -n


def meets_min_size(amount_x18: int, price_x18: int, min_size_x18: int) -> bool:
    """`min_size` is a quote notional (§2.2): |amount| * price >= min_size, all x18."""
    return abs(amount_x18) * price_x18 >= min_size_x18 * _pow10(SCALE)


def x18_field(
    obj: Mapping[str, Any], key: str, where: str, *, non_negative: bool = False
) -> Decimal:
    """Read an x18 integer field and return it as an exact Decimal."""
    return from_x18(req_int(obj, key, where, min_value=0 if non_negative else None))


def _opt_x18(obj: Mapping[str, Any], key: str, where: str) -> Decimal | None:
    return None if obj.get(key) is None else x18_field(obj, key, where)


# --- stream records ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class NadoFill:
    """One `fill` frame. Quantities are absolute; `side` comes from `is_bid` (or a sign).

    `fill_id` = digest + cumulative filled x18 after this fill: each fill of an order
    raises the cumulative amount, so the pair is unique per fill, identical for a
    duplicated frame, and reproducible from archive `matches.cumulative_base_filled`.
    """

    product_id: int
    digest: str
    subaccount: str
    side: Side | None
    qty: Decimal
    price: Decimal
    fee: Decimal
    remaining_qty: Decimal
    original_qty: Decimal | None
    is_taker: bool
    submission_idx: int | None
    client_id: int | None
    ts_venue_ns: int
    fill_id: str

    @property
    def cumulative_qty(self) -> Decimal | None:
        return None if self.original_qty is None else self.original_qty - self.remaining_qty

    def to_event(
        self, order_id: str, *, side: str | None = None, target: str | None = None
    ) -> FillReceived:
        """`side` is the adapter's own record of the order, used if the frame had none."""
        chosen = self.side or side
        if chosen is None:
            raise MalformedFrame("fill has no side (no is_bid, unsigned qty)", where="fill")
        return FillReceived(
            order_id=order_id,
            fill_id=self.fill_id,
            product_id=self.product_id,
            side=chosen,
            price=self.price,
            qty=self.qty,
            fee=self.fee,
            cumulative_qty=self.cumulative_qty,
            remaining_qty=self.remaining_qty,
            is_maker=not self.is_taker,
            ts_venue_ns=self.ts_venue_ns,
            target=target,
        )


OrderReason = Literal["placed", "filled", "cancelled"]
_REASONS: dict[str, OrderReason] = {
    "placed": "placed",
    "open": "placed",  # third-party spelling (§7.5)
    "filled": "filled",
    "cancelled": "cancelled",
    "canceled": "cancelled",
}


@attrs.frozen(kw_only=True)
class NadoOrderUpdate:
    """One `order_update` frame. `remaining_qty` is |amount| (assumed unfilled, §12.4)."""

    product_id: int
    digest: str
    reason: OrderReason
    remaining_qty: Decimal
    client_id: int | None
    ts_venue_ns: int

    def to_event(self, order_id: str, *, tif: str, target: str | None = None) -> Event | None:
        """placed -> OrderAccepted; cancelled -> OrderExpired for IOC/FOK (the venue dropped
        the remainder) else OrderCancelled; filled -> None (fills carry the quantities)."""
        if self.reason == "placed":
            return OrderAccepted(order_id=order_id, digest=self.digest, target=target)
        if self.reason == "cancelled":
            if tif in ("ioc", "fok"):
                return OrderExpired(order_id=order_id, target=target)
            return OrderCancelled(order_id=order_id, reason="cancelled", target=target)
        return None


@attrs.frozen(kw_only=True)
class NadoPositionChange:
    """One `position_change` frame: a trigger for a position query, not a position.

    Whether `amount` is the new balance or a delta is unsettled (§12.4), so the
    adapter reconciles with `subaccount_info` instead of trusting it.
    """

    product_id: int
    subaccount: str
    amount: Decimal
    v_quote_amount: Decimal
    reason: str
    isolated: bool
    ts_venue_ns: int


@attrs.frozen(kw_only=True)
class StreamReply:
    """A control reply: subscribe/auth ack (`method` None), pong, time or list."""

    id: int | None
    method: str | None
    server_time_ms: int | None = None


@attrs.frozen(kw_only=True)
class StreamError:
    id: int | None
    error: str
    code: int | None = None


StreamFrame = (
    BboUpdated | NadoFill | NadoOrderUpdate | NadoPositionChange | StreamReply | StreamError
)


def decode_stream(text: str | bytes) -> StreamFrame:
    """Decode one `/v1/subscribe` text frame; raises MalformedFrame, never anything else."""
    return parse_stream_frame(loads(text))


def parse_stream_frame(obj: Any) -> StreamFrame:
    if not isinstance(obj, Mapping):
        raise MalformedFrame("frame must be a JSON object", where="stream")
    try:
        if "error" in obj:
            return _error(obj)
        if "type" not in obj and "result" in obj:
            return _reply(obj)
        kind = req_str(obj, "type", "stream")
        parser = _PARSERS.get(kind)
        if parser is None:
            raise MalformedFrame(f"unknown message type {kind[:40]!r}", where="stream")
        return parser(obj)
    except (ValueError, TypeError) as exc:  # attrs validators, Decimal edge cases
        if isinstance(exc, MalformedFrame):
            raise
        raise MalformedFrame(f"invalid value: {exc}", where="stream") from None


def _error(obj: Mapping[str, Any]) -> StreamError:
    message = obj["error"]
    text = message if isinstance(message, str) else "error frame"
    return StreamError(
        id=opt_int(obj, "id", "stream_error", min_value=0),
        error=text[:200],
        code=opt_int(obj, "error_code", "stream_error"),
    )


def _reply(obj: Mapping[str, Any]) -> StreamReply:
    rid = opt_int(obj, "id", "reply", min_value=0)
    result = obj["result"]
    if result is None:
        return StreamReply(id=rid, method=None)
    if isinstance(result, list):
        return StreamReply(id=rid, method="list")
    if not isinstance(result, Mapping):
        raise MalformedFrame("result must be null, an object or a list", where="reply")
    return StreamReply(
        id=rid,
        method=req_str(result, "method", "reply"),
        server_time_ms=opt_int(result, "server_time", "reply", min_value=0),
    )


def _ts(obj: Mapping[str, Any], where: str) -> int:
    return req_int(obj, "timestamp", where, min_value=0)


def _client_id(obj: Mapping[str, Any], where: str) -> int | None:
    cid = opt_int(obj, "id", where, min_value=0)
    if cid is not None and cid > U64:
        raise MalformedFrame("id exceeds u64", where=where)
    return cid


def _bbo(obj: Mapping[str, Any]) -> BboUpdated:
    w = "best_bid_offer"
    return BboUpdated(
        product_id=req_int(obj, "product_id", w, min_value=0),
        bid=x18_field(obj, "bid_price", w, non_negative=True),
        bid_qty=x18_field(obj, "bid_qty", w, non_negative=True),
        ask=x18_field(obj, "ask_price", w, non_negative=True),
        ask_qty=x18_field(obj, "ask_qty", w, non_negative=True),
        ts_venue_ns=_ts(obj, w),
    )


def _fill_side(obj: Mapping[str, Any], filled: int, original: int | None) -> Side | None:
    if obj.get("is_bid") is not None:
        return "buy" if req_bool(obj, "is_bid", "fill") else "sell"
    if filled < 0 or (original is not None and original < 0):
        return "sell"
    return None  # unsigned quantities and no is_bid: the adapter's order record decides


def _fill(obj: Mapping[str, Any]) -> NadoFill:
    w = "fill"
    digest = req_hex(obj, "order_digest", w, nbytes=32)
    filled = req_int(obj, "filled_qty", w)
    remaining = abs(req_int(obj, "remaining_qty", w))
    original = opt_int(obj, "original_qty", w)
    price = req_int(obj, "price", w)
    if filled == 0:
        raise MalformedFrame("filled_qty is zero", where=w)
    if price <= 0:
        raise MalformedFrame(f"price must be > 0, got {price}", where=w)
    submission_idx = opt_int(obj, "submission_idx", w, min_value=0)
    if original is not None:
        cumulative = abs(original) - remaining
        if cumulative < abs(filled):
            raise MalformedFrame("filled_qty exceeds original_qty - remaining_qty", where=w)
        fill_id = f"{digest}:{cumulative}"
    elif submission_idx is not None:
        fill_id = f"{digest}:s{submission_idx}:{abs(filled)}:{remaining}"
    else:
        raise MalformedFrame("fill has neither original_qty nor submission_idx", where=w)
    return NadoFill(
        product_id=req_int(obj, "product_id", w, min_value=0),
        digest=digest,
        subaccount=req_hex(obj, "subaccount", w, nbytes=32),
        side=_fill_side(obj, filled, original),
        qty=from_x18(abs(filled)),
        price=from_x18(price),
        fee=_opt_x18(obj, "fee", w) or Decimal(0),
        remaining_qty=from_x18(remaining),
        original_qty=None if original is None else from_x18(abs(original)),
        is_taker=req_bool(obj, "is_taker", w),
        submission_idx=submission_idx,
        client_id=_client_id(obj, w),
        ts_venue_ns=_ts(obj, w),
        fill_id=fill_id,
    )


def _order_update(obj: Mapping[str, Any]) -> NadoOrderUpdate:
    w = "order_update"
    raw_reason = req_str(obj, "reason", w)
    reason = _REASONS.get(raw_reason)
    if reason is None:
        raise MalformedFrame(f"unknown reason {raw_reason[:40]!r}", where=w)
    if obj.get("order") is not None:  # the nested variant of a TS fork (§7.5)
        order = req_obj(obj, "order", w)
        digest = req_hex(order, "digest", w, nbytes=32)
        product_id = req_int(order, "product_id", w, min_value=0)
        amount = req_int(order, "unfilled_amount", w)
    else:
        digest = req_hex(obj, "digest", w, nbytes=32)
        product_id = req_int(obj, "product_id", w, min_value=0)
        amount = req_int(obj, "amount", w)
    return NadoOrderUpdate(
        product_id=product_id,
        digest=digest,
        reason=reason,
        remaining_qty=from_x18(abs(amount)),
        client_id=_client_id(obj, w),
        ts_venue_ns=_ts(obj, w),
    )


def _position_change(obj: Mapping[str, Any]) -> NadoPositionChange:
    w = "position_change"
    isolated = False if obj.get("isolated") is None else req_bool(obj, "isolated", w)
    return NadoPositionChange(
        product_id=req_int(obj, "product_id", w, min_value=0),
        subaccount=req_hex(obj, "subaccount", w, nbytes=32),
        amount=x18_field(obj, "amount", w),
        v_quote_amount=_opt_x18(obj, "v_quote_amount", w) or Decimal(0),
        reason=(opt_str(obj, "reason", w) or "")[:40],
        isolated=isolated,
        ts_venue_ns=_ts(obj, w),
    )


_PARSERS: dict[str, Callable[[Mapping[str, Any]], StreamFrame]] = {
    "best_bid_offer": _bbo,
    "fill": _fill,
    "order_update": _order_update,
    "position_change": _position_change,
}
