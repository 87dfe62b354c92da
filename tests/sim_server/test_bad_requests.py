"""Bad input gets a Nado-shaped failure (`status: failure`, `error`, `error_code`) and the
server keeps serving: every case is followed by a request that must still be answered."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.nado.errors import classify_http
from adapters.nado.mapping import StreamError
from adapters.nado.mapping import StreamReply
from adapters.nado.queries import parse_envelope
from adapters.nado.wire import loads
from tests.sim_server.helpers import ETH
from tests.sim_server.helpers import OTHER_KEY
from tests.sim_server.helpers import Client
from tests.sim_server.helpers import client
from tests.sim_server.helpers import make_signer
from tests.sim_server.helpers import running
from tests.sim_server.helpers import stream

pytestmark = pytest.mark.asyncio


async def _still_serving(c: Client) -> None:
    env = await c.query(type="market_price", product_id=ETH)
    assert env.ok
    assert env.data["product_id"] == ETH


async def _failure(c: Client, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    r = await c.post(path, body)
    obj = loads(r.text)
    env = parse_envelope(obj)
    assert not env.ok, obj
    assert isinstance(env.error_code, int)
    assert env.error
    await _still_serving(c)
    return r.status_code, obj


def _place_body(c: Client, **changes: Any) -> dict[str, Any]:
    body = c.sign(ETH, "buy", "0.1", "2900", "default").body()
    inner = body["place_order"]
    for key, value in changes.items():
        (inner["order"] if key in inner["order"] else inner)[key] = value
    return body


QUERY_CASES = [
    pytest.param(b"{not json", 400, id="malformed-json"),
    pytest.param(b"", 400, id="empty-body"),
    pytest.param(b"\xff\xfe", 400, id="not-utf8"),
    pytest.param(b"[1, 2]", 200, id="not-an-object"),
    pytest.param(b'{"type": "nope"}', 200, id="unknown-type"),
    pytest.param(b'{"product_id": 4}', 200, id="missing-type"),
    pytest.param(b'{"type": "market_price"}', 200, id="missing-field"),
    pytest.param(b'{"type": "market_price", "product_id": NaN}', 400, id="nan"),
    pytest.param(b'{"type": "market_price", "product_id": Infinity}', 400, id="infinity"),
    pytest.param(b'{"type": "market_price", "product_id": -4}', 200, id="negative-id"),
    pytest.param(b'{"type": "market_price", "product_id": 4.0}', 200, id="float-id"),
    pytest.param(b'{"type": "market_price", "product_id": 77}', 200, id="unknown-product"),
    pytest.param(
        b'{"type": "market_liquidity", "product_id": 4, "depth": -1}', 200, id="neg-depth"
    ),
    pytest.param(b'{"type": "subaccount_info", "subaccount": "0x12"}', 200, id="short-hex"),
    pytest.param(b'{"type": "order", "type": "status"}', 400, id="duplicate-key"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, 400, id="deep-nesting"),
]


@pytest.mark.parametrize(("body", "http_status"), QUERY_CASES)
async def test_bad_queries_fail_in_nado_shape(body: bytes, http_status: int) -> None:
    async with running() as server, client(server) as c:
        status, obj = await _failure(c, "/query", body)
        assert status == http_status
        assert obj["error_code"] == 2000
        assert server.stats["internal_errors"] == 0


async def test_bad_executes_fail_in_nado_shape() -> None:
    async with running() as server, client(server) as c:
        cases: list[tuple[str, Any, int]] = [
            ("malformed", b'{"place_order": {', 2000),
            ("two-types", {"place_order": {}, "cancel_orders": {}}, 2000),
            ("unknown-type", {"do_something": {}}, 2000),
            ("not-implemented", {"place_orders": {"orders": []}}, 4001),
            ("missing-signature", _place_body(c, signature=None), 2000),
            ("missing-order", {"place_order": {"product_id": 4, "signature": "0x00"}}, 2000),
            ("float-amount", _place_body(c, amount=0.1), 2000),
            ("nan", b'{"place_order": {"product_id": 4, "order": {"amount": NaN}}}', 2000),
            ("negative-nonce", _place_body(c, nonce="-1"), 2000),
            ("negative-product", _place_body(c, product_id=-4), 2000),
            ("huge-amount", _place_body(c, amount=str(2**130)), 2000),
            ("bad-sender", _place_body(c, sender="0xabc"), 2000),
            (
                "cancel-mismatched-lists",
                {
                    "cancel_orders": {
                        "tx": {
                            "sender": c.signer.sender,
                            "productIds": [4, 8],
                            "digests": ["0x" + "00" * 32],
                            "nonce": "1",
                        },
                        "signature": "0x" + "00" * 65,
                    }
                },
                2000,
            ),
        ]
        for name, body, code in cases:
            _, obj = await _failure(c, "/execute", body)
            assert obj["error_code"] == code, (name, obj)
        assert server.exchange.open_orders(c.signer.sender) == []
        assert server.stats["internal_errors"] == 0


async def test_bad_signatures_are_2028() -> None:
    async with running() as server, client(server) as c:
        good = c.sign(ETH, "buy", "0.1", "2900", "default").body()
        tampered = json.loads(json.dumps(good))
        tampered["place_order"]["order"]["amount"] = "200000000000000000"  # not what was signed
        garbage = json.loads(json.dumps(good))
        garbage["place_order"]["signature"] = "0x1234"
        # Validly signed, but by a key that does not own the sender's subaccount.
        other = c.sign(ETH, "buy", "0.1", "2900", "default")
        stolen = make_signer(OTHER_KEY).sign_order(
            ETH,
            price_x18=other.order.price_x18,
            amount_x18=other.order.amount,
            expiration=other.order.expiration,
            nonce=other.order.nonce,
            tif="default",
        )
        forged = stolen.body()
        forged["place_order"]["order"]["sender"] = c.signer.sender
        nonce = good["place_order"]["order"]["nonce"]
        cancel = make_signer(OTHER_KEY).sign_cancel([], None, nonce=int(nonce)).body()
        cancel["cancel_product_orders"]["tx"]["sender"] = c.signer.sender
        for body in (tampered, garbage, forged, cancel):
            status, obj = await _failure(c, "/execute", body)
            assert (status, obj["error_code"]) == (200, 2028), obj
            assert obj["request_type"].startswith("execute_")
        classified = classify_http(200, {}, json.dumps(obj), "place_order")
        assert classified is not None
        assert classified.reason == "bad_signature"
        assert classified.error_class == "permanent"
        assert server.exchange.open_orders(c.signer.sender) == []
        # The genuine order still goes through afterwards.
        assert (await c.execute(good))[1].ok


async def test_expired_orders_and_stale_nonces_are_refused() -> None:
    async with running() as server, client(server) as c:
        base = c.sign(ETH, "buy", "0.1", "2900", "default").order
        signer = c.signer
        expired = signer.sign_order(
            ETH,
            price_x18=base.price_x18,
            amount_x18=base.amount,
            expiration=1_000_000,
            nonce=base.nonce,
            tif="default",
        )
        stale = signer.sign_order(
            ETH,
            price_x18=base.price_x18,
            amount_x18=base.amount,
            expiration=base.expiration,
            nonce=(1_000_000 << 20) + 1,
            tif="default",
        )
        assert (await c.place(expired)).error_code == 2009
        assert (await c.place(stale)).error_code == 2011
        await _still_serving(c)
    async with running(check_times=False) as server, client(server) as c:
        assert (await c.place(stale)).ok


async def test_unknown_routes_and_methods() -> None:
    async with running() as server, client(server) as c:
        r = await c.http.get("/nope")
        assert r.status_code == 404
        assert parse_envelope(loads(r.text)).error_code == 2000
        r = await c.http.get("/execute")
        assert r.status_code in (404, 405)
        r = await c.http.get("/subscribe")  # not an upgrade
        assert r.status_code == 400
        assert parse_envelope(loads(r.text)).error_code == 2000
        r = await c.http.post("/query", content=b"x" * (2 << 20))
        assert r.status_code == 413
        assert parse_envelope(loads(r.text)).error_code == 2000
        await _still_serving(c)


async def _ws_error(s: Any, text: str | bytes) -> StreamError:
    await s.ws.send(text)
    frame = await s.until(lambda f: isinstance(f, StreamError))
    assert isinstance(frame, StreamError)
    return frame


def _sub(rid: int, stream: dict[str, Any]) -> str:
    return json.dumps({"method": "subscribe", "id": rid, "stream": stream})


async def test_bad_stream_messages_get_error_frames() -> None:
    async with running() as server, stream(server) as s:
        me = make_signer().sender
        auth = {"sender": me, "expiration": "1"}
        cases: list[tuple[str | bytes, int]] = [
            ("not json", 2000),
            (b"\x00\x01binary", 2000),
            (_sub(1, {"type": "liquidation", "product_id": 4}), 4001),
            ('{"method": "dance", "id": 2}', 2000),
            ('{"id": 3}', 2000),
            (_sub(4, {"type": "best_bid_offer"}), 2000),
            (_sub(5, {"type": "best_bid_offer", "product_id": -1}), 2000),
            ('{"method": "ping", "id": 6, "client_time": NaN}', 2000),
            (_sub(7, {"type": "order_update", "subaccount": me}), 2028),
            (
                json.dumps({"method": "authenticate", "id": 8, "tx": auth, "signature": "0x12"}),
                2028,
            ),
        ]
        for text, code in cases:
            frame = await _ws_error(s, text)
            assert frame.code == code, (text, frame)
        # Authentication with an expired (but validly signed) message is refused too.
        stale = make_signer().stream_auth(1_000, request_id=9)
        assert (await _ws_error(s, json.dumps(stale))).code == 2000
        pong = await s.request({"method": "ping"})
        assert isinstance(pong, StreamReply)
        assert pong.method == "pong"
        assert server.stats["internal_errors"] == 0
