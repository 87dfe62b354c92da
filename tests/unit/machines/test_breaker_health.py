from __future__ import annotations

import pytest

from engine.core.clock import VirtualClock
from engine.core.events import ConnectionChanged
from engine.core.events import OrderAccepted
from engine.core.events import VenueError
from engine.core.intents import SendAlert
from engine.core.loop import Engine
from machines.breaker import BreakerMachine
from machines.health import HealthMachine

S = 1_000_000_000


def fail(error_class="retryable", retry_after=None):
    return VenueError(error_class=error_class, request="place_order", retry_after_s=retry_after)


@pytest.fixture
def breaker():
    clock = VirtualClock()
    engine = Engine(clock)
    engine.spawn(BreakerMachine, "breaker", threshold=3, cooldown_s=60)
    return clock, engine


def test_breaker_opens_after_n_consecutive_failures_and_alerts(breaker):
    _, engine = breaker
    out = []
    for _ in range(3):
        out += engine.process(fail())
    assert engine.ledger.state_of("breaker") == ("open",)
    assert [i.event for i in out if isinstance(i, SendAlert)] == ["breaker_open"]


def test_breaker_success_resets_the_count(breaker):
    _, engine = breaker
    engine.process(fail())
    engine.process(fail())
    engine.process(OrderAccepted(order_id="x"))
    engine.process(fail())
    assert engine.ledger.state_of("breaker") == ("closed",)


def test_rate_limits_do_not_open_the_breaker(breaker):
    _, engine = breaker
    for _ in range(10):
        engine.process(fail("rate_limited"))
    assert engine.ledger.state_of("breaker") == ("closed",)


def test_breaker_half_opens_after_cooldown_then_closes_or_reopens(breaker):
    clock, engine = breaker
    for _ in range(3):
        engine.process(fail())
    clock.advance(60 * S)
    engine.drain()
    assert engine.ledger.state_of("breaker") == ("half_open",)
    engine.process(fail())
    assert engine.ledger.state_of("breaker") == ("open",)
    clock.advance(60 * S)
    engine.drain()
    engine.process(OrderAccepted(order_id="y"))
    assert engine.ledger.state_of("breaker") == ("closed",)


def test_health_degrades_without_stream_and_goes_minimal_on_429():
    clock = VirtualClock()
    engine = Engine(clock)
    engine.spawn(HealthMachine, "health", quiet_s=10)
    engine.process(ConnectionChanged(channel="ws", state="disconnected"))
    assert engine.ledger.state_of("health") == ("degraded",)
    engine.process(fail("rate_limited", retry_after="30"))
    assert engine.ledger.state_of("health") == ("minimal",)
    engine.process(ConnectionChanged(channel="ws", state="connected"))
    clock.advance(29 * S)
    engine.drain()
    assert engine.ledger.state_of("health") == ("minimal",)  # Retry-After honoured
    clock.advance(1 * S)
    engine.drain()
    assert engine.ledger.state_of("health") == ("normal",)
