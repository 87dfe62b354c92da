"""PaperVenue over a loopback `venue serve`: public market data with no key, orders
matched locally, a cut stream recovered from the REST snapshot, and not one request to
the execute endpoint."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.nado.discovery import DiscoveryError
from adapters.paper.source import QueryOnlyGateway
from engine.core.events import BboUpdated
from engine.core.events import ConnectionChanged
from engine.core.events import FillReceived
from engine.core.events import OrderAccepted
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryMarketPrices
from engine.core.intents import QueryPositions
from engine.core.intents import StreamConnect
from tests.paper.support import ETH
from tests.paper.support import SOL
from tests.paper.support import paper
from tests.paper.support import serving

D = Decimal
STILL = "[market]\nvolatility_bps_per_sqrt_s = 0\n[sim]\nmaker_fill_rate_per_s = 0\n"


def states(rig) -> list[str]:
    return [e.state for e in rig.of(ConnectionChanged)]


@pytest.mark.asyncio
async def test_market_data_and_local_fills_with_no_execute():
    async with serving(STILL) as server, paper(server) as rig:
        src = rig.source
        assert set(rig.venue.products) == {"ETH-PERP", "SOL-PERP"}
        assert src.fees[ETH] == (D("0.0001"), D("0.00035"))  # the server's published rates
        assert src.stats["snapshots.start"] == 2
        assert not hasattr(src.gateway, "execute")
        assert isinstance(src.gateway, QueryOnlyGateway)

        rig.venue.submit(StreamConnect(attempt=1))
        await rig.wait_for(lambda: "connected" in states(rig))
        await rig.wait_for(lambda: {e.product_id for e in rig.of(BboUpdated)} == {ETH, SOL})

        ask = src.books[ETH].best("ask", 0)
        assert ask is not None
        rig.venue.submit(
            PlaceOrder(
                order_id="b1",
                product_id=ETH,
                side="buy",
                qty=D("0.05"),
                price=ask[0] + 5,
                tif="ioc",
                purpose="test",
            )
        )
        await rig.wait_for(lambda: rig.of(OrderAccepted))
        fills = await rig.wait_for(lambda: rig.of(FillReceived))
        assert sum(f.qty for f in fills) == D("0.05")
        assert fills[0].price == ask[0]  # matched against the venue's book
        rig.venue.submit(QueryPositions(request_id="p1", product_ids=(ETH, SOL)))
        snap = await rig.wait_for(lambda: rig.of(PositionSnapshot))
        assert {p.product_id: p.qty for p in snap[0].positions}[ETH] == D("0.05")

        rig.venue.submit(QueryMarketPrices(request_id="m1", product_ids=(SOL,)))
        n = len(rig.of(BboUpdated))
        await rig.wait_for(lambda: len(rig.of(BboUpdated)) > n)
        # the venue's own book never saw an order
        assert server.exchange.open_orders(rig.venue.subaccount) == []
        assert server.exchange.position(rig.venue.subaccount, ETH).qty == 0
    assert server.executes == 0


@pytest.mark.asyncio
async def test_a_cut_stream_is_reported_and_the_books_reseeded_from_rest():
    async with serving(STILL) as server, paper(server) as rig:
        src = rig.source
        rig.venue.submit(StreamConnect(attempt=1))
        await rig.wait_for(lambda: "connected" in states(rig))
        await rig.wait_for(lambda: src.stats["snapshots.connect"] == 2)
        assert src.stats["snapshots.reconnect"] == 0
        server._forced_disconnect()  # the venue cuts every socket (no close handshake kept)
        await rig.wait_for(lambda: "disconnected" in states(rig))
        assert not any(c.synced for c in src.chains.values())
        # down: the books are polled over REST until the engine reconnects
        await rig.wait_for(lambda: src.stats["snapshots.poll"] >= 2)
        await rig.wait_for(lambda: not server._ws_gap)
        rig.venue.submit(StreamConnect(attempt=2))
        await rig.wait_for(lambda: states(rig).count("connected") == 2)
        await rig.wait_for(lambda: src.stats["snapshots.reconnect"] == 2)
        assert all(c.synced for c in src.chains.values())
        n = len(rig.of(BboUpdated))
        await rig.wait_for(lambda: len(rig.of(BboUpdated)) > n + 2)
    assert server.executes == 0


@pytest.mark.asyncio
async def test_a_refused_optional_stream_is_run_without():
    # A gateway that refuses an optional stream (an older one without book_depth, say):
    # the socket still connects, the refusal is remembered and logged once.
    streams = ("best_bid_offer", "book_depth", "no_such_stream")
    async with serving(STILL) as server, paper(server, streams=streams) as rig:
        rig.venue.submit(StreamConnect(attempt=1))
        await rig.wait_for(lambda: "connected" in states(rig))
        stream = rig.source.stream
        assert stream is not None
        assert stream.refused == ["no_such_stream:4", "no_such_stream:8"]
        await rig.wait_for(lambda: rig.of(BboUpdated))
    assert server.executes == 0


@pytest.mark.asyncio
async def test_wrong_network_is_refused_before_any_order():
    from adapters.nado.discovery import Expectations

    async with serving(STILL) as server:
        with pytest.raises(DiscoveryError, match="chain id"):
            async with paper(server, expect=Expectations(chain_id=57073)):
                pass
    assert server.executes == 0


@pytest.mark.asyncio
async def test_an_unreachable_gateway_is_a_discovery_error():
    from tests.paper.support import PaperRig

    class Nowhere:
        url = "http://127.0.0.1:9/v1"

    # Two attempts (one retry) instead of the default three: each costs ~0.5 s of connect
    # retries on the wall clock, and the backoff before the third is 1 s more.
    rig = PaperRig(Nowhere(), discovery_attempts=2)  # type: ignore[arg-type]
    with pytest.raises(DiscoveryError, match="venue discovery failed"):
        await rig.start()
    assert rig.of(VenueError) == []


@pytest.mark.asyncio
async def test_public_trades_work_off_the_queue_then_trade_through_fills():
    from tests.sim_server.helpers import client

    async with serving(STILL) as server, paper(server) as rig, client(server) as other:
        src = rig.source
        rig.venue.submit(StreamConnect(attempt=1))
        await rig.wait_for(lambda: "connected" in states(rig))
        stream = src.stream
        assert stream is not None
        if stream.refused:
            pytest.skip("this venue serve has no book_depth / trade streams")
        await rig.wait_for(lambda: src.stats["snapshots.connect"] == 2)
        best = src.books[ETH].best("bid", 0)
        assert best is not None
        price = best[0]
        rig.venue.submit(
            PlaceOrder(
                order_id="m1",
                product_id=ETH,
                side="buy",
                qty=D("0.05"),
                price=price,
                tif="post_only",
                purpose="test",
            )
        )
        await rig.wait_for(lambda: rig.of(OrderAccepted))
        exchange = rig.venue.exchange
        assert exchange is not None
        (resting,) = exchange.open_orders(rig.venue.subaccount)
        queue = exchange.queue_ahead[resting.digest]
        assert queue > 0  # the venue showed size at our price: we queue behind it

        # Someone sells half that at our price: it trades with those ahead of us.
        half = (queue / 2).quantize(D("0.001"))
        env = await other.place(other.sign(ETH, "sell", half, price, "ioc"))
        assert env.ok, env
        await rig.wait_for(lambda: src.stats["trades"] >= 1)
        await rig.wait_for(lambda: exchange.queue_ahead[resting.digest] <= queue - half)
        assert rig.of(FillReceived) == []

        # A sell through our price: all that rests at our price (the rest of the queue
        # ahead of us, then us), then below it: traded through, we fill in full.
        env = await other.place(other.sign(ETH, "sell", queue + 1, price - 5, "ioc"))
        assert env.ok, env
        fills = await rig.wait_for(
            lambda: sum(f.qty for f in rig.of(FillReceived)) == D("0.05") and rig.of(FillReceived)
        )
        assert {f.price for f in fills} == {price}
        # the published maker rate of this venue (1 bp)
        assert fills[0].fee == (price * D("0.05") * D("0.0001")).quantize(D("1e-8"))
    assert server.route_hits == 2  # the other client's two orders; none from paper


@pytest.mark.asyncio
async def test_a_broken_depth_chain_reseeds_the_book_from_rest():
    from adapters.paper.book import DepthEvent

    async with serving(STILL) as server, paper(server) as rig:
        src = rig.source
        rig.venue.submit(StreamConnect(attempt=1))
        await rig.wait_for(lambda: src.stats["snapshots.connect"] == 2)
        await rig.wait_for(lambda: src.chains[ETH].last_max is not None)
        last = src.chains[ETH].last_max
        assert last is not None
        # an event that does not follow the last one applied: one was lost
        src._on_frame(
            DepthEvent(
                product_id=ETH,
                min_ts=last + 10,
                max_ts=last + 10,
                last_max_ts=last + 5,
                bids=[],
                asks=[],
            )
        )
        assert src.stats["depth.gap"] == 1
        await rig.wait_for(lambda: src.stats["snapshots.gap"] == 1)
        assert src.chains[ETH].synced
    assert server.executes == 0


@pytest.mark.asyncio
async def test_a_quiet_book_is_confirmed_by_rest():
    # Nado pushes a quote only when the book changes (§13 Q9): a product nothing has
    # confirmed for quiet_quote_s is asked by REST, and the answer reaches the engine.
    async with serving(STILL) as server, paper(server) as rig:
        src = rig.source
        rig.venue.submit(StreamConnect(attempt=1))
        await rig.wait_for(lambda: "connected" in states(rig))
        now = rig.clock.now_ns()
        src._confirmed = {ETH: now - 2 * 10**9, SOL: now}  # ETH quiet for 2 s
        src._confirm_quiet_quotes(now)
        assert src.stats["quote_refresh"] == 1
        await rig.wait_for(
            lambda: any(q.ts_venue_ns is None and q.product_id == ETH for q in rig.of(BboUpdated))
        )
        assert src._confirmed[ETH] > now
    assert server.executes == 0
