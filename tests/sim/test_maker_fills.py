"""The maker fill model (adapters/sim/flow.py): queue position behind the crowd's size at a
level, seeded taker flow that eats the queue ahead first, price improvement with an empty
queue, trade-through fills, and maker fees on every maker fill."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.sim.exchange import Exchange
from adapters.sim.faults import FaultProfileError
from adapters.sim.faults import parse_profile
from adapters.sim.flow import level_queue
from adapters.sim.flow import sweep
from adapters.sim.products import resolve
from adapters.sim.records import FillRecord
from adapters.sim.records import OrderRequest
from adapters.sim.records import OrderUpdateRecord
from adapters.sim.records import SimOrder
from engine.core.events import FillReceived
from tests.sim.harness import Harness

S = 1_000_000_000
MS = 1_000_000
ETH = 4
TICK = Decimal("0.1")
A = "0x" + "aa" * 20 + b"default".hex().ljust(24, "0")
B = "0x" + "bb" * 20 + b"default".hex().ljust(24, "0")
STILL = "[market]\nvolatility_bps_per_sqrt_s = 0\n"
FEE = Decimal("1e-8")


def make(sim: str = "", seed: int = 1, market: str = "") -> Exchange:
    text = STILL + market + "[sim]\n" + sim
    ex = Exchange(resolve(["ETH-PERP", "SOL-PERP"]), seed=seed, profile=parse_profile(text))
    ex.advance_to(S)
    ex.drain()
    return ex


def req(side: str, qty: str, price: Decimal, tif: str = "post_only", sub: str = A, n: int = 0):
    return OrderRequest(
        subaccount=sub,
        product_id=ETH,
        side=side,
        qty=Decimal(qty),
        price=price,
        order_type=tif,
        nonce=n,
        client_id=f"o{n}",
    )


def fills(records) -> list[FillRecord]:
    return [r for r in records if isinstance(r, FillRecord)]


def rest(ex: Exchange, side: str, qty: str, price: Decimal, n: int, sub: str = A) -> SimOrder:
    res = ex.place(ex.now_ns, req(side, qty, price, sub=sub, n=n))
    assert res.ok, res
    order = ex.order(res.digest or "")
    assert order is not None
    assert order.state == "open"
    return order


def maker_fee(ex: Exchange, f: FillRecord) -> Decimal:
    return (f.price * f.qty * ex.maker_rate).quantize(FEE)


# -- the queue, pure ----------------------------------------------------------------------


def _order(seq: int, price: str, qty: str, ahead: str, side: str = "buy") -> SimOrder:
    r = req(side, qty, Decimal(price), n=seq)
    return SimOrder(digest=f"d{seq}", request=r, placed_ns=0, seq=seq, queue_ahead=Decimal(ahead))


def test_a_level_is_the_crowd_ahead_then_each_order_then_the_crowd_behind():
    first, second = _order(1, "100", "2", "3"), _order(2, "100", "1", "5")
    queue = level_queue(Decimal(8), [second, first])  # sorted by arrival inside
    assert queue == [
        (Decimal(3), None),
        (Decimal(2), first),
        (Decimal(2), None),  # crowd between them: 5 ahead of the second, 3 already placed
        (Decimal(1), second),
        (Decimal(3), None),
    ]
    # More ahead than the level shows counts as what it shows (cancels ahead).
    assert level_queue(Decimal(1), [first])[0] == (Decimal(1), None)


def test_a_sweep_eats_better_levels_then_the_queue_ahead_then_the_order():
    touch = _order(1, "100", "2", "3")
    behind = _order(2, "99", "1", "0")  # a worse bid, with nothing queued at its price
    crowd = [(Decimal(100), Decimal(5)), (Decimal("99.5"), Decimal(4))]
    assert sweep("bid", crowd, [touch, behind], Decimal(4)) == [
        (Decimal(100), Decimal(3), None),
        (Decimal(100), Decimal(1), touch),
    ]
    # Big enough: through our touch order, the rest of its level, the level below, then
    # the order behind; nothing deeper is walked.
    out = sweep("bid", crowd, [touch, behind], Decimal(100))
    assert [(p, q, m) for p, q, m in out] == [
        (Decimal(100), Decimal(3), None),
        (Decimal(100), Decimal(2), touch),
        (Decimal(100), Decimal(2), None),
        (Decimal("99.5"), Decimal(4), None),
        (Decimal(99), Decimal(1), behind),
    ]
    assert sweep("bid", crowd, [], Decimal(100)) == []


# -- in the exchange ------------------------------------------------------------------------


def test_an_order_joining_a_level_queues_behind_the_size_shown_there():
    ex = make("maker_fill_rate_per_s = 0\n")
    bids, _ = ex.depth(ETH)
    (best, shown), (second, shown2) = bids[0], bids[1]
    at_touch = rest(ex, "buy", "1", best, 1)
    deeper = rest(ex, "buy", "1", second, 2)
    inside = rest(ex, "buy", "1", best + TICK, 3)
    assert (at_touch.queue_ahead, deeper.queue_ahead, inside.queue_ahead) == (shown, shown2, 0)


def test_taker_flow_eats_the_queue_ahead_before_the_order():
    ex = make("maker_fill_rate_per_s = 5\ntaker_flow_mean_usd = 2000\n")
    best, shown = ex.depth(ETH)[0][0]
    order = rest(ex, "buy", "1", best, 1)
    assert order.queue_ahead == shown > 1
    seen: list[tuple[Decimal, Decimal]] = []
    for _ in range(2000):  # 20 s in 10 ms steps
        ex.advance_to(ex.now_ns + 10 * MS)
        seen.append((order.queue_ahead, order.filled))
        if order.state == "filled":
            break
    aheads = [a for a, _ in seen]
    assert aheads == sorted(aheads, reverse=True)  # the queue ahead only shrinks
    assert all(a == 0 for a, filled in seen if filled > 0)  # no fill while anyone is ahead
    waited = [a for a, filled in seen if filled == 0]
    assert len(waited) > 10
    assert waited[-1] < shown
    assert order.state == "filled"
    fs = fills(ex.drain())
    assert {(f.price, f.is_taker) for f in fs} == {(best, False)}
    assert sum(f.qty for f in fs) == 1
    assert all(f.fee == maker_fee(ex, f) for f in fs)


def test_price_improvement_inside_the_spread_has_an_empty_queue_and_fills_first():
    ex = make("maker_fill_rate_per_s = 2\ntaker_flow_mean_usd = 1000\n")
    best = ex.bbo(ETH).bid
    at_touch = rest(ex, "buy", "1", best, 1)
    inside = rest(ex, "buy", "1", best + TICK, 2)
    assert inside.queue_ahead == 0 < at_touch.queue_ahead
    while inside.filled == 0:
        ex.advance_to(ex.now_ns + 10 * MS)
        assert ex.now_ns < 30 * S
    assert at_touch.filled == 0  # still behind the crowd's queue at the touch
    first = fills(ex.drain())[0]
    assert (first.digest, first.price, first.is_taker) == (inside.digest, best + TICK, False)


def test_the_market_trading_through_the_level_fills_the_order_in_full_at_its_price():
    jump = 'jumps = [{ at_s = 3, bps = -30, product = "ETH-PERP" }]\n'
    ex = make("maker_fill_rate_per_s = 0\n", market=jump)
    bids, _ = ex.depth(ETH)
    price = bids[2][0]  # two levels behind the touch, a full queue ahead of it
    order = rest(ex, "buy", "2", price, 1)
    assert order.queue_ahead > 0
    ex.advance_to(2 * S)
    assert fills(ex.drain()) == []
    ex.advance_to(3 * S)  # the mid drops ~9 USD: the crowd's ask is now below our bid
    (f,) = fills(ex.drain())
    assert (f.price, f.qty, f.is_taker, f.remaining) == (price, 2, False, 0)
    assert f.fee == maker_fee(ex, f)
    assert order.state == "filled"


def test_a_user_taker_at_the_level_trades_with_the_crowd_ahead_first():
    ex = make("maker_fill_rate_per_s = 0\n")
    ask, shown = ex.depth(ETH)[1][0]
    mine = rest(ex, "sell", "1", ask, 1)
    half = (shown / 2).quantize(Decimal("0.001"))
    ex.place(ex.now_ns, req("buy", str(half), ask, "ioc", sub=B, n=2))
    assert [f.digest for f in fills(ex.drain()) if not f.is_taker] == []
    assert mine.queue_ahead == shown - half
    ex.place(ex.now_ns, req("buy", str(shown - half + Decimal("0.4")), ask, "ioc", sub=B, n=3))
    made = [f for f in fills(ex.drain()) if not f.is_taker]
    assert [(f.digest, f.qty, f.price) for f in made] == [(mine.digest, Decimal("0.4"), ask)]
    assert mine.queue_ahead == 0


def test_taker_flow_partial_fills_are_maker_fills_with_the_maker_fee():
    ex = make("maker_fill_rate_per_s = 5\ntaker_flow_mean_usd = 1000\n")
    inside = ex.bbo(ETH).ask - TICK
    order = rest(ex, "sell", "3", inside, 1)
    ex.drain()
    ex.advance_to(ex.now_ns + 5 * S)
    recs = ex.drain()
    fs = fills(recs)
    assert len(fs) >= 3
    assert all(f.qty < 3 for f in fs)
    assert all(not f.is_taker and f.price == inside and f.fee == maker_fee(ex, f) for f in fs)
    left = [3 - sum(x.qty for x in fs[: i + 1]) for i in range(len(fs))]
    assert [f.remaining for f in fs] == left
    ups = [u for u in recs if isinstance(u, OrderUpdateRecord)]
    assert [u.reason for u in ups] == ["filled"] * len(fs)
    assert ex.position(A, ETH).fees == sum(f.fee for f in fs)
    assert order.filled == sum(f.qty for f in fs)


def test_the_engine_hears_taker_flow_fills_as_maker_fills_with_the_maker_fee():
    h = Harness(STILL + "[sim]\nmaker_fill_rate_per_s = 5\ntaker_flow_mean_usd = 1000\n")
    h.run(0.5)
    price = h.bbo().bid + TICK
    oid = h.place("buy", "2", price, "post_only")
    h.run(5.0)
    got = [e for e in h.about(oid) if isinstance(e, FillReceived)]
    assert len(got) >= 2
    assert all(f.is_maker and f.price == price for f in got)
    rate = h.venue.exchange.maker_rate
    assert all(f.fee == (f.price * f.qty * rate).quantize(FEE) for f in got)
    assert h.venue.fees_paid() == sum(f.fee for f in got)
    h.close()


def test_taker_flow_fills_are_pushed_when_they_match_not_at_the_next_market_step():
    # A fill is one `fill` event per match (nado-protocol.md §9.2): the engine hears a
    # taker-flow fill one push latency (25 ms) after the match, wherever the arrival
    # falls between the 100 ms market steps (it used to wait for the next step: up to
    # 100 ms more, which the maker_first hedge latency paid; bench_execution_cost).
    h = Harness(STILL + "[sim]\nmaker_fill_rate_per_s = 5\ntaker_flow_mean_usd = 1000\n")
    h.run(0.5)
    price = h.bbo().bid + TICK
    oid = h.place("buy", "2", price, "post_only")
    h.run(5.0)
    got = [(t, e) for t, e in h.timed(FillReceived) if e.order_id == oid]
    assert len(got) >= 2
    step = 100 * MS
    assert any((e.ts_venue_ns or 0) % step for _, e in got)  # some matched between steps
    assert all(t - (e.ts_venue_ns or 0) == 25 * MS for t, e in got)
    h.close()


def _run(seed: int, hops: int) -> list[tuple[int, Decimal, Decimal]]:
    ex = make("maker_fill_rate_per_s = 3\ntaker_flow_mean_usd = 1500\n", seed=seed)
    for n, side in enumerate(("buy", "sell")):
        b = ex.bbo(ETH)
        rest(ex, side, "2", b.bid if side == "buy" else b.ask, n)
    end = ex.now_ns + 20 * S
    while ex.now_ns < end:
        ex.advance_to(min(end, ex.now_ns + (20 * S) // hops))
    return [(f.ts_ns, f.qty, f.price) for f in fills(ex.drain())]


def test_taker_flow_is_deterministic_per_seed_and_blind_to_how_often_anyone_looks():
    once = _run(seed=3, hops=1)
    assert once  # flow reached the orders
    assert _run(seed=3, hops=1) == once
    assert _run(seed=3, hops=997) == once  # the arrivals do not depend on the callers
    assert _run(seed=4, hops=1) != once


def test_flow_knobs_are_validated_with_their_key_path():
    p = parse_profile("[sim]\ntaker_flow_mean_usd = 250\ntaker_flow_max_usd = 900\n")
    assert (p.sim.taker_flow_mean_usd, p.sim.taker_flow_max_usd) == (250, 900)
    # Nado's published entry tier (docs.nado.xyz "Fees & Rebates"; ccxt's nado.json).
    assert (p.sim.maker_fee_bps, p.sim.taker_fee_bps) == (1, Decimal("3.5"))
    for bad, where in (
        ("taker_flow_mean_usd = 0", "sim.taker_flow_mean_usd: must be > 0"),
        ("taker_flow_max_usd = -1", "sim.taker_flow_max_usd: must be > 0"),
        ("maker_fill_rate_per_s = 5000", "sim.maker_fill_rate_per_s: must be <= 1000"),
        ('taker_flow_mean_usd = "x"', "sim.taker_flow_mean_usd: expected a number"),
    ):
        with pytest.raises(FaultProfileError, match=where):
            parse_profile(f"[sim]\n{bad}\n")
