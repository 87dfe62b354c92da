"""Public market data of `venue serve` beyond the engine queries: full `GET /v1/symbols`,
the v2 routes (`/v2/assets`, `/v2/pairs`, `/v2/orderbook` on the gateway; `/v2/tickers`,
`/v2/contracts`, `/v2/trades` on the archive host), the edge query (`/v1/edge/query`),
and the `fee_rates` / `max_order_size` engine queries.

Sources, per shape: ccxt's `nado.py` (its comments carry real responses of every v2
route and of the edge `time` control) and its static market file
`ts/src/test/static/markets/nado.json` (the `/v1/symbols`, `/v2/pairs`, `/v2/assets`
entries); the official SDK's types (`Asset`, `MarketPair`, `Orderbook`, `FeeRatesData`,
`MaxOrderSizeData`, `edge.py`). v2 numbers are JSON floats, timestamps milliseconds
(orderbook) or seconds (trades). Values the sim has no model for (24 h change, open
interest, funding) are `unverified` stand-ins: see adapters/sim/README.md.

Pure functions over the exchange core plus a small `PublicTrades` tape; request
parameters are validated here and every answer is bounded (`MAX_DEPTH`, `MAX_TRADES`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import as_int
from adapters.nado.wire import req_hex
from adapters.nado.wire import req_int
from adapters.nado.wire import req_str
from adapters.sim.book import Level
from adapters.sim.exchange import Exchange
from adapters.sim.products import ProductSpec
from adapters.sim.records import FillRecord
from adapters.sim.records import Record
from adapters.sim.server import codec
from adapters.sim.server.codec import WireTime
from adapters.sim.server.codec import x18s

__all__ = [
    "EXTRA_QUERIES",
    "MAX_DEPTH",
    "MAX_TRADES",
    "QUOTE",
    "BadPublicRequest",
    "PublicTrades",
    "Trade",
    "assets",
    "book",
    "contracts",
    "edge_query",
    "extra_query",
    "orderbook",
    "pairs",
    "symbols_v1",
    "ticker_id",
    "tickers",
    "trades",
]

ZERO = Decimal(0)
QUOTE = "USDT0"  # the quote and settlement asset, product id 0 (ccxt's static markets)
MAX_DEPTH = 100  # ccxt asks `/v2/orderbook` for depth 100 by default; more is refused (sim)
MAX_TRADES = 500  # ccxt caps `/v2/trades` at limit 500
TAPE = 1_000  # public trades kept per product
DAY_NS = 86_400 * 1_000_000_000
HOUR_S = 3_600
EXTRA_QUERIES = ("fee_rates", "max_order_size")
# Edge cached reads mapped to the engine query with the same data (SDK edge.py).
EDGE_CACHED = {
    "cached_prices": "market_prices",
    "cached_symbols": "symbols",
    "cached_contracts": "contracts",
    "cached_status": "status",
    "cached_all_products": "all_products",
}


class BadPublicRequest(Exception):
    """A public request refused with HTTP 400 and code 2000."""


def ticker_id(spec: ProductSpec) -> str:
    return f"{spec.symbol}_{QUOTE}"


def _base(spec: ProductSpec) -> str:
    return spec.symbol.removesuffix("-PERP")


def _f(value: Decimal) -> float:
    return float(value)


# -- /v1/symbols, /v2/assets, /v2/pairs ---------------------------------------------------


def symbols_v1(exchange: Exchange) -> list[dict[str, Any]]:
    """The full `symbols` entries as a list, product ids as strings (ccxt static data)."""
    sim = exchange.profile.sim
    return [
        {**codec.symbol_entry(spec, sim), "product_id": str(pid)}
        for pid, spec in exchange.specs.items()
    ]


def assets(exchange: Exchange) -> list[dict[str, Any]]:
    sim = exchange.profile.sim
    out: list[dict[str, Any]] = [
        {
            "product_id": 0,
            "name": QUOTE,
            "symbol": QUOTE,
            "can_withdraw": True,
            "can_deposit": True,
        }
    ]
    for pid, spec in exchange.specs.items():
        out.append(
            {
                "product_id": pid,
                "ticker_id": ticker_id(spec),
                "market_type": "perp",
                "name": f"{_base(spec)} Perp",
                "symbol": spec.symbol,
                "maker_fee": str(sim.maker_fee_bps / 10_000),
                "taker_fee": str(sim.taker_fee_bps / 10_000),
                "can_withdraw": False,
                "can_deposit": False,
            }
        )
    return out


def pairs(exchange: Exchange, query: Mapping[str, str]) -> list[dict[str, Any]]:
    market = query.get("market")
    if market not in (None, "perp", "spot"):
        raise BadPublicRequest("market must be spot or perp")
    if market == "spot":
        return []
    return [
        {"product_id": pid, "ticker_id": ticker_id(spec), "base": spec.symbol, "quote": QUOTE}
        for pid, spec in exchange.specs.items()
    ]


# -- books --------------------------------------------------------------------------------


def book(exchange: Exchange, pid: int, depth: int) -> tuple[list[Level], list[Level]]:
    """The crowd's levels merged with every account's resting orders, best first."""
    crowd_bids, crowd_asks = exchange.depth(pid, depth)
    bids: dict[Decimal, Decimal] = dict(crowd_bids)
    asks: dict[Decimal, Decimal] = dict(crowd_asks)
    for order in exchange.resting(pid):
        side = bids if order.side == "buy" else asks
        side[order.price] = side.get(order.price, ZERO) + order.remaining
    best_bids = sorted(((p, q) for p, q in bids.items() if q > 0), reverse=True)[:depth]
    best_asks = sorted((p, q) for p, q in asks.items() if q > 0)[:depth]
    return best_bids, best_asks


def _spec_by_ticker(exchange: Exchange, query: Mapping[str, str]) -> ProductSpec:
    tid = query.get("ticker_id")
    if not tid:
        raise BadPublicRequest("missing ticker_id")
    for spec in exchange.specs.values():
        if ticker_id(spec) == tid:
            return spec
    raise BadPublicRequest(f"unknown ticker_id {tid[:40]!r}")


def _bounded_int(query: Mapping[str, str], key: str, default: int, hi: int) -> int:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        value = as_int(raw, key, "query")
    except MalformedFrame as exc:
        raise BadPublicRequest(str(exc)) from None
    if not 1 <= value <= hi:
        raise BadPublicRequest(f"{key} must be within 1..{hi}")
    return value


def orderbook(exchange: Exchange, wire: WireTime, query: Mapping[str, str]) -> dict[str, Any]:
    spec = _spec_by_ticker(exchange, query)
    if "depth" not in query:
        raise BadPublicRequest("missing depth")
    depth = _bounded_int(query, "depth", MAX_DEPTH, MAX_DEPTH)
    bids, asks = book(exchange, spec.product_id, depth)
    return {
        "product_id": spec.product_id,
        "ticker_id": ticker_id(spec),
        "bids": [[_f(p), _f(q)] for p, q in bids],
        "asks": [[_f(p), _f(q)] for p, q in asks],
        "timestamp": wire.unix_ms(exchange.now_ns),
    }


# -- public trades ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Trade:
    trade_id: int
    ts_ns: int
    product_id: int
    price: Decimal
    qty: Decimal
    taker_buys: bool


class PublicTrades:
    """Every match once, from the core's fill records: a taker fill is a trade; a maker
    fill is one too unless it is the other side of the taker fill just seen (a user
    order hit another user's resting order)."""

    def __init__(self) -> None:
        self._tape: dict[int, deque[Trade]] = {}
        self._pending: list[tuple[int, int, Decimal, Decimal, str]] = []
        self._next_id = 0

    def record(self, rec: Record) -> Trade | None:
        if not isinstance(rec, FillRecord):
            return None
        key = (rec.product_id, rec.ts_ns, rec.price, rec.qty)
        if rec.is_taker:
            self._pending = [(*key, rec.side)]
            taker_buys = rec.side == "buy"
        else:
            for i, (*k, side) in enumerate(self._pending):
                if tuple(k) == key and side != rec.side:
                    del self._pending[i]
                    return None
            taker_buys = rec.side != "buy"
        self._next_id += 1
        trade = Trade(
            trade_id=self._next_id,
            ts_ns=rec.ts_ns,
            product_id=rec.product_id,
            price=rec.price,
            qty=rec.qty,
            taker_buys=taker_buys,
        )
        self._tape.setdefault(rec.product_id, deque(maxlen=TAPE)).append(trade)
        return trade

    def recent(self, pid: int) -> list[Trade]:
        """Newest first."""
        return list(reversed(self._tape.get(pid, ())))


def trade_frame(trade: Trade, wire: WireTime) -> dict[str, Any]:
    """The `trade` stream event (ccxt pro/nado.py sample; TS SDK event types)."""
    qty = x18s(trade.qty)
    return {
        "type": "trade",
        "timestamp": str(wire.unix_ns(trade.ts_ns)),
        "product_id": trade.product_id,
        "price": x18s(trade.price),
        "taker_qty": qty,
        "maker_qty": qty,
        "is_taker_buyer": trade.taker_buys,
    }


def trades(
    exchange: Exchange, tape: PublicTrades, wire: WireTime, query: Mapping[str, str]
) -> list[dict[str, Any]]:
    spec = _spec_by_ticker(exchange, query)
    limit = _bounded_int(query, "limit", 100, MAX_TRADES)
    max_id = query.get("max_trade_id")
    top: int | None = None
    if max_id is not None:
        try:
            top = as_int(max_id, "max_trade_id", "query", min_value=0)
        except MalformedFrame as exc:
            raise BadPublicRequest(str(exc)) from None
    out: list[dict[str, Any]] = []
    for t in tape.recent(spec.product_id):
        if top is not None and t.trade_id > top:
            continue
        if len(out) >= limit:
            break
        sign = 1 if t.taker_buys else -1
        out.append(
            {
                "product_id": t.product_id,
                "ticker_id": ticker_id(spec),
                "trade_id": t.trade_id,
                "price": _f(t.price),
                "base_filled": _f(sign * t.qty),
                "quote_filled": _f(-sign * t.qty * t.price),
                "timestamp": wire.unix_s(t.ts_ns),
                "trade_type": "buy" if t.taker_buys else "sell",
            }
        )
    return out


# -- tickers and contracts (archive v2) ---------------------------------------------------


def _ticker(
    exchange: Exchange, tape: PublicTrades, spec: ProductSpec, open_mid: Decimal
) -> dict[str, Any]:
    pid = spec.product_id
    since = exchange.now_ns - DAY_NS
    day = [t for t in tape.recent(pid) if t.ts_ns >= since]
    mid = exchange.mid(pid)
    last = day[0].price if day else mid
    change = (mid / open_mid - 1) * 100 if open_mid else ZERO
    return {
        "product_id": pid,
        "ticker_id": ticker_id(spec),
        "base_currency": _base(spec),
        "quote_currency": QUOTE,
        "last_price": _f(last),
        "base_volume": _f(sum((t.qty for t in day), ZERO)),
        "quote_volume": _f(sum((t.qty * t.price for t in day), ZERO)),
        "price_change_percent_24h": _f(change),
    }


def tickers(
    exchange: Exchange, tape: PublicTrades, open_mids: Mapping[int, Decimal]
) -> dict[str, Any]:
    return {
        ticker_id(spec): _ticker(exchange, tape, spec, open_mids.get(pid, ZERO))
        for pid, spec in exchange.specs.items()
    }


def contracts(
    exchange: Exchange, tape: PublicTrades, wire: WireTime, open_mids: Mapping[int, Decimal]
) -> dict[str, Any]:
    """Funding is zero and open interest is what the sim's accounts hold (`unverified`)."""
    now_s = wire.unix_s(exchange.now_ns)
    out = {}
    for pid, spec in exchange.specs.items():
        mid = exchange.mid(pid)
        longs = sum(
            (max(exchange.position(sub, pid).qty, ZERO) for sub in list(exchange.accounts)),
            ZERO,
        )
        entry = _ticker(exchange, tape, spec, open_mids.get(pid, ZERO))
        entry.update(
            {
                "base_currency": spec.symbol,
                "product_type": "perpetual",
                "contract_price": _f(mid),
                "contract_price_currency": "USD",
                "open_interest": _f(longs),
                "open_interest_usd": _f(longs * mid),
                "index_price": _f(mid),
                "mark_price": _f(mid),
                "funding_rate": 0.0,
                "next_funding_rate_timestamp": (now_s // HOUR_S + 1) * HOUR_S,
            }
        )
        out[ticker_id(spec)] = entry
    return out


# -- edge query ---------------------------------------------------------------------------


def edge_query(params: Mapping[str, Any], now_ms: int) -> dict[str, Any] | str | None:
    """Control messages answer here; a cached read returns the engine query type it maps
    to (the caller runs it); None for a type the sim does not serve."""
    kind = params.get("type")
    rid = params.get("id")
    if rid is not None:
        try:
            rid = as_int(rid, "id", "edge", min_value=0)
        except MalformedFrame as exc:
            raise BadPublicRequest(str(exc)) from None
    if kind == "time":
        out: dict[str, Any] = {"status": "success", "method": "time", "server_time": str(now_ms)}
    elif kind == "ping":
        out = {"status": "success", "method": "pong", "server_time": str(now_ms)}
        client_time = params.get("client_time")
        if client_time is not None:
            try:
                out["client_time"] = str(as_int(client_time, "client_time", "edge", min_value=0))
            except MalformedFrame as exc:
                raise BadPublicRequest(str(exc)) from None
    elif isinstance(kind, str) and kind in EDGE_CACHED:
        return EDGE_CACHED[kind]
    else:
        return None
    if rid is not None:
        out["id"] = rid
    return out


# -- fee_rates, max_order_size ------------------------------------------------------------


def extra_query(exchange: Exchange, params: Mapping[str, Any]) -> dict[str, Any]:
    """The data of a `fee_rates` or `max_order_size` query (raises MalformedFrame)."""
    kind = req_str(params, "type", "query")
    sim = exchange.profile.sim
    if kind == "fee_rates":
        req_hex(params, "sender", "query", nbytes=32)
        n = max(exchange.specs) + 1  # indexed by product id, the quote (0) included
        taker = [x18s(sim.taker_fee_bps / 10_000) if p in exchange.specs else "0" for p in range(n)]
        maker = [x18s(sim.maker_fee_bps / 10_000) if p in exchange.specs else "0" for p in range(n)]
        return {
            "taker_fee_rates_x18": taker,
            "maker_fee_rates_x18": maker,
            "liquidation_sequencer_fee": "0",
            "health_check_sequencer_fee": "0",
            "taker_sequencer_fee": "0",
            "withdraw_sequencer_fees": ["0"] * n,
        }
    sender = req_hex(params, "sender", "query", nbytes=32)
    pid = req_int(params, "product_id", "query", min_value=0)
    if pid not in exchange.specs:
        raise MalformedFrame(f"unknown product_id {pid}", where="query")
    price_x18 = req_int(params, "price_x18", "query", min_value=1)
    direction = req_str(params, "direction", "query")
    if direction not in ("long", "short"):
        raise MalformedFrame("direction must be long or short", where="query")
    reduce_only = params.get("reduce_only")
    if reduce_only not in (None, True, False, "true", "false"):
        raise MalformedFrame("reduce_only must be true or false", where="query")
    price = Decimal(price_x18) / 10**18
    inc = exchange.specs[pid].size_increment
    pos = exchange.position(sender, pid).qty if sender in exchange.accounts else ZERO
    if reduce_only in (True, "true"):
        size = max(-pos, ZERO) if direction == "long" else max(pos, ZERO)
    else:
        # No margin model yet: what the book could fill at this price or better (sim).
        bids, asks = book(exchange, pid, MAX_DEPTH)
        levels = asks if direction == "long" else bids
        ok = [q for p, q in levels if (p <= price if direction == "long" else p >= price)]
        size = sum(ok, ZERO)
    size = (size // inc) * inc
    return {"max_order_size": x18s(size)}
