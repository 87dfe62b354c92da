"""Append-only, hash-chained journal on SQLite (WAL).

Each record: seq, ts (engine clock, ns), kind (event|transition|intent|note),
machine (instance id, or the event's origin), JSON payload, and a hash chained to
the previous record's hash. `commit()` makes the buffered records durable; the loop
calls it before any intent leaves the process.

Schema version (`JOURNAL_SCHEMA`, issue 13): every file records the version it was
written with in its `meta` table, and every run header (`run_started` note) carries it as
`journal_schema`; files and headers without one are version 1. Writers never append to a
file of another version; `replay` and `journal verify` refuse one plainly
(`schema_version_of`, `other_version_message`) instead of reporting a divergence.

Storage of version 2 (issue 12 item 6): the hash is SHA-256 cut to 128 bits (16 raw
bytes); prev_hash too, except that it is left empty when the row stored just before is
the previous record (whose hash it is); the kind as a small integer (`KINDS` index); the
machine as the id of its name in the file's `machines` table; the payload deflated
against the preset dictionary kept (itself deflated) in the file's `payload_dict` table
(when shorter). Version 5: the payloads of one transaction are deflated together, as
one stream (their texts one per line), into its first row; its other rows store an empty
blob and read their text from that stream by their distance to the first (`RowReader`).
Version 1 files (hex-text or 32-byte hashes, text kinds and machines, text payloads)
still read the same (export, report, status). With `max_bytes`, a full file is closed
after a commit and the journal goes on in the next segment file (`segment_path`);
readers take PATH and read every segment in order.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sqlite3
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any
from typing import NamedTuple

from engine.core.journal_dict import PAYLOAD_DICT
from engine.core.messages import dumps
from engine.core.messages import loads

__all__ = [
    "GENESIS",
    "HASH_BYTES",
    "JOURNAL_SCHEMA",
    "Journal",
    "JournalError",
    "PayloadCodec",
    "Record",
    "export_jsonl",
    "other_version_message",
    "read_records",
    "read_segment",
    "record_hash",
    "schema_version_of",
    "segment_path",
    "segment_paths",
    "stored_rows",
]

# The version of what this engine writes: the file layout below and the records' content
# (machines, events, intents). Raise it when either changes so that replay of an older
# journal says so instead of diverging. 1: every journal before versions were recorded.
# 2: issue 12's storage. 3: one position-work machine (`PositionWork`, outcomes done /
# aborted / failed) instead of BuildMachine, UnwindMachine and EmergencyExitMachine; the
# storage is version 2's. 4: fewer records per step, same facts (engine/core/loop.py):
# the deadlines a step arms and disarms are in its transition's payload (`armed`,
# `disarmed`), or its spawn note's, instead of one note each; a machine with a parent
# ends with its `machine_finished` event only (the engine's `finished` note is kept for
# root machines); the payload dictionary is rebuilt for these shapes. 5: the payloads of a
# transaction deflated together in its first row (`PayloadCodec.encode_group`): one
# dictionary-primed state copied per commit instead of per record, and smaller.
JOURNAL_SCHEMA = 5
HASH_BYTES = 16  # SHA-256 cut to 128 bits (version 1: all 32 bytes)
GENESIS = "0" * (2 * HASH_BYTES)
KINDS = ("event", "transition", "intent", "note")
# Machine-name ids a writer keeps (least recently used dropped): memory stays flat over
# any number of cycles, each of which names new machines.
MACHINE_IDS = 256
_KIND_CODE = {k: i for i, k in enumerate(KINDS)}
# At most this many records' payloads deflated together (the engine commits every 256
# records at the latest; a raw copy, `journal verify --truncate`, stores any number).
GROUP_RECORDS = 256
ROWS_PER_INSERT = 64  # rows stored by one INSERT statement (`_insert_rows`)
_LOST = "\ufffd"  # the text of a row whose stored payload is lost: never valid JSON
# Blobs are stored from bytearrays: sqlite3 binds an exact bytearray (like int and str)
# as it is, while each bytes value goes through its adapter lookup (a failed `__conform__`
# attribute lookup, with its exception, per value: half the cost of inserting a row).
# Same stored bytes. `_EMPTY` is shared and never changed.
_EMPTY = bytearray()

# Version 2: kind and machine are small integers (declared without a type: no text
# affinity converts them); payload text or deflated bytes; hashes raw bytes.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq       INTEGER PRIMARY KEY,
    ts        INTEGER NOT NULL,
    kind      NOT NULL,
    machine   NOT NULL,
    payload   NOT NULL,
    prev_hash NOT NULL,
    hash      NOT NULL
)
"""
# WITHOUT ROWID: the table is its key's index (no second page for an automatic index)
_META_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID"
)
_MACHINES_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS machines (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"
)
# The preset dictionary this file's payloads are deflated against (one row, id 1). A
# journal without it (older files) stores and reads its payloads as plain text.
_DICT_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS payload_dict (id INTEGER PRIMARY KEY, data BLOB NOT NULL)"
)


