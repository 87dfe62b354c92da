"""Every fault-profile knob, each shown to have its effect on what the engine hears."""

from __future__ import annotations

import itertools
from collections import Counter
from decimal import Decimal

from engine.core.events import BboUpdated
from engine.core.events import ConnectionChanged
from engine.core.events import FillReceived
from engine.core.events import OrderAccepted
from engine.core.events import OrderCancelled
from engine.core.events import OrderExpired
from engine.core.events import OrderRejected
from engine.core.events import OrderStatus
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import CancelOrder
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from tests.sim.harness import ETH
from tests.sim.harness import MS
from tests.sim.harness import SOL
from tests.sim.harness import STILL
from tests.sim.harness import Harness

QUIET = STILL + "[sim]\nmaker_fill_rate_per_s = 0\n"


def eth_bbos(h: Harness, since: int = 0) -> list[tuple[int, BboUpdated]]:
    return [(t, e) for t, e in h.timed(BboUpdated, since) if e.product_id == ETH]


def eth_pushes(h: Harness, since: int = 0) -> list[tuple[int, BboUpdated]]:
    """What the stream pushed: `best_bid_offer` carries the venue's stamp; the adapter's own
    REST confirmations of a quiet quote (`QueryMarketPrices`, issue 11 item 2) do not."""
    return [(t, e) for t, e in eth_bbos(h, since) if e.ts_venue_ns is not None]


def eth_confirmations(h: Harness, since: int = 0) -> list[tuple[int, BboUpdated]]:
    return [(t, e) for t, e in eth_bbos(h, since) if e.ts_venue_ns is None]


# -- [orders] ---------------------------------------------------------------------------------
def test_orders_ioc_no_fill_expires_marketable_ioc_and_fok_with_zero_fill():
    h = Harness(STILL + "[orders]\nioc_no_fill = 1.0\n")
    h.run(0.2)
    ioc = h.place("buy", "1", tif="ioc")
    fok = h.place("sell", "1", tif="fok")
    h.run(0.1)
    for oid in (ioc, fok):
        assert [type(e) for e in h.about(oid)] == [OrderAccepted, OrderExpired]
        assert h.about(oid)[1].filled_qty == 0
    assert h.venue.fills() == []
    baseline = Harness(STILL)
    baseline.run(0.2)
    baseline.place("buy", "1", tif="ioc")
    baseline.run(0.1)
    assert baseline.venue.fills()


def test_orders_partial_fill_fills_a_fraction_of_what_the_book_offers():
    h = Harness(STILL + "[orders]\npartial_fill = 1.0\n")
    h.run(0.2)
    ids = [h.place("buy", "1", tif="ioc") for _ in range(10)]
    h.run(0.1)
    for oid in ids:
        fill, expired = [e for e in h.about(oid) if not isinstance(e, OrderAccepted)]
        assert isinstance(fill, FillReceived)
        assert 0 < fill.qty < 1
        assert fill.remaining_qty == 1 - fill.qty
        assert isinstance(expired, OrderExpired)
        assert expired.filled_qty == fill.qty
    assert len({h.about(oid)[1].qty for oid in ids}) > 3  # uniform fractions, not one size


def test_orders_reject_rejects_placements_with_insufficient_health_2006():
    h = Harness(STILL + "[orders]\nreject = 0.5\n")
    h.run(0.2)
    for _ in range(200):
        h.place("buy", "0.01", tif="ioc")
    h.run(0.1)
    rejected = h.of(OrderRejected)
    assert {e.code for e in rejected} == {2006}
    assert 70 < len(rejected) < 130
    assert len(h.of(OrderAccepted)) == 200 - len(rejected)


def test_orders_cancel_delay_keeps_the_order_live_and_fillable_meanwhile():
    h = Harness(
        "[market]\nvolatility_bps_per_sqrt_s = 0\n"
        'jumps = [{ at_s = 1, bps = 50, product = "ETH-PERP" }]\n'
        "[orders]\ncancel_delay_ms = [800, 800]\n"
        "[sim]\nmaker_fill_rate_per_s = 0\n"
    )
    h.run(0.2)
    slow = h.place("sell", "1", h.bbo().ask + 3, "default")  # the jump at 1 s crosses it
    safe = h.place("buy", "1", h.bbo().bid - 3, "default")
    h.run(0.4)
    t0 = h.now
    h.submit(CancelOrder(order_id=slow, product_id=ETH))
    h.submit(CancelOrder(order_id=safe, product_id=ETH))
    h.run(2.0)
    (t_cancel, cancelled) = h.timed(OrderCancelled)[0]
    assert cancelled.order_id == safe
    assert t_cancel - t0 == (25 + 800 + 25) * MS
    assert isinstance(h.about(slow)[1], FillReceived)  # filled while its cancel was pending
    (err,) = h.of(VenueError)
    assert (err.order_id, err.code, err.error_class) == (slow, 2020, "permanent")
    assert "filled" in err.message


