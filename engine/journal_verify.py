"""`journal verify`: classify a journal as intact, torn at the tail, or corrupt.

A torn tail (records missing or damaged at the end, nothing valid after them) is
what a crash or a short write leaves: it is reported and can be truncated away.
Damage followed by valid records is corruption: never repaired automatically, and
`run` refuses to trade on it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import attrs

from engine.journal import GENESIS
from engine.journal import Journal
from engine.journal import Record
from engine.journal import read_records

__all__ = ["VerifyReport", "truncate_torn_tail", "verify"]

_PROBE_LIMIT = 100_000  # how far past the first bad record we look for valid ones


@attrs.frozen
class VerifyReport:
    status: str  # "ok" | "torn_tail" | "corrupt" | "missing"
    intact: int  # records 1..intact form a valid chain
    detail: str = ""

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
    p = Path(path)
    if not p.exists():
        return VerifyReport("missing", 0, "file not found")
    intact, prev_hash, problem = 0, GENESIS, ""
    try:
        for rec in read_records(p):
            problem = _chain_ok(rec, intact + 1, prev_hash) or ""
            if problem:
                break
            intact, prev_hash = rec.seq, rec.hash
    except (sqlite3.DatabaseError, ValueError, KeyError) as exc:
        problem = f"unreadable after record {intact}: {exc}"
    if not problem:
        return VerifyReport("ok", intact)
    if p.suffix in (".jsonl", ".ndjson"):
        later = _valid_jsonl_after(p, intact)
    else:
        later = _valid_sqlite_after(p, intact)
    return VerifyReport("corrupt" if later else "torn_tail", intact, problem)


def _valid_sqlite_after(p: Path, intact: int) -> bool:
    """Is any self-consistent record stored past the damage? Probe row by row."""
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    except sqlite3.DatabaseError:
        return False
    try:
        try:
            top_row = db.execute("SELECT max(seq) FROM journal").fetchone()
            top = int(top_row[0]) if top_row and top_row[0] is not None else intact
        except sqlite3.DatabaseError:
            top = intact + _PROBE_LIMIT
        for seq in range(intact + 2, min(top, intact + _PROBE_LIMIT) + 1):
            try:
                row = db.execute(
                    "SELECT seq, ts, kind, machine, payload, prev_hash, hash "
                    "FROM journal WHERE seq = ?",
                    (seq,),
                ).fetchone()
            except sqlite3.DatabaseError:
                continue
            if row is not None and Record(*row).self_consistent():
                return True
        return False
    except sqlite3.DatabaseError:
        return False
    finally:
        db.close()


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
    p = Path(path)
    keep: list[Record] = []
    for rec in read_records_prefix(p, report.intact):
        keep.append(rec)
    tmp = p.with_name(p.name + ".truncating")
    for leftover in (tmp, Path(str(tmp) + "-wal"), Path(str(tmp) + "-shm")):
        leftover.unlink(missing_ok=True)
    if p.suffix in (".jsonl", ".ndjson"):
        from engine.journal import export_jsonl

        export_jsonl(keep, tmp)
    else:
        out = Journal(tmp, durable=True)
        out._db.executemany(  # raw copy: hashes must stay exactly as recorded
            "INSERT INTO journal VALUES (?,?,?,?,?,?,?)",
            [(r.seq, r.ts, r.kind, r.machine, r.payload, r.prev_hash, r.hash) for r in keep],
        )
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


def read_records_prefix(p: Path, n: int) -> list[Record]:
    out: list[Record] = []
    try:
        for rec in read_records(p):
            if len(out) >= n:
                break
            out.append(rec)
    except (sqlite3.DatabaseError, ValueError, KeyError):
        pass
    return out[:n]