class PayloadCodec:
    """How one file stores a record's fields. Payload: the canonical JSON text (what is
    hashed), a commit's texts deflated together against the file's preset dictionary when
    that is shorter (`encode_group`), else the text itself. Reading gives back the exact
    text; a stored payload that does not inflate reads as text that cannot match its hash
    (`inflate`), so verify reports the record as damaged. Kind and machine: small integers
    in version 2 files (`machines` maps ids to names; `new_machines` are the names
    allocated and not yet stored), text in older ones.
    """

    def __init__(
        self,
        zdict: bytes | None,
        machines: dict[int, str] | None = None,
        *,
        next_id: int | None = None,
    ) -> None:
        self.zdict = zdict
        self.names = machines  # None: kinds and machines are stored as text (version 1)
        # Writing (issue 13, bounded memory): the ids of the machines named most recently,
        # at most `MACHINE_IDS`. A name used again after it was dropped gets a new id (the
        # `machines` table may name one machine under several ids; reading maps each id
        # to its name, so records read back exactly).
        self.ids: OrderedDict[str, int] = OrderedDict(
            (name, i) for i, name in sorted((machines or {}).items())[-MACHINE_IDS:]
        )
        self._next_id = next_id if next_id is not None else max(machines or {0: ""}) + 1
        self.new_machines: list[tuple[int, str]] = []
        # A 16 KB window (the dictionary fits) and a small hash table: each commit copies
        # this primed state, and a small state keeps that copy to a few microseconds on
        # the commit path (the default 32 KB / memLevel 8 cost ~0.2 ms per event in
        # bench_engine); inflate with the default window reads it. Level 5 (8-record
        # commits of a taker run): 2.7 us and 25.3 B per record; level 6 3.8 us, 24.3 B.
        self._base = (
            zlib.compressobj(5, zlib.DEFLATED, -14, 2, zlib.Z_DEFAULT_STRATEGY, zdict)
            if zdict
            else None
        )

    def encode_group(self, texts: list[str]) -> Sequence[str | bytes | bytearray]:
        """The payload column of consecutive records stored in one transaction: their
        texts, one per line, deflated as one stream into the first row and an empty blob
        in each other row, when that is shorter; else the texts themselves."""
        if self._base is None:
            return texts
        raw = "\n".join(texts).encode()
        if raw.count(b"\n") != len(texts) - 1:  # a text with a newline (never dumps')
            return texts
        c = self._base.copy()
        packed = bytearray(c.compress(raw))  # (bytearray: see `_EMPTY`)
        packed += c.flush()
        if len(packed) >= len(raw):
            return texts
        out: list[str | bytes | bytearray] = [_EMPTY] * len(texts)
        out[0] = packed
        return out

    def kind_code(self, kind: str) -> int | str:
        return kind if self.names is None else _KIND_CODE[kind]

    def machine_code(self, machine: str) -> int | str:
        if self.names is None:
            return machine
        ids = self.ids
        mid = ids.get(machine)
        if mid is not None:
            ids.move_to_end(machine)
            return mid
        mid = self._next_id
        self._next_id += 1
        ids[machine] = mid
        if len(ids) > MACHINE_IDS:
            ids.popitem(last=False)
        self.new_machines.append((mid, machine))
        return mid

    def kind_of(self, value: Any) -> str:
        if isinstance(value, int):
            return KINDS[value] if 0 <= value < len(KINDS) else f"\ufffd{value}"
        return str(value)

    def machine_of(self, value: Any) -> str:
        if isinstance(value, int):
            name = (self.names or {}).get(value)
            return name if name is not None else f"\ufffd{value}"  # never matches its hash
        return str(value)

    def inflate(self, value: bytes) -> list[str]:
        """The texts a stored stream holds, one per line. A damaged or cut stream gives
        the lines read before the damage (the last of them, maybe cut, replaced by
        `_LOST`): each is checked against its record's hash, so nothing is taken on trust;
        nothing readable gives one line that never matches its hash."""
        d = zlib.decompressobj(-15, zdict=self.zdict or b"")
        try:
            data = d.decompress(value)
            if d.eof:  # (a whole stream ends within decompress: nothing to flush)
                return data.decode().split("\n")
        except (zlib.error, UnicodeDecodeError):
            pass
        d, data = zlib.decompressobj(-15, zdict=self.zdict or b""), b""
        try:  # again in small pieces, keeping what inflated before the damage
            for at in range(0, len(value), 8):
                data += d.decompress(value[at : at + 8])
        except zlib.error:
            pass
        lines = data.decode(errors="replace").split("\n")
        lines[-1] = _LOST + value.hex()
        return lines

    @classmethod
    def for_writing(cls, db: sqlite3.Connection) -> PayloadCodec:
        """The codec a writer appends to a stored journal with: its dictionary, and only
        the ids of its most recent machine names (reading is `of`)."""
        return cls.of(db, recent=MACHINE_IDS)

    @classmethod
    def of(cls, db: sqlite3.Connection, recent: int | None = None) -> PayloadCodec:
        """The codec a stored journal was written with (no dictionary, text kinds and
        machines for older files; an unreadable machines table leaves ids unnamed)."""
        version = _schema_of_db(db) or JOURNAL_SCHEMA
        try:
            row = db.execute("SELECT data FROM payload_dict WHERE id = 1").fetchone()
            # version 2 stores the dictionary itself deflated (two pages instead of four)
            zdict = (zlib.decompress(row[0]) if version >= 2 else bytes(row[0])) if row else None
        except (sqlite3.DatabaseError, zlib.error):
            zdict = None  # payloads then read as damaged: their hashes do not match
        machines: dict[int, str] | None = None
        if version >= 2:
            machines = {}
            next_id = None
            try:
                if recent is None:
                    rows = db.execute("SELECT id, name FROM machines")
                else:  # a writer: the last names allocated, and the next free id
                    rows = db.execute(
                        "SELECT id, name FROM machines ORDER BY id DESC LIMIT ?", (recent,)
                    )
                for mid, name in rows:
                    machines[int(mid)] = str(name)
                if recent is not None:
                    top = db.execute("SELECT max(id) FROM machines").fetchone()[0]
                    next_id = int(top or 0) + 1
            except sqlite3.DatabaseError:
                pass
            if recent is not None:
                # a writer keeps ids only (bounded); names are for reading
                codec = cls(zdict, machines, next_id=next_id)
                codec.names = {}
                return codec
        return cls(zdict, machines)


