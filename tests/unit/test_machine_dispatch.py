"""The compiled dispatch (machines/dispatch.py) does what python-statemachine's own engine
does: the same callbacks in the same order with the same arguments, the same
configuration after every event, the same errors, and the same journals for whole runs.
Each check runs the same thing twice, once with `compiled_dispatch` off (the library's
engine, the reference) and once on, and compares."""

from __future__ import annotations

from typing import Any

import pytest

from machines import base
from machines.base import PureMachine
from machines.base import State
from tests.replay.scenarios import SCENARIOS
from tests.replay.scenarios import run_scenario


class Ctx:
    machine_id = "m"
    ledger: Any = None

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def emit(self, intent: Any) -> None:
        self.log.append(("emit", intent))

    def arm(self, name: str, seconds: Any) -> None:
        self.log.append(("arm", name))

    def disarm(self, name: str) -> None:
        self.log.append(("disarm", name))

    def spawn(self, cls: Any, machine_id: str, **params: Any) -> Any:
        raise AssertionError("not here")

    def note(self, text: str, **data: Any) -> None:
        self.log.append(("note", text))

    def entering(self, state_id: str) -> None:
        self.log.append(("entering", state_id))

    def exiting(self, state_id: str) -> None:
        self.log.append(("exiting", state_id))

    def transitioned(self, event: str, source: str, target: str | None) -> None:
        self.log.append(("transitioned", event, source, target))


def _ids(*states: Any) -> list[Any]:
    return [getattr(s, "id", s) for s in states]


class Chart(PureMachine):
    """Compound states with initial children, eventless transitions (from a child and from
    the parent), targetless and self transitions, guards (`cond` lists and `unless`),
    convention callbacks (`before_`/`on_`/`after_<event>`, `on_enter_`/`on_exit_<state>`)
    and a final state."""

    idle = State(initial=True)
    a1 = State(initial=True)
    a2 = State()
    a3 = State()
    busy = State(states=[a1, a2, a3])
    b1 = State(initial=True)
    b2 = State()
    inner = State(states=[b1, b2])
    other = State(states=[inner])
    done = State(final=True)

    go = idle.to(busy) | busy.to(other, cond="far") | busy.to(busy, unless="far")
    step = a1.to(a2, on="log_on") | a2.to(a3) | a3.to(None, on="log_on")
    poke = busy.to(None, cond=["ok", "also_ok"], on="log_on") | other.to(idle)
    hop = b1.to(b2) | inner.to(a2)
    boom = idle.to(done, on="explode") | busy.to(idle, on="explode")
    finish = idle.to(done) | busy.to(done) | other.to(done)

    a3.to(b2, cond="leave_now")  # eventless, from a child
    a2.to(a3, cond=["ok", "reset_now"])  # eventless: a plain guard, then one with arguments
    busy.to(idle, cond="reset_now")  # eventless, from the parent

    def setup(self, **params: Any) -> None:
        self.log: list[Any] = params["log"]
        self.flags: dict[str, bool] = params["flags"]

    def _flag(self, name: str) -> bool:
        self.log.append(("guard", name))
        return self.flags.get(name, False)

    def far(self, ev: Any = None) -> bool:
        return self._flag("far")

    def ok(self) -> bool:
        return self._flag("ok")

    def also_ok(self) -> bool:
        return self._flag("also_ok")

    def leave_now(self) -> bool:
        return self._flag("leave_now")

    def reset_now(self, event: Any, source: State, target: State) -> bool:
        self.log.append(("reset_now?", str(event), *_ids(source, target)))
        return self.flags.get("reset_now", False)

    def log_on(self, event: Any, source: State, target: State | None, transition: Any) -> str:
        self.log.append(("on", str(event), *_ids(source, target), transition.event))
        return f"on:{event}"

    def explode(self) -> None:
        self.log.append(("explode",))
        raise RuntimeError("boom")

    def before_go(self, ev: Any = None) -> str:
        self.log.append(("before_go", ev))
        return "before"

    def on_go(self, state: State) -> None:
        self.log.append(("on_go", state.id, self.state_ids))

    def after_step(self, state: State, source: State, target: State | None) -> None:
        self.log.append(("after_step", *_ids(state, source, target), self.state_ids))

    def on_enter_busy(self, source: State, transition: Any) -> None:
        self.log.append(("enter busy", source.id, transition.event, self.state_ids))

    def on_exit_busy(self, state: State, target: State | None) -> None:
        self.log.append(("exit busy", *_ids(state, target), self.state_ids))

    def on_enter_b1(self, source: State, event: Any) -> None:
        self.log.append(("enter b1", source.id, str(event), self.state_ids))

    def on_enter_done(self) -> None:
        self.log.append(("enter done", self.state_ids))


SCRIPT: list[tuple[str, dict[str, bool]]] = [
    ("step", {}),  # not in idle: refused
    ("go", {}),
    ("step", {}),
    ("poke", {"ok": True}),  # the second guard refuses
    ("poke", {"ok": True, "also_ok": True}),
    ("go", {}),  # self transition of the parent: re-entered, a1 again
    ("step", {}),
    ("step", {}),
    ("step", {"leave_now": True}),  # a3 → b2 at once, eventless, entering other and inner
    ("hop", {}),  # inner → a2: into busy at a non-initial child
    ("nothing", {}),  # declared by no one: an unknown event
    ("step", {"reset_now": True}),  # eventless from the parent before the event: idle
    ("boom", {}),  # raises in `on`: the configuration comes back
    ("go", {"far": True}),
    ("boom", {}),
    ("finish", {}),
    ("go", {}),  # terminated
]


