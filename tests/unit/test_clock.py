from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from engine.core.clock import VirtualClock
from engine.core.clock import WallClock
from engine.core.clock import ns_to_seconds
from engine.core.clock import seconds_to_ns


def test_virtual_timers_fire_in_due_then_sequence_order():
    clock = VirtualClock()
    fired: list[str] = []
    clock.call_later(200, lambda: fired.append("late"))
    clock.call_later(100, lambda: fired.append("first-at-100"))
    clock.call_later(100, lambda: fired.append("second-at-100"))
    clock.advance(150)
    assert fired == ["first-at-100", "second-at-100"]
    assert clock.now_ns() == 150
    clock.run_until_idle()
    assert fired[-1] == "late"
    assert clock.now_ns() == 200


def test_virtual_timer_sees_its_own_due_time_and_cancel_works():
    clock = VirtualClock()
    seen: list[int] = []
    handle = clock.call_later(50, lambda: seen.append(-1))
    clock.call_later(70, lambda: seen.append(clock.now_ns()))
    handle.cancel()
    clock.advance(1000)
    assert seen == [70]


def test_virtual_clock_refuses_to_go_back():
    clock = VirtualClock(start_ns=10)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_to(5)
    with pytest.raises(ValueError, match="backwards"):
        clock.set_time(5)


def test_timer_armed_inside_a_timer_fires_in_the_same_advance():
    clock = VirtualClock()
    out: list[int] = []
    clock.call_later(10, lambda: clock.call_later(10, lambda: out.append(clock.now_ns())))
    clock.advance(25)
    assert out == [20]


def test_seconds_conversion_is_exact():
    assert seconds_to_ns(Decimal("5.000")) == 5_000_000_000
    assert seconds_to_ns("0.001") == 1_000_000
    assert seconds_to_ns(0.1) == 100_000_000
    assert ns_to_seconds(1_500_000_000) == Decimal("1.5")


@pytest.mark.asyncio
async def test_wall_clock_is_monotonic_and_schedules_on_the_loop():
    clock = WallClock()
    done = asyncio.get_running_loop().create_future()
    t0 = clock.now_ns()
    clock.call_later(1_000_000, lambda: done.set_result(clock.now_ns()))
    t1 = await asyncio.wait_for(done, timeout=5)
    assert t1 >= t0 + 1_000_000
