"""Virtual-clock sessions for the operations tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from adapters.sim import SimVenue
from adapters.sim import parse_profile
from engine.core.clock import VirtualClock
from engine.core.journal import Journal
from engine.runtime.compose import build_session
from engine.runtime.config import load_settings
from engine.runtime.run import RunOptions
from engine.runtime.run import Session
from engine.runtime.run import parse_pair

PAIR = parse_pair("ETH-SOL")

FAULTY = """
[orders]
ioc_no_fill = 0.15
partial_fill = 0.3
[ws]
drop = 0.05
duplicate = 0.05
disconnect_mean_s = 8
[rest]
rate_limit = [{ at_s = 12, for_s = 3 }]
[market]
crossed_bbo = 0.02
"""


def session(
    tmp_path: Path | None = None,
    *,
    cycles: int = 3,
    seed: int = 1,
    faults: str = "",
    env: dict[str, str] | None = None,
    lines: list[str] | None = None,
    **opts: Any,
) -> Session:
    clock = VirtualClock()
    venue = SimVenue(clock, seed, parse_profile(faults) if faults else None, PAIR)
    path = str(tmp_path / "j.db") if tmp_path is not None else ":memory:"
    journal = Journal(path, durable=False)
    options = RunOptions(pair=PAIR, cycles=cycles, clock="virtual", seed=seed, **opts)
    sink = lines.append if lines is not None else (lambda _line: None)
    return build_session(
        options,
        load_settings(env=env or {}),
        venue=venue,
        clock=clock,
        journal=journal,
        out=sink,
    )


def run_session(s: Session) -> Session:
    asyncio.run(s.run_virtual())
    return s
