from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys

import pytest

from engine.core.journal import HASH_BYTES
from engine.core.journal import Journal
from engine.core.journal import read_records
from engine.core.journal_verify import truncate_torn_tail
from engine.core.journal_verify import verify
from engine.runtime.cli import main


def write_journal(path, n=400, payload_size=40):
    j = Journal(path)
    for i in range(n):
        j.append("event", "venue", {"i": i, "pad": "x" * payload_size}, ts=i * 1000)
        if i % 10 == 9:
            j.commit()
    j.close()


def test_records_chain_and_survive_reopen(tmp_path):
    path = tmp_path / "j.db"
    write_journal(path, n=25)
    j = Journal(path)
    assert j.last_seq == 25
    j.append("note", "engine", {"note": "reopened"}, ts=10**9)
    j.close()
    recs = list(read_records(path))
    assert [r.seq for r in recs] == list(range(1, 27))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(recs))
    assert verify(path).status == "ok"


def test_a_closed_journal_is_read_without_leaving_wal_files_beside_it(tmp_path, capsys):
    path = tmp_path / "j.db"
    write_journal(path, n=25)
    for args in (["journal", "verify"], ["report"], ["status"], ["replay"]):
        main([*args, str(path)])
    list(read_records(path))
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.db"]
    # and the next writer appends in WAL mode again
    j = Journal(path)
    assert j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    j.close()


def test_a_writer_keeps_a_bounded_set_of_machine_ids_and_records_read_back_exactly(
    tmp_path, monkeypatch
):
    # issue 13, memory flat: every cycle names new machines; the writer keeps only the
    # most recent ids (a name used again after it was dropped gets a new one), the file's
    # `machines` table names every id, and reading gives back every record's machine
    monkeypatch.setattr("engine.core.journal.MACHINE_IDS", 8)
    path = tmp_path / "j.db"
    names = [f"cycle-{i}.build" if i % 3 else f"connection-{i % 5}" for i in range(300)]
    for part in (0, 1):  # the second half through a reopened writer
        j = Journal(path)
        for i, name in enumerate(names):
            j.append("event", name, {"i": i}, ts=part * 10**6 + i)
            if i % 7 == 6:
                j.commit()
            assert len(j.codec.ids) <= 8
        assert not j.codec.names  # a writer holds no names
        j.close()
    recs = list(read_records(path))
    assert [r.machine for r in recs] == names + names
    assert verify(path).status == "ok"


def test_verify_cli_reports_intact(tmp_path, capsys):
    path = tmp_path / "j.db"
    write_journal(path, n=30)
    assert main(["journal", "verify", str(path)]) == 0
    assert "ok, 30 records" in capsys.readouterr().out


def _checkpointed_size(path):
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path.stat().st_size


@pytest.mark.parametrize("cut", [1, 100, 2000, 4096])
def test_truncated_tail_is_reported_and_truncation_recovers(tmp_path, capsys, cut):
    path = tmp_path / "j.db"
    write_journal(path)
    size = _checkpointed_size(path)
    with path.open("r+b") as fh:
        fh.truncate(size - cut)
    report = verify(path)
    assert report.status == "torn_tail", report
    assert 0 < report.intact <= 400
    assert main(["journal", "verify", str(path)]) == 1
    assert "TORN TAIL" in capsys.readouterr().out
    assert main(["journal", "verify", "--truncate", str(path)]) == 0
    after = verify(path)
    assert after.status == "ok"
    assert after.intact == report.intact


def test_flipped_byte_mid_file_is_corruption_and_never_repaired(tmp_path, capsys):
    path = tmp_path / "j.db"
    write_journal(path)
    size = _checkpointed_size(path)
    recs = list(read_records(path))
    raw = bytearray(path.read_bytes())
    # Flip one payload byte of an early commit. Payloads are stored deflated, a commit's
    # together in its first row (journal schema 5), so find record {"i": 30} (seq 31, the
    # first of the fourth commit of ten) by its stored hash (HASH_BYTES raw bytes): the
    # commit's payloads end just before it, or before its prev_hash when the row holds one.
    # The file's dictionary pages come first: the record is past them, well before the end.
    at = raw.find(bytes.fromhex(recs[30].hash))
    if raw[at - HASH_BYTES : at] == bytes.fromhex(recs[30].prev_hash):
        at -= HASH_BYTES
    assert 0 < at < size - 8192
    raw[at - 3] ^= 0x01
    path.write_bytes(bytes(raw))
    report = verify(path)
    assert report.status == "corrupt"
    # a byte near the end of the stream: the commit's records stored before it still read,
    # the first bad one is of that commit (seq 31-40)
    assert 30 <= report.intact < 40, report
    assert main(["journal", "verify", "--truncate", str(path)]) == 1
    assert "CORRUPT" in capsys.readouterr().out
    assert path.stat().st_size == size  # nothing was cut


