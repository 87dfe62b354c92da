"""Deadlines keep each machine's deadlines apart (a state's exit looks at its own machine's
only), in arming order; `take` and `len` read the same table."""

from __future__ import annotations

from engine.core.clock import VirtualClock
from engine.core.events import DeadlineExpired
from engine.core.timers import Deadlines

S = 1_000_000_000


def _deadlines() -> tuple[VirtualClock, Deadlines, list[DeadlineExpired]]:
    clock = VirtualClock()
    fired: list[DeadlineExpired] = []
    return clock, Deadlines(clock, fired.append), fired


def test_a_state_exit_disarms_only_its_own_machines_deadlines_in_arming_order():
    _clock, deadlines, _fired = _deadlines()
    deadlines.arm("a", "fills_timeout", 0, S, "working")
    deadlines.arm("b", "fills_timeout", 0, S, "working")
    deadlines.arm("a", "budget_timeout", 0, 9 * S, "work")
    deadlines.arm("a", "settle_timeout", 0, 2 * S, "working")
    deadlines.arm("a", "fills_timeout", 0, 3 * S, "working")  # re-armed: now the newest

    left = deadlines.disarm_owned("a", "working")

    assert [x.name for x in left] == ["settle_timeout", "fills_timeout"]
    assert [x.name for x in deadlines.armed_for("a")] == ["budget_timeout"]
    assert [x.name for x in deadlines.armed_for("b")] == ["fills_timeout"]
    assert len(deadlines) == 2
    assert deadlines.disarm_owned("c", "working") == []


def test_taking_an_expiry_and_disarming_all_leave_nothing_behind():
    clock, deadlines, fired = _deadlines()
    deadlines.arm("a", "fills_timeout", 0, S, "working")
    stale = deadlines.arm("a", "settle_timeout", 0, 2 * S, "cancelling")
    deadlines.arm("a", "settle_timeout", 0, 5 * S, "cancelling")  # the first one is stale now
    deadlines.arm("b", "pause_over", 0, 4 * S, None)

    clock.advance_to(2 * S)
    assert [(e.name, e.target) for e in fired] == [("fills_timeout", "a")]
    assert deadlines.take(fired[0])
    assert not deadlines.take(fired[0])  # consumed
    assert not deadlines.take(
        DeadlineExpired(name="settle_timeout", generation=stale.generation, target="a")
    )
    assert [x.name for x in deadlines.armed_for("a")] == ["settle_timeout"]

    assert [x.name for x in deadlines.disarm_all("a")] == ["settle_timeout"]
    assert deadlines.armed_for("a") == []
    assert [x.name for x in deadlines.armed_for("b")] == ["pause_over"]
    clock.advance_to(10 * S)  # a disarmed deadline never fires
    assert [(e.name, e.target) for e in fired[1:]] == [("pause_over", "b")]
    assert len(deadlines) == 1
