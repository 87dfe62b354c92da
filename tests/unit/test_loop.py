from __future__ import annotations

from decimal import Decimal

import pytest

from engine.core.clock import VirtualClock
from engine.core.events import DeadlineExpired
from engine.core.events import FillReceived
from engine.core.events import PositionSnapshot
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryPositions
from engine.core.loop import Engine
from engine.core.loop import MachineError
from engine.runtime.runner import run_virtual
from machines.base import PureMachine
from machines.base import State
from tests.support import ScriptedVenue
from tests.support import deadlines_disarmed

S = 1_000_000_000


def probe_engine(**config):
    clock = VirtualClock()
    engine = Engine(clock)
    venue = ScriptedVenue(engine, clock, **config.pop("venue", {}))
    first = engine.start("engine.harness.demo:start_probe", config)
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
    assert expiry[0].data["name"] == "fill_timeout"
    # ... and reached the probe as its own event, not as `deadline_expired`.
    moves = [r.data for r in engine.journal.records() if r.kind == "transition"]
    assert moves[-1] == {"event": "fill_timeout", "from": "placing", "to": "failed"}
    assert engine.finished == {"probe0": "failed"}


def test_deadline_is_disarmed_when_its_state_is_left():
    clock, engine, venue, first = probe_engine()
    run_virtual(engine, clock, venue.send, initial=first)
    # The 5 s "fill" deadline was left behind at 0.05 s: no expiry ever arrives.
    assert not [r for r in engine.journal.records() if r.machine == "clock"]
    # ... and the transitions that left those states say so (journal schema 4)
    disarmed = deadlines_disarmed(engine.journal.records())
    assert disarmed == [("probe0", "fill_timeout"), ("probe0", "verify_timeout")]
    moves = [r.data for r in engine.journal.records() if r.kind == "transition"]
    assert [m.get("disarmed") for m in moves] == [["fill_timeout"], ["verify_timeout"]]
    assert not notes(engine, "deadline disarmed")
    assert len(engine.deadlines) == 0
    assert clock.pending() == 0


def test_stale_expiry_is_ignored_and_noted():
    clock, engine, venue, first = probe_engine()
    gen = engine.deadlines.armed_for("probe0")[0].generation
    run_virtual(engine, clock, venue.send, initial=first)
    engine.process(DeadlineExpired(name="fill_timeout", generation=gen, target="probe0"), "clock")
    assert engine.finished == {"probe0": "verified"}
    stale = notes(engine, "stale deadline ignored")
    assert stale == [
        {
            "note": "stale deadline ignored",
            "machine": "probe0",
            "name": "fill_timeout",
            "generation": gen,
        }
    ]


def test_duplicate_fill_is_applied_once():
    clock, engine, venue, first = probe_engine(venue={"duplicate_fills": True})
    run_virtual(engine, clock, venue.send, initial=first)
    assert engine.ledger.position(4) == Decimal("0.1")
    assert engine.ledger.fills_duplicate == 1


class Gate(PureMachine):
    """Postpones `position_snapshot` until it has seen a fill."""

    waiting_fill = State(initial=True)
    waiting_snapshot = State()
    done = State(final=True)

    fill_received = waiting_fill.to(waiting_snapshot)
    position_snapshot = waiting_snapshot.to(done)
    postpone = {"waiting_fill": frozenset({"position_snapshot"})}


def _fill(n: int = 0) -> FillReceived:
    return FillReceived(
        order_id=f"x{n}", fill_id=f"f{n}", product_id=4, side="buy", price="1", qty="1"
    )


