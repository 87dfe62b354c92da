"""The exchange core on its own: matching per order type, reduce-only, depth, fees, PnL."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest

from adapters.sim.exchange import Exchange
from adapters.sim.faults import parse_profile
from adapters.sim.products import resolve
from adapters.sim.records import FillRecord
from adapters.sim.records import OrderRequest
from adapters.sim.records import OrderUpdateRecord
from adapters.sim.records import PositionChangeRecord

S = 1_000_000_000
ETH, SOL = 4, 8
STILL = "[market]\nvolatility_bps_per_sqrt_s = 0\n"
# Funded subaccounts: an owner's "default" subaccount has deposits (`[sim] funded`).
A = "0x" + "aa" * 20 + b"default".hex().ljust(24, "0")
B = "0x" + "bb" * 20 + b"default".hex().ljust(24, "0")


def make(extra: str = "", seed: int = 1) -> Exchange:
    ex = Exchange(resolve(["ETH-PERP", "SOL-PERP"]), seed=seed, profile=parse_profile(extra))
    ex.advance_to(S)
    ex.drain()
    return ex


def order(side="buy", qty="1", price="3000", tif="ioc", pid=ETH, reduce_only=False, nonce=0):
    return OrderRequest(
        subaccount=A,
        product_id=pid,
        side=side,
        qty=Decimal(qty),
        price=Decimal(price),
        order_type=tif,
        reduce_only=reduce_only,
        nonce=nonce,
        client_id=f"o{nonce}",
    )


def fills(records) -> list[FillRecord]:
    return [r for r in records if isinstance(r, FillRecord)]


def updates(records) -> list[OrderUpdateRecord]:
    return [r for r in records if isinstance(r, OrderUpdateRecord)]


def test_ioc_walks_the_book_level_by_level_and_expires_the_rest():
    ex = make(STILL + "[sim]\nlevel_usd = 3000\nbook_levels = 3\n")
    _, asks = ex.depth(ETH)
    depth = sum(q for _, q in asks)
    limit = asks[-1][0] + 1
    res = ex.place(ex.now_ns, order(qty=str(depth + 5), price=str(limit), tif="ioc"))
    assert res.ok
    recs = ex.drain()
    fs = fills(recs)
    assert [(f.price, f.qty) for f in fs] == asks  # one fill per level, best first
    assert all(f.is_taker and f.side == "buy" for f in fs)
    assert fs[-1].cumulative == depth
    assert fs[-1].remaining == 5
    assert all(f.original == depth + 5 for f in fs)
    # Nado: one `filled` update per match with the size still unfilled, then the IOC's
    # remainder ends (0, cancelled); never `placed` (nothing rests).
    ups = updates(recs)
    assert [(u.reason, u.remaining) for u in ups] == [
        *(("filled", depth + 5 - f.cumulative) for f in fs),
        ("cancelled", 0),
    ]
    assert ups[-1].cause == "ioc_remainder"
    assert ex.order(res.digest).state == "expired"
    assert ex.position(A, ETH).qty == depth


def test_ioc_that_crosses_nothing_is_accepted_then_expires_with_zero_fill():
    ex = make(STILL)
    bid = ex.bbo(ETH).bid
    res = ex.place(ex.now_ns, order(price=str(bid), tif="ioc"))
    assert res.ok
    recs = ex.drain()
    assert fills(recs) == []
    assert [(u.reason, u.remaining) for u in updates(recs)] == [("cancelled", 0)]
    assert updates(recs)[-1].cause == "ioc_remainder"
    assert ex.order(res.digest).state == "expired"
    assert ex.order(res.digest).filled == 0


def test_ioc_against_an_eaten_book_gets_nothing_until_it_refills():
    ex = make(STILL + "[sim]\nlevel_usd = 3000\nbook_levels = 2\nbook_refill_s = 2\n")
    _, asks = ex.depth(ETH)
    top = asks[-1][0] + 1
    ex.place(ex.now_ns, order(qty="100", price=str(top), nonce=1))
    assert ex.depth(ETH)[1] == []
    assert ex.bbo(ETH).ask == 0
    ex.drain()
    ex.place(ex.now_ns, order(qty="0.5", price=str(top), nonce=2))
    assert fills(ex.drain()) == []
    ex.advance_to(ex.now_ns + 2 * S)
    assert ex.depth(ETH)[1]  # grown back
    ex.place(ex.now_ns, order(qty="0.5", price=str(ex.bbo(ETH).ask + 1), nonce=3))
    assert sum(f.qty for f in fills(ex.drain())) == Decimal("0.5")


def test_default_rests_and_fills_as_maker_when_the_market_moves_through_it():
    ex = make(
        "[market]\nvolatility_bps_per_sqrt_s = 0\n"
        'jumps = [{ at_s = 3, bps = -30, product = "ETH-PERP" }]\n'
        "[sim]\nmaker_fill_rate_per_s = 0\n"
    )
    price = ex.bbo(ETH).bid - 2
    res = ex.place(ex.now_ns, order(qty="2", price=str(price), tif="default"))
    assert [u.reason for u in updates(ex.drain())] == ["placed"]
    assert [o.digest for o in ex.open_orders(A)] == [res.digest]
    ex.advance_to(2 * S)
    assert fills(ex.drain()) == []
    ex.advance_to(3 * S)  # mid drops 30 bps (~9 USD): the crowd's ask crosses our bid
    fs = fills(ex.drain())
    maker_fee = (price * 2 * Decimal("0.0001")).quantize(Decimal("1e-8"))  # Nado's 1 bp
    assert [(f.price, f.qty, f.is_taker, f.fee, f.remaining) for f in fs] == [
        (price, Decimal(2), False, maker_fee, 0)
    ]
    assert ex.order(res.digest).state == "filled"
    assert ex.open_orders(A) == []


def test_default_takes_what_crosses_and_rests_the_remainder():
    ex = make(STILL + "[sim]\nlevel_usd = 3000\nbook_levels = 1\nmaker_fill_rate_per_s = 0\n")
    ask, ask_qty = ex.depth(ETH)[1][0]
    res = ex.place(ex.now_ns, order(qty=str(ask_qty + 1), price=str(ask), tif="default"))
    recs = ex.drain()
    fs = fills(recs)
    assert [(f.qty, f.remaining) for f in fs] == [(ask_qty, Decimal(1))]
    # the match first, then `placed` for the remainder that rests
    assert [(u.reason, u.remaining) for u in updates(recs)] == [
        ("filled", Decimal(1)),
        ("placed", Decimal(1)),
    ]
    assert ex.order(res.digest).state == "open"
    assert ex.open_orders(A)[0].remaining == 1
    assert ex.bbo(ETH).bid == ask  # our order is now the best bid


def test_fok_is_all_or_nothing():
    # Nado's docs: a FOK that cannot fill is accepted, then cancelled with no fill.
    ex = make(STILL + "[sim]\nlevel_usd = 3000\nbook_levels = 2\n")
    _, asks = ex.depth(ETH)
    depth = sum(q for _, q in asks)
    limit = str(asks[-1][0])
    res = ex.place(ex.now_ns, order(qty=str(depth + 1), price=limit, tif="fok", nonce=1))
    assert res.ok
    recs = ex.drain()
    assert fills(recs) == []
    assert [(u.reason, u.remaining, u.cause) for u in updates(recs)] == [
        ("cancelled", 0, "fok_unfilled")
    ]
    res = ex.place(ex.now_ns, order(qty=str(depth), price=limit, tif="fok", nonce=2))
    assert res.ok
    recs = ex.drain()
    assert sum(f.qty for f in fills(recs)) == depth
    assert updates(recs)[-1].reason == "filled"
    assert updates(recs)[-1].remaining == 0
    assert ex.order(res.digest).state == "filled"


def test_fok_unfillable_can_be_rejected_instead():
    ex = make(STILL + '[sim]\nlevel_usd = 3000\nbook_levels = 2\nfok_unfillable = "reject"\n')
    res = ex.place(ex.now_ns, order(qty="50", price=str(ex.bbo(ETH).ask + 1), tif="fok"))
    assert (res.ok, res.code) == (False, 2031)
    assert ex.drain() == []


def test_post_only_that_would_cross_is_rejected_2008_and_one_that_does_not_rests():
    ex = make(STILL)
    bbo = ex.bbo(ETH)
    res = ex.place(ex.now_ns, order(price=str(bbo.ask), tif="post_only", nonce=1))
    assert (res.ok, res.code) == (False, 2008)
    assert "post only" in res.error
    res = ex.place(ex.now_ns, order(price=str(bbo.bid), tif="post_only", nonce=2))
    assert res.ok
    assert ex.order(res.digest).state == "open"
    assert fills(ex.drain()) == []


def test_post_only_crossing_a_resting_user_order_is_rejected_too():
    ex = make(STILL + "[sim]\nmaker_fill_rate_per_s = 0\n")
    bbo = ex.bbo(ETH)
    inside = bbo.ask - Decimal("0.1")
    assert ex.place(ex.now_ns, order(side="sell", price=str(inside), tif="post_only")).ok
    res = ex.place(ex.now_ns, order(price=str(inside), tif="post_only", nonce=1))
    assert res.code == 2008


def test_reduce_only_is_rejected_without_a_position_to_reduce():
    ex = make(STILL)
    res = ex.place(ex.now_ns, order(side="sell", price=str(ex.bbo(ETH).bid), reduce_only=True))
    assert (res.ok, res.code) == (False, 2019)
    assert "reduce-only" in res.error


def test_reduce_only_fills_only_up_to_the_position_and_never_flips_it():
    ex = make(STILL)
    ex.place(ex.now_ns, order(qty="1", price=str(ex.bbo(ETH).ask + 5), nonce=1))
    assert ex.position(A, ETH).qty == 1
    same_way = ex.place(ex.now_ns, order(price=str(ex.bbo(ETH).ask), reduce_only=True, nonce=2))
    assert same_way.code == 2019
    ex.drain()
    bid = ex.bbo(ETH).bid
    res = ex.place(ex.now_ns, order("sell", "3", str(bid - 5), reduce_only=True, nonce=3))
    assert res.ok
    recs = ex.drain()
    assert sum(f.qty for f in fills(recs)) == 1
    assert ex.position(A, ETH).qty == 0
    assert ex.order(res.digest).state == "expired"
    assert ex.order(res.digest).filled == 1


def test_reduce_only_fok_larger_than_the_position_is_rejected():
    ex = make(STILL)
    ex.place(ex.now_ns, order(qty="1", price=str(ex.bbo(ETH).ask + 5), nonce=1))
    bid = ex.bbo(ETH).bid
    res = ex.place(ex.now_ns, order("sell", "2", str(bid - 5), "fok", reduce_only=True, nonce=2))
    assert res.ok  # accepted, then cancelled unfilled (Nado's FOK)
    assert ex.order(res.digest).filled == 0
    assert ex.position(A, ETH).qty == 1


def test_resting_reduce_only_is_cancelled_once_the_position_is_gone():
    ex = make(STILL + "[sim]\nmaker_fill_rate_per_s = 0\n")
    ex.place(ex.now_ns, order(qty="1", price=str(ex.bbo(ETH).ask + 5), nonce=1))
    far = ex.bbo(ETH).ask + 20
    res = ex.place(ex.now_ns, order("sell", "1", str(far), "default", reduce_only=True, nonce=2))
    assert ex.order(res.digest).state == "open"
    ex.place(ex.now_ns, order("sell", "1", str(ex.bbo(ETH).bid - 5), nonce=3))  # flat now
    ex.drain()
    ex.advance_to(ex.now_ns + S)
    assert ex.order(res.digest).state == "cancelled"
    assert updates(ex.drain())[-1].cause == "reduce_only"


def test_taker_fee_maker_fee_and_the_min_size_rule():
    ex = make(STILL + "[sim]\ntaker_fee_bps = 2\nmaker_fee_bps = -1\nmaker_fill_rate_per_s = 0\n")
    ask = ex.bbo(ETH).ask
    ex.place(ex.now_ns, order(qty="1", price=str(ask + 5), nonce=1))
    (f,) = fills(ex.drain())
    assert f.fee == (f.price * f.qty * Decimal("0.0002")).quantize(Decimal("1e-8"))
    # A tiny taker pays on at least min_size (10 USD) notional on its first match.
    ex.place(ex.now_ns, order(qty="0.001", price=str(ask + 5), nonce=2))
    (small,) = fills(ex.drain())
    assert small.fee == Decimal("0.002")
    acct = ex.position(A, ETH)
    assert acct.fees == f.fee + small.fee
    # A maker rebate is a negative fee. (Inside the spread: no crowd queued ahead of it.)
    inside = ex.bbo(ETH).ask - Decimal("0.1")
    res = ex.place(ex.now_ns, order("sell", "1", str(inside), "post_only", nonce=3))
    ex.place(ex.now_ns, order("buy", "1", str(ex.order(res.digest).price), "ioc", pid=ETH, nonce=4))
    maker = [x for x in fills(ex.drain()) if not x.is_taker]
    assert maker[0].fee == -(maker[0].price * Decimal("0.0001")).quantize(Decimal("1e-8"))


def test_realised_pnl_and_average_entry():
    ex = make(STILL)
    a1 = ex.bbo(ETH).ask
    ex.place(ex.now_ns, order(qty="1", price=str(a1 + 5), nonce=1))
    ex.place(ex.now_ns, order(qty="1", price=str(a1 + 5), nonce=2))
    prices = [f.price for f in fills(ex.drain())]
    pos = ex.position(A, ETH)
    assert pos.qty == 2
    assert pos.entry == sum(prices) / 2
    bid = ex.bbo(ETH).bid
    ex.place(ex.now_ns, order("sell", "3", str(bid - 5), nonce=3))
    (sell,) = [f for f in fills(ex.drain()) if f.side == "sell"]
    pos = ex.position(A, ETH)
    assert pos.qty == -1
    assert pos.realized_pnl == (sell.price - sum(prices) / 2) * 2
    assert pos.entry == sell.price  # flipped short: the rest opened at the sell price


def test_position_change_records_carry_the_new_balance():
    ex = make(STILL)
    ex.place(ex.now_ns, order(qty="1", price=str(ex.bbo(ETH).ask + 5)))
    (pc,) = [r for r in ex.drain() if isinstance(r, PositionChangeRecord)]
    assert pc.amount == 1


@pytest.mark.parametrize(
    ("req", "code", "text"),
    [
        (order(price="3000.05"), 2001, "invalid price"),
        (order(qty="0.0005"), 2002, "invalid amount: not divisible"),
        (order(qty="0"), 2003, "invalid amount: zero"),
        (order(price="2000"), 2007, "oracle"),
        (order(qty="0.001", tif="default"), 2004, "too small"),
        (order(pid=99), 2015, "product"),
    ],
)
def test_placement_validation(req, code, text):
    ex = make(STILL)
    res = ex.place(ex.now_ns, req)
    assert (res.ok, res.code) == (False, code)
    assert text in res.error


def test_min_size_does_not_apply_to_ioc():
    ex = make(STILL)
    assert ex.place(ex.now_ns, order(qty="0.001", price=str(ex.bbo(ETH).ask), tif="ioc")).ok


def test_same_order_fields_and_nonce_is_a_duplicate_digest():
    ex = make(STILL)
    req = order(price=str(ex.bbo(ETH).bid), tif="post_only", nonce=7)
    assert ex.place(ex.now_ns, req).ok
    assert ex.place(ex.now_ns, req).code == 2013
    assert ex.place(ex.now_ns, order(price=str(ex.bbo(ETH).bid), tif="post_only", nonce=8)).ok


def test_cancel_by_digest_and_by_product():
    ex = make(STILL + "[sim]\nmaker_fill_rate_per_s = 0\n")
    bid_e, bid_s = ex.bbo(ETH).bid - 1, ex.bbo(SOL).bid - Decimal("0.1")
    a = ex.place(ex.now_ns, order(price=str(bid_e), tif="default", nonce=1)).digest
    b = ex.place(ex.now_ns, order(qty="1", price=str(bid_s), pid=SOL, tif="default")).digest
    c = ex.place(ex.now_ns, order(price=str(bid_e), tif="default", nonce=3)).digest
    assert [o.digest for o in ex.cancel(ex.now_ns, A, [a, "0xnope"])] == [a]
    assert ex.cancel(ex.now_ns, A, [a]) == []
    assert ex.cancel(ex.now_ns, "0xother", [c]) == []
    assert [o.digest for o in ex.cancel_products(ex.now_ns, A, [SOL])] == [b]
    assert [o.digest for o in ex.cancel_products(ex.now_ns, A)] == [c]
    assert ex.open_orders(A) == []
    assert {ex.order(d).state for d in (a, b, c)} == {"cancelled"}


def test_resting_order_at_the_touch_gets_partial_maker_fills_from_taker_flow():
    ex = make(STILL + "[sim]\nmaker_fill_rate_per_s = 5\n")
    bid = ex.bbo(ETH).bid
    touch = ex.place(ex.now_ns, order(qty="5", price=str(bid), tif="post_only", nonce=1))
    behind = ex.place(ex.now_ns, order(qty="5", price=str(bid - 3), tif="post_only", nonce=2))
    ex.advance_to(ex.now_ns + 2 * S)
    fs = fills(ex.drain())
    assert fs
    assert {f.digest for f in fs} == {touch.digest}
    assert all(not f.is_taker and f.price == bid for f in fs)
    assert ex.order(behind.digest).filled == 0
    assert fs[0].qty < 5  # flow takes a part, not the whole order


def test_taker_matches_a_resting_user_order_before_the_crowd_at_the_same_price():
    ex = make(STILL + "[sim]\nmaker_fill_rate_per_s = 0\n")
    inside = ex.bbo(ETH).ask - Decimal("0.1")
    maker = OrderRequest(
        subaccount=B,
        product_id=ETH,
        side="sell",
        qty=Decimal(1),
        price=inside,
        order_type="post_only",
    )
    m = ex.place(ex.now_ns, maker).digest
    ex.drain()
    ex.place(ex.now_ns, order(qty="1.5", price=str(inside + 5)))
    fs = fills(ex.drain())
    assert (fs[0].price, fs[0].qty, fs[0].is_taker) == (inside, 1, True)
    assert (fs[1].digest, fs[1].is_taker) == (m, False)
    assert ex.position(B, ETH).qty == -1
    assert ex.position(A, ETH).qty == Decimal("1.5")


def test_history_is_bounded_but_open_orders_are_kept():
    ex = Exchange(resolve(["ETH-PERP"]), seed=1, profile=parse_profile(STILL), history_limit=5)
    ex.advance_to(S)
    bid = ex.bbo(ETH).bid
    keep = ex.place(ex.now_ns, order(price=str(bid - 5), tif="post_only", nonce=100)).digest
    for n in range(20):
        ex.place(ex.now_ns, order(price=str(bid), tif="ioc", nonce=n))
    assert ex.order(keep) is not None
    assert len(ex._orders) <= 5


def test_lagged_position_view_keeps_just_enough_history():
    from adapters.sim.accounts import Account

    acct = Account(A)
    ms = 1_000_000
    for i in range(10):
        acct.apply_fill(i * 100 * ms, ETH, "buy", Decimal(1), Decimal(3000), Decimal(0), 150 * ms)
    assert acct.view(ETH, 950 * ms, 150 * ms) == (Decimal(9), Decimal(3000))  # fills <= 800 ms
    assert acct.view(ETH, 2000 * ms, 150 * ms)[0] == 10
    assert acct.view(ETH, 2000 * ms, 0)[0] == 10
    assert len(acct._history[ETH]) <= 3


# -- accounts, margin, appendix extras ----------------------------------------------------
GHOST = "0x" + "aa" * 20 + b"unfunded".hex().ljust(24, "0")  # same owner, never funded


def test_a_never_funded_subaccount_is_refused_2024_unless_every_one_is_funded():
    ex = make(STILL)
    ask = str(ex.bbo(ETH).ask)
    res = ex.place(ex.now_ns, attrs.evolve(order(price=ask), subaccount=GHOST))
    assert (res.ok, res.code) == (False, 2024)
    assert not ex.funded(GHOST)
    assert ex.equity(GHOST) == 0
    assert ex.funded(A)
    assert ex.equity(A) == 1_000_000
    everyone = make(STILL + '[sim]\nfunded = "all"\n')
    assert everyone.place(everyone.now_ns, attrs.evolve(order(price=ask), subaccount=GHOST)).ok


def test_an_order_needing_more_initial_margin_than_the_account_has_is_refused_2006():
    ex = make(STILL + "[sim]\ncollateral = 1000\n")  # 1 000 USDT0: 10 000 USD of notional
    bid = ex.bbo(ETH).bid
    big = ex.place(ex.now_ns, order(qty="4", price=str(bid - 10), tif="default", nonce=1))
    assert (big.ok, big.code) == (False, 2006)
    ok = ex.place(ex.now_ns, order(qty="3", price=str(ex.bbo(ETH).ask + 1), nonce=2))
    assert ok.ok
    assert ex.position(A, ETH).qty == 3
    assert ex.initial_health(A) > 0
    more = ex.place(ex.now_ns, order(qty="1", price=str(ex.bbo(ETH).ask + 1), nonce=3))
    assert (more.ok, more.code) == (False, 2006)  # 4 ETH would need 1 200 of margin
    # reducing is always allowed, whatever the health
    out = ex.place(ex.now_ns, order("sell", "3", str(ex.bbo(ETH).bid - 1), nonce=4))
    assert out.ok
    assert ex.position(A, ETH).qty == 0


def test_a_builder_fee_is_charged_on_each_fill_and_isolated_orders_are_simulated_as_cross():
    ex = make(STILL + "[sim]\ntaker_fee_bps = 0\n")
    ask = ex.bbo(ETH).ask
    req = attrs.evolve(order(qty="1", price=str(ask)), builder_fee_rate=Decimal("0.0005"))
    assert ex.place(ex.now_ns, req).ok
    (fill,) = fills(ex.drain())
    assert fill.fee == (ask * Decimal("0.0005")).quantize(Decimal("1e-8")).normalize()
    iso = attrs.evolve(order(qty="1", price=str(ex.bbo(ETH).ask + 1), nonce=5), isolated=True)
    assert ex.place(ex.now_ns, iso).ok
    changes = [r for r in ex.drain() if isinstance(r, PositionChangeRecord)]
    assert [(c.amount, c.isolated) for c in changes] == [(Decimal(2), True)]
