"""The order lifecycle table (machines/order.py): the one declaration of an order's states."""

from __future__ import annotations

import pytest

from machines import order
from machines.order import step


def test_order_table_declares_every_state_and_only_known_events():
    assert set(order.TRANSITIONS) == set(order.STATES)
    for row in order.TRANSITIONS.values():
        assert set(row) <= set(order.EVENTS)
        assert set(row.values()) <= set(order.STATES)


def test_order_every_state_is_reachable_from_pending():
    seen, todo = {order.PENDING}, [order.PENDING]
    while todo:
        for target in order.TRANSITIONS[todo.pop()].values():
            if target not in seen:
                seen.add(target)
                todo.append(target)
    assert seen == set(order.STATES)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # Arrange: a path of facts from a fresh order; Act: step through it; Assert: the state.
        (["accepted", "partially_filled", "filled"], "filled"),
        (["accepted", "cancel_requested", "filled"], "filled"),  # a fill crossed the cancel
        (["accepted", "cancel_requested", "partially_filled"], "pending_cancel"),
        (["accepted", "cancel_requested", "reported_open"], "pending_cancel"),
        (["accepted", "cancel_requested", "cancelled", "filled"], "filled"),  # late fill
        (["accepted", "expired", "filled"], "filled"),
        (["accepted", "cancelled", "partially_filled"], "cancelled"),  # amount is data
        (["outcome_unknown"], "unknown"),
        (["outcome_unknown", "cancel_requested"], "unknown"),  # asked about before cancel
        (["outcome_unknown", "reported_open"], "accepted"),
        (["outcome_unknown", "denied"], "denied"),
        (["accepted", "ended_uncounted"], "uncounted"),
        (["accepted", "ended_uncounted", "reported_open"], "uncounted"),  # not reopened
        (["accepted", "ended_uncounted", "cancelled"], "cancelled"),
        (["rejected"], "rejected"),
        (["rejected", "cancelled"], "rejected"),
        (["accepted", "filled", "cancelled"], "filled"),  # a late ack changes nothing
        (["accepted", "filled", "rejected"], "filled"),
    ],
)
def test_order_lifecycle_paths(path, expected):
    state = order.PENDING
    for event in path:
        state = step(state, event)
    assert state == expected


def test_order_terminal_states_only_move_to_filled():
    for state in order.TERMINAL:
        assert set(order.TRANSITIONS[state].values()) <= {order.FILLED}


def _tracked(oid="w:o1", qty="2"):
    """A ledger holding one placed order and a round tracking it (as `place` does)."""
    from engine.core.intents import PlaceOrder
    from engine.core.ledger import Ledger
    from machines.pricing import OrderTracker

    ledger = Ledger()
    intent = PlaceOrder(order_id=oid, product_id=4, side="buy", qty=qty, price="10", tif="ioc")
    ledger.apply_intent(intent)
    tracker = OrderTracker(ledger)
    tracker.add(intent, 0)
    return ledger, tracker


def test_order_state_lives_in_the_ledger_and_a_round_reads_it_once_it_took_the_word():
    """The ledger applies a word before the machine takes it (eventless guards run first):
    until the machine's action has taken it, the round counts the order as unsettled."""
    from engine.core.events import OrderCancelled

    ledger, tracker = _tracked()
    # Act: the venue's cancel ack, applied by the ledger.
    ledger.apply_event(OrderCancelled(order_id="w:o1", filled_qty="0"), now_ns=1)
    # Assert: the one holder says cancelled; the round does not decide on it yet.
    assert ledger.order("w:o1").state == order.CANCELLED
    assert not tracker.settled("w:o1")
    assert not tracker.round_settled(0)
    assert tracker.unsettled(0) == ["w:o1"]
    # Act: the machine's action takes the word. Assert: now settled, nothing copied.
    tracker.took("w:o1")
    assert tracker.settled("w:o1")
    assert tracker.round_settled(0)
    assert not hasattr(tracker.orders["w:o1"], "state")


def test_order_a_word_another_machine_took_settles_the_order_with_the_next_word_taken():
    """A status answering another machine's query (the audit's) steps the ledger's state;
    the round reads it once it takes its own next word about the order."""
    from engine.core.events import OrderAccepted
    from engine.core.events import OrderStatus

    ledger, tracker = _tracked()
    ledger.apply_event(OrderAccepted(order_id="w:o1"), now_ns=1)  # not a word it takes
    assert tracker.orders["w:o1"].seen == ledger.order("w:o1").words == 0
    status = OrderStatus(order_id="w:o1", state="expired", filled_qty="1", request_id="audit")
    ledger.apply_event(status, now_ns=2)
    assert not tracker.settled("w:o1")
    ledger.apply_event(OrderStatus(order_id="w:o1", state="expired", filled_qty="1"), now_ns=3)
    tracker.took("w:o1")
    assert tracker.settled("w:o1")
    assert tracker.filled("w:o1") == 1


def test_order_a_round_still_reads_an_order_the_ledger_forgot():
    """The ledger forgets finished orders (bounded memory); a live round keeps its record."""
    from engine.core import ledger as ledger_mod
    from engine.core.events import FillReceived
    from engine.core.intents import PlaceOrder

    ledger, tracker = _tracked(qty="1")
    fill = FillReceived(order_id="w:o1", fill_id="f", product_id=4, side="buy", price="10", qty="1")
    ledger.apply_event(fill, now_ns=1)
    tracker.took("w:o1")
    for i in range(ledger_mod.MAX_ORDERS):
        oid = f"x{i}"
        ledger.apply_intent(
            PlaceOrder(order_id=oid, product_id=4, side="buy", qty="1", price="10", tif="ioc")
        )
    assert ledger.order("w:o1") is None  # forgotten
    assert tracker.settled("w:o1")
    assert tracker.filled("w:o1") == 1
    assert tracker.signed_filled(4) == 1
