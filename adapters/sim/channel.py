"""The push stream (a WebSocket's worth of behaviour) with the `[ws]` faults, as the fault
plan decides them (faultplan.py `PushPlan`); this class only carries them out.

Like a TCP stream it delivers in order: an extra delay never lets a later push overtake
an earlier one. Only `reorder` swaps a push with the next one (if none follows within
`reorder_flush_ms`, the held push goes out alone). A disconnect loses the pushes in flight
and everything pushed until `connect()`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Generic
from typing import TypeVar

from adapters.sim.faultplan import PushPlan

__all__ = ["PushChannel"]

T = TypeVar("T")
Schedule = Callable[[int, Callable[[], None]], object]  # (what it returns is not used)


class PushChannel(Generic[T]):
    def __init__(
        self,
        *,
        plan: PushPlan,
        latency_ns: int,
        flush_ns: int,
        now: Callable[[], int],
        schedule: Schedule,
        deliver: Callable[[T], None],
    ) -> None:
        self.plan = plan
        self._latency_ns = latency_ns
        self._flush_ns = flush_ns
        self._now = now
        self._schedule = schedule
        self._deliver = deliver
        self.up = True
        self._epoch = 0
        self._last_due = 0
        self._held: tuple[T, int] | None = None
        self._held_gen = 0
        self.stats = dict.fromkeys(
            ("pushed", "delivered", "dropped", "duplicated", "reordered", "lost"), 0
        )

    def push(self, item: T) -> None:
        self.stats["pushed"] += 1
        if not self.up:
            self.stats["lost"] += 1
            return
        plan = self.plan
        if plan.clean:
            self._send(item, 1)
            return
        if plan.drops():
            self.stats["dropped"] += 1
            return
        copies = plan.copies()
        if copies > 1:
            self.stats["duplicated"] += 1
        if self._held is not None:
            held, self._held = self._held, None
            self.stats["reordered"] += 1
            self._send(item, copies)
            self._send(*held)
        elif plan.holds():
            self._held = (item, copies)
            self._held_gen += 1
            gen = self._held_gen
            self._schedule(self._flush_ns, lambda: self._flush(gen))
        else:
            self._send(item, copies)

    def disconnect(self) -> None:
        if self._held is not None:
            self.stats["lost"] += 1
            self._held = None
        self.up = False
        self._epoch += 1

    def connect(self) -> None:
        self.up = True

    def _flush(self, gen: int) -> None:
        if self._held is not None and gen == self._held_gen:
            held, self._held = self._held, None
            self._send(*held)

    def _send(self, item: T, copies: int) -> None:
        now = self._now()
        due = now + self._latency_ns
        if not self.plan.clean:
            due += self.plan.delay_ns()
        if due < self._last_due:
            due = self._last_due
        self._last_due = due
        arrive = partial(self._arrive, item, self._epoch)
        for _ in range(copies):
            self._schedule(due - now, arrive)

    def _arrive(self, item: T, epoch: int) -> None:
        if epoch != self._epoch or not self.up:
            self.stats["lost"] += 1
            return
        self.stats["delivered"] += 1
        self._deliver(item)
