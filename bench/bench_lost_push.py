"""Time to resolution of an IOC whose push is lost, at a 50 ms round trip (issue 11, item 7).

Before: nothing asked until BUILD's fill timeout (DN_FILL_TIMEOUT_S, 5 s); one cycle took
10.1 s against a 0.11 s median. Now the venue adapter asks two measured round trips after
the ack. Goal: ack -> resolved within two round trips plus the query (150 ms at 50 ms).

Virtual clock, exact simulated time. Prints JSON lines; a measurement, not a test.
- sim: SimVenue with every push lost (`[ws] drop = 1.0`), 25 ms each way; the query is
  the sim's `QueryOrder`.
- nado: NadoVenue on the offline gateway of tests/nado/offline.py (50 ms per request, no
  frames after the ack); the query is the archive's `orders` by digest.
- cycles: whole BUILD + UNWIND cycles on the sim with every push lost vs none.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.nado.archive import ArchiveOrder
from adapters.sim.faults import parse_profile
from adapters.sim.venue import SimVenue
from engine.core.clock import VirtualClock
from engine.core.events import Event
from engine.core.events import OrderAccepted
from engine.core.events import OrderStatus
from engine.core.intents import PlaceOrder
from engine.core.journal import Journal
from engine.ops.trades import fold_records
from engine.runtime.compose import build_session
from engine.runtime.config import load_settings
from engine.runtime.run import RunOptions
from engine.runtime.run import parse_pair

MS = 1_000_000
RTT_MS = 50
GOAL_MS = 2 * RTT_MS + RTT_MS  # two round trips of waiting, then the query's round trip
STILL = "[market]\nvolatility_bps_per_sqrt_s = 0\n"
DROP_ALL = "[ws]\ndrop = 1.0\n"
PAIR = ("ETH-PERP", "SOL-PERP")


def _line(name: str, venue: str, ack_to_resolved_ms: list[float]) -> dict[str, Any]:
    return {
        "bench": name,
        "venue": venue,
        "rtt_ms": RTT_MS,
        "orders": len(ack_to_resolved_ms),
        "ack_to_resolved_ms_p50": statistics.median(ack_to_resolved_ms),
        "ack_to_resolved_ms_max": max(ack_to_resolved_ms),
        "goal_ms": GOAL_MS,
        "target": "ack -> resolved <= 2 RTT + the query",
        "meets_target": max(ack_to_resolved_ms) <= GOAL_MS,
        "before": "resolved at DN_FILL_TIMEOUT_S (5 s) after the placement, then a query",
    }


def sim_lost_push(orders: int = 50) -> dict[str, Any]:
    clock = VirtualClock()
    venue = SimVenue(clock, 1, parse_profile(STILL + DROP_ALL), PAIR)
    log: list[tuple[int, Event]] = []

    async def start() -> None:
        await venue.start(lambda ev: log.append((clock.now_ns(), ev)))

    asyncio.run(start())
    clock.advance(200 * MS)
    out = []
    for n in range(orders):
        oid = f"o{n}"
        bbo = venue.exchange.bbo(4)
        side = "buy" if n % 2 == 0 else "sell"
        price = bbo.ask + 1 if side == "buy" else bbo.bid - 1
        venue.submit(
            PlaceOrder(
                order_id=oid, product_id=4, side=side, qty=Decimal("0.01"), price=price, tif="ioc"
            )
        )
        clock.advance(1000 * MS)
        mine = [(t, e) for t, e in log if getattr(e, "order_id", None) == oid]
        acked = next(t for t, e in mine if isinstance(e, OrderAccepted))
        done = next(t for t, e in mine if isinstance(e, OrderStatus))
        out.append((done - acked) / MS)
    asyncio.run(venue.close())
    return _line("lost_push_time_to_resolution", "sim", out)


def nado_lost_push(orders: int = 20) -> dict[str, Any]:
    from tests.nado.offline import ETH
    from tests.nado.offline import OfflineVenue
    from tests.nado.offline import S

    async def run() -> list[float]:
        rig = OfflineVenue(rtt_ms=RTT_MS, archive_url="http://127.0.0.1:9/archive")
        await rig.start()

        class Archive:
            settle_s = 10

            async def orders(self, digests: Any, *, request: str) -> dict[str, ArchiveOrder]:
                await rig.gateway._trip()
                return {
                    d: ArchiveOrder(
                        digest=d,
                        product_id=ETH,
                        qty=Decimal(1),
                        filled=Decimal(1),
                        last_s=rig.unix_ns() // S,
                    )
                    for d in digests
                }

            def settled(self, order: ArchiveOrder) -> bool:
                return order.complete

            async def aclose(self) -> None:
                pass

        rig.venue.archive = Archive()  # type: ignore[assignment]
        out = []
        for n in range(orders):
            oid = f"o{n}"
            intent = PlaceOrder(
                order_id=oid,
                product_id=ETH,
                side="buy",
                qty=Decimal(1),
                price=Decimal(3010),
                tif="ioc",
            )
            await rig.submit(intent)
            await rig.run(1000)
            mine = [(t, e) for t, e in rig.events if getattr(e, "order_id", None) == oid]
            acked = next(t for t, e in mine if isinstance(e, OrderAccepted))
            done = next(t for t, e in mine if isinstance(e, OrderStatus))
            out.append((done - acked) / MS)
        await rig.close()
        return out

    return _line("lost_push_time_to_resolution", "nado_offline", asyncio.run(run()))


def cycles_with_lost_pushes(cycles: int = 20) -> dict[str, Any]:
    def run(profile: str, probe_rtts: int = 2) -> list[float]:
        clock = VirtualClock()
        venue = SimVenue(clock, 2, parse_profile(profile), PAIR, probe_rtts=probe_rtts)
        opts = RunOptions(
            pair=parse_pair("ETH-SOL"), cycles=cycles, clock="virtual", seed=2, quiet=True
        )
        settings = load_settings(env={"DN_EXECUTION": "taker"})  # IOC legs: the asked-about order
        session = build_session(
            opts,
            settings,
            venue=venue,
            clock=clock,
            journal=Journal(":memory:"),
            out=lambda _: None,
        )
        asyncio.run(session.run_virtual())
        fold = fold_records(session.engine.journal.records())
        return [float(c.active_s or 0) for c in fold.cycles if c.outcome == "completed"]

    clean, lost = run(STILL), run(STILL + DROP_ALL)
    unprobed = run(STILL + DROP_ALL, probe_rtts=10**6)  # the adapter never asks: as before
    return {
        "bench": "cycle_active_s_with_every_push_lost",
        "rtt_ms": RTT_MS,
        "cycles_completed": len(lost),
        "cycles_requested": cycles,
        "active_s_p50_pushes_lost": statistics.median(lost),
        "active_s_max_pushes_lost": max(lost),
        "active_s_p50_fault_free": statistics.median(clean),
        "active_s_p50_pushes_lost_without_the_probe": statistics.median(unprobed),
        "cycles_completed_without_the_probe": len(unprobed),
        "target": "no cycle waits a fill timeout (5 s)",
        "meets_target": len(lost) == cycles and max(lost) < 5,
    }


if __name__ == "__main__":
    for fn in (sim_lost_push, nado_lost_push, cycles_with_lost_pushes):
        print(json.dumps(fn()), flush=True)
