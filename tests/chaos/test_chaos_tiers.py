"""The seeded chaos tiers: sim sessions under every shipped fault profile (and profiles
drawn at random from the whole knob space), every invariant of engine/harness/invariants.py
checked after every engine step, at rest and by replay.

Fast tier (`make test`): 10 distinct seeds x 3 cycles per profile (3 for the 20 s position
lag profiles, whose cycles take ~48 simulated seconds each).
Deep tier (`make deep`): 200 seeds x 5 cycles per profile, windows jittered by seed, and
the fast tier's next 10 (3) seeds per profile, run as the fast tier runs them (they were
in the fast tier until `make test` had to fit in 3 minutes on 2 cores).
"""

from __future__ import annotations

import pytest

from engine.harness.chaos import ChaosProfile
from engine.harness.chaos import RunResult
from engine.harness.chaos import random_profile
from engine.harness.chaos import run_one
from engine.harness.chaos import shipped_profiles
from engine.runtime.config import load_settings
from tests.tiers import deep

PROFILES = {p.name: p for p in shipped_profiles()}
NAMES = [*sorted(PROFILES), "random"]
FAST_PER_PROFILE = 10  # distinct seeds per profile
FAST_SEEDS = {"position_lag_20s": 3, "position_lag_20s_legging": 3}  # slower runs
SEED_BLOCK = 20  # each profile's block of seeds: the fast tier's, then the deep tier's


def _check(results: list[RunResult]) -> None:
    bad = [r for r in results if r.violations]
    report = "\n".join(
        f"seed {r.seed} profile {r.profile}: {v}\n  reproduce: {r.reproduce}"
        for r in bad
        for v in r.violations
    )
    assert not bad, f"{len(bad)} run(s) broke an invariant:\n{report}"


def _profile(name: str, seed: int) -> ChaosProfile:
    return random_profile(seed) if name == "random" else PROFILES[name]


def test_every_shipped_profile_is_found():
    expected = {
        "incident_cycle6_ioc_no_fill",
        "incident_seed002_partial_cancel",
        "incident_bug003_price_falls",
        "incident_seed003_position_lag",
        "flaky_ws",
        "rate_limit_storm",
        "venue_down",
        "bad_market_data",
        "rest_timeouts_rejects",
        "lost_pushes_and_answers",
        "everything",
        "position_lag_20s",
        "position_lag_20s_legging",
        "unknown_order_fills",
        "absurd_position",
        "skewed_quote",
    }
    assert expected <= set(PROFILES)


def _fast_seeds(name: str, block: int) -> range:
    """Block 0 runs in `make test`, block 1 (the seeds after it) in `make deep`."""
    n = FAST_SEEDS.get(name, FAST_PER_PROFILE)
    first = 1 + NAMES.index(name) * SEED_BLOCK + block * n
    return range(first, first + n)


@pytest.mark.parametrize("name", NAMES)
def test_chaos_fast_tier(name, settings):
    _fast_tier(name, _fast_seeds(name, 0), settings)


@deep
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_chaos_fast_tier_more_seeds(name, settings):
    _fast_tier(name, _fast_seeds(name, 1), settings)


def _fast_tier(name, seeds, settings):
    results = [run_one(seed, _profile(name, seed), cycles=3, settings=settings) for seed in seeds]
    _check(results)
    assert all(r.outcome in ("flat", "halted") for r in results)
    if name == "position_lag_20s":
        # Issue 11: a 20 s lag and no other fault: every cycle completes, slower; none halts.
        assert all(r.outcome == "flat" and r.cycles_completed == 3 for r in results)
        assert all(max(r.cycle_s) > 20 for r in results)
    if name == "unknown_order_fills":
        assert all(r.outcome == "halted" and "never placed" in r.halt_reason for r in results)
    if name == "absurd_position":
        assert all(r.outcome == "halted" and "far beyond" in r.halt_reason for r in results)
    if name in ("incident_cycle6_ioc_no_fill", "flaky_ws", "incident_seed002_partial_cancel"):
        # Faults the engine must absorb: most sessions still finish flat.
        assert sum(r.outcome == "flat" for r in results) >= len(results) * 3 // 4


@deep
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_chaos_deep_tier(name, settings):
    results = [
        run_one(seed, _profile(name, seed), cycles=5, settings=settings, jitter_s=20)
        for seed in range(1000, 1200)
    ]
    _check(results)


# -- maker_first (issue 14): the same invariants with one leg resting and hedged per fill ----
MAKER_FAST_SEEDS = 2  # per profile in `make test`; `dnpair chaos --execution maker_first`
# runs any number (the deep tier below: 50 per profile)


@pytest.fixture(scope="module")
def maker_settings():
    return load_settings(env={"DN_EXECUTION": "maker_first"})


@pytest.mark.parametrize("name", NAMES)
def test_chaos_fast_tier_maker_first(name, maker_settings):
    first = 500 + NAMES.index(name) * MAKER_FAST_SEEDS
    seeds = range(first, first + MAKER_FAST_SEEDS)
    results = [
        run_one(seed, _profile(name, seed), cycles=3, settings=maker_settings) for seed in seeds
    ]
    _check(results)
    assert all(r.outcome in ("flat", "halted") for r in results)
    assert all("--execution maker_first" in r.reproduce for r in results)
    if name in ("position_lag_20s", "incident_cycle6_ioc_no_fill"):
        assert all(r.outcome == "flat" and r.cycles_completed == 3 for r in results)


@deep
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_chaos_deep_tier_maker_first(name, maker_settings):
    results = [
        run_one(seed, _profile(name, seed), cycles=5, settings=maker_settings, jitter_s=20)
        for seed in range(2000, 2050)
    ]
    _check(results)
    assert all(r.outcome in ("flat", "halted") for r in results)