class Nest(PureMachine):
    """Activation: a compound initial state, eventless transitions taken at once."""

    x = State(initial=True)
    y = State()
    outer = State(states=[x, y], initial=True)
    end = State(final=True)

    x.to(y, cond="hop_now")
    y.to(end, cond="end_now")
    go = outer.to(outer)

    def setup(self, **params: Any) -> None:
        self.log: list[Any] = params["log"]
        self.flags: dict[str, bool] = params["flags"]

    def hop_now(self) -> bool:
        self.log.append(("guard hop_now", self.state_ids))
        return self.flags.get("hop_now", False)

    def end_now(self) -> bool:
        return self.flags.get("end_now", False)

    def on_enter_outer(self, source: State, transition: Any, event: Any) -> None:
        self.log.append(("enter outer", source.id, transition.event, str(event), self.state_ids))

    def on_enter_x(self, source: State, transition: Any) -> None:
        self.log.append(("enter x", source.id, transition.initial, self.state_ids))


def _run(
    cls: type[PureMachine],
    script: list[tuple[str, dict[str, bool]]],
    compiled: bool,
    monkeypatch: pytest.MonkeyPatch,
    start: dict[str, bool] | None = None,
) -> list[Any]:
    monkeypatch.setattr(base, "_PLANS", {})
    monkeypatch.setattr(cls, "compiled_dispatch", compiled)
    log: list[Any] = []
    flags: dict[str, bool] = {}
    # The first instance starts through the library and compiles the class on its first
    # event; the one whose log is compared starts from the table when compiled.
    first = cls(Ctx([]), log=[], flags={})
    with pytest.raises(first.TransitionNotAllowed):
        first.send("no_such_event")
    assert (base._PLANS[cls] is not None) == compiled
    flags.update(start or {})
    m = cls(Ctx(log), log=log, flags=flags)
    log.append(("start", m.state_ids, m.is_terminated))
    for event, set_flags in script:
        flags.clear()
        flags.update(set_flags)
        try:
            result = m.send(event, ev=event.upper())
        except Exception as exc:  # the error itself is compared
            log.append(("raised", type(exc).__name__, str(exc)))
        else:
            log.append(("result", result))
        log.append(("after", event, m.state_ids, m.is_terminated, list(m.configuration_values)))
    # the library's engine, built on demand for a machine started from the table, agrees
    log.append(("engine", m._engine.running, m.is_terminated, [e.id for e in m.allowed_events]))
    return log


def test_the_table_runs_a_chart_as_the_library_does(monkeypatch):
    reference = _run(Chart, SCRIPT, False, monkeypatch)
    compiled = _run(Chart, SCRIPT, True, monkeypatch)
    assert compiled == reference
    assert any(e[0] == "raised" for e in reference)
    assert reference[-2][3] is True  # terminated
    assert reference[-1][:3] == ("engine", False, True)


@pytest.mark.parametrize(
    "start", [{}, {"hop_now": True}, {"hop_now": True, "end_now": True}], ids=str
)
def test_the_table_starts_a_machine_as_the_library_does(start, monkeypatch):
    script = [("go", {}), ("go", {"hop_now": True}), ("go", {"end_now": True}), ("go", {})]
    reference = _run(Nest, script, False, monkeypatch, start)
    assert reference[0][:2] == ("entering", "outer")
    assert _run(Nest, script, True, monkeypatch, start) == reference


def test_every_machine_the_engine_runs_compiles(monkeypatch):
    monkeypatch.setattr(base, "_PLANS", {})
    run_scenario(SCENARIOS["seed003_restart_with_residual"])
    run_scenario(SCENARIOS["one_leg_reject"])
    assert base._PLANS, "no machine ran"
    assert {c.__name__: base._PLAN_WHY.get(c) for c, p in base._PLANS.items() if p is None} == {}


@pytest.mark.parametrize(
    "name",
    ["seed002_partial_fill_then_cancel", "one_leg_reject", "bug003_stop_through_with_timeouts"],
)
def test_a_run_journals_the_same_either_way(name, monkeypatch):
    monkeypatch.setattr(base, "_PLANS", {})
    monkeypatch.setattr(PureMachine, "compiled_dispatch", False)
    reference = run_scenario(SCENARIOS[name]).records
    assert all(p is None for p in base._PLANS.values())
    monkeypatch.setattr(base, "_PLANS", {})
    monkeypatch.setattr(PureMachine, "compiled_dispatch", True)
    compiled = run_scenario(SCENARIOS[name]).records
    assert [(r.kind, r.machine, r.data) for r in compiled] == [
        (r.kind, r.machine, r.data) for r in reference
    ]


def test_the_configuration_template_builds_the_library_proxies():
    from statemachine import StateChart

    m = Chart(Ctx([]), log=[], flags={})
    ours, theirs = m._build_configuration(), StateChart._build_configuration(m)
    assert list(ours._instance_states) == list(theirs._instance_states)
    for mine, lib in zip(
        ours._instance_states.values(), theirs._instance_states.values(), strict=True
    ):
        assert vars(mine).keys() == vars(lib).keys()
        assert (mine._state, mine._hash, mine._machine()) == (lib._state, lib._hash, m)
    assert m.idle.is_active  # the proxies exposed by state id
    assert not m.busy.is_active
