"""Orders over the wire: place, fills and order updates on the stream, queries, cancels.

Every reply and frame is decoded by the Nado adapter's own parsers, so a passing test
means server and client agree on the shapes.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.nado.mapping import BboUpdated
from adapters.nado.mapping import NadoFill
from adapters.nado.mapping import NadoOrderUpdate
from adapters.nado.mapping import NadoPositionChange
from adapters.nado.mapping import StreamReply
from adapters.nado.queries import parse_all_products
from adapters.nado.queries import parse_cancel_result
from adapters.nado.queries import parse_contracts
from adapters.nado.queries import parse_envelope
from adapters.nado.queries import parse_market_prices
from adapters.nado.queries import parse_multi_orders
from adapters.nado.queries import parse_order
from adapters.nado.queries import parse_place_result
from adapters.nado.queries import parse_product_symbols
from adapters.nado.queries import parse_subaccount_info
from adapters.nado.queries import parse_subaccount_orders
from adapters.nado.queries import parse_symbols
from adapters.nado.wire import loads
from adapters.sim.server import SIM_CHAIN_ID
from adapters.sim.server import SIM_ENDPOINT
from engine.core.events import OrderExpired
from tests.sim_server.helpers import ETH
from tests.sim_server.helpers import SOL
from tests.sim_server.helpers import client
from tests.sim_server.helpers import running
from tests.sim_server.helpers import stream

pytestmark = pytest.mark.asyncio


async def test_discovery_queries_parse_with_the_adapter() -> None:
    async with running() as server, client(server) as c:
        contracts = parse_contracts((await c.query(type="contracts")).data)
        assert (contracts.chain_id, contracts.endpoint_addr) == (SIM_CHAIN_ID, SIM_ENDPOINT)
        symbols = parse_symbols((await c.query(type="symbols", product_type="perp")).data)
        assert {s: i.product_id for s, i in symbols.items()} == {"ETH-PERP": 4, "SOL-PERP": 8}
        eth = symbols["ETH-PERP"].product_info()
        assert (eth.tick_size, eth.size_increment, eth.min_order_value_usd) == (
            Decimal("0.1"),
            Decimal("0.001"),
            Decimal(10),
        )
        assert all(i.tradable for i in symbols.values())
        books = parse_all_products((await c.query(type="all_products")).data)
        assert set(books) == {ETH, SOL}
        assert books[ETH].oracle_price > 0
        prices = parse_market_prices(
            (await c.query(type="market_prices", product_ids=[ETH, SOL])).data
        )
        assert [p.product_id for p in prices] == [ETH, SOL]
        assert all(0 < p.bid < p.ask for p in prices)
        r = await c.http.get("/symbols")
        assert parse_product_symbols(loads(r.text)) == {"ETH-PERP": 4, "SOL-PERP": 8}
        r = await c.http.get("/query", params={"type": "market_price", "product_id": "8"})
        assert parse_envelope(loads(r.text)).data["product_id"] == SOL
        status = await c.query(type="status")
        assert (status.ok, status.data, status.request_type) == (True, "active", "query_status")


async def test_ioc_fill_streams_fill_order_updates_and_position() -> None:
    async with running() as server, client(server) as c, stream(server) as s:
        me = c.signer.sender
        assert isinstance(await s.authenticate(c.signer), StreamReply)
        for kind in ("fill", "order_update", "position_change"):
            assert isinstance(await s.subscribe(type=kind, subaccount=me), StreamReply)
        _, ask = await c.bbo(ETH)
        order = c.sign(ETH, "buy", "0.5", ask + 20, "ioc")
        env = await c.place(order)
        assert env.ok
        assert env.request_type == "execute_place_order"
        assert env.id == order.client_id
        assert parse_place_result(env.data) == order.digest  # the EIP-712 digest, known early

        fills: list[NadoFill] = []
        updates: list[NadoOrderUpdate] = []
        while sum(f.qty for f in fills) < Decimal("0.5") or len(updates) < len(fills):
            frame = await s.until(lambda f: isinstance(f, NadoFill | NadoOrderUpdate))
            (fills if isinstance(frame, NadoFill) else updates).append(frame)  # type: ignore[arg-type]
        # Nado: one `filled` update per match, `amount` = the size still unfilled; an IOC
        # is never `placed` (nothing rests) and ends at (0, filled).
        assert [(u.reason, u.remaining_qty) for u in updates] == [
            ("filled", f.remaining_qty) for f in fills
        ]
        assert updates[-1].remaining_qty == 0
        assert all(f.digest == order.digest and f.side == "buy" and f.is_taker for f in fills)
        assert all(f.client_id == order.client_id for f in fills + updates)  # type: ignore[operator]
        assert fills[-1].remaining_qty == 0
        assert fills[-1].cumulative_qty == Decimal("0.5")
        assert len({f.fill_id for f in fills}) == len(fills)
        assert all(ask <= f.price <= ask + 20 for f in fills)
        assert sum(f.fee for f in fills) > 0
        changes = [f for f in s.seen if isinstance(f, NadoPositionChange)]
        if not changes or changes[-1].amount != Decimal("0.5"):
            await s.until(lambda f: isinstance(f, NadoPositionChange) and f.amount == 0.5)
        changes = [f for f in s.seen if isinstance(f, NadoPositionChange)]
        assert [c.amount for c in changes] == [f.cumulative_qty for f in fills]  # new balance
        assert {(c.product_id, c.reason) for c in changes} == {(ETH, "match_orders")}

        # An IOC never rests: the `order` query (resting orders only) does not know it.
        gone = await c.query(type="order", product_id=ETH, digest=order.digest)
        assert (gone.ok, gone.error_code) == (False, 2020)
        info = parse_subaccount_info((await c.query(type="subaccount_info", subaccount=me)).data)
        snap = info.position_snapshot([ETH, SOL])
        assert [(p.product_id, p.qty) for p in snap.positions] == [(ETH, Decimal("0.5")), (SOL, 0)]
        assert server.exchange.position(me, ETH).qty == Decimal("0.5")


async def test_ioc_without_liquidity_is_accepted_then_cancelled() -> None:
    async with running() as server, client(server) as c, stream(server) as s:
        await s.authenticate(c.signer)
        await s.subscribe(type="order_update", subaccount=c.signer.sender, product_id=SOL)
        bid, _ = await c.bbo(SOL)
        order = c.sign(SOL, "buy", "1", bid - 1, "ioc")  # crosses nothing
        assert (await c.place(order)).ok
        # Nado: no `placed` (nothing rests); the IOC ends (0, cancelled) with no fill.
        cancelled = await s.until(lambda f: isinstance(f, NadoOrderUpdate))
        assert isinstance(cancelled, NadoOrderUpdate)
        assert (cancelled.reason, cancelled.remaining_qty) == ("cancelled", 0)
        assert isinstance(cancelled.to_event("o", tif="ioc"), OrderExpired)
        assert server.exchange.position(c.signer.sender, SOL).qty == 0


async def test_resting_order_is_visible_then_cancelled() -> None:
    async with running() as server, client(server) as c, stream(server) as s:
        me = c.signer.sender
        await s.authenticate(c.signer)
        await s.subscribe(type="order_update", subaccount=me)
        bid, _ = await c.bbo(ETH)
        order = c.sign(ETH, "buy", "0.1", bid - 5, "default")
        assert parse_place_result((await c.place(order)).data) == order.digest

        found = parse_order((await c.query(type="order", product_id=ETH, digest=order.digest)).data)
        status = found.to_status("o1")
        assert (status.state, status.remaining_qty, status.filled_qty) == (
            "open",
            Decimal("0.1"),
            0,
        )
        assert (found.side, found.price, found.appendix) == ("buy", bid - 5, 1)
        listed = parse_subaccount_orders(
            (await c.query(type="subaccount_orders", sender=me, product_id=ETH)).data
        )
        assert [o.digest for o in listed] == [order.digest]
        multi = parse_multi_orders(
            (await c.query(type="orders", sender=me, product_ids=[4, 8])).data
        )
        assert [o.digest for o in multi[ETH]] == [order.digest]
        assert multi[SOL] == []
        r = await c.http.get(
            "/query", params={"type": "orders", "sender": me, "product_ids": "4,8"}
        )
        assert parse_multi_orders(parse_envelope(loads(r.text)).data)[ETH][0].digest == order.digest

        cancelled = parse_cancel_result((await c.cancel([ETH], [order.digest])).data)
        assert [(o.digest, o.remaining_qty) for o in cancelled] == [(order.digest, Decimal("0.1"))]
        update = await s.until(lambda f: isinstance(f, NadoOrderUpdate) and f.reason != "placed")
        assert isinstance(update, NadoOrderUpdate)
        assert update.reason == "cancelled"
        again = await c.query(type="order", product_id=ETH, digest=order.digest)
        assert (again.ok, again.error_code) == (False, 2020)
        # Cancelling what is no longer open succeeds and lists nothing (nado-protocol.md §5.1).
        assert parse_cancel_result((await c.cancel([ETH], [order.digest])).data) == []

        # cancel_product_orders with no products cancels everything of the sender.
        o1 = c.sign(ETH, "buy", "0.1", bid - 6, "default")
        o2 = c.sign(SOL, "sell", "1", (await c.bbo(SOL))[1] + 1, "post_only")
        assert (await c.place(o1)).ok
        assert (await c.place(o2)).ok
        env = await c.cancel([], None)
        assert env.request_type == "execute_cancel_product_orders"
        assert {o.digest for o in parse_cancel_result(env.data)} == {o1.digest, o2.digest}
        assert server.exchange.open_orders(me) == []


async def test_engine_rejections_keep_nado_codes() -> None:
    async with running() as server, client(server) as c:
        bid, ask = await c.bbo(ETH)
        crossing = await c.place(c.sign(ETH, "buy", "0.1", ask, "post_only"))
        assert (crossing.ok, crossing.error_code) == (False, 2008)
        reduce = await c.place(c.sign(ETH, "sell", "0.1", bid - 1, "ioc", reduce_only=True))
        assert (reduce.ok, reduce.error_code) == (False, 2019)  # nothing to reduce
        order = c.sign(ETH, "buy", "0.1", bid - 5, "default")
        assert (await c.place(order)).ok
        dup = await c.place(order)  # same digest again
        assert (dup.ok, dup.error_code) == (False, 2013)
        far = await c.place(c.sign(ETH, "buy", "0.1", ask * 2, "ioc"))
        assert (far.ok, far.error_code) == (False, 2007)
        assert server.stats["internal_errors"] == 0


async def test_bbo_stream_and_unsubscribe() -> None:
    async with running() as server, stream(server) as s:
        assert isinstance(await s.subscribe(type="best_bid_offer", product_id=SOL), StreamReply)
        names = [ext.name for ext in s.ws.protocol.extensions]
        assert names == ["permessage-deflate"]  # Nado requires it on /v1/subscribe
        frame = await s.until(lambda f: isinstance(f, BboUpdated))
        assert isinstance(frame, BboUpdated)
        assert frame.product_id == SOL
        assert 0 < frame.bid < frame.ask
        assert frame.ts_venue_ns is not None
        listed = await s.request({"method": "list"})
        assert isinstance(listed, StreamReply)
        assert listed.method == "list"
        await s.request(
            {"method": "unsubscribe", "stream": {"type": "best_bid_offer", "product_id": 8}}
        )
        pong = await s.request({"method": "ping", "client_time": "123"})
        assert isinstance(pong, StreamReply)
        assert pong.method == "pong"
        assert pong.server_time_ms
        assert s.raw[-1]["result"]["client_time"] == "123"
