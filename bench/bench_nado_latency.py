"""Fill-event latency of the Nado adapter over loopback: stream push vs REST audit.

An in-process `VenueServer` (no faults, still prices) and a `NadoVenue` with its stream up.
Per round: an IOC through the touch, timed from `submit` to the first `FillReceived` from
the stream (and from the venue's own match stamp to its arrival); then the REST path the
audit takes to learn the same fill: a resting order partly filled, whose `QueryOrder`
answer (`order` query) carries the cumulative fill, timed from `submit` to `OrderStatus`;
and the position query (`subaccount_info`). Prints one JSON line; a measurement, not a test.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.nado.discovery import Expectations
from adapters.nado.signing import Secret
from adapters.nado.venue import NadoSettings
from adapters.nado.venue import NadoVenue
from adapters.sim.faults import parse_profile
from adapters.sim.server import SIM_CHAIN_ID
from adapters.sim.server import SIM_ENDPOINT
from adapters.sim.server import ServerOptions
from adapters.sim.server import VenueServer
from engine.core.clock import WallClock
from engine.core.events import ConnectionChanged
from engine.core.events import Event
from engine.core.events import FillReceived
from engine.core.events import OrderStatus
from engine.core.events import PositionSnapshot
from engine.core.intents import CancelOrder
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from engine.core.intents import StreamConnect

ROUNDS = 20  # 3 executes a round: 25 rounds use the 10 s execute budget (81 at NORMAL)
ETH = 4
D = Decimal
PROFILE = "[market]\nvolatility_bps_per_sqrt_s = 0\n[sim]\nmaker_fill_rate_per_s = 0\n"


class Waiter:
    def __init__(self) -> None:
        self.events: list[tuple[int, Event]] = []
        self.changed = asyncio.Event()

    def sink(self, ev: Event) -> None:
        self.events.append((time.perf_counter_ns(), ev))
        self.changed.set()

    async def first(self, pred: Any, since: int = 0) -> tuple[int, Event]:
        async with asyncio.timeout(5):
            while True:
                for t, ev in self.events[since:]:
                    if pred(ev):
                        return t, ev
                self.changed.clear()
                await self.changed.wait()


def ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50_ms": round(statistics.median(values), 2),
        "p90_ms": round(values[int(len(values) * 0.9) - 1], 2),
        "max_ms": round(values[-1], 2),
    }


async def main() -> dict[str, Any]:
    server = VenueServer(ServerOptions(seed=3, profile=parse_profile(PROFILE)))
    await server.start()
    w = Waiter()
    settings = NadoSettings(
        gateway_url=server.url,
        pair=("ETH-PERP", "SOL-PERP"),
        expect=Expectations(chain_id=SIM_CHAIN_ID, endpoint_addr=SIM_ENDPOINT),
    )
    venue = NadoVenue(settings, Secret("0x" + "11" * 32), clock=WallClock(), unix_ns=time.time_ns)
    ws_submit, ws_stamp, rest_status, rest_positions = [], [], [], []
    try:
        await venue.start(w.sink)
        venue.submit(StreamConnect(attempt=1))
        await w.first(lambda e: isinstance(e, ConnectionChanged))
        for n in range(ROUNDS):
            side = "buy" if n % 2 == 0 else "sell"
            bbo = server.exchange.bbo(ETH)
            px = bbo.ask + 5 if side == "buy" else bbo.bid - 5
            mark = len(w.events)
            sent = time.perf_counter_ns()
            venue.submit(
                PlaceOrder(
                    order_id=f"b:i{n}", product_id=ETH, side=side, qty="0.1", price=px, tif="ioc"
                )
            )
            oid = f"b:i{n}"
            t, ev = await w.first(
                lambda e, oid=oid: isinstance(e, FillReceived) and e.order_id == oid, mark
            )
            ws_submit.append((t - sent) / 1e6)
            assert isinstance(ev, FillReceived)
            if venue.fill_latency_ns:
                ws_stamp.append(venue.fill_latency_ns[-1] / 1e6)
            # REST: a resting order partly filled, its cumulative fill read back
            bids, asks = server.exchange.depth(ETH, 1)
            level = asks[0] if side == "buy" else bids[0]
            rid = f"b:r{n}"
            venue.submit(
                PlaceOrder(
                    order_id=rid,
                    product_id=ETH,
                    side=side,
                    qty=(level[1] * 3).quantize(D("0.001")),
                    price=level[0],
                    tif="default",
                )
            )
            await w.first(lambda e, rid=rid: getattr(e, "order_id", None) == rid, mark)
            mark = len(w.events)
            sent = time.perf_counter_ns()
            venue.submit(QueryOrder(request_id=f"b:s{n}", order_id=rid, product_id=ETH))
            t, _ = await w.first(
                lambda e, n=n: isinstance(e, OrderStatus) and e.request_id == f"b:s{n}", mark
            )
            rest_status.append((t - sent) / 1e6)
            sent = time.perf_counter_ns()
            venue.submit(QueryPositions(request_id=f"b:q{n}", product_ids=(ETH,)))
            t, _ = await w.first(
                lambda e, n=n: isinstance(e, PositionSnapshot) and e.request_id == f"b:q{n}", mark
            )
            rest_positions.append((t - sent) / 1e6)
            venue.submit(CancelOrder(order_id=rid, product_id=ETH))
    finally:
        await venue.close()
        await server.stop()
    return {
        "bench": "nado_fill_latency_loopback",
        "rounds": ROUNDS,
        "ws_fill_after_submit": ms(ws_submit),
        "ws_fill_after_venue_match": ms(ws_stamp),
        "rest_order_status_round_trip": ms(rest_status),
        "rest_positions_round_trip": ms(rest_positions),
        "requests": dict(venue.client.stats),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), sort_keys=True))
