"""Stream quotes that fail the BBO gate never reach the engine; the REST quote takes their
place, fetched at most once a second per product."""

from __future__ import annotations

import pytest

from engine.core.events import BboUpdated
from tests.adapter.memory import rig
from tests.adapter.memory import serving
from tests.adapter.support import ETH
from tests.adapter.support import SOL
from tests.sim_server.helpers import still

pytestmark = pytest.mark.asyncio


async def test_crossed_stream_quotes_fall_back_to_rest_cached_one_second() -> None:
    profile = still(market="crossed_bbo = 1.0")  # every pushed quote has ask < bid
    async with serving(profile) as server, rig(server) as r:
        await r.connect_stream()
        start = r.clock.now_ns()
        await r.until(lambda: r.venue.stats["bbo_rejected.crossed"] >= 25, within=5)
        quotes = r.of(BboUpdated)
        assert quotes, "no quote at all"
        assert all(q.bid < q.ask for q in quotes)  # only good quotes reach the engine
        assert all(q.ts_venue_ns is None for q in quotes)  # all from REST
        assert {q.product_id for q in quotes} == {ETH, SOL}
        elapsed_s = (r.clock.now_ns() - start) / 1e9
        fetched = r.venue.client.stats["query.market_prices"]
        assert fetched <= 2 * (elapsed_s + 1)  # one fetch per product per second at most
        assert r.venue.stats["bbo_stream"] == 0
