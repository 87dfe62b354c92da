"""The Nado services `venue serve` adds around the engine gateway, on the same host and
port at the real hosts' paths (DESIGN.md §4), so a client changes its base URLs only:

| route | real host | here |
|---|---|---|
| `GET /v1/symbols` (full entries) | gateway `/v1` | `public.symbols_v1` |
| `GET`/`POST /v1/edge/query` | gateway `/v1` | `public.edge_query` |
| `GET /v2/assets`, `/v2/pairs`, `/v2/orderbook` | gateway `/v2` | `public` |
| `POST /archive/v1` (`orders`, `matches`) | archive `/v1` | `archive.Archive` |
| `GET /archive/v2/tickers`, `/contracts`, `/trades` | archive `/v2` | `public` |
| `POST /trigger/v1/execute`, `/trigger/v1/query` | trigger `/v1` | below |
| queries `fee_rates`, `max_order_size` | gateway `/v1/query` | `public.extra_query` |

Each route goes through the HTTP layer's fault path like the engine routes (`rest.*`,
`venue.down`). Trigger orders are not simulated: a trigger `place_order` is refused
with code 4001 (ccxt maps it to NotSupported), listing answers an empty list, a signed
trigger cancel answers success with nothing cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from adapters.nado.signing import BadSignature
from adapters.nado.verify import verify_cancel
from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import as_int
from adapters.nado.wire import loads
from adapters.nado.wire import req_hex
from adapters.nado.wire import req_obj
from adapters.nado.wire import req_str
from adapters.sim.exchange import Exchange
from adapters.sim.faults import NS_PER_MS
from adapters.sim.records import Record
from adapters.sim.server import codec
from adapters.sim.server import public
from adapters.sim.server.archive import Archive
from adapters.sim.server.archive import ArchiveError
from adapters.sim.server.codec import CODES
from adapters.sim.server.codec import WireTime
from adapters.sim.server.gateway import Gateway
from adapters.sim.server.gateway import Reply
from adapters.sim.server.gateway import parse_query_string
from adapters.sim.server.market_streams import MarketStreams

__all__ = ["ROUTES", "Services"]

# (method, path, kind): the HTTP layer maps each to `Services.handle(kind, ...)`.
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/v1/edge/query", "edge_get"),
    ("POST", "/v1/edge/query", "edge_post"),
    ("GET", "/v2/assets", "v2_assets"),
    ("GET", "/v2/pairs", "v2_pairs"),
    ("GET", "/v2/orderbook", "v2_orderbook"),
    ("POST", "/archive/v1", "archive"),
    ("GET", "/archive/v2/tickers", "v2_tickers"),
    ("GET", "/archive/v2/contracts", "v2_contracts"),
    ("GET", "/archive/v2/trades", "v2_trades"),
    ("POST", "/trigger/v1/execute", "trigger_execute"),
    ("POST", "/trigger/v1/query", "trigger_query"),
)
KINDS = frozenset(kind for _, _, kind in ROUTES)
TRIGGER_CANCELS = ("cancel_orders", "cancel_product_orders")
TRIGGER_LISTS = {"list_trigger_orders": "orders", "list_twap_executions": "executions"}
MAX_QUERY_PARAMS = 32  # query-string parameters per request (sim bound)


def _bad(detail: str, status: int = 400, request_type: str | None = None) -> Reply:
    code, text = CODES["bad_request"]
    return Reply(codec.failure(request_type, code, f"{text}: {detail}"), status)


class Services:
    def __init__(
        self,
        exchange: Exchange,
        gateway: Gateway,
        wire: WireTime,
        *,
        now: Callable[[], int],
        sync: Callable[[], None],
        wants: Callable[[str, int | None], bool],
        push: Callable[[str, int | None, dict[str, Any]], None],
        chain_id: int,
        endpoint_addr: str,
    ) -> None:
        self.exchange = exchange
        self.gateway = gateway
        self.wire = wire
        self.now = now
        self.sync = sync
        self.push = push
        self.chain_id = chain_id
        self.endpoint_addr = endpoint_addr.lower()
        lag_ns = int(exchange.profile.archive.lag_ms * NS_PER_MS)
        self.archive = Archive(wire=wire, order_of=exchange.order, lag_ns=lag_ns)
        self.tape = public.PublicTrades()
        self.streams = MarketStreams(exchange, wire, wants=wants, push=push)
        self.open_mids: dict[int, Decimal] = {pid: exchange.mid(pid) for pid in exchange.specs}

    # -- records from the core ------------------------------------------------------------
    def record(self, rec: Record) -> None:
        self.archive.record(rec)
        trade = self.tape.record(rec)
        if trade is not None:
            self.push("trade", trade.product_id, public.trade_frame(trade, self.wire))

    def tick(self) -> None:
        self.streams.tick(self.exchange.now_ns)

    # -- gateway queries the engine gateway does not answer ---------------------------------
    def intercept_query(self, params: object) -> Reply | None:
        if not isinstance(params, Mapping) or params.get("type") not in public.EXTRA_QUERIES:
            return None
        rtype = f"query_{params['type']}"
        self.sync()
        try:
            data = public.extra_query(self.exchange, params)
        except MalformedFrame as exc:
            return _bad(str(exc), 200, rtype)
        return Reply(codec.success(rtype, data))

    # -- routes ---------------------------------------------------------------------------
    def handle(self, kind: str, raw: bytes, query: list[tuple[str, str]]) -> Reply:
        if len(query) > MAX_QUERY_PARAMS:
            return _bad(f"at most {MAX_QUERY_PARAMS} query parameters")
        params = dict(query)
        try:
            if kind == "edge_get":
                return self._edge(parse_query_string(query))
            if kind == "edge_post":
                return self._edge(loads(raw))
            if kind == "archive":
                return self._archive(raw)
            if kind == "trigger_execute":
                return self._trigger_execute(raw)
            if kind == "trigger_query":
                return self._trigger_query(raw)
            self.sync()
            return Reply(self._public(kind, params))
        except public.BadPublicRequest as exc:
            return _bad(str(exc))
        except MalformedFrame as exc:
            return _bad(str(exc))

    def _public(self, kind: str, params: Mapping[str, str]) -> Any:
        ex = self.exchange
        if kind == "v2_assets":
            return public.assets(ex)
        if kind == "v2_pairs":
            return public.pairs(ex, params)
        if kind == "v2_orderbook":
            return public.orderbook(ex, self.wire, params)
        if kind == "v2_tickers":
            return public.tickers(ex, self.tape, self.open_mids)
        if kind == "v2_contracts":
            return public.contracts(ex, self.tape, self.wire, self.open_mids)
        if kind == "v2_trades":
            return public.trades(ex, self.tape, self.wire, params)
        raise AssertionError(kind)

    def symbols(self) -> Reply:
        return Reply(public.symbols_v1(self.exchange))

    def _edge(self, params: object) -> Reply:
        if not isinstance(params, Mapping):
            return _bad("query must be a JSON object")
        self.sync()
        answer = public.edge_query(params, self.wire.unix_ms(self.now()))
        if answer is None:
            kind = str(params.get("type"))[:40]
            return _bad(f"edge query type {kind!r} is not served by the sim")
        if isinstance(answer, dict):
            return Reply(answer)
        inner = {k: v for k, v in params.items() if k != "id"}
        reply = self.gateway.query({**inner, "type": answer})
        payload = reply.payload
        if isinstance(payload, dict) and "request_type" in payload:
            payload = {**payload, "request_type": f"query_{params['type']}"}
        return Reply(payload, reply.http_status)

    def _archive(self, raw: bytes) -> Reply:
        body = loads(raw)
        self.sync()
        try:
            return Reply(self.archive.answer(body, self.now()))
        except ArchiveError as exc:
            return _bad(str(exc))

    # -- trigger service ------------------------------------------------------------------
    def _trigger_execute(self, raw: bytes) -> Reply:
        body = loads(raw)
        kind = Gateway.execute_kind(body)
        if kind is None:
            return _bad("body must be an object with one execute type")
        assert isinstance(body, Mapping)
        rtype = f"execute_{kind}"
        if kind not in TRIGGER_CANCELS:
            code, text = CODES["not_implemented"]
            detail = f"{text}: trigger {kind[:40]} (the sim has no trigger service)"
            return Reply(codec.failure(rtype, code, detail))
        try:
            v = verify_cancel(body, self.chain_id, self.endpoint_addr)
        except BadSignature as exc:
            code, text = CODES["bad_signature"]
            return Reply(codec.failure(rtype, code, f"{text}: {exc}"))
        except MalformedFrame:
            raise
        except Exception as exc:  # the SDK's encoders raise assorted types on odd input
            raise MalformedFrame(f"cannot verify: {type(exc).__name__}", where="trigger") from None
        if v.signer.lower() != v.owner:
            code, text = CODES["bad_signature"]
            return Reply(codec.failure(rtype, code, text))
        return Reply(
            {"status": "success", "signature": body[kind].get("signature"), "request_type": rtype}
        )

    def _trigger_query(self, raw: bytes) -> Reply:
        params = loads(raw)
        if not isinstance(params, Mapping):
            return _bad("query must be a JSON object")
        kind = req_str(params, "type", "trigger")
        if kind not in TRIGGER_LISTS:
            return _bad(f"trigger query type {kind[:40]!r} is not served by the sim")
        rtype = f"query_{kind}"
        tx = req_obj(params, "tx", "trigger")
        req_hex(tx, "sender", "trigger", nbytes=32)
        recv_time = tx.get("recvTime", tx.get("recv_time"))
        as_int(recv_time, "recvTime", "trigger", min_value=0)
        req_str(params, "signature", "trigger")
        return Reply(codec.success(rtype, {TRIGGER_LISTS[kind]: []}))
