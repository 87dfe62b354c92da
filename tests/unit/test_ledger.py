from __future__ import annotations

from decimal import Decimal

from engine.events import FillReceived
from engine.events import OrderExpired
from engine.intents import PlaceOrder
from engine.ledger import MAX_ORDERS
from engine.ledger import Ledger


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
