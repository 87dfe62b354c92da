"""Engine overhead per event (ingress → journal → ledger → machine → intent → commit) and
replay throughput. Prints JSON lines; a measurement, not a test."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.clock import VirtualClock
from engine.core.events import FillReceived
from engine.core.intents import CancelOrder
from engine.core.journal import Journal
from engine.core.journal import read_records
from engine.core.loop import Engine
from engine.core.replay import replay_records
from engine.runtime.runner import run_virtual
from machines.base import PureMachine
from machines.base import State
from tests.support import ScriptedVenue

N = 5000


class Echo(PureMachine):
    """One transition and one intent per fill: the shape of a busy cycle machine."""

    working = State(initial=True)
    fill_received = working.to(None)

    def on_fill_received(self, ev: FillReceived) -> None:
        self.emit(CancelOrder(order_id=ev.order_id, product_id=ev.product_id))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def loop_overhead(durable: bool, path: str) -> dict[str, object]:
    clock = VirtualClock()
    engine = Engine(clock, Journal(path, durable=durable))
    engine.spawn(Echo, "echo")
    samples = []
    for i in range(N):
        ev = FillReceived(
            order_id=f"o{i}", fill_id=f"f{i}", product_id=4, side="buy", price="3000", qty="0.1"
        )
        clock.advance(1_000_000)
        t0 = time.perf_counter_ns()
        engine.submit(ev)
        out = engine.drain()
        t1 = time.perf_counter_ns()
        assert len(out) == 1
        samples.append((t1 - t0) / 1e6)
    engine.journal.close()
    return {
        "bench": "loop_overhead_per_event",
        "durable_commit": durable,
        "events": N,
        "p50_ms": round(statistics.median(samples), 4),
        "p99_ms": round(pct(samples, 0.99), 4),
        "mean_ms": round(statistics.fmean(samples), 4),
    }


def replay_speed(path: str) -> dict[str, object]:
    clock = VirtualClock()
    engine = Engine(clock, Journal(path, durable=False))
    sim = ScriptedVenue(engine, clock)
    first = engine.start("engine.harness.demo:start_probe", {"machines": 400})
    run_virtual(engine, clock, sim.send, initial=first)
    engine.journal.close()
    records = list(read_records(path))
    t0 = time.perf_counter()
    result = replay_records(records)
    elapsed = time.perf_counter() - t0
    assert result.ok, result
    return {
        "bench": "replay",
        "records": len(records),
        "seconds": round(elapsed, 4),
        "records_per_s": round(len(records) / elapsed),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(loop_overhead(False, ":memory:")))
        print(json.dumps(loop_overhead(True, str(Path(tmp) / "durable.db"))))
        print(json.dumps(replay_speed(str(Path(tmp) / "replay.db"))))


if __name__ == "__main__":
    main()
