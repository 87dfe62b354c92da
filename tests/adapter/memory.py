"""The Nado adapter against a `VenueServer` in memory, everything on one virtual clock.

No socket and no wall-clock wait: REST goes through `MemoryTransport` (httpx's transport
seam), the stream through `MemoryWebSocket`; the server, the adapter and the engine share
one `VirtualClock`, and `until` moves it from timer to timer, letting every runnable task
finish between two timers. A run is therefore the same on a busy machine as on a quiet
one. The rigs have the loopback rigs' API (support.py), so a test moves over by changing
its `serving`/`rig`/`engine_rig` imports; a few loopback tests stay as smoke tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from adapters.nado.signing import Secret
from adapters.nado.venue import NadoVenue
from adapters.sim.faults import parse_profile
from adapters.sim.server import ServerOptions
from adapters.sim.server import VenueServer
from adapters.sim.server.memory import MemoryTransport
from adapters.sim.server.memory import MemoryWebSocket
from engine.core.clock import VirtualClock
from engine.core.events import Event
from tests.adapter.support import KEY
from tests.adapter.support import WAIT_S
from tests.adapter.support import EngineRig
from tests.adapter.support import Rig
from tests.adapter.support import settings

S = 1_000_000_000
RTT_NS = 1_000_000  # the in-memory network's round trip (virtual)
WALL_GUARD_S = 60.0  # a bug that never settles fails instead of hanging


async def settle() -> None:
    """Run every task that can run now (no timer is due until the clock moves).

    Reads the loop's ready queue, a CPython detail, to know when nothing is runnable;
    without it, a fixed number of turns."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    quiet = 0
    for _ in range(100_000):
        await asyncio.sleep(0)
        if ready is None:
            quiet += 1
            if quiet >= 50:
                return
        elif not ready:
            quiet += 1
            if quiet >= 2:
                return
        else:
            quiet = 0
    raise AssertionError("the loop never settled")


@asynccontextmanager
async def serving(profile: str = "", seed: int = 1, **kwargs: Any) -> AsyncIterator[VenueServer]:
    """A VenueServer on a fresh VirtualClock, never listening on a socket."""
    clock = VirtualClock()
    server = VenueServer(
        ServerOptions(seed=seed, profile=parse_profile(profile), **kwargs), clock=clock
    )
    server.start_clocks()
    try:
        yield server
    finally:
        await server.stop()


def _virtual(server: VenueServer) -> VirtualClock:
    clock = server.clock
    assert isinstance(clock, VirtualClock), "memory rigs need a server on a VirtualClock"
    return clock


class MemoryRig(Rig):
    """A started NadoVenue talking to `server` in memory, on the server's virtual clock."""

    def __init__(self, server: VenueServer, **kw: Any) -> None:
        self.server = server
        self.vclock = clock = _virtual(server)
        self.clock = clock  # type: ignore[assignment]  # Rig's clock, virtual here
        self.memory_ws = MemoryWebSocket(server)
        self.transport = MemoryTransport(server, rtt_ns=RTT_NS)
        self.venue = NadoVenue(
            settings(server, **kw),
            Secret(KEY),
            clock=clock,
            unix_ns=lambda: server.wire.unix_ns(clock.now_ns()),
            transport=self.transport,
            connect=self.memory_ws.connect,
        )
        self.events: list[Event] = []
        self.stamps: list[int] = []  # virtual ns of each event's arrival
        self._changed = asyncio.Event()

    def sink(self, ev: Event) -> None:
        self.events.append(ev)
        self.stamps.append(self.clock.now_ns())
        self._changed.set()

    async def start(self) -> None:
        async with asyncio.timeout(WALL_GUARD_S):
            task = asyncio.get_running_loop().create_task(self.venue.start(self.sink))
            while not task.done():
                await self._step(None)
            await task

    async def _step(self, deadline_ns: int | None) -> bool:
        """Settle, then fire the next timer (not past `deadline_ns`). False: none left."""
        await settle()
        clock = self.vclock
        due = clock.next_due_ns()
        if due is None or (deadline_ns is not None and due > deadline_ns):
            return False
        clock.advance_to(due)
        return True

    async def until(self, pred: Callable[[], bool], within: float = WAIT_S) -> None:
        """Move virtual time, timer by timer, until `pred()` holds; at most `within`
        virtual seconds (TimeoutError past them)."""
        deadline = self.clock.now_ns() + int(within * S)
        async with asyncio.timeout(WALL_GUARD_S):
            while True:
                await settle()
                if pred():
                    return
                if not await self._step(deadline):
                    raise TimeoutError(f"not within {within} virtual s")

    async def run(self, seconds: float) -> None:
        """Let `seconds` of virtual time pass, everything due in them running."""
        target = self.clock.now_ns() + int(seconds * S)
        async with asyncio.timeout(WALL_GUARD_S):
            while await self._step(target):
                pass
            await settle()
            if self.vclock.now_ns() < target:
                self.vclock.advance_to(target)
            await settle()


class MemoryEngineRig(MemoryRig, EngineRig):
    """The in-memory venue driven by an Engine on the same virtual clock, running the
    connection machine (EngineRig's wiring)."""

    def __init__(self, server: VenueServer, conn: dict[str, Any] | None = None, **kw: Any):
        MemoryRig.__init__(self, server, **kw)
        from engine.core.loop import Engine

        self.engine = Engine(self.clock)
        self.conn = {"product_ids": [4, 8], "seed": 5, **(conn or {})}
        self.intents = []
        self._wake = asyncio.Event()
        self._driver = None

    def sink(self, ev: Event) -> None:
        MemoryRig.sink(self, ev)
        self.engine.submit(ev)

    async def start(self) -> None:
        await MemoryRig.start(self)
        self.engine.on_inbox = self._wake.set
        from machines.connection import ConnectionMachine

        self.machine = self.engine.spawn(ConnectionMachine, "connection", **self.conn)
        first = self.engine._finish_step()
        self._driver = asyncio.get_running_loop().create_task(self._drive(first))


@asynccontextmanager
async def archive_for(server: VenueServer) -> AsyncIterator[str]:
    """The venue's own archive route (`POST /archive/v1`, services.py), reached through
    the same in-memory transport. Yields its URL."""
    yield server.url.removesuffix("/v1") + "/archive/v1"


@asynccontextmanager
async def rig(server: VenueServer, **kw: Any) -> AsyncIterator[MemoryRig]:
    r = MemoryRig(server, **kw)
    await r.start()
    try:
        yield r
    finally:
        await r.venue.close()


@asynccontextmanager
async def engine_rig(
    server: VenueServer, conn: dict[str, Any] | None = None, **kw: Any
) -> AsyncIterator[MemoryEngineRig]:
    r = MemoryEngineRig(server, conn, **kw)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


__all__ = [
    "MemoryEngineRig",
    "MemoryRig",
    "archive_for",
    "engine_rig",
    "rig",
    "serving",
    "settle",
]
