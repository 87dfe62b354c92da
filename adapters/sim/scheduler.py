"""Timers on the engine clock, all cancelled by `close()`.

Only `clock.now_ns()` and `clock.call_later()` are used, so the same code runs on a
VirtualClock (as fast as the CPU allows) and on a WallClock (inside the asyncio loop).
"""

from __future__ import annotations

from collections.abc import Callable

from engine.core.clock import Clock
from engine.core.clock import TimerHandle

__all__ = ["Scheduler"]


class Scheduler:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.closed = False
        self._timers: dict[int, TimerHandle] = {}
        self._key = 0

    def now(self) -> int:
        return self.clock.now_ns()

    def later(self, delay_ns: int, fn: Callable[[], None]) -> None:
        self._key += 1
        key = self._key

        def run() -> None:
            self._timers.pop(key, None)
            if not self.closed:
                fn()

        self._timers[key] = self.clock.call_later(max(0, delay_ns), run)

    def at(self, due_ns: int, fn: Callable[[], None]) -> None:
        self.later(due_ns - self.clock.now_ns(), fn)

    def close(self) -> None:
        self.closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
