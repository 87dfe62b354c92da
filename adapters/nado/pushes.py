"""What the stream pushes, dispatched: quotes to quotes.py, fills and order updates to
the orders' wire facts and on to the engine.

- `FillReceived` (fill id = digest + cumulative, so duplicated or reordered frames are one
  fill in the ledger); fills of another subaccount are counted and dropped.
- `OrderAccepted` on the first `order_update` or fill of an order not yet answered by
  REST (the stream may beat the answer: accepted is still said first, ends.py).
- An `order_update` that ends the order is reported by ends.py; `position_change` is only
  counted (its balance or delta is unsettled, nado-protocol.md §12.4).
"""

from __future__ import annotations

import logging

from adapters.nado.core import Core
from adapters.nado.ends import Ends
from adapters.nado.mapping import NadoFill
from adapters.nado.mapping import NadoOrderUpdate
from adapters.nado.mapping import NadoPositionChange
from adapters.nado.mapping import StreamError
from adapters.nado.mapping import StreamFrame
from adapters.nado.quotes import Quotes
from engine.core.events import BboUpdated
from engine.core.events import ConnectionChanged
from engine.core.events import FillReceived

__all__ = ["Pushes"]

log = logging.getLogger("dnpair.nado")


class Pushes:
    def __init__(self, core: Core, quotes: Quotes, ends: Ends) -> None:
        self.core, self.quotes, self.ends = core, quotes, ends
        self.fill_latency_ns: list[int] = []  # venue stamp -> our receipt, per fill frame

    def on_state(self, state: str, detail: str) -> None:
        self.core.emit(ConnectionChanged(channel="ws", state=state, detail=detail[:200]))

    def on_frame(self, frame: StreamFrame) -> None:
        if self.core.closed:
            return
        if isinstance(frame, BboUpdated):
            self.quotes.on_bbo(frame)
        elif isinstance(frame, NadoFill):
            self._on_fill(frame)
        elif isinstance(frame, NadoOrderUpdate):
            self._on_order_update(frame)
        elif isinstance(frame, NadoPositionChange):
            # Balance or delta is unsettled (§12.4): a trigger at most, never a position.
            self.core.stats["position_changes"] += 1
        elif isinstance(frame, StreamError):
            log.warning("stream error frame: %s (code %s)", frame.error, frame.code)
        else:
            self.core.stats["stream_replies"] += 1

    def _on_fill(self, fill: NadoFill) -> None:
        core = self.core
        assert core.signer is not None
        if fill.subaccount != core.signer.sender:
            core.stats["fills_foreign"] += 1
            return
        self.fill_latency_ns.append(core.unix_ns() - fill.ts_venue_ns)
        del self.fill_latency_ns[:-1000]
        entry = core.by_digest.get(fill.digest)
        if entry is None:
            core.stats["fills_unknown_order"] += 1
            ev: FillReceived = fill.to_event(fill.digest)
        else:
            if not entry.hear_fill(fill.fill_id, fill.cumulative_qty, fill.qty):
                core.stats["fills_duplicate"] += 1
            ev = fill.to_event(entry.order_id, side=entry.intent.side)
            self.ends.accepted_by_stream(entry)
        core.stats["fills"] += 1
        core.emit(ev)  # the ledger counts each fill id once
        if entry is not None and entry.ended is not None and not entry.told.end:
            self.ends.settle(entry, final=False)  # the end waited for this fill's price

    def _on_order_update(self, update: NadoOrderUpdate) -> None:
        core = self.core
        entry = core.by_digest.get(update.digest)
        if entry is None:
            core.stats["updates_unknown_order"] += 1
            return
        epoch, _ = core.stream_epoch()
        ended_now = entry.hear_update(update.reason, update.remaining_qty, epoch)
        self.ends.accepted_by_stream(entry)
        if ended_now:
            self.ends.settle(entry, final=False)
        elif entry.told.end:
            self.ends.correct(entry)
