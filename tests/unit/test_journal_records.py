"""Journal schema 4: fewer records per step, the same facts (issue 13's speed, issue 12's
10 KB per cycle). A deadline is journaled in the transition (or spawn note) of the step
that armed or disarmed it, not as a note of its own; a machine with a parent ends with
its `machine_finished` event only. Every transition still has its record, and it still
comes before the intents and notes its step wrote."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.core.clock import VirtualClock
from engine.core.events import OperatorCommand
from engine.core.journal import Record
from engine.core.loop import Engine
from engine.core.messages import dumps
from engine.core.replay import replay_records
from engine.ops.trades import RunFold
from engine.runtime.runner import run_virtual
from machines.base import PureMachine
from machines.base import State
from tests.ops.support import session
from tests.support import ScriptedVenue
from tests.support import deadlines_armed
from tests.support import deadlines_disarmed

S = 1_000_000_000


def probe_run() -> tuple[Engine, list[Record]]:
    clock = VirtualClock()
    engine = Engine(clock)
    venue = ScriptedVenue(engine, clock)
    first = engine.start("engine.harness.demo:start_probe", {})
    run_virtual(engine, clock, venue.send, initial=first)
    return engine, engine.journal.records()


def test_the_step_that_arms_or_disarms_a_deadline_carries_it_in_its_own_record():
    engine, records = probe_run()
    assert engine.finished == {"probe0": "verified"}
    # no record of its own for any deadline
    assert not [r for r in records if r.kind == "note" and "deadline" in r.data["note"]]
    # the initial entry's deadline is in the spawn note
    (spawn,) = [r for r in records if r.kind == "note" and r.data["note"] == "spawn"]
    assert spawn.data["armed"] == [{"due_ns": 5 * S, "generation": 1, "name": "fill_timeout"}]
    assert "disarmed" not in spawn.data
    # each transition: what its exit disarmed and its entry armed
    moves = [r for r in records if r.kind == "transition"]
    assert [m.data for m in moves] == [
        {
            "event": "fill_received",
            "from": "placing",
            "to": "verifying",
            "disarmed": ["fill_timeout"],
            "armed": [{"due_ns": moves[0].ts + 2 * S, "generation": 2, "name": "verify_timeout"}],
        },
        {
            "event": "position_snapshot",
            "from": "verifying",
            "to": "verified",
            "disarmed": ["verify_timeout"],
        },
    ]
    assert deadlines_armed(records) == [
        ("probe0", {"due_ns": 5 * S, "generation": 1, "name": "fill_timeout"}),
        ("probe0", {"due_ns": moves[0].ts + 2 * S, "generation": 2, "name": "verify_timeout"}),
    ]
    assert deadlines_disarmed(records) == [("probe0", "fill_timeout"), ("probe0", "verify_timeout")]


def test_a_transition_comes_before_what_its_step_wrote_and_the_spawn_before_its_machine():
    _engine, records = probe_run()
    kinds = [(r.kind, r.data.get("note") or r.data.get("kind")) for r in records]
    spawn = kinds.index(("note", "spawn"))
    assert kinds[spawn + 1] == ("intent", "place_order")  # the initial entry's order
    moves = [i for i, r in enumerate(records) if r.kind == "transition"]
    assert kinds[moves[0] + 1] == ("intent", "query_positions")  # entering verifying
    assert [r.seq for r in records] == list(range(1, len(records) + 1))


class Blinker(PureMachine):
    """Arms `blink` on entering `on`, then (same step) disarms it and arms `steady`."""

    off = State(initial=True)
    on = State()
    done = State(final=True)

    operator_command = off.to(on)
    steady = on.to(done)

    def on_enter_on(self) -> None:
        self.arm("blink", 1)
        self.disarm("blink")
        self.arm("steady", 2)


def start_blinker(engine: Engine, _config: Any) -> None:
    engine.spawn(Blinker, "blinker")


def test_a_deadline_armed_and_disarmed_by_the_same_step_reads_as_disarmed():
    clock = VirtualClock()
    engine = Engine(clock)
    engine.start(f"{__name__}:start_blinker", {})
    engine.process(OperatorCommand(command="sync", target="blinker"), "operator")
    (move,) = [r.data for r in engine.journal.records() if r.kind == "transition"]
    assert move["disarmed"] == ["blink"]
    assert [a["name"] for a in move["armed"]] == ["steady"]
    fold = RunFold().feed_all(engine.journal.records())
    assert fold.deadlines == {"blinker": {"steady": 2 * S}}
    assert [a.name for a in engine.deadlines.armed_for("blinker")] == ["steady"]


def test_a_child_ends_with_its_machine_finished_event_and_a_root_with_a_finished_note():
    s = session(cycles=1)
    asyncio.run(s.run_virtual())
    records = s.engine.journal.records()
    ended = [r.data for r in records if r.kind == "event" and r.data["kind"] == "machine_finished"]
    noted = [r.data for r in records if r.kind == "note" and r.data["note"] == "finished"]
    assert {e["machine"] for e in ended} >= {"restore:session:1"}
    assert any(e["machine"].startswith("build:") for e in ended)
    assert any(e["machine"].startswith("unwind:") for e in ended)
    # the note only for machines without a parent: the session and the app's others
    spawned = {
        r.data["machine"]: r.data["parent"] for r in records if r.data.get("note") == "spawn"
    }
    assert noted
    assert all(spawned[n["machine"]] is None for n in noted)
    assert not {n["machine"] for n in noted} & {e["machine"] for e in ended}
    fold = RunFold().feed_all(records)
    assert set(fold.finished) == {e["machine"] for e in ended} | {n["machine"] for n in noted}
    assert replay_records(records).ok


@pytest.mark.parametrize("execution", ["taker", "maker_first"])
def test_the_journal_fold_knows_exactly_the_deadlines_the_engine_has_armed(execution):
    """After every step, the deadlines read back from the journal (what `dnpair status`
    and the restart check read) are the engine's own, due time included."""
    s = session(cycles=3, env={"DN_EXECUTION": execution, "DN_HOLD_S": "1"})
    engine = s.engine
    fold = RunFold()
    engine.observers.append(fold.observe)
    steps = 0
    original = engine.process

    def process(*args: Any, **kwargs: Any) -> Any:
        nonlocal steps
        out = original(*args, **kwargs)
        live = {
            mid: {a.name: a.due_ns for a in engine.deadlines.armed_for(mid)}
            for mid in engine.deadlines._by_machine
        }
        assert fold.deadlines == live, (steps, fold.deadlines, live)
        steps += 1
        return out

    engine.process = process  # type: ignore[method-assign]
    asyncio.run(s.run_virtual())
    assert s.summary()["cycles_completed"] == 3
    assert steps > 50
    expired = [r for r in engine.journal.records() if r.machine == "clock"]
    assert expired  # the fold also saw deadlines consumed by their expiry