def test_postponed_events_are_redelivered_after_the_next_state_change():
    # (Was: "events a machine cannot take yet are deferred" -- deferring was the default
    # until issue 13; now a state postpones only what it declares.)
    clock = VirtualClock()
    engine = Engine(clock)
    engine.spawn(Gate, "gate")
    snap = PositionSnapshot(positions=[], request_id="r")
    engine.process(snap)
    assert engine.machines["gate"].state_ids == ["waiting_fill"]
    assert list(engine.deferred["gate"]) == [snap]
    assert notes(engine, "deferred") == [
        {"note": "deferred", "event": "position_snapshot", "state": ["waiting_fill"]}
    ]
    engine.process(_fill())
    assert engine.finished == {"gate": "done"}
    assert notes(engine, "redelivered") == [{"note": "redelivered", "event": "position_snapshot"}]


class Counter(PureMachine):
    """Takes fills in `counting` without changing state; a snapshot ends it."""

    counting = State(initial=True)
    done = State(final=True)

    fill_received = counting.to.itself(internal=True, on="count")
    position_snapshot = counting.to(done, cond="enough")
    deadline_expired = counting.to(done)

    def setup(self, **params: object) -> None:
        self.fills = 0

    def count(self) -> None:
        self.fills += 1

    def enough(self) -> bool:
        return self.fills >= 2


def test_an_event_the_state_does_not_take_is_consumed_counted_and_noted():
    from engine.core.events import BboUpdated
    from engine.core.events import OrderCancelled

    engine = Engine(VirtualClock())
    engine.spawn(Counter, "c")
    engine.process(PositionSnapshot(positions=[], request_id="r1"))  # guard refuses
    engine.process(_fill(1))
    engine.process(PositionSnapshot(positions=[], request_id="r2"))  # guard refuses
    engine.process(BboUpdated(product_id=4, bid="1", ask="2", bid_qty="1", ask_qty="1"))
    engine.process(OrderCancelled(order_id="o1"))  # not an interest: never delivered
    assert engine.machines["c"].state_ids == ["counting"]
    assert not engine.deferred["c"]
    assert engine.unhandled == {("Counter", "counting", "position_snapshot"): 2}
    assert (
        notes(engine, "unhandled")
        == [{"note": "unhandled", "event": "position_snapshot", "state": ["counting"]}] * 2
    )
    engine.process(_fill(2))
    # Consumed means gone: the earlier snapshots are not re-delivered now that it could.
    assert engine.machines["c"].state_ids == ["counting"]
    engine.process(PositionSnapshot(positions=[], request_id="r3"))
    assert engine.finished == {"c": "done"}


class Watcher(PureMachine):
    """Reads quotes as events but takes none in its only waiting state."""

    watching = State(initial=True)
    done = State(final=True)
    bbo_updated = done.from_(watching, cond="never")
    fill_received = watching.to(done)

    def never(self) -> bool:
        return False


def test_unhandled_market_data_is_counted_but_not_journaled():
    from engine.core.events import BboUpdated

    engine = Engine(VirtualClock())
    engine.spawn(Watcher, "w")
    for _ in range(3):
        engine.process(BboUpdated(product_id=4, bid="1", ask="2", bid_qty="1", ask_qty="1"))
    assert engine.unhandled == {("Watcher", "watching", "bbo_updated"): 3}
    assert notes(engine, "unhandled") == []


class Asker(PureMachine):
    """Asks the venue for positions and finishes on its deadline, answer or not."""

    asking = State(initial=True)
    done = State(final=True)
    answer_timeout = asking.to(done)
    position_snapshot = asking.to(done)

    def on_enter_asking(self) -> None:
        self.emit(QueryPositions(request_id=self.next_id("q"), product_ids=(4,)))
        self.arm("answer_timeout", 1)


def test_an_answer_for_a_finished_machine_reaches_no_machine():
    clock = VirtualClock()
    engine = Engine(clock)
    engine.spawn(Asker, "a")
    run_virtual(engine, clock, lambda _i: None)  # no answer: the deadline ends it
    assert engine.finished == {"a": "done"}
    engine.spawn(Asker, "b")  # alive and interested in position snapshots
    late = PositionSnapshot(positions=[], request_id="a:q1")
    engine.process(late)
    # Journaled (every event is), delivered to nobody, said so.
    events = [r.data for r in engine.journal.records() if r.kind == "event"]
    assert events[-1].get("request_id") == "a:q1"
    assert "b" in engine.machines
    assert notes(engine, "answer for a finished machine") == [
        {"note": "answer for a finished machine", "machine": "a", "id": "a:q1"}
    ]
    # An answer nobody ever asked for is broadcast to the interested as before.
    engine.process(PositionSnapshot(positions=[], request_id="somebody:q9"))
    assert engine.finished["b"] == "done"


