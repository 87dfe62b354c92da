"""The services `venue serve` adds around the gateway (adapters/sim/server/services.py):
the archive's indexing lag, and every new route refusing bad input at the boundary with
a bounded answer (HTTP 400, code 2000; trigger orders 4001), never a crash."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from itertools import pairwise
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from adapters.nado.mapping import StreamError
from adapters.nado.mapping import StreamReply
from adapters.sim.faults import FaultProfileError
from adapters.sim.faults import parse_profile
from adapters.sim.server.archive import MAX_LIMIT
from adapters.sim.server.archive import MAX_LIST
from adapters.sim.server.streams import MAX_SUBS
from tests.sim_server.helpers import ETH
from tests.sim_server.helpers import OTHER_KEY
from tests.sim_server.helpers import WAIT_S
from tests.sim_server.helpers import client
from tests.sim_server.helpers import make_signer
from tests.sim_server.helpers import running
from tests.sim_server.helpers import still
from tests.sim_server.helpers import stream

NS_PER_MS = 1_000_000


def _root(url: str) -> str:
    return url.removesuffix("/v1")


async def _trade(server: Any) -> str:
    """A resting maker sell inside the spread, hit by an IOC buy: returns the IOC digest."""
    async with client(server, make_signer(OTHER_KEY)) as maker, client(server) as taker:
        bid, ask = await taker.bbo(ETH)
        price = ((bid + ask) / 2 // Decimal("0.1")) * Decimal("0.1")
        assert bid < price < ask
        assert (await maker.place(maker.sign(ETH, "sell", "0.005", price, "post_only"))).ok
        env = await taker.place(taker.sign(ETH, "buy", "0.008", price, "ioc"))
        assert env.ok, env
        digest: str = env.data["digest"]
        return digest


@pytest.mark.asyncio
async def test_archive_sees_events_only_after_its_lag() -> None:
    lag_ms = 60_000
    profile = still(sim="spread_bps = 20", archive=f"lag_ms = {lag_ms}")
    async with running(profile) as server:
        digest = await _trade(server)
        me = make_signer().sender
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            url = _root(server.url) + "/archive/v1"
            r = await http.post(url, json={"matches": {"subaccounts": [me]}})
            assert r.json() == {"matches": [], "txs": []}
            r = await http.post(url, json={"orders": {"digests": [digest]}})
            assert r.json() == {"orders": []}
        # The same store, asked as of one lag later, has them.
        later = server.clock.now_ns() + lag_ms * NS_PER_MS
        archive = server.services.archive
        [order] = archive.answer({"orders": {"digests": [digest]}}, later)["orders"]
        assert (order["amount"], order["base_filled"]) == (str(8 * 10**15), str(5 * 10**15))
        matches = archive.answer({"matches": {"subaccounts": [me]}}, later)
        assert [m["digest"] for m in matches["matches"]] == [digest]
        assert matches["txs"][0]["submission_idx"] == matches["matches"][0]["submission_idx"]


def test_archive_lag_is_a_validated_knob() -> None:
    assert parse_profile("[archive]\nlag_ms = 250").archive.lag_ms == 250
    with pytest.raises(FaultProfileError):
        parse_profile("[archive]\nlag_ms = -1")
    with pytest.raises(FaultProfileError):
        parse_profile("[archive]\nlagms = 1")


def _subs(n: int) -> list[str]:
    return ["0x" + f"{i:064x}" for i in range(n)]


BAD_GETS = [
    "/v2/orderbook?depth=5",
    "/v2/orderbook?ticker_id=ETH-PERP_USDT0",
    "/v2/orderbook?ticker_id=ETH-PERP_USDT0&depth=0",
    "/v2/orderbook?ticker_id=ETH-PERP_USDT0&depth=101",
    "/v2/orderbook?ticker_id=ETH-PERP_USDT0&depth=1e9",
    "/v2/orderbook?ticker_id=DOGE-PERP_USDT0&depth=5",
    "/v2/pairs?market=options",
    "/archive/v2/trades",
    "/archive/v2/trades?ticker_id=ETH-PERP_USDT0&limit=501",
    "/archive/v2/trades?ticker_id=ETH-PERP_USDT0&max_trade_id=-1",
    "/v1/edge/query?type=cached_everything",
    "/v1/edge/query?type=time&id=x",
    "/v2/assets?" + "&".join(f"k{i}=1" for i in range(40)),
]
BAD_POSTS: list[tuple[str, Any]] = [
    ("/archive/v1", "not json"),
    ("/archive/v1", [1, 2]),
    ("/archive/v1", {"orders": {}, "matches": {}}),
    ("/archive/v1", {"events": {}}),
    ("/archive/v1", {"orders": []}),
    ("/archive/v1", {"matches": {"subaccounts": _subs(MAX_LIST + 1)}}),
    ("/archive/v1", {"orders": {"digests": _subs(MAX_LIST + 1)}}),
    ("/archive/v1", {"orders": {"digests": ["0x12"]}}),
    ("/archive/v1", {"orders": {"digests": _subs(1), "limit": 5}}),
    ("/archive/v1", {"matches": {"limit": MAX_LIMIT + 1}}),
    ("/archive/v1", {"matches": {"limit": 0}}),
    ("/archive/v1", {"matches": {"max_time": "soon"}}),
    ("/archive/v1", {"matches": {"product_ids": "4"}}),
    ("/archive/v1", {"matches": {"colour": "red"}}),
    ("/archive/v1", {"interest_and_funding": {}}),
    ("/archive/v1", {"interest_and_funding": {"subaccount": _subs(1)[0], "limit": 0}}),
    ("/v1/edge/query", {"type": "dance"}),
    ("/trigger/v1/query", {"type": "list_trigger_orders"}),
    ("/trigger/v1/query", {"type": "everything", "tx": {}}),
    ("/trigger/v1/execute", {"cancel_orders": {"tx": {}}}),
    ("/trigger/v1/execute", {"a": 1, "b": 2}),
]


@pytest.mark.asyncio
async def test_new_routes_refuse_bad_input_with_400_and_code_2000() -> None:
    async with running() as server, httpx.AsyncClient(timeout=WAIT_S) as http:
        root = _root(server.url)
        for path in BAD_GETS:
            r = await http.get(root + path)
            assert r.status_code == 400, (path, r.text)
            assert r.json()["error_code"] == 2000, (path, r.text)
        for path, body in BAD_POSTS:
            content = body if isinstance(body, str) else json.dumps(body)
            r = await http.post(root + path, content=content)
            assert r.status_code == 400, (path, body, r.text)
            assert r.json()["error_code"] == 2000, (path, r.text)
        assert server.stats["internal_errors"] == 0


@pytest.mark.asyncio
async def test_engine_extra_queries_validate_their_fields() -> None:
    me = make_signer().sender
    async with running() as server, client(server) as c:
        bad = [
            {"type": "fee_rates"},
            {"type": "fee_rates", "sender": "0x12"},
            {"type": "max_order_size", "sender": me, "product_id": 4, "price_x18": "1"},
            {
                "type": "max_order_size",
                "sender": me,
                "product_id": 99,
                "price_x18": "1",
                "direction": "long",
            },
            {
                "type": "max_order_size",
                "sender": me,
                "product_id": 4,
                "price_x18": "1",
                "direction": "sideways",
            },
        ]
        for params in bad:
            env = await c.query(**params)
            assert not env.ok, params
            assert env.error_code == 2000, (params, env)
        env = await c.query(type="fee_rates", sender=me)
        assert env.ok
        assert env.data["taker_fee_rates_x18"][ETH] == str(35 * 10**13)  # 3.5 bps
        assert env.data["maker_fee_rates_x18"][ETH] == str(10**14)  # 1 bp
        assert server.stats["internal_errors"] == 0


@pytest.mark.asyncio
async def test_trigger_orders_are_refused_with_4001() -> None:
    async with running() as server, client(server) as c:
        order = c.sign(ETH, "buy", "0.01", "3000", "default")
        r = await c.http.post(_root(server.url) + "/trigger/v1/execute", json=order.body())
        body = r.json()
        assert (r.status_code, body["status"], body["error_code"]) == (200, "failure", 4001)
        assert server.exchange.open_orders(make_signer().sender) == []


@pytest.mark.asyncio
async def test_public_trade_tape_counts_a_user_to_user_match_once() -> None:
    async with running(still(sim="spread_bps = 20")) as server:
        await _trade(server)
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            r = await http.get(
                _root(server.url) + "/archive/v2/trades",
                params={"ticker_id": "ETH-PERP_USDT0", "limit": 10},
            )
        trades = r.json()
        assert [(t["trade_type"], t["base_filled"]) for t in trades] == [("buy", 0.005)]


@pytest.mark.asyncio
async def test_subscriptions_per_connection_are_capped() -> None:

    subs = [{"type": "fill", "subaccount": s} for s in _subs(MAX_SUBS + 1)]
    async with running() as server, stream(server) as s:
        reply = await s.request({"method": "subscribe_multi", "streams": subs})
        assert isinstance(reply, StreamError)
        assert reply.code == 2000
        reply = await s.request({"method": "subscribe_multi", "streams": subs[:MAX_SUBS]})
        assert isinstance(reply, StreamReply)
        reply = await s.request({"method": "subscribe", "stream": subs[MAX_SUBS]})
        assert isinstance(reply, StreamError)
        assert reply.code == 2000
        listed = await s.request({"method": "list"})
        assert isinstance(listed, StreamReply)


@pytest.mark.asyncio
async def test_edge_cached_reads_and_v2_symbols() -> None:
    async with running() as server, httpx.AsyncClient(timeout=WAIT_S) as http:
        root = _root(server.url)
        r = await http.post(root + "/v1/edge/query", json={"type": "cached_prices"})
        body = r.json()
        assert (body["status"], body["request_type"]) == ("success", "query_cached_prices")
        assert [p["product_id"] for p in body["data"]["market_prices"]] == [4, 8]
        r = await http.get(root + "/v1/edge/query", params={"type": "time", "id": "9"})
        assert (r.json()["method"], r.json()["id"]) == ("time", 9)
        r = await http.get(root + "/archive/v2/symbols", params={"product_ids": "4"})
        assert list(r.json()) == ["ETH-PERP"]
        r = await http.get(root + "/archive/v2/symbols", params={"product_ids": "4,x"})
        assert r.status_code == 400


@pytest.mark.asyncio
async def test_book_depth_chain_shows_a_lost_event() -> None:
    """With pushes dropped, some event's last_max_timestamp names an event this client
    never got: the gap a client (ccxt) detects. Without drops the chain is unbroken."""

    async def chain(profile: str) -> list[dict[str, Any]]:
        async with (
            running(profile, seed=3) as server,
            connect(server.ws_url, open_timeout=WAIT_S) as ws,
        ):
            stream = {"type": "book_depth", "product_id": ETH}
            await ws.send(json.dumps({"method": "subscribe", "id": 1, "stream": stream}))
            events: list[dict[str, Any]] = []
            while len(events) < 12:
                frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
                if frame.get("type") == "book_depth":
                    events.append(frame)
            return events

    def gaps(events: list[dict[str, Any]]) -> int:
        return sum(b["last_max_timestamp"] != a["max_timestamp"] for a, b in pairwise(events))

    # Market steps every 20 ms (not the default 100): the 12 events (about 24 steps with
    # half of them dropped) arrive in half a second.
    moving = "[market]\nvolatility_bps_per_sqrt_s = 50\n[sim]\nmarket_step_ms = 20\n"
    assert gaps(await chain(moving)) == 0
    assert gaps(await chain(moving + "[ws]\ndrop = 0.5\n")) > 0
