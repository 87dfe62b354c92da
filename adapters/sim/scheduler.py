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
        self.now: Callable[[], int] = clock.now_ns  # the clock's own: one call, not two

    def later(self, delay_ns: int, fn: Callable[[], None]) -> int:
        """Run `fn` after `delay_ns`; returns the timer's key for `cancel`."""
        # Both clocks fire a delay <= 0 at once, as "now" (no clamp needed here).
        key = self._key = self._key + 1
        timers = self._timers

        def run() -> None:
            timers.pop(key, None)
            if not self.closed:
                fn()

        timers[key] = self.clock.call_later(delay_ns, run)
        return key

    def cancel(self, key: int) -> None:
        """Cancel a timer `later` armed (nothing if it already ran)."""
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def at(self, due_ns: int, fn: Callable[[], None]) -> None:
        self.later(due_ns - self.clock.now_ns(), fn)

    def close(self) -> None:
        self.closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
