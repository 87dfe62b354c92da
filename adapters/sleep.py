"""Waiting on an engine clock: the wall clock's timers are the loop's, a virtual clock's
fire when the test (or the virtual driver) moves time. The Nado adapter's waits and the
venue server's go this way, so the same code runs on both clocks (in memory:
adapters/sim/server/memory.py, tests/adapter/memory.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from collections.abc import Callable

from engine.core.clock import Clock

__all__ = ["SleepNs", "clock_sleep", "sleeper"]

SleepNs = Callable[[int], Awaitable[None]]


async def clock_sleep(clock: Clock, ns: int) -> None:
    """Return once `ns` have passed on `clock`."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    handle = clock.call_later(max(ns, 0), wake)
    try:
        await fut
    finally:
        handle.cancel()


def sleeper(clock: Clock) -> SleepNs:
    """`clock_sleep` bound to `clock`."""

    async def sleep(ns: int) -> None:
        await clock_sleep(clock, ns)

    return sleep
