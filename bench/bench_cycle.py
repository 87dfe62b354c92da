"""Cycle latency at a 50 ms simulated round trip (the sim's default: 25 ms each way, pushes
25 ms), time to venue-verified flat after a one-leg failure, and fill detection latency.

Virtual-clock figures are exact simulated time (what the protocol costs in round trips);
wall-clock figures add the engine's own overhead and asyncio scheduling. Prints JSON
lines; a measurement, not a test. DESIGN.md §5: BUILD+UNWIND ≤ 6 round trips + hold;
one leg filled and the other not → verified flat ≤ 3 s; seeds: fill detection < 100 ms.

Measured (100 cycles, taker): active time 5.0 round trips at p50 and p99 (6.0 before UNWIND
sent its opening read together with its reduce-only orders, issue 14); wall clock about
261 ms active per cycle against 315 ms before.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.sim import SimVenue
from engine.core.clock import VirtualClock
from engine.core.clock import WallClock
from engine.core.events import OrderRejected
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.journal import Journal
from engine.ops.trades import fold_records
from engine.runtime.compose import build_session
from engine.runtime.config import load_settings
from engine.runtime.run import RunOptions
from engine.runtime.run import Session
from engine.runtime.run import parse_pair

PAIR = parse_pair("ETH-SOL")
RTT_S = Decimal("0.05")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _session(clock: Any, venue: Any, cycles: int, env: dict[str, str]) -> Session:
    opts = RunOptions(pair=PAIR, cycles=cycles, clock="virtual", seed=1, quiet=True, control=False)
    if isinstance(clock, WallClock):
        opts = attrs.evolve(opts, clock="wall", status="plain")
    journal = Journal(":memory:", durable=False)
    return build_session(
        opts,
        load_settings(env=env),
        venue=venue,
        clock=clock,
        journal=journal,
        out=lambda _l: None,
    )


def cycle_time_virtual(cycles: int = 100, execution: str = "taker") -> dict[str, Any]:
    """Round trips of active time. DESIGN's 6-round-trip bound is about the protocol, so it
    is judged on `taker` (IOCs); `maker_first` (the default) waits at the touch for the
    market by design, and its line reports that time for comparison."""
    clock = VirtualClock()
    s = _session(clock, SimVenue(clock, 1, None, PAIR), cycles, {"DN_EXECUTION": execution})
    asyncio.run(s.run_virtual())
    fold = fold_records(s.engine.journal.records())
    done = [c for c in fold.cycles if c.outcome == "completed"]
    active = [float(c.active_s / RTT_S) for c in done if c.active_s is not None]
    hold = float(done[0].hold_s)
    if execution != "taker":
        return {
            "bench": "cycle_time_virtual_50ms_rtt",
            "execution": execution,
            "cycles": len(done),
            "hold_s": hold,
            "active_s_p50": round(statistics.median(active) * float(RTT_S), 3),
            "active_s_p99": round(pct(active, 0.99) * float(RTT_S), 3),
            "cycle_s_p50": statistics.median(float(c.cycle_s or 0) for c in done),
            "note": "resting at the touch until the market fills it: not a round-trip count",
        }
    return {
        "bench": "cycle_time_virtual_50ms_rtt",
        "execution": execution,
        "cycles": len(done),
        "hold_s": hold,
        "active_rtt_p50": statistics.median(active),
        "active_rtt_p99": pct(active, 0.99),
        "ratio_to_4rtt_min_p50": round(statistics.median(active) / 4, 3),
        "cycle_s_p50": statistics.median(float(c.cycle_s or 0) for c in done),
        "target": "active <= 6 RTT (+ hold)",
        "meets_target": pct(active, 0.99) <= 6,
    }


async def _run_wall(s: Session) -> None:
    await s.run_wall()


def cycle_time_wall(cycles: int = 15, protocol_rtt: float = 5) -> dict[str, Any]:
    """`protocol_rtt`: the round trips a cycle's protocol takes (the virtual-clock
    figure); what the wall clock adds beyond them is the engine's overhead."""
    clock = WallClock()
    env = {"DN_HOLD_S": "0.2", "DN_PAUSE_S": "0.1", "DN_EXECUTION": "taker"}
    s = _session(clock, SimVenue(clock, 1, None, PAIR), cycles, env)
    asyncio.run(_run_wall(s))
    fold = fold_records(s.engine.journal.records())
    done = [c for c in fold.cycles if c.outcome == "completed"][1:]  # first one warms up
    active_ms = [float(c.active_s or 0) * 1000 for c in done]
    orders = [o for c in done for o in c.orders]
    detect = [o.detect_ns / 1e6 for o in orders if o.detect_ns is not None]
    sent_to_fill = [o.fill_latency_ns / 1e6 for o in orders if o.fill_latency_ns is not None]
    return {
        "bench": "cycle_time_wall_50ms_rtt",
        "cycles": len(done),
        "active_ms_p50": round(statistics.median(active_ms), 1),
        "active_ms_p99": round(pct(active_ms, 0.99), 1),
        "active_rtt_p50": round(statistics.median(active_ms) / 50, 2),
        "fill_detection_ms_p50": round(statistics.median(detect), 2),
        "fill_detection_ms_p99": round(pct(detect, 0.99), 2),
        "order_to_fill_ms_p50": round(statistics.median(sent_to_fill), 2),
        "order_to_fill_ms_p99": round(pct(sent_to_fill, 0.99), 2),
        "overhead_ms_per_cycle_p50": round(statistics.median(active_ms) - protocol_rtt * 50, 1),
        "note": "fill detection = venue match time to engine ingress (sim push latency 25 ms); "
        "first cycle excluded (warm-up)",
        "target": "fill detection < 100 ms",
        "meets_target": pct(detect, 0.99) < 100,
    }