PLAIN = PayloadCodec(None)
_PACKED_DICT = zlib.compress(PAYLOAD_DICT, 9)

Row = tuple[
    int, int, int | str, int | str, str | bytes | bytearray, bytearray | str, bytearray | str
]


def _schema_of_db(db: sqlite3.Connection) -> int | None:
    """The schema version a SQLite journal records in its `meta` table: 1 without one,
    None when the table cannot be read (damage), 0 for a value no version has."""
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            return 1
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.DatabaseError:
        return None
    try:
        return int(row[0]) if row else 0
    except (TypeError, ValueError):
        return 0


def schema_version_of(path: str | os.PathLike[str]) -> int | None:
    """The journal schema version PATH was written with: a SQLite file's `meta` table, a
    JSONL export's first run header (`journal_schema`); 1 when neither records one. None
    when it cannot be told (no file, not a journal, damaged before the first header)."""
    p = Path(path)
    if not p.is_file():
        return None
    if _is_jsonl(p):
        try:
            with p.open(encoding="utf-8") as fh:
                for line in fh:
                    if '"run_started"' in line:
                        payload = json.loads(line).get("payload") or {}
                        return int(payload.get("journal_schema", 1))
        except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
            return None
        return None
    try:
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return _schema_of_db(db) if "journal" in tables else None
    except sqlite3.DatabaseError:
        return None
    finally:
        db.close()


