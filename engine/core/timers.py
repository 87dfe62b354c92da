"""Named deadlines with generation tokens.

A state arms a deadline on entry; the engine disarms it when that state is left.
Expiry arrives through the inbox as an ordinary `DeadlineExpired` event. If the
deadline was disarmed or re-armed in the meantime, its generation no longer
matches and the expiry is stale: the loop ignores it and journals a note.

The journal keeps them in the record of the step that armed or disarmed them (journal
schema 4, engine/core/loop.py): `journaled_deadlines` reads them back from a record,
and from the `deadline armed` / `deadline disarmed` notes older journals hold.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

import attrs

from engine.core.clock import Clock
from engine.core.clock import TimerHandle
from engine.core.events import DeadlineExpired

__all__ = ["Armed", "Deadlines", "JournaledDeadlines", "journaled_deadlines"]


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
        # machine → name → armed, in arming order: a state's exit looks at its own
        # machine's few, not at every machine's
        self._by_machine: dict[str, dict[str, Armed]] = {}
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
            fire = self._fire

            def expired() -> None:
                fire(DeadlineExpired(name=name, generation=gen, target=machine))

            handle = self._clock.call_at(due, expired)
        armed = Armed(machine, name, gen, due, owner_state, handle)
        mine = self._by_machine.get(machine)
        if mine is None:
            mine = self._by_machine[machine] = {}
        mine[name] = armed
        return armed

    def disarm(self, machine: str, name: str) -> Armed | None:
        armed = self._forget(machine, name)
        if armed is not None and armed.handle is not None:
            armed.handle.cancel()
        return armed

    def _forget(self, machine: str, name: str) -> Armed | None:
        mine = self._by_machine.get(machine)
        armed = mine.pop(name, None) if mine else None
        if mine is not None and not mine:
            del self._by_machine[machine]
        return armed

    def disarm_owned(self, machine: str, state_id: str) -> list[Armed]:
        mine = self._by_machine.get(machine)
        if not mine:
            return []
        names = [a.name for a in mine.values() if a.owner_state == state_id]
        return [a for n in names if (a := self.disarm(machine, n)) is not None]

    def disarm_all(self, machine: str) -> list[Armed]:
        names = list(self._by_machine.get(machine, ()))
        return [a for n in names if (a := self.disarm(machine, n)) is not None]

    def take(self, ev: DeadlineExpired) -> bool:
        """Consume a current expiry; False means it is stale (disarmed or re-armed since)."""
        machine = ev.target or ""
        armed = self._by_machine.get(machine, {}).get(ev.name)
        if armed is None or armed.generation != ev.generation:
            return False
        self._forget(machine, ev.name)
        return True

    def armed_for(self, machine: str) -> list[Armed]:
        return list(self._by_machine.get(machine, {}).values())

    def __len__(self) -> int:
        return sum(len(mine) for mine in self._by_machine.values())


@attrs.define
class JournaledDeadlines:
    """What one journal record says about one machine's deadlines: apply `disarmed`
    (names), then `armed` (each {"name", "due_ns", "generation"}), in order.

    (Not frozen: the live fold builds one for every record that arms or disarms, and a
    frozen class sets each field through `object.__setattr__`.)"""

    machine: str
    disarmed: tuple[str, ...]
    armed: tuple[Mapping[str, Any], ...]


def journaled_deadlines(kind: str, machine: str, data: Any) -> JournaledDeadlines | None:
    """The deadlines a record (kind, machine field, decoded payload) arms or disarms; None
    when it touches none. A transition's deadlines are its machine's; a `spawn` note's are
    the spawned machine's (armed on its initial entry); older journals' notes one each."""
    if type(data) is not dict and not isinstance(data, Mapping):  # (dict: no ABC check)
        return None
    if kind == "transition" or (kind == "note" and data.get("note") == "spawn"):
        armed, disarmed = data.get("armed"), data.get("disarmed")
        if not armed and not disarmed:
            return None
        owner = machine if kind == "transition" else str(data.get("machine"))
        return JournaledDeadlines(
            owner,
            tuple(str(n) for n in disarmed or ()),
            tuple(a for a in armed or () if type(a) is dict or isinstance(a, Mapping)),
        )
    if kind != "note":
        return None
    note = data.get("note")
    if note == "deadline armed":  # journal schema 3 and older
        return JournaledDeadlines(machine, (), (data,))
    if note == "deadline disarmed":
        return JournaledDeadlines(machine, (str(data.get("name")),), ())
    return None