class OneLegFails:
    """Leg B of cycle 1's BUILD never fills: placed far from the book (IOC expires) or
    refused with a definitive venue reject, every round (repairs included)."""

    def __init__(self, venue: SimVenue, mode: str) -> None:
        self.venue, self.mode = venue, mode
        self.sink: Any = None
        self.failed_at: list[int] = []

    @property
    def products(self) -> Any:
        return self.venue.products

    async def start(self, sink: Any) -> None:
        self.sink = sink
        await self.venue.start(sink)

    def submit(self, intent: Intent) -> None:
        if (
            isinstance(intent, PlaceOrder)
            and intent.order_id.startswith("build:session:3:")
            and intent.product_id == 8
        ):
            if self.mode == "reject":
                ev = OrderRejected(order_id=intent.order_id, reason="margin", code=2006)
                self.venue.clock.call_later(50_000_000, lambda: self.sink(ev))
                return
            far = intent.price * (Decimal("0.5") if intent.side == "buy" else Decimal(2))
            intent = attrs.evolve(intent, price=far.quantize(Decimal("0.01")))
        self.venue.submit(intent)

    async def close(self) -> None:
        await self.venue.close()


def one_leg_flat(mode: str, seeds: int = 20) -> dict[str, Any]:
    from_failure, from_build = [], []
    for seed in range(1, seeds + 1):
        clock = VirtualClock()
        venue = OneLegFails(SimVenue(clock, seed, None, PAIR), mode)
        s = _session(clock, venue, 2, {"DN_EXECUTION": "taker"})  # IOC legs (see above)
        asyncio.run(s.run_virtual())
        fold = fold_records(s.engine.journal.records())
        c1 = next(c for c in fold.cycles if c.cycle == 1)
        assert c1.outcome == "recovered", (seed, c1.outcome)
        assert s.summary()["flat"], seed
        recs = s.engine.journal.records()
        first_fail = next(
            r.ts
            for r in recs
            if r.kind == "event"
            and '"build:session:3:' in r.payload
            and ('"order_expired"' in r.payload or '"order_rejected"' in r.payload)
            and ':o2"' in r.payload
        )
        assert c1.ended_ns is not None
        from_failure.append((c1.ended_ns - first_fail) / 1e9)
        from_build.append((c1.ended_ns - c1.started_ns) / 1e9)
    return {
        "bench": f"one_leg_failure_to_verified_flat_{mode}",
        "runs": seeds,
        "rtt_ms": 50,
        "from_failure_s_p50": round(statistics.median(from_failure), 3),
        "from_failure_s_p99": round(pct(from_failure, 0.99), 3),
        "from_failure_s_max": round(max(from_failure), 3),
        "from_cycle_start_s_p50": round(statistics.median(from_build), 3),
        "target": "verified flat <= 3 s",
        "meets_target": max(from_failure) <= 3,
    }


def main() -> None:
    virtual = cycle_time_virtual()
    print(json.dumps(virtual))
    print(json.dumps(cycle_time_virtual(execution="maker_first")))
    print(json.dumps(cycle_time_wall(protocol_rtt=virtual["active_rtt_p50"])))
    print(json.dumps(one_leg_flat("expire")))
    print(json.dumps(one_leg_flat("reject")))


if __name__ == "__main__":
    main()
