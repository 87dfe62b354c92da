"""The Nado adapter against a loopback `VenueServer`, with or without an engine: the few
`loopback` smoke tests use these; the rest of tests/adapter runs the same rigs in memory
on the virtual clock (memory.py).

`Rig` is a NadoVenue with a throwaway key, its events collected; `waiting` bounds every
wait (a condition re-checked as events arrive from real sockets), never a sleep.
`EngineRig` adds an `Engine` on the wall clock with the connection machine only, so the
ledger and the machine's audits work as in `dnpair run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import attrs

from adapters.nado.discovery import Expectations
from adapters.nado.ratelimit import LimiterConfig
from adapters.nado.signing import Secret
from adapters.nado.stream import StreamConfig
from adapters.nado.venue import NadoSettings
from adapters.nado.venue import NadoVenue
from adapters.sim.faults import parse_profile
from adapters.sim.server import SIM_CHAIN_ID
from adapters.sim.server import SIM_ENDPOINT
from adapters.sim.server import ServerOptions
from adapters.sim.server import VenueServer
from engine.core.clock import WallClock
from engine.core.events import Event
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import StreamConnect
from engine.core.loop import Engine
from machines.connection import ConnectionMachine

KEY = "0x" + "11" * 32
PAIR = ("ETH-PERP", "SOL-PERP")
ETH, SOL = 4, 8
WAIT_S = 5.0
D = Decimal


class ShiftClock(WallClock):
    """Wall time plus an offset the test can move forward: the server's fault windows
    (seconds since it started) begin when the test says, without waiting for them."""

    def __init__(self) -> None:
        super().__init__()
        self.offset_ns = 0

    def now_ns(self) -> int:
        return super().now_ns() + self.offset_ns

    def jump(self, seconds: float) -> None:
        self.offset_ns += int(seconds * 1_000_000_000)


@asynccontextmanager
async def serving(
    profile: str = "", seed: int = 1, clock: WallClock | None = None, **kwargs: Any
) -> AsyncIterator[VenueServer]:
    server = VenueServer(
        ServerOptions(seed=seed, profile=parse_profile(profile), **kwargs), clock=clock
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def settings(server: VenueServer, **kw: Any) -> NadoSettings:
    base: dict[str, Any] = {
        "gateway_url": server.url,
        "pair": PAIR,
        "expect": Expectations(chain_id=SIM_CHAIN_ID, endpoint_addr=SIM_ENDPOINT),
        "stream": StreamConfig(open_timeout_s=3.0, app_ping_s=1.0, silence_s=5.0),
    }
    base.update(kw)
    return NadoSettings(**base)


class Rig:
    """A started NadoVenue; `events` is everything it emitted, in order."""

    def __init__(self, server: VenueServer, **kw: Any) -> None:
        self.server = server
        self.clock = WallClock()
        self.venue = NadoVenue(
            settings(server, **kw), Secret(KEY), clock=self.clock, unix_ns=time.time_ns
        )
        self.events: list[Event] = []
        self.stamps: list[int] = []  # monotonic ns of each event's arrival
        self._changed = asyncio.Event()

    def sink(self, ev: Event) -> None:
        self.events.append(ev)
        self.stamps.append(time.monotonic_ns())
        self._changed.set()

    async def start(self) -> None:
        await self.venue.start(self.sink)

    def submit(self, *intents: Intent) -> None:
        for intent in intents:
            self.venue.submit(intent)

    async def until(self, pred: Callable[[], bool], within: float = WAIT_S) -> None:
        """Wait until `pred()` holds, re-checked as events arrive (and every 20 ms, for
        state that changes without an event); at most `within` s."""
        async with asyncio.timeout(within):
            while not pred():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.02)

    def of(self, cls: type[Any], **match: Any) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, cls) and all(getattr(e, k) == v for k, v in match.items())
        ]

    async def wait_for(self, cls: type[Any], within: float = WAIT_S, **match: Any) -> Any:
        await self.until(lambda: bool(self.of(cls, **match)), within)
        return self.of(cls, **match)[0]

    async def connect_stream(self) -> None:
        from engine.core.events import ConnectionChanged

        before = len(self.of(ConnectionChanged))
        self.submit(StreamConnect(attempt=1))
        await self.until(lambda: len(self.of(ConnectionChanged)) > before)
        assert self.of(ConnectionChanged)[-1].state == "connected"

    @property
    def sender(self) -> str:
        assert self.venue.signer is not None
        return self.venue.signer.sender

    def venue_position(self, pid: int) -> Decimal:
        return self.server.exchange.position(self.sender, pid).qty

    def open_at_venue(self) -> list[Any]:
        return self.server.exchange.open_orders(self.sender, [ETH, SOL])


@asynccontextmanager
async def archive_for(server: VenueServer) -> AsyncIterator[str]:
    """A stand-in for Nado's archive (indexer) over loopback, answering `orders` by digest
    from the venue's ground truth (`dnpair venue serve` has no archive). Yields its URL."""
    from aiohttp import web

    def x18(value: Decimal) -> str:
        return str(int(value * 10**18))

    async def orders(request: web.Request) -> web.Response:
        body = await request.json()
        out = []
        for digest in body["orders"]["digests"]:
            order = server.exchange.order(digest)
            if order is None:
                continue
            sign = 1 if order.side == "buy" else -1
            out.append(
                {
                    "digest": digest,
                    "product_id": order.product_id,
                    "amount": x18(sign * order.request.qty),
                    "base_filled": x18(sign * order.filled),
                    "timestamp": str(server.wire.unix_s(order.placed_ns)),
                }
            )
        return web.json_response({"orders": out})

    app = web.Application()
    app.router.add_post("/archive/v1", orders)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/archive/v1"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def rig(server: VenueServer, **kw: Any) -> AsyncIterator[Rig]:
    r = Rig(server, **kw)
    await r.start()
    try:
        yield r
    finally:
        await r.venue.close()


