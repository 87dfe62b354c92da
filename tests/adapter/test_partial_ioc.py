"""An IOC that fills only partly, over real loopback sockets: Nado sends `order_update`
`filled` after every match with the size still unfilled, so the adapter must not take the
first of them for the order's end (nado-protocol.md §13)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.core.events import BboUpdated
from engine.core.events import FillReceived
from engine.core.events import OrderExpired
from engine.core.events import OrderStatus
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOrder
from tests.adapter.memory import rig
from tests.adapter.memory import serving
from tests.adapter.support import SOL
from tests.sim_server.helpers import still

pytestmark = pytest.mark.asyncio
D = Decimal


async def test_a_partly_filled_ioc_ends_expired_with_its_true_filled_size() -> None:
    async with serving(still()) as server, rig(server) as r:
        await r.connect_stream()
        sol = await r.wait_for(BboUpdated, product_id=SOL)
        # At the bid exactly: only the top crowd level crosses, far less than 300 SOL.
        r.submit(
            PlaceOrder(
                order_id="t:p", product_id=SOL, side="sell", qty="300", price=sol.bid, tif="ioc"
            )
        )
        await r.wait_for(OrderExpired, order_id="t:p")
        entry = r.venue.orders["t:p"]
        assert entry.ended == "cancelled"  # not the first `filled` update
        fills = r.of(FillReceived, order_id="t:p")
        total = sum((f.qty for f in fills), D(0))
        assert 0 < total < 300
        assert -r.venue_position(SOL) == total
        r.submit(QueryOrder(request_id="t:s", order_id="t:p", product_id=SOL))
        status = await r.wait_for(OrderStatus, request_id="t:s")
        assert (status.state, status.filled_qty) == ("expired", total)
