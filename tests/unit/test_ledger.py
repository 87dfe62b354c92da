from __future__ import annotations

from decimal import Decimal

from engine.core.events import FillReceived
from engine.core.events import OrderExpired
from engine.core.intents import PlaceOrder
from engine.core.ledger import MAX_ORDERS
from engine.core.ledger import Ledger


def place(ledger, oid, qty="1"):
    ledger.apply_intent(
        PlaceOrder(order_id=oid, product_id=4, side="buy", qty=qty, price="10", tif="ioc")
    )


def fill(oid, fid, qty="1"):
    return FillReceived(order_id=oid, fill_id=fid, product_id=4, side="buy", price="10", qty=qty)


def test_finished_orders_are_forgotten_but_their_late_duplicates_are_not_counted():
    ledger = Ledger()
    for i in range(MAX_ORDERS + 10):
        place(ledger, f"o{i}")
        ledger.apply_event(fill(f"o{i}", f"f{i}"), now_ns=i)
    assert len(ledger.orders) <= MAX_ORDERS
    assert "o0" not in ledger.orders
    before = ledger.position(4)
    notes = ledger.apply_event(fill("o0", "f0"), now_ns=10**9)  # a late duplicate
    assert notes == ["duplicate fill f0 ignored"]
    assert ledger.position(4) == before


def test_unknown_order_fill_counts_once():
    ledger = Ledger()
    ledger.apply_event(fill("ghost", "g1", "2"), now_ns=1)
    ledger.apply_event(fill("ghost", "g1", "2"), now_ns=2)
    assert ledger.position(4) == Decimal(2)


def test_open_orders_are_never_forgotten():
    ledger = Ledger()
    place(ledger, "open-one", qty="5")
    for i in range(MAX_ORDERS + 10):
        place(ledger, f"o{i}")
        ledger.apply_event(OrderExpired(order_id=f"o{i}", filled_qty="0"), now_ns=i)
    assert "open-one" in ledger.orders


def test_a_position_read_showing_a_state_the_fills_left_is_lagging_not_believed():
    # Issue 11: the venue's read (newer than the fill) still shows the position before it.
    from engine.core.events import Position
    from engine.core.events import PositionSnapshot

    ledger = Ledger()
    place(ledger, "o1", qty="2")
    ledger.apply_event(fill("o1", "f1", qty="2"), now_ns=1_000)
    ledger.apply_event(PositionSnapshot(positions=[Position(product_id=4, qty="0")]), now_ns=2_000)
    assert ledger.venue_position(4) == 0
    assert ledger.best_position(4) == 2  # the fills, not the lagging read
    assert ledger.book(4).held_since(Decimal(0), 0, Decimal("0.001"))
    # A read the fills never held is the venue's news (fills we missed): believed.
    ledger.apply_event(PositionSnapshot(positions=[Position(product_id=4, qty="3")]), now_ns=3_000)
    assert ledger.best_position(4) == 3


def test_the_ledger_steps_order_state_through_the_lifecycle_table():
    from engine.core.events import OrderAccepted
    from engine.core.events import OrderCancelled

    # Arrange: an order of 2, accepted, partly filled.
    ledger = Ledger()
    place(ledger, "o1", qty="2")
    ledger.apply_event(OrderAccepted(order_id="o1"), now_ns=1)
    ledger.apply_event(fill("o1", "f1", "1"), now_ns=2)
    assert ledger.order("o1").state == "partially_filled"
    # Act: the cancel ack (it says 1 filled), then a fill that crossed it on the wire.
    ledger.apply_event(OrderCancelled(order_id="o1", filled_qty="1"), now_ns=3)
    assert ledger.order("o1").state == "cancelled"
    ledger.apply_event(fill("o1", "f2", "1"), now_ns=4)
    # Assert: the late fill completes the order (a real-world edge of the table).
    assert ledger.order("o1").state == "filled"
    assert ledger.position(4) == Decimal(2)
    # A late ack for a filled order changes nothing.
    ledger.apply_event(OrderExpired(order_id="o1"), now_ns=5)
    assert ledger.order("o1").state == "filled"


def test_the_ledger_applies_every_word_a_working_machine_records():
    """The one holder of an order's state: an ack without the amount, a place request's
    error, an order status and a cancel request step it; `words` counts the words a
    working machine records (all but `accepted`), so it reads the state only once it has
    recorded each of them."""
    from engine.core.events import OrderAccepted
    from engine.core.events import OrderCancelled
    from engine.core.events import OrderStatus
    from engine.core.events import VenueError
    from engine.core.intents import CancelOrder

    ledger = Ledger()
    for oid in ("a", "b", "c", "d", "e"):
        place(ledger, oid, qty="2")
    # an ack without the filled amount: ended, not counted -- ask
    ledger.apply_event(OrderCancelled(order_id="a"), now_ns=1)
    assert (ledger.order("a").state, ledger.order("a").words) == ("uncounted", 1)
    ledger.apply_event(OrderStatus(order_id="a", state="cancelled", filled_qty="0"), now_ns=2)
    assert (ledger.order("a").state, ledger.order("a").words) == ("cancelled", 2)
    # place errors: unknown outcome, refused (429), permanent
    err = {"request": "place_order"}
    ledger.apply_event(VenueError(error_class="unknown_outcome", order_id="b", **err), 3)
    ledger.apply_event(VenueError(error_class="rate_limited", order_id="c", **err), 3)
    ledger.apply_event(VenueError(error_class="permanent", order_id="d", **err), 3)
    assert [ledger.order(o).state for o in "bcd"] == ["unknown", "denied", "rejected"]
    # an unknown outcome then "accepted" (not a word the machine records) is known again
    ledger.apply_event(OrderAccepted(order_id="b"), now_ns=4)
    assert (ledger.order("b").state, ledger.order("b").words) == ("accepted", 1)
    # a cancel request; "not found" twice with nothing filled: never reached the venue
    ledger.apply_intent(CancelOrder(order_id="e", product_id=4))
    assert ledger.order("e").state == "pending_cancel"
    for n in (5, 6):
        ledger.apply_event(OrderStatus(order_id="e", state="not_found"), now_ns=n)
    assert (ledger.order("e").state, ledger.order("e").not_found) == ("denied", 2)
    assert {o.order_id for o in ledger.open_orders()} == {"b"}
