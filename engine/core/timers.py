"""Named deadlines with generation tokens.

A state arms a deadline on entry; the engine disarms it when that state is left.
Expiry arrives through the inbox as an ordinary `DeadlineExpired` event. If the
deadline was disarmed or re-armed in the meantime, its generation no longer
matches and the expiry is stale: the loop ignores it and journals a note.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from engine.core.clock import Clock
from engine.core.clock import TimerHandle
from engine.core.events import DeadlineExpired

__all__ = ["Armed", "Deadlines"]


@attrs.define
class Armed:
    machine: str
    name: str
    generation: int
    due_ns: int
    owner_state: str | None
    handle: TimerHandle | None


class Deadlines:
    def __init__(
        self,
        clock: Clock,
        fire: Callable[[DeadlineExpired], None],
        *,
        schedule: bool = True,
    ) -> None:
        # schedule=False is for replay: expiries come from the journal, not from timers.
        self._clock = clock
        self._fire = fire
        self._schedule = schedule
        self._armed: dict[tuple[str, str], Armed] = {}
        self._generation = 0

    def arm(
        self, machine: str, name: str, now_ns: int, delay_ns: int, owner_state: str | None
    ) -> Armed:
        """Arm (or re-arm) `name`, due `delay_ns` after the step time `now_ns`."""
        self.disarm(machine, name)
        self._generation += 1
        gen = self._generation
        due = now_ns + max(delay_ns, 0)
        handle = None
        if self._schedule:
            expiry = DeadlineExpired(name=name, generation=gen, target=machine)
            handle = self._clock.call_at(due, lambda: self._fire(expiry))
        armed = Armed(machine, name, gen, due, owner_state, handle)
        self._armed[(machine, name)] = armed
        return armed

    def disarm(self, machine: str, name: str) -> Armed | None:
        armed = self._armed.pop((machine, name), None)
        if armed is not None and armed.handle is not None:
            armed.handle.cancel()
        return armed

    def disarm_owned(self, machine: str, state_id: str) -> list[Armed]:
        names = [
            a.name
            for a in self._armed.values()
            if a.machine == machine and a.owner_state == state_id
        ]
        return [a for n in names if (a := self.disarm(machine, n)) is not None]

    def disarm_all(self, machine: str) -> list[Armed]:
        names = [a.name for a in self._armed.values() if a.machine == machine]
        return [a for n in names if (a := self.disarm(machine, n)) is not None]

    def take(self, ev: DeadlineExpired) -> bool:
        """Consume a current expiry; False means it is stale (disarmed or re-armed since)."""
        key = (ev.target or "", ev.name)
        armed = self._armed.get(key)
        if armed is None or armed.generation != ev.generation:
            return False
        del self._armed[key]
        return True

    def armed_for(self, machine: str) -> list[Armed]:
        return [a for a in self._armed.values() if a.machine == machine]

    def __len__(self) -> int:
        return len(self._armed)
