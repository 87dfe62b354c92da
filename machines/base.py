"""The strict machine base every cycle machine derives from.

python-statemachine's `StateChart` defaults hide failures (unknown events are
dropped, exceptions become `error.execution`). Here unknown events raise and
exceptions propagate, the payload travels as one object (`ev=`), and a machine's
only ways to affect the world are `emit(intent)`, `arm`/`disarm` of deadlines and
`spawn` of child machines, all through the engine's context. No I/O, no clock, no
randomness: a test enforces the imports.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from typing import Protocol

from statemachine import State
from statemachine import StateChart

from engine.intents import Intent

if TYPE_CHECKING:
    from engine.ledger import Ledger

__all__ = ["JournalListener", "MachineContext", "PureMachine", "State"]


class MachineContext(Protocol):
    """What the engine gives a machine. Implemented by `engine.loop`."""

    machine_id: str
    ledger: Ledger

    def emit(self, intent: Intent) -> None: ...

    def arm(self, name: str, seconds: Decimal | int | str) -> None: ...

    def disarm(self, name: str) -> None: ...

    def spawn(self, cls: type[PureMachine], machine_id: str, **params: Any) -> PureMachine: ...

    def note(self, text: str, **data: Any) -> None: ...

    def entering(self, state_id: str) -> None: ...

    def exiting(self, state_id: str) -> None: ...

    def transitioned(self, event: str, source: str, target: str | None) -> None: ...


class JournalListener:
    """Tells the engine about every state entry, exit and transition, for the journal
    and for state-owned deadlines. Listener hooks run before the class's own
    `on_enter_<state>`, so `arm()` there knows which state owns the deadline."""

    def __init__(self, ctx: MachineContext) -> None:
        self._ctx = ctx

    def on_enter_state(self, state: State) -> None:
        self._ctx.entering(state.id)

    def on_exit_state(self, state: State) -> None:
        self._ctx.exiting(state.id)

    def before_transition(self, event: str, source: State, target: State | None) -> None:
        self._ctx.transitioned(str(event), source.id, target.id if target is not None else None)


class PureMachine(StateChart):  # type: ignore[type-arg]
    allow_event_without_transition = False
    catch_errors_as_events = False

    # An event the current state does not take: "defer" (re-delivered after the next
    # transition; machines not yet converted) or "consume" (dropped and noted).
    unhandled: ClassVar[str] = "defer"

    # Event kinds this machine wants even though it declares no transition for them.
    extra_interests: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, ctx: MachineContext, **params: Any) -> None:
        self.ctx = ctx
        self.params = params
        self._next_id = 0
        self.setup(**params)
        super().__init__(listeners=[JournalListener(ctx)])

    def setup(self, **params: Any) -> None:
        """Hook for subclasses: read params before the initial state is entered."""

    # -- the only ways out ----------------------------------------------------------
    def emit(self, *intents: Intent) -> None:
        for intent in intents:
            self.ctx.emit(intent)

    def arm(self, name: str, seconds: Decimal | int | str) -> None:
        self.ctx.arm(name, seconds)

    def disarm(self, name: str) -> None:
        self.ctx.disarm(name)

    def spawn(self, cls: type[PureMachine], machine_id: str, **params: Any) -> PureMachine:
        """Start a child; its final state comes back as `machine_finished`."""
        return self.ctx.spawn(cls, machine_id, **params)

    def note(self, text: str, **data: Any) -> None:
        self.ctx.note(text, **data)

    def next_id(self, tag: str = "") -> str:
        """Deterministic ids: `{machine}:{tag}{n}`, never random."""
        self._next_id += 1
        return f"{self.ctx.machine_id}:{tag}{self._next_id}"

    @property
    def ledger(self) -> Ledger:
        return self.ctx.ledger

    @property
    def state_ids(self) -> list[str]:
        return [s.id for s in self.configuration]

    @classmethod
    def interests(cls) -> frozenset[str]:
        names = {ev.id for ev in cls._events}  # declared events, by name
        return frozenset(names) | cls.extra_interests