def as_schema_3(records: list[Record]) -> list[Record]:
    """The same run as schema 3 journaled it: a note for each deadline armed or disarmed
    (after its transition or spawn) and an engine `finished` note before each
    `machine_finished` event."""
    out: list[Record] = []

    def add(ts: int, kind: str, machine: str, data: dict[str, Any]) -> None:
        out.append(Record(len(out) + 1, ts, kind, machine, dumps(data), "", ""))

    for r in records:
        data = dict(r.data)
        armed, disarmed = data.pop("armed", []), data.pop("disarmed", [])
        if r.kind == "event" and data.get("kind") == "machine_finished":
            add(r.ts, "note", "engine", {"note": "finished", "machine": data["machine"],
                                         "outcome": data["outcome"]})  # fmt: skip
        add(r.ts, r.kind, r.machine, data)
        owner = data["machine"] if data.get("note") == "spawn" else r.machine
        for name in disarmed:
            add(r.ts, "note", owner, {"note": "deadline disarmed", "name": name})
        for a in armed:
            add(r.ts, "note", owner, {"note": "deadline armed", **a, "state": "x"})
    return out


def test_reports_and_status_read_a_schema_3_journal_as_they_did():
    s = session(cycles=2, env={"DN_EXECUTION": "maker_first"})
    asyncio.run(s.run_virtual())
    now = s.engine.journal.records()
    cut = len(now) * 2 // 3  # mid-run: deadlines still armed
    for records in (now, now[:cut]):
        new, old = RunFold().feed_all(records).finish(), RunFold()
        old.feed_all(as_schema_3(records)).finish()
        assert old.deadlines == new.deadlines
        assert old.finished == new.finished
        assert old.outcomes == new.outcomes
        assert [(c.cycle, c.outcome, c.ended_ns) for c in old.cycles] == [
            (c.cycle, c.outcome, c.ended_ns) for c in new.cycles
        ]
    assert RunFold().feed_all(now[:cut]).deadlines  # the cut is mid-run
