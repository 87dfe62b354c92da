"""SESSION against the scripted fake venue: policy, not plumbing."""

from __future__ import annotations

from decimal import Decimal

from engine.core.clock import VirtualClock
from engine.core.events import OpenOrdersSnapshot
from engine.core.events import OperatorCommand
from engine.core.intents import Halt
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOpenOrders
from engine.core.intents import SendAlert
from engine.core.loop import Engine
from engine.runtime.runner import run_virtual
from machines.session import SessionMachine
from tests.unit.machines.fakes import MS
from tests.unit.machines.fakes import FakeVenue
from tests.unit.machines.fakes import S
from tests.unit.machines.fakes import params

D = Decimal


class Venue(FakeVenue):
    """The fake venue plus what restore asks for, and a BBO every 100 ms."""

    def send(self, intent: Intent) -> None:
        if isinstance(intent, QueryOpenOrders):
            self.sent.append(intent)
            snap = OpenOrdersSnapshot(
                orders=[], product_ids=intent.product_ids, request_id=intent.request_id
            )
            self._later(self.rtt_ms, snap)
            return
        super().send(intent)

    def tick(self) -> None:
        self.push_bbo()
        self.clock.call_later(100 * MS, self.tick)


def session(*, cycles=2, venue=None, until=None, limit_s=300, **extra):
    clock = VirtualClock()
    engine = Engine(clock)
    fake = Venue(engine, clock, **(venue or {}))
    fake.tick()
    engine.spawn(SessionMachine, "session", params=params(), cycles=cycles, **extra)

    def over() -> bool:
        return "session" in engine.finished or bool(fake.of(Halt)) or bool(until and until(fake))

    run_virtual(
        engine,
        clock,
        fake.send,
        initial=engine._finish_step(),
        until=over,
        deadline_ns=limit_s * S,
    )
    return engine, fake


def builds(fake):
    return [i for i in fake.sent if isinstance(i, PlaceOrder) and i.purpose == "build"]


def test_session_cycles_alternate_direction_and_end_flat():
    engine, fake = session(cycles=2)
    assert engine.finished["session"] == "done"
    first, second = builds(fake)[:2], builds(fake)[2:4]
    assert {(o.product_id, o.side) for o in first} == {(4, "buy"), (8, "sell")}
    assert {(o.product_id, o.side) for o in second} == {(4, "sell"), (8, "buy")}
    assert fake.positions.get(4, D(0)) == 0
    assert fake.positions.get(8, D(0)) == 0


def test_restart_with_residual_position_flattens_before_any_build():
    engine, fake = session(cycles=1, venue={"positions": {8: D("-2")}})
    assert engine.finished["session"] == "done"
    places = [i for i in fake.sent if isinstance(i, PlaceOrder)]
    first_build = next(i for i, o in enumerate(places) if o.purpose == "build")
    exits = [i for i, o in enumerate(places) if o.purpose == "emergency"]
    assert exits
    assert max(exits) < first_build  # flattened first
    assert fake.positions.get(8, D(0)) == 0
    # A residual found at start is not a failed cycle: it does not bring HALT nearer.
    assert engine.finished["session"] == "done"


def test_two_consecutive_failed_cycles_halt_with_the_reason_stated():
    # SOL never fills: every BUILD leaves ETH open, recovery flattens it, twice → HALT.
    engine, fake = session(cycles=5, venue={"liquidity": {8: D(0)}})
    halts = fake.of(Halt)
    assert len(halts) == 1
    assert halts[0].reason == "two consecutive failed cycles"
    assert engine.machines["session"].state_ids == ["halted"]
    assert fake.positions.get(4, D(0)) == 0  # recoveries were verified flat
    critical = [a for a in fake.of(SendAlert) if a.event == "halt"]
    assert critical
    assert critical[0].severity == "critical"


def test_halt_is_sticky_until_an_operator_resumes():
    engine, fake = session(cycles=5, venue={"liquidity": {8: D(0)}})
    n_builds = len(builds(fake))
    # Time passes: nothing new opens while halted.
    run_virtual(engine, engine.clock, fake.send, deadline_ns=engine.clock.now_ns() + 60 * S)
    assert len(builds(fake)) == n_builds
    assert engine.machines["session"].state_ids == ["halted"]
    fake.liquidity.clear()
    engine.submit(OperatorCommand(command="resume"), "operator")
    run_virtual(
        engine,
        engine.clock,
        fake.send,
        until=lambda: "session" in engine.finished,
        deadline_ns=engine.clock.now_ns() + 120 * S,
    )
    assert engine.finished["session"] == "done"
    assert len(builds(fake)) > n_builds


