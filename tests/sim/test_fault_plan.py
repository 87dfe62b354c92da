"""One pure, seeded fault plan decides every wire fault for both transports: the in-process
sim (rest.py, feed.py, channel.py) and `dnpair venue serve` (server/app.py) ask it the same
questions and only carry the answers out differently."""

from __future__ import annotations

import re
from pathlib import Path

from adapters.sim.faultplan import FaultPlan
from adapters.sim.faultplan import RequestFate
from adapters.sim.faults import parse_profile
from adapters.sim.server import ServerOptions
from adapters.sim.server import VenueServer
from adapters.sim.venue import SimVenue
from engine.core.clock import VirtualClock

SIM = Path(__file__).resolve().parents[2] / "adapters" / "sim"
PROFILE = parse_profile(
    """
[rest]
latency_ms = [5, 50]
timeout = 0.2
rate_limit = [{ at_s = 10, for_s = 5 }]
[venue]
down = [{ at_s = 30, for_s = 2 }]
[ws]
drop = 0.1
duplicate = 0.2
reorder = 0.3
delay_ms = [0, 20]
disconnect_mean_s = 60
[market]
stale_bbo = 0.1
crossed_bbo = 0.05
"""
)
S = 1_000_000_000


def decisions(plan: FaultPlan, n: int = 400) -> list[object]:
    out: list[object] = []
    pushes = plan.pushes("ws")
    for i in range(n):
        out.append(plan.request(effectful=i % 3 == 0))
        out.append(plan.quote(has_last=i > 0))
        out.append((pushes.drops(), pushes.copies(), pushes.holds(), pushes.delay_ns()))
    out.append([plan.next_disconnect_ns() for _ in range(5)])
    return out


def test_the_plan_is_a_function_of_profile_and_seed() -> None:
    assert decisions(FaultPlan(PROFILE, 7)) == decisions(FaultPlan(PROFILE, 7))
    assert decisions(FaultPlan(PROFILE, 7)) != decisions(FaultPlan(PROFILE, 8))


def test_request_fates_follow_the_profile() -> None:
    plan = FaultPlan(PROFILE, 3)
    fates = [plan.request(effectful=i % 2 == 0) for i in range(4000)]
    lost = [f for f in fates if f.lost]
    assert 0.17 < len(lost) / len(fates) < 0.23  # rest.timeout = 0.2
    applied = [f for i, f in enumerate(fates) if f.applied]
    assert applied
    assert all(f.lost for f in applied)  # only a lost request "applies"
    # only effectful requests (even i) ever take effect unanswered; about half of them
    assert all(i % 2 == 0 for i, f in enumerate(fates) if f.applied)
    effectful_lost = [f for i, f in enumerate(fates) if f.lost and i % 2 == 0]
    assert 0.4 < len(applied) / len(effectful_lost) < 0.6
    assert all(5_000_000 <= f.in_ns <= 50_000_000 for f in fates)
    assert all(5_000_000 <= f.out_ns <= 50_000_000 for f in fates)
    quiet = FaultPlan(parse_profile(""), 3)
    assert {quiet.request(effectful=True) for _ in range(100)} == {RequestFate()}


def test_windows_are_looked_up_half_open() -> None:
    plan = FaultPlan(PROFILE, 1)
    assert plan.rate_limited(10 * S - 1) is None
    window = plan.rate_limited(10 * S)
    assert window is not None
    assert window.end_ns == 15 * S
    assert plan.rate_limited(15 * S) is None
    assert plan.down(31 * S) is not None
    assert plan.down(32 * S) is None
    assert plan.goes_down_between(29 * S, 30 * S)
    assert not plan.goes_down_between(30 * S, 31 * S)  # already down: not "going down"


def test_quotes_are_stale_only_with_a_previous_one() -> None:
    plan = FaultPlan(parse_profile("[market]\nstale_bbo = 1.0"), 1)
    assert plan.quote(has_last=False) == "fresh"
    assert plan.quote(has_last=True) == "stale"
    assert FaultPlan(parse_profile(""), 1).next_disconnect_ns() is None


def test_both_transports_hold_the_same_plan() -> None:
    sim = SimVenue(VirtualClock(), seed=5, faults=PROFILE)
    server = VenueServer(ServerOptions(seed=5, profile=PROFILE))
    assert decisions(sim.plan) == decisions(server.plan) == decisions(FaultPlan(PROFILE, 5))


def test_fault_decisions_live_in_the_plan_only() -> None:
    """No transport reads a fault probability or draws a fault itself: `[rest]`, `[ws]`,
    `venue.down` and the quote faults are decided in faultplan.py (the exchange core keeps
    the `[orders]`/`[market]` venue model, which both transports share already)."""
    knobs = re.compile(
        r"profile\.(rest|ws)\b|profile\.venue\.down|market\.(stale_bbo|crossed_bbo)"
        r"|\brandom\.|expovariate|_rng\b|faults\.(drop|duplicate|reorder|delay_ms)"
    )
    for rel in ("rest.py", "feed.py", "channel.py", "server/app.py"):
        text = (SIM / rel).read_text()
        found = knobs.findall(text)
        assert not found, f"{rel}: {found}"
