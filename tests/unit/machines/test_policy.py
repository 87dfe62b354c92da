"""WorkPolicy: what BUILD, UNWIND and the exit differ in, derived from CycleParams."""

from __future__ import annotations

from decimal import Decimal

import attrs

from machines.params import PER_CYCLE
from machines.params import CycleParams
from machines.policy import ATTEMPT_CAP
from machines.policy import PRETRADE_CHECKS
from machines.policy import ROUND_CAP
from machines.policy import Rung
from machines.policy import WorkPolicy
from tests.unit.machines.fakes import ETH
from tests.unit.machines.fakes import SOL
from tests.unit.machines.fakes import params

D = Decimal


def test_build_policy_opens_with_the_pretrade_checks_and_escalates_repairs():
    p = params(order_style="ioc", cross_bps="5", repair_attempts=2, repair_step_bps="10")
    pol = WorkPolicy.build(p)
    assert pol.ladder == (
        Rung("ioc", D(5), "ioc"),
        Rung("ioc", D(15), "repair"),
        Rung("ioc", D(25), "repair"),
    )
    assert not pol.reduce_only
    assert pol.pretrade_checks == PRETRADE_CHECKS
    assert pol.reject_ends_work
    assert pol.hedge_deadline
    assert pol.budget_s is None
    assert pol.max_rounds == ROUND_CAP * 3
    assert (pol.round_deadline, pol.round_timeout_s) == ("fills_timeout", p.fill_timeout_s)


def test_unwind_policy_is_reduce_only_and_ends_with_a_sliced_market_rung():
    p = params(order_style="post_only", post_only_attempts=1, unwind_ioc_attempts=2)
    pol = WorkPolicy.unwind(p)
    assert [r.tif for r in pol.ladder] == ["post_only", "ioc", "ioc", "ioc"]
    assert pol.ladder[-1].sliced
    assert pol.ladder[-1].label == "unwind market"
    assert pol.ladder[-1].bps >= pol.ladder[-2].bps  # never less than the last IOC rung
    assert pol.reduce_only
    assert not pol.pretrade_checks
    assert not pol.reject_ends_work


def test_exit_policy_walks_the_exit_ladder_under_one_budget():
    p = params(exit_ladder_bps=["50", "100"])
    pol = WorkPolicy.exit(p)
    assert [r.bps for r in pol.ladder] == [D(50), D(100)]
    assert all(r.sliced and r.tif == "ioc" for r in pol.ladder)
    assert pol.rung(5) == pol.ladder[-1]  # past the end: the last step again
    assert pol.budget_s == p.exit_budget_s
    assert not pol.hedge_deadline
    assert pol.max_rounds == ATTEMPT_CAP * p.exit_attempts
    assert (pol.round_deadline, pol.round_timeout_s) == (
        "attempt_timeout",
        p.exit_attempt_timeout_s,
    )


def test_a_policy_reads_no_per_cycle_field_and_is_worked_out_once_per_template():
    """`WorkPolicy.of` gives the policy worked out last time while the shared fields hold
    the very same objects: sound only because no policy reads a PER_CYCLE field."""
    template = params(execution="maker_first", order_style="post_only")
    shared = {f.name: getattr(template, f.name) for f in attrs.fields(CycleParams)}
    shared = {k: v for k, v in shared.items() if k not in PER_CYCLE}
    one = CycleParams(**shared, cycle=3, long=ETH, short=SOL, carry_usd="0.5")
    two = CycleParams(**shared, cycle=4, long=SOL, short=ETH, carry_usd="-1.25")
    assert two.exit_ladder_bps is one.exit_ladder_bps  # the template's, not a copy
    for purpose, make in (
        ("build", WorkPolicy.build),
        ("unwind", WorkPolicy.unwind),
        ("exit", WorkPolicy.exit),
    ):
        assert make(one) == make(two)  # the per-cycle fields change nothing
        first = WorkPolicy.of(purpose, one)
        assert first == make(one)
        assert WorkPolicy.of(purpose, two) is first
        # a shared field holding another object: worked out again, from it
        other = attrs.evolve(two, cross_bps=D(7), exit_ladder_bps=(D(60), D(200)))
        again = WorkPolicy.of(purpose, other)
        assert again == make(other)
        assert again != first