def other_version_message(path: str | os.PathLike[str], version: int) -> str:
    """One line for a journal written by another schema version."""
    return (
        f"{path}: written by journal schema version {version}, this dnpair reads version "
        f"{JOURNAL_SCHEMA}; replay or verify it with the dnpair that wrote it"
    )


def stored_rows(
    records: Iterable[Record], codec: PayloadCodec, before: str | None = None
) -> list[Row]:
    """Rows for one transaction appended after a stored row whose hash is `before`
    (None: none, or unknown). A prev_hash equal to the hash of the row stored just before
    is left empty; the first row of a file always holds its own. Payloads: deflated
    together, `GROUP_RECORDS` at a time (`PayloadCodec.encode_group`)."""
    recs = list(records)
    payloads: list[str | bytes | bytearray] = []
    for at in range(0, len(recs), GROUP_RECORDS):
        payloads += codec.encode_group([r.payload for r in recs[at : at + GROUP_RECORDS]])
    rows: list[Row] = []
    kind_code, machine_code, raw = codec.kind_code, codec.machine_code, bytearray.fromhex
    for r, payload in zip(recs, payloads, strict=True):
        digest, prev = r.hash, r.prev_hash
        linked = prev == before  # (never when `before` is None)
        stored_hash: bytearray | str
        stored_prev: bytearray | str
        try:  # `_raw` of both, inline: this runs for every record written
            stored_hash = raw(digest)
            stored_prev = _EMPTY if linked else raw(prev)
        except ValueError:  # (a damaged record being copied as it is)
            stored_hash, stored_prev = _raw(digest), _EMPTY if linked else _raw(prev)
        rows.append(
            (
                r.seq,
                r.ts,
                kind_code(r.kind),
                machine_code(r.machine),
                payload,
                stored_prev,
                stored_hash,
            )
        )
        before = digest
    return rows


class RowReader:
    """Records from one file's rows, read in sequence order (`read_segment` inlines this):
    an empty prev_hash is the hash of the row read just before; a payload stored as a
    non-empty blob opens a stream of texts, one per line (version 5: a transaction's;
    older versions: one record's), an empty blob is the line of that stream at its
    distance (in seq) from the stream's first row. A row whose text is not there (its
    stream's first row damaged or unread) reads as `_LOST`: it never matches its hash."""

    def __init__(self, codec: PayloadCodec) -> None:
        self.codec = codec
        self.before: str | None = None  # hash of the row read just before
        self.first = 0  # seq of the row that opened the current stream
        self.lines: list[str] = []  # that stream's texts

    def forget(self) -> None:
        """A row was skipped (unreadable): what came before no longer leads to the next."""
        self.before, self.lines = None, []

    def text(self, seq: int, payload: Any) -> str:
        if type(payload) is not bytes:
            return str(payload)
        if payload:
            self.first, self.lines = seq, self.codec.inflate(payload)
            return self.lines[0]
        at = seq - self.first
        return self.lines[at] if 0 < at < len(self.lines) else _LOST

    def lost(self, seq: int, payload: Any) -> bool:
        """Is this row's text lost with its stream (stored empty, nothing to read it by)?"""
        at = seq - self.first
        return payload == b"" and not 0 < at < len(self.lines)

    def record(self, row: Any) -> Record:
        """A stored row; hashes and payloads written as text by older versions read the
        same."""
        seq, ts, kind, machine, payload, prev_hash, digest = row
        codec = self.codec
        rec = Record(
            seq,
            ts,
            codec.kind_of(kind),
            codec.machine_of(machine),
            self.text(seq, payload),
            _hex(prev_hash) if prev_hash else (self.before or ""),
            _hex(digest),
        )
        self.before = rec.hash
        return rec