def test_exposure_above_tolerance_while_holding_triggers_the_emergency_exit():
    lost = []

    def lose_a_leg(fake):
        # Once, mid-hold, the SOL leg vanishes at the venue (e.g. liquidated): ETH is naked.
        holding = fake.engine.ledger.state_of("session") == ("holding",)
        if holding and fake.positions.get(8) and not lost:
            lost.append(fake.clock.now_ns())
            fake.positions[8] = D(0)
            fake.history.append((fake.clock.now_ns(), dict(fake.positions)))
        return False

    engine, fake = session(cycles=1, hold_s="10", until=lose_a_leg)
    alerts = [a.event for a in fake.of(SendAlert)]
    assert "exposure_above_tolerance" in alerts
    # Detected by the next audit (1 s period); the naked ETH leg (its read agrees with its
    # fills) is flattened at once. The SOL read (0) contradicts the SOL fills the venue
    # reported, so it is never taken as flat (issue 11: a lagging read looks the same):
    # HALT, stating the exposure by the fills and both numbers.
    detected = next(
        r.ts for r in engine.journal.records() if "exposure_above_tolerance" in r.payload
    )
    assert detected - lost[0] <= 1 * S + 100 * MS
    assert fake.positions.get(4, D(0)) == 0
    assert engine.ledger.state_of("session") == ("halted",)
    (halt,) = fake.of(Halt)
    assert "contradicts its reported fills" in halt.reason
    assert "SOL-PERP" in halt.reason
    assert halt.exposure_usd > 100


def test_daily_loss_limit_refuses_entries_until_utc_midnight():
    # 30 s before midnight; any loss at all exceeds a zero limit.
    engine, fake = session(
        cycles=2, max_daily_loss_usd="0", epoch_utc_s=86400 - 30, pause_s="5", limit_s=600
    )
    refusals = [
        r.data
        for r in engine.journal.records()
        if r.kind == "note" and "MAX_DAILY_LOSS" in r.payload
    ]
    assert refusals, "the first cycle's fees must trip the zero limit"
    assert engine.finished["session"] == "done"
    # Trading resumed after midnight: both cycles completed.
    cycle_ts = [
        r.ts for r in engine.journal.records() if r.kind == "intent" and "build" in r.payload
    ]
    assert max(cycle_ts) > 30 * S
    alerts = [a for a in fake.of(SendAlert) if a.event == "daily_loss_limit"]
    assert len(alerts) == 1  # once per day, not per refusal


def test_stop_during_build_finishes_the_build_then_flattens():
    def stop_once_building(fake):
        if builds(fake) and not fake.of_stop:
            fake.of_stop = True
            fake.engine.submit(OperatorCommand(command="stop"), "operator")
            fake.engine.submit(OperatorCommand(command="stop"), "operator")  # twice
        return False

    Venue.of_stop = False
    engine, fake = session(cycles=None, until=stop_once_building)
    assert engine.finished["session"] == "done"
    assert fake.positions.get(4, D(0)) == 0
    assert fake.positions.get(8, D(0)) == 0
    assert len(builds(fake)) == 2  # exactly one BUILD was sent, none after the stop


def test_stop_loss_while_holding_exits_and_bounds_the_loss():
    # BUG-003 shape: while the pair is open, SOL (the short leg) rallies 4 %: a 40 USD
    # loss on 1000 USD, under the 50 USD hedge tolerance but through a 3 % stop.
    moved = []

    def rally(fake):
        holding = fake.engine.ledger.state_of("session") == ("holding",)
        if holding and not moved:
            moved.append(fake.clock.now_ns())
            bid, ask = fake.books[8]
            fake.books[8] = (bid * D("1.04"), ask * D("1.04"))
        return False

    engine, fake = session(cycles=1, hold_s="10", until=rally, stop_loss_pct="3")
    alerts = [a for a in fake.of(SendAlert) if a.event == "stop_loss"]
    assert len(alerts) == 1
    detected = next(r.ts for r in engine.journal.records() if '"stop_loss"' in r.payload)
    assert detected - moved[0] <= 1 * S + 100 * MS
    assert fake.positions.get(4, D(0)) == 0
    assert fake.positions.get(8, D(0)) == 0
    # Realised loss stays within the move (4 % of 1000 USD) plus the first exit rung (50 bps).
    assert -engine.ledger.realized_pnl <= D(40) + D(1000) * D("0.005") * 2


def test_fill_for_an_order_never_placed_alerts_stops_new_cycles_flattens_and_halts():
    # Issue 11 item 5 (RELIABILITY D6, V9): someone else trades the account mid-hold.
    from engine.core.events import FillReceived

    seen = []

    def foreign(fake):
        holding = fake.engine.ledger.state_of("session") == ("holding",)
        if holding and not seen:
            seen.append(fake.clock.now_ns())
            fake.positions[4] = fake.positions.get(4, D(0)) + D("1.5")
            fake.history.append((fake.clock.now_ns(), dict(fake.positions)))
            intents = fake.engine.process(
                FillReceived(
                    order_id="0xnot-ours",
                    fill_id="f-foreign",
                    product_id=4,
                    side="buy",
                    price="3000",
                    qty="1.5",
                )
            )
            for intent in intents:
                fake.send(intent)
        return False

    engine, fake = session(cycles=3, until=foreign)
    alerts = [a.event for a in fake.of(SendAlert)]
    assert "unknown_order_fill" in alerts
    assert engine.ledger.state_of("session") == ("halted",)
    assert len(builds(fake)) == 2  # one BUILD (two legs), no new cycle after it
    assert fake.positions.get(4, D(0)) == 0
    assert fake.positions.get(8, D(0)) == 0
    (halt,) = fake.of(Halt)
    assert "never placed" in halt.reason
