"""UNWIND against a scripted venue on the virtual clock: one scenario per row."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.core.events import FillReceived
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from machines.position_work import PositionWork
from tests.unit.machines.fakes import MS
from tests.unit.machines.fakes import Error
from tests.unit.machines.fakes import Fill
from tests.unit.machines.fakes import S
from tests.unit.machines.fakes import assert_ledger_tracks_venue
from tests.unit.machines.fakes import assert_unknown_resolved_before_resend
from tests.unit.machines.fakes import catch_alls
from tests.unit.machines.fakes import notes
from tests.unit.machines.fakes import outcome
from tests.unit.machines.fakes import params
from tests.unit.machines.fakes import run_chaos
from tests.unit.machines.fakes import spawn

D = Decimal
ETH, SOL = 4, 8
BUILT = {ETH: D("0.333"), SOL: D("-6.66")}


def unwind(p=None, positions=None, **kw):
    venue = {"positions": BUILT if positions is None else positions, **kw.pop("venue", {})}
    return spawn(
        PositionWork,
        p or params(),
        venue=venue,
        query_first=False,
        adopt=True,
        purpose="unwind",
        **kw,
    )


def kinds(fake):
    return [type(i).__name__ for i in fake.sent]


def assert_ledger_matches_venue(engine, fake):
    for pid in (ETH, SOL):
        assert engine.ledger.position(pid) == fake.positions.get(pid, 0)


def test_unwind_ioc_reads_the_venue_first_closes_reduce_only_and_verifies_flat():
    engine, fake = unwind()
    assert outcome(engine) == "done"
    assert kinds(fake) == ["QueryPositions", "PlaceOrder", "PlaceOrder", "QueryPositions"]
    sell, buy = fake.of(PlaceOrder)
    assert (sell.product_id, sell.side, sell.qty, sell.price, sell.tif, sell.reduce_only) == (
        ETH,
        "sell",
        D("0.333"),
        D("2997"),  # bid 3000 x (1 - 10 bps), down to the tick
        "ioc",
        True,
    )
    assert (buy.product_id, buy.side, buy.qty, buy.price, buy.reduce_only) == (
        SOL,
        "buy",
        D("6.66"),
        D("150.18"),  # ask 150.02 x 1.001 = 150.17002, up to the tick
        True,
    )
    assert fake.positions == {ETH: 0, SOL: 0}


def test_unwind_sizes_from_the_verified_position_not_the_original_order():
    # The venue holds less than the build asked for (say a fill was never reported).
    engine, fake = unwind(positions={ETH: D("0.3"), SOL: D("-6.5")})
    assert [o.qty for o in fake.of(PlaceOrder)] == [D("0.3"), D("6.5")]
    assert outcome(engine) == "done"


def test_unwind_already_flat_is_flat_on_the_first_query():
    engine, fake = unwind(positions={})
    assert outcome(engine) == "done"
    assert kinds(fake) == ["QueryPositions"]


def test_unwind_post_only_never_fills_escalates_to_ioc_and_ends_flat():
    p = params(order_style="post_only", post_only_attempts=2)
    engine, fake = unwind(p)
    eth = fake.placed(product_id=ETH)
    assert [(o.tif, o.price) for o in eth] == [
        ("post_only", D("3000.5")),  # joins the ask
        ("post_only", D("3000.5")),
        ("ioc", D("2997")),
    ]
    assert all(o.reduce_only for o in fake.of(PlaceOrder))
    assert outcome(engine) == "done"
    # two post-only rungs of fill_timeout_s each, then an IOC: bounded
    assert fake.finished_ns < 2 * (5 + 1) * S


def test_unwind_partial_fills_size_each_rung_from_verified_fills():
    engine, fake = unwind(venue={"liquidity": {ETH: D("0.1")}})
    assert [o.qty for o in fake.placed(product_id=ETH)] == [
        D("0.333"),
        D("0.233"),
        D("0.133"),
        D("0.033"),
    ]
    assert fake.placed(product_id=ETH)[-1].purpose == "unwind market"
    assert outcome(engine) == "done"
    assert_ledger_matches_venue(engine, fake)


def test_unwind_no_liquidity_climbs_the_whole_ladder_slices_the_market_rung_then_fails():
    p = params(max_slice_usd="300")
    engine, fake = unwind(p, venue={"liquidity": {ETH: D(0), SOL: D(0)}})
    assert outcome(engine) == "failed"
    eth = fake.placed(product_id=ETH)
    prices = [o.price for o in eth]
    # IOC 10, 35, 60 bps, then "market" at max(50, 60) bps, sliced at $300
    assert prices[:3] == [D("2997"), D("2989.5"), D("2982")]
    assert [o.qty for o in eth[3:]] == [D("0.1"), D("0.1"), D("0.1"), D("0.033")]
    assert {o.price for o in eth[3:]} == {D("2982")}
    assert isinstance(fake.sent[-1], QueryPositions)  # the venue had the last word
    assert notes(engine, "unwind failed")


@pytest.mark.parametrize("cancel_reports_fill", [True, False])
def test_unwind_seed002_partial_cancel_late_fill_replacement_never_double_sells(
    cancel_reports_fill,
):
    # Post-only ETH sell fills 0.2, then 0.1 just before the cancel, delivered after it.
    def setup(fake):
        fake.script(
            [Fill(D("0.2"), at_ms=100), Fill(D("0.1"), at_ms=4990, deliver_ms=300)],
            product_id=ETH,
        )
        fake.script([Fill(at_ms=50)], product_id=SOL)

    p = params(order_style="post_only")
    engine, fake = unwind(p, setup=setup, venue={"cancel_reports_fill": cancel_reports_fill})
    eth = fake.placed(product_id=ETH)
    assert [o.qty for o in eth] == [D("0.333"), D("0.033")]
    assert [o.tif for o in eth] == ["post_only", "ioc"]  # SOL closed: no passive waiting
    assert outcome(engine) == "done"
    assert fake.positions[ETH] == 0  # sold once, never flipped short
    assert_ledger_matches_venue(engine, fake)


def test_unwind_unknown_outcome_is_queried_before_anything_is_resent():
    def setup(fake):
        fake.script([Error("unknown_outcome", accepted=False)], product_id=SOL)

    engine, fake = unwind(setup=setup)
    first, resend = fake.placed(product_id=SOL)
    before = fake.sent[: fake.sent.index(resend)]
    assert [i for i in before if isinstance(i, QueryOrder) and i.order_id == first.order_id]
    assert resend.order_id != first.order_id
    assert outcome(engine) == "done"


def test_unwind_rejected_reduce_only_is_not_final_for_an_exit():
    # Someone closed SOL between our read and our order: the reduce-only order is
    # rejected, the ladder goes on. The venue then reads flat, but SOL's reported fills
    # say open: that read is never "flat" (issue 11: it cannot be told from a lagging
    # read); UNWIND fails and the session's emergency exit takes over, flagged.
    def setup(fake):
        def manual_close():
            fake.positions[SOL] = D(0)
            fake.history.append((fake.clock.now_ns(), dict(fake.positions)))

        fake.clock.call_later(25 * MS, manual_close)

    engine, fake = unwind(setup=setup)
    assert outcome(engine) == "failed"
    assert fake.positions == {ETH: 0, SOL: 0}
    assert engine.ledger.position(SOL) != 0  # the fills the venue reported: SOL still open


def test_unwind_one_refused_order_moves_to_the_next_rung_under_a_new_id():
    def setup(fake):
        fake.script([Error("rate_limited")], product_id=ETH)

    engine, fake = unwind(setup=setup)
    eth = fake.placed(product_id=ETH)
    assert len(eth) == 2
    assert eth[0].order_id != eth[1].order_id
    assert eth[1].price < eth[0].price  # the next rung, more aggressive
    assert outcome(engine) == "done"


def test_unwind_rung_refused_by_a_429_window_is_retried_after_back_off_not_skipped():
    # Every request is rate limited for the first 1.2 s (after the read went through).
    def setup(fake):
        fake.rate_limited.append((15, 1200))

    engine, fake = unwind(setup=setup)
    eth = fake.placed(product_id=ETH)
    assert [o.price for o in eth] == [D("2997")] * len(eth)  # the same rung each time
    assert 2 <= len(eth) <= 4
    assert notes(engine, "rung refused by the venue; backing off")
    assert outcome(engine) == "done"


def test_unwind_position_lag_is_asked_again_then_flat():
    engine, fake = unwind(venue={"position_lag_ms": 300})
    assert outcome(engine) == "done"
    assert len(fake.of(QueryPositions)) == 3  # the read, then verify twice
    assert notes(engine, "position read lags the reported fills: asking again")


def test_unwind_unanswered_read_is_retried_twice_then_failed_with_nothing_sent():
    engine, fake = unwind(venue={"silent_queries": True})
    assert outcome(engine) == "failed"
    assert kinds(fake) == ["QueryPositions"] * 3
    assert fake.finished_ns == 15 * S


# -- structure and seeded fault walks ---------------------------------------------------------
def test_unwind_every_waiting_state_consumes_every_event_it_declares():
    # Consumed by the engine (noted), not by catch-all transitions (issue 13 contract).
    assert PositionWork.unhandled == "consume"
    assert catch_alls(PositionWork) == []


@pytest.mark.parametrize("seed", range(40))
def test_unwind_seeded_fault_walk_ends_bounded_reduce_only_and_never_flips(seed):
    engine, fake = run_chaos(PositionWork, params(), seed, positions=BUILT, purpose="unwind")
    assert outcome(engine) in ("done", "failed")
    assert fake.finished_ns <= 150 * S
    placed = fake.of(PlaceOrder)
    assert all(o.reduce_only for o in placed)
    assert len(placed) <= 2 * (3 * 4 + 4)  # per leg: ladder of 4 (3x with progress) + refusals
    assert fake.positions.get(ETH, 0) >= 0  # closing never flips a leg
    assert fake.positions.get(SOL, 0) <= 0
    if outcome(engine) == "done":
        assert fake.positions.get(ETH, 0) == 0
        assert fake.positions.get(SOL, 0) == 0
    assert_unknown_resolved_before_resend(engine, fake)
    assert_ledger_tracks_venue(engine, fake)


def test_unwind_stale_flat_first_answer_contradicting_our_fills_is_asked_again():
    # The BUILD's fills are in the ledger; the lagging position feed still says flat.
    def setup(fake):
        for pid, side, qty in ((ETH, "buy", D("0.333")), (SOL, "sell", D("6.66"))):
            signed = qty if side == "buy" else -qty
            fake.positions[pid] = signed
            fake.history.append((fake.clock.now_ns(), dict(fake.positions)))
            fake.engine.process(
                FillReceived(
                    order_id=f"build:{pid}",
                    fill_id=f"b{pid}",
                    product_id=pid,
                    side=side,
                    price="100",
                    qty=qty,
                )
            )

    engine, fake = spawn(
        PositionWork,
        params(),
        venue={"position_lag_ms": 400},
        setup=setup,
        query_first=False,
        purpose="unwind",
    )
    assert outcome(engine) == "done"
    assert fake.positions == {ETH: 0, SOL: 0}
    assert [o.qty for o in fake.of(PlaceOrder)] == [D("0.333"), D("6.66")]


@pytest.mark.parametrize(
    ("kw", "rungs"),
    [
        ({}, ["unwind", "unwind", "unwind", "unwind market"]),
        ({"use_market_fallback": False}, ["unwind", "unwind", "unwind"]),
        ({"market_max_slippage_bps": "200"}, ["unwind", "unwind", "unwind", "unwind market"]),
    ],
)
def test_unwind_ladder_ends_with_the_configured_market_fallback(kw, rungs):
    engine, fake = unwind(params(**kw), venue={"liquidity": {ETH: D(0), SOL: D(0)}})
    eth = fake.placed(product_id=ETH)
    assert [o.purpose for o in eth] == rungs
    if "market_max_slippage_bps" in kw:
        assert eth[-1].price == D("2940")  # bid 3000 x (1 - 200 bps)
    assert outcome(engine) == "failed"


def test_unwind_legs_apart_counts_from_when_they_were_last_seen_together():
    # Chaos maker_first seed 952: a 429 backoff of 25 s with no quotes; the price moved
    # meanwhile and the legs (both still open) drifted apart in value. UNWIND saw it only
    # after the backoff and counted "apart" from then: it failed 39 s after the venue's
    # imbalance began. Apart now counts from the last time the legs were seen together
    # (a stale quote is not "together"), and no wait outlasts what is left of the budget.
    def setup(fake):
        fake.stream_bbo = False  # no quotes during the backoff
        fake.retry_after = D("25")
        fake.rate_limited.append((15, 1000))  # the first rung is refused: back off 25 s
        fake._at(5_000, lambda: fake.books.update({ETH: (D("2700"), D("2700.5"))}))
        fake._at(24_000, lambda: setattr(fake, "stream_bbo", True))
        fake.script([], times=20, product_id=ETH)  # accepted, then silence
        fake.script([], times=20, product_id=SOL)

    engine, fake = unwind(setup=setup)
    assert notes(engine, "rung refused by the venue; backing off")
    assert outcome(engine) == "failed"
    assert fake.finished_ns <= params().exit_budget_s * S + S  # from the last together
