"""What the exchange core takes and emits, in Nado's vocabulary but with Decimal numbers.

A face (the in-process SimVenue, a loopback server) maps these to engine events or to
x18 wire JSON. Fields follow nado-protocol.md §5.3 (order object) and §7.5 (fill,
order_update, position_change).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Literal

import attrs

__all__ = [
    "APPENDIX",
    "ERRORS",
    "FillRecord",
    "OrderRequest",
    "OrderUpdateRecord",
    "PlaceResult",
    "PositionChangeRecord",
    "Reason",
    "Record",
    "SimOrder",
    "fill_record",
    "order_digest",
    "position_record",
    "update_record",
    "x18",
]

OrderType = Literal["default", "ioc", "fok", "post_only"]
Side = Literal["buy", "sell"]
ZERO = Decimal(0)
NO_EXPIRY = 4_294_967_295  # ccxt's "GTC" expiration, unix seconds

# Appendix values of SDK `build_appendix` (version 1, order type in bits 9-10).
APPENDIX: dict[str, int] = {"default": 1, "ioc": 513, "fok": 1025, "post_only": 1537}
REDUCE_ONLY_BIT = 2048

# Codes per nado-protocol.md §9.1 and ccxt's `nado` exception map (`exceptions.exact`,
# which names the class of each code, not its meaning). "unverified" = no public source
# gives this number for this situation; the class ccxt maps it to fits (InvalidOrder,
# BadSymbol, ...), so a client treats it as a definite refusal, never a network error.
ERRORS: dict[str, tuple[int, str]] = {
    "rate_limited": (1000, "Too Many Requests"),
    "unhealthy": (2006, "unhealthy order: account health below threshold"),
    "oracle_band": (2007, "order price is too far from the oracle price"),
    "post_only_crosses": (2008, "order is post only, but it crosses book"),
    "duplicate": (2013, "duplicate order digest"),
    "not_found": (2020, "order not found"),
    "no_subaccount": (2024, "subaccount has no deposits"),  # third-party notes, §9.1
    "fok_unfillable": (2031, "fill or kill order cannot be fully filled"),  # ccxt: NotFillable
    "bad_price": (2001, "invalid price: not divisible by increment"),  # unverified, Vertex text
    "bad_amount": (2002, "invalid amount: not divisible by increment"),  # unverified
    "zero_amount": (2003, "invalid amount: zero"),  # unverified, Vertex text
    "too_small": (2004, "invalid amount: too small"),  # unverified, Vertex text
    "bad_product": (2015, "invalid product_id"),  # unverified; ccxt: BadSymbol
    "reduce_only": (2019, "reduce-only order would increase the position"),  # unverified
}


def x18(value: Decimal) -> int:
    return int(value * 10**18)


def order_digest(
    subaccount: str,
    product_id: int,
    price: Decimal,
    amount: Decimal,
    expiration: int,
    nonce: int,
    appendix: int,
) -> str:
    """Stands in for the EIP-712 order hash: same fields in, same digest out."""
    text = f"{subaccount}|{product_id}|{x18(price)}|{x18(amount)}|{expiration}|{nonce}|{appendix}"
    return "0x" + hashlib.sha256(text.encode()).hexdigest()


@attrs.frozen(kw_only=True)
class OrderRequest:
    subaccount: str
    product_id: int
    side: Side
    qty: Decimal  # > 0; the side carries the sign
    price: Decimal
    order_type: OrderType
    reduce_only: bool = False
    nonce: int = 0
    expiration: int = NO_EXPIRY
    client_id: str | None = None  # the `id` echoed in fill/order_update; the engine's order id
    # A face that knows the real order hash (the loopback server: EIP-712) sets it here;
    # None keeps the sim's own digest below.
    digest_override: str | None = None
    # Appendix extras (nado-protocol.md §3.3): builder fee as a fraction of notional
    # (bits 38..47 are tenths of a bp), builder id (48..63), isolated margin (bit 8).
    builder_fee_rate: Decimal = ZERO
    builder_id: int = 0
    isolated: bool = False
    appendix_override: int | None = None  # the client's appendix, echoed verbatim

    @property
    def appendix(self) -> int:
        if self.appendix_override is not None:
            return self.appendix_override
        return APPENDIX[self.order_type] + (REDUCE_ONLY_BIT if self.reduce_only else 0)

    @property
    def amount(self) -> Decimal:
        return self.qty if self.side == "buy" else -self.qty

    def digest(self) -> str:
        if self.digest_override is not None:
            return self.digest_override
        return order_digest(
            self.subaccount,
            self.product_id,
            self.price,
            self.amount,
            self.expiration,
            self.nonce,
            self.appendix,
        )


OrderState = Literal["open", "filled", "cancelled", "expired"]


@attrs.define(kw_only=True)
class SimOrder:
    digest: str
    request: OrderRequest
    placed_ns: int
    seq: int
    filled: Decimal = ZERO
    filled_value: Decimal = ZERO  # sum of qty x price over its matches
    fees: Decimal = ZERO
    state: OrderState = "open"
    took: bool = False  # matched as taker at least once (min-size fee rule)
    # While it rests: the crowd's size ahead of it at its price (adapters/sim/flow.py).
    queue_ahead: Decimal = ZERO

    @property
    def remaining(self) -> Decimal:
        return self.request.qty - self.filled

    @property
    def product_id(self) -> int:
        return self.request.product_id

    @property
    def side(self) -> Side:
        return self.request.side

    @property
    def price(self) -> Decimal:
        return self.request.price


@attrs.frozen(kw_only=True)
class PlaceResult:
    digest: str | None = None
    code: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.digest is not None


@attrs.frozen(kw_only=True)
class FillRecord:
    submission_idx: int
    ts_ns: int
    product_id: int
    subaccount: str
    digest: str
    client_id: str | None
    side: Side
    price: Decimal
    qty: Decimal  # this fill (filled_qty)
    cumulative: Decimal
    remaining: Decimal  # remaining_qty after this fill
    original: Decimal  # original_qty
    is_taker: bool
    fee: Decimal
    appendix: int

    @property
    def fill_id(self) -> str:
        return f"{self.digest[2:18]}-{self.submission_idx}"


# `reason` is Nado's (placed | filled | cancelled); `cause` says who cancelled and why.
Reason = Literal["placed", "filled", "cancelled"]
Cause = Literal["", "user", "ioc_remainder", "fok_unfilled", "no_fill_fault", "reduce_only"]


@attrs.frozen(kw_only=True)
class OrderUpdateRecord:
    submission_idx: int
    ts_ns: int
    product_id: int
    subaccount: str
    digest: str
    client_id: str | None
    reason: Reason
    remaining: Decimal  # `amount`: the unfilled size, unsigned
    filled: Decimal
    order_type: OrderType
    cause: Cause = ""
    filled_price: Decimal = ZERO  # average price of its matches so far (0: none)


@attrs.frozen(kw_only=True)
class PositionChangeRecord:
    submission_idx: int
    ts_ns: int
    product_id: int
    subaccount: str
    amount: Decimal  # the new signed balance (our choice; nado-protocol.md §12.4)
    entry_price: Decimal | None
    isolated: bool = False


Record = FillRecord | OrderUpdateRecord | PositionChangeRecord


def fill_record(
    order: SimOrder, idx: int, now: int, price: Decimal, qty: Decimal, taker: bool, fee: Decimal
) -> FillRecord:
    req = order.request
    return FillRecord(
        submission_idx=idx,
        ts_ns=now,
        product_id=req.product_id,
        subaccount=req.subaccount,
        digest=order.digest,
        client_id=req.client_id,
        side=req.side,
        price=price,
        qty=qty,
        cumulative=order.filled,
        remaining=order.remaining,
        original=req.qty,
        is_taker=taker,
        fee=fee,
        appendix=req.appendix,
    )


def update_record(
    order: SimOrder, idx: int, now: int, reason: Reason, cause: Cause = ""
) -> OrderUpdateRecord:
    return OrderUpdateRecord(
        submission_idx=idx,
        ts_ns=now,
        product_id=order.product_id,
        subaccount=order.request.subaccount,
        digest=order.digest,
        client_id=order.request.client_id,
        reason=reason,
        remaining=order.remaining if order.state == "open" else ZERO,
        filled=order.filled,
        order_type=order.request.order_type,
        cause=cause,
        filled_price=order.filled_value / order.filled if order.filled else ZERO,
    )


def position_record(
    order: SimOrder, idx: int, now: int, qty: Decimal, entry: Decimal
) -> PositionChangeRecord:
    return PositionChangeRecord(
        submission_idx=idx,
        ts_ns=now,
        product_id=order.product_id,
        subaccount=order.request.subaccount,
        amount=qty,
        entry_price=entry if qty else None,
        isolated=order.request.isolated,
    )
