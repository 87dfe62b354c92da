"""Observers receive typed records (issue 13 item 4): the live path never decodes the
JSON it just journaled, and spawn notes carry their params as fields."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.journal import Record
from engine.core.messages import dumps
from engine.core.observed import Observed
from engine.ops.trades import RunFold
from engine.ops.trades import fold_records
from tests.ops.support import FAULTY
from tests.ops.support import run_session
from tests.ops.support import session


def _no_decoding(_rec: Record) -> Any:
    raise AssertionError("an observer decoded a record's JSON on the live path")


def test_a_live_run_never_decodes_the_json_it_just_journaled(monkeypatch):
    lines: list[str] = []
    s = session(cycles=3, seed=3, faults=FAULTY, lines=lines)  # console logs on
    monkeypatch.setattr(Record, "data", property(_no_decoding))
    run_session(s)
    monkeypatch.undo()
    live = s.fold
    assert s.summary()["cycles_completed"] == 3
    assert any("FILL" in line or "→" in line for line in lines)  # the logger ran
    # The same fold, read back from the journal (JSON decoded once, at the boundary).
    offline = fold_records(s.engine.journal.records())
    assert live.counters == offline.counters
    assert live.outcomes == offline.outcomes
    assert live.outcomes["completed"] == 3
    numbered = [c.cycle for c in offline.cycles if c.cycle is not None]
    assert numbered == list(range(1, len(numbered) + 1))
    assert live.counters.fills > 0


def test_the_check_can_fail(monkeypatch):
    s = session(cycles=1, seed=3)
    s.engine.observers.append(lambda seen: seen.rec.data)  # a re-parsing observer
    monkeypatch.setattr(Record, "data", property(_no_decoding))
    with pytest.raises(AssertionError, match="decoded"):
        run_session(s)


def test_spawn_notes_carry_the_cycle_as_a_field():
    s = run_session(session(cycles=2, seed=1))
    spawns = [
        r.data
        for r in s.engine.journal.records()
        if r.kind == "note" and r.machine == "engine" and r.data.get("note") == "spawn"
    ]
    builds = [d for d in spawns if d["machine"].startswith("build:")]
    assert [d["params"]["params"]["cycle"] for d in builds] == [1, 2]
    assert builds[0]["params"]["params"]["long"]["symbol"] == "ETH-PERP"
    assert not any("CycleParams(" in dumps(d) for d in spawns)  # no repr in the journal


def test_an_older_journal_with_a_repr_in_its_spawn_notes_still_folds():
    fold = RunFold()
    header = {"note": "run_started", "app": "engine.runtime.app:start_pair", "config": {"legs": []}}
    old = {
        "note": "spawn",
        "machine": "build:session:3",
        "cls": "BuildMachine",
        "parent": "session",
        "params": {"params": "CycleParams(cycle=7, long=LegSpec(symbol='ETH-PERP'))"},
    }
    for seq, payload in enumerate((header, old), start=1):
        fold.feed(Record(seq, seq, "note", "engine", dumps(payload), "", ""))
    assert [c.cycle for c in fold.cycles] == [7]
    assert fold.machine_cycle["build:session:3"] == 7


def test_observed_of_a_stored_record_rebuilds_its_message():
    s = run_session(session(cycles=1, seed=1))
    fill = next(
        r
        for r in s.engine.journal.records()
        if r.kind == "event" and '"fill_received"' in r.payload
    )
    seen = Observed.of(fill)
    assert type(seen.msg).__name__ == "FillReceived"
    assert seen.data == fill.data
