"""PlaceOrder: sign once, send the same body on every re-send, and probe an IOC/FOK whose
end the stream did not tell.

- `OrderAccepted(digest)`; `OrderRejected(code)` for a venue refusal; `VenueError`
  `rate_limited` / `retryable` (provably not placed) or `unknown_outcome` (timeout, 5xx,
  lost answer: resolve with QueryOrder). Re-sending an order id re-sends the same signed
  body (same nonce, same digest); a duplicate-digest refusal (2013) then means "the venue
  has it" and answers `OrderAccepted`.

A lost push: an IOC/FOK whose end is not heard within `probe_rtts` round trips (measured
on the placements) after its ack, with the stream up since the send, is asked about at
once: what the stream said, then the archive (`orders` by digest; an IOC never rests, so
the `order` query would only say 2020); a decisive answer is emitted as an `OrderStatus`.
Without an archive (`venue serve`) the probe cannot decide and the machine's own
deadlines chase the order. Across a stream gap the connection machine's audit asks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from adapters.nado.client import GatewayError
from adapters.nado.core import NS
from adapters.nado.core import Core
from adapters.nado.ends import Ends
from adapters.nado.errors import Classified
from adapters.nado.mapping import NotRepresentable
from adapters.nado.mapping import order_amount_x18
from adapters.nado.mapping import order_price_x18
from adapters.nado.orders import OrderEntry
from adapters.nado.queries import parse_place_result
from adapters.nado.ratelimit import execute_weight
from adapters.nado.ratelimit import priority_for
from adapters.nado.reads import Reads
from adapters.nado.wire import MalformedFrame
from engine.core.events import OrderAccepted
from engine.core.events import OrderRejected
from engine.core.events import OrderStatus
from engine.core.events import VenueError
from engine.core.intents import PlaceOrder

__all__ = ["DUPLICATE_CODE", "Placing"]

log = logging.getLogger("dnpair.nado")

DUPLICATE_CODE = 2013


class Placing:
    def __init__(
        self,
        core: Core,
        ends: Ends,
        reads: Reads,
        on_sent: Callable[[str], None] | None = None,
    ) -> None:
        self.core, self.ends, self.reads = core, ends, reads
        self.on_sent = on_sent

    def submit(self, intent: PlaceOrder) -> None:
        entry = self._entry_for(intent)
        if entry is not None:
            self.core.spawn(self._place(entry))

    def _entry_for(self, intent: PlaceOrder) -> OrderEntry | None:
        """The order's entry: signed now (digest known before sending), or the one made
        for the first send of this id. None if nothing may be sent (already answered)."""
        core = self.core
        entry = core.orders.get(intent.order_id)
        if entry is not None:
            if entry.intent != intent:
                core.stats["order_id_reused"] += 1
                core.later(
                    VenueError(
                        error_class="permanent",
                        request=intent.kind,
                        order_id=intent.order_id,
                        message="order id reused with different fields; not sent",
                    )
                )
                return None
            core.stats["resends"] += 1
            return entry
        info = core.symbols.get(intent.product_id)
        if info is None:
            core.later(
                OrderRejected(order_id=intent.order_id, reason="product not traded by this run")
            )
            return None
        assert core.signer is not None
        now_ms = core.now_ms()
        tag = core.next_tag()
        timing = core.settings.timing
        try:
            signed = core.signer.sign_order(
                intent.product_id,
                price_x18=order_price_x18(intent.price, info.price_increment_x18),
                amount_x18=order_amount_x18(intent.side, intent.qty, info.size_increment_x18),
                expiration=timing.expiration(now_ms // 1000, intent.tif),
                nonce=timing.nonce(now_ms, tag),
                tif=intent.tif,
                reduce_only=intent.reduce_only,
                client_id=tag,
            )
        except (NotRepresentable, ValueError) as exc:
            core.later(OrderRejected(order_id=intent.order_id, reason=f"not sent: {exc}"))
            return None
        entry = OrderEntry(intent=intent, signed=signed)
        core.orders[intent.order_id] = entry
        core.by_digest[signed.digest] = entry
        return entry

    async def _place(self, entry: OrderEntry) -> None:
        core, intent = self.core, entry.intent
        async with entry.lock:
            if entry.answer == "placed":
                # Already placed: say so again, never place twice.
                core.emit(OrderAccepted(order_id=entry.order_id, digest=entry.digest))
                return
            if entry.answer == "rejected":
                core.emit(OrderRejected(order_id=entry.order_id, reason="rejected earlier"))
                return
            if entry.sends == 0:
                epoch, up = core.stream_epoch()
                entry.sent_epoch = epoch if up else None
                entry.sent_unix_s = core.unix_ns() // NS
            entry.sends += 1
            entry.in_flight = True
            sent_ns = core.clock.now_ns()
            try:
                data = await core.client.execute(
                    entry.signed.body(),
                    request=intent.kind,
                    priority=priority_for(intent),
                    weight=execute_weight("place_order"),
                )
                digest = parse_place_result(data)
            except GatewayError as exc:
                entry.in_flight = False
                self._failed(entry, exc.classified)
                return
            except MalformedFrame:
                entry.in_flight = False
                entry.answer, entry.any_lost = "lost", True
                core.emit(
                    VenueError(
                        error_class="unknown_outcome",
                        request=intent.kind,
                        order_id=entry.order_id,
                        message="unreadable placement answer",
                    )
                )
                return
            entry.in_flight = False
            if self.on_sent is not None:
                self.on_sent(entry.order_id)  # the composition root's hook (crash test)
            if digest != entry.digest:
                core.stats["digest_mismatch"] += 1
                log.warning("venue digest %s differs from ours %s", digest, entry.digest)
            now = core.clock.now_ns()
            core.note_rtt(now - sent_ns)
            entry.acked_ns = now
            self.ends.accepted(entry)
            if entry.immediate and entry.ended is None:
                # Its outcome is decided at the venue already: if the stream does not
                # tell within a couple of round trips, ask (issue 11, item 7).
                core.later_ns(core.probe_ns(), lambda: self._probe_due(entry))

    def _failed(self, entry: OrderEntry, c: Classified) -> None:
        core, oid = self.core, entry.order_id
        if c.code == DUPLICATE_CODE or entry.announced or entry.told.accepted:
            # The venue holds this digest: an earlier send of the same body arrived (2013),
            # or the stream announced it while this answer was lost.
            core.stats[
                "duplicate_digest" if c.code == DUPLICATE_CODE else "accepted_by_stream"
            ] += 1
            self.ends.accepted(entry)
            return
        if entry.any_lost:
            # An earlier send of this body may have been placed: whatever this send's
            # failure, the order's fate is still open (never "not sent" or "rejected").
            entry.answer = "lost"
            core.emit(
                VenueError(
                    error_class="unknown_outcome",
                    request="place_order",
                    order_id=oid,
                    code=c.code,
                    message=f"re-send failed ({c.reason}); an earlier send may be live",
                )
            )
            return
        if c.error_class == "permanent":
            entry.answer = "rejected"
            core.emit(OrderRejected(order_id=oid, reason=c.message or c.reason, code=c.code))
            return
        if c.error_class == "unknown_outcome":
            entry.answer, entry.any_lost = "lost", True
        else:
            entry.answer = "not_sent"  # rate limited, never connected, held back
        core.error(c, "place_order", order_id=oid)

    # -- the probe of an IOC/FOK whose end was not heard ------------------------------------
    def _probe_due(self, entry: OrderEntry) -> None:
        """Two round trips after an IOC/FOK's ack: its end is reported, or asked for."""
        core = self.core
        if entry.ended is not None:
            self.ends.settle(entry, final=True)
            return
        if entry.told.end or entry.heard_qty >= entry.qty:
            return  # answered (a cancel), or completely filled by the fills heard
        epoch, up = core.stream_epoch()
        if not up or entry.sent_epoch != epoch:
            # Sent or acked while the stream was down or broken: its pushes may simply be
            # gone with the socket, and the connection machine's audit (on reconnect, or
            # its polls) asks about every order in flight.
            core.stats["probe_skipped_stream_gap"] += 1
            return
        core.stats["probes"] += 1
        core.spawn(self._probe(entry))

    async def _probe(self, entry: OrderEntry) -> None:
        """An IOC/FOK never rests: the `order` query could only say 2020, so ask what
        knows how it ended (what the stream said, then the archive) at once."""
        core = self.core
        async with entry.lock:
            if entry.ended is not None or entry.told.end or entry.heard_qty >= entry.qty:
                self.ends.settle(entry, final=True)
                return
            answer = await self.reads.ended(entry, None)
            if entry.told.end or entry.ended is not None:
                self.ends.settle(entry, final=True)  # heard while the archive was asked
                return
            if not isinstance(answer, OrderStatus) or answer.state in ("open", "not_found"):
                core.stats["probe_undecided"] += 1
                return  # the machine's own deadlines chase it
            entry.told.end = True
            entry.told.end_filled = answer.filled_qty
            core.stats["probe_resolved"] += 1
            core.emit(answer)
