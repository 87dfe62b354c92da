"""Stream faults: duplicated and reordered fill frames are one fill each in the ledger; a
disconnect in the middle of a fill is recovered by the reconnect audit and counted once.

In memory on the virtual clock (tests/adapter/memory.py): the venue, the adapter and the
engine share one clock that moves only from timer to timer, so these runs are the same on
a busy machine (the mid-fill disconnect once failed on loopback sockets under load)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.core.events import FillReceived
from engine.core.events import OrderCancelled
from engine.core.events import OrderStatus
from engine.core.events import VenueError
from engine.core.intents import CancelOrder
from engine.core.intents import PlaceOrder
from engine.core.intents import StreamConnect
from tests.adapter.memory import archive_for
from tests.adapter.memory import engine_rig
from tests.adapter.memory import serving
from tests.adapter.support import ETH
from tests.adapter.support import SOL
from tests.sim_server.helpers import still

pytestmark = pytest.mark.asyncio
D = Decimal


async def test_duplicated_and_reordered_fill_frames_count_once() -> None:
    # Every push is swapped with the next one and half are sent twice. No BBO pushes and
    # only the fill stream: fill frames are then adjacent on the wire (so they can swap),
    # and the channel's draws depend on our own frames only (the seed decides). (Nado
    # sends an order_update after every match, so with that stream subscribed each fill
    # would only ever swap with its own update; BBO is periodic here to keep it silent.)
    profile = still(
        ws="duplicate = 0.5\nreorder = 1.0",
        market='bbo_push = "periodic"',
        sim="reorder_flush_ms = 50\nbbo_interval_ms = 600000",
    )
    streams = ("fill",)
    async with serving(profile, seed=1) as server, engine_rig(server, private_streams=streams) as r:
        await r.until(lambda: r.state() == "connected")
        price = (server.exchange.bbo(SOL).bid * D("0.98")).quantize(D("0.01"))
        r.place(
            PlaceOrder(
                order_id="t:o1", product_id=SOL, side="sell", qty="1000", price=price, tif="ioc"
            )
        )
        ledger = r.engine.ledger

        def venue_fill() -> Decimal:
            return -r.server.exchange.position(r.sender, SOL).qty

        def settled() -> bool:
            heard = len(r.of(FillReceived, order_id="t:o1"))
            entry = r.venue.orders.get("t:o1")
            return (
                entry is not None
                and venue_fill() > 0
                and ledger.orders["t:o1"].filled == venue_fill()
                and ledger.fills_applied + ledger.fills_duplicate == heard
            )

        await r.until(settled)
        fills = r.of(FillReceived, order_id="t:o1")
        unique = {f.fill_id for f in fills}
        assert len(unique) >= 3  # several crowd levels, one frame each
        assert len(fills) > len(unique)  # duplicates were delivered ...
        cumulative = [f.cumulative_qty for f in fills]
        assert cumulative != sorted(cumulative)  # ... and out of order
        assert ledger.orders["t:o1"].filled == venue_fill()  # ... and counted once
        assert ledger.position(SOL) == -venue_fill()
        assert ledger.fills_applied == len(unique)
        assert ledger.fills_duplicate == len(fills) - len(unique)
        assert r.venue.stats["fills_duplicate"] == len(fills) - len(unique)


async def test_disconnect_mid_fill_is_recovered_by_the_audit_and_counted_once() -> None:
    """A resting buy is filling (taker flow hits it at the touch) while the stream is cut.
    The reconnect audit's order status carries the venue's cumulative fill: the ledger
    takes it once; fills heard after the reconnect and the cancel ack (cumulative words
    too) add only what is new."""
    # a long backoff: the test chooses when the stream comes back (once fills happened)
    conn = {"base_backoff_s": "60", "max_backoff_s": "60", "poll_s": "60"}
    profile = "[market]\nvolatility_bps_per_sqrt_s = 0\n[sim]\nmaker_fill_rate_per_s = 5\n"
    async with serving(profile, seed=2) as server, engine_rig(server, conn) as r:
        await r.until(lambda: r.state() == "connected")
        assert r.venue.stream is not None
        await r.venue.stream.kill_socket()  # the network drops the socket: no close frame
        await r.until(lambda: r.state() == "reconnecting")
        cut_at = r.clock.now_ns()
        bids, _ = server.exchange.depth(ETH, 1)
        r.place(
            PlaceOrder(
                order_id="t:o1",
                product_id=ETH,
                side="buy",
                qty="10",
                price=bids[0][0],
                tif="default",
            )
        )

        def venue_filled() -> Decimal:
            return r.server.exchange.position(r.sender, ETH).qty

        await r.until(lambda: venue_filled() > 0)  # taker flow arrived: 5/s
        assert r.of(FillReceived) == []  # filled at the venue, nothing heard
        r.venue.submit(StreamConnect(attempt=2, reason="test: the network is back"))
        await r.until(lambda: r.machine.completed == ["reconnect"])
        recovered = [s for s in r.of(OrderStatus, order_id="t:o1") if s.request_id]
        assert recovered[0].state == "open"
        assert 0 < recovered[0].filled_qty < 10
        order = r.engine.ledger.orders["t:o1"]
        assert order.filled >= recovered[0].filled_qty
        assert r.notes("fills not heard")
        took = (r.clock.now_ns() - cut_at) / 1e6
        print(f"audit recovered {recovered[0].filled_qty} ETH {took:.0f} virtual ms after the cut")
        # the cancel ack states the total; then the ledger equals the venue, fills once
        r.place(CancelOrder(order_id="t:o1", product_id=ETH))
        ack = await r.wait_for(OrderCancelled, order_id="t:o1")
        total = venue_filled()
        assert ack.filled_qty == total
        await r.until(lambda: order.filled == total)
        assert r.engine.ledger.position(ETH) == total
        heard = {f.fill_id for f in r.of(FillReceived, order_id="t:o1")}
        assert r.engine.ledger.fills_applied == len(heard)  # only fills after the reconnect
        assert order.filled == total  # counted once: the audit's word and the fills overlap


async def test_an_order_that_ended_unheard_is_not_guessed() -> None:
    """An IOC filled and ended while the stream was cut: the `order` query no longer lists
    it and nothing was heard, so the adapter says it cannot tell (no invented fill, no
    invented zero). The audit's position answer shows the venue's truth beside the fills
    heard, and the exposure view takes the venue's word."""
    conn = {"base_backoff_s": "60", "max_backoff_s": "60", "poll_s": "60"}
    async with serving(still(), seed=3) as server, engine_rig(server, conn) as r:
        await r.until(lambda: r.state() == "connected")
        assert r.venue.stream is not None
        await r.venue.stream.kill_socket()
        await r.until(lambda: r.state() == "reconnecting")
        _, asks = server.exchange.depth(ETH, 1)
        r.place(
            PlaceOrder(
                order_id="t:o1", product_id=ETH, side="buy", qty="1", price=asks[0][0], tif="ioc"
            )
        )
        await r.until(lambda: server.exchange.position(r.sender, ETH).qty == 1)
        r.venue.submit(StreamConnect(attempt=2, reason="test: the network is back"))
        await r.until(lambda: r.machine.audits_complete + len(r.notes("audit incomplete")) >= 1)
        unsure = r.of(VenueError, order_id="t:o1")
        assert [e.error_class for e in unsure] == ["retryable"]
        assert "cannot tell" in unsure[0].message
        assert r.of(OrderStatus, order_id="t:o1") == []
        ledger = r.engine.ledger
        assert ledger.position(ETH) == 0  # no fill was heard, none invented
        assert ledger.venue_position(ETH) == 1
        assert ledger.best_position(ETH) == 1
        assert r.notes("audit: venue position differs")


