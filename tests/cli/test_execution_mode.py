"""Issue 14: `DN_EXECUTION=maker_first` end to end on the virtual clock, and its settings
refused at the boundary (exit 2, one line, nothing sent)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from engine.core.journal import read_records
from tests.cli.support import one_line_error
from tests.cli.support import virtual_run


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"DN_EXECUTION": "makerfirst"}, "DN_EXECUTION: must be one of taker, maker_first"),
        (
            {"DN_EXECUTION": "maker_first", "DN_ORDER_STYLE": "post_only"},
            "DN_EXECUTION=maker_first and DN_ORDER_STYLE=post_only",
        ),
        ({"DN_MAKER_BUDGET_S": "0"}, "DN_MAKER_BUDGET_S: must be >= 0.05"),
    ],
    ids=["unknown-mode", "with-post-only", "zero-budget"],
)
def test_bad_execution_settings_exit_2_with_nothing_sent(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    journal = tmp_path / "j.db"
    proc = virtual_run(journal, "--cycles", "1", **env)
    assert says in one_line_error(proc)
    sent = [r for r in read_records(journal) if r.kind == "intent"] if journal.exists() else []
    assert sent == []


def test_maker_first_three_cycles_end_flat_with_hedged_maker_fills(tmp_path: Path) -> None:
    journal, summary = tmp_path / "j.db", tmp_path / "s.json"
    proc = virtual_run(
        journal, "--cycles", "3", "--summary-json", str(summary), DN_EXECUTION="maker_first"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(summary.read_text())
    assert out["cycles_completed"] == 3
    assert out["flat"] is True
    assert out["halted"] is False
    assert all(Decimal(q) == 0 for q in out["final_positions"].values())
    records = list(read_records(journal))
    places = {
        r.data["order_id"]: r.data
        for r in records
        if r.kind == "intent" and r.data.get("kind") == "place_order"
    }
    fills = [r.data for r in records if r.kind == "event" and r.data.get("kind") == "fill_received"]
    resting = [o for o in places.values() if o["tif"] == "post_only"]
    hedges = [o for o in places.values() if o["purpose"] == "hedge"]
    assert resting
    assert hedges
    # every BUILD and UNWIND rested one leg: maker fills, each hedged by an IOC
    maker_fills = [f for f in fills if f.get("is_maker")]
    assert len({f["order_id"] for f in maker_fills}) >= 6
    assert all(places[f["order_id"]]["tif"] == "post_only" for f in maker_fills)
    assert all(o["tif"] == "ioc" for o in hedges)
    assert all(o["reduce_only"] for o in resting if "unwind" in o["order_id"])
