"""CONNECTION: when to (re)open the venue stream, when to poll REST, when to audit.

The adapter only reports what its sockets do (`ConnectionChanged` on channel "ws":
`connected` once authenticated and subscribed, `failed` when an attempt does not get
there, `disconnected` when an open socket drops, `degraded` when it has gone silent) and
carries out what this machine asks (`StreamConnect`, queries). Every decision is here, journaled and
replayable:

- **reconnecting**: the stream dropped. Attempts follow an exponential backoff
  (`base_backoff_s` · 2^(n-1), capped at `max_backoff_s`) times a deterministic
  jitter in [0.5, 1) derived from `seed`, the outage number and the attempt number
  (no RNG: a replay waits exactly as long). REST polls every `poll_s` meanwhile.
- **degraded**: `degrade_after` attempts failed; REST polling carries the engine, the
  stream is retried at the capped backoff.
- **down**: `down_after` consecutive failed position / open-order reads (transport
  failures, not refusals) while the stream is down: only a
  cheap position probe every `probe_s`; the first REST answer → degraded, which tries
  the stream at once.
- **connected**: after every reconnect (and on a silence report) a REST **audit**:
  positions, open orders and the status of every order the ledger still has in
  flight. Private streams have no sequence numbers, so the audit is how fills missed
  during the gap reach the ledger (an order status stating more filled than was heard
  moves the position; fills are never counted twice).

A poll is an audit plus a REST quote (`QueryMarketPrices`). Polls and probes are the
only periodic requests, so the request rate while the stream is down is bounded by
`poll_s` and `max_order_queries`.
"""

from __future__ import annotations

import hashlib
from decimal import ROUND_HALF_UP
from decimal import Decimal
from typing import Any

from engine.core.events import ConnectionChanged
from engine.core.events import OpenOrdersSnapshot
from engine.core.events import OrderStatus
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import QueryMarketPrices
from engine.core.intents import QueryOpenOrders
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from engine.core.intents import SendAlert
from engine.core.intents import StreamConnect
from machines.base import PureMachine
from machines.base import State

__all__ = ["ConnectionMachine", "backoff_s", "jitter"]

MS = Decimal("0.001")
# Reads whose failure says the venue cannot be reached (they fail for no other reason).
REACHABILITY_PROBES = frozenset({QueryPositions.kind, QueryOpenOrders.kind})
ZERO = Decimal(0)
Answer = PositionSnapshot | OpenOrdersSnapshot | OrderStatus


def jitter(seed: int, outage: int, attempt: int) -> Decimal:
    """A deterministic fraction in [0, 1) for this (seed, outage, attempt)."""
    digest = hashlib.blake2b(f"{seed}:{outage}:{attempt}".encode(), digest_size=8).digest()
    return Decimal(int.from_bytes(digest, "big")) / Decimal(2**64)


def backoff_s(
    attempt: int, *, base_s: Decimal, max_s: Decimal, seed: int, outage: int = 0
) -> Decimal:
    """Wait before attempt `attempt` (>= 1): min(max, base · 2^(n-1)) · (0.5 + jitter/2),
    in whole milliseconds. "Equal jitter": never less than half the exponential step, so
    a crowd of clients spreads out without any of them hammering the venue."""
    step: Decimal = min(max_s, base_s * 2 ** max(attempt - 1, 0))
    factor = Decimal("0.5") + jitter(seed, outage, attempt) / 2
    return (step * factor).quantize(MS, rounding=ROUND_HALF_UP)


