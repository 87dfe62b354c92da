"""A 429 window on the wire: the first requests to meet it are refused (HTTP 429, code 1000,
Retry-After) and reported as `VenueError(rate_limited)`; after that nothing reaches the
venue until Retry-After has passed (no storm), reads are shed at once, and when tokens
return the risk-reducing requests go first.

The window is 3 s, not the issue's 30 s: the client's pause is the server's Retry-After
(whole seconds to the window's end), so a 30 s window only makes the same pause ten
times longer. In memory on the virtual clock (tests/adapter/memory.py): the test lets
virtual time run up to the window, and nobody waits for it on the wall clock.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from engine.core.events import OrderAccepted
from engine.core.events import OrderCancelled
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import CancelOrder
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryMarketPrices
from engine.core.intents import QueryPositions
from tests.adapter.memory import rig
from tests.adapter.memory import serving
from tests.adapter.support import ETH
from tests.sim_server.helpers import still

pytestmark = pytest.mark.asyncio
D = Decimal
WINDOW_AT_S, WINDOW_S = 5, 3
S = 1_000_000_000


def _resting(oid: str, price: Decimal) -> PlaceOrder:
    return PlaceOrder(
        order_id=oid, product_id=ETH, side="buy", qty="0.1", price=price, tif="default"
    )


def _record_arrivals(server: Any) -> list[tuple[int, str]]:
    """(server clock ns, path) of every REST request, as it arrives."""
    arrivals: list[tuple[int, str]] = []
    original = server._rest

    async def rest(request: Any, kind: str) -> Any:
        arrivals.append((server.clock.now_ns(), f"{kind}:{request.path}"))
        return await original(request, kind)

    server._rest = rest
    return arrivals


async def test_a_429_window_is_no_storm_and_risk_goes_first() -> None:
    profile = still(rest=f"rate_limit = [{{ at_s = {WINDOW_AT_S}, for_s = {WINDOW_S} }}]")
    async with serving(profile) as server, rig(server) as r:
        bid = server.exchange.bbo(ETH).bid
        low = (bid * D("0.9")).quantize(D("0.1"))
        r.submit(_resting("t:a", low), _resting("t:b", low))
        await r.until(lambda: len(r.of(OrderAccepted)) == 2)
        arrivals = _record_arrivals(server)
        execute_bodies: list[str] = []
        original_execute = server.gateway.execute

        def execute(raw: bytes | str) -> Any:
            execute_bodies.append(next(iter(json.loads(raw))))
            return original_execute(raw)

        server.gateway.execute = execute

        # the window opens now, for WINDOW_S seconds (server time)
        await r.run((server.origin_ns + WINDOW_AT_S * S - r.clock.now_ns()) / S)
        window_end = server.origin_ns + (WINDOW_AT_S + WINDOW_S) * S
        # first contact: one execute and one query meet the window
        r.submit(_resting("t:p0", low), QueryPositions(request_id="t:q0", product_ids=(ETH,)))
        refused = [await r.wait_for(VenueError, order_id="t:p0")]
        refused.append(await r.wait_for(VenueError, request_id="t:q0"))
        for err in refused:
            assert err.error_class == "rate_limited"
            assert err.code == 1000
            assert err.retry_after_s == WINDOW_S
        # meanwhile: normal placements, then risk-reducing cancels and a position read,
        # and a market-data read (shed at once, never queued)
        normal = [_resting(f"t:n{i}", low) for i in range(3)]
        risk = [CancelOrder(order_id=o, product_id=ETH) for o in ("t:a", "t:b")]
        r.submit(*normal, *risk, QueryPositions(request_id="t:q1", product_ids=(ETH,)))
        r.submit(QueryMarketPrices(request_id="t:m1", product_ids=(ETH,)))
        shed = await r.wait_for(VenueError, request_id="t:m1")
        assert shed.error_class == "rate_limited"
        assert "shed" in shed.message
        # everything is answered once the pause is over
        await r.until(
            lambda: (
                len(r.of(OrderCancelled)) == 2
                and all(r.of(OrderAccepted, order_id=i.order_id) for i in normal)
                and bool(r.of(PositionSnapshot, request_id="t:q1"))
            ),
            within=WINDOW_S + 3,
        )
        in_window = [path for t, path in arrivals if t < window_end]
        assert len(in_window) == 2, in_window  # the two first contacts, nothing else
        assert server.stats["rate_limited"] == 2
        # risk first when tokens return: on the client's side and at the venue
        after = [label for label, _ in r.venue.client.sent_log if label.startswith("execute.")]
        tail = after[-5:]
        assert tail == ["execute.cancel_orders"] * 2 + ["execute.place_order"] * 3
        assert execute_bodies[-5:] == ["cancel_orders"] * 2 + ["place_order"] * 3
        assert r.venue.limiter.stats["rate_limited.execute"] == 1
        assert r.venue.limiter.stats["rate_limited.query"] == 1
        print(
            f"429 window {WINDOW_S}s: {len(in_window)} requests reached the venue inside it; "
            f"{len(arrivals)} in all"
        )
