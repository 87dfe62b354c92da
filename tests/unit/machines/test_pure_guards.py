"""Guards only answer (issue 13): evaluating a guard of the position-work machine (BUILD,
UNWIND or the emergency exit) changes nothing on the machine and sends, notes, arms or
spawns nothing. Checked on every guard call of seeded fault walks, by wrapping the declared
guards."""

from __future__ import annotations

import functools
from decimal import Decimal

import pytest

from engine.ops.diagrams import declared_edges
from machines.base import PureMachine
from machines.position_work import PositionWork
from machines.pricing import OrderTracker
from tests.unit.machines.fakes import ETH
from tests.unit.machines.fakes import SOL
from tests.unit.machines.fakes import params
from tests.unit.machines.fakes import run_chaos

OPEN = {ETH: Decimal("0.333"), SOL: Decimal("-6.66")}
LEGGED = {ETH: Decimal("0.333")}  # one leg open: the hedge deadline is watched
CASES = [
    ("build", {}, {}),
    ("unwind", OPEN, {}),
    ("unwind", LEGGED, {}),
    ("exit", OPEN, {"reason": "t"}),
]


def _fingerprint(machine: PureMachine) -> dict[str, str]:
    out = {}
    for name, value in vars(machine).items():
        if name == "ctx":
            continue
        out[name] = repr(value.orders) if isinstance(value, OrderTracker) else repr(value)
    return out


class Watch:
    def __init__(self) -> None:
        self.depth = 0
        self.calls = 0

    def wrap_guard(self, fn):
        @functools.wraps(fn)
        def guard(machine, *args, **kwargs):
            before = _fingerprint(machine)
            self.depth += 1
            try:
                result = fn(machine, *args, **kwargs)
            finally:
                self.depth -= 1
            self.calls += 1
            assert _fingerprint(machine) == before, f"guard {fn.__name__} changed the machine"
            return result

        return guard

    def wrap_effect(self, fn):
        @functools.wraps(fn)
        def effect(machine, *args, **kwargs):
            assert not self.depth, f"{fn.__name__} called from a guard"
            return fn(machine, *args, **kwargs)

        return effect


@pytest.mark.parametrize(
    ("purpose", "positions", "extra"), CASES, ids=lambda c: c if isinstance(c, str) else ""
)
@pytest.mark.parametrize("seed", range(6))
def test_guards_change_nothing_and_send_nothing(monkeypatch, purpose, positions, extra, seed):
    cls = PositionWork
    watch = Watch()
    guards = {g for e in declared_edges(cls) for g in e.guards}
    for name in guards:
        monkeypatch.setattr(cls, name, watch.wrap_guard(getattr(cls, name)))
    for name in ("emit", "note", "arm", "disarm", "spawn", "next_id"):
        monkeypatch.setattr(PureMachine, name, watch.wrap_effect(getattr(PureMachine, name)))
    engine, _ = run_chaos(cls, params(), seed, positions=positions, purpose=purpose, **extra)
    assert "m" in engine.finished
    assert watch.calls > 0  # the guards did run, wrapped
