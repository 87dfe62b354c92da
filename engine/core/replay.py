"""Replay: feed a journal's recorded inbound events through fresh machines.

Time is a virtual clock set to each recorded event's timestamp; deadline expiries
are inputs (they were journaled as events from the clock), so no timer fires on
its own. Every record the fresh engine writes must equal the recorded one (time,
kind, machine, payload); the first difference is the divergence. A run header of
another journal schema version (`journal_schema`, 1 when absent) is not replayed:
`other_version` says which, and nothing is compared.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from engine.core.clock import VirtualClock
from engine.core.events import Event
from engine.core.journal import GENESIS
from engine.core.journal import JOURNAL_SCHEMA
from engine.core.journal import KINDS
from engine.core.journal import Journal
from engine.core.journal import Record
from engine.core.loop import RUNNER
from engine.core.loop import Engine
from engine.core.loop import MachineError
from engine.core.messages import from_own_dict
from engine.core.messages import loads

__all__ = ["Divergence", "ReplayResult", "replay_records"]


@attrs.frozen
class Divergence:
    index: int
    expected: Record | None
    actual: Record | None

    def describe(self) -> str:
        def show(r: Record | None) -> str:
            if r is None:
                return "(nothing)"
            return f"seq={r.seq} ts={r.ts} {r.kind} [{r.machine}] {r.payload}"

        return (
            f"first divergence at record {self.index + 1}:\n"
            f"  recorded: {show(self.expected)}\n"
            f"  replayed: {show(self.actual)}"
        )


@attrs.frozen
class ReplayResult:
    records: int
    events_fed: int
    divergence: Divergence | None
    error: str | None = None
    # Records the replay derived from the journal's last event that the journal does not
    # hold: it ends mid-step, as a torn (then truncated) tail leaves it. Not a divergence.
    tail_missing: int = 0
    # The journal schema version of a run header this engine does not write (None: same).
    other_version: int | None = None

    @property
    def ok(self) -> bool:
        return self.divergence is None and self.other_version is None


def _is_header(rec: Record) -> bool:
    return rec.kind == "note" and '"run_started"' in rec.payload


def header_version(rec: Record) -> int | None:
    """The journal schema version a run header records (1 before versions were)."""
    data = rec.data if _is_header(rec) else None
    if not isinstance(data, dict) or data.get("note") != "run_started":
        return None
    try:
        return int(data.get("journal_schema", 1))
    except (TypeError, ValueError):
        return 0


def replay_records(recorded: Sequence[Record]) -> ReplayResult:
    """Replay every run in the journal; a restart appends a new run with its own header."""
    starts = [i for i, r in enumerate(recorded) if _is_header(r)]
    for i in starts:
        version = header_version(recorded[i])
        if version is not None and version != JOURNAL_SCHEMA:
            return ReplayResult(len(recorded), 0, None, None, other_version=version)
    starts = starts or [0]
    if starts[0] != 0:
        starts.insert(0, 0)
    total_fed = 0
    tail_missing = 0
    for n, begin in enumerate(starts):
        last = n + 1 == len(starts)
        end = len(recorded) if last else starts[n + 1]
        result = _replay_segment(recorded[begin:end], torn_tail_allowed=last)
        total_fed += result.events_fed
        tail_missing = result.tail_missing
        if result.divergence is not None:
            d = result.divergence
            moved = Divergence(d.index + begin, d.expected, d.actual)
            return ReplayResult(len(recorded), total_fed, moved, result.error)
    return ReplayResult(len(recorded), total_fed, None, None, tail_missing)


class _Comparing(Journal):
    """The fresh engine's journal during replay: each record it writes is compared, as it
    is written, with the next recorded one (time, kind, machine, payload; the driving
    code's annotations skipped on both sides) instead of being kept for a comparison at
    the end. A record that matches is not built again (`append` answers the recorded one:
    nothing in replay reads a fresh record's seq or hashes); the first that differs, and
    every record beyond the recorded ones, are built as the in-memory journal builds them.
    """

    def __init__(self, recorded: Sequence[Record]) -> None:
        super().__init__(":memory:", durable=False, hashed=False)
        self.expected = recorded
        self.matched = 0  # recorded records matched so far, in order
        self.first_differing: Record | None = None  # the fresh record at `matched`
        self.extra: list[Record] = []  # fresh records beyond the recorded ones
        self._n = 0  # fresh records written (their seq)

    def append_text(self, kind: str, machine: str, text: str, ts: int) -> Record:
        self._n += 1
        if machine != RUNNER and self.first_differing is None:
            i = self.matched
            if i < len(self.expected):
                want = self.expected[i]
                if (
                    want.payload == text
                    and want.ts == ts
                    and want.machine == machine
                    and want.kind == kind
                ):
                    self.matched = i + 1
                    return want
            if kind not in KINDS:
                raise ValueError(f"unknown record kind {kind!r}")
            rec = self._fresh(kind, machine, text, ts)
            if i < len(self.expected):
                self.first_differing = rec
            else:
                self.extra.append(rec)
            return rec
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}")
        return self._fresh(kind, machine, text, ts)

    def _fresh(self, kind: str, machine: str, text: str, ts: int) -> Record:
        # as Journal(":memory:", hashed=False) builds it: no hash, GENESIS before the first
        return Record(self._n, ts, kind, machine, text, GENESIS if self._n == 1 else "", "")

    @property
    def pending(self) -> int:
        return 0

    def commit(self) -> None:
        return None


def _replay_segment(recorded: Sequence[Record], *, torn_tail_allowed: bool) -> ReplayResult:
    if not recorded:
        return ReplayResult(0, 0, Divergence(0, None, None), "empty journal")
    header = recorded[0]
    data = header.data
    if header.kind != "note" or not isinstance(data, dict) or data.get("note") != "run_started":
        return ReplayResult(0, 0, Divergence(0, header, None), "journal has no run header")
    clock = VirtualClock(start_ns=header.ts)
    # Annotations by the driving code are commentary, not machine output.
    recorded_out = [r for r in recorded if r.machine != RUNNER]
    journal = _Comparing(recorded_out)
    engine = Engine(clock, journal, replaying=True)
    error: str | None = None
    fed = 0
    try:
        engine.start(str(data["app"]), data.get("config") or {})
        for rec in recorded[1:]:
            if rec.kind != "event" or rec.machine in ("engine", RUNNER):
                continue  # outputs and engine-made events are re-derived, then compared
            if rec.ts < clock.now_ns():
                error = f"record {rec.seq} goes back in time"
                break
            clock.set_time(rec.ts)
            ev = from_own_dict(loads(rec.payload))  # `from_dict(rec.data)`, without a copy
            if not isinstance(ev, Event):
                error = f"record {rec.seq} is not an event: {rec.data.get('kind')}"
                break
            # journaled as recorded: the event was decoded from exactly that text
            engine.process(ev, origin=rec.machine, text=rec.payload)
            fed += 1
    except MachineError as exc:
        error = str(exc)  # the recorded run may have failed the same way: compare
    except (ValueError, TypeError, KeyError) as exc:
        error = f"cannot replay: {exc}"
    recorded = recorded_out
    n = journal.matched
    if journal.first_differing is not None:
        got = journal.first_differing
        return ReplayResult(len(recorded), fed, Divergence(n, recorded[n], got), error)
    extra = journal.extra
    if torn_tail_allowed and recorded and extra and all(r.ts == recorded[-1].ts for r in extra):
        # The journal stops inside its last step (a torn tail, truncated): the records the
        # replay derived beyond it belong to that step. Everything recorded matched.
        return ReplayResult(len(recorded), fed, None, error, tail_missing=len(extra))
    if n != len(recorded) or extra:
        want_r = recorded[n] if n < len(recorded) else None
        got_r = extra[0] if extra else None
        return ReplayResult(len(recorded), fed, Divergence(n, want_r, got_r), error)
    return ReplayResult(len(recorded), fed, None, error)
