from __future__ import annotations

import sqlite3

from engine.core.clock import VirtualClock
from engine.core.journal import GENESIS
from engine.core.journal import Journal
from engine.core.journal import read_records
from engine.core.journal import record_hash
from engine.core.loop import Engine
from engine.core.messages import dumps
from engine.core.replay import replay_records
from engine.runtime.cli import main
from engine.runtime.runner import run_virtual
from tests.support import ScriptedVenue


def record_run(path, machines=3, **venue):
    clock = VirtualClock()
    engine = Engine(clock, Journal(path))
    sim = ScriptedVenue(engine, clock, **venue)
    first = engine.start("engine.harness.demo:start_probe", {"machines": machines})
    run_virtual(engine, clock, sim.send, initial=first)
    engine.journal.close()
    return engine


def rewrite_event(path, predicate, change):
    """Alter one recorded event and re-chain every hash, so the journal still verifies."""
    recs = list(read_records(path))
    db = sqlite3.connect(path)
    prev = GENESIS
    altered = False
    for r in recs:
        payload = r.payload
        if not altered and r.kind == "event" and predicate(r.data):
            data = r.data
            change(data)
            payload = dumps(data)
            altered = True
        digest = record_hash(r.seq, r.ts, r.kind, r.machine, payload, prev)
        db.execute(
            "UPDATE journal SET payload=?, prev_hash=?, hash=? WHERE seq=?",
            (payload, prev, digest, r.seq),
        )
        prev = digest
    db.commit()
    db.close()
    assert altered


def test_replay_of_a_recorded_run_matches(tmp_path, capsys):
    path = tmp_path / "run.db"
    engine = record_run(path)
    assert set(engine.finished.values()) == {"verified"}
    assert main(["replay", str(path)]) == 0
    assert "replay ok" in capsys.readouterr().out


def test_replay_with_deadline_expiries_matches(tmp_path):
    path = tmp_path / "run.db"
    engine = record_run(path, fill_ms=None)
    assert set(engine.finished.values()) == {"failed"}
    assert main(["replay", str(path)]) == 0


def test_altered_event_makes_replay_fail_naming_the_divergence(tmp_path, capsys):
    path = tmp_path / "run.db"
    record_run(path)

    def is_position(d):
        return d["kind"] == "position_snapshot"

    def halve(d):
        d["positions"][0]["qty"] = "0.05"

    rewrite_event(path, is_position, halve)
    assert main(["journal", "verify", str(path)]) == 0  # chain is consistent...
    capsys.readouterr()
    assert main(["replay", str(path)]) == 1  # ...but the machines now behave differently
    out = capsys.readouterr().out
    assert "first divergence at record" in out
    assert '"to":"verified"' in out  # recorded
    assert '"to":"failed"' in out  # replayed


def test_replay_refuses_a_corrupt_journal(tmp_path, capsys):
    path = tmp_path / "run.db"
    record_run(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE journal SET payload=replace(payload, '0.1', '0.2') WHERE seq=3")
    db.commit()
    db.close()
    assert main(["replay", str(path)]) == 1
    assert "CORRUPT" in capsys.readouterr().err


def test_exported_jsonl_replays(tmp_path):
    path = tmp_path / "run.db"
    out = tmp_path / "run.jsonl"
    record_run(path)
    assert main(["journal", "export", str(path), "--jsonl", str(out)]) == 0
    assert main(["replay", str(out)]) == 0


def test_a_restarted_run_appends_a_segment_that_replays_on_its_own(tmp_path, capsys):
    path = tmp_path / "run.db"
    record_run(path, machines=1)
    record_run(path, machines=2)  # a second process on the same journal, clock from zero
    headers = [r for r in read_records(path) if r.kind == "note" and "run_started" in r.payload]
    assert len(headers) == 2
    assert main(["journal", "verify", str(path)]) == 0
    assert main(["replay", str(path)]) == 0


def test_replay_names_the_first_record_it_does_not_make_again(tmp_path):
    path = tmp_path / "run.db"
    record_run(path)
    records = list(read_records(path))
    assert replay_records(records).ok
    i = next(i for i, r in enumerate(records) if r.kind == "transition")
    want = records[i]
    changed = want._replace(payload=want.payload.replace('"to":', '"to":"x",  "y":'))
    d = replay_records([*records[:i], changed, *records[i + 1 :]]).divergence
    assert d is not None
    assert (d.index, d.expected) == (i, changed)
    assert d.actual is not None
    assert d.actual.payload == want.payload  # what it made
    # a record beyond what the replay makes, at another time: it is the divergence
    after = want._replace(seq=records[-1].seq + 1, ts=records[-1].ts + 1)
    d = replay_records([*records, after]).divergence
    assert d is not None
    assert (d.index, d.expected, d.actual) == (len(records), after, None)
    # a record the replay makes that was not recorded: a torn tail only in the last run
    assert replay_records(records[:i]).tail_missing > 0
    d = replay_records([*records[:i], *records]).divergence
    assert d is not None
    assert (d.index, d.expected) == (i, None)
    assert d.actual is not None
    assert d.actual.payload == want.payload
