"""The chaos tier in paper mode, on the virtual clock: paper trading fed by the
in-process simulator's market data (adapters/paper/simsource.py) under every shipped
fault profile and generated ones; every invariant of engine/harness/invariants.py checked after
every step, at rest and by replay, against the local matcher's ground truth. The
profiles' market-data faults (stale / crossed quotes, jumps, stream drops, down windows)
reach the engine through the BBO gate and the connection machine, as live data does.

Fast tier (`make test`): 1 seed per profile. Deep tier (`make deep`): 100 per profile, and
each profile's second fast-tier seed, run as the fast tier runs it (it was in the fast
tier until `make test` had to fit in 3 minutes on 2 cores)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.harness.chaos import ChaosProfile
from engine.harness.chaos import RunResult
from engine.harness.chaos import random_profile
from engine.harness.chaos import run_one
from engine.harness.chaos import shipped_profiles
from tests.tiers import deep

PROFILES = {p.name: p for p in shipped_profiles()}
NAMES = [*sorted(PROFILES), "random"]
FAST_PER_PROFILE = 1
SEED_BLOCK = 2  # each profile's seeds: the fast tier's first, then the deep tier's


def _profile(name: str, seed: int) -> ChaosProfile:
    return random_profile(seed) if name == "random" else PROFILES[name]


def _check(results: list[RunResult]) -> None:
    bad = [r for r in results if r.violations]
    report = "\n".join(
        f"seed {r.seed} profile {r.profile}: {v}\n  reproduce: {r.reproduce}"
        for r in bad
        for v in r.violations
    )
    assert not bad, f"{len(bad)} paper run(s) broke an invariant:\n{report}"


@pytest.fixture(scope="module")
def settings():
    from engine.runtime.config import load_settings

    return load_settings(env={})


def _fast_seeds(name: str, block: int) -> range:
    """Block 0 runs in `make test`, block 1 (the seeds after it) in `make deep`."""
    first = 5001 + NAMES.index(name) * SEED_BLOCK + block * FAST_PER_PROFILE
    return range(first, first + FAST_PER_PROFILE)


@pytest.mark.parametrize("name", NAMES)
def test_paper_chaos_fast_tier(name: str, settings: Any) -> None:
    _fast_tier(name, _fast_seeds(name, 0), settings)


@deep
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_paper_chaos_fast_tier_more_seeds(name: str, settings: Any) -> None:
    _fast_tier(name, _fast_seeds(name, 1), settings)


def _fast_tier(name: str, seeds: range, settings: Any) -> None:
    results = [
        run_one(seed, _profile(name, seed), cycles=3, settings=settings, venue_kind="paper")
        for seed in seeds
    ]
    _check(results)
    assert all(r.outcome in ("flat", "halted") for r in results)
    assert all("--venue paper" in r.reproduce for r in results)


def _paper_run(name: str, seed: int, settings: Any) -> tuple[RunResult, Any, Any]:
    held: dict[str, Any] = {}
    result = run_one(
        seed,
        PROFILES[name],
        cycles=3,
        settings=settings,
        venue_kind="paper",
        attach=lambda engine, venue: held.update(venue=venue, engine=engine),
    )
    return result, held["venue"], held["engine"]


def test_bad_quotes_are_refused_by_the_gate_and_replaced_by_rest(settings: Any) -> None:
    result, venue, engine = _paper_run("bad_market_data", 3, settings)
    _check([result])
    assert venue.source.stats["bbo_rejected.crossed"] > 0
    quotes = [
        r.data
        for r in engine.journal.records()
        if r.kind == "event" and '"bbo_updated"' in r.payload
    ]
    assert quotes
    assert all(Decimal(q["ask"]) > Decimal(q["bid"]) for q in quotes)  # none crossed
    assert result.outcome in ("flat", "halted")
    assert venue.stats["fills"] > 0  # it traded on the quotes that passed


def test_stream_drops_go_through_the_connection_machine(settings: Any) -> None:
    result, venue, _ = _paper_run("flaky_ws", 4, settings)
    _check([result])
    assert result.outcome == "flat"
    assert venue.source.stats["snapshots.connect"] == 2
    assert venue.source.stats["snapshots.reconnect"] >= 2  # re-seeded after each reconnect
    assert venue.source.sim.exchange.open_orders(venue.source.sim.subaccount) == []


@deep
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_paper_chaos_deep_tier(name: str, settings: Any) -> None:
    results = [
        run_one(
            seed,
            _profile(name, seed),
            cycles=5,
            settings=settings,
            jitter_s=20,
            venue_kind="paper",
        )
        for seed in range(3000, 3100)
    ]
    _check(results)
