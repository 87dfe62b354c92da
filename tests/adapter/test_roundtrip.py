"""Place, fill, query, cancel over real loopback sockets: REST answers and stream pushes
become the engine's events, with the venue's ground truth behind every number."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from engine.core.events import BboUpdated
from engine.core.events import ConnectionChanged
from engine.core.events import FillReceived
from engine.core.events import OpenOrdersSnapshot
from engine.core.events import OrderAccepted
from engine.core.events import OrderCancelled
from engine.core.events import OrderStatus
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import CancelOrder
from engine.core.intents import CancelProductOrders
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryMarketPrices
from engine.core.intents import QueryOpenOrders
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from tests.adapter.support import ETH
from tests.adapter.support import SOL
from tests.adapter.support import rig
from tests.adapter.support import serving
from tests.sim_server.helpers import still

pytestmark = [pytest.mark.asyncio, pytest.mark.loopback]
D = Decimal


async def _quote(r, pid: int) -> BboUpdated:
    return await r.wait_for(BboUpdated, product_id=pid)


async def test_place_fill_query_cancel_round_trip() -> None:
    async with serving(still()) as server, rig(server) as r:
        assert {s: p.product_id for s, p in r.venue.products.items()} == {
            "ETH-PERP": ETH,
            "SOL-PERP": SOL,
        }
        await r.connect_stream()
        eth = await _quote(r, ETH)
        assert 0 < eth.bid < eth.ask

        # an IOC through the ask: accepted over REST, filled over the stream
        buy = PlaceOrder(
            order_id="t:o1", product_id=ETH, side="buy", qty="0.5", price=eth.ask + 10, tif="ioc"
        )
        sent = time.monotonic_ns()
        r.submit(buy)
        accepted = await r.wait_for(OrderAccepted, order_id="t:o1")
        assert accepted.digest == r.venue.orders["t:o1"].digest  # computed before sending
        await r.until(lambda: sum(f.qty for f in r.of(FillReceived, order_id="t:o1")) == D("0.5"))
        fills = r.of(FillReceived, order_id="t:o1")
        first_fill_at = r.stamps[r.events.index(fills[0])]
        assert all(f.side == "buy" and f.price > 0 for f in fills)
        assert fills[-1].cumulative_qty == D("0.5")
        assert fills[-1].remaining_qty == 0
        assert r.venue_position(ETH) == D("0.5")
        print(f"ws fill latency: {(first_fill_at - sent) / 1e6:.1f} ms after submit")

        # positions over REST
        r.submit(QueryPositions(request_id="t:q1", product_ids=(ETH, SOL)))
        snap = await r.wait_for(PositionSnapshot, request_id="t:q1")
        assert {p.product_id: p.qty for p in snap.positions} == {ETH: D("0.5"), SOL: 0}

        # a resting order far below the bid: open, then cancelled
        rest_px = (eth.bid * D("0.9")).quantize(D("0.1"))
        r.submit(
            PlaceOrder(
                order_id="t:o2", product_id=ETH, side="buy", qty="0.2", price=rest_px, tif="default"
            )
        )
        await r.wait_for(OrderAccepted, order_id="t:o2")
        r.submit(QueryOrder(request_id="t:s1", order_id="t:o2", product_id=ETH))
        status = await r.wait_for(OrderStatus, request_id="t:s1")
        assert (status.state, status.filled_qty, status.remaining_qty) == ("open", 0, D("0.2"))
        r.submit(QueryOpenOrders(request_id="t:q2", product_ids=(ETH, SOL)))
        listed = await r.wait_for(OpenOrdersSnapshot, request_id="t:q2")
        assert [o.order_id for o in listed.orders] == ["t:o2"]
        assert len(r.open_at_venue()) == 1
        r.submit(CancelOrder(order_id="t:o2", product_id=ETH))
        cancelled = await r.wait_for(OrderCancelled, order_id="t:o2")
        assert cancelled.filled_qty == 0
        assert r.open_at_venue() == []
        # cancelling it again: not open any more, and said so
        r.submit(CancelOrder(order_id="t:o2", product_id=ETH))
        again = await r.wait_for(VenueError, order_id="t:o2")
        assert (again.error_class, again.code) == ("permanent", 2020)

        # the filled IOC is no longer resting: its end comes from what the stream said
        r.submit(QueryOrder(request_id="t:s2", order_id="t:o1", product_id=ETH))
        done = await r.wait_for(OrderStatus, request_id="t:s2")
        assert (done.state, done.filled_qty) == ("filled", D("0.5"))

        # flatten with a reduce-only IOC; product cancel with nothing open answers nothing
        r.submit(
            PlaceOrder(
                order_id="t:o3",
                product_id=ETH,
                side="sell",
                qty="0.5",
                price=(eth.bid - 10),
                tif="ioc",
                reduce_only=True,
            )
        )
        await r.until(lambda: r.venue_position(ETH) == 0)
        await r.until(lambda: sum(f.qty for f in r.of(FillReceived, order_id="t:o3")) == D("0.5"))
        r.submit(CancelProductOrders(request_id="t:c1", product_ids=(ETH, SOL)))
        r.submit(QueryMarketPrices(request_id="t:m1", product_ids=(ETH, SOL)))
        await r.until(lambda: r.venue.stats["bbo_rest"] >= 2)
        assert r.of(VenueError, request_id="t:c1") == []
        assert r.venue.client.stats["execute.cancel_product_orders"] == 1
        assert r.of(ConnectionChanged)[0].state == "connected"
        assert r.venue.stream is not None
        assert r.venue.stream.stats["malformed"] == 0


async def test_fills_map_exactly_to_the_venue_numbers() -> None:
    async with serving(still()) as server, rig(server) as r:
        await r.connect_stream()
        sol = await _quote(r, SOL)
        # big enough to eat more than one crowd level: several fill frames
        r.submit(
            PlaceOrder(
                order_id="t:big",
                product_id=SOL,
                side="sell",
                qty="300",
                price=(sol.bid * D("0.98")).quantize(D("0.01")),
                tif="ioc",
            )
        )
        await r.until(lambda: r.venue.orders["t:big"].ended is not None, within=5)
        fills = r.of(FillReceived, order_id="t:big")
        assert len(fills) >= 2
        total = sum((f.qty for f in fills), D(0))
        assert -r.venue_position(SOL) == total
        assert fills[-1].cumulative_qty == total
        assert len({f.fill_id for f in fills}) == len(fills)
        cumulative = [f.cumulative_qty for f in fills]
        assert cumulative == sorted(cumulative)
        # the unsold rest expired: the venue's own end of an IOC, then asked about
        r.submit(QueryOrder(request_id="t:s", order_id="t:big", product_id=SOL))
        status = await r.wait_for(OrderStatus, request_id="t:s")
        assert status.state in ("filled", "expired")
        assert status.filled_qty == total
