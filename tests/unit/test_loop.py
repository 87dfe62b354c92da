from __future__ import annotations

from decimal import Decimal

import pytest

from engine.clock import VirtualClock
from engine.events import DeadlineExpired
from engine.events import FillReceived
from engine.events import PositionSnapshot
from engine.intents import PlaceOrder
from engine.intents import QueryPositions
from engine.loop import Engine
from engine.loop import MachineError
from engine.runner import run_virtual
from machines.base import PureMachine
from machines.base import State
from tests.support import ScriptedVenue

S = 1_000_000_000


def probe_engine(**config):
    clock = VirtualClock()
    engine = Engine(clock)
    venue = ScriptedVenue(engine, clock, **config.pop("venue", {}))
    first = engine.start("engine.demo:start_probe", config)
    return clock, engine, venue, first


def notes(engine, text):
    return [r.data for r in engine.journal.records() if r.kind == "note" and r.data["note"] == text]


def test_probe_happy_path_is_verified_by_the_venue():
    clock, engine, venue, first = probe_engine()
    assert [type(i) for i in first] == [PlaceOrder]
    assert run_virtual(engine, clock, venue.send, initial=first) == "idle"
    assert engine.finished == {"probe0": "verified"}
    assert [type(i) for i in venue.sent] == [PlaceOrder, QueryPositions]
    assert engine.ledger.position(4) == Decimal("0.1")


def test_deadline_fires_at_exactly_five_seconds_of_virtual_time():
    # Arrange: a venue that acknowledges but never fills.
    clock, engine, venue, first = probe_engine(venue={"fill_ms": None})
    # Act
    run_virtual(engine, clock, venue.send, initial=first)
    # Assert: the expiry event was ingested at exactly 5.000 s and failed the probe.
    expiry = [r for r in engine.journal.records() if r.kind == "event" and r.machine == "clock"]
    assert len(expiry) == 1
    assert expiry[0].ts == 5 * S
    assert expiry[0].data["name"] == "fill"
    assert engine.finished == {"probe0": "failed"}


def test_deadline_is_disarmed_when_its_state_is_left():
    clock, engine, venue, first = probe_engine()
    run_virtual(engine, clock, venue.send, initial=first)
    # The 5 s "fill" deadline was left behind at 0.05 s: no expiry ever arrives.
    assert not [r for r in engine.journal.records() if r.machine == "clock"]
    disarmed = notes(engine, "deadline disarmed")
    assert {d["name"] for d in disarmed} == {"fill", "verify"}
    assert len(engine.deadlines) == 0
    assert clock.pending() == 0


def test_stale_expiry_is_ignored_and_noted():
    clock, engine, venue, first = probe_engine()
    gen = engine.deadlines.armed_for("probe0")[0].generation
    run_virtual(engine, clock, venue.send, initial=first)
    engine.process(DeadlineExpired(name="fill", generation=gen, target="probe0"), "clock")
    assert engine.finished == {"probe0": "verified"}
    stale = notes(engine, "stale deadline ignored")
    assert stale == [
        {"note": "stale deadline ignored", "machine": "probe0", "name": "fill", "generation": gen}
    ]


def test_duplicate_fill_is_applied_once():
    clock, engine, venue, first = probe_engine(venue={"duplicate_fills": True})
    run_virtual(engine, clock, venue.send, initial=first)
    assert engine.ledger.position(4) == Decimal("0.1")
    assert engine.ledger.fills_duplicate == 1


class Gate(PureMachine):
    """Takes `position_snapshot` only once it has seen a fill: earlier ones are deferred."""

    waiting_fill = State(initial=True)
    waiting_snapshot = State()
    done = State(final=True)

    fill_received = waiting_fill.to(waiting_snapshot)
    position_snapshot = waiting_snapshot.to(done)


def test_events_a_machine_cannot_take_yet_are_deferred_then_redelivered():
    clock = VirtualClock()
    engine = Engine(clock)
    engine.spawn(Gate, "gate")
    snap = PositionSnapshot(positions=[], request_id="r")
    engine.process(snap)
    assert engine.machines["gate"].state_ids == ["waiting_fill"]
    assert list(engine.deferred["gate"]) == [snap]
    engine.process(
        FillReceived(order_id="x", fill_id="f", product_id=4, side="buy", price="1", qty="1")
    )
    assert engine.finished == {"gate": "done"}
    assert notes(engine, "redelivered") == [{"note": "redelivered", "event": "position_snapshot"}]


class Exploding(PureMachine):
    idle = State(initial=True)
    done = State(final=True)
    fill_received = idle.to(done)

    def on_enter_done(self) -> None:
        raise RuntimeError("boom")


def test_machine_exception_is_journaled_committed_and_raised(tmp_path):
    from engine.journal import Journal
    from engine.journal import read_records

    path = tmp_path / "j.db"
    engine = Engine(VirtualClock(), Journal(path))
    engine.spawn(Exploding, "x")
    fill = FillReceived(order_id="x", fill_id="f", product_id=4, side="buy", price="1", qty="1")
    with pytest.raises(MachineError, match="boom"):
        engine.process(fill)
    on_disk = [r.data for r in read_records(path) if r.kind == "note"]
    assert {"note": "machine error", "error": "RuntimeError: boom"} in on_disk


def test_intents_leave_only_after_commit(tmp_path):
    from engine.journal import Journal
    from engine.journal import read_records

    path = tmp_path / "j.db"
    clock = VirtualClock()
    engine = Engine(clock, Journal(path))
    out = engine.start("engine.demo:start_probe", {})
    on_disk = [r for r in read_records(path) if r.kind == "intent"]
    assert [r.data["order_id"] for r in on_disk] == [i.order_id for i in out]