# -- [ws] ------------------------------------------------------------------------------------
def test_ws_drop_loses_pushes_but_not_rest_answers():
    h = Harness(STILL + "[ws]\ndrop = 1.0\n")
    h.run(0.2)
    oid = h.place("buy", "1", tif="ioc")
    h.run(1.0)
    assert [e for e in h.of(BboUpdated) if e.ts_venue_ns is not None] == []  # pushes lost
    # The adapter side (issue 11): the quiet stream is covered by REST quotes (no venue
    # stamp), and the IOC whose end no push told is asked about two round trips after
    # its ack; the REST answer is passed on as an unsolicited OrderStatus.
    quotes = h.of(BboUpdated)
    assert sorted((q.product_id, q.ts_venue_ns) for q in quotes) == [(4, None), (8, None)]
    assert [type(e) for e in h.about(oid)] == [OrderAccepted, OrderStatus]
    status = h.about(oid)[1]
    assert (status.state, status.filled_qty, status.request_id) == ("filled", 1, None)
    assert len(h.venue.fills()) == 1
    half = Harness("[ws]\ndrop = 0.5\n")
    half.run(10.0)
    pushed = [e for e in half.of(BboUpdated) if e.ts_venue_ns is not None]
    assert 70 < len(pushed) < 130  # of 200


def test_ws_duplicate_delivers_pushes_twice():
    h = Harness(STILL + "[ws]\nduplicate = 1.0\n")
    h.run(0.2)
    oid = h.place("buy", "1", tif="ioc")
    h.run(0.1)
    fills = [e for e in h.about(oid) if isinstance(e, FillReceived)]
    assert len(fills) == 2
    assert fills[0] == fills[1]
    stamps = Counter(e.ts_venue_ns for _, e in eth_bbos(h))
    assert set(stamps.values()) == {2}


def test_ws_reorder_swaps_a_push_with_the_next_one():
    h = Harness("[ws]\nreorder = 0.3\n", symbols=["ETH-PERP"])
    h.run(5.0)
    stamps = [e.ts_venue_ns for _, e in eth_bbos(h)]
    assert stamps != sorted(stamps)
    assert sorted(stamps)[:49] == [i * 100 * MS for i in range(49)]  # nothing lost
    assert h.venue.stats["ws_reordered"] > 0
    calm = Harness(symbols=["ETH-PERP"])
    calm.run(5.0)
    calm_stamps = [e.ts_venue_ns for _, e in eth_bbos(calm)]
    assert calm_stamps == sorted(calm_stamps)


def test_ws_reorder_with_nothing_following_flushes_the_held_push():
    # One push only: the periodic cadence (an on-change quote moves every market step).
    h = Harness(
        '[ws]\nreorder = 1.0\n[market]\nbbo_push = "periodic"\n[sim]\nbbo_interval_ms = 10000\n',
        symbols=["ETH-PERP"],
    )
    h.run(1.0)
    t = eth_bbos(h)[0][0]
    assert t == (250 + 25) * MS  # held for reorder_flush_ms, then sent alone


def test_ws_delay_adds_latency_but_keeps_order():
    h = Harness("[ws]\ndelay_ms = [200, 200]\n")
    h.run(1.0)
    assert all(t - e.ts_venue_ns == 225 * MS for t, e in eth_bbos(h))
    jitter = Harness("[ws]\ndelay_ms = [0, 300]\n")
    jitter.run(5.0)
    lags = [t - e.ts_venue_ns for t, e in eth_bbos(jitter)]
    stamps = [e.ts_venue_ns for _, e in eth_bbos(jitter)]
    assert stamps == sorted(stamps)  # a stream: delay never reorders
    assert len(set(lags)) > 10
    assert min(lags) >= 25 * MS