class ConnectionMachine(PureMachine):
    """connecting → connected ⇄ reconnecting (backoff + jitter, REST polls) → degraded
    (slow retries, REST polls) → down (REST fails too: probe) → degraded → connected;
    a REST audit after every reconnect and every silence report."""

    connecting = State(initial=True)
    connected = State()
    reconnecting = State()
    degraded = State()
    down = State()

    connection_changed = (
        connecting.to(connected, cond="ws_up")
        | connecting.to(reconnecting, cond="ws_lost", on="lose")
        | connected.to(reconnecting, cond="ws_lost", on="lose")
        | connected.to(reconnecting, cond="ws_silent", on="lose_silent")
        | reconnecting.to(connected, cond="ws_up")
        | reconnecting.to(
            degraded, cond=["attempt_failed", "attempts_exhausted"], on="attempt_done"
        )
        | reconnecting.to(None, cond="attempt_failed", on="schedule_retry")
        | degraded.to(connected, cond="ws_up")
        | degraded.to(None, cond="attempt_failed", on="schedule_retry")
        | down.to(connected, cond="ws_up")
        | down.to(None, cond="attempt_failed", on="attempt_done")
    )
    # Deadlines, each its own event.
    connect_timeout = (
        connecting.to(reconnecting, on="lose")
        | reconnecting.to(degraded, cond="attempts_exhausted", on="attempt_done")
        | reconnecting.to(None, on="schedule_retry")
        | degraded.to(None, on="schedule_retry")
        | down.to(None, on="attempt_done")
    )
    retry_due = reconnecting.to(None, on="attempt") | degraded.to(None, on="attempt")
    poll_due = reconnecting.to(None, on="poll") | degraded.to(None, on="poll")
    probe_due = down.to(None, on="probe")
    # Answers to this machine's own requests (`mine`: ids it made; after a restart the
    # engine no longer knows who asked what, the id still says it).
    position_snapshot = (
        down.to(degraded, cond="mine", on="answered")
        | connecting.to(None, cond="mine", on="answered")
        | connected.to(None, cond="mine", on="answered")
        | reconnecting.to(None, cond="mine", on="answered")
        | degraded.to(None, cond="mine", on="answered")
    )
    open_orders_snapshot = (
        down.to(degraded, cond="mine", on="answered")
        | connecting.to(None, cond="mine", on="answered")
        | connected.to(None, cond="mine", on="answered")
        | reconnecting.to(None, cond="mine", on="answered")
        | degraded.to(None, cond="mine", on="answered")
    )
    order_status = (
        down.to(degraded, cond="mine", on="answered")
        | connecting.to(None, cond="mine", on="answered")
        | connected.to(None, cond="mine", on="answered")
        | reconnecting.to(None, cond="mine", on="answered")
        | degraded.to(None, cond="mine", on="answered")
    )
    venue_error = (
        reconnecting.to(down, cond=["unreachable", "failures_reached"], on="failed")
        | reconnecting.to(None, cond="mine", on="failed")
        | degraded.to(down, cond=["unreachable", "failures_reached"], on="failed")
        | degraded.to(None, cond="mine", on="failed")
        | connecting.to(None, cond="mine", on="failed")
        | connected.to(None, cond="mine", on="failed")
        | down.to(None, cond="mine", on="failed")
    )

    def setup(self, **params: Any) -> None:
        self.product_ids: tuple[int, ...] = tuple(int(p) for p in params.get("product_ids", ()))
        self.seed = int(params.get("seed", 0))
        self.base_backoff_s = Decimal(str(params.get("base_backoff_s", "0.5")))
        self.max_backoff_s = Decimal(str(params.get("max_backoff_s", "30")))
        self.connect_timeout_s = Decimal(str(params.get("connect_timeout_s", "15")))
        self.poll_s = Decimal(str(params.get("poll_s", "2")))
        self.probe_s = Decimal(str(params.get("probe_s", self.poll_s)))
        self.degrade_after = int(params.get("degrade_after", 3))
        self.down_after = int(params.get("down_after", 3))
        self.max_order_queries = int(params.get("max_order_queries", 10))
        if self.base_backoff_s <= 0 or self.max_backoff_s < self.base_backoff_s:
            raise ValueError("need 0 < base_backoff_s <= max_backoff_s")
        if self.poll_s <= 0 or self.probe_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("poll_s, probe_s and connect_timeout_s must be > 0")
        if self.degrade_after < 1 or self.down_after < 1:
            raise ValueError("degrade_after and down_after must be >= 1")
        self.attempts = 0  # stream attempts in this outage (the one in flight included)
        self.in_flight = False  # a StreamConnect awaits its ConnectionChanged
        self.outages = 0  # times the stream was lost (also the jitter's outage number)
        self.failures = 0  # consecutive REST failures of our own requests
        self.from_down = False
        # audits: request ids still unanswered, and counts for status/tests
        self.pending: dict[str, int] = {}  # request id -> audit number (0: a probe)
        self.audit_reasons: dict[int, str] = {}
        self.failed_audits: set[int] = set()
        self.completed: list[str] = []  # reasons of the audits that completed, in order
        self.audits = 0
        self.audits_complete = 0
        self.polls = 0
        self.probes = 0
        self.last_audit_reason = ""

    # -- guards ----------------------------------------------------------------------------
    def ws_up(self, ev: ConnectionChanged) -> bool:
        return ev.channel == "ws" and ev.state == "connected"

    def ws_lost(self, ev: ConnectionChanged) -> bool:
        return ev.channel == "ws" and ev.state in ("disconnected", "failed")

    def ws_silent(self, ev: ConnectionChanged) -> bool:
        return ev.channel == "ws" and ev.state == "degraded"

    def attempt_failed(self, ev: ConnectionChanged) -> bool:
        """The answer to the attempt in flight: it did not connect."""
        return self.in_flight and self.ws_lost(ev)

    def attempts_exhausted(self, ev: Any = None) -> bool:
        return self.attempts >= self.degrade_after

    def mine(self, ev: Answer | VenueError) -> bool:
        rid = ev.request_id or ""
        return rid.startswith(f"{self.ctx.machine_id}:")

    def unreachable(self, ev: VenueError) -> bool:
        """Our own position or open-orders read failed for want of a venue. Not a 429 or a
        refusal, and not an order query (the adapter may answer "cannot tell" for an order
        that ended during a gap: that is no sign of an unreachable venue)."""
        return (
            self.mine(ev)
            and ev.request in REACHABILITY_PROBES
            and ev.error_class in ("retryable", "unknown_outcome")
        )

    def failures_reached(self, ev: VenueError) -> bool:
        return self.failures + 1 >= self.down_after

    # -- stream attempts -------------------------------------------------------------------
    def attempt(self, ev: Any = None) -> None:
        self.attempts += 1
        self.in_flight = True
        reason = "start" if self.outages == 0 else f"outage {self.outages}"
        self.emit(StreamConnect(attempt=self.attempts, reason=reason))
        self.arm("connect_timeout", self.connect_timeout_s)

    def attempt_done(self, ev: Any = None) -> None:
        self.in_flight = False

    def schedule_retry(self, ev: Any = None) -> None:
        self.in_flight = False
        self.disarm("connect_timeout")
        delay = self.retry_delay()
        self.note("stream attempt failed", attempt=self.attempts, retry_in_s=str(delay))
        self.arm("retry_due", delay)

    def retry_delay(self) -> Decimal:
        return backoff_s(
            self.attempts + 1,
            base_s=self.base_backoff_s,
            max_s=self.max_backoff_s,
            seed=self.seed,
            outage=self.outages,
        )

    def lose(self, ev: Any = None) -> None:
        self.outages += 1
        self.attempts = 1 if self.in_flight else 0  # a failed first connect counts
        self.in_flight = False
        detail = getattr(ev, "detail", "") or getattr(ev, "name", "")
        self.note("stream lost", outage=self.outages, detail=detail)

    def lose_silent(self, ev: ConnectionChanged) -> None:
        self.lose(ev)
        self.audit("silence")

    # -- entering states -------------------------------------------------------------------
    def on_enter_connecting(self) -> None:
        self.attempt()

    def on_enter_connected(self) -> None:
        self.in_flight = False
        self.disarm("connect_timeout")
        back = self.outages > 0
        self.attempts = 0
        self.failures = 0
        self.from_down = False
        if back:
            self.note("stream back", outage=self.outages)
            self.audit("reconnect")

    def on_enter_reconnecting(self) -> None:
        self.arm("retry_due", self.retry_delay())
        self.arm("poll_due", self.poll_s)

    def on_enter_degraded(self) -> None:
        if self.from_down:
            self.from_down = False
            self.attempts = 0
            if not self.in_flight:
                self.attempt()  # REST answers again: try the stream at once
        elif not self.in_flight:
            self.arm("retry_due", self.retry_delay())
        if self.in_flight:
            self.arm("connect_timeout", self.connect_timeout_s)
        self.arm("poll_due", self.poll_s)

    def on_enter_down(self) -> None:
        self.from_down = True
        if self.in_flight:
            self.arm("connect_timeout", self.connect_timeout_s)
        self.arm("probe_due", self.probe_s)
        self.emit(
            SendAlert(
                event="venue_unreachable",
                severity="warning",
                message=f"[CONN] venue unreachable: stream down and {self.failures} REST "
                "requests failed in a row",
                state="down",
                action=f"probing REST every {self.probe_s}s; no new entries until it answers",
            )
        )

    # -- polls, probes, audits ---------------------------------------------------------------
    def poll(self, ev: Any = None) -> None:
        self.polls += 1
        self.audit("poll")
        rid = self.next_id("m")
        self.emit(QueryMarketPrices(request_id=rid, product_ids=self.product_ids))
        self.arm("poll_due", self.poll_s)

    def probe(self, ev: Any = None) -> None:
        self.probes += 1
        rid = self.next_id("p")
        self.pending[rid] = 0
        self.emit(QueryPositions(request_id=rid, product_ids=self.product_ids))
        self.arm("probe_due", self.probe_s)

    def audit(self, reason: str) -> None:
        """Positions, open orders and every in-flight order's status (bounded)."""
        self.audits += 1
        self.last_audit_reason = reason
        n = self.audits
        self.audit_reasons[n] = reason
        queries: list[QueryPositions | QueryOpenOrders | QueryOrder] = [
            QueryPositions(request_id=self.next_id("a"), product_ids=self.product_ids),
            QueryOpenOrders(request_id=self.next_id("a"), product_ids=self.product_ids),
        ]
        in_flight = [o for o in self.ledger.open_orders() if o.product_id in self.product_ids]
        queries.extend(
            QueryOrder(request_id=self.next_id("a"), order_id=o.order_id, product_id=o.product_id)
            for o in in_flight[: self.max_order_queries]
        )
        self.note("audit", n=n, reason=reason, in_flight=[o.order_id for o in in_flight])
        for query in queries:
            self.pending[query.request_id] = n
            self.emit(query)

    def answered(self, ev: Answer) -> None:
        self.failures = 0
        self._settle(ev.request_id or "", ev)

    def failed(self, ev: VenueError) -> None:
        if self.unreachable(ev):
            self.failures += 1
        self._settle(ev.request_id or "", ev)

    def _settle(self, rid: str, ev: Answer | VenueError) -> None:
        n = self.pending.pop(rid, None)
        if not n:  # not an audit's (a probe, a price poll, or already settled)
            return
        if isinstance(ev, PositionSnapshot):
            for pos in ev.positions:
                heard = self.ledger.position(pos.product_id)
                if pos.qty != heard:
                    self.note(
                        "audit: venue position differs from the fills heard",
                        product_id=pos.product_id,
                        venue=str(pos.qty),
                        fills=str(heard),
                    )
        elif isinstance(ev, OpenOrdersSnapshot):
            unknown = [
                o.order_id
                for o in ev.orders
                if (rec := self.ledger.order(o.order_id)) is None or rec.is_done
            ]
            if unknown:
                self.note("audit: open at the venue, not working here", orders=unknown)
        elif isinstance(ev, VenueError):
            self.failed_audits.add(n)
            self.note("audit request failed", n=n, request=ev.request, error=ev.error_class)
        if n not in self.pending.values():
            reason = self.audit_reasons.pop(n, "")
            if n in self.failed_audits:
                self.failed_audits.discard(n)
                self.note("audit incomplete", n=n, reason=reason)
            else:
                self.audits_complete += 1
                self.completed.append(reason)
                self.note("audit complete", n=n, reason=reason)
