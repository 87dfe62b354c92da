"""Property tests of the fill ledger (engine/core/ledger.py): the venue's true fills of a few
orders, delivered shuffled, duplicated, dropped and late (after the cancel ack), mixed
with the venue's own word on each order's total (cancel/expiry acks, order status).

After every event:
- each fill id is applied once: an order's filled amount is the larger of its unique
  fills heard and the venue's largest cumulative word, never their sum (exactly once);
- never overfilled: filled <= what the venue filled <= the order's size;
- each product's position is the signed sum of its orders' filled amounts.
At the end: with every fill heard at least once, the position is the signed sum of the
unique fills; and the result does not depend on the delivery order.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from engine.core.events import Event
from engine.core.events import FillReceived
from engine.core.events import OrderCancelled
from engine.core.events import OrderExpired
from engine.core.events import OrderStatus
from engine.core.intents import PlaceOrder
from engine.core.ledger import Ledger
from tests.tiers import deep

STEP = Decimal("0.01")
PRODUCTS = (4, 8)


@st.composite
def orders_and_events(draw):
    """(PlaceOrder intents, the venue's true fill total per order, events as delivered)."""
    n = draw(st.integers(1, 4))
    intents, truth, truth_ids, events = [], {}, {}, []
    with_cumulative = draw(st.booleans())  # some venues state it, some do not
    for i in range(n):
        units = draw(st.integers(1, 50))
        intent = PlaceOrder(
            order_id=f"o{i}",
            product_id=draw(st.sampled_from(PRODUCTS)),
            side=draw(st.sampled_from(["buy", "sell"])),
            qty=units * STEP,
            price=Decimal(100 + i),
            tif="ioc",
        )
        intents.append(intent)
        # The venue's fills: a partition of some amount <= the order's size.
        filled_units = draw(st.integers(0, units))
        parts = _partition(draw, filled_units)
        truth[intent.order_id] = filled_units * STEP
        truth_ids[intent.order_id] = {f"{intent.order_id}-f{k}" for k in range(len(parts))}
        cumulative = Decimal(0)
        for k, part in enumerate(parts):
            cumulative += part * STEP
            fill = FillReceived(
                order_id=intent.order_id,
                fill_id=f"{intent.order_id}-f{k}",
                product_id=intent.product_id,
                side=intent.side,
                price=intent.price,
                qty=part * STEP,
                cumulative_qty=cumulative if with_cumulative else None,
            )
            copies = draw(st.sampled_from([0, 1, 1, 1, 2, 3]))  # dropped … tripled
            events += [fill] * copies
        # The venue's word on the total: the cancel/expiry ack, or an order status of some
        # earlier moment (a prefix of the fills).
        word = draw(st.sampled_from(["none", "cancel", "expire", "status"]))
        if word == "cancel":
            events.append(OrderCancelled(order_id=intent.order_id, filled_qty=cumulative))
        elif word == "expire":
            events.append(OrderExpired(order_id=intent.order_id, filled_qty=cumulative))
        elif word == "status":
            upto = draw(st.integers(0, len(parts)))
            said = sum(parts[:upto]) * STEP
            events.append(OrderStatus(order_id=intent.order_id, state="open", filled_qty=said))
    order = draw(st.permutations(events))  # shuffled: fills may follow the cancel ack
    return intents, truth, truth_ids, list(order)


def _partition(draw, units: int) -> list[int]:
    parts = []
    while units > 0:
        take = draw(st.integers(1, units))
        parts.append(take)
        units -= take
    return parts


def _apply(intents: list[PlaceOrder], events: list[Event], check=None) -> Ledger:
    ledger = Ledger()
    for intent in intents:
        ledger.apply_intent(intent)
    for n, ev in enumerate(events):
        ledger.apply_event(ev, n)
        if check is not None:
            check(ledger, events[: n + 1])
    return ledger


def _heard_total(order_id: str, heard: list[Event]) -> Decimal:
    fills = {e.fill_id: e for e in heard if isinstance(e, FillReceived) and e.order_id == order_id}
    unique = sum((f.qty for f in fills.values()), Decimal(0))
    words = [f.cumulative_qty for f in fills.values() if f.cumulative_qty is not None]
    words += [
        e.filled_qty
        for e in heard
        if isinstance(e, OrderCancelled | OrderExpired | OrderStatus)
        and e.order_id == order_id
        and e.filled_qty is not None
    ]
    return max([unique, *words])


def _invariants(intents, truth):
    def check(ledger: Ledger, heard: list[Event]) -> None:
        for intent in intents:
            rec = ledger.order(intent.order_id)
            assert rec is not None
            expected = min(_heard_total(intent.order_id, heard), intent.qty)
            assert rec.filled == expected, "applied exactly once"
            assert rec.filled <= truth[intent.order_id] <= intent.qty, "never overfilled"
        for pid in PRODUCTS:
            signed = sum(
                (o.filled if o.side == "buy" else -o.filled)
                for o in ledger.orders.values()
                if o.product_id == pid
            )
            assert ledger.position(pid) == signed

    return check


def _property(case) -> None:
    intents, truth, truth_ids, events = case
    ledger = _apply(intents, events, _invariants(intents, truth))
    delivered = {e.fill_id for e in events if isinstance(e, FillReceived)}
    for intent in intents:
        oid = intent.order_id
        rec = ledger.order(oid)
        assert rec is not None
        assert rec.fill_ids == truth_ids[oid] & delivered  # each heard id recorded once
        if truth_ids[oid] <= delivered:
            # Nothing dropped: the position is the sum of the unique fills.
            assert rec.filled == truth[oid]
    # The delivery order does not matter for the final amounts and positions.
    again = _apply(intents, sorted(events, key=repr))
    for pid in PRODUCTS:
        assert again.position(pid) == ledger.position(pid)


@settings(max_examples=150, deadline=None)
@given(orders_and_events())
def test_S_N3_ledger_fills_applied_once_never_overfilled_position_is_their_sum(case):
    _property(case)


@given(orders_and_events(), st.data())
@settings(max_examples=60, deadline=None)
def test_S_V4_ledger_a_fill_after_the_cancel_ack_counts_once(case, data):
    # CANCELED → FILLED (V4): move one order's cancel ack before all of its fills.
    intents, truth, _, events = case
    oid = data.draw(st.sampled_from([i.order_id for i in intents]))
    acks = [e for e in events if isinstance(e, OrderCancelled) and e.order_id == oid]
    rest = [e for e in events if e not in acks]
    ledger = _apply(intents, acks + rest, _invariants(intents, truth))
    rec = ledger.order(oid)
    assert rec is not None
    assert rec.filled <= truth[oid]


@deep
@pytest.mark.slow
@settings(max_examples=2000, deadline=None)
@given(orders_and_events())
def test_ledger_deep_tier(case):
    _property(case)
