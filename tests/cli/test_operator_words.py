"""Issue 12 item 7: the words an operator reads. --version, help for every option, a
summary line with units and ∞, `dnpair status` of a stopped engine without "ws up", a
live view that fits 80x24 with alerts visible and leaves no stale header, halt reasons
naming the machine and the cause, and a README with no links outside the repo."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rich.console import Console

from engine.ops.status import render
from engine.runtime.cli import build_parser
from machines.session import SessionMachine
from tests.cli.support import dnpair
from tests.cli.support import virtual_run

ROOT = Path(__file__).resolve().parents[2]


def test_version() -> None:
    proc = dnpair("--version")
    assert proc.returncode == 0
    assert re.fullmatch(r"dnpair \d+\.\d+\.\d+\n", proc.stdout), proc.stdout


def _parsers(parser: argparse.ArgumentParser, name: str = "dnpair"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{name} {'/'.join(a.option_strings) or a.dest}"
        for name, parser in _parsers(build_parser())
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert missing == []
    text = dnpair("run", "--help").stdout
    for flag in ("--venue", "--seed", "--clock", "--summary-json", "--metrics-port"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(flag))
        assert len(line.split()) > 2 or flag in text, line


def test_summary_line_has_units_and_infinity(tmp_path: Path) -> None:
    proc = virtual_run(tmp_path / "j.db", "--cycles", "1")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("[SUMMARY]"))
    assert "cycles 1/1 not halted verified flat pnl " in line
    assert " USD fees " in line
    assert line.count(" USD") == 3
    assert "None" not in line
    # a run without --cycles shows ∞ (on a --cycles 0 flatten: stopped at once)
    flat = dnpair("flatten", "--pair", "ETH-SOL", "--clock", "virtual", "--journal",
                  str(tmp_path / "f.db"))  # fmt: skip
    summary = next(ln for ln in flat.stdout.splitlines() if ln.startswith("[SUMMARY]"))
    assert "None" not in summary


def test_status_of_a_stopped_engine_does_not_claim_the_stream(tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    assert virtual_run(journal, "--cycles", "1").returncode == 0
    out = dnpair("status", str(journal)).stdout
    assert "engine not running" in out
    assert "ws up" not in out
    assert all(len(line) <= 80 for line in out.splitlines())


def _busy_snapshot() -> dict:
    return {
        "pair": "ETH-SOL", "venue": "nado", "engine_s": "123456.789", "cycles_requested": None,
        "cycles_closed": 12345, "halted": True,
        "halt_reason": "session: the stop's flatten did not verify flat (flatten:session:99 "
        "ended 'exhausted') " * 3,
        "ws_connected": True, "live": True, "unhedged_usd": "1234.56", "tolerance_usd": "5",
        "realized_pnl_usd": "-1234.5678", "fees_usd": "99.1234",
        "counters": {"orders": 123456, "fills": 123456, "rejects": 12, "rate_limited": 3,
                     "reconnects": 4, "emergency_exits": 5},
        "machines": [
            {"machine": f"emergency_exit:session:{i}" * 2, "state": "waiting_for_quote_long",
             "deadlines": [{"name": "attempt", "remaining_s": "2.500"},
                           {"name": "budget", "remaining_s": "29.000"}] * 3}
            for i in range(9)
        ],
        "positions": [
            {"symbol": "ETH-PERP", "qty": "-123.456", "venue_qty": "-123.456",
             "mid": "3012.34", "notional_usd": "-371234.56"},
            {"symbol": "SOL-PERP", "qty": "2468.91", "venue_qty": None, "mid": None,
             "notional_usd": None},
        ],
        "events": [f"{i:>10}.000s [EMERGENCY] a long event line " + "x" * 120 for i in range(8)],
        "alerts": [
            {"t": f"{i}.0", "severity": "critical", "event": f"alert_{i}",
             "message": "m" * 200, "exposure_usd": "1", "action": "a"}
            for i in range(6)
        ],
    }  # fmt: skip


def test_live_view_fits_80x24_with_the_latest_alerts_and_stable_columns() -> None:
    console = Console(width=80, height=24, record=True, force_terminal=False, color_system=None)
    snap = _busy_snapshot()
    with console.capture() as cap:
        console.print(render(snap))
    lines = cap.get().rstrip("\n").split("\n")
    assert len(lines) <= 24, len(lines)
    assert all(len(line) <= 80 for line in lines)
    assert any("alert_5" in line for line in lines)  # the newest alert is on screen
    # column widths do not depend on the content: the 'state' column starts at one place
    snap2 = _busy_snapshot()
    snap2["machines"] = [{"machine": "s", "state": "idle", "deadlines": []}]
    with console.capture() as cap2:
        console.print(render(snap2))
    head1 = next(ln for ln in lines if ln.startswith("machine"))
    head2 = next(ln for ln in cap2.get().split("\n") if ln.startswith("machine"))
    assert head1.index("state") == head2.index("state")


def test_live_view_leaves_no_stale_header_on_exit(tmp_path: Path) -> None:
    proc = dnpair(
        "run", "--pair", "ETH-SOL", "--cycles", "1", "--status", "live", "--journal",
        str(tmp_path / "l.db"), DN_HOLD_S="0", DN_PAUSE_S="0", COLUMNS="80", LINES="24",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    tail = proc.stdout.rstrip("\n").split("\n")[-3:]
    assert tail[-1].startswith("[SUMMARY]"), tail
    assert not any("cycles 1/1 PnL" in line for line in tail)


def test_halt_reasons_name_the_machine_and_the_cause() -> None:
    m = SessionMachine.__new__(SessionMachine)
    m.aborts, m.max_aborts = 4, 5
    assert m._halt_cause("building", "build:session:9", "aborted") == (
        "session: 5 BUILDs in a row refused (build:session:9 ended 'aborted'); max_aborts is 5"
    )
    assert "start-up sync failed (restore:session:1 ended 'failed')" in m._halt_cause(
        "syncing", "restore:session:1", "failed"
    )
    assert "flatten did not verify flat (flatten:session:7 ended 'exhausted')" in (
        m._halt_cause("finishing", "flatten:session:7", "exhausted")
    )


def test_readme_links_nothing_outside_the_repo_and_names_the_fault_profiles() -> None:
    text = (ROOT / "README.md").read_text()
    assert "../" not in text
    assert "tests/chaos/profiles/" in text
    for target in re.findall(r"`((?:docs|diagrams|adapters|tests)/[\w/.-]+)`", text):
        assert (ROOT / target.rstrip("/")).exists(), target
