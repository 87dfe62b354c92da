"""The price process: volatility, correlation, jumps, determinism; and the crowd's book shape."""

from __future__ import annotations

import itertools
import math
import statistics
from decimal import Decimal

from adapters.sim.exchange import Exchange
from adapters.sim.faults import parse_profile
from adapters.sim.products import resolve

S = 1_000_000_000
ETH, SOL = 4, 8


def mids(profile: str, seconds: int, seed: int = 3) -> list[tuple[Decimal, Decimal]]:
    ex = Exchange(resolve(["ETH-PERP", "SOL-PERP"]), seed=seed, profile=parse_profile(profile))
    out = []
    for t in range(seconds + 1):
        ex.advance_to(t * S)
        out.append((ex.mid(ETH), ex.mid(SOL)))
    return out


def log_returns(series: list[Decimal]) -> list[float]:
    return [math.log(b / a) for a, b in itertools.pairwise(series)]


def test_realised_volatility_matches_the_knob():
    for vol in (5, 20):
        path = mids(f"[market]\nvolatility_bps_per_sqrt_s = {vol}\n", 1500)
        r = log_returns([p[0] for p in path])
        realised_bps = statistics.pstdev(r) * 1e4  # per sqrt(second)
        assert abs(realised_bps - vol) < 0.1 * vol


def test_zero_volatility_keeps_the_mid_still():
    path = mids("[market]\nvolatility_bps_per_sqrt_s = 0\n", 30)
    assert set(path) == {(Decimal(3000), Decimal(150))}


def test_correlation_knob_sets_the_co_movement():
    for rho in (0.0, 0.8):
        path = mids(f"[sim]\ncorrelation = {rho}\n", 1500)
        a = log_returns([p[0] for p in path])
        b = log_returns([p[1] for p in path])
        assert abs(statistics.correlation(a, b) - rho) < 0.1


def test_a_jump_moves_one_product_by_its_bps_at_its_time():
    profile = (
        "[market]\nvolatility_bps_per_sqrt_s = 0\n"
        'jumps = [{ at_s = 5, bps = -500, product = "SOL-PERP" }]\n'
    )
    path = mids(profile, 10)
    assert path[4] == (Decimal(3000), Decimal(150))
    assert path[5] == (Decimal(3000), Decimal("142.5"))
    assert path[10][1] == Decimal("142.5")


def test_the_market_is_a_function_of_the_seed_only():
    assert mids("", 50, seed=1) == mids("", 50, seed=1)
    assert mids("", 50, seed=1) != mids("", 50, seed=2)


def test_how_often_it_is_looked_at_does_not_change_the_path():
    ex_a = Exchange(resolve(["ETH-PERP"]), seed=5)
    ex_b = Exchange(resolve(["ETH-PERP"]), seed=5)
    for t in range(1, 200):
        ex_a.advance_to(t * 37_000_000)
    ex_a.advance_to(10 * S)
    ex_b.advance_to(10 * S)
    assert ex_a.mid(ETH) == ex_b.mid(ETH)
    assert ex_a.bbo(ETH) == ex_b.bbo(ETH)


def test_book_is_on_tick_with_sizes_on_increment_and_depth_grows_away_from_mid():
    ex = Exchange(resolve(["ETH-PERP", "SOL-PERP"]), seed=2)
    ex.advance_to(S)
    for pid, tick, inc in (
        (ETH, Decimal("0.1"), Decimal("0.001")),
        (SOL, Decimal("0.01"), Decimal("0.01")),
    ):
        bids, asks = ex.depth(pid, 10)
        assert len(bids) == len(asks) == 10
        assert bids[0][0] < ex.mid(pid) < asks[0][0]
        assert all(p % tick == 0 for p, _ in bids + asks)
        assert all(q % inc == 0 and q > 0 for _, q in bids + asks)
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
        assert [p for p, _ in asks] == sorted(p for p, _ in asks)
        assert sum(q for _, q in asks[5:]) > sum(q for _, q in asks[:5])
