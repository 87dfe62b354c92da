"""Simulated venue throughput on the virtual clock: events delivered per wall-clock second.

A trader sends an order or a query every 200 ms of venue time (both products, every
order type) while the venue pushes BBO every 100 ms per product; once with no faults and
once with a busy fault profile. Prints one JSON line; a measurement, not a test.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.sim.faults import parse_profile
from adapters.sim.venue import SimVenue
from engine.core.clock import VirtualClock
from engine.core.events import Event
from engine.core.intents import CancelOrder
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryPositions

SIM_SECONDS = 600
MS = 1_000_000
FAULTS = """
[orders]
ioc_no_fill = 0.05
partial_fill = 0.2
reject = 0.02
cancel_delay_ms = [0, 100]
[ws]
drop = 0.02
duplicate = 0.02
reorder = 0.02
delay_ms = [0, 20]
disconnect_mean_s = 60
[rest]
latency_ms = [0, 20]
timeout = 0.01
[venue]
position_lag_ms = 100
[market]
stale_bbo = 0.02
crossed_bbo = 0.01
"""


def run(profile_text: str, seed: int = 1) -> dict[str, float]:
    clock = VirtualClock()
    venue = SimVenue(clock, seed, parse_profile(profile_text))
    events = 0

    def sink(_ev: Event) -> None:
        nonlocal events
        events += 1

    asyncio.run(venue.start(sink))
    rng = random.Random(seed)
    ticks = {4: Decimal("0.1"), 8: Decimal("0.01")}
    sizes = {4: Decimal("0.05"), 8: Decimal(1)}
    t0 = time.perf_counter()
    for n in range(SIM_SECONDS * 5):
        pid = rng.choice((4, 8))
        roll = rng.random()
        if roll < 0.6:
            b = venue.exchange.bbo(pid)
            side = rng.choice(("buy", "sell"))
            price = (b.ask if side == "buy" else b.bid) + rng.randint(-5, 5) * ticks[pid]
            venue.submit(
                PlaceOrder(
                    order_id=f"b{n}",
                    product_id=pid,
                    side=side,
                    qty=sizes[pid] * rng.randint(1, 20),
                    price=max(price, ticks[pid]),
                    tif=rng.choice(("ioc", "default", "post_only", "fok")),
                )
            )
        elif roll < 0.8:
            venue.submit(CancelOrder(order_id=f"b{rng.randint(0, n)}", product_id=pid))
        else:
            venue.submit(QueryPositions(request_id=f"q{n}", product_ids=(4, 8)))
        clock.advance(200 * MS)
    wall = time.perf_counter() - t0
    return {
        "events": events,
        "wall_s": round(wall, 3),
        "events_per_s": round(events / wall),
        "sim_seconds_per_s": round(SIM_SECONDS / wall, 1),
    }


def main() -> None:
    clean, faulty = run(""), run(FAULTS)
    print(
        json.dumps(
            {
                "bench": "sim_venue_virtual_clock",
                "sim_seconds": SIM_SECONDS,
                "events_per_s": clean["events_per_s"],
                "sim_seconds_per_s": clean["sim_seconds_per_s"],
                "events": clean["events"],
                "faulty_events_per_s": faulty["events_per_s"],
                "faulty_sim_seconds_per_s": faulty["sim_seconds_per_s"],
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
