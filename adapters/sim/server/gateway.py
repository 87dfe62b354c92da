"""The gateway's request logic: `/v1/execute` and `/v1/query` bodies in, Nado replies out.

No sockets and no sleeping here: the HTTP layer (app.py) applies latency and faults and
waits out a cancel's delay (`DelayedCancel`); this module parses, verifies signatures
with `adapters.nado.verify`, calls the exchange core and shapes the answer with
`codec`. Every failure is a Nado failure envelope; nothing in a request can raise out
of `execute` or `query` except a bug (which the HTTP layer turns into code 5000).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from typing import TypeVar

import attrs

from adapters.nado.mapping import from_x18
from adapters.nado.signing import BadSignature
from adapters.nado.verify import verify_cancel
from adapters.nado.verify import verify_place_order
from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import as_int
from adapters.nado.wire import loads
from adapters.nado.wire import opt_str
from adapters.nado.wire import req_hex
from adapters.nado.wire import req_int
from adapters.sim.exchange import Exchange
from adapters.sim.records import OrderRequest
from adapters.sim.records import OrderType
from adapters.sim.server import codec
from adapters.sim.server.codec import CODES
from adapters.sim.server.codec import WireTime

__all__ = [
    "EXECUTES",
    "QUERIES",
    "DelayedCancel",
    "Gateway",
    "Outcome",
    "Reply",
    "parse_query_string",
]

ZERO = Decimal(0)
EXECUTES = ("place_order", "cancel_orders", "cancel_product_orders")
# Known Nado executes the sim does not implement: code 4001, nothing happens.
NOT_IMPLEMENTED = frozenset(
    {
        "place_orders",
        "cancel_and_place",
        "withdraw_collateral",
        "liquidate_subaccount",
        "mint_nlp",
        "burn_nlp",
        "link_signer",
        "transfer_quote",
    }
)
QUERIES = (
    "status",
    "contracts",
    "symbols",
    "all_products",
    "market_price",
    "market_prices",
    "market_liquidity",
    "subaccount_info",
    "order",
    "subaccount_orders",
    "orders",
    "nonces",
)
_ORDER_TYPES: dict[int, OrderType] = {0: "default", 1: "ioc", 2: "fok", 3: "post_only"}
_ISOLATED_BIT = 1 << 8
_TRIGGER_BITS = 0b11 << 12
_RESERVED_BITS = ((1 << 38) - 1) & ~((1 << 14) - 1)  # bits 14..37 (nado-protocol.md §3.3)
_LIST_PARAMS = frozenset({"product_ids", "digests"})
MAX_IDS = 100  # product ids or digests one request may name (after dedupe for queries)
RECV_WINDOW_MS = 100_000  # Nado: accepted only if now < recv_time <= now + 100 s
MAX_EXPIRATION = 4_294_967_295  # u32 seconds, ccxt's "GTC": the latest the sim accepts


@attrs.frozen
class Reply:
    payload: Any
    http_status: int = 200
    headers: Mapping[str, str] | None = None


@attrs.frozen
class DelayedCancel:
    """A cancel that takes effect after `orders.cancel_delay_ms`; its answer follows."""

    delay_ns: int
    finish: Callable[[], Reply]


Outcome = Reply | DelayedCancel


def _fail(
    request_type: str | None,
    key: str,
    detail: str = "",
    *,
    rid: int | None = None,
    signature: str | None = None,
    http_status: int = 200,
) -> Reply:
    code, text = CODES[key]
    error = f"{text}: {detail}" if detail else text
    payload = codec.failure(request_type, code, error, rid=rid, signature=signature)
    return Reply(payload, http_status)


def _safe_id(obj: object) -> int | None:
    """The client `id` of a request, if it is readable; never raises."""
    if not isinstance(obj, Mapping):
        return None
    value = obj.get("id")
    try:
        return None if value is None else as_int(value, "id", "request", min_value=0)
    except MalformedFrame:
        return None


def _safe_signature(obj: object) -> str | None:
    if isinstance(obj, Mapping):
        sig = obj.get("signature")
        if isinstance(sig, str) and len(sig) <= 200:
            return sig
    return None


T = TypeVar("T")


def _verified(check: Callable[[], T]) -> T:
    """Run a signature check; the SDK and eth-abi raise assorted types on odd input
    (a product id beyond uint32, say): those are malformed requests, not crashes."""
    try:
        return check()
    except (MalformedFrame, BadSignature):
        raise
    except Exception as exc:
        raise MalformedFrame(f"cannot verify: {type(exc).__name__}", where="execute") from None


def _too_many_ids(inner: object) -> str:
    """A cancel naming more than MAX_IDS digests or product ids: refused before its
    signature is checked (the EIP-712 hash is linear in the list)."""
    if not isinstance(inner, Mapping):
        return ""
    tx = inner.get("tx")
    if not isinstance(tx, Mapping):
        return ""
    for key in ("digests", "productIds"):
        items = tx.get(key)
        if isinstance(items, list) and len(items) > MAX_IDS:
            return f"too many {key} ({len(items)} > {MAX_IDS})"
    return ""


def parse_query_string(items: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """`GET /v1/query?type=…` parameters: lists as `4,8`, `[4,8]` or repeated keys."""
    out: dict[str, Any] = {}
    for key, value in items:
        if key in _LIST_PARAMS:
            parts = [p.strip() for p in value.strip("[]").split(",") if p.strip()]
            out.setdefault(key, []).extend(parts)
        else:
            out[key] = value
    return out


class Gateway:
    def __init__(
        self,
        exchange: Exchange,
        *,
        wire: WireTime,
        now: Callable[[], int],
        sync: Callable[[], None],
        chain_id: int,
        endpoint_addr: str,
        check_times: bool = True,
    ) -> None:
        self.exchange = exchange
        self.wire = wire
        self.now = now
        self.sync = sync  # advance the exchange to now and route its records
        self.chain_id = chain_id
        self.endpoint_addr = endpoint_addr.lower()
        self.check_times = check_times
        self.pids = list(exchange.specs)
        self._queries: dict[str, Callable[[Mapping[str, Any], str], Reply]] = {
            "status": self._status,
            "contracts": self._contracts,
            "symbols": self._symbols,
            "all_products": self._all_products,
            "market_price": self._market_price,
            "market_prices": self._market_prices,
            "market_liquidity": self._market_liquidity,
            "subaccount_info": self._subaccount_info,
            "order": self._order,
            "subaccount_orders": self._subaccount_orders,
            "orders": self._orders,
            "nonces": self._nonces,
        }

    # -- /v1/execute ----------------------------------------------------------------------
    @staticmethod
    def execute_kind(body: object) -> str | None:
        """The execute type of a decoded body, if it has exactly one key."""
        if isinstance(body, Mapping) and len(body) == 1:
            key = next(iter(body))
            return key if isinstance(key, str) else None
        return None

    def execute(self, raw: bytes | str) -> Outcome:
        try:
            body = loads(raw)
        except MalformedFrame as exc:
            return _fail(None, "bad_request", exc.reason, http_status=400)
        kind = self.execute_kind(body)
        if kind is None:
            return _fail(None, "bad_request", "body must be an object with one execute type")
        assert isinstance(body, Mapping)
        inner = body[kind]
        rtype = f"execute_{kind}"
        rid, sig = _safe_id(inner), _safe_signature(inner)
        if kind in NOT_IMPLEMENTED:
            return _fail(rtype, "not_implemented", f"{kind} (sim)", rid=rid)
        if kind not in EXECUTES:
            return _fail(None, "bad_request", f"unknown execute type {kind[:40]!r}")
        too_many = _too_many_ids(inner)
        if too_many:
            return _fail(rtype, "bad_request", too_many, rid=rid, signature=sig)
        try:
            if kind == "place_order":
                return self._place(body, rid, sig)
            return self._cancel(body, kind, rid, sig)
        except MalformedFrame as exc:
            return _fail(rtype, "bad_request", str(exc), rid=rid, signature=sig)
        except BadSignature as exc:
            return _fail(rtype, "bad_signature", str(exc), rid=rid, signature=sig)

    def _place(self, body: Mapping[str, Any], rid: int | None, sig: str | None) -> Reply:
        rtype = "execute_place_order"
        v = _verified(lambda: verify_place_order(body, self.chain_id))
        rid = v.client_id
        if v.signer.lower() != v.owner:
            return _fail(rtype, "bad_signature", rid=rid, signature=sig)
        o = v.order
        appendix = o.appendix
        if appendix & 0xFF != 1:
            return _fail(rtype, "bad_request", "appendix version must be 1", rid=rid, signature=sig)
        if appendix & _TRIGGER_BITS or o.nonce >> 63:
            # Trigger orders go to the trigger service, not the engine (§3.2-3.3).
            detail = "trigger orders are placed through the trigger service (sim)"
            return _fail(rtype, "not_implemented", detail, rid=rid, signature=sig)
        if appendix & _RESERVED_BITS:
            return _fail(rtype, "bad_request", "reserved appendix bits set", rid=rid, signature=sig)
        if o.expiration > MAX_EXPIRATION:
            return _fail(rtype, "bad_expiration", rid=rid, signature=sig)
        now = self.now()
        if self.check_times:
            if o.expiration <= self.wire.unix_s(now):
                return _fail(rtype, "expired", rid=rid, signature=sig)
            bad = self._recv_time(o.nonce, now)
            if bad:
                return _fail(rtype, "recv_time", bad, rid=rid, signature=sig)
        builder_tenths_bp = (appendix >> 38) & 0x3FF
        req = OrderRequest(
            subaccount=o.sender,
            product_id=v.product_id,
            side="buy" if o.amount > 0 else "sell",
            qty=from_x18(abs(o.amount)),
            price=from_x18(o.price_x18),
            order_type=_ORDER_TYPES[(appendix >> 9) & 0b11],
            reduce_only=bool(appendix & (1 << 11)),
            nonce=o.nonce,
            expiration=o.expiration,
            client_id=None if rid is None else str(rid),
            digest_override=v.digest.lower(),
            builder_fee_rate=Decimal(builder_tenths_bp) / 100_000,
            builder_id=(appendix >> 48) & 0xFFFF,
            isolated=bool(appendix & _ISOLATED_BIT),
            appendix_override=appendix,
        )
        self.sync()
        result = self.exchange.place(self.now(), req)
        self.sync()
        if result.ok:
            return Reply(codec.success(rtype, {"digest": result.digest}, rid=rid, signature=sig))
        code = result.code if result.code is not None else CODES["internal"][0]
        return Reply(codec.failure(rtype, code, result.error, rid=rid, signature=sig))

    def _cancel(
        self, body: Mapping[str, Any], kind: str, rid: int | None, sig: str | None
    ) -> Outcome:
        rtype = f"execute_{kind}"
        v = _verified(lambda: verify_cancel(body, self.chain_id, self.endpoint_addr))
        if v.signer.lower() != v.owner:
            return _fail(rtype, "bad_signature", rid=rid, signature=sig)
        if self.check_times:
            bad = self._recv_time(v.nonce, self.now())
            if bad:
                return _fail(rtype, "recv_time", bad, rid=rid, signature=sig)

        def finish() -> Reply:
            self.sync()
            now = self.now()
            if v.digests is None:
                gone = self.exchange.cancel_products(now, v.sender, v.product_ids)
            else:
                wanted = []
                for pid, digest in zip(v.product_ids, v.digests, strict=True):
                    order = self.exchange.order(digest)
                    if order is not None and order.product_id == pid:
                        wanted.append(digest)
                gone = self.exchange.cancel(now, v.sender, wanted)
            self.sync()
            data = {"cancelled_orders": [codec.order_object(o, self.wire) for o in gone]}
            return Reply(codec.success(rtype, data, rid=rid, signature=sig))

        delay = self.exchange.cancel_delay_ns()
        return DelayedCancel(delay, finish) if delay else finish()

    def _recv_time(self, nonce: int, now: int) -> str:
        """Why the nonce's `recv_time` (`nonce >> 20`, unix ms) is outside Nado's window
        `now < recv_time <= now + 100 s` (docs, nado-protocol.md §13); "" when inside."""
        recv_ms, now_ms = nonce >> 20, self.wire.unix_ms(now)
        if recv_ms <= now_ms:
            return f"recv_time {recv_ms} ms is not after now ({now_ms} ms)"
        if recv_ms > now_ms + RECV_WINDOW_MS:
            return f"recv_time {recv_ms} ms is more than 100 s ahead ({now_ms} ms)"
        return ""

    # -- /v1/query ------------------------------------------------------------------------
    def query_raw(self, raw: bytes | str) -> Reply:
        try:
            params = loads(raw)
        except MalformedFrame as exc:
            return _fail(None, "bad_request", exc.reason, http_status=400)
        return self.query(params)

    def query(self, params: object) -> Reply:
        if not isinstance(params, Mapping):
            return _fail(None, "bad_request", "query must be a JSON object")
        kind = params.get("type")
        if not isinstance(kind, str):
            return _fail(None, "bad_request", "missing query type")
        handler = self._queries.get(kind)
        if handler is None:
            return _fail(None, "bad_request", f"unknown query type {kind[:40]!r}")
        rtype = f"query_{kind}"
        try:
            return handler(params, rtype)
        except MalformedFrame as exc:
            return _fail(rtype, "bad_request", str(exc))

    def _ok(self, rtype: str, data: Any) -> Reply:
        return Reply(codec.success(rtype, data))

    def _pid(self, params: Mapping[str, Any], key: str = "product_id") -> int:
        pid = req_int(params, key, "query", min_value=0)
        if pid not in self.exchange.specs:
            raise MalformedFrame(f"unknown product_id {pid}", where="query")
        return pid

    def _pids(self, params: Mapping[str, Any], *, required: bool) -> list[int]:
        raw = params.get("product_ids")
        if isinstance(raw, list) and len(raw) > MAX_IDS:
            raise MalformedFrame(f"too many product_ids ({len(raw)})", where="query")
        if raw is None:
            if required:
                raise MalformedFrame("missing field 'product_ids'", where="query")
            return list(self.pids)
        if not isinstance(raw, list):
            raise MalformedFrame("product_ids must be a list", where="query")
        out: list[int] = []
        for item in raw:
            pid = as_int(item, "product_ids", "query", min_value=0)
            if pid not in self.exchange.specs:
                raise MalformedFrame(f"unknown product_id {pid}", where="query")
            if pid not in out:  # duplicates answer once
                out.append(pid)
        return out

    def _status(self, params: Mapping[str, Any], rtype: str) -> Reply:
        return self._ok(rtype, "active")

    def _contracts(self, params: Mapping[str, Any], rtype: str) -> Reply:
        data = {"chain_id": str(self.chain_id), "endpoint_addr": self.endpoint_addr}
        return self._ok(rtype, data)

    def _symbols(self, params: Mapping[str, Any], rtype: str) -> Reply:
        product_type = opt_str(params, "product_type", "query")
        if product_type not in (None, "perp", "spot"):
            raise MalformedFrame("product_type must be perp or spot", where="query")
        pids = [] if product_type == "spot" else self._pids(params, required=False)
        sim = self.exchange.profile.sim
        symbols = {}
        for pid in pids:
            spec = self.exchange.specs[pid]
            symbols[spec.symbol] = codec.symbol_entry(spec, sim)
        return self._ok(rtype, {"symbols": symbols})

    def product_symbols(self) -> list[dict[str, Any]]:
        """`GET /v1/symbols`: a bare list, as the SDK's `get_product_symbols` reads it."""
        return [{"product_id": pid, "symbol": self.exchange.specs[pid].symbol} for pid in self.pids]

    def _products(self) -> list[tuple[Any, Decimal]]:
        return [(self.exchange.specs[pid], self.exchange.mid(pid)) for pid in self.pids]

    def _all_products(self, params: Mapping[str, Any], rtype: str) -> Reply:
        self.sync()
        return self._ok(rtype, codec.all_products(self._products()))

    def _market_price(self, params: Mapping[str, Any], rtype: str) -> Reply:
        pid = self._pid(params)
        self.sync()
        return self._ok(rtype, codec.market_price(self.exchange.bbo(pid)))

    def _market_prices(self, params: Mapping[str, Any], rtype: str) -> Reply:
        pids = self._pids(params, required=True)
        self.sync()
        prices = [codec.market_price(self.exchange.bbo(pid)) for pid in pids]
        return self._ok(rtype, {"market_prices": prices})

    def _market_liquidity(self, params: Mapping[str, Any], rtype: str) -> Reply:
        pid = self._pid(params)
        depth = req_int(params, "depth", "query", min_value=1)
        self.sync()
        bids, asks = self.exchange.depth(pid, min(depth, 100))
        ts = self.wire.unix_ns(self.exchange.now_ns)
        return self._ok(rtype, codec.market_liquidity(bids, asks, ts))

    def _subaccount_info(self, params: Mapping[str, Any], rtype: str) -> Reply:
        sub = req_hex(params, "subaccount", "query", nbytes=32)
        self.sync()
        balances = []
        funded = self.exchange.funded(sub)
        quote = self.exchange.profile.sim.collateral if funded else ZERO
        if sub in self.exchange.accounts:  # never create accounts for mere lookups
            for pid in self.pids:
                qty, entry = self.exchange.position_view(sub, pid)
                balances.append(codec.Balance(product_id=pid, amount=qty, entry=entry))
                pos = self.exchange.position(sub, pid)
                quote += pos.realized_pnl - pos.fees
        else:
            balances = [codec.Balance(product_id=p, amount=ZERO, entry=ZERO) for p in self.pids]
        data = codec.subaccount_info(
            sub, balances, quote, self._products(), exists=funded, health=self._healths(sub)
        )
        return self._ok(rtype, data)

    def _healths(self, sub: str) -> tuple[Decimal, Decimal, Decimal]:
        """(initial, maintenance, unweighted) health; maintenance margin is half the
        initial (the published weights 0.95/1.05 vs 0.9/1.1)."""
        ex = self.exchange
        equity = ex.equity(sub)
        initial = ex.initial_health(sub)
        return initial, equity - (equity - initial) / 2, equity

    def _order(self, params: Mapping[str, Any], rtype: str) -> Reply:
        """Resting orders only; anything else is 2020, as on Nado (nado-protocol.md §6.4)."""
        pid = req_int(params, "product_id", "query", min_value=0)
        digest = req_hex(params, "digest", "query", nbytes=32)
        self.sync()
        order = self.exchange.order(digest)
        if order is None or order.state != "open" or order.product_id != pid:
            return _fail(rtype, "not_found", f"no open order {digest[:18]}…")
        return self._ok(rtype, codec.order_object(order, self.wire))

    def _open(self, sender: str, pid: int) -> list[dict[str, Any]]:
        return [codec.order_object(o, self.wire) for o in self.exchange.open_orders(sender, [pid])]

    def _subaccount_orders(self, params: Mapping[str, Any], rtype: str) -> Reply:
        sender = req_hex(params, "sender", "query", nbytes=32)
        pid = self._pid(params)
        self.sync()
        orders = self._open(sender, pid)
        return self._ok(rtype, {"sender": sender, "product_id": pid, "orders": orders})

    def _orders(self, params: Mapping[str, Any], rtype: str) -> Reply:
        sender = req_hex(params, "sender", "query", nbytes=32)
        pids = self._pids(params, required=True)
        self.sync()
        product_orders = [{"product_id": p, "orders": self._open(sender, p)} for p in pids]
        return self._ok(rtype, {"sender": sender, "product_orders": product_orders})

    def _nonces(self, params: Mapping[str, Any], rtype: str) -> Reply:
        req_hex(params, "address", "query", nbytes=20)
        recv_ms = self.wire.unix_ms(self.now()) + 90_000
        return self._ok(rtype, {"tx_nonce": "0", "order_nonce": str(recv_ms << 20)})
