"""`journal verify`: classify a journal as intact, torn at the tail, or corrupt.

A torn tail (records missing or damaged at the end, nothing valid after them) is
what a crash or a short write leaves: it is reported and can be truncated away.
Damage followed by valid records is corruption: never repaired automatically, and
`run` refuses to trade on it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import attrs

from engine.core.journal import GENESIS
from engine.core.journal import JOURNAL_SCHEMA
from engine.core.journal import Journal
from engine.core.journal import PayloadCodec
from engine.core.journal import Record
from engine.core.journal import RowReader
from engine.core.journal import _hex
from engine.core.journal import other_version_message
from engine.core.journal import read_records
from engine.core.journal import read_segment
from engine.core.journal import schema_version_of
from engine.core.journal import segment_paths

__all__ = ["VerifyReport", "truncate_torn_tail", "verify"]

_PROBE_LIMIT = 100_000  # how far past the first bad record we look for valid ones
CRASH_TAIL_BYTES = 4096  # one SQLite page (the journal's page size)


@attrs.frozen
class VerifyReport:
    status: str  # "ok" | "torn_tail" | "corrupt" | "missing" | "other_version"
    intact: int  # records 1..intact form a valid chain
    detail: str = ""
    shortfall: int = 0  # bytes the file is short of its own SQLite header (a cut file)
    last_hash: str = GENESIS  # hash of record `intact` (where the next segment chains on)
    version: int = JOURNAL_SCHEMA  # the journal schema version the file was written with

    @property
    def crash_shaped(self) -> bool:
        """A torn tail a crash can leave (the last record damaged, at most the last page
        missing): `dnpair run` repairs it on start. A file cut shorter than that was
        damaged some other way: only an operator truncates it."""
        return self.status == "torn_tail" and self.shortfall <= CRASH_TAIL_BYTES

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self, path: str) -> str:
        if self.status == "ok":
            return f"{path}: ok, {self.intact} records, hash chain intact"
        if self.status == "torn_tail":
            return (
                f"{path}: TORN TAIL after record {self.intact} ({self.detail}); "
                f"run `dnpair journal verify --truncate {path}` to drop the damaged tail"
            )
        if self.status == "missing":
            return f"{path}: no journal ({self.detail})"
        if self.status == "other_version":
            return other_version_message(path, self.version)
        return (
            f"{path}: CORRUPT after record {self.intact} ({self.detail}); "
            "valid records follow the damage, refusing to repair automatically"
        )


def _chain_ok(rec: Record, expected_seq: int, prev_hash: str) -> str | None:
    if rec.seq != expected_seq:
        return f"record {expected_seq} missing (found seq {rec.seq})"
    if rec.prev_hash != prev_hash:
        return f"record {rec.seq} does not chain to record {rec.seq - 1}"
    if not rec.self_consistent():
        return f"record {rec.seq} content does not match its hash"
    return None


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Every segment in order (`engine.core.journal.segment_paths`), each one's first record
    chained to the previous segment's last. Only the last segment may have a torn tail:
    damage in an earlier one has valid records after it, so it is corruption."""
    p = Path(path)
    if not p.exists():
        return VerifyReport("missing", 0, "file not found")
    version = schema_version_of(p)
    if version is not None and version != JOURNAL_SCHEMA:
        # another layout and other hashes: not damage, and nothing to check it against
        return VerifyReport("other_version", 0, f"schema version {version}", version=version)
    if p.suffix in (".jsonl", ".ndjson"):
        return _verify_jsonl(p)
    segments = segment_paths(p)
    report = VerifyReport("ok", 0)
    for n, segment in enumerate(segments):
        with tempfile.TemporaryDirectory() as tmp:
            copy, shortfall = _padded_copy(segment, Path(tmp))
            report = _verify_sqlite(copy, shortfall, report.intact, report.last_hash)
        if report.ok:
            continue
        where = f"segment {segment.name}: " if n else ""
        if n + 1 < len(segments):
            detail = f"{where}{report.detail}; later segments follow"
            return VerifyReport("corrupt", report.intact, detail, report.shortfall)
        return attrs.evolve(report, detail=where + report.detail)
    return report


