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