def test_ws_disconnect_drops_the_stream_then_reconnects_and_loses_the_gap():
    h = Harness("[ws]\ndisconnect_mean_s = 2\n")
    h.run(30.0)
    changes = h.timed(ConnectionChanged)[1:]
    states = [e.state for _, e in changes]
    assert len(states) >= 6
    assert set(states[::2]) == {"disconnected"}
    assert set(states[1::2]) == {"connected"}
    for (t_down, _), (t_up, _) in zip(changes[::2], changes[1::2], strict=False):
        assert t_up - t_down == 1000 * MS  # ws_reconnect_ms
        assert not [e for t, e in eth_bbos(h) if t_down < t < t_up]
    assert h.venue.stats["disconnects"] == len(changes[::2])
    assert h.venue.stats["ws_lost"] > 0


# -- [rest] ----------------------------------------------------------------------------------
def test_rest_latency_is_added_each_way():
    h = Harness(STILL + "[rest]\nlatency_ms = [100, 100]\n")
    h.run(0.2)
    t0 = h.now
    h.place("buy", "1", tif="ioc")
    h.run(0.5)
    (t, _) = h.timed(OrderAccepted)[0]
    assert t - t0 == (25 + 100 + 100 + 25) * MS
    (t_fill, _) = h.timed(FillReceived)[0]
    assert t_fill - t0 == (25 + 100 + 25) * MS  # the push does not wait for the answer


def test_rest_timeout_reports_unknown_outcome_and_half_the_placements_happened():
    h = Harness(STILL + "[rest]\ntimeout = 1.0\n")
    h.run(0.2)
    t0 = h.now
    ids = [h.place("buy", "0.01", tif="ioc") for _ in range(100)]
    h.submit(QueryPositions(request_id="q", product_ids=(ETH,)))
    h.run(4.0)
    errors = h.timed(VenueError)
    assert all(t - t0 == 3000 * MS for t, _ in errors)
    by_order = {e.order_id: e for _, e in errors if e.order_id}
    assert set(by_order) == set(ids)
    assert {e.error_class for e in by_order.values()} == {"unknown_outcome"}
    assert {e.request for e in by_order.values()} == {"place_order"}
    (query_err,) = [e for _, e in errors if e.request_id == "q"]
    assert query_err.error_class == "retryable"
    assert h.of(OrderAccepted) == []
    happened = {f.order_id for f in h.venue.fills()}
    assert 30 < len(happened) < 70
    assert h.venue.position(ETH) == Decimal("0.01") * len(happened)


def test_rest_rate_limit_windows_answer_429_code_1000_with_retry_after():
    h = Harness(STILL + "[rest]\nrate_limit = [{ at_s = 1, for_s = 2 }]\n")
    h.run(0.5)
    before = h.place("buy", "0.01", tif="ioc")
    h.run(1.0)  # t = 1.5 s: inside the window
    inside = h.place("buy", "0.01", tif="ioc")
    h.submit(QueryPositions(request_id="q", product_ids=(ETH,)))
    h.run(2.0)  # t = 3.5 s: after it
    after = h.place("buy", "0.01", tif="ioc")
    h.run(0.1)
    assert isinstance(h.about(before)[0], OrderAccepted)
    assert isinstance(h.about(after)[0], OrderAccepted)
    errors = h.of(VenueError)
    assert [(e.order_id, e.request_id) for e in errors] == [(inside, None), (None, "q")]
    for e in errors:
        assert (e.error_class, e.code) == ("rate_limited", 1000)
        assert e.retry_after_s == Decimal("1.475")  # arrived at 1.525 s, window ends at 3 s
    assert h.about(inside)[1:] == []  # nothing happened


