"""Timers on the engine clock that fire strictly in (due time, arming order).

The loop's own timers order equal deadlines arbitrarily, and two deadlines computed
from separate clock reads can swap by a few nanoseconds. The push stream relies on
"armed earlier, due no later ⇒ delivered earlier" (as over TCP), so the server keeps
its own heap and holds only one loop timer, for the earliest entry.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable

from engine.core.clock import Clock
from engine.core.clock import TimerHandle

__all__ = ["OrderedTimers"]

log = logging.getLogger("dnpair.venue")


class OrderedTimers:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.closed = False
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        self._handle: TimerHandle | None = None
        self._armed_due: int | None = None

    def now(self) -> int:
        return self.clock.now_ns()

    def later(self, delay_ns: int, fn: Callable[[], None]) -> None:
        self.at(self.now() + max(0, delay_ns), fn)

    def at(self, due_ns: int, fn: Callable[[], None]) -> None:
        if self.closed:
            return
        self._seq += 1
        heapq.heappush(self._heap, (due_ns, self._seq, fn))
        self._arm()

    def close(self) -> None:
        self.closed = True
        self._heap.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        if self.closed or not self._heap:
            return
        due = self._heap[0][0]
        if self._handle is not None and self._armed_due is not None and self._armed_due <= due:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._armed_due = due
        self._handle = self.clock.call_later(due - self.now(), self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_due = None
        now = self.now()
        while self._heap and self._heap[0][0] <= now and not self.closed:
            _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # one bad callback must not stop the market or the pushes
                log.exception("venue timer callback failed")
        self._arm()
