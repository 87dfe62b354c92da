"""One `/v1/subscribe` connection's state: authentication and subscriptions (§7.1-§7.4).

`StreamSession.handle` takes one client text frame and returns the reply frame: an ack
`{"result": null, "id": n}`, a pong or time result, a list, or an error frame
`{"status": "failure", "error": …, "error_code": …, "id": n}`. It never raises on bad
input. `wants` says whether an event belongs on this connection.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Mapping
from typing import Any

import attrs

from adapters.nado.signing import BadSignature
from adapters.nado.verify import verify_stream_auth
from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import as_int
from adapters.nado.wire import loads
from adapters.nado.wire import opt_int
from adapters.nado.wire import req_hex
from adapters.nado.wire import req_int
from adapters.nado.wire import req_list
from adapters.nado.wire import req_obj
from adapters.nado.wire import req_str
from adapters.sim.server.codec import CODES

__all__ = ["AUTH_STREAMS", "STREAMS", "StreamSession", "Sub"]

STREAMS = (
    "best_bid_offer",
    "book_depth",
    "trade",
    "all_bbo",
    "funding_rate",
    "fill",
    "order_update",
    "position_change",
)
PRIVATE = frozenset({"fill", "order_update", "position_change"})
# Public streams whose `product_id` may be omitted (all products): nado-protocol.md §7.4.
ANY_PRODUCT = frozenset({"all_bbo", "funding_rate"})
# Which streams need an authenticated connection: only `order_update`, per a third party
# reading Nado's docs (nado-protocol.md §7.3, §12.8). Configurable in ServerOptions.
AUTH_STREAMS = frozenset({"order_update"})
AUTH_MAX_AHEAD_MS = 100_000  # Vertex refused expirations more than 100 s ahead
MAX_SUBS = 256  # subscriptions per connection (sim bound; Nado's is unknown)


@attrs.frozen
class Sub:
    type: str
    product_id: int | None = None
    subaccount: str | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.product_id is not None:
            out["product_id"] = self.product_id
        if self.subaccount is not None:
            out["subaccount"] = self.subaccount
        return out


_Method = Callable[["StreamSession", Mapping[str, Any], "int | None"], dict[str, Any]]


class _Refused(Exception):
    def __init__(self, key: str, detail: str = "") -> None:
        super().__init__(detail)
        self.key = key
        self.detail = detail


class StreamSession:
    def __init__(
        self,
        *,
        product_ids: Collection[int],
        chain_id: int,
        endpoint_addr: str,
        now_unix_ms: Callable[[], int],
        auth_streams: Collection[str] = AUTH_STREAMS,
    ) -> None:
        self.product_ids = frozenset(product_ids)
        self.chain_id = chain_id
        self.endpoint_addr = endpoint_addr
        self.now_unix_ms = now_unix_ms
        self.auth_streams = frozenset(auth_streams)
        self.subs: dict[Sub, None] = {}  # insertion-ordered set
        self.authed: set[str] = set()  # owner addresses (lower-case 0x + 40 hex)

    # -- routing --------------------------------------------------------------------------
    def wants(self, kind: str, product_id: int | None, subaccount: str | None = None) -> bool:
        for sub in self.subs:
            if sub.type != kind:
                continue
            if sub.product_id is not None and sub.product_id != product_id:
                continue
            if sub.subaccount is not None and sub.subaccount != subaccount:
                continue
            return True
        return False

    # -- client frames --------------------------------------------------------------------
    def handle(self, text: str | bytes) -> dict[str, Any]:
        rid: int | None = None
        try:
            msg = loads(text)
            if not isinstance(msg, Mapping):
                raise _Refused("bad_request", "message must be a JSON object")
            rid = opt_int(msg, "id", "request", min_value=0)
            method = req_str(msg, "method", "request")
            handler = self._methods.get(method)
            if handler is None:
                raise _Refused("bad_request", f"unknown method {method[:40]!r}")
            return handler(self, msg, rid)
        except _Refused as exc:
            return _error(exc.key, exc.detail, rid)
        except MalformedFrame as exc:
            return _error("bad_request", str(exc), rid)
        except BadSignature as exc:
            return _error("bad_signature", str(exc), rid)

    def _subscribe(self, msg: Mapping[str, Any], rid: int | None) -> dict[str, Any]:
        sub = self._stream(req_obj(msg, "stream", "subscribe"))
        self._room({sub})
        self.subs[sub] = None
        return {"result": None, "id": rid}

    def _room(self, new: set[Sub]) -> None:
        """Every push scans a connection's subscriptions: their number is capped."""
        if len(self.subs.keys() | new) > MAX_SUBS:
            raise _Refused("bad_request", f"at most {MAX_SUBS} subscriptions per connection")

    def _unsubscribe(self, msg: Mapping[str, Any], rid: int | None) -> dict[str, Any]:
        sub = self._stream(req_obj(msg, "stream", "unsubscribe"), check_auth=False)
        self.subs.pop(sub, None)
        return {"result": None, "id": rid}

    def _subscribe_multi(self, msg: Mapping[str, Any], rid: int | None) -> dict[str, Any]:
        raw = req_list(msg, "streams", "subscribe_multi")
        if len(raw) > MAX_SUBS:
            raise _Refused("bad_request", f"at most {MAX_SUBS} streams per message")
        subs = [self._stream(s) for s in raw]
        self._room(set(subs))
        for sub in subs:  # all or nothing
            self.subs[sub] = None
        return {"result": None, "id": rid}

    def _unsubscribe_multi(self, msg: Mapping[str, Any], rid: int | None) -> dict[str, Any]:
        streams = req_list(msg, "streams", "unsubscribe_multi")
        if len(streams) > MAX_SUBS:
            raise _Refused("bad_request", f"at most {MAX_SUBS} streams per message")
        for raw in streams:
            self.subs.pop(self._stream(raw, check_auth=False), None)
        return {"result": None, "id": rid}

    def _list(self, msg: Mapping[str, Any], rid: int | None) -> dict[str, Any]:
        return {"result": [s.wire() for s in self.subs], "id": rid}

    def _ping(self, msg: Mapping[str, Any], rid: int | None) -> dict[str, Any]:
        result: dict[str, Any] = {"method": "pong", "server_time": str(self.now_unix_ms())}
        client_time = msg.get("client_time")
        if client_time is not None:
            result["client_time"] = str(as_int(client_time, "client_time", "ping", min_value=0))
        return {"result": result, "id": rid}

    def _time(self, msg: Mapping[str, Any], rid: int | None) -> dict[str, Any]:
        return {"result": {"method": "time", "server_time": str(self.now_unix_ms())}, "id": rid}

    def _authenticate(self, msg: Mapping[str, Any], rid: int | None) -> dict[str, Any]:
        tx = req_obj(msg, "tx", "authenticate")
        sender = req_hex(tx, "sender", "authenticate", nbytes=32)
        expiration = req_int(tx, "expiration", "authenticate", min_value=0)
        try:
            signer = verify_stream_auth(msg, self.chain_id, self.endpoint_addr)
        except (MalformedFrame, BadSignature):
            raise
        except Exception as exc:  # the SDK's encoders raise assorted types on odd input
            raise MalformedFrame(f"cannot verify: {type(exc).__name__}", where="auth") from None
        owner = sender[:42]
        if signer.lower() != owner:
            raise _Refused("bad_signature")
        now = self.now_unix_ms()
        if expiration < now:
            raise _Refused("bad_request", "authentication expired (expiration is in ms)")
        if expiration > now + AUTH_MAX_AHEAD_MS:
            raise _Refused("bad_request", "authentication expiration more than 100 s ahead")
        self.authed.add(owner)
        return {"result": None, "id": rid}

    def _stream(self, raw: Mapping[str, Any], *, check_auth: bool = True) -> Sub:
        w = "stream"
        kind = req_str(raw, "type", w)
        if kind not in STREAMS:
            raise _Refused("not_implemented", f"stream {kind[:40]!r} (sim)")
        pid = None if raw.get("product_id") is None else req_int(raw, "product_id", w, min_value=0)
        if pid is not None and pid not in self.product_ids:
            raise _Refused("bad_request", f"unknown product_id {pid}")
        if kind == "all_bbo":
            return Sub(kind)
        if kind not in PRIVATE:
            if pid is None and kind not in ANY_PRODUCT:
                raise MalformedFrame("missing field 'product_id'", where=w)
            return Sub(kind, pid)
        subaccount = req_hex(raw, "subaccount", w, nbytes=32)
        if check_auth and kind in self.auth_streams and subaccount[:42] not in self.authed:
            raise _Refused("bad_signature", f"{kind} needs an authenticated connection")
        return Sub(kind, pid, subaccount)

    _methods: dict[str, _Method] = {
        "subscribe": _subscribe,
        "unsubscribe": _unsubscribe,
        "subscribe_multi": _subscribe_multi,
        "unsubscribe_multi": _unsubscribe_multi,
        "list": _list,
        "ping": _ping,
        "time": _time,
        "authenticate": _authenticate,
    }


def _error(key: str, detail: str, rid: int | None) -> dict[str, Any]:
    code, text = CODES[key]
    return {
        "status": "failure",
        "error": f"{text}: {detail}" if detail else text,
        "error_code": code,
        "id": rid,
    }