def _set(path, column, value, seq):
    db = sqlite3.connect(path)
    db.execute(f"UPDATE journal SET {column} = ? WHERE seq = ?", (value, seq))
    db.commit()
    db.close()


def test_a_commit_stores_its_payloads_in_its_first_row_and_reads_back_exactly(tmp_path):
    path = tmp_path / "j.db"
    write_journal(path, n=25)
    db = sqlite3.connect(path)
    rows = db.execute("SELECT seq, payload FROM journal ORDER BY seq").fetchall()
    db.close()
    # commits of records 1-10, 11-20, 21-25: one stream in each first row
    assert [seq for seq, payload in rows if payload != b""] == [1, 11, 21]
    recs = list(read_records(path))
    assert [r.data["i"] for r in recs] == list(range(25))
    assert verify(path).ok


def test_the_last_commit_s_stream_damaged_with_its_rows_after_it_is_corrupt(tmp_path):
    # A crash never leaves part of a transaction: rows of the last commit stored after
    # its damaged stream mean damage of another kind, never a torn tail to truncate.
    path = tmp_path / "j.db"
    write_journal(path, n=40)  # the last commit: records 31-40, its stream in row 31
    _set(path, "payload", b"\x00\x11\x22\x33", 31)
    report = verify(path)
    assert report.status == "corrupt", report
    assert report.intact == 30
    assert main(["journal", "verify", "--truncate", str(path)]) == 1


def test_only_the_last_record_damaged_is_a_torn_tail(tmp_path):
    path = tmp_path / "j.db"
    write_journal(path, n=40)
    _set(path, "hash", b"\x00" * HASH_BYTES, 40)  # a continuation row: its text is fine
    report = verify(path)
    assert report.status == "torn_tail", report
    assert report.intact == 39
    assert truncate_torn_tail(path).intact == 39
    assert verify(path).ok
    assert [r.data["i"] for r in read_records(path)] == list(range(39))


def test_a_stream_cut_short_still_reads_the_records_before_the_cut(tmp_path):
    path = tmp_path / "j.db"
    write_journal(path, n=40)
    db = sqlite3.connect(path)
    (stream,) = db.execute("SELECT payload FROM journal WHERE seq = 11").fetchone()
    db.close()
    _set(path, "payload", stream[: len(stream) // 2], 11)  # records 11-20's stream, halved
    recs = list(read_records(path))
    intact = [r for r in recs[10:20] if r.self_consistent()]
    assert 0 < len(intact) < 10  # the first records of the commit still read exactly
    assert [r.seq for r in intact] == list(range(11, 11 + len(intact)))
    report = verify(path)
    assert report.status == "corrupt", report  # records 21-40 follow the damage
    assert report.intact == 10 + len(intact)


def test_export_jsonl_round_trips_and_verifies(tmp_path):
    path = tmp_path / "j.db"
    out = tmp_path / "j.jsonl"
    write_journal(path, n=12)
    assert main(["journal", "export", str(path), "--jsonl", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 12
    assert verify(out).status == "ok"
    assert [r.hash for r in read_records(out)] == [r.hash for r in read_records(path)]


def test_jsonl_torn_last_line(tmp_path):
    path = tmp_path / "j.db"
    out = tmp_path / "j.jsonl"
    write_journal(path, n=12)
    main(["journal", "export", str(path), "--jsonl", str(out)])
    out.write_bytes(out.read_bytes()[:-40])
    assert verify(out).status == "torn_tail"
    assert truncate_torn_tail(out).intact == 11
    assert verify(out).status == "ok"


def test_missing_journal_is_an_error(tmp_path, capsys):
    assert main(["journal", "verify", str(tmp_path / "none.db")]) == 1


def test_console_script_is_installed(tmp_path):
    path = tmp_path / "j.db"
    write_journal(path, n=3)
    exe = sys.executable.replace("python", "dnpair")
    done = subprocess.run([exe, "journal", "verify", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ok, 3 records" in done.stdout
