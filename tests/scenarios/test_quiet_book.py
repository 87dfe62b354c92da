"""A quiet book still trades; a quiet book without REST does not (issue 11, item 2).

The sim pushes a BBO only when the top of book changes (as Nado does, nado-protocol.md
§13; `[market] bbo_push = "on_change"`, the default) and a `[market] quiet` window over
the whole run stills the market model, so after the first push the stream says nothing
about prices except where the engine's own orders move the top. BUILD's freshness check
measures the time since the quote was last confirmed; the venue adapter confirms a quiet
quote by REST at half the age limit.
Whole sessions on the virtual clock.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from adapters.sim.faults import parse_profile
from adapters.sim.venue import SimVenue
from engine.core.clock import VirtualClock
from engine.core.events import VenueError
from engine.core.intents import Intent
from engine.core.intents import QueryMarketPrices
from engine.core.journal import Journal
from engine.runtime.compose import build_session
from engine.runtime.config import load_settings
from engine.runtime.run import RunOptions
from engine.runtime.run import parse_pair

QUIET = "[market]\nvolatility_bps_per_sqrt_s = 0\nquiet = [{ at_s = 0, for_s = 3600 }]\n"
PAIR = ("ETH-PERP", "SOL-PERP")


def rest_quotes_fail(venue: SimVenue) -> None:
    rest = venue._rest
    submit = rest.submit

    def failing(intent: Intent) -> None:
        if isinstance(intent, QueryMarketPrices):
            err = VenueError(
                error_class="retryable",
                request=intent.kind,
                request_id=intent.request_id,
                message="unreachable",
            )
            venue._sched.later(50_000_000, lambda: venue._emit(err))
            return
        submit(intent)

    rest.submit = failing  # type: ignore[method-assign]


def run(
    *, cycles: int, hold_s: int, quiet_quote_s: Decimal = Decimal(1), rest_fails: bool = False
) -> tuple[dict[str, Any], list[Any], SimVenue]:
    clock = VirtualClock()
    venue = SimVenue(clock, 5, parse_profile(QUIET), PAIR, quiet_quote_s=quiet_quote_s)
    if rest_fails:
        rest_quotes_fail(venue)
    opts = RunOptions(pair=parse_pair("ETH-SOL"), cycles=cycles, clock="virtual", seed=5)
    # Each cycle's own IOCs change the top (a push, as on Nado), so the next BUILD waits
    # DN_PAUSE_S (10 s) > DN_BBO_MAX_AGE_SECONDS (2 s) after the last change.
    # taker: a resting maker_first order moves the top itself (pushes this test counts)
    env = {"DN_HOLD_S": str(hold_s), "DN_PAUSE_S": "10", "DN_MAX_ABORTS": "2"}
    env["DN_EXECUTION"] = "taker"
    settings = load_settings(env=env)
    session = build_session(
        opts, settings, venue=venue, clock=clock, journal=Journal(":memory:"), out=lambda _: None
    )
    asyncio.run(session.run_virtual())
    return session.summary(), session.engine.journal.records(), venue


def stale_refusals(records: list[Any]) -> list[str]:
    return [
        str(r.data.get("reason", ""))
        for r in records
        if r.kind == "note" and "stale BBO" in str(r.data.get("reason", ""))
    ]


def test_a_book_quiet_for_a_minute_still_builds() -> None:
    summary, records, venue = run(cycles=2, hold_s=60)
    assert summary["cycles_completed"] == 2
    assert stale_refusals(records) == []
    assert venue.stats["adapter_quote_refresh"] >= 55  # about one a second while quiet
    # the stream really was quiet: a handful of pushes for a run of over a minute
    pushed = [
        r
        for r in records
        if r.kind == "event"
        and r.data.get("kind") == "bbo_updated"
        and r.data.get("ts_venue_ns") is not None
    ]
    assert len(pushed) < 20


def test_without_rest_confirmation_the_quiet_book_is_refused() -> None:
    """The control: the same run with the refresh off is the issue's failure."""
    summary, records, _ = run(cycles=2, hold_s=60, quiet_quote_s=Decimal(10**6))
    assert summary["cycles_completed"] < 2
    assert stale_refusals(records)


def test_stream_quiet_and_rest_failing_refuses_build() -> None:
    summary, records, venue = run(cycles=2, hold_s=60, rest_fails=True)
    assert summary["cycles_completed"] < 2
    assert stale_refusals(records)
    # REST was asked all along (at least once a second) and never confirmed anything.
    elapsed_s = venue.clock.now_ns() // 1_000_000_000
    assert elapsed_s >= 20  # two refused BUILDs, DN_PAUSE_S apart
    assert venue.stats["adapter_quote_refresh"] >= elapsed_s - 1