def _raw(digest: str) -> bytearray | str:
    try:
        return bytearray.fromhex(digest)  # (bytearray: see `_EMPTY`)
    except ValueError:
        return digest  # not a hash (a damaged record being copied as it is)


def _hex(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)


class JournalError(Exception):
    """The journal cannot be written or read as a journal; never retried silently."""


def record_hash(seq: int, ts: int, kind: str, machine: str, payload: str, prev_hash: str) -> str:
    """SHA-256 over the fields and the previous hash, cut to `HASH_BYTES` (hex)."""
    text = f"{seq}\x1f{ts}\x1f{kind}\x1f{machine}\x1f{payload}\x1f{prev_hash}"
    return hashlib.sha256(text.encode()).digest()[:HASH_BYTES].hex()


class Record(NamedTuple):
    """One journal record. A named tuple (issue 13): immutable and compared by value like
    the attrs class it was, built for a fraction of the cost (`_new` builds one without
    even `__new__`'s call, on the write and read paths: one per record written or read)."""

    seq: int
    ts: int
    kind: str
    machine: str
    payload: str  # canonical JSON text, exactly as hashed
    prev_hash: str
    hash: str

    @property
    def data(self) -> Any:
        return loads(self.payload)

    def self_consistent(self) -> bool:
        """The stored hash is this engine's hash of the record (a version 1 record, with
        its full 32-byte hash, is not: verify refuses such files before looking)."""
        expected = record_hash(
            self.seq, self.ts, self.kind, self.machine, self.payload, self.prev_hash
        )
        return expected == self.hash

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "machine": self.machine,
            "payload": self.data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Record:
        return cls(
            seq=int(obj["seq"]),
            ts=int(obj["ts"]),
            kind=str(obj["kind"]),
            machine=str(obj["machine"]),
            payload=dumps(obj["payload"]),
            prev_hash=str(obj["prev_hash"]),
            hash=str(obj["hash"]),
        )


# `Record(...)` without its `__new__` (a Python function): the tuple of its fields as is
_new = tuple.__new__


