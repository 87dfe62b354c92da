"""Drivers that connect an engine to a venue.

`run_virtual` is synchronous: it drains the inbox, hands intents to the venue, and
when nothing is queued jumps the virtual clock to the next timer. A run ends when
`until()` holds or nothing at all is left to happen (idle).
"""

from __future__ import annotations

from collections.abc import Callable

from engine.core.clock import VirtualClock
from engine.core.intents import Intent
from engine.core.loop import Engine

__all__ = ["run_virtual"]


def run_virtual(
    engine: Engine,
    clock: VirtualClock,
    send: Callable[[Intent], None],
    *,
    until: Callable[[], bool] = lambda: False,
    deadline_ns: int | None = None,
    initial: list[Intent] | None = None,
) -> str:
    """Returns why it stopped: "until", "idle" or "deadline"."""
    for intent in initial or ():
        send(intent)
    while True:
        # asked after every event; with nothing queued (at the start, or after a timer
        # inside the venue), once
        if not engine.inbox and until():
            return "until"
        while engine.inbox:
            origin, ev = engine.inbox.popleft()
            for intent in engine.process(ev, origin):
                send(intent)
            if until():
                return "until"
        due = clock.next_due_ns()
        if due is None:
            return "idle"
        if deadline_ns is not None and due > deadline_ns:
            clock.advance_to(deadline_ns)
            return "deadline"
        clock.fire_next()
