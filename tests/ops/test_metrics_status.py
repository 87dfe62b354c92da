"""Metrics families, the status snapshot and view, and the runbook's flag table."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from engine.ops.metrics import MetricsServer
from engine.ops.runbook import flag_table
from engine.ops.runbook import render
from engine.ops.runbook import update_runbook
from engine.ops.status import LiveView
from engine.ops.status import render_text
from engine.ops.status import snapshot_fold
from engine.ops.trades import fold_records
from engine.runtime.config import FLAGS
from engine.runtime.runner import run_virtual
from tests.ops.support import FAULTY
from tests.ops.support import run_session
from tests.ops.support import session

FAMILIES = {
    "dnpair_position",
    "dnpair_venue_position",
    "dnpair_position_notional_usd",
    "dnpair_unhedged_notional_usd",
    "dnpair_machine_state",
    "dnpair_cycles",
    "dnpair_cycle_duration_seconds",
    "dnpair_fill_latency_seconds",
    "dnpair_fill_detection_seconds",
    "dnpair_slippage_bps",
    "dnpair_orders",
    "dnpair_fills",
    "dnpair_rejects",
    "dnpair_rate_limited",
    "dnpair_reconnects",
    "dnpair_emergency_exits",
    "dnpair_breaker_state",
    "dnpair_health_state",
    "dnpair_ws_connected",
    "dnpair_halted",
    "dnpair_realized_pnl_usd",
}


def _families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_every_family_scrapes_and_matches_the_summary():
    s = session(cycles=12, seed=4, faults=FAULTY, metrics_port=0)
    run_session(s)
    text = s.metrics.render().decode()
    fams = _families(text)
    assert set(fams) >= FAMILIES, FAMILIES - set(fams)
    summary = s.summary()

    def value(name: str, suffix: str = "", **labels: str) -> float:
        for sample in fams[name].samples:  # type: ignore[attr-defined]
            wanted = (
                sample.name in (name + suffix, name + "_total")
                if not suffix
                else (sample.name == name + suffix)
            )
            if wanted and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
        raise KeyError((name, labels))

    assert value("dnpair_orders") == summary["orders_sent"]
    assert value("dnpair_rate_limited") == summary["rate_limited"]
    assert value("dnpair_emergency_exits") == summary["emergency_exits"]
    assert value("dnpair_cycles", outcome="completed") == summary["cycles_completed"]
    assert (
        value("dnpair_cycle_duration_seconds", "_bucket", le="+Inf") >= summary["cycles_completed"]
    )
    assert value("dnpair_fill_latency_seconds", "_bucket", source="stream", le="+Inf") > 0
    assert value("dnpair_ws_connected") == 1.0
    assert value("dnpair_machine_state", machine="breaker", state="closed") == 1.0
    assert value("dnpair_position", product="ETH-PERP") == 0.0


def test_metrics_endpoint_serves_prometheus_text():
    s = session(cycles=1, metrics_port=0)
    run_session(s)

    async def scrape() -> bytes:
        server = MetricsServer(s.metrics, "127.0.0.1", 0)
        port = await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        body = await reader.read()
        writer.close()
        await server.close()
        return body

    body = asyncio.run(scrape())
    head, _, text = body.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"text/plain; version=0.0.4" in head
    assert "dnpair_unhedged_notional_usd" in _families(text.decode())


def test_status_shows_states_deadlines_positions_mid_cycle():
    s = session(cycles=2, env={"DN_HOLD_S": "30"})
    asyncio.run(s.venue.start(s.engine.submit))
    s.arm_monitor(s.products())
    first = s.engine.start("engine.runtime.app:start_pair", s.app_config(s.products()))

    def holding() -> bool:
        s.after_step()
        return s.engine.ledger.state_of("session") == ("holding",)

    assert run_virtual(s.engine, s.clock, s.send, until=holding, initial=first) == "until"
    snap = s.snapshot()
    by_id = {m["machine"]: m for m in snap["machines"]}
    assert by_id["session"]["state"] == "holding"
    assert {d["name"] for d in by_id["session"]["deadlines"]} >= {"hold_over"}
    hold = next(d for d in by_id["session"]["deadlines"] if d["name"] == "hold_over")
    assert 29 < float(hold["remaining_s"]) <= 30
    assert any(p["qty"] not in ("0", "0.000", "0.00") for p in snap["positions"])
    text = render_text(snap)
    assert "holding" in text
    assert "hold" in text
    assert "ETH-PERP" in text
    assert "unhedged notional" in text


def test_live_view_refreshes_from_an_asyncio_task_without_threads():
    s = run_session(session(cycles=1))
    out = io.StringIO()

    async def show() -> None:
        view = LiveView(s.snapshot, console=Console(file=out, force_terminal=True, width=100))
        s.view = view
        view.add_event("     0.100s [session] syncing → idle (machine_finished)")
        view.start()
        await asyncio.sleep(0)
        await view.stop()

    asyncio.run(show())
    assert "syncing → idle" in out.getvalue()
    assert "positions" in out.getvalue()


def test_status_from_a_journal_of_a_halted_run():
    from engine.core.journal import read_records

    fold = fold_records(read_records("tests/replay/golden/one_leg_reject.jsonl"))
    snap = snapshot_fold(fold)
    assert snap["live"] is False
    assert snap["halted"] is True
    assert {m["machine"]: m["state"] for m in snap["machines"]}["breaker"] == "closed"
    assert "HALTED" in render_text(snap)


def test_runbook_flag_table_is_current_and_lists_every_flag():
    assert update_runbook("docs/runbook.md", check=True) is False, "run `make runbook`"
    table = flag_table()
    for flag in FLAGS:
        assert f"`{flag.env_name}`" in table
    text = Path("docs/runbook.md").read_text(encoding="utf-8")
    stale = text.replace("| `DN_SIZE_USD` | `100` |", "| `DN_SIZE_USD` | `5` |")
    assert render(stale) != stale  # a stale table is detected


def test_runbook_covers_every_alert_the_engine_raises():
    text = Path("docs/runbook.md").read_text(encoding="utf-8")
    for event in (
        "halt",
        "emergency_exit_exhausted",
        "emergency_exit",
        "exposure_above_tolerance",
        "breaker_open",
        "reconnect_storm",
        "journal_torn_tail",
        "journal_corrupt",
        "journal_write_failed",
        "disk_low",
        "engine_error",
    ):
        assert f"| `{event}` |" in text, event