class Journal:
    """Writer. `path=":memory:"` keeps the records in a list, no SQLite at all (tests,
    replay, benchmarks): same chain, same hashes.

    `durable=True` uses synchronous=FULL: a commit returns only once the WAL is fsynced,
    so it survives power loss. `durable="process"` (simulated time) uses NORMAL: every
    commit survives the process being killed, the last ones may not survive the machine.
    `durable=False` turns syncing off (benchmarks, in-memory journals).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        durable: bool | str = True,
        compress: bool = True,
        max_bytes: int = 0,
        hashed: bool = True,
    ) -> None:
        self.path = str(path)
        # False (in memory only): records carry no hash chain, for a reader that compares
        # only time, kind, machine and payload (replay's fresh engine).
        self._hashed = hashed or self.path != ":memory:"
        self._pending: list[Record] = []
        self._memory: list[Record] | None = None
        self.codec = PLAIN
        self._durable = durable
        self._compress = compress
        # Size cap of one segment file (0 = none): past it, the next commit goes to a new
        # segment (`segment_path`), whose first record chains to this one's last hash.
        self.max_bytes = max_bytes
        if self.path == ":memory:":
            self._memory = []
            self._seq, self._hash = 0, GENESIS
            self.committed = 0
            return
        segments = segment_paths(self.path)
        self.segment = max(len(segments) - 1, 0)
        row = self._open_segment()
        if row is None and self.segment > 0:
            # the newest segment is empty (a stop right after rotating): the chain goes
            # on from the previous one's last record
            row = _last_row(segment_path(self.path, self.segment - 1))
        self._seq, self._hash = (int(row[0]), _hex(row[1])) if row else (0, GENESIS)
        self.committed = self._seq

    @property
    def segment_file(self) -> str:
        return str(segment_path(self.path, self.segment))

    def _open_segment(self) -> Any:
        path = self.segment_file
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            tables = {
                r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "journal" in tables:
                # an existing file: only one of this version is appended to (and nothing
                # about a file of another version changes, not even its journal mode)
                version = _schema_of_db(self._db)
                if version != JOURNAL_SCHEMA:
                    self._db.close()
                    raise JournalError(
                        other_version_message(path, version) + "; start a new --journal"
                        if version is not None
                        else f"cannot open journal {path}: its schema version is unreadable"
                    )
            self._db.execute("PRAGMA journal_mode=WAL")
            durable = self._durable
            level = "NORMAL" if durable == "process" else "FULL" if durable else "OFF"
            self._db.execute(f"PRAGMA synchronous={level}")
            if "journal" not in tables:
                # a new file: its layout and version, and the dictionary, in one transaction
                self._db.execute("BEGIN")
                self._db.execute(_META_SCHEMA)
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(JOURNAL_SCHEMA),)
                )
                self._db.execute(_SCHEMA)
                self._db.execute(_MACHINES_SCHEMA)
                if self._compress:
                    self._db.execute(_DICT_SCHEMA)
                    self._db.execute("INSERT INTO payload_dict VALUES (1, ?)", (_PACKED_DICT,))
                self._db.execute("COMMIT")
            row = self._db.execute(
                "SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            self.codec = PayloadCodec.for_writing(self._db)
            # the commit path's statements run on one cursor (`Connection.execute` makes
            # a new one for each statement)
            self._cursor = self._db.cursor()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        # the hash of the last row stored in this file (None: the file has none yet)
        self._stored_hash: str | None = _hex(row[1]) if row else None
        return row

    def _rotate_if_full(self) -> None:
        if not self.max_bytes or self._memory is not None:
            return
        try:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
            if int(pages) * int(page_size) < self.max_bytes:
                return
            # the full segment becomes one self-contained file before the next starts
            self._leave_wal()
            self._db.close()
        except sqlite3.Error as exc:
            raise JournalError(f"journal rotation failed: {exc}") from exc
        self.segment += 1
        self._open_segment()

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def is_empty(self) -> bool:
        return self._seq == 0

    def append(self, kind: str, machine: str, payload: Any, ts: int) -> Record:
        return self.append_text(kind, machine, dumps(payload), ts)

    def append_text(self, kind: str, machine: str, text: str, ts: int) -> Record:
        """`append` of a payload already in canonical JSON (`dumps`' text)."""
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}")
        seq = self._seq + 1
        digest = record_hash(seq, ts, kind, machine, text, self._hash) if self._hashed else ""
        rec = _new(Record, (seq, ts, kind, machine, text, self._hash, digest))
        self._pending.append(rec)
        self._seq, self._hash = seq, digest
        return rec

    @property
    def pending(self) -> int:
        return len(self._pending)

    def commit(self) -> None:
        """Write the pending records in one transaction. A failure here is fatal, never retried."""
        if not self._pending:
            return
        if self._memory is not None:
            self._memory.extend(self._pending)
            self.committed = self._seq
            self._pending.clear()
            return
        try:
            self._cursor.execute("BEGIN")
            self.insert(self._pending, self._stored_hash)
            self._cursor.execute("COMMIT")
        except sqlite3.Error as exc:
            raise JournalError(f"journal commit failed: {exc}") from exc
        self.committed = self._seq
        self._stored_hash = self._hash
        self._pending.clear()
        self._rotate_if_full()

    def insert(self, records: Iterable[Record], before: str | None = None) -> None:
        """Store rows as they are (hashes exactly as recorded) and the names of machines
        they are the first to mention, inside the caller's transaction."""
        rows = stored_rows(records, self.codec, before)
        if self.codec.new_machines:
            self._cursor.executemany("INSERT INTO machines VALUES (?, ?)", self.codec.new_machines)
            self.codec.new_machines.clear()
        for at in range(0, len(rows), ROWS_PER_INSERT):
            part = rows[at : at + ROWS_PER_INSERT]
            self._cursor.execute(_insert_rows(len(part)), list(chain.from_iterable(part)))

    def records(self) -> list[Record]:
        """Committed records (every segment) followed by pending ones, in sequence order."""
        if self._memory is not None:
            return self._memory + self._pending
        return list(read_records(self.path)) + list(self._pending)

    def close(self) -> None:
        self.commit()
        if self._memory is None:
            # another process still reading it: the file stays in WAL mode, intact
            with contextlib.suppress(sqlite3.Error):
                self._leave_wal()
            self._db.close()

    def _leave_wal(self) -> None:
        """A file no longer written leaves WAL mode (its log checkpointed into it): the
        read-only readers (report, status, replay, verify) then open it without creating
        `-wal`/`-shm` files beside it. The next writer turns WAL on again."""
        self._db.execute("PRAGMA journal_mode=DELETE")


