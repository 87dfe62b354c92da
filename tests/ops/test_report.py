"""Trade records and `dnpair report`: per-cycle numbers that reconcile with the run."""

from __future__ import annotations

import csv
from decimal import Decimal

from engine.ops import report
from engine.ops.trades import fold_records
from engine.runtime.cli import main
from tests.ops.support import FAULTY
from tests.ops.support import run_session
from tests.ops.support import session


def test_cycles_reconcile_with_the_summary_of_a_clean_run():
    s = run_session(session(cycles=4, seed=2))
    fold = fold_records(s.engine.journal.records())
    summary = s.summary()
    numbered = [c for c in fold.cycles if c.cycle is not None]
    assert [c.outcome for c in numbered] == ["completed"] * 4
    # Net PnL per cycle adds up exactly (Decimal) to the ledger's realised PnL.
    assert sum((c.net_pnl for c in fold.cycles), Decimal(0)) == Decimal(summary["realized_pnl_usd"])
    assert sum((c.fees for c in fold.cycles), Decimal(0)) == Decimal(summary["fees_usd"])
    first = numbered[0]
    legs = {leg.symbol: leg for leg in first.legs()}
    assert legs["ETH-PERP"].entry_side == "buy"  # odd cycles: long the first symbol
    assert legs["SOL-PERP"].entry_side == "sell"
    assert legs["ETH-PERP"].entry_qty == legs["ETH-PERP"].exit_qty > 0
    # Sim round trip is 50 ms: check, place+fill, verify, then UNWIND's place+fill with its
    # opening read alongside, verify = 5 RTT (6 while UNWIND read before placing).
    assert first.active_s == Decimal("0.25")
    assert first.hold_s == Decimal(2)
    assert first.fill_latency_ms == Decimal(50)
    assert first.slippage_bps is not None


def test_report_of_a_faulty_run_table_csv_and_charts(tmp_path, capsys):
    s = run_session(session(tmp_path, cycles=12, seed=4, faults=FAULTY))
    s.engine.journal.close()
    journal = tmp_path / "j.db"
    out_csv, png, page = tmp_path / "c.csv", tmp_path / "c.png", tmp_path / "c.html"
    code = main(["report", str(journal), "--csv", str(out_csv), "--chart", str(png)])
    assert code == 0
    text = capsys.readouterr().out
    assert "totals:" in text
    assert "net" in text
    assert "ETH in" in text
    with out_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 12
    assert set(report.CSV_FIELDS) == set(rows[0])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["report", str(journal), "--chart", str(page)]) == 0
    html = page.read_text()
    assert "<svg" in html
    assert "<polyline" in html
    assert "<rect" in html
    assert "<script" not in html  # self-contained, no scripts
    fold = report.load(str(journal))
    totals = report.totals(fold)
    assert totals["cycles"] == len([r for r in rows if r["cycle"]])
    assert totals["net_pnl_usd"] == sum((c.net_pnl for c in fold.cycles), Decimal(0))


def test_report_refuses_a_missing_journal_and_a_bad_chart_format(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.db")]) == 1
    s = run_session(session(tmp_path, cycles=1))
    s.engine.journal.close()
    assert main(["report", str(tmp_path / "j.db"), "--chart", str(tmp_path / "x.gif")]) == 2
    assert "unsupported format" in capsys.readouterr().err


def test_report_reads_a_golden_jsonl_export_with_a_halt(capsys):
    assert main(["report", "tests/replay/golden/one_leg_reject.jsonl"]) == 0
    out = capsys.readouterr().out
    assert "recovered" in out
    assert "HALTED: two consecutive failed cycles" in out
