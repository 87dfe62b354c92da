"""Quiet books and lost pushes in the Nado adapter (issue 11, items 2 and 7), virtual clock.

Nado pushes a BBO only when the book changes: the adapter keeps each quote confirmed by
asking REST once the stream has said nothing about a product for `quiet_quote_s`. An
IOC's outcome is decided at its ack: if the stream does not tell within two round trips,
the adapter asks at once instead of leaving it to the engine's fill timeout.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest

from adapters.nado.archive import ArchiveOrder
from engine.core.events import BboUpdated
from engine.core.events import OrderExpired
from engine.core.events import OrderStatus
from engine.core.intents import PlaceOrder
from tests.nado.offline import ETH
from tests.nado.offline import MS
from tests.nado.offline import OfflineVenue
from tests.nado.offline import S
from tests.nado.offline import bbo_frame
from tests.nado.offline import order_update_frame
from tests.nado.offline import unreachable

pytestmark = pytest.mark.asyncio

D = Decimal


def ioc(oid: str = "o1", qty: str = "1") -> PlaceOrder:
    return PlaceOrder(
        order_id=oid, product_id=ETH, side="buy", qty=D(qty), price=D(3010), tif="ioc"
    )


class FakeArchive:
    """The indexer: answers after one round trip with what `known` holds."""

    def __init__(self, rig: OfflineVenue, settle_s: int = 10) -> None:
        self.rig, self.settle_s = rig, settle_s
        self.known: dict[str, ArchiveOrder] = {}
        self.asked: list[int] = []
        self.fail = False

    async def orders(self, digests: Any, *, request: str) -> dict[str, ArchiveOrder]:
        self.asked.append(self.rig.clock.now_ns())
        await self.rig.gateway._trip()
        if self.fail:
            raise unreachable(request)
        return {d: self.known[d] for d in digests if d in self.known}

    def settled(self, order: ArchiveOrder) -> bool:
        now_s = self.rig.unix_ns() // S
        return order.complete or now_s - order.last_s >= self.settle_s

    async def aclose(self) -> None:
        pass


# -- quiet books -------------------------------------------------------------------------------
async def test_a_quiet_stream_is_confirmed_by_rest_every_half_max_age() -> None:
    rig = OfflineVenue(rtt_ms=50, quiet_quote_s=D(1))
    await rig.start()
    await rig.frame(bbo_frame("3000", "3000.5", ts_ns=rig.unix_ns()))
    pushed_at = rig.clock.now_ns()
    await rig.run(60_000)  # a minute without a single push
    quotes = [(t, e) for t, e in rig.events if isinstance(e, BboUpdated)]
    assert quotes[0][0] == pushed_at
    assert quotes[0][1].ts_venue_ns is not None
    # Every later quote is a REST answer; none is ever more than max age/2 + one RTT apart.
    stamps = [pushed_at] + [t for t, e in quotes[1:] if e.ts_venue_ns is None]
    assert len(stamps) == len(quotes)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) >= 55
    assert max(gaps) <= 1 * S + 50 * MS
    assert rig.clock.now_ns() - stamps[-1] <= 1 * S + 50 * MS
    await rig.close()


async def test_pushes_keep_rest_quiet() -> None:
    rig = OfflineVenue(rtt_ms=50, quiet_quote_s=D(1))
    await rig.start()
    for i in range(40):  # a push every 500 ms for 20 s
        bid = D(3000) + D(i) / 10
        await rig.frame(bbo_frame(str(bid), str(bid + D("0.5")), ts_ns=rig.unix_ns()))
        await rig.run(500)
    assert rig.gateway.sent("market_prices") == []  # every quote confirmed by a push
    await rig.close()


async def test_rest_failing_on_a_quiet_stream_confirms_nothing() -> None:
    rig = OfflineVenue(rtt_ms=50, quiet_quote_s=D(1))
    await rig.start()
    await rig.frame(bbo_frame("3000", "3000.5", ts_ns=rig.unix_ns()))
    rig.gateway.quotes_fail = True
    await rig.run(10_000)
    assert len(rig.of(BboUpdated)) == 1
    asked = rig.gateway.sent("market_prices")
    assert len(asked) >= 10  # it keeps asking, at most twice a second
    assert all(b - a >= 500 * MS for a, b in itertools.pairwise(asked))
    failed = rig.venue.stats["quote_refresh_failed.connect_error"]
    assert len(asked) - 1 <= failed <= len(asked)  # the last one may still be out
    await rig.close()


async def test_no_rest_quotes_while_the_stream_is_down() -> None:
    """The connection machine polls quotes then (its own cadence, README)."""
    rig = OfflineVenue(rtt_ms=50, quiet_quote_s=D(1))
    await rig.start()
    rig.stream.connected = False
    await rig.run(10_000)
    assert rig.gateway.sent("market_prices") == []
    await rig.close()


# -- lost pushes -----------------------------------------------------------------------------
async def test_an_ioc_whose_push_is_lost_is_resolved_two_round_trips_after_its_ack() -> None:
    rig = OfflineVenue(rtt_ms=50, archive_url="http://127.0.0.1:9/archive")
    await rig.start()
    archive = FakeArchive(rig)
    rig.venue.archive = archive  # type: ignore[assignment]
    sent = rig.clock.now_ns()
    digest = await rig.place(ioc())
    acked = sent + 50 * MS
    archive.known[digest] = ArchiveOrder(
        digest=digest, product_id=ETH, qty=D(1), filled=D(1), last_s=rig.unix_ns() // S
    )
    await rig.run(1_000)
    assert archive.asked == [acked + 100 * MS]  # two round trips after the ack
    done = [(t, e) for t, e in rig.events if isinstance(e, OrderStatus)]
    assert [(e.state, e.filled_qty) for _, e in done] == [("filled", D(1))]
    assert done[0][0] - acked == 150 * MS  # 2 RTT + the query
    assert rig.venue.stats["probe_resolved"] == 1
    await rig.close()


async def test_the_probe_follows_the_measured_round_trip() -> None:
    rig = OfflineVenue(rtt_ms=200, archive_url="http://127.0.0.1:9/archive")
    await rig.start()
    archive = FakeArchive(rig)
    rig.venue.archive = archive  # type: ignore[assignment]
    await rig.place(ioc())
    await rig.run(2_000)
    assert archive.asked == [200 * MS + 400 * MS]
    await rig.close()


async def test_no_probe_when_the_end_is_heard() -> None:
    rig = OfflineVenue(rtt_ms=50, archive_url="http://127.0.0.1:9/archive")
    await rig.start()
    archive = FakeArchive(rig)
    rig.venue.archive = archive  # type: ignore[assignment]
    digest = await rig.place(ioc())
    await rig.run(10)
    await rig.frame(order_update_frame(digest, "0", "cancelled", ts_ns=rig.unix_ns()))
    await rig.run(1_000)
    assert archive.asked == []
    assert [e.filled_qty for e in rig.of(OrderExpired)] == [D(0)]
    assert rig.venue.stats["probes"] == 0
    await rig.close()


async def test_an_undecided_probe_emits_nothing() -> None:
    """Archive down (or none): no guess; the engine's deadlines chase the order."""
    rig = OfflineVenue(rtt_ms=50, archive_url="http://127.0.0.1:9/archive")
    await rig.start()
    archive = FakeArchive(rig)
    archive.fail = True
    rig.venue.archive = archive  # type: ignore[assignment]
    await rig.place(ioc())
    before = len(rig.events)
    await rig.run(1_000)
    assert len(archive.asked) == 1
    assert [e for _, e in rig.events[before:] if not isinstance(e, BboUpdated)] == []
    assert rig.venue.stats["probe_undecided"] == 1
    await rig.close()


async def test_no_probe_while_the_stream_is_down() -> None:
    """No stream, no push to miss: the connection machine's audit asks on reconnect."""
    rig = OfflineVenue(rtt_ms=50, archive_url="http://127.0.0.1:9/archive")
    await rig.start()
    archive = FakeArchive(rig)
    rig.venue.archive = archive  # type: ignore[assignment]
    await rig.place(ioc())
    rig.stream.connected = False
    await rig.run(1_000)
    assert archive.asked == []
    assert rig.venue.stats["probe_skipped_stream_gap"] == 1
    await rig.close()


async def test_no_probe_after_a_stream_gap() -> None:
    """Reconnected between the send and the probe: the reconnect audit asks instead."""
    rig = OfflineVenue(rtt_ms=50, archive_url="http://127.0.0.1:9/archive")
    await rig.start()
    archive = FakeArchive(rig)
    rig.venue.archive = archive  # type: ignore[assignment]
    await rig.place(ioc())
    rig.stream.gap()
    await rig.run(1_000)
    assert archive.asked == []
    assert rig.venue.stats["probe_skipped_stream_gap"] == 1
    await rig.close()
