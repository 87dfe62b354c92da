"""Issue 12 item 3: past MAX_DAILY_LOSS the session parks flat with ONE deadline at the
next UTC midnight (engine clock), alerts once per day, and a `--cycles N` run finishes.

Before: idle → checking → idle every pause until midnight (363k transitions and a 1 GB
journal on the virtual clock; `--cycles N` never finished). The sim's quotes are made
sparse (one a minute) and the others' taker flow is off (these cycles are taker IOCs
against the crowd's depth; at the default rate, 4 arrivals a second, two parked virtual
days were 690k sim events and 5 s of CPU) so a parked virtual day costs milliseconds; the
transition count is what the test is about."""

from __future__ import annotations

import json
from pathlib import Path

from engine.core.journal import read_records
from tests.cli.support import virtual_run

SPARSE_QUOTES = (
    "[sim]\nbbo_interval_ms = 60000\nmarket_step_ms = 60000\nmaker_fill_rate_per_s = 0\n"
)
DAY_NS = 86400 * 10**9


def test_daily_loss_parks_until_midnight_and_cycles_n_finishes(tmp_path: Path) -> None:
    faults = tmp_path / "sparse.toml"
    faults.write_text(SPARSE_QUOTES)
    journal, summary = tmp_path / "d.db", tmp_path / "d.json"
    proc = virtual_run(
        journal,
        "--cycles",
        "3",
        "--faults",
        str(faults),
        "--summary-json",
        str(summary),
        DN_MAX_DAILY_LOSS_USD="0",  # any fee trips it
        DN_BBO_MAX_AGE_SECONDS="600",
        DN_EXECUTION="taker",  # the transition count below is a taker cycle's
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(summary.read_text())
    assert data["cycles_completed"] == 3
    assert data["flat"] is True
    records = list(read_records(journal))
    session = [r.data for r in records if r.kind == "transition" and r.machine == "session"]
    parked = [t for t in session if t.get("to") == "parked"]
    assert len(parked) == 2  # after cycle 1 (day 0) and cycle 2 (day 1)
    # No polling while parked: the session's whole life is a few dozen transitions.
    transitions = sum(1 for r in records if r.kind == "transition")
    assert transitions < 150, transitions
    queries = [r for r in records if r.kind == "intent" and "query_positions" in r.payload]
    assert len(queries) < 40, len(queries)
    # Each new cycle starts on a new UTC day (engine epoch 0 on the virtual clock).
    builds = [r.ts for r in records if r.machine == "session" and '"to":"building"' in r.payload]
    assert [ts // DAY_NS for ts in builds] == [0, 1, 2]
    assert proc.stdout.count("daily_loss_limit") == 2  # once per day
