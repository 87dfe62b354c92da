"""Nado-shaped JSON for the loopback gateway: envelopes, order objects, stream frames.

Numbers go out as Nado sends them: prices, sizes, balances and fees as x18 integers in
decimal strings, event timestamps as unix nanoseconds in strings, `placed_at` as unix
seconds (nado-protocol.md §5.3, §6, §7.5). Pure functions: the exchange core's records
and accessors in, plain dicts out.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN
from decimal import Decimal
from typing import Any

import attrs

from adapters.sim.book import Level
from adapters.sim.faults import SimSettings
from adapters.sim.matching import Bbo
from adapters.sim.products import ProductSpec
from adapters.sim.records import FillRecord
from adapters.sim.records import OrderUpdateRecord
from adapters.sim.records import PositionChangeRecord
from adapters.sim.records import SimOrder

__all__ = [
    "CODES",
    "WireTime",
    "all_products",
    "bbo_frame",
    "failure",
    "fill_frame",
    "market_liquidity",
    "market_price",
    "order_object",
    "order_update_frame",
    "position_change_frame",
    "subaccount_info",
    "success",
    "swap_sides",
    "symbol_entry",
    "x18s",
]

ZERO = Decimal(0)
ONE_X18 = 10**18

# Codes the server adds to the core's (adapters.sim.records.ERRORS). Those marked "sim"
# are not evidenced anywhere (nado-protocol.md §9.1) and are this server's choice.
CODES: dict[str, tuple[int, str]] = {
    "rate_limited": (1000, "Too Many Requests"),
    "unavailable": (1006, "service unavailable"),
    "bad_request": (2000, "invalid request"),  # sim
    "expired": (2009, "invalid expiration: already expired"),  # sim code, Vertex text
    "bad_expiration": (2009, "invalid expiration: beyond u32 seconds"),  # unverified
    # 2011: in ccxt's InvalidNonce family; which nonce code Nado uses here is unverified
    "recv_time": (2011, "invalid nonce: recv_time outside (now, now + 100 s]"),
    "not_found": (2020, "order not found"),
    "bad_signature": (2028, "invalid signature: signer does not match the sender"),
    "not_implemented": (4001, "not implemented"),
    "internal": (5000, "internal error"),
}


@attrs.frozen
class WireTime:
    """Maps the server clock (monotonic ns since an origin) to unix time on the wire."""

    origin_ns: int
    epoch_ns: int  # unix ns at origin_ns

    def unix_ns(self, t_ns: int) -> int:
        return self.epoch_ns + (t_ns - self.origin_ns)

    def unix_ms(self, t_ns: int) -> int:
        return self.unix_ns(t_ns) // 1_000_000

    def unix_s(self, t_ns: int) -> int:
        return self.unix_ns(t_ns) // 1_000_000_000


def x18(value: Decimal) -> int:
    """Decimal -> x18 integer, rounded half-even at the 18th place (derived values)."""
    return int((value * ONE_X18).to_integral_value(rounding=ROUND_HALF_EVEN))


def x18s(value: Decimal) -> str:
    return str(x18(value))


# -- envelopes ----------------------------------------------------------------------------


def success(
    request_type: str, data: Any, *, rid: int | None = None, signature: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "success"}
    if signature is not None:
        out["signature"] = signature
    out["data"] = data
    out["request_type"] = request_type
    if rid is not None:
        out["id"] = rid
    return out


def failure(
    request_type: str | None,
    code: int,
    error: str,
    *,
    rid: int | None = None,
    signature: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"status": "failure"}
    if signature is not None:
        out["signature"] = signature
    out["error_code"] = code
    out["error"] = error
    if request_type is not None:
        out["request_type"] = request_type
    if rid is not None:
        out["id"] = rid
    return out


# -- orders -------------------------------------------------------------------------------


def order_object(order: SimOrder, wire: WireTime) -> dict[str, Any]:
    """§5.3. `amount` and `unfilled_amount` are signed like the order (sell < 0)."""
    req = order.request
    sign = 1 if req.side == "buy" else -1
    return {
        "product_id": req.product_id,
        "sender": req.subaccount,
        "price_x18": x18s(req.price),
        "amount": x18s(req.amount),
        "expiration": str(req.expiration),
        "nonce": str(req.nonce),
        "unfilled_amount": x18s(sign * order.remaining),
        "digest": order.digest,
        "placed_at": wire.unix_s(order.placed_ns),
        "order_type": req.order_type,
        "appendix": str(req.appendix),
    }


# -- stream frames (§7.5) -----------------------------------------------------------------


def _client_id(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def bbo_frame(bbo: Bbo, wire: WireTime) -> dict[str, Any]:
    return {
        "type": "best_bid_offer",
        "timestamp": str(wire.unix_ns(bbo.ts_ns)),
        "product_id": bbo.product_id,
        "bid_price": x18s(bbo.bid),
        "bid_qty": x18s(bbo.bid_qty),
        "ask_price": x18s(bbo.ask),
        "ask_qty": x18s(bbo.ask_qty),
    }


def swap_sides(frame: dict[str, Any]) -> dict[str, Any]:
    """A crossed quote (`market.crossed_bbo`): bid and ask swapped, so ask < bid."""
    out = dict(frame)
    out["bid_price"], out["ask_price"] = frame["ask_price"], frame["bid_price"]
    out["bid_qty"], out["ask_qty"] = frame["ask_qty"], frame["bid_qty"]
    return out


def fill_frame(rec: FillRecord, wire: WireTime) -> dict[str, Any]:
    """Quantities unsigned, side in `is_bid` (the sim's choice, nado-protocol.md §12.4)."""
    out: dict[str, Any] = {
        "type": "fill",
        "timestamp": str(wire.unix_ns(rec.ts_ns)),
        "product_id": rec.product_id,
        "subaccount": rec.subaccount,
        "order_digest": rec.digest,
        "filled_qty": x18s(rec.qty),
        "remaining_qty": x18s(rec.remaining),
        "original_qty": x18s(rec.original),
        "price": x18s(rec.price),
        "is_taker": rec.is_taker,
        "is_bid": rec.side == "buy",
        "fee": x18s(rec.fee),
        "submission_idx": str(rec.submission_idx),
        "appendix": str(rec.appendix),
    }
    cid = _client_id(rec.client_id)
    if cid is not None:
        out["id"] = cid
    return out


def order_update_frame(rec: OrderUpdateRecord, side: str, wire: WireTime) -> dict[str, Any]:
    """`amount` is the unfilled size after the update, signed like the order (0 when done)."""
    sign = 1 if side == "buy" else -1
    out: dict[str, Any] = {
        "type": "order_update",
        "timestamp": str(wire.unix_ns(rec.ts_ns)),
        "product_id": rec.product_id,
        "digest": rec.digest,
        "amount": x18s(sign * rec.remaining),
        "reason": rec.reason,
    }
    cid = _client_id(rec.client_id)
    if cid is not None:
        out["id"] = cid
    return out


def position_change_frame(rec: PositionChangeRecord, wire: WireTime) -> dict[str, Any]:
    """`amount` is the new balance (not a delta); `v_quote_amount` is -amount x entry."""
    entry = rec.entry_price or ZERO
    return {
        "type": "position_change",
        "timestamp": str(wire.unix_ns(rec.ts_ns)),
        "product_id": rec.product_id,
        "subaccount": rec.subaccount,
        "amount": x18s(rec.amount),
        "v_quote_amount": x18s(-rec.amount * entry),
        "reason": "match_orders",
        "isolated": rec.isolated,
    }


# -- queries (§6) -------------------------------------------------------------------------

# Risk weights are display values only: the sim has no margin model.
_WEIGHTS = {
    "long_weight_initial_x18": x18s(Decimal("0.9")),
    "short_weight_initial_x18": x18s(Decimal("1.1")),
    "long_weight_maintenance_x18": x18s(Decimal("0.95")),
    "short_weight_maintenance_x18": x18s(Decimal("1.05")),
}


def symbol_entry(spec: ProductSpec, sim: SimSettings) -> dict[str, Any]:
    return {
        "type": "perp",
        "product_id": spec.product_id,
        "symbol": spec.symbol,
        "price_increment_x18": x18s(spec.tick),
        "size_increment": x18s(spec.size_increment),
        "min_size": x18s(spec.min_notional),
        "maker_fee_rate_x18": x18s(sim.maker_fee_bps / 10_000),
        "taker_fee_rate_x18": x18s(sim.taker_fee_bps / 10_000),
        "long_weight_initial_x18": _WEIGHTS["long_weight_initial_x18"],
        "long_weight_maintenance_x18": _WEIGHTS["long_weight_maintenance_x18"],
        "max_open_interest_x18": None,
        "trading_status": "live",
        "isolated_only": False,
    }


def perp_product(spec: ProductSpec, mid: Decimal) -> dict[str, Any]:
    """An `all_products` / `subaccount_info` perp entry (the SDK's `PerpProduct`)."""
    return {
        "product_id": spec.product_id,
        "oracle_price_x18": x18s(mid),
        "index_price_x18": x18s(mid),
        "risk": {**_WEIGHTS, "price_x18": x18s(mid)},
        "state": {
            "cumulative_funding_long_x18": "0",
            "cumulative_funding_short_x18": "0",
            "available_settle": "0",
            "open_interest": "0",
        },
        "book_info": {
            "size_increment": x18s(spec.size_increment),
            "price_increment_x18": x18s(spec.tick),
            "min_size": x18s(spec.min_notional),
            "collected_fees": "0",
        },
    }


def all_products(products: Iterable[tuple[ProductSpec, Decimal]]) -> dict[str, Any]:
    """No spot products: the quote (USDT0, id 0) has no book in the sim."""
    return {"spot_products": [], "perp_products": [perp_product(s, m) for s, m in products]}


def market_price(bbo: Bbo) -> dict[str, Any]:
    """An empty side shows "0" (nado-protocol.md §12.10)."""
    return {"product_id": bbo.product_id, "bid_x18": x18s(bbo.bid), "ask_x18": x18s(bbo.ask)}


def market_liquidity(
    bids: Sequence[Level], asks: Sequence[Level], ts_unix_ns: int
) -> dict[str, Any]:
    return {
        "bids": [[x18s(p), x18s(q)] for p, q in bids],
        "asks": [[x18s(p), x18s(q)] for p, q in asks],
        "timestamp": str(ts_unix_ns),
    }


@attrs.frozen(kw_only=True)
class Balance:
    product_id: int
    amount: Decimal  # signed base size
    entry: Decimal


def subaccount_info(
    subaccount: str,
    balances: Sequence[Balance],
    quote: Decimal,
    products: Iterable[tuple[ProductSpec, Decimal]],
    *,
    exists: bool = True,
    health: tuple[Decimal, Decimal, Decimal] | None = None,
) -> dict[str, Any]:
    """Every listed product appears in `perp_balances` (zero when flat). `exists` is
    false for a subaccount that was never funded (the SDK's `SubaccountInfoData.exists`);
    `healths` are [initial, maintenance, unweighted] (nado-protocol.md §6.3)."""
    values = health if health is not None else (quote, quote, quote)
    healths = [
        {"assets": x18s(max(h, ZERO)), "liabilities": x18s(max(-h, ZERO)), "health": x18s(h)}
        for h in values
    ]
    return {
        "subaccount": subaccount,
        "exists": exists,
        "healths": healths,
        "health_contributions": [],
        "spot_count": 1,
        "perp_count": len(balances),
        "spot_balances": [{"product_id": 0, "balance": {"amount": x18s(quote)}}],
        "perp_balances": [
            {
                "product_id": b.product_id,
                "balance": {
                    "amount": x18s(b.amount),
                    "v_quote_balance": x18s(-b.amount * b.entry),
                    "last_cumulative_funding_x18": "0",
                },
            }
            for b in balances
        ],
        "spot_products": [],
        "perp_products": [perp_product(s, m) for s, m in products],
    }
