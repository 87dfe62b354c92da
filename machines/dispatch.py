"""A compiled dispatch for PureMachine: python-statemachine's event semantics, from a
per-class table.

The class's python-statemachine declaration stays the single source (diagrams, tests and
introspection read it, and the library still builds and starts every instance). From it,
once per class, `compile_plan` builds: for each atomic state the eventless transitions and,
per event name, the transitions that may take it (the state's own, then its ancestors', in
declaration order, as the library selects them), each with its guards, its before/on/after
actions, the states it exits (its transition domain) and the states it enters (ancestors
up to the domain, the target, the initial children of a compound target) with their
callbacks, all resolved from the class's shared callback registry in the registry's own
order. `send` then runs the library's algorithm for one event on that table: the eventless
transitions first (their guards re-run on every event, as the library does), the event,
then the eventless transitions again until none is enabled; each transition as a microstep
in the library's order (before, exit states deepest first, on, enter states outermost
first with the initial transition's `on` after a compound's entry, after), the
configuration updated state by state as the library does with `atomic_configuration_update
= False`, a top-level final state stopping the machine, and the configuration restored if a
callback before `after` raises.

A class outside what the table models keeps the library's engine for every event (the
reason is kept in `plan.unsupported`): parallel or history states, a final state inside a
compound one (its `done.state` event), multi-target or internal targeted transitions,
invoke, `prepare_event` callbacks, a callback that wants `event_data`, the configurations
or every argument (`**kwargs`), or a callback the class view could not resolve.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from statemachine.callbacks import CallbacksRegistry
from statemachine.callbacks import allways_true
from statemachine.event import _event_data_kwargs
from statemachine.state import State
from statemachine.transition import Transition

# Names a callback may want that the compiled dispatch does not pass (the library does).
_NOT_PASSED = frozenset({"event_data", "previous_configuration", "new_configuration"})

# One callback: (condition or None, attribute name, is a method, expected value or None).
Callback = tuple[Callable[..., Any] | None, str, bool, bool | None]
Callbacks = tuple[Callback, ...]


class Step:
    """One declared transition, compiled."""

    __slots__ = (
        "after",
        "before",
        "conds",
        "domain",
        "entries",
        "leaving",
        "on",
        "source",
        "target",
        "targeted",
        "transition",
        "validators",
    )

    def __init__(self, plan: Plan, t: Transition) -> None:
        self.transition = t
        self.source = t.source
        self.target = t.target
        self.targeted = bool(t.targets)
        self.validators = plan.callbacks(t.validators.key)
        self.conds = plan.callbacks(t.cond.key)
        self.before = plan.callbacks(t.before.key)
        self.on = plan.callbacks(t.on.key)
        self.after = plan.callbacks(t.after.key)
        self.domain = _domain(t) if self.targeted else None
        # active state ids → those the transition exits, deepest first, each as (its index
        # among the active states, its value, its exit callbacks) (filled by the dispatch
        # as configurations occur; a class has finitely many)
        self.leaving: dict[tuple[str, ...], tuple[tuple[int, Any, Callbacks], ...]] = {}
        # (state, the transition its kwargs name, its enter callbacks, the initial
        # transition's `on` callbacks when entered by default, top-level final)
        self.entries: tuple[tuple[State, Transition, Callbacks, Callbacks | None, bool], ...] = ()
        if self.targeted:
            self.entries = plan.entry_plan(t, self.domain)


class Plan:
    """A class's compiled table; `unsupported` says why a class keeps the library's engine."""

    def __init__(self, cls: Any, registry: CallbacksRegistry) -> None:
        self.cls = cls
        self.registry = registry
        self.unsupported = ""
        self.eventless: dict[str, tuple[Step, ...]] = {}
        self.by_event: dict[tuple[str, str], tuple[Step, ...]] = {}
        self.exits: dict[Any, Callbacks] = {}
        self._steps: dict[int, Step] = {}
        self._ancestry: dict[str, tuple[State, ...]] = {}
        self.initial: Step | None = None
        try:
            self._compile()
        except _Unsupported as why:
            self.unsupported = str(why)

    # -- compile -----------------------------------------------------------------------
    def _compile(self) -> None:
        cls = self.cls
        if self.registry._registry.get(cls.prepare.key):
            raise _Unsupported("prepare_event callbacks")
        if self.registry.has_async_callbacks:
            raise _Unsupported("async callbacks")
        if cls._class_listeners:
            raise _Unsupported("class listeners")
        states = list(cls.states_map.values())
        for state in states:
            if state.parallel or state.is_history or state.history:
                raise _Unsupported(f"{state.id}: parallel or history state")
            if state.final and state.parent is not None:
                raise _Unsupported(f"{state.id}: final state inside a compound state")
            if self.registry._registry.get(state.invoke.key):
                raise _Unsupported(f"{state.id}: invoke")
            for t in state.transitions:
                if len(t.targets) > 1:
                    raise _Unsupported(f"{state.id}: a multi-target transition")
                if t.internal and t.targets and not t.initial:
                    raise _Unsupported(f"{state.id}: an internal targeted transition")
        for state in states:
            self.exits[state.value] = self.callbacks(state.exit.key)
        # The library's activation: a transition from a blank state to the initial one,
        # without callbacks of its own, entering it (and its initial descendants).
        values = list(cls.start_configuration_values) or [cls.initial_state.value]
        if len(values) != 1:
            raise _Unsupported("more than one initial state")
        initial = Transition(State(), cls.states_map[values[0]], event="__initial__")
        initial._specs.clear()  # type: ignore[no-untyped-call]
        self.initial = Step(self, initial)
        for state in states:
            if state.is_atomic:
                chain = (state, *state.ancestors())
                self._ancestry[state.id] = chain
                self.eventless[state.id] = tuple(
                    self.step(t)
                    for s in chain
                    for t in s.transitions
                    if not t.initial and t.is_eventless
                )

    def callbacks(self, key: str) -> Callbacks:
        executor = self.registry._registry.get(key)
        if not executor:
            return ()
        out: list[Callback] = []
        for wrapper in executor:
            adapter = getattr(wrapper._callback, "_dn_target", None)
            if adapter is None:
                raise _Unsupported(f"{key}: a callback outside the class view")
            method = adapter._dn_adapter == "method"
            name = adapter._dn_name
            if method:
                wanted = _wanted_static(self.cls, name)
                if wanted is None or _NOT_PASSED & set(wanted):
                    raise _Unsupported(f"{name}: wants arguments the table does not pass")
            condition = None if wrapper.condition is allways_true else wrapper.condition
            out.append((condition, name, method, wrapper.expected_value))
        return tuple(out)

    def step(self, t: Transition) -> Step:
        found = self._steps.get(id(t))
        if found is None:
            found = self._steps[id(t)] = Step(self, t)
        return found

    def entry_plan(
        self, t: Transition, domain: State | None
    ) -> tuple[tuple[State, Transition, Callbacks, Callbacks | None, bool], ...]:
        """The library's `compute_entry_set` for a transition without history states."""
        entered: dict[int, tuple[State, Transition]] = {}  # id(state) → first (state, t)
        default: set[int] = set()

        def add(state: State, via: Transition) -> None:
            entered.setdefault(id(state), (state, via))

        def descendants(state: State, via: Transition) -> None:
            add(state, via)
            if state.is_compound:
                default.add(id(state))
                initial = next(x for x in state.transitions if x.initial)
                for target in initial.targets:
                    descendants(target, initial)
                for target in initial.targets:
                    for anc in target.ancestors(parent=state):
                        add(anc, initial)

        for target in t.targets:
            descendants(target, t)
        for target in t.targets:
            for anc in target.ancestors(parent=domain):
                add(anc, t)
        ordered = sorted(entered.values(), key=lambda e: e[0].document_order or 0)
        out = []
        for state, via in ordered:
            initial_on: Callbacks | None = None
            if id(state) in default:
                initials = [x for x in state.transitions if x.initial]
                initial_on = self.callbacks(initials[0].on.key) if len(initials) == 1 else ()
            top_final = bool(state.final) and state.parent is None
            out.append((state, via, self.callbacks(state.enter.key), initial_on, top_final))
        return tuple(out)

    def for_event(self, state_id: str, event: str) -> tuple[Step, ...]:
        """The steps that may take `event` in the atomic state `state_id`."""
        key = (state_id, event)
        found = self.by_event.get(key)
        if found is None:
            found = self.by_event[key] = tuple(
                self.step(t)
                for s in self._ancestry[state_id]
                for t in s.transitions
                if not t.initial and t.match(event)
            )
        return found


class _Unsupported(Exception):
    pass


def _domain(t: Transition) -> State | None:
    """The library's `get_transition_domain` for a transition without history targets."""
    states = t.targets
    if t.internal and t.source.is_compound and all(s.is_descendant(t.source) for s in states):
        return t.source
    if t.internal and t.is_self and t.target is not None and t.target.is_atomic:
        return t.source
    head, tail = t.source, states
    for anc in head.ancestors():
        if anc.is_compound and all(s.is_descendant(anc) for s in tail):
            return anc
    return None


def _wanted_static(cls: Any, name: str) -> tuple[str, ...] | None:
    """The keyword parameters the class's `name` takes as a bound method (None: **kwargs).
    Not cached: `machines.base._WANTED` holds what the bound methods take, by function."""
    from machines.base import _getattr_static

    static = _getattr_static(cls, name)
    if isinstance(static, staticmethod):
        fn, bound = static.__func__, False
    else:
        fn, bound = getattr(static, "__func__", static), True
    params = list(inspect.signature(fn).parameters.values())
    if bound and params and params[0].kind in _POSITIONAL:
        params = params[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in _NAMED)


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


TRIGGER_RESERVED = _event_data_kwargs
