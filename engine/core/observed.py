"""What an engine observer receives for each journal record: typed, never re-parsed.

The engine hands its observers (the journal fold, the Monitor, the JSON logger, test
harnesses) an `Observed` right after it journals a record: the `Record` as journaled
(seq, time, hash), the payload as the structured value the journal text was made from,
and, for event and intent records, the `Event` / `Intent` object itself. Nothing on the
live path decodes the JSON it just encoded. Reading a journal file back (reports,
`dnpair status`, the restart checks) decodes each record once, here, at the boundary.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from typing import Any

import attrs

from engine.core.journal import Record
from engine.core.messages import Message
from engine.core.messages import from_dict

__all__ = ["Observed", "observe_records"]


# Not frozen: one is built for every journal record, and a frozen class's `__init__` sets
# each field through `object.__setattr__` (about 2.5x the cost). Observers only read it.
@attrs.define
class Observed:
    rec: Record
    data: dict[str, Any]  # the payload as journaled (read only: shared by observers)
    msg: Message | None = None  # the Event or Intent of an event / intent record

    @property
    def kind(self) -> str:
        return self.rec.kind

    @property
    def machine(self) -> str:
        return self.rec.machine

    @property
    def ts(self) -> int:
        return self.rec.ts

    @property
    def seq(self) -> int:
        return self.rec.seq

    @classmethod
    def of(cls, rec: Record) -> Observed:
        """A record read back from a journal: its JSON decoded once, its message rebuilt
        (None if the payload is not a known message)."""
        data = rec.data
        msg: Message | None = None
        if rec.kind in ("event", "intent") and isinstance(data, dict):
            try:
                msg = from_dict(data)
            except (ValueError, TypeError):
                msg = None
        return cls(rec, data if isinstance(data, dict) else {}, msg)


def observe_records(records: Iterable[Record]) -> Iterator[Observed]:
    for rec in records:
        yield Observed.of(rec)
