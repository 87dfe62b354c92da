"""The embedded simulated venue: exchange core, fault profiles and the SimVenue adapter.

`Exchange` (exchange.py) is the deterministic core and knows nothing of clocks or
transports; `SimVenue` (venue.py) puts it behind the engine's VenuePort with latency
and faults. A network face can reuse the core and `PushChannel` the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from adapters.sim.exchange import Exchange
from adapters.sim.faults import FaultProfile
from adapters.sim.faults import FaultProfileError
from adapters.sim.faults import load_profile
from adapters.sim.faults import parse_profile
from adapters.sim.venue import DEFAULT_SYMBOLS
from adapters.sim.venue import SimVenue
from engine.core.clock import Clock

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
    bbo_max_age_s: Decimal | None = None,
) -> SimVenue:
    """The sim venue `dnpair run` uses. Raises ValueError (FaultProfileError) for a bad
    profile or an unknown symbol. A quote the stream left unconfirmed for half
    `bbo_max_age_s` (default 2 s) is asked by REST."""
    profile = load_profile(faults_path) if faults_path else FaultProfile()
    quiet = (bbo_max_age_s if bbo_max_age_s is not None else Decimal(2)) / 2
    return SimVenue(clock, seed, profile, symbols, quiet_quote_s=quiet)
