"""Positions live as long as the server: a client that disconnects (REST and stream) and
comes back, as a restarted process would, finds them and can close them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.nado.mapping import NadoFill
from adapters.nado.queries import parse_subaccount_info
from tests.sim_server.helpers import ETH
from tests.sim_server.helpers import SOL
from tests.sim_server.helpers import Client
from tests.sim_server.helpers import client
from tests.sim_server.helpers import running
from tests.sim_server.helpers import stream

pytestmark = pytest.mark.asyncio


async def _positions(c: Client) -> dict[int, Decimal]:
    env = await c.query(type="subaccount_info", subaccount=c.signer.sender)
    snap = parse_subaccount_info(env.data).position_snapshot([ETH, SOL])
    return {p.product_id: p.qty for p in snap.positions}


async def test_positions_survive_a_client_restart() -> None:
    async with running() as server:
        async with client(server) as first:
            _, ask = await first.bbo(ETH)
            bid, _ = await first.bbo(SOL)
            assert (await first.place(first.sign(ETH, "buy", "0.3", ask + 5, "ioc"))).ok
            assert (await first.place(first.sign(SOL, "sell", "2", bid - 1, "ioc"))).ok
            resting = first.sign(ETH, "buy", "0.1", ask - 20, "default")
            assert (await first.place(resting)).ok
            assert await _positions(first) == {ETH: Decimal("0.3"), SOL: Decimal(-2)}
        # A new process: new HTTP connections, a new stream, same key.
        async with client(server) as second, stream(server) as s:
            assert await _positions(second) == {ETH: Decimal("0.3"), SOL: Decimal(-2)}
            me = second.signer.sender
            orders = await second.query(type="subaccount_orders", sender=me, product_id=ETH)
            assert [o["digest"] for o in orders.data["orders"]] == [resting.digest]
            await s.subscribe(type="fill", subaccount=me)
            bid, _ = await second.bbo(ETH)
            _, ask = await second.bbo(SOL)
            close_eth = second.sign(ETH, "sell", "0.3", bid - 5, "ioc", reduce_only=True)
            close_sol = second.sign(SOL, "buy", "2", ask + 1, "ioc", reduce_only=True)
            assert (await second.place(close_eth)).ok
            assert (await second.place(close_sol)).ok
            fill = await s.until(lambda f: isinstance(f, NadoFill))
            assert isinstance(fill, NadoFill)
            assert fill.digest == close_eth.digest
            assert await _positions(second) == {ETH: 0, SOL: 0}
            assert (await second.cancel([], None)).ok
        assert server.exchange.open_orders(me) == []