# -- [venue] ---------------------------------------------------------------------------------
def test_venue_down_refuses_requests_and_cuts_the_stream():
    h = Harness(STILL + "[venue]\ndown = [{ at_s = 1, for_s = 2 }]\n")
    h.run(0.95)
    lost = h.place("buy", "0.01", tif="ioc")  # reaches the venue, the answer dies with it
    h.run(0.55)
    refused = h.place("buy", "0.01", tif="ioc")
    h.run(2.0)
    after = h.place("buy", "0.01", tif="ioc")
    h.run(2.0)
    conn = [(t, e.state, e.detail) for t, e in h.timed(ConnectionChanged)][1:]
    assert conn == [
        (1000 * MS, "disconnected", "venue down"),
        (3000 * MS, "connected", "venue back up"),
    ]
    assert not [e for t, e in eth_bbos(h) if 1000 * MS < t < 3000 * MS]
    assert [type(e) for e in h.about(lost)] == [VenueError]
    assert h.about(lost)[0].error_class == "unknown_outcome"
    assert [f.order_id for f in h.venue.fills()][:1] == [lost]  # it did happen
    assert h.about(refused)[0].error_class == "retryable"
    assert isinstance(h.about(after)[0], OrderAccepted)


def test_venue_position_lag_hides_fresh_fills_from_position_queries():
    h = Harness(STILL + "[venue]\nposition_lag_ms = 500\n")
    h.run(0.2)
    h.place("buy", "1", tif="ioc")
    h.run(0.1)
    h.submit(QueryPositions(request_id="early", product_ids=(ETH,)))
    h.run(0.6)
    h.submit(QueryPositions(request_id="late", product_ids=(ETH,)))
    h.run(0.1)
    seen = {e.request_id: e.positions[0].qty for e in h.of(PositionSnapshot)}
    assert seen == {"early": 0, "late": 1}
    assert h.venue.position(ETH) == 1  # ground truth is never lagged


# -- [market] --------------------------------------------------------------------------------
def test_market_volatility_moves_the_quotes():
    still, moving = Harness(STILL), Harness("[market]\nvolatility_bps_per_sqrt_s = 20\n")
    still.run(5.0)
    moving.run(5.0)
    assert len({e.bid for _, e in eth_bbos(still)}) == 1
    assert len({e.bid for _, e in eth_bbos(moving)}) > 20


def test_market_stale_bbo_repeats_an_old_quote_with_its_old_timestamp():
    h = Harness("[market]\nstale_bbo = 1.0\n")
    h.run(1.0)
    stamps = [e.ts_venue_ns for _, e in eth_bbos(h)]
    assert stamps == [0] + [i * 100 * MS for i in range(9)]
    half = Harness("[market]\nstale_bbo = 0.5\n")
    half.run(10.0)
    assert 60 < half.venue.stats["stale_bbo"] < 140


def test_market_crossed_bbo_pushes_ask_below_bid():
    h = Harness("[market]\ncrossed_bbo = 1.0\n")
    h.run(1.0)
    assert all(e.ask < e.bid for _, e in h.timed(BboUpdated))
    calm = Harness()
    calm.run(1.0)
    assert all(e.ask > e.bid for _, e in calm.timed(BboUpdated))


def test_market_jumps_move_one_product_at_their_time():
    h = Harness(
        "[market]\nvolatility_bps_per_sqrt_s = 0\n"
        'jumps = [{ at_s = 2, bps = -500, product = "SOL-PERP" }]\n'
    )
    h.run(3.0)
    sol = [e for e in h.of(BboUpdated) if e.product_id == SOL]
    before = [(e.bid + e.ask) / 2 for e in sol if e.ts_venue_ns < 2000 * MS]
    after = [(e.bid + e.ask) / 2 for e in sol if e.ts_venue_ns >= 2000 * MS]
    assert set(before) == {Decimal(150)}
    assert all(abs(m - Decimal("142.5")) < Decimal("0.02") for m in after)
    assert {e.bid for _, e in eth_bbos(h)} == {eth_bbos(h)[0][1].bid}


def test_market_bbo_is_pushed_only_when_the_top_of_book_changes():
    # A quiet stretch from 1 s to 3 s: nothing moves, so nothing is pushed (Nado sends
    # best_bid_offer when the book changes); outside it every market step moves the top.
    h = Harness("[market]\nquiet = [{ at_s = 1, for_s = 2 }]\n", symbols=["ETH-PERP"])
    h.run(4.0)
    stamps = [e.ts_venue_ns for _, e in eth_pushes(h) if e.ts_venue_ns is not None]
    assert not [t for t in stamps if 1000 * MS < t < 3000 * MS]
    assert len([t for t in stamps if t <= 1000 * MS]) >= 8
    assert len([t for t in stamps if t >= 3000 * MS]) >= 8
    tops = [(e.bid, e.bid_qty, e.ask, e.ask_qty) for _, e in eth_pushes(h)]
    assert all(a != b for a, b in itertools.pairwise(tops))  # never a repeat
    assert h.venue.exchange.mid(ETH) != Decimal(3000)  # the market moved outside it
    # Meanwhile the adapter side confirmed the quiet quote by REST (a second of silence,
    # quiet_quote_s), and only then: the quiet top, unchanged.
    asked = eth_confirmations(h)
    assert asked
    assert all(1000 * MS < t <= 3000 * MS + 50 * MS for t, _ in asked)
    quiet_top = [(e.bid, e.ask) for t, e in eth_pushes(h) if t <= 1000 * MS][-1]
    assert {(e.bid, e.ask) for t, e in asked if t < 3000 * MS} == {quiet_top}


