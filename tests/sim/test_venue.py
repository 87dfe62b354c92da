"""SimVenue without faults: intents in, engine events out, on the virtual clock."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.sim import FaultProfileError
from adapters.sim import make_sim_venue
from adapters.sim.venue import SimVenue
from engine.core.clock import VirtualClock
from engine.core.events import BboUpdated
from engine.core.events import ConnectionChanged
from engine.core.events import FillReceived
from engine.core.events import OpenOrdersSnapshot
from engine.core.events import OrderAccepted
from engine.core.events import OrderCancelled
from engine.core.events import OrderExpired
from engine.core.events import OrderRejected
from engine.core.events import OrderStatus
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import CancelOrder
from engine.core.intents import CancelProductOrders
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOpenOrders
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from engine.core.intents import SendAlert
from tests.sim.harness import ETH
from tests.sim.harness import MS
from tests.sim.harness import SOL
from tests.sim.harness import STILL
from tests.sim.harness import Harness
from tests.sim.harness import sync


def test_products_carry_nado_ids_and_increments():
    h = Harness()
    eth, sol = h.venue.products["ETH-PERP"], h.venue.products["SOL-PERP"]
    assert (eth.product_id, eth.tick_size, eth.size_increment) == (
        4,
        Decimal("0.1"),
        Decimal("0.001"),
    )
    assert (sol.product_id, sol.tick_size, sol.size_increment) == (
        8,
        Decimal("0.01"),
        Decimal("0.01"),
    )
    assert eth.min_order_value_usd == 10
    assert Decimal(2500) < h.venue.mid("ETH-PERP") < Decimal(3500)
    assert Decimal(120) < h.venue.mid(SOL) < Decimal(180)


def test_start_connects_and_pushes_bbo_every_100ms_per_product():
    h = Harness()
    h.run(1.0)
    assert isinstance(h.events[0], ConnectionChanged)
    assert h.events[0].state == "connected"
    timed = h.timed(BboUpdated)
    eth = [(t, ev) for t, ev in timed if ev.product_id == ETH]
    assert len(eth) == 10
    assert [ev.ts_venue_ns for _, ev in eth] == [i * 100 * MS for i in range(10)]
    assert all(t - ev.ts_venue_ns == 25 * MS for t, ev in eth)  # push latency
    assert all(0 < ev.bid < ev.ask for _, ev in timed)
    assert {ev.product_id for _, ev in timed} == {ETH, SOL}


def test_placement_answers_after_a_50ms_round_trip_with_only_the_digest():
    h = Harness(STILL)
    h.run(0.2)
    t0 = h.now
    oid = h.place("buy", "1", tif="ioc")
    h.run(0.1)
    about = h.about(oid)
    assert [type(e) for e in about] == [OrderAccepted, FillReceived]
    (t_acc, acc) = next((t, e) for t, e in h.log if e is about[0])
    assert t_acc - t0 == 50 * MS
    assert acc.digest.startswith("0x")
    assert len(acc.digest) == 66
    fill = about[1]
    assert (fill.qty, fill.cumulative_qty, fill.remaining_qty) == (1, 1, 0)
    assert not fill.is_maker
    assert fill.fee > 0


def test_ioc_walks_the_depth_then_expires_the_remainder():
    h = Harness(STILL + "[sim]\nlevel_usd = 3000\nbook_levels = 3\n")
    h.run(0.2)
    asks = h.venue.exchange.depth(ETH)[1]
    depth = sum(q for _, q in asks)
    oid = h.place("buy", depth + 2, asks[-1][0], "ioc")
    h.run(0.1)
    fills = [e for e in h.about(oid) if isinstance(e, FillReceived)]
    assert [(f.price, f.qty) for f in fills] == asks
    assert len({f.fill_id for f in fills}) == 3
    assert [f.remaining_qty for f in fills] == [
        depth + 2 - sum(q for _, q in asks[: i + 1]) for i in range(3)
    ]
    (expired,) = [e for e in h.about(oid) if isinstance(e, OrderExpired)]
    assert expired.filled_qty == depth
    assert h.venue.position(ETH) == depth


def test_ioc_with_no_liquidity_at_its_price_is_accepted_then_expires_with_zero_fill():
    h = Harness(STILL)
    h.run(0.2)
    oid = h.place("buy", "1", h.bbo().bid - 1, "ioc")
    h.run(0.1)
    about = h.about(oid)
    assert [type(e) for e in about] == [OrderAccepted, OrderExpired]
    assert about[1].filled_qty == 0
    assert h.venue.position(ETH) == 0


def test_rejections_carry_nado_codes():
    h = Harness(STILL)
    h.run(0.2)
    b = h.bbo()
    post = h.place("buy", "1", b.ask, "post_only")
    # 100 000 ETH (300 M USD) needs 30 M of initial margin: more than the account holds
    fok = h.place("buy", "100000", b.ask + 10, "fok")
    reduce = h.place("sell", "1", b.bid, "ioc", reduce_only=True)
    tick = h.place("buy", "1", b.ask + Decimal("0.05"), "ioc")
    h.run(0.1)
    codes = {e.order_id: e.code for e in h.of(OrderRejected)}
    assert codes == {post: 2008, fok: 2006, reduce: 2019, tick: 2001}
    assert "post only" in h.about(post)[0].reason


def test_default_rests_then_fills_as_maker_when_the_market_moves_through_it():
    h = Harness(
        "[market]\nvolatility_bps_per_sqrt_s = 0\n"
        'jumps = [{ at_s = 2, bps = 50, product = "ETH-PERP" }]\n'
        "[sim]\nmaker_fill_rate_per_s = 0\n"
    )
    h.run(0.2)
    price = h.bbo().ask + 3
    oid = h.place("sell", "2", price, "default")
    h.run(1.0)
    assert [type(e) for e in h.about(oid)] == [OrderAccepted]
    assert [o.order_id for o in h.venue.open_orders()] == [oid]
    h.run(1.0)
    fill = h.about(oid)[1]
    assert isinstance(fill, FillReceived)
    maker_fee = (price * 2 * Decimal("0.0001")).quantize(Decimal("1e-8"))  # Nado: 1 bp
    assert (fill.price, fill.qty, fill.is_maker, fill.fee) == (price, 2, True, maker_fee)
    assert h.venue.open_orders() == []
    assert h.venue.position(ETH) == -2


def test_cancel_order_and_cancel_product_orders():
    h = Harness(STILL + "[sim]\nmaker_fill_rate_per_s = 0\n")
    h.run(0.2)
    low_e, low_s = h.bbo().bid - 5, h.bbo(SOL).bid - 1
    a = h.place("buy", "1", low_e, "default")
    b = h.place("buy", "1", low_e, "default")
    c = h.place("buy", "1", low_s, "default", pid=SOL)
    h.run(0.1)
    h.submit(CancelOrder(order_id=a, product_id=ETH))
    h.submit(CancelProductOrders(request_id="c1", product_ids=(ETH, SOL)))
    h.submit(CancelOrder(order_id="never-placed", product_id=ETH))
    h.run(0.1)
    cancelled = h.of(OrderCancelled)
    assert [e.order_id for e in cancelled] == [a, b, c]
    assert all(e.filled_qty == 0 for e in cancelled)
    (err,) = h.of(VenueError)
    assert (err.error_class, err.code, err.order_id) == ("permanent", 2020, "never-placed")
    assert h.venue.open_orders() == []


def test_cancel_by_digest_reaches_an_order_the_client_does_not_know():
    h = Harness(STILL + "[sim]\nmaker_fill_rate_per_s = 0\n")
    h.run(0.2)
    oid = h.place("buy", "1", h.bbo().bid - 5, "default")
    h.run(0.1)
    digest = h.of(OrderAccepted)[0].digest
    h.submit(CancelOrder(order_id="orphan", product_id=ETH, digest=digest))
    h.run(0.1)
    assert h.of(OrderCancelled)[0].order_id == "orphan"
    assert h.venue.exchange.find(h.venue.subaccount, oid).state == "cancelled"


def test_queries_answer_with_their_request_id():
    h = Harness(STILL + "[sim]\nmaker_fill_rate_per_s = 0\n")
    h.run(0.2)
    filled = h.place("buy", "2", tif="ioc")
    resting = h.place("sell", "1", h.bbo().ask + 10, "default")
    expired = h.place("buy", "1", h.bbo().bid - 10, "ioc")
    rejected = h.place("buy", "1", h.bbo().ask, "post_only")
    h.run(0.1)
    h.submit(QueryPositions(request_id="p", product_ids=(ETH, SOL)))
    for oid in (filled, resting, expired, rejected, "nope"):
        h.submit(QueryOrder(request_id=f"s-{oid}", order_id=oid, product_id=ETH))
    h.submit(QueryOpenOrders(request_id="oo", product_ids=(ETH,)))
    h.run(0.1)
    (snap,) = h.of(PositionSnapshot)
    assert snap.request_id == "p"
    eth, sol = snap.positions
    assert (eth.product_id, eth.qty, sol.qty, sol.entry_price) == (ETH, 2, 0, None)
    assert eth.entry_price == h.venue.fills()[0].price
    states = {e.order_id: (e.state, e.filled_qty, e.remaining_qty) for e in h.of(OrderStatus)}
    assert states == {
        filled: ("filled", 2, 0),
        resting: ("open", 0, 1),
        expired: ("expired", 0, 0),
        rejected: ("rejected", 0, 0),
        "nope": ("not_found", 0, 0),
    }
    (oo,) = h.of(OpenOrdersSnapshot)
    assert (oo.request_id, oo.product_ids) == ("oo", (ETH,))
    assert [(o.order_id, o.side, o.remaining_qty) for o in oo.orders] == [(resting, "sell", 1)]
    assert oo.orders[0].digest is not None


def test_resending_the_same_placement_is_a_duplicate_digest():
    h = Harness(STILL)
    h.run(0.2)
    intent = PlaceOrder(
        order_id="x", product_id=ETH, side="buy", qty=1, price=h.bbo().bid - 5, tif="default"
    )
    h.submit(intent)
    h.submit(intent)
    h.run(0.1)
    assert [type(e) for e in h.about("x")] == [OrderAccepted, OrderRejected]
    assert h.about("x")[1].code == 2013


def test_ground_truth_accessors_agree_with_the_fills():
    h = Harness(STILL)
    h.run(0.2)
    h.place("buy", "2", tif="ioc")
    h.place("sell", "3", tif="ioc", pid=SOL)
    h.run(0.1)
    h.place("sell", "2", tif="ioc")
    h.run(0.1)
    fills = h.venue.fills()
    assert fills == h.of(FillReceived)
    assert h.venue.venue_positions() == {"ETH-PERP": 0, "SOL-PERP": -3}
    assert h.venue.fees_paid() == sum(f.fee for f in fills)
    eth = [f for f in fills if f.product_id == ETH]
    assert h.venue.realized_pnl("ETH-PERP") == (eth[1].price - eth[0].price) * 2
    assert h.venue.realized_pnl() == h.venue.realized_pnl(ETH) + h.venue.realized_pnl(SOL)


def test_close_cancels_every_timer_and_silences_the_venue():
    h = Harness()
    h.run(0.2)
    h.place("buy", "1", tif="ioc")
    h.close()
    assert h.clock.pending() == 0
    count = len(h.log)
    h.place("buy", "1", tif="ioc")
    h.clock.run_until_idle()
    assert len(h.log) == count


def test_engine_only_intents_are_ignored_and_submit_needs_start():
    h = Harness()
    h.submit(SendAlert(event="x", severity="info", message="hi"))
    h.run(0.05)
    assert all(isinstance(e, ConnectionChanged | BboUpdated) for e in h.events)
    fresh = SimVenue(VirtualClock())
    with pytest.raises(RuntimeError, match="before start"):
        fresh.submit(QueryPositions(request_id="q", product_ids=(ETH,)))
    with pytest.raises(RuntimeError, match="already started"):
        sync(h.venue.start(lambda ev: None))


def test_positions_survive_a_client_restart_on_a_shared_exchange():
    h = Harness(STILL)
    h.run(0.2)
    h.place("buy", "1", tif="ioc")
    h.run(0.1)
    h.close()
    again = SimVenue(h.clock, 1, exchange=h.venue.exchange)
    seen = []
    sync(again.start(seen.append))
    again.submit(QueryPositions(request_id="q", product_ids=()))
    h.clock.advance(100 * MS)
    (snap,) = [e for e in seen if isinstance(e, PositionSnapshot)]
    assert [(p.product_id, p.qty) for p in snap.positions] == [(ETH, 1), (SOL, 0)]


def test_unknown_symbols_and_bad_profile_files_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="does not list 'DOGE-PERP'"):
        SimVenue(VirtualClock(), symbols=("DOGE-PERP",))
    bad = tmp_path / "bad.toml"
    bad.write_text("[ws]\ndrop = 3\n", encoding="utf-8")
    with pytest.raises(FaultProfileError, match=r"ws\.drop"):
        make_sim_venue(clock=VirtualClock(), faults_path=str(bad))
    good = tmp_path / "good.toml"
    good.write_text("[orders]\nreject = 0.5\n", encoding="utf-8")
    venue = make_sim_venue(
        clock=VirtualClock(), seed=3, faults_path=str(good), symbols=["BTC-PERP"]
    )
    assert venue.profile.orders.reject == 0.5
    assert list(venue.products) == ["BTC-PERP"]