class EngineRig(Rig):
    """The venue driven by an Engine (wall clock) running the connection machine."""

    def __init__(self, server: VenueServer, conn: dict[str, Any] | None = None, **kw: Any):
        super().__init__(server, **kw)
        self.engine = Engine(self.clock)
        self.conn = {"product_ids": [ETH, SOL], "seed": 5, **(conn or {})}
        self.intents: list[Intent] = []
        self._wake = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None

    def sink(self, ev: Event) -> None:
        super().sink(ev)
        self.engine.submit(ev)

    async def start(self) -> None:
        await super().start()
        self.engine.on_inbox = self._wake.set
        self.machine = self.engine.spawn(ConnectionMachine, "connection", **self.conn)
        first = self.engine._finish_step()
        self._driver = asyncio.get_running_loop().create_task(self._drive(first))

    async def _drive(self, first: list[Intent]) -> None:
        for intent in first:
            self.send(intent)
        while True:
            await self._wake.wait()
            self._wake.clear()
            for intent in self.engine.drain():
                self.send(intent)
            self._changed.set()

    def send(self, intent: Intent) -> None:
        self.intents.append(intent)
        self.venue.submit(intent)

    def place(self, intent: PlaceOrder) -> None:
        """As a machine would: journal and ledger first, then the venue."""
        self.engine._emit("test", intent)
        for out in self.engine._finish_step():
            self.send(out)

    def state(self) -> str:
        return self.engine.ledger.state_of("connection")[0]

    def states_seen(self) -> list[str]:
        return [
            r.data["to"]
            for r in self.engine.journal.records()
            if r.kind == "transition" and r.machine == "connection" and r.data["to"] is not None
        ]

    def notes(self, text: str) -> list[dict[str, Any]]:
        return [
            r.data
            for r in self.engine.journal.records()
            if r.kind == "note" and str(r.data.get("note", "")).startswith(text)
        ]

    async def stop(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            await asyncio.gather(self._driver, return_exceptions=True)
        await self.venue.close()


@asynccontextmanager
async def engine_rig(
    server: VenueServer, conn: dict[str, Any] | None = None, **kw: Any
) -> AsyncIterator[EngineRig]:
    r = EngineRig(server, conn, **kw)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


def limiter(**windows: Any) -> LimiterConfig:
    return attrs.evolve(LimiterConfig(), **windows)


__all__ = [
    "ETH",
    "KEY",
    "PAIR",
    "SOL",
    "WAIT_S",
    "D",
    "EngineRig",
    "Rig",
    "ShiftClock",
    "archive_for",
    "engine_rig",
    "limiter",
    "rig",
    "serving",
    "settings",
]