@functools.cache
def _insert_rows(n: int) -> str:
    """One INSERT of `n` rows: SQLite runs it as one statement (one step, one reset)
    instead of `executemany`'s one per row; at most `ROWS_PER_INSERT` rows, so that the
    connection's statement cache (128) holds every size."""
    return "INSERT INTO journal VALUES " + ",".join(["(?,?,?,?,?,?,?)"] * n)


def _is_jsonl(path: Path) -> bool:
    return path.suffix in (".jsonl", ".ndjson")


def segment_path(path: str | os.PathLike[str], n: int) -> Path:
    """Segment `n` of a journal: 0 is PATH itself, then PATH's stem with `.1`, `.2` … before
    its suffix (`runs/x.db`, `runs/x.1.db`, `runs/x.2.db`)."""
    p = Path(path)
    return p if n == 0 else p.with_name(f"{p.stem}.{n}{p.suffix}")


def segment_paths(path: str | os.PathLike[str]) -> list[Path]:
    """The journal's segment files in order: PATH, then each next one while it exists."""
    p = Path(path)
    if _is_jsonl(p) or not p.exists():
        return [p] if p.exists() else []
    out = [p]
    while segment_path(p, len(out)).exists():
        out.append(segment_path(p, len(out)))
    return out


def _last_row(path: Path) -> Any:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"cannot read journal segment {path}: {exc}") from exc
    finally:
        db.close()


def read_records(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Records in file order from a SQLite journal or a JSONL export.

    Raises sqlite3.DatabaseError / ValueError at the first unreadable spot; callers
    that need to classify damage use `engine.core.journal_verify`.
    """
    p = Path(path)
    if _is_jsonl(p):
        with p.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield Record.from_json(json.loads(line))
        return
    if not p.exists():
        raise JournalError(f"no journal at {p}")
    for segment in segment_paths(p):
        yield from read_segment(segment)


def read_segment(p: Path) -> Iterator[Record]:
    db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        codec = PayloadCodec.of(db)
        cur = db.execute(
            "SELECT seq, ts, kind, machine, payload, prev_hash, hash FROM journal ORDER BY seq"
        )
        if codec.names is None:  # version 1: text kinds and machines
            reader = RowReader(codec)
            for row in cur:
                yield reader.record(row)
            return
        # `RowReader.record` inlined for version 2+ rows (the replay and report read path)
        kinds, names, inflate = KINDS, codec.names, codec.inflate
        kind_of, machine_of = codec.kind_of, codec.machine_of
        before = ""
        first, lines, n = 0, [""], 1
        for seq, ts, kind, machine, payload, prev_hash, digest in cur:
            digest = digest.hex() if type(digest) is bytes else str(digest)
            if type(payload) is bytes:
                if payload:
                    first, lines = seq, inflate(payload)
                    n = len(lines)
                    text = lines[0]
                else:
                    at = seq - first
                    text = lines[at] if 0 < at < n else _LOST
            else:
                text = str(payload)
            yield _new(
                Record,
                (
                    seq,
                    ts,
                    kinds[kind] if type(kind) is int and 0 <= kind < len(kinds) else kind_of(kind),
                    names.get(machine) or machine_of(machine),
                    text,
                    _hex(prev_hash) if prev_hash else before,
                    digest,
                ),
            )
            before = digest
    finally:
        db.close()


def export_jsonl(records: Iterable[Record], out: str | os.PathLike[str]) -> int:
    n = 0
    with Path(out).open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(dumps(rec.to_json()) + "\n")
            n += 1
    return n
