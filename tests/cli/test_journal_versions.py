"""Issue 13, versioned journals: every journal records the journal schema version it was
written with (the file's `meta` table, each run header's `journal_schema`). `dnpair
replay` and `dnpair journal verify` of a journal of another version say so in one line
and exit 2, instead of "first divergence at record N" or "CORRUPT"; `dnpair run` does
not append to one."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from engine.core.journal import JOURNAL_SCHEMA
from engine.core.journal import read_records
from engine.core.messages import dumps
from tests.cli.support import dnpair
from tests.cli.support import one_line_error
from tests.cli.support import virtual_run


@pytest.fixture(scope="module")
def current(tmp_path_factory: pytest.TempPathFactory) -> Path:
    journal = tmp_path_factory.mktemp("versions") / "now.db"
    proc = virtual_run(journal, "--cycles", "1")
    assert proc.returncode == 0, proc.stderr
    return journal


def _with_schema(journal: Path, out: Path, version: int) -> None:
    """A copy of `journal` whose meta table says it was written by schema `version`."""
    out.write_bytes(journal.read_bytes())
    db = sqlite3.connect(out)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(version),))
    db.commit()
    db.close()


def _as_version_1(journal: Path, out: Path) -> None:
    """The same run as a version 1 engine stored it: no meta table, headers without
    `journal_schema`, text columns, full SHA-256 hex hashes."""
    db = sqlite3.connect(out)
    db.execute(
        "CREATE TABLE journal (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, kind TEXT NOT "
        "NULL, machine TEXT NOT NULL, payload TEXT NOT NULL, prev_hash TEXT NOT NULL, "
        "hash TEXT NOT NULL)"
    )
    prev = "0" * 64
    for r in read_records(journal):
        data = r.data
        if isinstance(data, dict) and data.get("note") == "run_started":
            data.pop("journal_schema")
        payload = dumps(data)
        text = f"{r.seq}\x1f{r.ts}\x1f{r.kind}\x1f{r.machine}\x1f{payload}\x1f{prev}"
        digest = hashlib.sha256(text.encode()).hexdigest()
        db.execute(
            "INSERT INTO journal VALUES (?,?,?,?,?,?,?)",
            (r.seq, r.ts, r.kind, r.machine, payload, prev, digest),
        )
        prev = digest
    db.commit()
    db.close()


def test_a_journal_records_its_schema_version_and_replays(current: Path) -> None:
    db = sqlite3.connect(current)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (
        str(JOURNAL_SCHEMA),
    )
    db.close()
    header = next(read_records(current))
    assert header.data["note"] == "run_started"
    assert header.data["journal_schema"] == JOURNAL_SCHEMA
    assert dnpair("journal", "verify", str(current)).returncode == 0
    replay = dnpair("replay", str(current))
    assert replay.returncode == 0, replay.stdout
    assert replay.stdout.startswith("replay ok")


def test_replay_and_verify_of_a_version_1_journal_say_so_in_one_line(
    current: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old.db"
    _as_version_1(current, old)
    for args in (("replay", str(old)), ("journal", "verify", str(old))):
        proc = dnpair(*args)
        line = one_line_error(proc)
        assert line == (
            f"{old}: written by journal schema version 1, this dnpair reads version "
            f"{JOURNAL_SCHEMA}; replay or verify it with the dnpair that wrote it"
        ), line
        assert "divergence" not in proc.stdout + proc.stderr
        assert "CORRUPT" not in proc.stdout + proc.stderr
    # its JSONL export (how golden journals were kept) is refused the same way
    export = tmp_path / "old.jsonl"
    with export.open("w", encoding="utf-8") as fh:
        for r in read_records(old):
            fh.write(dumps(r.to_json()) + "\n")
    line = one_line_error(dnpair("replay", str(export)))
    assert "written by journal schema version 1" in line


def test_run_does_not_append_to_a_journal_of_another_version(current: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    _as_version_1(current, old)
    before = old.read_bytes()
    line = one_line_error(virtual_run(old, "--cycles", "1"))
    assert "written by journal schema version 1" in line
    assert "start a new --journal" in line
    assert old.read_bytes() == before


def test_a_version_2_journal_of_the_three_order_working_machines_is_refused_in_one_line(
    current: Path, tmp_path: Path
) -> None:
    """Version 2 journals were written by BuildMachine, UnwindMachine and
    EmergencyExitMachine, which the position-work machine replaced: their replay would
    diverge at the first spawn, so it is refused by version (exit 2, one line)."""
    old = tmp_path / "v2.db"
    _with_schema(current, old, 2)
    for args in (("replay", str(old)), ("journal", "verify", str(old))):
        line = one_line_error(dnpair(*args))
        assert line == (
            f"{old}: written by journal schema version 2, this dnpair reads version "
            f"{JOURNAL_SCHEMA}; replay or verify it with the dnpair that wrote it"
        ), line


def test_a_version_3_journal_of_one_note_per_deadline_is_refused_in_one_line(
    current: Path, tmp_path: Path
) -> None:
    """Version 3 journals wrote a note for every deadline armed or disarmed and an engine
    `finished` note beside each `machine_finished` event; version 4 folds the deadlines
    into the transition (or spawn) that armed or disarmed them. Replaying a version 3
    journal would diverge at its first deadline note, so it is refused by version."""
    assert JOURNAL_SCHEMA >= 4
    old = tmp_path / "v3.db"
    _with_schema(current, old, 3)
    for args in (("replay", str(old)), ("journal", "verify", str(old))):
        proc = dnpair(*args)
        line = one_line_error(proc)
        assert proc.returncode == 2
        assert line == (
            f"{old}: written by journal schema version 3, this dnpair reads version "
            f"{JOURNAL_SCHEMA}; replay or verify it with the dnpair that wrote it"
        ), line
    line = one_line_error(virtual_run(old, "--cycles", "1"))
    assert "written by journal schema version 3" in line


def _as_version_4(journal: Path, out: Path) -> None:
    """A copy of `journal` stored as version 4 stored it: each record's payload deflated
    on its own (version 5 deflates a commit's payloads together into its first row)."""
    from engine.core.journal import PayloadCodec

    _with_schema(journal, out, 4)
    records = list(read_records(journal))
    db = sqlite3.connect(out)
    codec = PayloadCodec.of(db)
    for r in records:
        (payload,) = codec.encode_group([r.payload])
        db.execute("UPDATE journal SET payload = ? WHERE seq = ?", (payload, r.seq))
    db.commit()
    db.close()


def test_a_version_4_journal_of_one_stream_per_record_is_refused_and_still_read(
    current: Path, tmp_path: Path
) -> None:
    """Version 5 stores a commit's payloads as one deflate stream in its first row.
    Replay and verify refuse a version 4 file in one line; every reader (export, report,
    status) still reads its records exactly."""
    assert JOURNAL_SCHEMA == 5
    old = tmp_path / "v4.db"
    _as_version_4(current, old)
    assert list(read_records(old)) == list(read_records(current))

    def text_elsewhere(path: Path) -> int:  # rows that read their text from another's stream
        db = sqlite3.connect(path)
        n = int(db.execute("SELECT count(*) FROM journal WHERE payload = x''").fetchone()[0])
        db.close()
        return n

    assert text_elsewhere(current) > 0
    assert text_elsewhere(old) == 0
    for args in (("replay", str(old)), ("journal", "verify", str(old))):
        proc = dnpair(*args)
        assert proc.returncode == 2
        assert one_line_error(proc) == (
            f"{old}: written by journal schema version 4, this dnpair reads version 5; "
            "replay or verify it with the dnpair that wrote it"
        )
    _report_and_status_read(old)


def _report_and_status_read(old: Path) -> None:
    """The operator's views of a journal of another version still read it."""
    report = dnpair("report", str(old))
    assert report.returncode == 0, report.stderr
    assert "completed" in report.stdout
    status = dnpair("status", "--json", str(old))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["cycles_closed"] == 1


def test_a_journal_of_a_later_version_is_refused_the_same_way(
    current: Path, tmp_path: Path
) -> None:
    later = tmp_path / "later.db"
    _with_schema(current, later, JOURNAL_SCHEMA + 1)
    for args in (("replay", str(later)), ("journal", "verify", str(later))):
        line = one_line_error(dnpair(*args))
        assert f"written by journal schema version {JOURNAL_SCHEMA + 1}" in line


def test_a_run_header_of_another_version_is_not_replayed(current: Path, tmp_path: Path) -> None:
    """A JSONL export whose run header says another version (hashes re-chained, so the
    chain itself is intact): replay names the version, it does not diverge."""
    from engine.core.journal import GENESIS
    from engine.core.journal import record_hash

    out = tmp_path / "other.jsonl"
    prev = GENESIS
    with out.open("w", encoding="utf-8") as fh:
        for r in read_records(current):
            obj = r.to_json()
            if obj["payload"].get("note") == "run_started":
                obj["payload"]["journal_schema"] = JOURNAL_SCHEMA + 1
            payload = dumps(obj["payload"])
            obj["prev_hash"] = prev
            obj["hash"] = prev = record_hash(r.seq, r.ts, r.kind, r.machine, payload, prev)
            fh.write(json.dumps(obj) + "\n")
    line = one_line_error(dnpair("replay", str(out)))
    assert f"written by journal schema version {JOURNAL_SCHEMA + 1}" in line


def test_report_status_and_export_still_read_a_journal_of_another_version(
    current: Path, tmp_path: Path
) -> None:
    """Only replay and verify need this engine's version; the operator's views of an older
    journal keep working (they read version 3's deadline notes and `finished` notes too:
    tests/unit/test_journal_records.py)."""
    old = tmp_path / "v3.db"
    _with_schema(current, old, 3)
    _report_and_status_read(old)
    export = dnpair("journal", "export", str(old), "--jsonl", str(tmp_path / "v3.jsonl"))
    assert export.returncode == 0, export.stderr
