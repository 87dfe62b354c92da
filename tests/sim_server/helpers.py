"""A loopback VenueServer inside the test's event loop, and a small Nado client for it.

The client signs with the adapter's `Signer` (a throwaway key) and parses every reply
with the adapter's own parsers (`adapters.nado.queries`, `adapters.nado.mapping`): if the
server's shapes drift from what the adapter reads, these tests fail. Waits are bounded
reads on real sockets (`asyncio.wait_for`), never sleeps.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
from websockets.asyncio.client import connect

from adapters.nado.mapping import StreamError
from adapters.nado.mapping import StreamFrame
from adapters.nado.mapping import StreamReply
from adapters.nado.mapping import order_amount_x18
from adapters.nado.mapping import order_price_x18
from adapters.nado.mapping import parse_stream_frame
from adapters.nado.queries import Envelope
from adapters.nado.queries import parse_envelope
from adapters.nado.signing import Secret
from adapters.nado.signing import SignedOrder
from adapters.nado.signing import Signer
from adapters.nado.timing import Timing
from adapters.nado.wire import loads
from adapters.sim.faults import parse_profile
from adapters.sim.server import SIM_CHAIN_ID
from adapters.sim.server import SIM_ENDPOINT
from adapters.sim.server import ServerOptions
from adapters.sim.server import VenueServer

KEY = "0x" + "11" * 32
OTHER_KEY = "0x" + "22" * 32
ETH, SOL = 4, 8
TICK = {ETH: Decimal("0.1"), SOL: Decimal("0.01")}
SIZE = {ETH: Decimal("0.001"), SOL: Decimal("0.01")}
STILL = "[market]\nvolatility_bps_per_sqrt_s = 0\n[sim]\nmaker_fill_rate_per_s = 0\n"


def still(**sections: str) -> str:
    """A profile with still prices and no maker flow, plus `section="key = value"` lines."""
    extra = {"market": "volatility_bps_per_sqrt_s = 0", "sim": "maker_fill_rate_per_s = 0"}
    for name, lines in sections.items():
        extra[name] = f"{extra[name]}\n{lines}" if name in extra else lines
    return "".join(f"[{name}]\n{lines}\n" for name, lines in extra.items())


WAIT_S = 5.0  # bound on any single wait for a frame or an answer
TIMING = Timing()


def make_signer(key: str = KEY) -> Signer:
    return Signer(Secret(key), chain_id=SIM_CHAIN_ID, endpoint_addr=SIM_ENDPOINT)


@asynccontextmanager
async def running(profile: str = STILL, seed: int = 1, **kwargs: Any) -> AsyncIterator[VenueServer]:
    server = VenueServer(ServerOptions(seed=seed, profile=parse_profile(profile), **kwargs))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Client:
    """REST for one signer against one server; every reply parsed by the adapter's code."""

    def __init__(self, server: VenueServer, signer: Signer | None = None) -> None:
        self.server = server
        self.signer = signer or make_signer()
        self.http = httpx.AsyncClient(base_url=server.url, timeout=WAIT_S)
        self._tag = 0

    async def aclose(self) -> None:
        await self.http.aclose()

    async def post(self, path: str, body: Any) -> httpx.Response:
        content = body if isinstance(body, bytes | str) else json.dumps(body)
        return await self.http.post(path, content=content)

    async def query(self, **params: Any) -> Envelope:
        r = await self.post("/query", params)
        return parse_envelope(loads(r.text))

    async def execute(self, body: Any) -> tuple[int, Envelope]:
        r = await self.post("/execute", body)
        return r.status_code, parse_envelope(loads(r.text))

    def sign(
        self,
        pid: int,
        side: str,
        qty: Decimal | str,
        price: Decimal | str,
        tif: str = "ioc",
        *,
        reduce_only: bool = False,
    ) -> SignedOrder:
        self._tag += 1
        now_ms = int(time.time() * 1000)
        inc = int(SIZE[pid] * 10**18)
        return self.signer.sign_order(
            pid,
            price_x18=order_price_x18(Decimal(price), int(TICK[pid] * 10**18)),
            amount_x18=order_amount_x18(side, Decimal(qty), inc),
            expiration=TIMING.expiration(now_ms // 1000, tif),
            nonce=TIMING.nonce(now_ms, self._tag),
            tif=tif,
            reduce_only=reduce_only,
            client_id=self._tag,
        )

    async def place(self, order: SignedOrder) -> Envelope:
        _, env = await self.execute(order.body())
        return env

    async def cancel(self, pids: list[int], digests: list[str] | None) -> Envelope:
        nonce = TIMING.nonce(int(time.time() * 1000), 0)
        signed = self.signer.sign_cancel(pids, digests, nonce=nonce)
        _, env = await self.execute(signed.body())
        return env

    async def bbo(self, pid: int) -> tuple[Decimal, Decimal]:
        env = await self.query(type="market_price", product_id=pid)
        assert env.ok, env
        return _x18(env.data["bid_x18"]), _x18(env.data["ask_x18"])


def _x18(text: str) -> Decimal:
    return Decimal(int(text)) / 10**18


class Stream:
    """One `/v1/subscribe` connection; frames decoded by `adapters.nado.mapping`."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[StreamFrame] = []
        self.raw: list[dict[str, Any]] = []
        self._id = 100

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(obj))

    async def recv(self, within: float = WAIT_S) -> StreamFrame:
        text = await asyncio.wait_for(self.ws.recv(), within)
        obj = loads(text)
        self.raw.append(obj)
        frame = parse_stream_frame(obj)
        self.seen.append(frame)
        return frame

    async def until(
        self, pred: Callable[[StreamFrame], bool], within: float = WAIT_S
    ) -> StreamFrame:
        """The first frame matching `pred`, within `within` seconds in all."""

        async def scan() -> StreamFrame:
            while True:
                frame = await self.recv(within)
                if pred(frame):
                    return frame

        return await asyncio.wait_for(scan(), within)

    async def request(self, obj: dict[str, Any]) -> StreamFrame:
        """Send a control message and return the reply carrying its id."""
        self._id += 1
        rid = self._id
        await self.send({**obj, "id": rid})
        return await self.until(lambda f: getattr(f, "id", None) == rid and _is_reply(f))

    async def authenticate(self, signer: Signer) -> StreamFrame:
        expiry = TIMING.stream_auth_expiration(int(time.time() * 1000))
        self._id += 1
        rid = self._id
        await self.send(signer.stream_auth(expiry, request_id=rid))
        return await self.until(lambda f: getattr(f, "id", None) == rid and _is_reply(f))

    async def subscribe(self, **stream: Any) -> StreamFrame:
        return await self.request({"method": "subscribe", "stream": stream})


def _is_reply(frame: StreamFrame) -> bool:
    return isinstance(frame, StreamReply | StreamError)


@asynccontextmanager
async def stream(server: VenueServer) -> AsyncIterator[Stream]:
    async with connect(server.ws_url, open_timeout=WAIT_S) as ws:
        yield Stream(ws)


@asynccontextmanager
async def client(server: VenueServer, signer: Signer | None = None) -> AsyncIterator[Client]:
    c = Client(server, signer)
    try:
        yield c
    finally:
        await c.aclose()
