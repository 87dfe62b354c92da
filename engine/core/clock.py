"""Engine clocks. The engine is the only place that reads time.

Time is integer nanoseconds everywhere so that journal timestamps replay exactly.
`WallClock` is monotonic and schedules through the running asyncio loop;
`VirtualClock` is driven by hand (tests, chaos, replay, the sim on simulated time)
and fires timers in (due time, sequence) order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from heapq import heappop
from heapq import heappush
from typing import Protocol

__all__ = [
    "NS_PER_S",
    "Clock",
    "TimerHandle",
    "VirtualClock",
    "WallClock",
    "ns_to_seconds",
    "seconds_to_ns",
]

NS_PER_S = 1_000_000_000


def seconds_to_ns(seconds: Decimal | int | float | str) -> int:
    """Convert seconds to integer nanoseconds, exactly for Decimal/str input."""
    if type(seconds) is not Decimal:  # (a Decimal as it is: Decimal(d) is d's value)
        seconds = Decimal(repr(seconds) if isinstance(seconds, float) else seconds)
    return int(seconds * NS_PER_S)


def ns_to_seconds(ns: int) -> Decimal:
    return Decimal(ns) / NS_PER_S


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now_ns(self) -> int: ...

    def call_at(self, due_ns: int, callback: Callable[[], None]) -> TimerHandle: ...

    def call_later(self, delay_ns: int, callback: Callable[[], None]) -> TimerHandle: ...


class WallClock:
    """Monotonic wall time; timers run on the asyncio loop that is running when armed."""

    def __init__(self) -> None:
        self._origin = time.monotonic_ns()

    def now_ns(self) -> int:
        return time.monotonic_ns() - self._origin

    def call_at(self, due_ns: int, callback: Callable[[], None]) -> TimerHandle:
        return self.call_later(due_ns - self.now_ns(), callback)

    def call_later(self, delay_ns: int, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(delay_ns, 0) / NS_PER_S, callback)


class _VirtualTimer:
    __slots__ = ("callback", "cancelled", "due_ns", "seq")

    def __init__(self, due_ns: int, seq: int, callback: Callable[[], None]) -> None:
        self.due_ns = due_ns
        self.seq = seq
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """Simulated time. Nothing moves until `advance`, `advance_to` or `run_until_idle`."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns
        self._seq = 0
        # (due, seq, timer): ordered by due time, then by arming order (seq is unique, so
        # timers themselves are never compared); tuples compare in C.
        self._heap: list[tuple[int, int, _VirtualTimer]] = []

    def now_ns(self) -> int:
        return self._now

    def call_at(self, due_ns: int, callback: Callable[[], None]) -> TimerHandle:
        # A timer due in the past fires at the next advance, never "before now".
        now = self._now
        due = due_ns if due_ns > now else now
        seq = self._seq = self._seq + 1
        timer = _VirtualTimer(due, seq, callback)
        heappush(self._heap, (due, seq, timer))
        return timer

    def call_later(self, delay_ns: int, callback: Callable[[], None]) -> TimerHandle:
        return self.call_at(self._now + delay_ns if delay_ns > 0 else self._now, callback)

    def next_due_ns(self) -> int | None:
        """When the earliest pending timer is due (None: none); cancelled timers at the
        front of the heap are dropped on the way."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heappop(heap)
        return heap[0][0] if heap else None

    def pending(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)

    def fire_next(self) -> bool:
        """Jump to the earliest timer and fire it. False when no timer is pending."""
        if self.next_due_ns() is None:
            return False
        due, _seq, timer = heappop(self._heap)
        if due > self._now:
            self._now = due
        timer.callback()
        return True

    def advance_to(self, target_ns: int) -> int:
        """Fire every timer due at or before `target_ns`, in order; returns how many fired."""
        if target_ns < self._now:
            raise ValueError(f"virtual time cannot go backwards ({target_ns} < {self._now})")
        fired = 0
        while True:
            due = self.next_due_ns()
            if due is None or due > target_ns:
                break
            self.fire_next()
            fired += 1
        self._now = target_ns
        return fired

    def advance(self, delta_ns: int) -> int:
        return self.advance_to(self._now + delta_ns)

    def set_time(self, target_ns: int) -> None:
        """Move time without firing anything (replay drives time from recorded stamps)."""
        if target_ns < self._now:
            raise ValueError(f"virtual time cannot go backwards ({target_ns} < {self._now})")
        self._now = target_ns

    def run_until_idle(self, limit: int = 1_000_000) -> int:
        fired = 0
        while fired < limit and self.fire_next():
            fired += 1
        return fired
