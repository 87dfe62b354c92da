"""Exposure as the venue's fill timestamps show it vs as the engine believed it (issue 11
item 8)."""

from __future__ import annotations

from decimal import Decimal

from engine.core.events import BboUpdated
from engine.core.events import FillReceived
from engine.core.exposure import FillTimeline
from engine.core.exposure import in_flight_hedge_usd
from engine.core.intents import PlaceOrder
from engine.core.ledger import Ledger

D = Decimal
MS = 1_000_000
S = 1_000_000_000


def fill(fid, oid, pid, side, qty, price, ts_venue):
    return {
        "kind": "fill_received",
        "fill_id": fid,
        "order_id": oid,
        "product_id": pid,
        "side": side,
        "qty": str(qty),
        "price": str(price),
        "ts_venue_ns": ts_venue,
    }


def test_legs_filled_17ms_apart_heard_5s_apart_are_17ms_unhedged_as_filled():
    t = FillTimeline([4, 8], D(5))
    t.observe("event", fill("a", "o1", 4, "buy", "0.033", 3000, 1 * S), 1 * S + 50 * MS)
    # The SOL push was lost; heard again 5 s later (a re-sent or archived fill).
    t.observe("event", fill("b", "o2", 8, "sell", "0.66", 150, 1 * S + 17 * MS), 6 * S)
    usd, seconds = t.summary()
    assert seconds == D("0.017")
    assert usd == D("99.000")  # the ETH leg alone, for those 17 ms
    assert t.untimed() == 0


def test_a_fill_known_only_by_the_venues_word_is_placed_at_its_orders_ack():
    t = FillTimeline([4, 8], D(5))
    place = {"kind": "place_order", "order_id": "o2", "product_id": 8, "side": "sell"}
    t.observe("intent", {**place, "price": "149.8", "qty": "0.66"}, 1 * S)
    t.observe("event", fill("a", "o1", 4, "buy", "0.033", 3000, 1 * S + 40 * MS), 1 * S + 50 * MS)
    t.observe("event", {"kind": "order_accepted", "order_id": "o2"}, 1 * S + 50 * MS)
    # Every push of o2 lost; the cancel ack at the fill timeout says it filled in full.
    word = {"kind": "order_cancelled", "order_id": "o2", "filled_qty": "0.66"}
    t.observe("event", word, 6 * S + 50 * MS)
    usd, seconds = t.summary()
    assert seconds < D("0.05")
    assert t.untimed() == 1
    assert usd < D(100)


def test_an_open_leg_stays_open_as_filled():
    t = FillTimeline([4, 8], D(5))
    t.observe("event", fill("a", "o1", 4, "buy", "0.033", 3000, 1 * S), 1 * S)
    t.observe("event", fill("b", "o3", 4, "sell", "0.033", 3000, 31 * S), 31 * S)
    usd, seconds = t.summary()
    assert seconds == D(30)
    assert usd == D("99.000")


def test_in_flight_orders_explain_an_imbalance_until_they_are_done():
    ledger = Ledger()
    ledger.apply_event(BboUpdated(product_id=8, bid="149.9", ask="150.1", bid_qty=1, ask_qty=1), 0)
    ledger.apply_intent(
        PlaceOrder(
            order_id="o2", product_id=8, side="sell", qty=D("0.66"), price=D("149.8"), tif="ioc"
        )
    )
    assert in_flight_hedge_usd(ledger, D(99)) == D("0.000")
    ledger.apply_event(
        FillReceived(
            order_id="o2", fill_id="f", product_id=8, side="sell", price="150", qty="0.66"
        ),
        1,
    )
    assert in_flight_hedge_usd(ledger, D(99)) == D(99)  # done: nothing left to explain it


def test_monitor_does_not_alert_for_an_imbalance_its_working_orders_explain():
    from types import SimpleNamespace

    from adapters.base import ProductInfo
    from engine.runtime.run import Monitor

    ledger = Ledger()
    for pid, bid, ask in ((4, "2999.9", "3000.1"), (8, "149.9", "150.1")):
        ledger.apply_event(BboUpdated(product_id=pid, bid=bid, ask=ask, bid_qty=1, ask_qty=1), 0)
    engine = SimpleNamespace(ledger=ledger, now_ns=0)
    products = [
        ProductInfo(
            symbol="ETH-PERP",
            product_id=4,
            tick_size="0.1",
            size_increment="0.001",
            min_order_value_usd=10,
        ),
        ProductInfo(
            symbol="SOL-PERP",
            product_id=8,
            tick_size="0.01",
            size_increment="0.01",
            min_order_value_usd=10,
        ),
    ]
    alerts: list[object] = []
    monitor = Monitor(engine, products, D(5), alert=alerts.append, exposure_alert_s=D(5))  # type: ignore[arg-type]
    for oid, pid, side, qty, px in (
        ("o1", 4, "buy", "0.033", "3003"),
        ("o2", 8, "sell", "0.66", "149.8"),
    ):
        ledger.apply_intent(
            PlaceOrder(order_id=oid, product_id=pid, side=side, qty=D(qty), price=D(px), tif="ioc")
        )
    ledger.apply_event(
        FillReceived(
            order_id="o1", fill_id="f1", product_id=4, side="buy", price="3000", qty="0.033"
        ),
        10 * MS,
    )
    # The SOL fill push is lost: for 6 s the engine believes ETH is naked, but o2 is working.
    for t in range(1, 7):
        engine.now_ns = t * S
        monitor.after_step()
    assert alerts == []
    assert monitor.max_unhedged_ns >= 5 * S  # believed: unhedged all along
    # o2 ends with nothing filled: now the imbalance is proven and alerted.
    from engine.core.events import OrderExpired

    ledger.apply_event(OrderExpired(order_id="o2", filled_qty="0"), 6 * S)
    engine.now_ns = 6 * S + MS
    monitor.after_step()
    assert [a.event for a in alerts] == ["exposure_above_tolerance"]
