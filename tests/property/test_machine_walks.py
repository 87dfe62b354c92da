"""Rule-based state machine (hypothesis.stateful) driving the cycle machines (BUILD,
UNWIND, EMERGENCY EXIT) through the real engine with arbitrary event orders: fills
(partial, duplicated, for unknown orders), acks, cancels and expiries with or without a
filled amount, rejects, order statuses in any state, venue errors of every class,
position answers to any query (or to none), crossed quotes, and deadlines firing.

Invariants after every step:
- no exception escapes a machine (the engine would raise MachineError);
- a live machine always has an armed deadline (every wait is bounded);
- no PlaceOrder reuses an order id; exit orders are reduce-only.
At teardown, with nothing answered any more, firing the remaining deadlines ends the
machine in a final state within its own bound.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine
from hypothesis.stateful import initialize
from hypothesis.stateful import invariant
from hypothesis.stateful import precondition
from hypothesis.stateful import rule

from engine.core.clock import NS_PER_S
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
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from engine.core.loop import Engine
from engine.harness.machine_bounds import MachineBounds
from machines.params import CycleParams
from machines.params import LegSpec
from machines.position_work import PositionWork
from tests.tiers import deep

D = Decimal
ETH = LegSpec(symbol="ETH-PERP", product_id=4, tick_size="0.1", size_increment="0.001")
SOL = LegSpec(symbol="SOL-PERP", product_id=8, tick_size="0.01", size_increment="0.01")
BOOKS = {4: (D("3000"), D("3000.5")), 8: (D("150"), D("150.02"))}
P = CycleParams(cycle=1, long=ETH, short=SOL, notional_usd="100")
KINDS = {
    "build": {4: D(0), 8: D(0)},
    "unwind": {4: D("0.033"), 8: D("-0.66")},
    "exit": {4: D("0.033"), 8: D("0")},
}
ERROR_CLASSES = ("retryable", "rate_limited", "permanent", "unknown_outcome")
STATUS = ("open", "filled", "cancelled", "expired", "rejected", "not_found")
MID = "m"


class CycleMachineWalk(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock()
        self.engine = Engine(self.clock)
        self.kind = ""
        self.placed: dict[str, PlaceOrder] = {}
        self.filled: dict[str, Decimal] = {}
        self.position_queries: list[str] = ["nobody:q1"]
        self.order_queries: list[QueryOrder] = []
        self.fills = 0

    # -- plumbing -----------------------------------------------------------------------
    def _take(self, intents: list[Intent]) -> None:
        for intent in intents:
            if isinstance(intent, PlaceOrder):
                assert intent.order_id not in self.placed, f"order id {intent.order_id} reused"
                if self.kind != "build":
                    assert intent.reduce_only, f"exit order {intent.order_id} not reduce-only"
                self.placed[intent.order_id] = intent
                self.filled.setdefault(intent.order_id, D(0))
            elif isinstance(intent, QueryPositions):
                self.position_queries.append(intent.request_id)
            elif isinstance(intent, QueryOrder):
                self.order_queries.append(intent)

    def _feed(self, ev: Event) -> None:
        self._take(self.engine.process(ev))
        self._take(self.engine.drain())

    def _order(self, data: st.DataObject) -> PlaceOrder:
        return data.draw(st.sampled_from(sorted(self.placed.values(), key=lambda o: o.order_id)))

    # -- start --------------------------------------------------------------------------
    @initialize(kind=st.sampled_from(sorted(KINDS)))
    def start(self, kind: str) -> None:
        self.kind = kind
        start = KINDS[kind]
        for pid, (bid, ask) in BOOKS.items():
            self._feed(BboUpdated(product_id=pid, bid=bid, ask=ask, bid_qty=5, ask_qty=5))
        snap = [Position(product_id=pid, qty=qty) for pid, qty in start.items()]
        self._feed(PositionSnapshot(positions=snap, request_id="restore:q"))
        self.engine.ledger.apply_intent(AdoptVenuePositions(product_ids=(4, 8)))
        self.engine.spawn(PositionWork, MID, params=P, purpose=kind)
        self._take(self.engine._finish_step())

    # -- the venue, in any order --------------------------------------------------------
    @precondition(lambda self: self.placed)
    @rule(data=st.data(), part=st.sampled_from(["all", "half", "step"]), dup=st.booleans())
    def fill(self, data: st.DataObject, part: str, dup: bool) -> None:
        o = self._order(data)
        left = o.qty - self.filled[o.order_id]
        step = ETH.size_increment if o.product_id == 4 else SOL.size_increment
        qty = {"all": left, "half": (left / 2 // step) * step, "step": min(step, left)}[part]
        if qty <= 0:
            return
        self.fills += 1
        self.filled[o.order_id] += qty
        ev = FillReceived(
            order_id=o.order_id,
            fill_id=f"f{self.fills}",
            product_id=o.product_id,
            side=o.side,
            price=o.price,
            qty=qty,
            cumulative_qty=self.filled[o.order_id],
            remaining_qty=o.qty - self.filled[o.order_id],
        )
        self._feed(ev)
        if dup:
            self._feed(ev)

    @precondition(lambda self: self.placed)
    @rule(data=st.data())
    def accepted(self, data: st.DataObject) -> None:
        o = self._order(data)
        self._feed(OrderAccepted(order_id=o.order_id, digest=f"0x{o.order_id}"))

    @precondition(lambda self: self.placed)
    @rule(data=st.data(), how=st.sampled_from(["cancelled", "expired"]), says=st.booleans())
    def ended(self, data: st.DataObject, how: str, says: bool) -> None:
        o = self._order(data)
        filled = self.filled[o.order_id] if says else None
        cls = OrderCancelled if how == "cancelled" else OrderExpired
        self._feed(cls(order_id=o.order_id, filled_qty=filled))

    @precondition(lambda self: self.placed)
    @rule(data=st.data())
    def rejected(self, data: st.DataObject) -> None:
        o = self._order(data)
        self._feed(OrderRejected(order_id=o.order_id, reason="insufficient margin", code=2006))

    @precondition(lambda self: self.placed)
    @rule(data=st.data(), state=st.sampled_from(STATUS))
    def status(self, data: st.DataObject, state: str) -> None:
        o = self._order(data)
        queries = [q.request_id for q in self.order_queries if q.order_id == o.order_id]
        rid = data.draw(st.sampled_from([*queries, None]))
        filled = self.filled[o.order_id] if state != "not_found" else D(0)
        ev = OrderStatus(
            order_id=o.order_id,
            state=state,
            filled_qty=filled,
            remaining_qty=o.qty - filled if state == "open" else 0,
            request_id=rid,
        )
        self._feed(ev)

    @rule(
        data=st.data(),
        error_class=st.sampled_from(ERROR_CLASSES),
        request=st.sampled_from(["place_order", "cancel_order", "query_positions", "query_order"]),
        retry_after=st.sampled_from([None, "0.5", "7"]),
    )
    def venue_error(
        self, data: st.DataObject, error_class: str, request: str, retry_after: str | None
    ) -> None:
        oid = rid = None
        if request in ("place_order", "cancel_order", "query_order") and self.placed:
            oid = self._order(data).order_id
        if request == "query_positions":
            rid = data.draw(st.sampled_from(self.position_queries))
        elif request == "query_order" and self.order_queries:
            rid = data.draw(st.sampled_from([q.request_id for q in self.order_queries]))
        ev = VenueError(
            error_class=error_class,
            request=request,
            order_id=oid,
            request_id=rid,
            retry_after_s=retry_after,
        )
        self._feed(ev)

    @rule(
        data=st.data(),
        eth=st.sampled_from(["0", "0.033", "-0.033", "0.01", "0.0005"]),
        sol=st.sampled_from(["0", "-0.66", "0.66", "-0.3", "0.001"]),
    )
    def positions(self, data: st.DataObject, eth: str, sol: str) -> None:
        rid = data.draw(st.sampled_from(self.position_queries))
        snap = [Position(product_id=4, qty=eth), Position(product_id=8, qty=sol)]
        self._feed(PositionSnapshot(positions=snap, request_id=rid))

    @rule(kind=st.sampled_from(["unknown_fill", "crossed_bbo", "unknown_status"]))
    def junk(self, kind: str) -> None:
        if kind == "unknown_fill":
            self.fills += 1
            ev: Event = FillReceived(
                order_id="not-ours",
                fill_id=f"x{self.fills}",
                product_id=8,
                side="buy",
                price="150",
                qty="0.01",
            )
        elif kind == "crossed_bbo":
            ev = BboUpdated(product_id=4, bid="3001", ask="2999", bid_qty=1, ask_qty=1)
        else:
            ev = OrderStatus(order_id="not-ours", state="filled", filled_qty="1")
        self._feed(ev)

    @rule()
    def tick(self) -> None:
        """The next deadline fires (time jumps to it)."""
        if self.clock.fire_next():
            self._take(self.engine.drain())

    # -- invariants ---------------------------------------------------------------------
    @invariant()
    def every_wait_has_a_deadline(self) -> None:
        if MID in self.engine.machines:
            assert self.engine.deadlines.armed_for(MID), (
                f"{self.kind} waits in {self.engine.machines[MID].state_ids} with no deadline"
            )

    def teardown(self) -> None:
        if not self.kind:
            return
        started = self.clock.now_ns()
        bound = MachineBounds(P, retry_after_s=D(7))
        limit = {"build": bound.build, "unwind": bound.unwind, "exit": bound.exit}[self.kind]()
        for _ in range(10_000):
            if MID in self.engine.finished:
                break
            assert self.clock.fire_next(), "a live machine with nothing left to fire"
            self._take(self.engine.drain())
        assert MID in self.engine.finished, f"{self.kind} never finished"
        took = D(self.clock.now_ns() - started) / NS_PER_S
        assert took <= limit, f"{self.kind} took {took}s after the venue went silent"


CycleMachineWalk.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_cycle_machines_under_arbitrary_event_orders = CycleMachineWalk.TestCase


class DeepCycleMachineWalk(CycleMachineWalk):
    pass


DeepCycleMachineWalk.TestCase.settings = settings(
    max_examples=1500,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_cycle_machines_deep_tier = pytest.mark.slow(deep(DeepCycleMachineWalk.TestCase))


def test_the_walk_can_fail_on_a_wait_without_deadline(monkeypatch):
    # Plant the bug: position queries that arm no deadline (a wait that can last forever).
    from hypothesis.errors import Flaky
    from hypothesis.stateful import run_state_machine_as_test

    from machines.pricing import OrderRounds

    def query_without_deadline(self):
        self.verifies += 1
        self.query_id = self.next_id("q")
        self.emit(QueryPositions(request_id=self.query_id, product_ids=self.p.product_ids))

    monkeypatch.setattr(OrderRounds, "query_positions", query_without_deadline)
    quick = settings(max_examples=200, stateful_step_count=10, deadline=None, database=None)
    with pytest.raises((AssertionError, Flaky), match=r"no deadline|never finished|nothing left"):
        run_state_machine_as_test(CycleMachineWalk, settings=quick)
