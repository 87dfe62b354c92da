"""A loopback `VenueServer` that counts every request to its execute endpoint, and a
PaperVenue over it with its events collected. Waits are bounded and re-checked as
events arrive from real sockets, never sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from adapters.paper.source import NadoMarketSource
from adapters.paper.source import PaperSettings
from adapters.paper.venue import PaperVenue
from adapters.sim.faults import parse_profile
from adapters.sim.server import ServerOptions
from adapters.sim.server import VenueServer
from engine.core.clock import WallClock
from engine.core.events import Event

PAIR = ("ETH-PERP", "SOL-PERP")
ETH, SOL = 4, 8
WAIT_S = 10.0


class CountingServer(VenueServer):
    """`dnpair venue serve` counting execute requests twice over: every hit on the
    `/v1/execute` route, and every body that reaches the gateway's execute logic by any
    transport."""

    route_hits = 0
    gateway_calls = 0

    @property
    def executes(self) -> int:
        return self.route_hits + self.gateway_calls

    async def start(self) -> None:
        route = self._execute
        logic = self.gateway.execute

        async def counting_route(request: web.Request) -> web.StreamResponse:
            self.route_hits += 1
            return await route(request)

        def counting_logic(raw: bytes | str) -> Any:
            self.gateway_calls += 1
            return logic(raw)

        self._execute = counting_route  # type: ignore[method-assign]
        self.gateway.execute = counting_logic  # type: ignore[method-assign]
        await super().start()


@asynccontextmanager
async def serving(profile: str = "", seed: int = 1) -> AsyncIterator[CountingServer]:
    server = CountingServer(ServerOptions(seed=seed, profile=parse_profile(profile)))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class PaperRig:
    def __init__(self, server: VenueServer, **kw: Any) -> None:
        self.clock = WallClock()
        settings = PaperSettings(gateway_url=server.url, pair=PAIR, **kw)
        self.source = NadoMarketSource(settings, clock=self.clock, unix_ns=time.time_ns)
        self.venue = PaperVenue(self.source, self.clock, seed=1)
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def _sink(self, ev: Event) -> None:
        self.events.append(ev)
        self._changed.set()

    async def start(self) -> None:
        await self.venue.start(self._sink)

    async def wait_for(self, pred: Callable[[], Any], within: float = WAIT_S) -> Any:
        async def loop() -> Any:
            while True:
                got = pred()
                if got:
                    return got
                self._changed.clear()
                # re-checked when an event arrives, and every 50 ms for venue-side state
                # (snapshots, stats) that no event announces
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)

        return await asyncio.wait_for(loop(), within)

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@asynccontextmanager
async def paper(server: VenueServer, **kw: Any) -> AsyncIterator[PaperRig]:
    rig = PaperRig(server, **kw)
    await rig.start()
    try:
        yield rig
    finally:
        await rig.venue.close()