def test_freezegun_does_not_disturb_the_virtual_clock():
    from freezegun import freeze_time

    with freeze_time("2026-01-01 00:00:00"):
        clock, engine, venue, first = probe_engine(venue={"fill_ms": None})
        run_virtual(engine, clock, venue.send, initial=first)
    assert engine.finished == {"probe0": "failed"}
    assert clock.now_ns() == 5 * S


def test_steps_that_send_nothing_share_commits_but_a_sending_step_commits(tmp_path):
    from engine.events import BboUpdated
    from engine.journal import Journal
    from engine.journal import read_records

    path = tmp_path / "j.db"
    clock = VirtualClock()
    engine = Engine(clock, Journal(path))
    engine.start("engine.demo:start_probe", {})  # sends: committed at once
    on_disk = len(list(read_records(path)))
    for _ in range(10):  # market data, 1 ms apart: nothing leaves, nothing forced to disk
        clock.advance(1_000_000)
        engine.process(BboUpdated(product_id=4, bid="1", ask="2", bid_qty="1", ask_qty="1"))
    assert len(list(read_records(path))) == on_disk
    clock.advance(S)  # a second later the next step commits whatever waited
    engine.process(BboUpdated(product_id=4, bid="1", ask="2", bid_qty="1", ask_qty="1"))
    assert len(list(read_records(path))) == on_disk + 11
    engine.journal.close()


def test_memory_stays_bounded_over_many_finished_machines():
    from engine.loop import MAX_FINISHED

    clock, engine, venue, first = probe_engine()
    run_virtual(engine, clock, venue.send, initial=first)
    for i in range(MAX_FINISHED + 50):
        engine.spawn(Gate, f"g{i}")
        engine.process(
            FillReceived(
                order_id=f"x{i}", fill_id=f"f{i}", product_id=4, side="buy", price="1", qty="1"
            )
        )
        engine.process(PositionSnapshot(positions=[], request_id="r"))
    assert len(engine.finished) <= MAX_FINISHED + 1
    assert len(engine.contexts) == len(engine.machines) == 0
    assert not engine.parents


# -- the issue-13 contract: named deadlines, consumed events, retired correlation ids ----------
class Waiter(PureMachine):
    """Consumes what it does not take; its wait ends by a named deadline event."""

    unhandled = "consume"
    waiting = State(initial=True)
    timed_out = State(final=True)

    answer_timeout = waiting.to(timed_out)

    def on_enter_waiting(self) -> None:
        self.arm("answer_timeout", 1)
        self.arm("other", 2)  # a deadline the machine declares no event for


def test_a_named_deadline_is_its_own_event_and_undeclared_names_fall_back():
    clock = VirtualClock()
    engine = Engine(clock)
    engine.spawn(Waiter, "w")
    armed = {a.name: a.generation for a in engine.deadlines.armed_for("w")}
    # An undeclared name arrives as `deadline_expired`, which a consuming Waiter does not take.
    engine.process(DeadlineExpired(name="other", generation=armed["other"], target="w"), "clock")
    assert "w" in engine.machines
    assert notes(engine, "unhandled")[-1]["event"] == "deadline_expired"
    gen = armed["answer_timeout"]
    engine.process(DeadlineExpired(name="answer_timeout", generation=gen, target="w"), "clock")
    assert engine.finished == {"w": "timed_out"}
    moves = [r.data for r in engine.journal.records() if r.kind == "transition"]
    assert moves[-1]["event"] == "answer_timeout"


def test_an_unhandled_event_is_consumed_counted_and_noted_except_market_data():
    from engine.events import BboUpdated

    clock = VirtualClock()
    engine = Engine(clock)
    engine.spawn(Waiter, "w")
    fill = FillReceived(order_id="x", fill_id="f", product_id=4, side="buy", price="1", qty="1")
    bbo = BboUpdated(product_id=4, bid="1", ask="2", bid_qty="1", ask_qty="1")
    engine._deliver("w", engine.machines["w"], fill)
    engine._deliver("w", engine.machines["w"], bbo)
    engine._deliver("w", engine.machines["w"], bbo)
    assert not engine.deferred["w"]  # consumed, never queued
    assert engine.unhandled == {
        ("Waiter", "waiting", "fill_received"): 1,
        ("Waiter", "waiting", "bbo_updated"): 2,
    }
    assert [(n["event"], n["state"]) for n in notes(engine, "unhandled")] == [
        ("fill_received", ["waiting"])
    ]


def test_an_answer_for_a_finished_machine_reaches_no_machine():
    clock = VirtualClock()
    engine = Engine(clock)
    engine.spawn(Gate, "gate")
    engine.machines["gate"].emit(QueryPositions(request_id="q1", product_ids=(4,)))
    engine.spawn(Gate, "other")
    fill = FillReceived(order_id="x", fill_id="f", product_id=4, side="buy", price="1", qty="1")
    engine.process(fill)  # never owned: broadcast to both
    assert engine.machines["gate"].state_ids == ["waiting_snapshot"]
    engine.process(PositionSnapshot(positions=[], request_id="q1"))
    assert engine.finished == {"gate": "done"}
    # Act: a late second answer to the finished machine's request.
    engine.process(PositionSnapshot(positions=[], request_id="q1"))
    # Assert: journaled, noted, delivered to no one (the other Gate would have finished).
    assert "other" in engine.machines
    assert notes(engine, "answer for a finished machine")[0]["key"] == "q1"
    assert "q1" in engine.retired
