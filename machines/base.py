"""The strict machine base every cycle machine derives from.

python-statemachine's `StateChart` defaults hide failures (unknown events are
dropped, exceptions become `error.execution`). Here unknown events raise and
exceptions propagate, the payload travels as one object (`ev=`), and a machine's
only ways to affect the world are `emit(intent)`, `arm`/`disarm` of deadlines and
`spawn` of child machines, all through the engine's context. No I/O, no clock, no
randomness: a test enforces the imports.

The contract with the engine (gen_statem-style, docs in CONTRACT.md of issue 13):

- each deadline is its own event: `self.arm("fills_timeout", s)` on entry, and the
  class declares `fills_timeout = working.to(cancelling)`;
- an event the current state has no transition for (or whose guards all refuse) is
  consumed and counted (`unhandled = "consume"`, the default); `"defer"` keeps the
  old behaviour for machines not yet converted;
- a state postpones event kinds only by declaring them in `postpone`;
- answers for a finished machine's orders and requests never reach any machine, so no
  guard has to recognise a late answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from typing import Literal
from typing import Protocol

from statemachine import State
from statemachine import StateChart

from engine.intents import Intent

if TYPE_CHECKING:
    from engine.ledger import Ledger

__all__ = ["MachineContext", "PureMachine", "State", "Unhandled"]

Unhandled = Literal["consume", "defer"]


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


class PureMachine(StateChart):  # type: ignore[type-arg]
    allow_event_without_transition = False
    catch_errors_as_events = False

    # Event kinds this machine wants even though it declares no transition for them.
    extra_interests: ClassVar[frozenset[str]] = frozenset()
    # What happens to an event the current state does not take: "consume" drops and
    # counts it (noted in the journal); "defer" queues it until the next transition
    # (the old contract, kept only for machines not yet converted).
    unhandled: ClassVar[Unhandled] = "consume"
    # state id → the event kinds that state postpones: queued for this machine and
    # re-delivered in arrival order after its next state change.
    postpone: ClassVar[Mapping[str, frozenset[str]]] = {}

    def __init__(self, ctx: MachineContext, **params: Any) -> None:
        self.ctx = ctx
        self.params = params
        self._next_id = 0
        self.setup(**params)
        super().__init__()

    # -- the engine hears of every entry, exit and transition ---------------------------
    # python-statemachine's own generic hooks (priority GENERIC: they run before the
    # class's `on_enter_<state>`, so `arm()` there knows which state owns the deadline).
    # Declared here rather than through a listener object: one fewer object to resolve
    # callbacks against for every instance.
    def on_enter_state(self, state: State) -> None:
        self.ctx.entering(state.id)

    def on_exit_state(self, state: State) -> None:
        self.ctx.exiting(state.id)

    def before_transition(self, event: str, source: State, target: State | None) -> None:
        self.ctx.transitioned(str(event), source.id, target.id if target is not None else None)

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

    def takes(self, event: str) -> bool:
        """Whether a current state (or an ancestor) declares a transition for `event`
        (guards not consulted). From a per-class table: cheaper than `allowed_events`."""
        table = type(self)._event_table()
        return any(event in table.get(s.id, ()) for s in self.configuration)

    @classmethod
    def _event_table(cls) -> dict[str, frozenset[str]]:
        found = _EVENT_TABLES.get(cls)
        if found is None:
            found = {}
            for state in cls.states_map.values():
                names: set[str] = set()
                node: State | None = state
                while node is not None:
                    for t in node.transitions:
                        names.update(e.id for e in t.events)
                    node = node.parent
                found[state.id] = frozenset(names)
            _EVENT_TABLES[cls] = found
        return found

    @classmethod
    def declared_events(cls) -> frozenset[str]:
        found = _DECLARED.get(cls)
        if found is None:
            found = _DECLARED[cls] = frozenset(ev.id for ev in cls._events)
        return found

    @classmethod
    def interests(cls) -> frozenset[str]:
        found = _INTERESTS.get(cls)
        if found is None:
            found = _INTERESTS[cls] = cls.declared_events() | cls.extra_interests
        return found


# Per-class tables computed once (the declarations never change after class creation).
_EVENT_TABLES: dict[type[PureMachine], dict[str, frozenset[str]]] = {}
_DECLARED: dict[type[PureMachine], frozenset[str]] = {}
_INTERESTS: dict[type[PureMachine], frozenset[str]] = {}
