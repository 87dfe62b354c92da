"""PureMachine resolves its callbacks once per class and shares them between instances;
each instance's callbacks still act on that instance."""

from __future__ import annotations

import pytest

from engine.core.clock import VirtualClock
from engine.core.events import FillReceived
from engine.core.loop import Engine
from machines.base import PureMachine
from machines.base import State


def _fill(n: int) -> FillReceived:
    return FillReceived(
        order_id=f"x{n}", fill_id=f"f{n}", product_id=4, side="buy", price="1", qty="1"
    )


class Tally(PureMachine):
    counting = State(initial=True)
    done = State(final=True)

    fill_received = counting.to(done, cond="enough", on="count") | counting.to(None, on="count")

    def setup(self, **params: object) -> None:
        self.need = int(str(params.get("need", 2)))
        self.seen: list[str] = []
        self.entered: list[str] = []

    def enough(self, ev: FillReceived) -> bool:
        return len(self.seen) + 1 >= self.need

    def count(self, ev: FillReceived) -> None:
        self.seen.append(ev.fill_id)

    def on_enter_done(self, source: State) -> None:
        self.entered.append(f"done from {source.id}")


class ByAttribute(PureMachine):
    """A guard naming an instance attribute the class does not define."""

    waiting = State(initial=True)
    done = State(final=True)
    fill_received = waiting.to(done, cond="ready")

    def setup(self, **params: object) -> None:
        self.ready = bool(params.get("ready"))


def test_instances_share_one_callback_registry_and_act_on_themselves():
    engine = Engine(VirtualClock())
    a = engine.spawn(Tally, "a", need=1)
    b = engine.spawn(Tally, "b", need=3)
    assert a._callbacks is b._callbacks
    engine.process(_fill(1))  # broadcast: both take it
    assert engine.finished == {"a": "done"}
    assert isinstance(a, Tally)
    assert isinstance(b, Tally)
    assert a.seen == ["f1"]
    assert a.entered == ["done from counting"]
    assert b.seen == ["f1"]
    assert b.entered == []
    engine.process(_fill(2))
    engine.process(_fill(3))
    assert engine.finished == {"a": "done", "b": "done"}
    assert b.seen == ["f1", "f2", "f3"]


def test_a_class_naming_instance_attributes_keeps_per_instance_resolution():
    engine = Engine(VirtualClock())
    no = engine.spawn(ByAttribute, "no", ready=False)
    yes = engine.spawn(ByAttribute, "yes", ready=True)
    assert no._callbacks is not yes._callbacks
    engine.process(_fill(1))
    assert engine.finished == {"yes": "done"}
    assert engine.unhandled == {("ByAttribute", "waiting", "fill_received"): 1}


def test_converted_machines_consume_and_declare_no_catch_alls():
    from machines.breaker import BreakerMachine
    from machines.connection import ConnectionMachine
    from machines.demo import ProbeMachine
    from machines.health import HealthMachine
    from machines.restore import RestoreMachine
    from machines.session import SessionMachine
    from tests.unit.machines.fakes import catch_alls

    for cls in (
        SessionMachine,
        ConnectionMachine,
        BreakerMachine,
        HealthMachine,
        RestoreMachine,
        ProbeMachine,
    ):
        assert cls.unhandled == "consume", cls.__name__
        assert catch_alls(cls) == [], cls.__name__
        # Deadlines arrive as their own events: none of them takes `deadline_expired`.
        assert "deadline_expired" not in cls.declared_events(), cls.__name__


def test_a_listener_cannot_be_added_to_one_instance_of_a_shared_registry():
    import pytest

    engine = Engine(VirtualClock())
    machine = engine.spawn(Tally, "a")
    with pytest.raises(TypeError, match="no listeners"):
        machine.add_listener(object())


def test_a_method_patched_after_the_first_instance_is_the_one_called(monkeypatch):
    engine = Engine(VirtualClock())
    engine.spawn(Tally, "before", need=5)  # the class's callbacks are resolved here
    monkeypatch.setattr(Tally, "enough", lambda self, ev: True)
    late = engine.spawn(Tally, "after", need=5)
    engine.process(_fill(1))
    assert engine.finished == {"before": "done", "after": "done"}
    assert isinstance(late, Tally)
    assert late.seen == ["f1"]


def test_shared_callbacks_skip_the_library_binding_and_bind_as_it_would():
    """The class registry calls our adapters directly (machines/base.py `_call_directly`),
    with the arguments the library's own binding would give them."""
    from statemachine.dispatcher import callable_method

    from machines.base import _REGISTRIES
    from machines.base import _adapter
    from machines.base import _direct

    engine = Engine(VirtualClock())
    engine.spawn(Tally, "a", need=2)
    wrappers = [w for ex in _REGISTRIES[Tally]._registry.values() for w in ex]
    names = {w._callback.__name__ for w in wrappers}
    assert {"enough", "count", "on_enter_done"} <= {w.meta.func for w in wrappers}
    assert names <= {"call_method", "call_value"}, names  # none left behind the library's
    calls: list[tuple[object, ...]] = []

    class Probe:
        def takes_all(self, **kw: object) -> None:
            calls.append(("all", sorted(kw)))

        def takes_some(self, ev: object, machine: object = None) -> None:
            calls.append(("some", ev, machine is self))

    probe = Probe()
    for name in ("takes_all", "takes_some"):
        adapter = _adapter(Probe, name, getattr(Probe, name))
        for args, kw in (((), {"machine": probe, "ev": 1, "x": 2}), ((probe,), {"ev": 1})):
            calls.clear()
            callable_method(adapter)(*args, **kw)
            library = list(calls)
            calls.clear()
            _direct(adapter)(*args, **kw)
            assert calls == library, (name, args, kw)


class Overrides(PureMachine):
    """Assigns an attribute named like one of its states (a bug the library refuses)."""

    idle = State(initial=True)
    done = State(final=True)
    fill_received = idle.to(done, on="clobber")

    def setup(self, **params: object) -> None:
        self.at_start = bool(params.get("at_start"))
        self.counted = 0

    def on_enter_idle(self) -> None:
        self.counted += 1  # any other attribute: assigned as usual
        if self.at_start:
            self.done = "oops"  # type: ignore[assignment]

    def clobber(self) -> None:
        self.idle = "oops"  # type: ignore[assignment]


def test_an_attribute_named_like_a_state_is_refused_by_the_end_of_the_step():
    from statemachine.exceptions import StateMachineError

    engine = Engine(VirtualClock())
    machine = engine.spawn(Overrides, "a", at_start=False)
    assert isinstance(machine, Overrides)
    assert machine.counted == 1
    assert machine.idle.is_active  # the state, not an attribute
    with pytest.raises(StateMachineError, match="State overriding is not allowed"):
        machine.send("fill_received", ev=_fill(1))
    with pytest.raises(StateMachineError, match="State overriding is not allowed"):
        engine.spawn(Overrides, "b", at_start=True)
