"""A scripted fake venue for the cycle-machine tests, on the virtual clock.

Default behaviour, per placement:
- IOC/FOK: marketable → fills up to the product's liquidity at the touch, the rest expires;
  not marketable → expires unfilled.
- POST_ONLY: would cross → rejected; else rests (fills only when scripted).
- reduce-only: clipped to the open position in the closing direction; nothing to reduce →
  rejected.
`script(...)` replaces the default plan for the next matching placement(s) with explicit
steps: fills (with a separate delivery delay, for late fills), expiry, reject, venue errors
(optionally accepted by the venue anyway), silence. Position queries can lag behind fills.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs

from engine.core.clock import VirtualClock
from engine.core.events import BboUpdated
from engine.core.events import Event
from engine.core.events import FillReceived
from engine.core.events import OrderAccepted
from engine.core.events import OrderCancelled
from engine.core.events import OrderExpired
from engine.core.events import OrderRejected
from engine.core.events import OrderStatus
from engine.core.events import Position
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import AdoptVenuePositions
from engine.core.intents import CancelOrder
from engine.core.intents import Halt
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from engine.core.intents import SendAlert
from engine.core.loop import Engine
from engine.runtime.runner import run_virtual
from machines.params import CycleParams
from machines.params import LegSpec

MS = 1_000_000
S = 1_000_000_000
D = Decimal

ETH = LegSpec(symbol="ETH-PERP", product_id=4, tick_size="0.1", size_increment="0.001")
SOL = LegSpec(symbol="SOL-PERP", product_id=8, tick_size="0.01", size_increment="0.01")
BOOKS = {4: (D("3000"), D("3000.5")), 8: (D("150"), D("150.02"))}
INCREMENTS = {ETH.product_id: ETH.size_increment, SOL.product_id: SOL.size_increment}


def params(**kw: Any) -> CycleParams:
    base: dict[str, Any] = {"cycle": 1, "long": ETH, "short": SOL, "notional_usd": "1000"}
    base.update(kw)
    return CycleParams(**base)


# -- per-order steps ------------------------------------------------------------------------
@attrs.frozen
class Fill:
    qty: Decimal | None = None  # None: the whole remainder
    at_ms: int = 10  # when the venue executes it (position moves)
    deliver_ms: int = 0  # extra delay before the fill event arrives (late fills)


@attrs.frozen
class Expire:
    at_ms: int = 15
    report_fill: bool = True


@attrs.frozen
class Reject:
    reason: str = "insufficient margin"
    at_ms: int = 10


@attrs.frozen
class Error:
    error_class: str = "unknown_outcome"
    at_ms: int = 10
    accepted: bool = False  # the venue took the order although the answer was an error


Step = Fill | Expire | Reject | Error


@attrs.define
class VOrder:
    intent: PlaceOrder
    filled: Decimal = Decimal(0)
    state: str = "open"  # open | filled | cancelled | expired | rejected
    fill_n: int = 0


class FakeVenue:
    def __init__(
        self,
        engine: Engine,
        clock: VirtualClock,
        *,
        books: dict[int, tuple[Decimal, Decimal]] | None = None,
        liquidity: dict[int, Decimal | None] | None = None,
        positions: dict[int, Decimal] | None = None,
        rtt_ms: int = 20,
        position_lag_ms: int = 0,
        cancel_reports_fill: bool = True,
        silent_queries: bool = False,
    ) -> None:
        self.engine, self.clock = engine, clock
        self.books = dict(books or BOOKS)
        self.liquidity: dict[int, Decimal | None] = dict(liquidity or {})
        self.positions: dict[int, Decimal] = {p: D(v) for p, v in (positions or {}).items()}
        self.history: list[tuple[int, dict[int, Decimal]]] = [(0, dict(self.positions))]
        self.rtt_ms, self.lag_ms = rtt_ms, position_lag_ms
        self.cancel_reports_fill = cancel_reports_fill
        self.silent_queries = silent_queries
        self.orders: dict[str, VOrder] = {}
        self.scripts: list[tuple[Callable[[PlaceOrder], bool], list[Step]]] = []
        self.rate_limited: list[tuple[int, int]] = []  # [from_ms, to_ms) windows
        self.ignore_cancels = False
        self.cancel_errors: list[str] = []  # error classes answering the next cancels
        self.policy: Callable[[PlaceOrder], list[Step] | None] | None = None
        self.retry_after: Decimal | None = None  # sent with rate_limited errors
        self.finished_ns = 0
        self.sent: list[Intent] = []
        self.stream_bbo = True
        # The venue's oracle price per product, stamped on every quote (none: the venue
        # gives none, the band is not checked), as the sim and the Nado adapter stamp theirs.
        self.oracles: dict[int, Decimal] = {}

    # -- set-up -------------------------------------------------------------------------
    def push_bbo(self) -> None:
        for pid, (bid, ask) in self.books.items():
            oracle = self.oracles.get(pid)
            self.engine.process(
                BboUpdated(
                    product_id=pid, bid=bid, ask=ask, bid_qty=1, ask_qty=1, oracle_price=oracle
                )
            )

    def script(self, steps: list[Step], times: int = 1, **match: Any) -> None:
        def matches(i: PlaceOrder) -> bool:
            return all(getattr(i, k) == v for k, v in match.items())

        for _ in range(times):
            self.scripts.append((matches, steps))

    # -- intents ------------------------------------------------------------------------
    def send(self, intent: Intent) -> None:
        self.sent.append(intent)
        if self.stream_bbo:
            self.push_bbo()  # a live venue streams quotes: the book is fresh when we act
        now_ms = self.clock.now_ns() // MS
        limited = any(a <= now_ms < b for a, b in self.rate_limited)
        if isinstance(intent, PlaceOrder):
            if limited:
                self._later(self.rtt_ms, self._error(intent.kind, "rate_limited", intent.order_id))
            else:
                self._place(intent)
        elif isinstance(intent, CancelOrder):
            if self.cancel_errors:  # refused: the order stays as it is
                error = self._error(intent.kind, self.cancel_errors.pop(0), intent.order_id)
                self._later(self.rtt_ms, error)
            else:
                self._later(self.rtt_ms, lambda: self._cancel(intent.order_id))
        elif isinstance(intent, QueryPositions):
            if limited:
                ev = VenueError(
                    error_class="rate_limited",
                    request=intent.kind,
                    request_id=intent.request_id,
                    retry_after_s=self.retry_after,
                )
                self._later(self.rtt_ms, ev)
            elif not self.silent_queries:
                self._later(self.rtt_ms, lambda: self._snapshot(intent))
        elif isinstance(intent, QueryOrder):
            self._later(self.rtt_ms, lambda: self._status(intent))

    def _place(self, intent: PlaceOrder) -> None:
        steps = self._take_script(intent)
        order = VOrder(intent)
        errored = next((s for s in steps if isinstance(s, Error)), None)
        if errored is not None:
            ev = self._error(intent.kind, errored.error_class, intent.order_id)
            self._later(errored.at_ms, ev)
            if not errored.accepted:
                return
        else:
            self._later(5, OrderAccepted(order_id=intent.order_id, digest="0x" + intent.order_id))
        self.orders[intent.order_id] = order
        for step in steps:
            if isinstance(step, Fill):
                self._at(step.at_ms, lambda s=step: self._fill(order, s))
            elif isinstance(step, Expire):
                self._at(step.at_ms, lambda s=step: self._expire(order, s))
            elif isinstance(step, Reject):
                self._at(step.at_ms, lambda s=step: self._reject(order, s))

    def _take_script(self, intent: PlaceOrder) -> list[Step]:
        for n, (matches, steps) in enumerate(self.scripts):
            if matches(intent):
                del self.scripts[n]
                return steps
        planned = self.policy(intent) if self.policy is not None else None
        return planned if planned is not None else self._default_plan(intent)

    def _default_plan(self, intent: PlaceOrder) -> list[Step]:
        bid, ask = self.books[intent.product_id]
        crosses = intent.price >= ask if intent.side == "buy" else intent.price <= bid
        if intent.tif == "post_only":
            return [Reject("post-only would cross")] if crosses else []
        if not crosses:
            return [Expire()]
        qty = self._fillable(intent)
        if qty <= 0:
            reason = "reduce-only: nothing to reduce" if intent.reduce_only else None
            return [Reject(reason)] if reason else [Expire()]
        return [Fill(qty), Expire()] if qty < intent.qty else [Fill(qty)]

    def _fillable(self, intent: PlaceOrder) -> Decimal:
        qty = intent.qty
        liq = self.liquidity.get(intent.product_id)
        if liq is not None:
            qty = min(qty, liq)
        if intent.reduce_only:
            pos = self.positions.get(intent.product_id, D(0))
            closing = -pos if intent.side == "buy" else pos
            qty = min(qty, max(closing, D(0)))
        return qty

    # -- venue-side happenings -------------------------------------------------------------
    def _fill(self, order: VOrder, step: Fill) -> None:
        if order.state != "open":
            return
        i = order.intent
        qty = step.qty if step.qty is not None else i.qty - order.filled
        if i.reduce_only:
            qty = min(qty, self._fillable(attrs.evolve(i, qty=qty)))
        qty = min(qty, i.qty - order.filled)
        if qty <= 0:
            if i.tif in ("ioc", "fok"):  # nothing left to reduce: the IOC dies unfilled
                self._expire(order, Expire())
            return
        order.filled += qty
        order.fill_n += 1
        if order.filled >= i.qty:
            order.state = "filled"
        signed = qty if i.side == "buy" else -qty
        self.positions[i.product_id] = self.positions.get(i.product_id, D(0)) + signed
        self.history.append((self.clock.now_ns(), dict(self.positions)))
        bid, ask = self.books[i.product_id]
        ev = FillReceived(
            order_id=i.order_id,
            fill_id=f"{i.order_id}/f{order.fill_n}",
            product_id=i.product_id,
            side=i.side,
            price=ask if i.side == "buy" else bid,
            qty=qty,
            cumulative_qty=order.filled,
            remaining_qty=i.qty - order.filled,
        )
        self._later(step.deliver_ms, ev)

    def _expire(self, order: VOrder, step: Expire) -> None:
        if order.state != "open":
            return
        order.state = "expired"
        filled = order.filled if step.report_fill else None
        self._later(0, OrderExpired(order_id=order.intent.order_id, filled_qty=filled))

    def _reject(self, order: VOrder, step: Reject) -> None:
        if order.state != "open":
            return
        order.state = "rejected"
        self._later(0, OrderRejected(order_id=order.intent.order_id, reason=step.reason))

    def _cancel(self, order_id: str) -> None:
        order = self.orders.get(order_id)
        if order is None or order.state != "open" or self.ignore_cancels:
            return
        order.state = "cancelled"
        filled = order.filled if self.cancel_reports_fill else None
        self.engine.submit(OrderCancelled(order_id=order_id, filled_qty=filled))

    def _status(self, q: QueryOrder) -> None:
        order = self.orders.get(q.order_id)
        if order is None:
            ev = OrderStatus(order_id=q.order_id, state="not_found", request_id=q.request_id)
        else:
            ev = OrderStatus(
                order_id=q.order_id,
                state=order.state,
                filled_qty=order.filled,
                remaining_qty=order.intent.qty - order.filled,
                request_id=q.request_id,
            )
        self.engine.submit(ev)

    def _snapshot(self, q: QueryPositions) -> None:
        as_of = self.clock.now_ns() - self.lag_ms * MS
        seen = next((p for t, p in reversed(self.history) if t <= as_of), self.history[0][1])
        positions = [Position(product_id=p, qty=seen.get(p, D(0))) for p in q.product_ids]
        self.engine.submit(PositionSnapshot(positions=positions, request_id=q.request_id))

    # -- plumbing ---------------------------------------------------------------------------
    def _error(self, request: str, error_class: str, order_id: str) -> VenueError:
        retry_after = self.retry_after if error_class == "rate_limited" else None
        return VenueError(
            error_class=error_class, request=request, order_id=order_id, retry_after_s=retry_after
        )

    def _at(self, ms: int, fn: Callable[[], None]) -> None:
        self.clock.call_later(ms * MS, fn)

    def _later(self, ms: int, what: Event | Callable[[], None]) -> None:
        fn = what if callable(what) and not isinstance(what, Event) else None
        if fn is None:
            ev: Any = what
            self.clock.call_later(ms * MS, lambda: self.engine.submit(ev))
        else:
            self.clock.call_later(ms * MS, fn)

    # -- reading ----------------------------------------------------------------------------
    def placed(self, **match: Any) -> list[PlaceOrder]:
        return [
            i
            for i in self.sent
            if isinstance(i, PlaceOrder) and all(getattr(i, k) == v for k, v in match.items())
        ]

    def of(self, cls: type[Intent]) -> list[Any]:
        return [i for i in self.sent if isinstance(i, cls)]


def spawn(
    cls: type[Any],
    p: CycleParams,
    *,
    venue: dict[str, Any] | None = None,
    setup: Callable[[FakeVenue], None] | None = None,
    bbo: bool = True,
    query_first: bool = True,
    adopt: bool = False,
    **extra: Any,
) -> tuple[Engine, FakeVenue]:
    """An engine with fresh BBOs and a venue position snapshot, then the machine, run to the
    end on virtual time."""
    clock = VirtualClock()
    engine = Engine(clock)
    fake = FakeVenue(engine, clock, **(venue or {}))
    if setup is not None:
        setup(fake)
    if bbo:
        fake.push_bbo()
    if query_first:  # the session's query just before spawning
        snap = [Position(product_id=p_, qty=fake.positions.get(p_, D(0))) for p_ in p.product_ids]
        engine.process(PositionSnapshot(positions=snap, request_id="session:q"))
    if adopt:  # as restore does at start: the ledger begins from the venue's positions
        _adopt(engine, fake, p)
    engine.spawn(cls, "m", params=p, **extra)
    run_to_finish(engine, clock, fake)
    return engine, fake


def run_to_finish(engine: Engine, clock: VirtualClock, fake: FakeVenue) -> None:
    """Run the spawned machine "m" until it finishes (noted as `fake.finished_ns`), then
    deliver what is still in flight (late fills)."""
    run_virtual(
        engine,
        clock,
        fake.send,
        initial=engine._finish_step(),
        until=lambda: "m" in engine.finished,
    )
    fake.finished_ns = clock.now_ns()
    run_virtual(engine, clock, fake.send)


def _adopt(engine: Engine, fake: FakeVenue, p: CycleParams) -> None:
    snap = [Position(product_id=p_, qty=fake.positions.get(p_, D(0))) for p_ in p.product_ids]
    engine.process(PositionSnapshot(positions=snap, request_id="restore:q"))
    engine.ledger.apply_intent(AdoptVenuePositions(product_ids=p.product_ids))


def outcome(engine: Engine) -> str:
    return engine.finished.get("m", "running")


def notes(engine: Engine, text: str) -> list[dict[str, Any]]:
    return [
        r.data for r in engine.journal.records() if r.kind == "note" and r.data.get("note") == text
    ]


def undeferrable_gaps(cls: type[Any]) -> list[tuple[str, str]]:
    """(state, event) pairs where a waiting state has no unconditional transition for an
    event the machine declares, in itself or an ancestor: such an event would be deferred
    instead of consumed. Transient states (an unconditional eventless way out) and final
    states never wait."""
    gaps = []
    for state in cls.states_map.values():
        if state.final or state.states:
            continue
        if any(t.is_eventless and not list(t.cond) for t in state.transitions):
            continue
        chain = []
        node = state
        while node is not None:
            chain.append(node)
            node = node.parent
        for event in sorted(cls.interests()):
            unconditional = (
                t.match(event) and not list(t.cond) for s in chain for t in s.transitions
            )
            if not any(unconditional):
                gaps.append((state.id, event))
    return gaps


def catch_alls(cls: type[Any]) -> list[tuple[str, str]]:
    """(state, event) of transitions that exist only to swallow an event: no target, no
    guard, no action. Machines on the consume contract need none."""
    found: list[tuple[str, str]] = []
    for state in cls.states_map.values():
        for t in state.transitions:
            actions = [c for c in t.on if not c.is_convention]  # on_<event> etc. not defined
            if t.target is None and not list(t.cond) and not actions and not t.is_eventless:
                found.extend((state.id, e) for e in t.events)
    return found


def chaos(fake: FakeVenue, rng: Any) -> None:
    """Seeded faults on every placement, the book and the position feed."""
    fake.cancel_reports_fill = rng.random() < 0.5
    fake.lag_ms = rng.choice([0, 0, 100, 400])
    if rng.random() < 0.3:
        start = rng.randrange(0, 3000)
        fake.rate_limited.append((start, start + rng.randrange(200, 4000)))
        fake.retry_after = rng.choice([None, D("1")])
    for pid in fake.books:
        fake.liquidity[pid] = rng.choice([None, None, D(0), D("0.1"), D("2")])

    def plan(intent: PlaceOrder) -> list[Step] | None:
        r = rng.random()
        if r < 0.08:
            return [Reject(rng.choice(["insufficient margin", "post-only would cross"]))]
        if r < 0.16:
            cls = rng.choice(["unknown_outcome", "unknown_outcome", "rate_limited", "retryable"])
            accepted = cls == "unknown_outcome" and rng.random() < 0.5
            tail: list[Step] = [Fill(at_ms=15), Expire(at_ms=20)] if accepted else []
            return [Error(cls, accepted=accepted), *tail]
        if r < 0.22:
            return []  # accepted, then silence
        if r < 0.45:
            step = INCREMENTS[intent.product_id]
            part = (intent.qty * D(rng.randrange(1, 10)) / 10 / step).to_integral_value() * step
            if part <= 0:
                return None
            late = rng.choice([0, 0, 50, 300])
            return [Fill(part, deliver_ms=late), Expire(at_ms=20)]
        return None  # the default behaviour

    fake.policy = plan


def run_chaos(
    cls: type[Any], p: CycleParams, seed: int, positions: dict[int, Decimal], **extra: Any
) -> tuple[Engine, FakeVenue]:
    import random

    clock = VirtualClock()
    engine = Engine(clock)
    fake = FakeVenue(engine, clock, positions=positions)
    chaos(fake, random.Random(seed))
    fake.push_bbo()
    _adopt(engine, fake, p)
    engine.spawn(cls, "m", params=p, **extra)
    run_virtual(
        engine,
        clock,
        fake.send,
        initial=engine._finish_step(),
        until=lambda: "m" in engine.finished,
        deadline_ns=300 * S,
    )
    fake.finished_ns = clock.now_ns()
    run_virtual(engine, clock, fake.send, deadline_ns=clock.now_ns() + 10 * S)
    return engine, fake


def assert_unknown_resolved_before_resend(engine: Engine, fake: FakeVenue) -> None:
    """After a placement's outcome came back unknown, no new order for that product went
    out before a QueryOrder for the unknown one did. Order ids are never reused."""
    placed = fake.of(PlaceOrder)
    assert len({o.order_id for o in placed}) == len(placed)
    products = {o.order_id: o.product_id for o in placed}
    records = engine.journal.records()
    for n, rec in enumerate(records):
        if rec.kind != "event" or rec.data.get("error_class") != "unknown_outcome":
            continue
        oid = rec.data["order_id"]
        for later in records[n + 1 :]:
            if later.kind != "intent":
                continue
            if later.data["kind"] == "query_order" and later.data["order_id"] == oid:
                break
            if later.data["kind"] == "place_order":
                assert later.data["product_id"] != products[oid], f"{oid} resent before a query"


def assert_ledger_tracks_venue(engine: Engine, fake: FakeVenue) -> None:
    """Once everything in flight is delivered, the fill-derived ledger (which began from
    the venue's positions) equals the venue's (seed 002: tracked equals venue position)."""
    for pid in fake.books:
        assert engine.ledger.position(pid) == fake.positions.get(pid, D(0)), f"product {pid}"


__all__ = [
    "ETH",
    "MS",
    "SOL",
    "Error",
    "Expire",
    "FakeVenue",
    "Fill",
    "Halt",
    "Reject",
    "S",
    "SendAlert",
    "assert_unknown_resolved_before_resend",
    "catch_alls",
    "chaos",
    "notes",
    "outcome",
    "params",
    "run_chaos",
    "spawn",
    "undeferrable_gaps",
]