@pytest.mark.parametrize("tif", ["ioc", "default"])
async def test_an_order_that_ended_unheard_is_resolved_by_the_archive(tif: str) -> None:
    """The same gap with an archive (indexer) configured: the order query falls back to it
    and answers with the venue's cumulative fill, which the ledger takes once."""
    conn = {"base_backoff_s": "60", "max_backoff_s": "60", "poll_s": "60"}
    async with (
        serving(still(), seed=3) as server,
        archive_for(server) as archive,
        engine_rig(server, conn, archive_url=archive, archive_settle_s=0) as r,
    ):
        await r.until(lambda: r.state() == "connected")
        assert r.venue.stream is not None
        await r.venue.stream.kill_socket()
        await r.until(lambda: r.state() == "reconnecting")
        _, asks = server.exchange.depth(ETH, 1)
        price, level = asks[0]
        # IOC: more than the level, the rest expires unfilled; DEFAULT: filled completely
        qty = (level * 3).quantize(D("0.001")) if tif == "ioc" else D("0.5")
        r.place(
            PlaceOrder(order_id="t:o1", product_id=ETH, side="buy", qty=qty, price=price, tif=tif)
        )
        await r.until(lambda: server.exchange.position(r.sender, ETH).qty > 0)
        truth = server.exchange.position(r.sender, ETH).qty
        r.venue.submit(StreamConnect(attempt=2, reason="test: the network is back"))
        await r.until(lambda: r.machine.completed == ["reconnect"])
        status = r.of(OrderStatus, order_id="t:o1")[0]
        assert status.filled_qty == truth
        assert status.state == ("expired" if tif == "ioc" else "filled")
        assert r.engine.ledger.orders["t:o1"].filled == truth
        assert r.engine.ledger.position(ETH) == truth
        assert r.venue.stats["status_from_archive"] == 1
        assert r.venue.archive is not None
        assert r.venue.archive.requests == 1