def test_market_quiet_book_changes_only_by_our_own_orders():
    h = Harness(
        STILL + "quiet = [{ at_s = 0, for_s = 60 }]\n[sim]\nmaker_fill_rate_per_s = 0\n",
        symbols=["ETH-PERP"],
    )
    h.run(1.0)
    first = eth_pushes(h)
    assert len(first) <= 1  # at most the first look at the book
    b = h.bbo()
    h.place("buy", "1", b.bid + Decimal("0.1"), "post_only")  # a better bid: the top moves
    h.run(1.0)
    after = eth_pushes(h, since=first[-1][0] + 1 if first else 0)
    assert [(e.bid, e.bid_qty) for _, e in after] == [(b.bid + Decimal("0.1"), Decimal(1))]
    assert h.venue.exchange.mid(ETH) == Decimal(3000)
    # The adapter's REST confirmations of the quiet quote tell the same top, never another.
    asked = eth_confirmations(h)
    assert asked
    assert {e.bid for _, e in asked} <= {b.bid, b.bid + Decimal("0.1")}


def test_market_bbo_push_periodic_repeats_an_unchanged_quote():
    h = Harness(
        '[market]\nbbo_push = "periodic"\nquiet = [{ at_s = 0, for_s = 60 }]\n',
        symbols=["ETH-PERP"],
    )
    h.run(1.0)
    pushes = eth_bbos(h)
    assert len(pushes) == 10  # every bbo_interval_ms, changed or not
    assert len({(e.bid, e.bid_qty, e.ask, e.ask_qty) for _, e in pushes}) == 1


# -- [sim] -----------------------------------------------------------------------------------
def test_sim_latencies_fees_and_timeout_are_configurable():
    # bbo_interval_ms is the cadence of the periodic push (the default pushes on change)
    h = Harness(
        STILL + 'bbo_push = "periodic"\n'
        "[sim]\nrequest_latency_ms = 10\nresponse_latency_ms = 30\npush_latency_ms = 5\n"
        "taker_fee_bps = 5\nbbo_interval_ms = 250\n"
    )
    h.run(0.3)
    t0 = h.now
    oid = h.place("buy", "1", tif="ioc")
    h.run(0.1)
    (t_acc, _) = h.timed(OrderAccepted)[0]
    (t_fill, fill) = h.timed(FillReceived)[0]
    assert fill.order_id == oid
    assert (t_acc - t0, t_fill - t0) == (40 * MS, 15 * MS)  # the push beats the answer
    assert fill.fee == (fill.price * Decimal("0.0005")).quantize(Decimal("1e-8")).normalize()
    stamps = [e.ts_venue_ns for _, e in eth_bbos(h)]
    assert stamps[:2] == [0, 250 * MS]


def test_sim_request_timeout_bounds_a_slow_cancel():
    h = Harness(QUIET + "[orders]\ncancel_delay_ms = [5000, 5000]\n")
    h.run(0.2)
    oid = h.place("buy", "1", h.bbo().bid - 5, "default")
    h.run(0.1)
    t0 = h.now
    h.submit(CancelOrder(order_id=oid, product_id=ETH))
    h.run(6.0)
    (t, err) = h.timed(VenueError)[0]
    assert (t - t0, err.error_class, err.request) == (3000 * MS, "unknown_outcome", "cancel_order")
    assert h.of(OrderCancelled) == []
    assert h.venue.open_orders() == []  # it did take effect, later
    h.submit(QueryOrder(request_id="s", order_id=oid, product_id=ETH))
    h.run(0.1)
    assert h.of(OrderStatus)[0].state == "cancelled"
