"""EMERGENCY EXIT against a scripted venue on the virtual clock: one scenario per row."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.core.events import FillReceived
from engine.core.intents import CancelOrder
from engine.core.intents import Halt
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from engine.core.intents import SendAlert
from machines.position_work import PositionWork
from tests.support import deadlines_armed
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
ONE_LEG = {SOL: D("-0.9")}  # seed 000, Cycle 6: SOL filled, ETH did not
BOTH = {ETH: D("0.333"), SOL: D("-6.66")}
BOTH_USD = D("1998.15")  # 0.333 x 3000.25 + 6.66 x 150.01 at mid


def exit_(p=None, positions=None, **kw):
    venue = {"positions": ONE_LEG if positions is None else positions, **kw.pop("venue", {})}
    kw.setdefault("query_first", False)
    kw.setdefault("adopt", True)
    return spawn(
        PositionWork,
        p or params(),
        venue=venue,
        reason=kw.pop("reason", "test"),
        purpose="exit",
        **kw,
    )


def kinds(fake):
    return [type(i).__name__ for i in fake.sent]


def test_exit_one_leg_is_flattened_reduce_only_and_verified_by_a_position_query():
    engine, fake = exit_(reason="build failed: ETH expired, SOL filled")
    assert outcome(engine) == "done"
    assert kinds(fake) == ["SendAlert", "QueryPositions", "PlaceOrder", "QueryPositions"]
    alert = fake.of(SendAlert)[0]
    assert (alert.severity, alert.event) == ("warning", "emergency_exit")
    assert "ETH expired" in alert.message
    (order,) = fake.of(PlaceOrder)
    assert (order.product_id, order.side, order.qty, order.tif, order.reduce_only) == (
        SOL,
        "buy",
        D("0.9"),
        "ioc",
        True,
    )
    assert order.price == D("150.78")  # ask 150.02 x (1 + 50 bps) = 150.7701, up to tick
    assert fake.positions[SOL] == 0
    assert notes(engine, "flat: verified by the venue")
    assert fake.finished_ns < 1 * S  # seconds-level target: well under 3 s here


def test_exit_flat_already_is_flat_without_an_order():
    engine, fake = exit_(positions={})
    assert outcome(engine) == "done"
    assert kinds(fake) == ["SendAlert", "QueryPositions"]


def test_exit_no_liquidity_climbs_the_ladder_and_is_exhausted_with_a_halt_stating_exposure():
    engine, fake = exit_(positions=BOTH, venue={"liquidity": {ETH: D(0), SOL: D(0)}})
    assert outcome(engine) == "failed"
    eth = fake.placed(product_id=ETH)
    # one attempt per ladder step (3), each at the step's slippage: 50, 150, 500 bps
    assert [o.price for o in eth] == [D("2985"), D("2955"), D("2850")]
    assert len(fake.placed(product_id=SOL)) == 3
    (halt,) = fake.of(Halt)
    assert halt.exposure_usd == BOTH_USD
    assert "3 attempts without progress" in halt.reason
    critical = [a for a in fake.of(SendAlert) if a.severity == "critical"]
    assert [(a.event, a.exposure_usd) for a in critical] == [("emergency_exit_exhausted", BOTH_USD)]
    assert fake.finished_ns <= 30 * S
    # every attempt re-read the position first, and a final read verified what is open
    assert len(fake.of(QueryPositions)) == 4


def test_exit_bug003_orders_time_out_at_most_the_configured_attempts_within_budget():
    # Exit orders are accepted but never execute nor expire (a stuck venue); cancels work.
    def setup(fake):
        fake.script([], times=10)

    engine, fake = exit_(positions=BOTH, setup=setup)
    assert outcome(engine) == "failed"
    assert len(fake.placed(product_id=ETH)) == 3
    assert len(fake.of(CancelOrder)) == 6  # each attempt cancels its own unfilled orders
    assert fake.finished_ns <= 30 * S
    assert fake.of(Halt)[0].exposure_usd == BOTH_USD


def test_exit_budget_is_armed_once_and_ends_the_exit_whatever_attempt_is_running():
    # Cancels are ignored too: attempts cannot finish; the 30 s budget must end it, with
    # the attempt deadlines never having reset it.
    def setup(fake):
        fake.script([], times=10)
        fake.ignore_cancels = True

    p = params(exit_attempt_timeout_s="20", cancel_timeout_s="20")
    engine, fake = exit_(p, positions=BOTH, setup=setup)
    assert outcome(engine) == "failed"
    assert fake.finished_ns == 30 * S + 0  # exactly the budget
    assert "budget spent" in fake.of(Halt)[0].reason
    records = engine.journal.records()
    armed = [a for _m, a in deadlines_armed(records) if a["name"] == "budget_timeout"]
    assert len(armed) == 1


def test_exit_partial_fills_are_resized_from_the_re_read_position():
    engine, fake = exit_(positions=BOTH, venue={"liquidity": {ETH: D("0.2")}})
    assert outcome(engine) == "done"
    assert [o.qty for o in fake.placed(product_id=ETH)] == [D("0.333"), D("0.133")]
    assert len(fake.placed(product_id=SOL)) == 1


def test_exit_late_fill_after_expiry_is_never_sold_twice():
    # The first IOC filled 0.2 but the fill is reported 300 ms after the expiry ack;
    # the second attempt sizes from the venue position read after the first settled.
    def setup(fake):
        fake.script([Fill(D("0.2"), at_ms=10, deliver_ms=300)], product_id=ETH)

    engine, fake = exit_(positions={ETH: D("0.333")}, setup=setup)
    assert outcome(engine) == "done"
    assert fake.positions[ETH] == 0
    assert [o.qty for o in fake.placed(product_id=ETH)] == [D("0.333"), D("0.133")]


def test_exit_unknown_outcome_is_queried_before_anything_is_resent():
    def setup(fake):
        fake.script([Error("unknown_outcome", accepted=False)], product_id=SOL)

    engine, fake = exit_(setup=setup)
    first, resend = fake.placed(product_id=SOL)
    before = fake.sent[: fake.sent.index(resend)]
    queried = [i for i in before if isinstance(i, QueryOrder) and i.order_id == first.order_id]
    assert len(queried) >= 2
    assert resend.order_id != first.order_id
    assert outcome(engine) == "done"


@pytest.mark.parametrize("retry_after", [None, D("2")])
def test_exit_rate_limited_backs_off_without_spending_attempts_then_flat(retry_after):
    # Every request gets 429 for the first 4 s of the exit.
    def setup(fake):
        fake.rate_limited.append((0, 4000))
        fake.retry_after = retry_after

    engine, fake = exit_(setup=setup)
    assert outcome(engine) == "done"
    assert fake.positions[SOL] == 0
    assert notes(engine, "venue refused or silent; backing off")
    assert fake.finished_ns < 10 * S


def test_exit_silent_venue_reads_are_bounded_and_end_exhausted():
    # The session's last snapshot (SOL -0.9) is all that is known when the venue goes quiet.
    engine, fake = exit_(venue={"silent_queries": True}, query_first=True)
    assert outcome(engine) == "failed"
    assert not fake.of(PlaceOrder)  # never sized from anything but a venue answer
    assert fake.finished_ns <= 30 * S
    assert fake.of(Halt)[0].exposure_usd == D("135.01")  # 0.9 x 150.01, last known


# -- structure and seeded fault walks ---------------------------------------------------------
def test_exit_every_waiting_state_consumes_every_event_it_declares():
    # Consumed by the engine (noted), not by catch-all transitions (issue 13 contract).
    assert PositionWork.unhandled == "consume"
    assert catch_alls(PositionWork) == []


@pytest.mark.parametrize("seed", range(40))
def test_exit_seeded_fault_walk_is_flat_or_halted_within_budget(seed):
    engine, fake = run_chaos(
        PositionWork, params(), seed, positions=BOTH, reason="t", purpose="exit"
    )
    assert outcome(engine) in ("done", "failed")
    assert fake.finished_ns <= 30 * S  # never outlasts the budget
    attempts = notes(engine, "exit attempt")
    assert len({n["attempt"] for n in attempts}) <= 9  # hard cap: 3 x exit_attempts
    assert max((n["strikes"] for n in attempts), default=0) < 3
    assert all(o.reduce_only and o.tif == "ioc" for o in fake.of(PlaceOrder))
    if outcome(engine) == "done":
        assert fake.positions.get(ETH, 0) == 0
        assert fake.positions.get(SOL, 0) == 0
        assert not fake.of(Halt)
    else:
        (halt,) = fake.of(Halt)
        assert halt.exposure_usd > 0
        assert [a.event for a in fake.of(SendAlert) if a.severity == "critical"] == [
            "emergency_exit_exhausted"
        ]
    assert_unknown_resolved_before_resend(engine, fake)
    assert_ledger_tracks_venue(engine, fake)


def test_exit_attempts_that_reduce_the_position_go_on_up_the_ladder_within_the_budget():
    # Only 0.1 ETH per IOC: every attempt makes progress, none is a strike.
    engine, fake = exit_(positions=BOTH, venue={"liquidity": {ETH: D("0.1")}})
    assert outcome(engine) == "done"
    eth = fake.placed(product_id=ETH)
    assert [o.qty for o in eth] == [D("0.333"), D("0.233"), D("0.133"), D("0.033")]
    assert [o.price for o in eth] == [D("2985"), D("2955"), D("2850"), D("2850")]  # capped
    assert fake.finished_ns < 1 * S


def _recent_fill(fake, pid, side, qty):
    """A fill the engine has seen (e.g. the failed BUILD's) that the venue's lagging
    position feed does not show yet."""
    signed = qty if side == "buy" else -qty
    fake.positions[pid] = fake.positions.get(pid, D(0)) + signed
    fake.history.append((fake.clock.now_ns(), dict(fake.positions)))
    fake.engine.process(
        FillReceived(
            order_id=f"build:{pid}",
            fill_id=f"b{pid}",
            product_id=pid,
            side=side,
            price="150",
            qty=qty,
        )
    )


def test_exit_stale_flat_answer_contradicting_our_fills_is_asked_again_never_believed_at_once():
    # Seen on the sim with position_lag_ms: the first answer predates the BUILD's fills.
    engine, fake = exit_(
        positions={},
        setup=lambda fake: _recent_fill(fake, SOL, "sell", D("0.9")),
        venue={"position_lag_ms": 400},
        adopt=False,
    )
    assert outcome(engine) == "done"
    assert fake.positions[SOL] == 0  # really flat, not just said to be
    assert len(fake.placed(product_id=SOL)) == 1
    assert len(fake.of(QueryPositions)) >= 3  # stale, asked again, then after the exit


def test_exit_with_a_20s_position_lag_never_takes_the_lagged_flat_read_as_flat():
    # Issue 11 item 3: one BUILD leg filled (0.9 SOL short), the venue's reads 20 s behind.
    # The lagged 0/0 is asked again (backing off) until the read shows the fill, then the
    # leg is closed, and flat is claimed only once the read agrees with the fills.
    engine, fake = exit_(
        positions={},
        setup=lambda fake: _recent_fill(fake, SOL, "sell", D("0.9")),
        venue={"position_lag_ms": 20_000},
        adopt=False,
    )
    assert outcome(engine) == "done"
    assert fake.positions[SOL] == 0  # really flat, not just said to be
    assert engine.ledger.position(SOL) == 0
    assert len(fake.placed(product_id=SOL)) == 1
    assert notes(engine, "position read lags the reported fills: asking again")
    assert not fake.of(Halt)
    # Two lag waits of ~20 s: longer than the 30 s budget, which waited only for the read.
    assert 40 * S <= fake.finished_ns <= 75 * S
    assert notes(engine, "exit budget spent: waiting only for the position read to catch up")


def test_exit_read_that_stays_flat_against_reported_fills_halts_stating_both():
    # The venue never shows the reported fill (or it vanished): never "flat"; HALT with the
    # exposure by the fills and both numbers, trusting the fills.
    engine, fake = exit_(
        positions={},
        setup=lambda fake: _recent_fill(fake, SOL, "sell", D("0.9")),
        venue={"position_lag_ms": 10_000_000},
        adopt=False,
    )
    assert outcome(engine) == "failed"
    (halt,) = fake.of(Halt)
    assert "contradicts its reported fills" in halt.reason
    assert "read 0, fills -0.90" in halt.reason or "read 0, fills -0.9" in halt.reason
    assert halt.exposure_usd >= D("0.9") * 150


def test_exit_absurd_position_halts_with_the_exposure_stated_and_sends_nothing():
    # Issue 11 item 6: a gateway answering 1e6 ETH: no 59 680 reduce-only orders in one
    # step; HALT stating ~3e9 USD.
    engine, fake = exit_(positions={ETH: D("1000000")})
    assert outcome(engine) == "failed"
    assert not fake.of(PlaceOrder)
    (halt,) = fake.of(Halt)
    assert "far beyond what this engine could have opened" in halt.reason
    assert halt.exposure_usd > D("2e9")


def test_exit_slices_per_step_are_capped():
    # 300 000 USD of ETH in 10 000 USD slices would be 30 orders; at most 5 per step.
    p = params(max_slice_usd="10000", max_slices_per_step=5, max_position_usd="1000000")
    engine, fake = exit_(p=p, positions={ETH: D("100")})
    first = [o for o in fake.placed(product_id=ETH) if o.order_id.endswith(("o2", "o3", "o4"))]
    assert first  # it traded
    per_step: dict[int, int] = {}
    for r in engine.journal.records():
        if r.kind == "intent" and '"place_order"' in r.payload:
            per_step[r.ts] = per_step.get(r.ts, 0) + 1
    assert max(per_step.values()) <= 5


def test_exit_beyond_the_price_band_prices_from_the_oracle_not_the_skewed_quote():
    # Issue 11 item 4: SOL shows 150 while its oracle says 185. Closing the SOL short
    # prices from the oracle (the band-checked price), not from the skewed quote.
    from engine.core.events import BboUpdated

    def setup(fake):
        fake.oracles[SOL] = D("185")  # on every later quote too, as a venue stamps them
        fake.engine.process(
            BboUpdated(
                product_id=SOL, bid="150", ask="150.02", bid_qty=1, ask_qty=1, oracle_price="185"
            )
        )

    engine, fake = exit_(setup=setup)
    (first, *_) = fake.placed(product_id=SOL)
    assert first.side == "buy"
    assert first.price >= D("185")  # 185 x (1 + 50 bps), never 150.02 x (1 + 50 bps)
    assert outcome(engine) == "done"


def test_exit_with_a_lost_oracle_prices_from_the_quote_and_still_goes():
    # The oracle was 185 and is no longer known: the exit is not held up, and it does not
    # price from the old oracle either (the quote as shown is the only price there is).
    from engine.core.events import BboUpdated

    def setup(fake):
        fake.engine.process(
            BboUpdated(
                product_id=SOL, bid="150", ask="150.02", bid_qty=1, ask_qty=1, oracle_price="185"
            )
        )

    engine, fake = exit_(setup=setup)
    assert engine.ledger.oracle_lost(SOL)
    (first, *_) = fake.placed(product_id=SOL)
    assert first.side == "buy"
    assert first.price < D("152")  # from 150.02, never from the lost 185
    assert outcome(engine) == "done"