def test_retired_ids_are_bounded():
    from engine.core.loop import MAX_RETIRED

    clock = VirtualClock()
    engine = Engine(clock)
    for i in range(MAX_RETIRED + 10):
        engine.spawn(Asker, f"a{i}")
        engine.process(PositionSnapshot(positions=[], request_id=f"a{i}:q1"))
    assert len(engine.retired) == MAX_RETIRED
    assert "a0:q1" not in engine.retired
    assert f"a{MAX_RETIRED + 9}:q1" in engine.retired


class Poller(PureMachine):
    """A long-lived machine asking again on every `position_snapshot` (the session's shape)."""

    polling = State(initial=True)
    position_snapshot = polling.to.itself()

    def on_enter_polling(self) -> None:
        self.emit(QueryPositions(request_id=self.next_id("q"), product_ids=(4,)))


def test_a_long_lived_machine_owns_only_its_newest_ids_and_older_answers_are_noted():
    # issue 13, memory flat: a machine that lives for the whole run keeps MAX_OWNED ids;
    # an answer to an older one reaches no machine and is noted
    from engine.core.loop import MAX_OWNED

    engine = Engine(VirtualClock())
    engine.spawn(Poller, "p")
    for n in range(1, MAX_OWNED + 20):
        engine.process(PositionSnapshot(positions=[], request_id=f"p:q{n}"))
    newest = f"p:q{MAX_OWNED + 20}"
    assert len(engine._owned["p"]) == MAX_OWNED
    assert engine.owners[newest] == "p"
    assert "p:q1" not in engine.owners
    assert engine.retired["p:q1"] == "p"
    engine.process(PositionSnapshot(positions=[], request_id="p:q1"))
    assert notes(engine, "answer for a retired id") == [
        {"note": "answer for a retired id", "machine": "p", "id": "p:q1"}
    ]
    assert len(engine._owned["p"]) == MAX_OWNED  # the late answer asked nothing new


class Exploding(PureMachine):
    idle = State(initial=True)
    done = State(final=True)
    fill_received = idle.to(done)

    def on_enter_done(self) -> None:
        raise RuntimeError("boom")


def test_machine_exception_is_journaled_committed_and_raised(tmp_path):
    from engine.core.journal import Journal
    from engine.core.journal import read_records

    path = tmp_path / "j.db"
    engine = Engine(VirtualClock(), Journal(path))
    engine.spawn(Exploding, "x")
    fill = FillReceived(order_id="x", fill_id="f", product_id=4, side="buy", price="1", qty="1")
    with pytest.raises(MachineError, match="boom"):
        engine.process(fill)
    on_disk = [r.data for r in read_records(path) if r.kind == "note"]
    assert {"note": "machine error", "error": "RuntimeError: boom"} in on_disk


def test_intents_leave_only_after_commit(tmp_path):
    from engine.core.journal import Journal
    from engine.core.journal import read_records

    path = tmp_path / "j.db"
    clock = VirtualClock()
    engine = Engine(clock, Journal(path))
    out = engine.start("engine.harness.demo:start_probe", {})
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
    from engine.core.events import BboUpdated
    from engine.core.journal import Journal
    from engine.core.journal import read_records

    path = tmp_path / "j.db"
    clock = VirtualClock()
    engine = Engine(clock, Journal(path))
    engine.start("engine.harness.demo:start_probe", {})  # sends: committed at once
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
    from engine.core.loop import MAX_FINISHED

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