def _verify_jsonl(p: Path) -> VerifyReport:
    intact, prev_hash, problem = 0, GENESIS, ""
    try:
        for rec in read_records(p):
            problem = _chain_ok(rec, intact + 1, prev_hash) or ""
            if problem:
                break
            intact, prev_hash = rec.seq, rec.hash
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"unreadable after record {intact}: {exc}"
    if not problem:
        return VerifyReport("ok", intact)
    later = _valid_jsonl_after(p, intact)
    return VerifyReport("corrupt" if later else "torn_tail", intact, problem)


def _padded_copy(p: Path, tmp: Path) -> tuple[Path, int]:
    """Copy the database (and its WAL) aside; if the file is shorter than its own header
    says, pad the copy with zeros so SQLite reads what survived instead of refusing
    the whole file. Returns the copy and how many bytes were missing."""
    copy = tmp / "journal.db"
    shutil.copyfile(p, copy)
    for side in ("-wal",):
        src = Path(str(p) + side)
        if src.exists():
            shutil.copyfile(src, Path(str(copy) + side))
    raw = copy.read_bytes()[:100]
    if len(raw) < 100 or not raw.startswith(b"SQLite format 3\x00"):
        return copy, 0
    page_size = int.from_bytes(raw[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(raw[28:32], "big")
    size = copy.stat().st_size
    expected = max(page_size * pages, -(-size // page_size) * page_size) if page_size else size
    if expected > size:
        with copy.open("ab") as fh:
            fh.write(b"\x00" * (expected - size))
    return copy, expected - size


def _rows_from(db: sqlite3.Connection, start: int, reader: RowReader) -> Iterator[Record | None]:
    """Records from seq `start` on, read by `reader` (a stream's first row must come
    first); None marks a row SQLite could not read."""
    seq = start
    while True:
        try:
            rows = db.execute(
                "SELECT seq, ts, kind, machine, payload, prev_hash, hash FROM journal "
                "WHERE seq >= ? ORDER BY seq LIMIT 512",
                (seq,),
            ).fetchall()
        except sqlite3.DatabaseError:
            # Something in this range is unreadable: go row by row to find where.
            try:
                row = db.execute(
                    "SELECT seq, ts, kind, machine, payload, prev_hash, hash "
                    "FROM journal WHERE seq = ?",
                    (seq,),
                ).fetchone()
            except sqlite3.DatabaseError:
                yield None
                return
            if row is None:
                yield None
                return
            rows = [row]
        if not rows:
            return
        for row in rows:
            yield reader.record(row)
        seq = int(rows[-1][0]) + 1


def _verify_sqlite(
    copy: Path, shortfall: int, start: int = 0, start_hash: str = GENESIS
) -> VerifyReport:
    """One file whose first record follows record `start` (hash `start_hash`)."""
    try:
        db = sqlite3.connect(copy)
        db.execute("SELECT 1 FROM journal LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        if shortfall:
            # Cut before its first record's page (the tables and the dictionary come
            # first): nothing valid follows the cut, so a torn tail, never repaired
            # without the operator (not crash-shaped past one page).
            return VerifyReport(
                "torn_tail",
                start,
                f"no record readable; file {shortfall} bytes short",
                shortfall,
                start_hash,
            )
        return VerifyReport("corrupt", start, f"not a readable journal: {exc}")
    try:
        intact, prev_hash, problem = start, start_hash, ""
        reader = RowReader(PayloadCodec.of(db))
        for rec in _rows_from(db, start + 1, reader):
            if rec is None:
                problem = f"unreadable after record {intact}"
                break
            problem = _chain_ok(rec, intact + 1, prev_hash) or ""
            if problem:
                break
            intact, prev_hash = rec.seq, rec.hash
        if not problem:
            if shortfall:
                return VerifyReport(
                    "torn_tail",
                    intact,
                    f"file is {shortfall} bytes short of its own header",
                    shortfall,
                    prev_hash,
                )
            return VerifyReport("ok", intact, last_hash=prev_hash)
        if shortfall:
            # The file was cut: SQLite fills a record's page from its end, so records
            # after the damaged one can survive in the same page. The cut explains the
            # damage; keep the intact prefix.
            return VerifyReport(
                "torn_tail",
                intact,
                f"{problem}; file {shortfall} bytes short",
                shortfall,
                prev_hash,
            )
        # A row numbered at or below one already read cannot come from a cut or a crash:
        # the file's own structure is damaged, even if every record read so far chains.
        backwards = rec is not None and rec.seq <= intact
        later = backwards or _valid_sqlite_after(db, intact, reader)
        status = "corrupt" if later else "torn_tail"
        return VerifyReport(status, intact, problem, last_hash=prev_hash)
    finally:
        db.close()


def _valid_sqlite_after(db: sqlite3.Connection, intact: int, reader: RowReader) -> bool:
    """Is any self-consistent record stored past the damage? Probe row by row, `reader`
    going on from the damaged row. A row of the damaged one's own transaction whose text
    was lost with it (the stream both are stored in is damaged) counts too: a crash never
    leaves a transaction in part (SQLite commits whole), so rows of it beyond the damage
    mean the damage came some other way."""
    try:
        top_row = db.execute("SELECT max(seq) FROM journal").fetchone()
        top = int(top_row[0]) if top_row and top_row[0] is not None else intact
    except sqlite3.DatabaseError:
        top = intact + _PROBE_LIMIT
    same_stream = True  # no stream opened since the damaged row
    for seq in range(intact + 2, min(top, intact + _PROBE_LIMIT) + 1):
        try:
            row = db.execute(
                "SELECT seq, ts, kind, machine, payload, prev_hash, hash "
                "FROM journal WHERE seq = ?",
                (seq,),
            ).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is None:
            continue
        reader.before = None
        if not row[5]:  # prev_hash left empty: the row stored before holds it
            try:
                above = db.execute("SELECT hash FROM journal WHERE seq = ?", (seq - 1,)).fetchone()
            except sqlite3.DatabaseError:
                above = None
            reader.before = _hex(above[0]) if above else None
        payload = row[4]
        if type(payload) is bytes and payload:
            same_stream = False
        if reader.record(row).self_consistent():
            return True
        if same_stream and reader.lost(seq, payload):
            return True
    return False


def _valid_jsonl_after(p: Path, intact: int) -> bool:
    import json

    lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in lines[intact + 1 :]:
        try:
            rec = Record.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue
        if rec.seq > intact + 1 and rec.self_consistent():
            return True
    return False


def truncate_torn_tail(path: str | os.PathLike[str]) -> VerifyReport:
    """Keep the intact prefix of a torn journal (temp file + fsync + rename)."""
    report = verify(path)
    if report.status != "torn_tail":
        return report
    segments = segment_paths(path) or [Path(path)]
    p = segments[-1]  # only the last segment can have a torn tail
    before = 0
    for segment in segments[:-1]:
        before += sum(1 for _ in read_segment(segment))
    keep = read_records_prefix(p, report.intact - before, first=before + 1)
    tmp = p.with_name(p.name + ".truncating")
    for leftover in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
        leftover.unlink(missing_ok=True)
    if p.suffix in (".jsonl", ".ndjson"):
        from engine.core.journal import export_jsonl

        export_jsonl(keep, tmp)
    else:
        out = Journal(tmp, durable=True)
        out._db.execute("BEGIN")
        out.insert(keep)  # raw copy: hashes must stay exactly as recorded
        out._db.execute("COMMIT")
        out._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        out._db.close()
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    for side in ("-wal", "-shm"):
        Path(str(p) + side).unlink(missing_ok=True)
    os.replace(tmp, p)
    dir_fd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return VerifyReport("torn_tail", report.intact, f"truncated to {report.intact} records")


def read_records_prefix(p: Path, n: int, *, first: int = 1) -> list[Record]:
    """The first `n` records of one file (its first is record `first`), read the same
    forgiving way `verify` reads them."""
    if p.suffix in (".jsonl", ".ndjson"):
        out: list[Record] = []
        try:
            for rec in read_records(p):
                if len(out) >= n:
                    break
                out.append(rec)
        except (ValueError, KeyError, TypeError):
            pass
        return out[:n]
    with tempfile.TemporaryDirectory() as tmp:
        copy, _ = _padded_copy(p, Path(tmp))
        db = sqlite3.connect(copy)
        try:
            recs: list[Record] = []
            for row in _rows_from(db, first, RowReader(PayloadCodec.of(db))):
                if row is None or len(recs) >= n:
                    break
                recs.append(row)
            return recs
        finally:
            db.close()
