"""The seeds' incidents as reproducible runs on the simulated venue, kept as golden journals.

`python -m tests.replay.scenarios` (or `make golden`) regenerates tests/replay/golden/*.jsonl;
review the diff like code. `test_golden.py` replays every golden file and re-runs every
scenario to check it still produces the same journal and the behaviour its incident needs.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from adapters.sim.faults import load_profile
from adapters.sim.venue import SimVenue
from engine.core.clock import NS_PER_S
from engine.core.clock import VirtualClock
from engine.core.intents import PlaceOrder
from engine.core.journal import Journal
from engine.core.journal import Record
from engine.core.journal import export_jsonl
from engine.runtime.compose import build_session
from engine.runtime.config import load_settings
from engine.runtime.run import RunOptions
from engine.runtime.run import parse_pair

GOLDEN = Path(__file__).parent / "golden"
PAIR = ("ETH-PERP", "SOL-PERP")


@attrs.frozen
class Scenario:
    name: str
    seed: int
    cycles: int
    faults: str = ""  # fault-profile TOML text
    env: dict[str, str] = attrs.field(factory=dict)  # DN_* flags
    # Puts the venue in a state before the engine starts (a previous run's leftovers).
    prelude: Callable[[SimVenue, VirtualClock], None] | None = None


@attrs.frozen
class Outcome:
    records: list[Record]
    summary: dict[str, Any]
    venue: SimVenue


def _leftovers(venue: SimVenue, clock: VirtualClock) -> None:
    """Seed 003: a crashed run left a short SOL position and a resting ETH order."""
    events: list[Any] = []

    async def start() -> None:
        await venue.start(events.append)

    asyncio.run(start())
    eth_px = venue.mid("ETH-PERP") * Decimal("0.95")  # below the market: it rests
    sol_px = (venue.mid("SOL-PERP") * Decimal("0.99")).quantize(Decimal("0.01"))
    venue.submit(
        PlaceOrder(
            order_id="crashed:1", product_id=8, side="sell", qty="2", price=sol_px, tif="ioc"
        )
    )
    venue.submit(
        PlaceOrder(
            order_id="crashed:2",
            product_id=4,
            side="buy",
            qty="0.05",
            price=eth_px.quantize(Decimal("0.1")),
            tif="default",
        )
    )
    clock.advance(2 * NS_PER_S)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("fault_free_10_cycles", seed=7, cycles=10),
        # Seed 000 "Cycle 6": one IOC leg expires unfilled while the other fills.
        Scenario(
            "cycle6_one_leg_unfilled", seed=3, cycles=2, faults="[orders]\nioc_no_fill = 0.5\n"
        ),
        # Seed 002: partial fills then cancels and replacements: never a double sell.
        Scenario(
            "seed002_partial_fill_then_cancel",
            seed=5,
            cycles=3,
            faults="[orders]\npartial_fill = 1.0\ncancel_delay_ms = [50, 300]\n",
        ),
        # Seed 003: a restart finds a residual position and an orphan order.
        Scenario("seed003_restart_with_residual", seed=2, cycles=1, prelude=_leftovers),
        # A one-leg reject (margin) after the other leg filled: flatten and alert.
        Scenario("one_leg_reject", seed=4, cycles=2, faults="[orders]\nreject = 0.4\n"),
        # POST_ONLY unwind that never fills: escalation reaches IOC, flat within budget.
        Scenario(
            "post_only_never_fills",
            seed=1,
            cycles=1,
            faults="[sim]\nmaker_fill_rate_per_s = 0\n[market]\nvolatility_bps_per_sqrt_s = 0\n",
            env={"DN_ORDER_STYLE": "post_only"},
        ),
        # BUG-003: the short leg gaps up through the stop while orders time out.
        Scenario(
            "bug003_stop_through_with_timeouts",
            seed=6,
            cycles=1,
            faults=(
                "[rest]\ntimeout = 0.3\n"
                '[market]\njumps = [{ at_s = 3.2, bps = 400, product = "SOL-PERP" }]\n'
            ),
            env={"DN_HOLD_S": "10", "DN_STOP_LOSS_PCT": "3"},
        ),
    )
}


def run_scenario(sc: Scenario) -> Outcome:
    clock = VirtualClock()
    with tempfile.TemporaryDirectory() as tmp:
        profile = None
        if sc.faults:
            path = Path(tmp) / "faults.toml"
            path.write_text(sc.faults, encoding="utf-8")
            profile = load_profile(str(path))
        venue = SimVenue(clock, sc.seed, profile, PAIR)
        if sc.prelude is not None:
            sc.prelude(venue, clock)
            venue = SimVenue(clock, sc.seed, profile, PAIR, exchange=venue.exchange)
    opts = RunOptions(pair=parse_pair("ETH-SOL"), cycles=sc.cycles, clock="virtual", seed=sc.seed)
    # The golden journals and their incident assertions are taker runs: pinned, whatever
    # the default execution mode (a scenario may still set its own).
    settings = load_settings(env={"DN_EXECUTION": "taker", **sc.env})
    session = build_session(
        opts, settings, venue=venue, clock=clock, journal=Journal(":memory:"), out=lambda _: None
    )
    asyncio.run(session.run_virtual())
    return Outcome(session.engine.journal.records(), session.summary(), venue)


def golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.jsonl"


def write_all(names: list[str] | None = None) -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name in names or list(SCENARIOS):
        out = run_scenario(SCENARIOS[name])
        export_jsonl(out.records, golden_path(name))
        s = out.summary
        print(
            f"{name}: {len(out.records)} records, cycles {s['cycles_completed']}/"
            f"{s['cycles_requested']}, halted={s['halted']} flat={s['flat']}"
        )


if __name__ == "__main__":
    write_all(sys.argv[1:] or None)
