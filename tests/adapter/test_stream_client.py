"""The stream client against a scripted WebSocket server on loopback: malformed frames are
counted and skipped (the reader lives on), permessage-deflate is negotiated, pings go out,
a silent socket is reported `degraded`, a refused authentication is a failed attempt, and
every attempt is answered exactly once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve

from adapters.nado.mapping import StreamFrame
from adapters.nado.stream import StreamClient
from adapters.nado.stream import StreamConfig
from engine.core.clock import WallClock
from engine.core.events import BboUpdated
from tests.sim_server.helpers import make_signer

pytestmark = [pytest.mark.asyncio, pytest.mark.loopback]

SUBS = [{"type": "best_bid_offer", "product_id": 4}]
X18 = 10**18
GOOD_BBO = {
    "type": "best_bid_offer",
    "timestamp": "0",
    "product_id": 4,
    "bid_price": str(3000 * X18),
    "bid_qty": str(X18),
    "ask_price": str(3001 * X18),
    "ask_qty": str(X18),
}
JUNK: list[str | bytes] = [
    "not json",
    '{"type":"fill","price":NaN}',
    '{"type":"mystery","product_id":4}',
    b"\xff\xfe\x00",
    json.dumps({**GOOD_BBO, "bid_price": "-1"}),
    '{"type":"best_bid_offer","product_id":4,"product_id":8}',
    "[1, 2, 3]",
]


class Script:
    """What the fake gateway does after the handshake."""

    def __init__(self, *, refuse_auth: bool = False, junk: bool = True, silent: bool = False):
        self.refuse_auth = refuse_auth
        self.junk = junk
        self.silent = silent
        self.extensions: list[str] = []
        self.received: list[dict[str, Any]] = []

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        assert ws.response is not None
        self.extensions.append(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
        async for raw in ws:
            msg = json.loads(raw)
            self.received.append(msg)
            method, rid = msg.get("method"), msg.get("id")
            if method == "authenticate" and self.refuse_auth:
                await ws.send(json.dumps({"status": "failure", "error": "bad sig", "id": rid}))
            elif method in ("authenticate", "subscribe"):
                await ws.send(json.dumps({"result": None, "id": rid}))
                if method == "subscribe" and self.junk:
                    for frame in JUNK:
                        await ws.send(frame)
                    stamp = str(time.time_ns())
                    await ws.send(json.dumps({**GOOD_BBO, "timestamp": stamp}))
            elif method == "ping" and not self.silent:
                result = {"method": "pong", "server_time": "1", "client_time": "1"}
                await ws.send(json.dumps({"result": result, "id": rid}))


@asynccontextmanager
async def gateway(script: Script) -> AsyncIterator[str]:
    async with serve(script.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/subscribe"


class Seen:
    def __init__(self) -> None:
        self.frames: list[StreamFrame] = []
        self.states: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    def frame(self, f: StreamFrame) -> None:
        self.frames.append(f)
        self.changed.set()

    def state(self, state: str, detail: str) -> None:
        self.states.append((state, detail))
        self.changed.set()

    async def until(self, pred: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not pred():
                self.changed.clear()
                await self.changed.wait()


def client(url: str, seen: Seen, **config: Any) -> StreamClient:
    return StreamClient(
        url,
        make_signer(),
        SUBS,
        seen.frame,
        seen.state,
        clock=WallClock(),
        unix_ms=lambda: time.time_ns() // 1_000_000,
        config=StreamConfig(open_timeout_s=2.0, **config),
    )


async def test_malformed_frames_are_counted_and_skipped() -> None:
    script = Script()
    seen = Seen()
    async with gateway(script) as url:
        c = client(url, seen)
        c.connect(1)
        await seen.until(lambda: any(isinstance(f, BboUpdated) for f in seen.frames))
        assert seen.states[0][0] == "connected"
        assert c.stats["malformed"] == len(JUNK)
        assert c.connected  # the reader lived on
        assert [type(f).__name__ for f in seen.frames] == ["BboUpdated"]
        assert "permessage-deflate" in script.extensions[0]
        assert [m["method"] for m in script.received[:2]] == ["authenticate", "subscribe"]
        auth = script.received[0]
        expiry = int(auth["tx"]["expiration"])  # milliseconds, at most 100 s ahead
        assert 0 < expiry - time.time_ns() // 1_000_000 <= 100_000
        await c.close()
        assert [s for s, _ in seen.states] == ["connected"]  # a close we asked for: silent


async def test_pings_go_out_and_a_silent_socket_is_reported_degraded() -> None:
    assert StreamConfig().ping_interval_s <= 30  # protocol pings, Nado drops at 30 s
    script = Script(junk=False, silent=True)
    seen = Seen()
    async with gateway(script) as url:
        c = client(url, seen, app_ping_s=0.2, silence_s=0.6)
        c.connect(1)
        await seen.until(lambda: [s for s, _ in seen.states] == ["connected", "degraded"], 3)
        assert any(m.get("method") == "ping" for m in script.received)
        assert c.stats["silences"] == 1
        await c.close()


async def test_refused_authentication_is_a_failed_attempt() -> None:
    seen = Seen()
    async with gateway(Script(refuse_auth=True)) as url:
        c = client(url, seen)
        c.connect(1)
        await seen.until(lambda: bool(seen.states))
        assert seen.states[0][0] == "failed"
        assert "refused" in seen.states[0][1]
        assert not c.connected
        await c.close()


async def test_every_attempt_is_answered_once() -> None:
    seen = Seen()
    c = client("ws://127.0.0.1:9/v1/subscribe", seen)  # nothing listens on port 9
    c.connect(1)
    await seen.until(lambda: len(seen.states) == 1)
    assert seen.states[0][0] == "failed"
    async with gateway(Script(junk=False)) as url:
        c.url = url
        c.connect(2)
        c.connect(3)  # replaces attempt 2 before it answers: only 3 answers
        await seen.until(lambda: len(seen.states) == 2)
        assert seen.states[1][0] == "connected"
        assert "attempt 3" in seen.states[1][1]
        assert c.epoch == 1
        await c.close()
    assert len(seen.states) == 2
