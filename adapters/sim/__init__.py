"""The embedded simulated venue: exchange core, fault profiles and the SimVenue adapter.

`Exchange` (exchange.py) is the deterministic core and knows nothing of clocks or
transports; `SimVenue` (venue.py) puts it behind the engine's VenuePort with latency
and faults. A network face can reuse the core and `PushChannel` the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.sim.exchange import Exchange
from adapters.sim.faults import FaultProfile
from adapters.sim.faults import FaultProfileError
from adapters.sim.faults import load_profile
from adapters.sim.faults import parse_profile
from adapters.sim.venue import DEFAULT_SYMBOLS
from adapters.sim.venue import SimVenue
from engine.clock import Clock

__all__ = [
    "Exchange",
    "FaultProfile",
    "FaultProfileError",
    "SimVenue",
    "load_profile",
    "make_sim_venue",
    "parse_profile",
]


def make_sim_venue(
    *,
    clock: Clock,
    seed: int = 0,
    faults_path: str | None = None,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
) -> SimVenue:
    """The sim venue `dnpair run` uses. Raises ValueError (FaultProfileError) for a bad
    profile or an unknown symbol."""
    profile = load_profile(faults_path) if faults_path else FaultProfile()
    return SimVenue(clock, seed, profile, symbols)
