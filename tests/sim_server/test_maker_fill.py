"""`venue serve` and the maker fill model: a post-only order rests, the seeded taker flow
(adapters/sim/flow.py) fills it as maker, and the fill carries the maker fee the server
publishes through `fee_rates`. Waits are bounded reads of the stream, never sleeps."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.nado.mapping import NadoFill
from adapters.nado.mapping import NadoOrderUpdate
from adapters.nado.mapping import StreamReply
from tests.sim_server.helpers import ETH
from tests.sim_server.helpers import client
from tests.sim_server.helpers import running
from tests.sim_server.helpers import stream

pytestmark = pytest.mark.asyncio

# Still prices; brisk taker flow of small orders so the wait is short on the wall clock.
FLOW = (
    "[market]\nvolatility_bps_per_sqrt_s = 0\n"
    "[sim]\nmaker_fill_rate_per_s = 40\ntaker_flow_mean_usd = 100\n"
)


async def test_a_post_only_order_rests_then_taker_flow_fills_it_with_the_maker_fee() -> None:
    async with running(FLOW) as server, client(server) as c, stream(server) as s:
        me = c.signer.sender
        assert isinstance(await s.authenticate(c.signer), StreamReply)
        for kind in ("fill", "order_update"):
            assert isinstance(await s.subscribe(type=kind, subaccount=me), StreamReply)
        rates = (await c.query(type="fee_rates", sender=me)).data
        maker_rate = Decimal(int(rates["maker_fee_rates_x18"][ETH])) / 10**18
        assert maker_rate == server.exchange.maker_rate == Decimal("0.0001")  # Nado: 1 bp

        bid, _ = await c.bbo(ETH)
        price = bid + Decimal("0.1")  # inside the spread: nobody queued ahead of it
        order = c.sign(ETH, "buy", "0.05", price, "post_only")
        assert (await c.place(order)).ok
        placed = await s.until(lambda f: isinstance(f, NadoOrderUpdate))
        assert isinstance(placed, NadoOrderUpdate)
        assert (placed.digest, placed.reason) == (order.digest, "placed")  # it rests

        fills: list[NadoFill] = []
        while sum(f.qty for f in fills) < Decimal("0.05"):
            frame = await s.until(lambda f: isinstance(f, NadoFill))
            assert isinstance(frame, NadoFill)
            fills.append(frame)
        assert all(f.digest == order.digest and not f.is_taker for f in fills)
        assert {f.price for f in fills} == {price}
        for f in fills:
            assert f.fee == (f.qty * f.price * maker_rate).quantize(Decimal("1e-8"))
        assert server.exchange.position(me, ETH).qty == Decimal("0.05")
        assert server.exchange.position(me, ETH).fees == sum(f.fee for f in fills)
