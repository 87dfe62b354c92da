"""Start-up: discovery (discovery.py) with a few retries, the subaccount check, and the
stream's subscriptions. Nothing is sent to the book before `NadoVenue.start` returns.
"""

from __future__ import annotations

from typing import Any

from adapters.nado.client import GatewayError
from adapters.nado.core import NS
from adapters.nado.core import Core
from adapters.nado.discovery import Discovery
from adapters.nado.discovery import DiscoveryError
from adapters.nado.discovery import VenueUnavailable
from adapters.nado.discovery import discover
from adapters.nado.queries import parse_subaccount_info
from adapters.nado.ratelimit import Priority
from adapters.nado.wire import MalformedFrame
from adapters.sleep import clock_sleep

__all__ = ["check_subaccount", "discover_venue", "subscriptions"]


async def discover_venue(core: Core) -> Discovery:
    """The venue's contracts and products; permanent failures (a venue that is not the
    configured one) raise DiscoveryError at once, others VenueUnavailable after
    `discovery_attempts` tries."""
    settings = core.settings

    async def query(params: Any) -> Any:
        return await core.client.query(params, request="discovery", priority=Priority.RISK)

    last: GatewayError | None = None
    for attempt in range(1, settings.discovery_attempts + 1):
        try:
            return await discover(query, settings.pair, settings.expect)
        except GatewayError as exc:
            last = exc
            if exc.error_class == "permanent":
                break
            await clock_sleep(core.clock, min(NS // 2 * attempt, 2 * NS))
    assert last is not None
    error = DiscoveryError if last.error_class == "permanent" else VenueUnavailable
    raise error(
        f"venue discovery failed at {settings.gateway_url}: {last.classified.reason}"
        f"{': ' + last.classified.message if last.classified.message else ''}"
    )


async def check_subaccount(core: Core) -> None:
    """The signer's subaccount exists on this venue (DiscoveryError if not)."""
    assert core.signer is not None
    sender = core.signer.sender
    try:
        data = await core.client.query(
            {"type": "subaccount_info", "subaccount": sender},
            request="discovery",
            priority=Priority.RISK,
        )
        info = parse_subaccount_info(data)
    except (GatewayError, MalformedFrame) as exc:
        permanent = isinstance(exc, GatewayError) and exc.error_class == "permanent"
        error = DiscoveryError if permanent else VenueUnavailable
        raise error(f"cannot read subaccount {sender}: {exc}") from None
    if not info.exists:
        raise DiscoveryError(f"subaccount {sender} does not exist on this venue (deposit first)")


def subscriptions(core: Core) -> list[dict[str, Any]]:
    """best_bid_offer per product, and the private streams of our subaccount."""
    assert core.signer is not None
    sender = core.signer.sender
    subs: list[dict[str, Any]] = []
    for pid in core.symbols:
        subs.append({"type": "best_bid_offer", "product_id": pid})
        subs.extend(
            {"type": kind, "subaccount": sender, "product_id": pid}
            for kind in core.settings.private_streams
        )
    return subs
