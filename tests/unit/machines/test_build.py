"""BUILD against a scripted venue on the virtual clock: one scenario per row."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.core.clock import VirtualClock
from engine.core.events import BboUpdated
from engine.core.events import Position
from engine.core.events import PositionSnapshot
from engine.core.intents import CancelOrder
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from engine.core.intents import SendAlert
from engine.core.loop import Engine
from machines.position_work import PositionWork
from tests.unit.machines.fakes import BOOKS
from tests.unit.machines.fakes import MS
from tests.unit.machines.fakes import Error
from tests.unit.machines.fakes import Expire
from tests.unit.machines.fakes import FakeVenue
from tests.unit.machines.fakes import Fill
from tests.unit.machines.fakes import Reject
from tests.unit.machines.fakes import S
from tests.unit.machines.fakes import assert_ledger_tracks_venue
from tests.unit.machines.fakes import assert_unknown_resolved_before_resend
from tests.unit.machines.fakes import catch_alls
from tests.unit.machines.fakes import notes
from tests.unit.machines.fakes import outcome
from tests.unit.machines.fakes import params
from tests.unit.machines.fakes import run_chaos
from tests.unit.machines.fakes import spawn
from tests.unit.machines.fakes import undeferrable_gaps

D = Decimal
ETH, SOL = 4, 8
ETH_QTY, SOL_QTY = D("0.333"), D("6.66")  # $1000 at mid 3000.25 / 150.01, rounded down


def build(p=None, **kw):
    return spawn(PositionWork, p or params(), purpose="build", **kw)


def kinds(fake):
    return [type(i).__name__ for i in fake.sent]


def assert_ledger_matches_venue(engine, fake):
    for pid in (ETH, SOL):
        assert engine.ledger.position(pid) == fake.positions.get(pid, 0)


# -- happy path ---------------------------------------------------------------------------
def test_build_ioc_both_legs_fill_is_built_after_a_position_query():
    # Arrange / Act
    engine, fake = build()
    # Assert: both legs at once, crossing by 10 bps rounded to tick aggressively, then verify.
    assert outcome(engine) == "done"
    buy, sell = fake.of(PlaceOrder)
    assert (buy.product_id, buy.side, buy.qty, buy.price, buy.tif) == (
        ETH,
        "buy",
        ETH_QTY,
        D("3003.6"),  # 3000.5 x 1.001 = 3003.5005 → up to the 0.1 tick
        "ioc",
    )
    assert (sell.product_id, sell.side, sell.qty, sell.price) == (SOL, "sell", SOL_QTY, D("149.85"))
    assert kinds(fake) == ["PlaceOrder", "PlaceOrder", "QueryPositions"]
    assert fake.positions == {ETH: ETH_QTY, SOL: -SOL_QTY}
    assert_ledger_matches_venue(engine, fake)


def test_build_records_the_rounding_residual_and_exposes_it():
    engine, _ = build(params(carry_usd="0.5"))
    machine_notes = notes(engine, "sized at equal notional")
    assert machine_notes[0]["usd"] == "1000.5"
    residual = D(machine_notes[0]["residual_usd"])
    assert D(0) <= residual < D(3)  # less than one ETH increment's worth


def test_build_residual_usd_attribute_is_what_was_noted():
    clock = VirtualClock()
    engine = Engine(clock)
    fake = FakeVenue(engine, clock)
    fake.push_bbo()
    engine.process(
        PositionSnapshot(positions=[Position(product_id=4, qty=0), Position(product_id=8, qty=0)])
    )
    machine = engine.spawn(PositionWork, "m", params=params(), purpose="build")
    noted = notes(engine, "sized at equal notional")[0]["residual_usd"]
    assert machine.residual_usd == D(noted)  # type: ignore[attr-defined]
    # 1000 - (0.333 x 3000.25 + 6.66 x 150.01) / 2
    assert machine.residual_usd == D("0.925075")  # type: ignore[attr-defined]


# -- pre-trade guards ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "kw", "reason"),
    [
        ("residual", {"venue": {"positions": {ETH: D("0.01")}}}, "residual venue position"),
        ("no snapshot", {"query_first": False}, "no venue position known"),
        ("no bbo", {"bbo": False}, "no valid BBO"),
        ("over max", {"p": params(max_position_usd="500")}, "above max_position_usd"),
        ("too small", {"p": params(notional_usd="1")}, "below the venue minimum"),
    ],
)
def test_build_checking_refused_is_aborted_with_nothing_sent(case, kw, reason):
    engine, fake = build(**kw)
    assert outcome(engine) == "aborted"
    assert fake.sent == []
    refused = notes(engine, "pre-trade check refused")
    assert len(refused) == 1
    assert reason in refused[0]["reason"]
    assert reason in notes(engine, "build aborted")[0]["reason"]


@pytest.mark.parametrize(
    ("machine", "state", "reason"),
    [("breaker", "open", "circuit breaker open"), ("health", "degraded", "venue health")],
)
def test_build_checking_breaker_or_health_refusal_is_aborted(machine, state, reason):
    def setup(fake):
        fake.engine.ledger.machine_states[machine] = (state,)

    engine, fake = build(setup=setup)
    assert outcome(engine) == "aborted"
    assert fake.sent == []
    assert reason in notes(engine, "pre-trade check refused")[0]["reason"]


def test_build_checking_closed_breaker_and_normal_health_allow_entry():
    def setup(fake):
        fake.engine.ledger.machine_states.update(breaker=("closed",), health=("normal",))

    engine, _ = build(setup=setup)
    assert outcome(engine) == "done"


def test_build_checking_stale_bbo_is_aborted():
    clock = VirtualClock()
    engine = Engine(clock)
    fake = FakeVenue(engine, clock)
    fake.push_bbo()
    engine.process(
        PositionSnapshot(positions=[Position(product_id=4, qty=0), Position(product_id=8, qty=0)])
    )
    clock.advance(3 * S)  # older than bbo_max_age_s = 2
    engine.process(PositionSnapshot(positions=[], request_id="tick"))
    engine.spawn(PositionWork, "m", params=params(), purpose="build")
    assert engine.finished == {"m": "aborted"}
    assert "stale BBO" in notes(engine, "pre-trade check refused")[0]["reason"]


# -- partial fills and repair -----------------------------------------------------------------
def test_build_partial_fill_then_expiry_sizes_the_remainder_from_the_ledger():
    # Only 0.2 ETH at the touch: the first IOC fills 0.2 and expires; the repair asks 0.133.
    engine, fake = build(venue={"liquidity": {ETH: D("0.2")}})
    assert [o.qty for o in fake.placed(product_id=ETH)] == [ETH_QTY, D("0.133")]
    assert outcome(engine) == "done"
    assert_ledger_matches_venue(engine, fake)


def test_build_partial_then_repair_fills_is_built():
    def setup(fake):
        fake.script([Fill(D("0.2")), Expire()], product_id=ETH)

    engine, fake = build(setup=setup)
    eth = fake.placed(product_id=ETH)
    assert [o.qty for o in eth] == [ETH_QTY, D("0.133")]
    assert eth[1].price == D("3011.1")  # 3000.5 x (1 + 35 bps) = 3011.00175 → 3011.1
    assert eth[1].purpose == "repair"
    assert len(fake.placed(product_id=SOL)) == 1
    assert outcome(engine) == "done"
    assert fake.positions == {ETH: ETH_QTY, SOL: -SOL_QTY}


def test_build_expiry_reports_more_than_the_ledger_has_seen_then_the_fill_arrives_late():
    # The venue filled 0.2 but the fill event arrives 300 ms after the expiry ack.
    def setup(fake):
        fake.script([Fill(D("0.2"), at_ms=10, deliver_ms=300), Expire(at_ms=15)], product_id=ETH)

    engine, fake = build(setup=setup)
    assert [o.qty for o in fake.placed(product_id=ETH)] == [ETH_QTY, D("0.133")]
    assert outcome(engine) == "done"
    assert_ledger_matches_venue(engine, fake)


def test_build_cycle6_one_leg_expired_unfilled_is_repaired_then_built():
    # Seed 000 "Cycle 6": the ETH IOC expires with nothing while SOL fills.
    def setup(fake):
        fake.script([Expire()], product_id=ETH)

    engine, fake = build(setup=setup)
    eth = fake.placed(product_id=ETH)
    assert [o.qty for o in eth] == [ETH_QTY, ETH_QTY]
    assert eth[1].price > eth[0].price
    assert outcome(engine) == "done"
    assert fake.finished_ns < 1 * S  # no fill deadline was waited out


def test_build_repair_exhausted_is_failed_with_escalating_prices_and_bounded_attempts():
    def setup(fake):
        fake.script([Expire()], times=10, product_id=ETH)

    engine, fake = build(setup=setup)
    assert outcome(engine) == "failed"
    eth = fake.placed(product_id=ETH)
    # first attempt + repair_attempts (2), each more aggressive: 10, 35, 60 bps
    assert [o.price for o in eth] == [D("3003.6"), D("3011.1"), D("3018.6")]
    assert len(fake.placed(product_id=SOL)) == 1
    assert not fake.of(QueryPositions)
    assert "incomplete" in notes(engine, "build failed")[0]["reason"]


def test_build_one_leg_reject_margin_is_failed_without_retrying_it():
    def setup(fake):
        fake.script([Reject("insufficient margin")], product_id=SOL)

    engine, fake = build(setup=setup)
    assert outcome(engine) == "failed"
    assert len(fake.placed(product_id=SOL)) == 1
    assert len(fake.placed(product_id=ETH)) == 1
    assert fake.positions == {ETH: ETH_QTY}  # exposure left for the emergency exit
    assert "insufficient margin" in notes(engine, "build failed")[0]["reason"]


def test_build_permanent_placement_error_is_failed():
    def setup(fake):
        fake.script([Error("permanent")], product_id=SOL)

    engine, fake = build(setup=setup)
    assert outcome(engine) == "failed"
    assert len(fake.placed()) == 2


# -- seed 002: partial fill, cancel, late fill, replacement ------------------------------------
@pytest.mark.parametrize("cancel_reports_fill", [True, False])
def test_build_seed002_partial_cancel_late_fill_replacement_never_double_sells(
    cancel_reports_fill,
):
    # Post-only SOL sell: 2.0 fills, then 1.0 more just before the cancel whose fill
    # event is delivered after the cancel ack; the replacement must be 6.66 - 3.0.
    def setup(fake):
        fake.script(
            [Fill(D("2"), at_ms=100), Fill(D("1"), at_ms=4990, deliver_ms=300)], product_id=SOL
        )
        fake.script([Fill(at_ms=50)], product_id=ETH)

    engine, fake = build(
        params(order_style="post_only"),
        venue={"cancel_reports_fill": cancel_reports_fill},
        setup=setup,
    )
    sol = fake.placed(product_id=SOL)
    assert [o.qty for o in sol] == [SOL_QTY, D("3.66")]
    assert [o.tif for o in sol] == ["post_only", "ioc"]  # ETH complete: repair at once
    assert outcome(engine) == "done"
    assert fake.positions[SOL] == -SOL_QTY  # sold exactly once
    assert_ledger_matches_venue(engine, fake)
    if not cancel_reports_fill:
        # the ack did not say how much filled: asked before resizing
        first_query = next(i for i, x in enumerate(fake.sent) if isinstance(x, QueryOrder))
        replacement = fake.sent.index(sol[1])
        assert first_query < replacement


# -- post-only repricing -------------------------------------------------------------------------
def test_build_post_only_never_fills_is_repriced_then_crosses_with_ioc():
    engine, fake = build(params(order_style="post_only", post_only_attempts=2))
    tifs = [o.tif for o in fake.placed(product_id=ETH)]
    assert tifs == ["post_only", "post_only", "ioc"]
    assert fake.placed(product_id=ETH)[0].price == D("3000")  # joins the bid
    assert fake.placed(product_id=SOL)[0].price == D("150.02")  # joins the ask
    assert len(fake.of(CancelOrder)) == 4  # two rounds x two legs
    assert outcome(engine) == "done"
    assert fake.finished_ns == pytest.approx(10 * S, abs=0.2 * S)


# -- unknown outcomes ----------------------------------------------------------------------------
def test_build_unknown_outcome_is_queried_before_anything_is_resent():
    def setup(fake):
        fake.script([Error("unknown_outcome", accepted=False)], product_id=ETH)

    engine, fake = build(setup=setup)
    first = fake.placed(product_id=ETH)[0]
    resend = fake.placed(product_id=ETH)[1]
    assert resend.order_id != first.order_id
    before = fake.sent[: fake.sent.index(resend)]
    queried = [i for i in before if isinstance(i, QueryOrder) and i.order_id == first.order_id]
    assert len(queried) >= 2  # "not found" twice, a deadline apart, before concluding
    assert outcome(engine) == "done"
    assert fake.finished_ns < 2 * S  # re-asked after verify_retry_s, not the fill deadline
    assert_ledger_matches_venue(engine, fake)


def test_build_unknown_outcome_that_the_venue_accepted_is_not_resent():
    def setup(fake):
        fake.script([Error("unknown_outcome", accepted=True), Fill(at_ms=15)], product_id=ETH)

    engine, fake = build(setup=setup)
    assert len(fake.placed(product_id=ETH)) == 1
    assert any(isinstance(i, QueryOrder) for i in fake.sent)
    assert outcome(engine) == "done"


def test_build_rate_limited_placement_is_retried_under_a_new_id():
    def setup(fake):
        fake.script([Error("rate_limited")], product_id=SOL)

    engine, fake = build(setup=setup)
    sol = fake.placed(product_id=SOL)
    assert len(sol) == 2
    assert sol[0].order_id != sol[1].order_id
    assert outcome(engine) == "done"


def test_build_order_that_never_ends_is_failed_after_bounded_cancels_and_queries():
    # ETH is accepted, never fills, never expires, and the venue ignores every cancel.
    def setup(fake):
        fake.script([], product_id=ETH)
        fake.ignore_cancels = True

    engine, fake = build(setup=setup)
    assert outcome(engine) == "failed"
    eth_id = fake.placed(product_id=ETH)[0].order_id
    assert len(fake.placed(product_id=ETH)) == 1  # never resent while its outcome is open
    assert len([i for i in fake.of(QueryOrder) if i.order_id == eth_id]) == 3
    # fill deadline 5 s, then a 2 s settle deadline per query round (3)
    assert fake.finished_ns <= 5 * S + 4 * 2 * S


# -- verification ----------------------------------------------------------------------------------
def test_build_verify_unanswered_is_retried_twice_then_failed():
    engine, fake = build(venue={"silent_queries": True})
    assert outcome(engine) == "failed"
    assert len(fake.of(QueryPositions)) == 3
    # fills at 10 ms, then three 5 s verify deadlines
    assert fake.finished_ns == 10 * MS + 15 * S


def test_build_position_lag_is_asked_again_then_built():
    engine, fake = build(venue={"position_lag_ms": 300})
    assert outcome(engine) == "done"
    assert len(fake.of(QueryPositions)) == 2
    assert notes(engine, "position read lags the reported fills: asking again")


def test_build_venue_position_the_fills_do_not_explain_is_failed():
    # Someone else trades SOL on the account right after our fills (V9).
    def setup(fake):
        def manual_trade():
            fake.positions[SOL] = fake.positions.get(SOL, D(0)) - 1
            fake.history.append((fake.clock.now_ns(), dict(fake.positions)))

        fake.clock.call_later(15 * MS, manual_trade)

    engine, fake = build(setup=setup)
    assert outcome(engine) == "failed"
    assert len(fake.of(QueryPositions)) == 3  # asked again (lag?) within the bound
    assert "not verified" in notes(engine, "build failed")[0]["reason"]


# -- structure and seeded fault walks ---------------------------------------------------------
def test_build_every_waiting_state_consumes_every_event_it_declares():
    # Consumed by the engine (noted), not by catch-all transitions (issue 13 contract).
    assert PositionWork.unhandled == "consume"
    assert catch_alls(PositionWork) == []


def test_the_gap_check_can_fail():
    from machines.base import PureMachine
    from machines.base import State

    class Leaky(PureMachine):
        waiting = State(initial=True)
        done = State(final=True)
        fill_received = waiting.to(done, cond="never")
        order_expired = waiting.to(done) | waiting.to(None)

    assert undeferrable_gaps(Leaky) == [("waiting", "fill_received")]
    assert catch_alls(Leaky) == [("waiting", "order_expired")]


@pytest.mark.parametrize("seed", range(40))
def test_build_seeded_fault_walk_ends_bounded_and_never_resends_an_unknown(seed):
    engine, fake = run_chaos(PositionWork, params(), seed, positions={}, purpose="build")
    assert outcome(engine) in ("done", "failed", "aborted")
    assert fake.finished_ns <= 120 * S
    assert len(fake.placed(product_id=ETH)) <= 9  # ladder of 3; progress rounds capped 3x
    assert len(fake.of(QueryPositions)) <= 3
    if outcome(engine) == "done":
        assert abs(fake.positions.get(ETH, 0) - ETH_QTY) < D("0.001")
        assert abs(fake.positions.get(SOL, 0) + SOL_QTY) < D("0.01")
    assert_unknown_resolved_before_resend(engine, fake)
    assert_ledger_tracks_venue(engine, fake)


def test_build_repairs_that_keep_filling_go_on_at_the_last_step_until_complete():
    # 0.1 ETH per IOC: every repair makes progress, so the ladder's last step repeats.
    engine, fake = build(venue={"liquidity": {ETH: D("0.1")}})
    eth = fake.placed(product_id=ETH)
    assert [o.qty for o in eth] == [ETH_QTY, D("0.233"), D("0.133"), D("0.033")]
    assert [o.price for o in eth][-2:] == [D("3018.6"), D("3018.6")]  # capped at 60 bps
    assert outcome(engine) == "done"


def test_build_a_repair_round_without_any_fill_ends_it():
    def setup(fake):
        fake.script([Fill(D("0.1")), Expire()], times=3, product_id=ETH)
        fake.script([Expire()], times=10, product_id=ETH)

    engine, fake = build(setup=setup)
    assert outcome(engine) == "failed"
    assert len(fake.placed(product_id=ETH)) == 4  # 3 with progress, then one without


def _oracle(pid, price):
    """The venue's oracle price for `pid` (the fake's quotes stay where they are)."""

    def setup(fake):
        bid, ask = BOOKS[pid]
        fake.oracles[pid] = price  # on every later quote too, as a venue stamps them
        fake.engine.process(
            BboUpdated(product_id=pid, bid=bid, ask=ask, bid_qty=1, ask_qty=1, oracle_price=price)
        )

    return setup


def test_build_refuses_a_quote_beyond_the_price_band_with_an_alert_and_sends_nothing():
    # Issue 11 item 4 (RELIABILITY D5): SOL shows 150 while its oracle says 185 (-19 %).
    engine, fake = build(setup=_oracle(SOL, D("185")))
    assert outcome(engine) == "aborted"
    assert not fake.of(PlaceOrder)
    (alert,) = [a for a in fake.of(SendAlert) if a.event == "price_band"]
    assert "SOL-PERP" in alert.message
    assert "oracle" in alert.message


def test_build_within_the_price_band_trades():
    engine, _fake = build(setup=_oracle(SOL, D("152")))  # 1.3 % off: inside 500 bps
    assert outcome(engine) == "done"


def _oracle_lost(pid, price):
    """The venue stamped an oracle on `pid` once; its later quotes carry none (the Nado
    adapter stops stamping an oracle older than its bound)."""

    def setup(fake):
        bid, ask = BOOKS[pid]
        fake.engine.process(
            BboUpdated(product_id=pid, bid=bid, ask=ask, bid_qty=1, ask_qty=1, oracle_price=price)
        )

    return setup


def test_build_refuses_a_quote_whose_oracle_is_lost_with_the_band_alert():
    # The quote itself is fine (1.3 % from the last oracle), but it cannot be band-checked.
    engine, fake = build(setup=_oracle_lost(SOL, D("152")))
    assert engine.ledger.oracle(SOL) is None
    assert engine.ledger.oracle_lost(SOL)
    assert outcome(engine) == "aborted"
    assert not fake.of(PlaceOrder)
    (alert,) = [a for a in fake.of(SendAlert) if a.event == "price_band"]
    assert "no current oracle price for SOL-PERP" in alert.message


def test_build_with_the_band_off_trades_on_a_lost_oracle():
    engine, _fake = build(params(price_band_bps=0), setup=_oracle_lost(SOL, D("152")))
    assert outcome(engine) == "done"


def test_a_venue_that_never_gives_an_oracle_is_not_band_checked():
    engine, _fake = build()  # the fake stamps no oracle at all
    assert not engine.ledger.oracle_lost(SOL)
    assert outcome(engine) == "done"
