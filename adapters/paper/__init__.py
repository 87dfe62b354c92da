"""Paper trading: Nado's live public market data, orders matched locally, no key.

`dnpair run --venue paper [--network testnet|mainnet | --network local --gateway URL]`.
See adapters/paper/venue.py for the structure, source.py for the market data,
exchange.py and book.py for the fill model. Nothing here can reach an execute endpoint.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from decimal import Decimal

import attrs

from adapters.nado.discovery import Expectations
from adapters.nado.factory import NETWORKS
from adapters.paper.simsource import SimMarketSource
from adapters.paper.source import NadoMarketSource
from adapters.paper.source import PaperSettings
from adapters.paper.venue import PAPER_SUBACCOUNT
from adapters.paper.venue import PaperVenue
from adapters.sim.faults import FaultProfile
from engine.core.clock import Clock
from engine.core.clock import VirtualClock
from engine.runtime.config import ConfigError

__all__ = [
    "PAPER_SUBACCOUNT",
    "PaperVenue",
    "make_paper_venue",
    "paper_settings",
    "sim_paper_venue",
]


def paper_settings(*, network: str, gateway: str | None, pair: Sequence[str]) -> PaperSettings:
    """Network and gateway checked as for `--venue nado` (nado-protocol.md §1.1); no key."""
    net = NETWORKS.get(network)
    if net is None:
        raise ConfigError(f"--network: one of {', '.join(NETWORKS)}, got {network!r}")
    url = gateway or net.gateway
    if url is None:
        raise ConfigError(f"--network {network} has no default gateway: pass --gateway URL")
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
        raise ConfigError(f"--gateway: expected http(s)://HOST[:PORT]/v1, got {url!r}")
    expect = Expectations(chain_id=net.chain_id, endpoint_addr=net.endpoint_addr)
    return PaperSettings(gateway_url=url.rstrip("/"), pair=tuple(pair), expect=expect)


def make_paper_venue(
    *,
    clock: Clock,
    network: str,
    gateway: str | None,
    pair: Sequence[str],
    seed: int = 0,
    bbo_max_age_s: Decimal | None = None,
) -> PaperVenue:
    """The venue `dnpair run --venue paper` trades on. Raises ConfigError (exit 2).
    A quote the stream left unconfirmed for half `bbo_max_age_s` is asked by REST."""
    if isinstance(clock, VirtualClock):
        raise ConfigError(
            "--venue paper trades on live prices, on the wall clock only (drop --clock "
            "virtual; the sim venue runs on the virtual clock)"
        )
    settings = paper_settings(network=network, gateway=gateway, pair=pair)
    if bbo_max_age_s is not None:
        settings = attrs.evolve(settings, quiet_quote_s=bbo_max_age_s / 2)
    source = NadoMarketSource(settings, clock=clock, unix_ns=time.time_ns)
    return PaperVenue(source, clock, seed=seed)


def sim_paper_venue(
    clock: Clock, seed: int, profile: FaultProfile, pair: Sequence[str]
) -> PaperVenue:
    """Paper trading fed by the in-process simulator's market data (chaos tier, tests):
    the profile's market and stream faults hit the market data; its order and REST
    faults hit the local matcher's request face, as for the sim venue."""
    return PaperVenue(
        SimMarketSource(clock, seed, profile, pair), clock, seed=seed, profile=profile
    )
