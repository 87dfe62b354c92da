"""Gateway replies (nado-protocol.md §4.2, §5, §6, §9.2) decoded into records and events.

`parse_envelope` splits every `/v1/query` and `/v1/execute` reply into success
data or a failure code; the `parse_*` functions read the success data of one
query type each. x18 values go through `adapters.nado.mapping`, the only
converter. Anything malformed raises `MalformedFrame`.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from adapters.base import ProductInfo
from adapters.nado.mapping import from_x18
from adapters.nado.mapping import x18_field
from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import opt_int
from adapters.nado.wire import opt_str
from adapters.nado.wire import req_bool
from adapters.nado.wire import req_hex
from adapters.nado.wire import req_int
from adapters.nado.wire import req_list
from adapters.nado.wire import req_obj
from adapters.nado.wire import req_str
from engine.core.events import BboUpdated
from engine.core.events import OpenOrder
from engine.core.events import OpenOrdersSnapshot
from engine.core.events import OrderStatus
from engine.core.events import Position
from engine.core.events import PositionSnapshot

__all__ = [
    "TRADABLE",
    "Contracts",
    "Envelope",
    "NadoOrder",
    "ProductBook",
    "SubaccountInfo",
    "SymbolInfo",
    "open_orders_snapshot",
    "parse_all_products",
    "parse_cancel_result",
    "parse_contracts",
    "parse_envelope",
    "parse_market_price",
    "parse_market_prices",
    "parse_multi_orders",
    "parse_order",
    "parse_place_result",
    "parse_product_symbols",
    "parse_subaccount_info",
    "parse_subaccount_orders",
    "parse_symbols",
]

TRADABLE = "live"
TRADING_STATUSES = ("live", "post_only", "reduce_only", "soft_reduce_only", "not_tradable")


@attrs.frozen(kw_only=True)
class Envelope:
    """`{status, data | error_code + error, request_type, id, signature}` of any reply."""

    ok: bool
    data: Any = None
    error_code: int | None = None
    error: str = ""
    request_type: str | None = None
    id: int | None = None


def parse_envelope(obj: Any) -> Envelope:
    w = "envelope"
    if not isinstance(obj, Mapping):
        raise MalformedFrame("reply must be a JSON object", where=w)
    status = req_str(obj, "status", w)
    if status not in ("success", "failure"):
        raise MalformedFrame(f"unknown status {status[:20]!r}", where=w)
    request_type = opt_str(obj, "request_type", w)
    rid = opt_int(obj, "id", w, min_value=0)
    if status == "success":
        if "data" not in obj:
            raise MalformedFrame("success without data", where=w)
        return Envelope(ok=True, data=obj["data"], request_type=request_type, id=rid)
    error = obj.get("error")
    return Envelope(
        ok=False,
        error_code=opt_int(obj, "error_code", w),
        error=error[:300] if isinstance(error, str) else "",
        request_type=request_type,
        id=rid,
    )


# --- startup discovery ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Contracts:
    chain_id: int
    endpoint_addr: str  # lower-case 0x + 40 hex


def parse_contracts(data: Any) -> Contracts:
    w = "contracts"
    return Contracts(
        chain_id=req_int(data, "chain_id", w, min_value=1),
        endpoint_addr=req_hex(data, "endpoint_addr", w, nbytes=20),
    )


@attrs.frozen(kw_only=True)
class SymbolInfo:
    """One entry of `symbols` (§6.1); increments are x18 integers as the venue sends them."""

    symbol: str
    product_id: int
    type: str
    price_increment_x18: int
    size_increment_x18: int
    min_size_x18: int  # a quote notional (§2.2)
    trading_status: str
    isolated_only: bool

    @property
    def tradable(self) -> bool:
        return self.trading_status == TRADABLE

    def product_info(self) -> ProductInfo:
        return ProductInfo(
            symbol=self.symbol,
            product_id=self.product_id,
            tick_size=from_x18(self.price_increment_x18),
            size_increment=from_x18(self.size_increment_x18),
            min_order_value_usd=from_x18(self.min_size_x18),
        )


def _increments(obj: Mapping[str, Any], w: str) -> tuple[int, int, int]:
    return (
        req_int(obj, "price_increment_x18", w, min_value=1),
        req_int(obj, "size_increment", w, min_value=1),
        req_int(obj, "min_size", w, min_value=0),
    )


def parse_symbols(data: Any) -> dict[str, SymbolInfo]:
    """`symbols` data -> by symbol. A missing `trading_status` is read as `live`."""
    w = "symbols"
    symbols = req_obj(data, "symbols", w)
    out: dict[str, SymbolInfo] = {}
    for key, entry in symbols.items():
        if not isinstance(entry, Mapping):
            raise MalformedFrame(f"entry {key[:40]!r} must be an object", where=w)
        symbol = req_str(entry, "symbol", w)
        if symbol != key:
            raise MalformedFrame(f"key {key[:40]!r} != symbol {symbol[:40]!r}", where=w)
        status = opt_str(entry, "trading_status", w) or TRADABLE
        if status not in TRADING_STATUSES:
            raise MalformedFrame(f"unknown trading_status {status[:40]!r}", where=w)
        price_inc, size_inc, min_size = _increments(entry, w)
        isolated = entry.get("isolated_only")
        out[symbol] = SymbolInfo(
            symbol=symbol,
            product_id=req_int(entry, "product_id", w, min_value=0),
            type=req_str(entry, "type", w),
            price_increment_x18=price_inc,
            size_increment_x18=size_inc,
            min_size_x18=min_size,
            trading_status=status,
            isolated_only=False if isolated is None else req_bool(entry, "isolated_only", w),
        )
    return out


def parse_product_symbols(data: Any) -> dict[str, int]:
    """`GET /v1/symbols`: `[{product_id, symbol}]` -> symbol to product id."""
    w = "product_symbols"
    if not isinstance(data, list):
        raise MalformedFrame("expected a list", where=w)
    return {req_str(e, "symbol", w): req_int(e, "product_id", w, min_value=0) for e in data}


@attrs.frozen(kw_only=True)
class ProductBook:
    """`all_products` entry: book increments and the oracle price."""

    product_id: int
    is_perp: bool
    oracle_price: Decimal
    price_increment_x18: int
    size_increment_x18: int
    min_size_x18: int


def parse_all_products(data: Any) -> dict[int, ProductBook]:
    w = "all_products"
    out: dict[int, ProductBook] = {}
    for key, is_perp in (("spot_products", False), ("perp_products", True)):
        for entry in req_list(data, key, w):
            book = req_obj(entry, "book_info", w)
            price_inc, size_inc, min_size = _increments(book, w)
            pid = req_int(entry, "product_id", w, min_value=0)
            out[pid] = ProductBook(
                product_id=pid,
                is_perp=is_perp,
                oracle_price=x18_field(entry, "oracle_price_x18", w, non_negative=True),
                price_increment_x18=price_inc,
                size_increment_x18=size_inc,
                min_size_x18=min_size,
            )
    return out


# --- prices -----------------------------------------------------------------------------


def parse_market_price(data: Any) -> BboUpdated:
    """`market_price` -> a BBO without sizes or venue time (the REST fallback quote).

    An empty side's value is unsettled (§12.10); whatever it is, `check_bbo` rejects a
    zero or crossed quote.
    """
    w = "market_price"
    return BboUpdated(
        product_id=req_int(data, "product_id", w, min_value=0),
        bid=x18_field(data, "bid_x18", w, non_negative=True),
        bid_qty=Decimal(0),
        ask=x18_field(data, "ask_x18", w, non_negative=True),
        ask_qty=Decimal(0),
    )


def parse_market_prices(data: Any) -> list[BboUpdated]:
    return [parse_market_price(e) for e in req_list(data, "market_prices", "market_prices")]


# --- positions --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SubaccountInfo:
    subaccount: str
    exists: bool
    perp_amounts: dict[int, Decimal]  # signed base size: long > 0
    perp_v_quote: dict[int, Decimal]
    spot_amounts: dict[int, Decimal]

    def position_snapshot(
        self, product_ids: Iterable[int], *, request_id: str | None = None
    ) -> PositionSnapshot:
        """Positions of the asked products; a product absent from `perp_balances` is flat.

        A subaccount that does not exist raises: it must never be read as "flat".
        """
        if not self.exists:
            raise MalformedFrame("subaccount does not exist", where="subaccount_info")
        return PositionSnapshot(
            positions=[
                Position(product_id=pid, qty=self.perp_amounts.get(pid, Decimal(0)))
                for pid in product_ids
            ],
            request_id=request_id,
        )


def parse_subaccount_info(data: Any) -> SubaccountInfo:
    w = "subaccount_info"
    perp: dict[int, Decimal] = {}
    v_quote: dict[int, Decimal] = {}
    spot: dict[int, Decimal] = {}
    for entry in req_list(data, "perp_balances", w):
        pid = req_int(entry, "product_id", w, min_value=0)
        balance = req_obj(entry, "balance", w)
        if pid in perp:
            raise MalformedFrame(f"product {pid} listed twice", where=w)
        perp[pid] = x18_field(balance, "amount", w)
        v_quote[pid] = x18_field(balance, "v_quote_balance", w)
    for entry in req_list(data, "spot_balances", w):
        pid = req_int(entry, "product_id", w, min_value=0)
        spot[pid] = x18_field(req_obj(entry, "balance", w), "amount", w)
    return SubaccountInfo(
        subaccount=req_hex(data, "subaccount", w, nbytes=32),
        exists=req_bool(data, "exists", w),
        perp_amounts=perp,
        perp_v_quote=v_quote,
        spot_amounts=spot,
    )


# --- orders -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class NadoOrder:
    """The order object of §5.3; quantities absolute, side from the sign of `amount`."""

    product_id: int
    digest: str
    side: str
    price: Decimal
    qty: Decimal
    remaining_qty: Decimal
    nonce: int
    expiration: int
    appendix: int | None
    placed_at_s: int | None

    @property
    def filled_qty(self) -> Decimal:
        return self.qty - self.remaining_qty

    def to_open_order(self, order_id: str) -> OpenOrder:
        return OpenOrder(
            order_id=order_id,
            product_id=self.product_id,
            side=self.side,
            price=self.price,
            qty=self.qty,
            remaining_qty=self.remaining_qty,
            digest=self.digest,
        )

    def to_status(self, order_id: str, *, request_id: str | None = None) -> OrderStatus:
        """The `order` query lists resting orders only (§6.4), so the state is `open`."""
        return OrderStatus(
            order_id=order_id,
            state="open",
            filled_qty=self.filled_qty,
            remaining_qty=self.remaining_qty,
            request_id=request_id,
        )


def parse_order(data: Any) -> NadoOrder:
    w = "order"
    amount = req_int(data, "amount", w)
    unfilled = req_int(data, "unfilled_amount", w)
    price = req_int(data, "price_x18", w)
    if amount == 0:
        raise MalformedFrame("amount is zero", where=w)
    if price <= 0:
        raise MalformedFrame(f"price_x18 must be > 0, got {price}", where=w)
    if abs(unfilled) > abs(amount) or (unfilled != 0 and (unfilled < 0) != (amount < 0)):
        raise MalformedFrame("unfilled_amount inconsistent with amount", where=w)
    return NadoOrder(
        product_id=req_int(data, "product_id", w, min_value=0),
        digest=req_hex(data, "digest", w, nbytes=32),
        side="buy" if amount > 0 else "sell",
        price=from_x18(price),
        qty=from_x18(abs(amount)),
        remaining_qty=from_x18(abs(unfilled)),
        nonce=req_int(data, "nonce", w, min_value=0),
        expiration=req_int(data, "expiration", w, min_value=0),
        appendix=opt_int(data, "appendix", w, min_value=0),
        placed_at_s=opt_int(data, "placed_at", w, min_value=0),
    )


def parse_subaccount_orders(data: Any) -> list[NadoOrder]:
    """`subaccount_orders` -> `{sender, product_id, orders: [...]}`."""
    return [parse_order(o) for o in req_list(data, "orders", "subaccount_orders")]


def parse_multi_orders(data: Any) -> dict[int, list[NadoOrder]]:
    """`orders` -> `{sender, product_orders: [{product_id, orders}]}`, by product id."""
    w = "orders"
    out: dict[int, list[NadoOrder]] = {}
    for entry in req_list(data, "product_orders", w):
        pid = req_int(entry, "product_id", w, min_value=0)
        out[pid] = [parse_order(o) for o in req_list(entry, "orders", w)]
    return out


def open_orders_snapshot(
    orders: Iterable[NadoOrder],
    product_ids: Iterable[int],
    order_id_for: Callable[[str], str | None],
    *,
    request_id: str | None = None,
) -> OpenOrdersSnapshot:
    """Orders the engine does not know (orphans) keep their digest as order id."""
    return OpenOrdersSnapshot(
        orders=[o.to_open_order(order_id_for(o.digest) or o.digest) for o in orders],
        product_ids=list(product_ids),
        request_id=request_id,
    )


# --- execute results --------------------------------------------------------------------


def parse_place_result(data: Any) -> str:
    """`place_order` success data `{digest}` -> the digest (lower-case)."""
    return req_hex(data, "digest", "place_order", nbytes=32)


def parse_cancel_result(data: Any) -> list[NadoOrder]:
    """`cancel_orders` / `cancel_product_orders` data: the orders that were open (§5.1)."""
    return [parse_order(o) for o in req_list(data, "cancelled_orders", "cancel_orders")]
