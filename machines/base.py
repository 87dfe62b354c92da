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
  consumed and counted (`unhandled = "consume"`, every machine's policy);
- a state postpones event kinds only by declaring them in `postpone`;
- answers for a finished machine's orders and requests never reach any machine, so no
  guard has to recognise a late answer.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from collections.abc import MutableSet
from decimal import Decimal
from itertools import repeat
from operator import is_
from types import FunctionType
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from typing import Literal
from typing import Protocol
from weakref import ref

from statemachine import State
from statemachine import StateChart
from statemachine.callbacks import CallbacksRegistry
from statemachine.configuration import _SENTINEL as _CONFIG_UNSET
from statemachine.configuration import Configuration
from statemachine.dispatcher import Listener
from statemachine.dispatcher import Listeners
from statemachine.engines.sync import SyncEngine
from statemachine.event import BoundEvent
from statemachine.event import Event
from statemachine.exceptions import InvalidDefinition
from statemachine.exceptions import StateMachineError
from statemachine.exceptions import TransitionNotAllowed
from statemachine.graph import iterate_states_and_transitions
from statemachine.model import Model
from statemachine.orderedset import OrderedSet
from statemachine.state import InstanceState
from statemachine.utils import humanize_id

from engine.core.intents import Intent
from machines.dispatch import TRIGGER_RESERVED
from machines.dispatch import Callbacks
from machines.dispatch import Plan
from machines.dispatch import Step

if TYPE_CHECKING:
    from engine.core.ledger import Ledger

__all__ = ["MachineContext", "PureMachine", "State"]


class MachineContext(Protocol):
    """What the engine gives a machine. Implemented by `engine.core.loop`."""

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
    # What happens to an event the current state does not take: the engine drops and
    # counts it (noted in the journal). The one policy since every machine was converted.
    unhandled: ClassVar[Literal["consume"]] = "consume"
    # state id → the event kinds that state postpones: queued for this machine and
    # re-delivered in arrival order after its next state change.
    postpone: ClassVar[Mapping[str, frozenset[str]]] = {}
    # Events run from the class's compiled table (machines/dispatch.py); False: through
    # python-statemachine's own engine (the reference the table is tested against).
    compiled_dispatch: ClassVar[bool] = True
    _dn_pending: list[tuple[str, tuple[Any, ...], dict[str, Any]]] | None
    _dn_events: dict[str, Any]

    def __init__(self, ctx: MachineContext, **params: Any) -> None:
        self.ctx = ctx
        self.params = params
        self._next_id = 0
        self.setup(**params)
        plan = _PLANS.get(type(self))
        if plan is None:
            super().__init__()
            self._dn_check_states()
            return
        # StateChart.__init__ for a compiled class (no model, listeners or start value are
        # passed here), then the initial entry from the table instead of the library's.
        self.model = Model()  # type: ignore[no-untyped-call]
        self.history_values = {}
        self.state_field = "state"
        self.start_configuration_values = list(type(self).start_configuration_values)
        self._callbacks = plan.registry
        self._config = self._build_configuration()
        self._listeners = {}
        self.__dict__["_engine"] = None  # built when the library's paths first need it
        self._dn_run(plan, [], None, plan.initial)
        self._dn_check_states()

    @property
    def _engine(self) -> SyncEngine:
        """The library's engine, built on first use: the compiled dispatch needs none."""
        d = self.__dict__
        engine: SyncEngine | None = d.get("_engine")
        if engine is None:
            engine = d["_engine"] = SyncEngine(self)
            if d.get("_dn_stopped"):
                engine.running = False
            if d.get("_dn_pending") is not None:  # built inside the table's loop: held
                engine._processing.acquire(blocking=False)
                d["_dn_locked"] = engine._processing
        return engine

    @_engine.setter
    def _engine(self, engine: SyncEngine) -> None:
        self.__dict__["_engine"] = engine

    @property
    def is_terminated(self) -> bool:
        engine = self.__dict__.get("_engine")
        if engine is None:
            return bool(self.__dict__.get("_dn_stopped"))
        return not engine.running

    def _dn_running(self) -> bool:
        engine = self.__dict__.get("_engine")
        return not self.__dict__.get("_dn_stopped") if engine is None else bool(engine.running)

    def _dn_stop(self) -> None:
        engine = self.__dict__.get("_engine")
        if engine is None:
            self.__dict__["_dn_stopped"] = True
        else:
            engine._invoke_manager.cancel_all()
            engine.running = False

    # -- callbacks resolved once per class ---------------------------------------------
    def _register_callbacks(self, listeners: list[object]) -> None:
        """python-statemachine resolves every callback name against each new instance
        (`dir(instance)`, one lookup and one signature adapter per spec): about 3 ms per
        machine, and machines are built every cycle. A PureMachine has no listeners and
        no model, and its callbacks are the class's own methods, so the registry is
        resolved once per class, against `_ClassView` (each method taking the instance
        as the `machine` argument the library passes to every callback), and shared by
        all instances. A class whose callbacks name something the class does not define
        (an instance attribute) keeps the library's per-instance resolution."""
        cls = type(self)
        if listeners or cls in _PER_INSTANCE:
            super()._register_callbacks(listeners)
            return
        registry = _REGISTRIES.get(cls)
        if registry is None:
            registry = CallbacksRegistry()
            self._callbacks = registry
            view = Listeners.from_listeners((Listener.from_obj(_ClassView(cls)),))
            try:
                self._add_listener(view)
                for visited in iterate_states_and_transitions(self.states):
                    registry.check(visited._specs)
            except (InvalidDefinition, AttributeError, LookupError):
                _PER_INSTANCE.add(cls)
                self._callbacks = CallbacksRegistry()
                super()._register_callbacks(listeners)
                return
            registry.async_or_sync()  # type: ignore[no-untyped-call]
            _call_directly(registry)
            _REGISTRIES[cls] = registry
        self._callbacks = registry

    # -- the compiled dispatch -----------------------------------------------------------
    def send(
        self,
        event: str,
        *args: Any,
        delay: float | None = None,
        send_id: str | None = None,
        internal: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """The library's `send`, run from the class's compiled table (machines/dispatch.py)
        when the class fits it and the event is a plain declared one; otherwise (and for
        an event sent while one is being processed through the library) the library's."""
        plan = _PLANS.get(type(self), _NO_PLAN)
        if plan is _NO_PLAN:
            plan = _plan_for(self)
        if (
            plan is None
            or delay is not None
            or send_id is not None
            or internal is not None
            or event not in type(self)._events
        ):
            result = super().send(
                event, *args, delay=delay, send_id=send_id, internal=internal, **kwargs
            )
            self._dn_check_states()
            return result
        if not self._dn_running():
            raise TransitionNotAllowed(self._dn_event(event), self.configuration)
        if not kwargs.keys().isdisjoint(TRIGGER_RESERVED):
            kwargs = {k: v for k, v in kwargs.items() if k not in TRIGGER_RESERVED}
        trigger = (event, args, kwargs)
        pending = self.__dict__.get("_dn_pending")
        if pending is not None:  # sent from a callback: after the current event, in order
            pending.append(trigger)
            return None
        engine = self.__dict__.get("_engine")
        lock = None if engine is None else engine._processing
        if lock is not None and not lock.acquire(blocking=False):
            result = super().send(event, *args, **kwargs)
        else:
            result = self._dn_run(plan, [trigger], lock)
        self._dn_check_states()
        return result

    def _dn_check_states(self) -> None:
        """StateChart.__setattr__'s check (a state's name is not an attribute to assign),
        made once a machine has started and after each event it was sent, rather than on
        every assignment: a Python `__setattr__` costs every attribute a machine sets (a
        tenth of a replay). The same error, at the end of the step that assigned."""
        d = self.__dict__
        guard = d.get("_dn_guard")
        if guard is None:  # the names, and what the instance holds under each
            states = self._config._instance_states
            named = _guarded_names(type(self))
            guard = d["_dn_guard"] = (
                tuple(name for name, _ in named),
                tuple(_NONE if value is None else states[value] for _, value in named),
            )
        names, held = guard
        if all(map(is_, map(d.get, names, repeat(_NONE)), held)):
            return
        for name, want in zip(names, held, strict=True):
            got = d.get(name, _NONE)
            if got is not want:
                raise StateMachineError(
                    f"State overriding is not allowed. Trying to add {got!r} to {name}"
                )

    def _dn_run(
        self,
        plan: Plan,
        queue: list[tuple[str, tuple[Any, ...], dict[str, Any]]],
        lock: Any,
        entries: Step | None = None,
    ) -> Any:
        """The library's processing loop (lock held): the eventless transitions, the next
        queued event, until neither moves; events sent meanwhile join `queue`. `entries`:
        the initial entry to run first (activation)."""
        self.__dict__["_dn_pending"] = queue  # past StateChart.__setattr__'s check
        first: Any = _NONE
        try:
            if entries is not None:
                self._dn_enter(entries, self._dn_event("__initial__"), (), {}, [])
            while True:
                self._dn_macrostep(plan)
                if not self._dn_running():
                    queue.clear()
                    break
                if not queue:
                    break
                name, ev_args, ev_kwargs = queue.pop(0)
                result = self._dn_external(plan, name, ev_args, ev_kwargs)
                if first is _NONE:
                    first = result
        finally:
            self.__dict__["_dn_pending"] = None
            lock = lock or self.__dict__.pop("_dn_locked", None)
            if lock is not None:
                lock.release()
        engine = self.__dict__.get("_engine")
        if engine is not None and not engine.external_queue.is_empty():
            engine.processing_loop()  # events sent through the library meanwhile
        return None if first is _NONE else first

    def _dn_event(self, name: str) -> Any:
        events: dict[str, Any] | None = self.__dict__.get("_dn_events")
        if events is None:
            events = self._dn_events = {}
        found = events.get(name)
        if found is None:
            declared = name in type(self)._events
            found = events[name] = (
                getattr(self, name)
                if declared
                else BoundEvent(name, name=_INITIAL_NAME if name == "__initial__" else "", _sm=self)
            )
        return found

    def _dn_view(self) -> _View:
        """The active state ids, the atomic one, the active states (the library's
        proxies, in its configuration order) and the atomic one's id (None: no atomic
        state is active), worked out again only when the stored
        configuration value changes (as the library caches `configuration`). A single
        active state (every machine without compound states) straight from its value."""
        raw = getattr(self.model, self.state_field, None)
        d = self.__dict__
        if raw is d.get("_dn_raw", _NONE):
            view: _View = d["_dn_seen"]
            return view
        if raw is None:
            values: tuple[Any, ...] = ()
        elif type(raw) is OrderedSet:  # as `Configuration.states` resolves the values
            values = tuple(raw._d)
        elif isinstance(raw, MutableSet):
            values = tuple(s.value for s in self.configuration)
        else:
            values = (raw,)
        conf: tuple[State, ...] = tuple(map(self._config._instance_states.__getitem__, values))
        # the ids and which state is atomic depend on the configuration only: worked out
        # once per class and configuration (a class has finitely many)
        key = (type(self), values)
        shape = _SHAPES.get(key)
        if shape is None:
            atomic = next((i for i, s in enumerate(conf) if s.is_atomic), None)
            ids = tuple(s.id for s in conf)
            shape = _SHAPES[key] = (ids, atomic, None if atomic is None else ids[atomic])
        ids, atomic, atomic_id = shape
        view = (ids, None if atomic is None else conf[atomic], conf, atomic_id)
        d["_dn_raw"], d["_dn_seen"] = raw, view
        return view

    def _dn_set(self, raw: Any) -> None:
        """Store a configuration value as the library's `Configuration` writes one (its
        cache goes with the value it was worked out from)."""
        config = self._config
        config._cached = None
        config._cached_value = _CONFIG_UNSET
        setattr(self.model, self.state_field, raw)

    def _dn_values(self) -> dict[Any, None] | None:
        """A copy of the active values in order (None: a value this does not read)."""
        raw = getattr(self.model, self.state_field, None)
        if raw is None:
            return {}
        if type(raw) is OrderedSet:
            return dict(raw._d)
        if type(raw) is not str and isinstance(raw, MutableSet):  # (str: no ABC check)
            return None
        return {raw: None}

    def _dn_write(self, values: dict[Any, None]) -> None:
        """`Configuration._write_to_model`: none is None, one is that value, more are an
        OrderedSet (the values are declared states': nothing to validate)."""
        if not values:
            self._dn_set(None)
        elif len(values) == 1:
            self._dn_set(next(iter(values)))
        else:
            ordered = object.__new__(OrderedSet)
            ordered._d = values
            self._dn_set(ordered)

    def _dn_add(self, state: State) -> None:
        """`Configuration.add` (copy-on-write)."""
        values = self._dn_values()
        if values is None:
            self._config.add(state)
        else:
            values[state.value] = None
            self._dn_write(values)

    def _dn_discard(self, state: State, value: Any) -> None:
        """`Configuration.discard` (copy-on-write) of `state`, whose value is `value`."""
        values = self._dn_values()
        if values is None:
            self._config.discard(state)
        else:
            values.pop(value, None)
            self._dn_write(values)

    def _dn_macrostep(self, plan: Plan) -> None:
        """Eventless transitions until none is enabled (the library's `_run_macrostep`)."""
        while True:
            state_id = self._dn_view()[3]
            for step in plan.eventless[state_id] if state_id is not None else ():
                # `_dn_enabled(step, None, (), {})`, inline for the plain guards (named
                # methods taking nothing or `ev`: none is offered here) of the transitions
                # tried on every event
                if step.validators:
                    enabled = self._dn_enabled(step, None, (), _NO_KWARGS)
                else:
                    enabled = True
                    kw: dict[str, Any] | None = None
                    for _condition, name, method, expected in step.conds:
                        fn = getattr(self, name)
                        if not method:
                            value = fn
                        else:
                            wanted = _WANTED.get(getattr(fn, "__func__", fn), _NONE)
                            if wanted is _NO_ARGS or wanted is _EV:
                                value = fn()
                            else:
                                if kw is None:
                                    kw = self._dn_kwargs(step, None, {})
                                value = self._dn_invoke(name, method, kw)
                        if expected is not None:
                            value = bool(value) == expected
                        if not value:
                            enabled = False
                            break
                if enabled:
                    self._dn_microstep(step, None, (), {})
                    break
            else:
                return

    def _dn_external(
        self, plan: Plan, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        event = self._dn_event(name)
        state_id = self._dn_view()[3]
        for step in plan.for_event(state_id, name) if state_id is not None else ():
            if self._dn_enabled(step, event, args, kwargs):
                return self._dn_microstep(step, event, args, kwargs)
        raise TransitionNotAllowed(event, self.configuration)

    def _dn_kwargs(self, step: Step, event: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Every argument the library offers a transition's callbacks."""
        kw = dict(kwargs)
        kw["machine"] = self
        kw["event"] = event
        kw["model"] = self.model
        kw["transition"] = step.transition
        kw["state"] = kw["source"] = step.source
        kw["target"] = step.target
        return kw

    def _dn_enabled(
        self, step: Step, event: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bool:
        """The step's validators and guards, in order. A guard that names no argument or
        only `ev` (nearly all) is called without the full set of arguments being built."""
        kw: dict[str, Any] | None = None
        if step.validators:
            kw = self._dn_kwargs(step, event, kwargs)
            self._dn_call(step.validators, args, kw)
        for _condition, name, method, expected in step.conds:
            fn = getattr(self, name)
            if not method:
                value = fn
            else:
                wanted = _WANTED.get(getattr(fn, "__func__", fn), _NONE)
                if wanted is _NONE:
                    wanted = _wanted(fn)
                if wanted is _NO_ARGS:
                    value = fn()
                elif wanted is _EV:
                    value = fn(ev=kwargs["ev"]) if "ev" in kwargs else fn()
                else:
                    if kw is None:
                        kw = self._dn_kwargs(step, event, kwargs)
                    value = self._dn_invoke(name, method, kw)
            if expected is not None:
                value = bool(value) == expected
            if not value:
                return False
        return True

    def _dn_invoke(self, name: str, method: bool, kw: dict[str, Any]) -> Any:
        """Our adapter's call (`_adapter`), without its frames: the attribute looked up now,
        given the arguments it names."""
        fn = getattr(self, name)
        if not method:
            return fn
        wanted = _WANTED.get(getattr(fn, "__func__", fn), _NONE)
        if wanted is _NONE:
            wanted = _wanted(fn)
        if wanted is _NO_ARGS:
            return fn()
        if wanted is _EV:
            return fn(ev=kw["ev"]) if "ev" in kw else fn()
        if wanted is _STATE:  # on_enter_state / on_exit_state (always in kw)
            return fn(state=kw["state"])
        if wanted is _MOVE:  # before_transition (always in kw)
            return fn(event=kw["event"], source=kw["source"], target=kw["target"])
        if wanted is None:  # takes **kwargs
            return fn(**kw)
        return fn(**{k: kw[k] for k in wanted if k in kw})

    def _dn_call(
        self, callbacks: Callbacks, args: tuple[Any, ...], kw: dict[str, Any]
    ) -> list[Any]:
        out = []
        for condition, name, method, expected in callbacks:
            if condition is not None and not condition(*args, **kw):
                continue
            value = self._dn_invoke(name, method, kw)
            if expected is not None:
                value = bool(value) == expected
            out.append(value)
        return out

    def _dn_fire(
        self,
        callbacks: Callbacks,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        event: Any,
        transition: Any,
        source: Any,
        state: Any,
        target: Any,
        entering: bool = False,
    ) -> list[Any]:
        """`_dn_call` with the arguments the library offers given one by one (`state` is
        the source, or the target when `entering`: a state entered, `after` of a targeted
        transition): the dict of all of them is built only for a callback that names more
        than the usual ones (`state`; `event, source, target`; `ev`; nothing)."""
        out = []
        kw: dict[str, Any] | None = None
        for condition, name, method, expected in callbacks:
            if condition is not None:
                if kw is None:
                    kw = self._dn_all(kwargs, event, transition, source, target, entering)
                if not condition(*args, **kw):
                    continue
            fn = getattr(self, name)
            if not method:
                value = fn
            else:
                wanted = _WANTED.get(getattr(fn, "__func__", fn), _NONE)
                if wanted is _NONE:
                    wanted = _wanted(fn)
                if wanted is _STATE:
                    value = fn(state=state)
                elif wanted is _MOVE:
                    value = fn(event=event, source=source, target=target)
                elif wanted is _NO_ARGS:
                    value = fn()
                elif wanted is _EV:
                    value = fn(ev=kwargs["ev"]) if "ev" in kwargs else fn()
                else:
                    if kw is None:
                        kw = self._dn_all(kwargs, event, transition, source, target, entering)
                    value = self._dn_invoke(name, method, kw)
            if expected is not None:
                value = bool(value) == expected
            out.append(value)
        return out

    def _dn_all(
        self,
        kwargs: dict[str, Any],
        event: Any,
        transition: Any,
        source: Any,
        target: Any,
        entering: bool,
    ) -> dict[str, Any]:
        """Every argument the library offers a callback, in its order."""
        kw = dict(kwargs)
        kw["machine"] = self
        kw["event"] = event
        kw["model"] = self.model
        kw["transition"] = transition
        if entering:  # a state it enters, or `after` of a targeted transition
            kw["source"] = source
            kw["state"] = kw["target"] = target
        else:  # a transition's own callbacks, or a state it exits
            kw["state"] = kw["source"] = source
            kw["target"] = target
        return kw

    def _dn_microstep(
        self,
        step: Step,
        event: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """One transition in the library's order (its `microstep`, non-atomic updates)."""
        previous = getattr(self.model, self.state_field, None)
        transition, source, target = step.transition, step.source, step.target
        leaving: tuple[tuple[int, Any, Callbacks], ...] = ()
        active: tuple[State, ...] = ()
        if step.targeted:
            ids, _atomic, active, _atomic_id = self._dn_view()
            # the states it leaves, deepest first (each as its index among the active ones,
            # its value and its exit callbacks): the same for every instance of the class
            # in the same configuration, so worked out once per configuration
            found_leaving = step.leaving.get(ids)
            if found_leaving is None:
                domain = step.domain
                found = [
                    i for i, s in enumerate(active) if domain is None or s.is_descendant(domain)
                ]
                found.sort(key=lambda i: _doc_order(active[i]), reverse=True)
                exits = self.__class__._dn_plan_exits()
                found_leaving = step.leaving[ids] = tuple(
                    (i, active[i].value, exits[active[i].value]) for i in found
                )
            leaving = found_leaving
        fire = self._dn_fire
        try:
            result = (
                fire(step.before, args, kwargs, event, transition, source, source, target)
                if step.before
                else []
            )
            for i, value, callbacks in leaving:
                state = active[i]
                if callbacks:
                    fire(callbacks, args, kwargs, event, transition, state, state, target)
                self._dn_discard(state, value)
            if step.on:
                result += fire(step.on, args, kwargs, event, transition, source, source, target)
            if step.entries:
                self._dn_enter(step, event, args, kwargs, result)
        except Exception:
            self._dn_set(previous)  # `self.configuration = previous`
            raise
        if step.after:
            if target is not None:
                fire(step.after, args, kwargs, event, transition, source, target, target, True)
            else:
                fire(step.after, args, kwargs, event, transition, source, source, target)
        if not result:
            return None
        return result[0] if len(result) == 1 else result

    def _dn_enter(
        self,
        step: Step,
        event: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result: list[Any],
    ) -> None:
        """Enter a step's states, outermost first (the library's `_enter_states` loop)."""
        fire = self._dn_fire
        for state, via, enter, initial_on, top_final in step.entries:
            self._dn_add(state)
            if enter:
                fire(enter, args, kwargs, event, via, via.source, state, state, True)
            if initial_on:
                result += fire(initial_on, args, kwargs, event, via, via.source, state, state, True)
            if top_final:
                self._dn_stop()

    @classmethod
    def _dn_plan_exits(cls) -> dict[Any, Callbacks]:
        plan = _PLANS[cls]
        assert plan is not None
        return plan.exits

    def _build_configuration(self) -> Configuration:
        """StateChart._build_configuration (a per-instance proxy of every state, exposed
        under the state's id unless an event has that name), from a per-class template:
        the same proxies, their fields set directly rather than through __init__."""
        cls = type(self)
        if not cls.compiled_dispatch:
            return super()._build_configuration()
        template = _CONFIG_TEMPLATES.get(cls)
        if template is None:
            events = cls._events
            template = _CONFIG_TEMPLATES[cls] = tuple(
                (s.value, s, hash(s), None if s.id in events else s.id)
                for s in cls.states_map.values()
            )
        instance_states: dict[Any, Any] = {}
        me = ref(self)
        attrs = vars(self)
        new = object.__new__
        for value, state, state_hash, attr in template:
            proxy = new(InstanceState)
            proxy.__dict__.update(
                _state=state, _machine=me, _instance_states=instance_states, _hash=state_hash
            )
            instance_states[value] = proxy
            if attr is not None:
                attrs[attr] = proxy
        return Configuration(
            instance_states=instance_states,
            model=self.model,
            state_field=self.state_field,
            states_map=cls.states_map,
        )

    # StateChart.__setattr__ checks every assignment in Python; `_dn_check_states` makes
    # its check after each step instead.
    __setattr__ = object.__setattr__

    def add_listener(self, *listeners: Any) -> PureMachine:
        """Not supported: the callback registry is shared by every instance of the class,
        so a listener added to one would act on all. The engine hears of every entry,
        exit and transition through the hooks below."""
        raise TypeError(f"{type(self).__name__}: PureMachine takes no listeners")

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
        return list(self._dn_view()[0])

    @property
    def active_ids(self) -> tuple[str, ...]:
        """`state_ids` as a tuple, without a copy (the engine reads it around every event)."""
        return self._dn_view()[0]

    def takes(self, event: str) -> bool:
        """Whether a current state (or an ancestor) declares a transition for `event`
        (guards not consulted). From a per-class table: cheaper than `allowed_events`."""
        ids = self._dn_view()[0]
        cls = type(self)
        taken = _TAKEN.get((cls, ids))
        if taken is None:  # what the active states take together, once per configuration
            table = cls._event_table()
            taken = _TAKEN[(cls, ids)] = frozenset().union(*(table.get(i, ()) for i in ids))
        return event in taken

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


class _ClassView:
    """What a class offers as callbacks, independent of any instance: each method as a
    function of (machine, its own parameters), each other attribute read from the machine
    when called. Events and states are left out (never callbacks here)."""

    def __init__(self, cls: type[PureMachine]) -> None:
        skip = set(cls._protected_attrs)
        for name in dir(cls):
            if name.startswith("__") or name in skip:
                continue
            static = _getattr_static(cls, name)
            if isinstance(static, Event | State):
                continue
            setattr(self, name, _adapter(cls, name, static))


def _call_directly(registry: CallbacksRegistry) -> None:
    """Skip the library's argument binding in front of our own adapters.

    The library wraps every callback in a `signature_adapter` that binds the offered
    arguments to the callback's signature on every call (a BoundArguments and two
    `inspect` properties each time: about 9 % of a simulated run). Our adapters' signature
    is fixed, `(machine, **kwargs)` or `(machine)`, so that binding always comes to the
    same thing: `machine` from the keywords (else the first positional argument), every
    other keyword passed on to a `(machine, **kwargs)` adapter, positional arguments
    dropped. A wrapper whose target is not one of our adapters (or a library version
    whose wrapper looks different) is left as it is."""
    for executor in registry._registry.values():
        for wrapper in executor:
            target = _wrapped_adapter(wrapper._callback)
            if target is not None:
                wrapper._callback = _direct(target)


def _wrapped_adapter(fn: Any) -> Any:
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is None or not cells or getattr(fn, "is_coroutine", True):
        return None
    free = dict(zip(code.co_freevars, cells, strict=False))
    cell = free.get("a_callable")
    if cell is None or "sig_bind_expected" not in free:
        return None
    target = cell.cell_contents
    return target if getattr(target, "_dn_adapter", None) in ("method", "value") else None


def _direct(adapter: Any) -> Any:
    if adapter._dn_adapter == "method":
        invoke = adapter._dn_invoke

        def call_method(*args: Any, **kwargs: Any) -> Any:
            machine = kwargs.pop("machine") if "machine" in kwargs else args[0] if args else None
            return invoke(machine, kwargs)

        call_method._dn_target = adapter  # type: ignore[attr-defined]
        return call_method

    def call_value(*args: Any, **kwargs: Any) -> Any:
        return adapter(kwargs["machine"] if "machine" in kwargs else args[0] if args else None)

    call_value._dn_target = adapter  # type: ignore[attr-defined]
    return call_value


def _getattr_static(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None


def _adapter(cls: type, name: str, static: Any) -> Any:
    """A function of `machine` that calls `name` on it, looked up when called (so an
    attribute set or patched later, on the class or the instance, is the one called), with
    the arguments the library offers that the method names (its own binding rule)."""
    machine_param = inspect.Parameter("machine", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    adapter: Any
    if isinstance(static, FunctionType | staticmethod | classmethod):

        def invoke(machine: Any, kwargs: dict[str, Any]) -> Any:
            fn = getattr(machine, name)
            wanted = _wanted(fn)
            if wanted is None:  # takes **kwargs: everything
                return fn(machine=machine, **kwargs)
            if "machine" in wanted:
                kwargs["machine"] = machine
            return fn(**{k: kwargs[k] for k in wanted if k in kwargs})

        def method(machine: Any, **kwargs: Any) -> Any:
            return invoke(machine, kwargs)

        method._dn_invoke = invoke  # type: ignore[attr-defined]
        method._dn_name = name  # type: ignore[attr-defined]
        adapter = method
        more = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    else:  # a property or a plain attribute: its value when called

        def value(machine: Any) -> Any:
            return getattr(machine, name)

        value._dn_name = name  # type: ignore[attr-defined]
        adapter = value
        more = []
    adapter.__signature__ = inspect.Signature([machine_param, *more])
    adapter._dn_adapter = "method" if more else "value"  # see _call_directly
    # The library caches signatures by qualified name and code: make each one distinct.
    adapter.__qualname__ = f"{cls.__module__}.{cls.__qualname__}.{name}@machine"
    adapter.__name__ = name
    return adapter


def _wanted(fn: Any) -> tuple[str, ...] | None:
    """The keyword parameters a callable names (None: it takes **kwargs), once per function."""
    key = getattr(fn, "__func__", fn)
    try:
        return _WANTED[key]
    except KeyError:
        pass
    params = inspect.signature(fn).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    found: tuple[str, ...] | None = (
        None
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        else tuple(p.name for p in params if p.kind in kinds)
    )
    found = _CANONICAL_WANTED.get(found, found) if found is not None else None
    _WANTED[key] = found
    return found


_WANTED: dict[Any, tuple[str, ...] | None] = {}
_CONFIG_TEMPLATES: dict[type[PureMachine], tuple[tuple[Any, State, int, str | None], ...]] = {}
# The compiled dispatch per class (None: the class keeps the library's engine).
_PLANS: dict[type[PureMachine], Plan | None] = {}
_NO_PLAN: Any = object()
_NONE: Any = object()
# What callbacks name, each one object (`_wanted` answers these): compared by identity.
_NO_ARGS: tuple[str, ...] = ()
_EV = ("ev",)
_STATE = ("state",)
_MOVE = ("event", "source", "target")
_CANONICAL_WANTED = {w: w for w in (_NO_ARGS, _EV, _STATE, _MOVE)}
_NO_KWARGS: dict[str, Any] = {}  # an eventless transition's (read, never written)
_INITIAL_NAME = humanize_id("__initial__")  # the library's name for its activation event
_PLAN_WHY: dict[type[PureMachine], str] = {}


def _plan_for(machine: PureMachine) -> Plan | None:
    cls = type(machine)
    registry = _REGISTRIES.get(cls)
    plan: Plan | None = None
    if not cls.compiled_dispatch:
        _PLAN_WHY[cls] = "compiled_dispatch is off"
    elif registry is None or machine._callbacks is not registry or cls in _PER_INSTANCE:
        _PLAN_WHY[cls] = "callbacks resolved per instance"
    else:
        plan = Plan(cls, registry)
        if plan.unsupported:
            _PLAN_WHY[cls] = plan.unsupported
            plan = None
    _PLANS[cls] = plan
    return plan


def _guarded_names(cls: type[PureMachine]) -> tuple[tuple[str, Any], ...]:
    """The names StateChart.__setattr__ refuses to assign (the states' values), each with
    the value of the state whose proxy the instance holds under it, or None: no attribute
    by that name (a state named like an event has no proxy attribute)."""
    found = _GUARDED.get(cls)
    if found is None:
        events = cls._events
        by_id = {s.id: s for s in cls.states_map.values() if s.id not in events}
        found = _GUARDED[cls] = tuple(
            (str(name), by_id[name].value if name in by_id else None)
            for name in cls.states_map
            if isinstance(name, str)
        )
    return found


_GUARDED: dict[type[PureMachine], tuple[tuple[str, Any], ...]] = {}


def _doc_order(state: State) -> int:
    return state.document_order or 0


_REGISTRIES: dict[type[PureMachine], CallbacksRegistry] = {}
_PER_INSTANCE: set[type[PureMachine]] = set()

# Per-class tables computed once (the declarations never change after class creation).
_EVENT_TABLES: dict[type[PureMachine], dict[str, frozenset[str]]] = {}
_TAKEN: dict[tuple[type[PureMachine], tuple[str, ...]], frozenset[str]] = {}
# (the active state ids, the atomic one, the active states, the atomic one's id)
_View = tuple[tuple[str, ...], State | None, tuple[State, ...], str | None]
# (class, active state values) → (their ids, the atomic one's index and id, or None)
_SHAPES: dict[
    tuple[type[PureMachine], tuple[Any, ...]], tuple[tuple[str, ...], int | None, str | None]
] = {}
_DECLARED: dict[type[PureMachine], frozenset[str]] = {}
_INTERESTS: dict[type[PureMachine], frozenset[str]] = {}
