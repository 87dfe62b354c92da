"""Journal segments (issue 12 item 6, RELIABILITY P5): past `max_bytes` (DN_JOURNAL_MAX_MB)
a journal continues in PATH.1.db, PATH.2.db …, the first record of each chained to the
last of the one before; every reader (replay, verify, export, report, status) reads the
segments as one journal, and a broken link between two segments is corruption."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.journal import GENESIS
from engine.core.journal import JOURNAL_SCHEMA
from engine.core.journal import Journal
from engine.core.journal import JournalError
from engine.core.journal import read_records
from engine.core.journal import read_segment
from engine.core.journal import record_hash
from engine.core.journal import schema_version_of
from engine.core.journal import segment_path
from engine.core.journal import segment_paths
from engine.core.journal_verify import truncate_torn_tail
from engine.core.journal_verify import verify

DNPAIR = str(Path(sys.executable).with_name("dnpair"))


def write(path: Path, n: int, *, max_bytes: int = 40_000, start: int = 0) -> None:
    j = Journal(path, max_bytes=max_bytes)
    for i in range(start, start + n):
        # incompressible padding, so segments fill at a known pace
        pad = record_hash(i, i, "x", "y", "z", GENESIS) * 3
        j.append("event", "venue", {"i": i, "pad": pad}, ts=i * 1000)
        if i % 10 == 9:
            j.commit()
    j.close()


def test_a_capped_journal_rotates_into_chained_segments_read_as_one(tmp_path):
    path = tmp_path / "j.db"
    write(path, 600)
    segments = segment_paths(path)
    assert len(segments) >= 3
    assert segments[1] == tmp_path / "j.1.db"
    recs = list(read_records(path))
    assert [r.seq for r in recs] == list(range(1, 601))
    assert [r.data["i"] for r in recs] == list(range(600))
    # each segment starts where the previous ended, chained to its last hash
    first_of_next = [next(iter(read_segment(s))) for s in segments[1:]]
    last_of_prev = [list(read_segment(s))[-1] for s in segments[:-1]]
    for prev, first in zip(last_of_prev, first_of_next, strict=True):
        assert first.seq == prev.seq + 1
        assert first.prev_hash == prev.hash
    assert verify(path).status == "ok"
    assert verify(path).intact == 600


def test_reopening_continues_the_chain_in_the_newest_segment(tmp_path):
    path = tmp_path / "j.db"
    write(path, 300)
    before = len(segment_paths(path))
    write(path, 300, start=300)
    recs = list(read_records(path))
    assert [r.seq for r in recs] == list(range(1, 601))
    assert len(segment_paths(path)) > before
    assert verify(path).ok


def test_a_stop_right_after_rotating_leaves_an_empty_segment_the_chain_goes_on_from(tmp_path):
    path = tmp_path / "j.db"
    j = Journal(path, max_bytes=8192)
    n = 0
    while len(segment_paths(path)) < 2:  # commit until the cap opens segment 1
        n += 1
        j.append("note", "engine", {"n": n, "pad": "y" * 500}, ts=n)
        j.commit()
    j.close()
    assert list(read_segment(segment_path(path, 1))) == []
    j = Journal(path, max_bytes=8192)
    assert j.last_seq == n
    j.append("note", "engine", {"n": n + 1}, ts=n + 1)
    j.close()
    recs = list(read_records(path))
    assert [r.seq for r in recs] == list(range(1, n + 2))
    assert verify(path).ok


def _relink(segment: Path, prev_hash: str) -> None:
    """Give a segment's first record another prev_hash and re-chain the whole segment,
    so each record in it is self-consistent: only the link to the previous segment breaks."""
    recs = list(read_segment(segment))
    db = sqlite3.connect(segment)
    prev = prev_hash
    for r in recs:
        digest = record_hash(r.seq, r.ts, r.kind, r.machine, r.payload, prev)
        db.execute(
            "UPDATE journal SET prev_hash=?, hash=? WHERE seq=?",
            (bytes.fromhex(prev), bytes.fromhex(digest), r.seq),
        )
        prev = digest
    db.commit()
    db.close()


def test_verify_detects_a_broken_chain_between_segments(tmp_path, capsys):
    from engine.runtime.cli import main

    path = tmp_path / "j.db"
    write(path, 600)
    segments = segment_paths(path)
    assert len(segments) >= 3
    _relink(segments[1], "ab" * 32)
    report = verify(path)
    assert report.status == "corrupt", report
    first = next(iter(read_segment(segments[1])))
    assert report.intact == first.seq - 1
    assert "does not chain" in report.detail
    assert "j.1.db" in report.detail
    assert main(["journal", "verify", "--truncate", str(path)]) == 1
    assert "CORRUPT" in capsys.readouterr().out
    # the last segment alone re-linked: still corrupt, valid records follow the break
    write(tmp_path / "k.db", 600)
    last = segment_paths(tmp_path / "k.db")[-1]
    _relink(last, "cd" * 32)
    assert verify(tmp_path / "k.db").status == "corrupt"


def test_a_torn_tail_of_the_last_segment_is_truncated_there_only(tmp_path):
    path = tmp_path / "j.db"
    write(path, 600)
    segments = segment_paths(path)
    sizes = {s: s.stat().st_size for s in segments[:-1]}
    last = segments[-1]
    db = sqlite3.connect(last)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with last.open("r+b") as fh:
        fh.truncate(last.stat().st_size - 100)
    report = verify(path)
    assert report.status == "torn_tail", report
    truncate_torn_tail(path)
    again = verify(path)
    assert again.status == "ok", again
    assert again.intact == report.intact
    assert {s: s.stat().st_size for s in segments[:-1]} == sizes  # earlier ones untouched
    assert [r.seq for r in read_records(path)] == list(range(1, report.intact + 1))


def test_cli_run_with_a_small_cap_replays_verifies_exports_and_reports_across_segments(
    tmp_path,
):
    journal = tmp_path / "r.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DN_", "NADO_"))}
    env["DN_JOURNAL_MAX_MB"] = "0.03"
    run = subprocess.run(
        [DNPAIR, "run", "--pair", "ETH-SOL", "--clock", "virtual", "--quiet", "--cycles", "6",
         "--journal", str(journal), "--summary-json", str(tmp_path / "s.json")],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    segments = segment_paths(journal)
    assert len(segments) >= 3
    assert segments[-1] == tmp_path / f"r.{len(segments) - 1}.db"
    total = sum(1 for _ in read_records(journal))
    assert total == sum(sum(1 for _ in read_segment(s)) for s in segments)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DNPAIR, *args], capture_output=True, text=True, env=env, check=False, timeout=300
        )

    replay = cli("replay", str(journal))
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert f"replay ok: {total} records" in replay.stdout
    verified = cli("journal", "verify", str(journal))
    assert verified.returncode == 0
    assert f"ok, {total} records" in verified.stdout
    out = tmp_path / "r.jsonl"
    assert cli("journal", "export", str(journal), "--jsonl", str(out)).returncode == 0
    lines = out.read_text().splitlines()
    assert len(lines) == total
    assert json.loads(lines[-1])["seq"] == total
    report = cli("report", str(journal))
    assert report.returncode == 0, report.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["cycles_completed"] == 6
    assert "6" in report.stdout
    # the cap is a runner setting: not in the run header, so replay and goldens ignore it
    header = next(iter(read_records(journal)))
    assert "journal_max_mb" not in json.dumps(header.data)
    # a broken link between two segments: verify and replay refuse
    _relink(segments[1], "ef" * 32)
    assert cli("journal", "verify", str(journal)).returncode == 1
    assert cli("replay", str(journal)).returncode == 1


def test_a_journal_of_schema_version_1_still_reads_but_is_neither_verified_nor_appended(tmp_path):
    """Older files (schema version 1: hashes as full SHA-256 hex text, payloads as plain
    text, no meta table) read the same (export, report), but this engine neither appends
    to them nor checks their chain: they are another version, not damage (issue 13).
    Before versions were recorded this test appended to such a file and verified it."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE journal (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, kind TEXT NOT "
        "NULL, machine TEXT NOT NULL, payload TEXT NOT NULL, prev_hash TEXT NOT NULL, "
        "hash TEXT NOT NULL)"
    )
    prev = "0" * 64
    for seq in range(1, 6):
        payload = json.dumps({"n": seq}, separators=(",", ":"))
        text = f"{seq}\x1f{seq}\x1fnote\x1fengine\x1f{payload}\x1f{prev}"
        digest = hashlib.sha256(text.encode()).hexdigest()
        db.execute(
            "INSERT INTO journal VALUES (?,?,?,?,?,?,?)",
            (seq, seq, "note", "engine", payload, prev, digest),
        )
        prev = digest
    db.commit()
    db.close()
    before = path.read_bytes()
    recs = list(read_records(path))
    assert [r.data["n"] for r in recs] == [1, 2, 3, 4, 5]
    assert recs[4].hash == prev
    assert schema_version_of(path) == 1
    report = verify(path)
    assert report.status == "other_version"
    assert report.version == 1
    with pytest.raises(
        JournalError, match=f"schema version 1, this dnpair reads version {JOURNAL_SCHEMA}"
    ):
        Journal(path)
    assert path.read_bytes() == before  # nothing was appended
