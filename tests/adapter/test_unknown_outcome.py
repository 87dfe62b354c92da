"""Lost answers: a placement or cancel whose answer never comes is an unknown outcome,
resolved by asking about its digest; re-sending the same order id sends the same signed
body (same nonce, same digest), so the venue ends up with exactly one order whatever
happened to the first send. A failed position query is an error, never a zero position.

The fault plan's REST draws are replaced by a script (`LoseNext`): the next request
is lost, after taking effect or not, and every later one is answered.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from engine.core.events import OrderAccepted
from engine.core.events import OrderStatus
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import CancelOrder
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from tests.adapter.memory import rig
from tests.adapter.memory import serving
from tests.adapter.support import ETH
from tests.sim_server.helpers import still

pytestmark = pytest.mark.asyncio
D = Decimal
PROFILE = still(rest="timeout = 0.5", sim="request_timeout_ms = 300")


class LoseNext:
    """Stands in for the fault plan's REST generator (faultplan.py; draw order without
    latency: lost?, then applied? for an execute): the next request is lost, every later
    one answered."""

    def __init__(self, *, applied: bool = False, lose: bool = True) -> None:
        self.draws = [0.0, 0.0 if applied else 0.9] if lose else []

    def random(self) -> float:
        return self.draws.pop(0) if self.draws else 0.99


def _bodies(server: Any) -> list[str]:
    """Every execute body that reaches the venue's socket, as raw text (lost ones too)."""
    seen: list[str] = []
    original = server._rest

    async def rest(request: Any, kind: str) -> Any:
        if kind == "execute":
            seen.append((await request.read()).decode())  # aiohttp keeps the body
        return await original(request, kind)

    server._rest = rest
    return seen


def _resting(server: Any, oid: str = "t:o1") -> PlaceOrder:
    price = (server.exchange.bbo(ETH).bid * D("0.9")).quantize(D("0.1"))
    return PlaceOrder(
        order_id=oid, product_id=ETH, side="buy", qty="0.1", price=price, tif="default"
    )


@pytest.mark.parametrize(
    ("applied", "ask_first"),
    [(True, False), (True, True), (False, True)],
    ids=["accepted-then-lost/resent", "accepted-then-lost/asked", "lost/asked-then-resent"],
)
async def test_lost_placement_answer_leaves_exactly_one_order(
    applied: bool, ask_first: bool
) -> None:
    async with serving(PROFILE) as server:
        server.plan.rest_rng = LoseNext(lose=False)
        async with rig(server) as r:
            bodies = _bodies(server)
            intent = _resting(server)
            server.plan.rest_rng = LoseNext(applied=applied)
            r.submit(intent)
            lost = await r.wait_for(VenueError, order_id="t:o1")
            assert (lost.error_class, lost.request) == ("unknown_outcome", "place_order")
            assert len(r.open_at_venue()) == (1 if applied else 0)
            if ask_first:  # resolve by the digest computed before sending
                r.submit(QueryOrder(request_id="t:s1", order_id="t:o1", product_id=ETH))
                await r.until(
                    lambda: bool(r.of(OrderStatus) or r.of(VenueError, request_id="t:s1"))
                )
                if applied:
                    assert r.of(OrderStatus, request_id="t:s1")[0].state == "open"
                else:  # not resting, and no stream was there to say: cannot tell
                    assert r.of(VenueError, request_id="t:s1")[0].error_class == "retryable"
            # the engine re-sends the same order id
            r.submit(intent)
            accepted = await r.wait_for(OrderAccepted, order_id="t:o1")
            assert accepted.digest == r.venue.orders["t:o1"].digest
            if applied and ask_first:
                assert len(bodies) == 1  # known to be placed: answered without sending
            else:
                assert len(bodies) == 2
                assert bodies[0] == bodies[1]  # same nonce, same signature, same digest
            sent = json.loads(bodies[0])["place_order"]["order"]["nonce"]
            assert int(sent) == r.venue.orders["t:o1"].signed.order.nonce
            opened = r.open_at_venue()
            assert len(opened) == 1  # exactly one order at the venue
            assert opened[0].digest == accepted.digest
            duplicate = applied and not ask_first  # the venue refused the copy: 2013
            assert r.venue.stats["duplicate_digest"] == (1 if duplicate else 0)


async def test_lost_placement_with_the_stream_up_is_resolved_as_not_found() -> None:
    """With the stream up since before the send, a placement that never reached the venue
    has no `placed` announcement: the order query then answers not_found."""
    async with serving(PROFILE) as server:
        server.plan.rest_rng = LoseNext(lose=False)
        async with rig(server) as r:
            await r.connect_stream()
            server.plan.rest_rng = LoseNext(applied=False)
            r.submit(_resting(server))
            await r.wait_for(VenueError, order_id="t:o1")
            r.submit(QueryOrder(request_id="t:s1", order_id="t:o1", product_id=ETH))
            status = await r.wait_for(OrderStatus, request_id="t:s1")
            assert (status.state, status.filled_qty) == ("not_found", 0)


async def test_lost_cancel_answer_is_unknown_then_resolved() -> None:
    async with serving(PROFILE) as server:
        server.plan.rest_rng = LoseNext(lose=False)
        async with rig(server) as r:
            await r.connect_stream()
            r.submit(_resting(server))
            await r.wait_for(OrderAccepted, order_id="t:o1")
            server.plan.rest_rng = LoseNext(applied=True)
            r.submit(CancelOrder(order_id="t:o1", product_id=ETH))
            lost = await r.wait_for(VenueError, order_id="t:o1", request="cancel_order")
            assert lost.error_class == "unknown_outcome"
            assert r.open_at_venue() == []  # it did take effect
            r.submit(QueryOrder(request_id="t:s1", order_id="t:o1", product_id=ETH))
            status = await r.wait_for(OrderStatus, request_id="t:s1")
            assert (status.state, status.filled_qty) == ("cancelled", 0)


async def test_a_failed_position_query_is_an_error_never_zero() -> None:
    async with serving(PROFILE) as server:
        server.plan.rest_rng = LoseNext(lose=False)
        async with rig(server) as r:
            server.plan.rest_rng = LoseNext()
            r.submit(QueryPositions(request_id="t:q1", product_ids=(ETH,)))
            err = await r.wait_for(VenueError, request_id="t:q1")
            assert (err.error_class, err.request) == ("retryable", "query_positions")
            assert r.of(PositionSnapshot) == []
            r.submit(QueryPositions(request_id="t:q2", product_ids=(ETH,)))
            snap = await r.wait_for(PositionSnapshot, request_id="t:q2")
            assert snap.positions[0].qty == 0
