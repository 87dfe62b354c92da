"""What the volume cost (issue 14): volume, fees, slippage against the decision mid, cost
per million, maker share and one leg alone, per cycle and for the run, by hand."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

import pytest

from engine.core.journal import Record
from engine.core.messages import from_dict
from engine.core.observed import Observed
from engine.ops import report
from engine.ops.trades import CostTotals
from engine.ops.trades import OrderFacts
from engine.ops.trades import RunFold
from engine.ops.trades import cost_per_million
from engine.ops.trades import p99_rank

D = Decimal
MS = 1_000_000
S = 1_000_000_000
CONFIG = {
    "legs": [
        {"product_id": 4, "symbol": "ETH-PERP"},
        {"product_id": 8, "symbol": "SOL-PERP"},
    ],
    "settings": {"size_usd": "100"},  # tolerance 5 USD
    "venue": "sim",
}


class Feed:
    def __init__(self) -> None:
        self.fold = RunFold()
        self.seq = 0

    def __call__(self, ts: int, kind: str, machine: str, data: dict[str, Any]) -> None:
        self.seq += 1
        rec = Record(self.seq, ts, kind, machine, json.dumps(data), "", "")
        msg = from_dict(data) if kind in ("event", "intent") else None
        self.fold.observe(Observed(rec, data, msg))

    def note(self, ts: int, text: str, **data: Any) -> None:
        self(ts, "note", "engine", {"note": text, **data})

    def finished(self, ts: int, machine: str, outcome: str) -> None:
        data = {"kind": "machine_finished", "machine": machine, "outcome": outcome}
        self(ts, "event", "engine", {**data, "target": "session"})

    def bbo(self, ts: int, pid: int, bid: str, ask: str) -> None:
        data = {"kind": "bbo_updated", "product_id": pid, "bid": bid, "ask": ask}
        self(ts, "event", "venue", {**data, "bid_qty": "10", "ask_qty": "10"})

    def place(self, ts: int, mid: str, oid: str, pid: int, side: str, qty: str, px: str) -> None:
        data = {"kind": "place_order", "order_id": oid, "product_id": pid, "side": side}
        self(ts, "intent", mid, {**data, "qty": qty, "price": px, "tif": "ioc"})

    def fill(self, ts: int, oid: str, pid: int, side: str, qty: str, px: str, **kw: Any) -> None:
        data = {"kind": "fill_received", "order_id": oid, "fill_id": f"f-{oid}-{ts}"}
        self(
            ts,
            "event",
            "venue",
            {**data, "product_id": pid, "side": side, "qty": qty, **kw} | {"price": px},
        )


def one_cycle() -> RunFold:
    """One cycle by hand. Mids: ETH 3000 (2999/3001), SOL 150 (149.9/150.1).
    BUILD: ETH bought 0.033 @ 3001 (taker, fee 0.04) at 1.000 s, SOL sold 0.66 @ 150.05
    (maker, no fee) at 1.050 s: ETH alone 50 ms. UNWIND: SOL bought 0.66 @ 150.1 (taker,
    fee 0.04) at 3.000 s, ETH sold 0.033 @ 2999 (maker) at 3.200 s: SOL side alone 200 ms.
    Volume 99.033 + 99.033 + 99.066 + 98.967 = 396.099; slippage against the mid
    0.033 - 0.033 + 0.066 + 0.033 = 0.099; fees 0.08; maker 198.000 of it."""
    f = Feed()
    f.note(0, "run_started", config=CONFIG)
    f.bbo(0, 4, "2999", "3001")
    f.bbo(0, 8, "149.9", "150.1")
    f.note(S // 2, "spawn", machine="build:session:1", cls="X", params={"params": {"cycle": 1}})
    f.place(S // 2, "build:session:1", "o1", 4, "buy", "0.033", "3003")
    f.place(S // 2, "build:session:1", "o2", 8, "sell", "0.66", "149.8")
    f.fill(1 * S, "o1", 4, "buy", "0.033", "3001", fee="0.04")
    f.fill(1 * S + 50 * MS, "o2", 8, "sell", "0.66", "150.05", is_maker=True)
    f.fill(1 * S + 50 * MS, "o2", 8, "sell", "0.66", "150.05", is_maker=True)  # duplicate
    f.finished(1 * S + 60 * MS, "build:session:1", "done")
    f.note(2 * S, "spawn", machine="unwind:session:2", cls="X", params={"params": {"cycle": 1}})
    f.place(2 * S, "unwind:session:2", "o3", 4, "sell", "0.033", "2997")
    f.place(2 * S, "unwind:session:2", "o4", 8, "buy", "0.66", "150.2")
    f.fill(3 * S, "o4", 8, "buy", "0.66", "150.1", fee="0.04")
    f.bbo(3 * S + 100 * MS, 4, "2998", "3000")  # a quote move alone does not end it
    f.fill(3 * S + 200 * MS, "o3", 4, "sell", "0.033", "2999", is_maker=True)
    f.finished(3 * S + 300 * MS, "unwind:session:2", "done")
    return f.fold.finish()


def test_one_cycles_costs_by_hand():
    fold = one_cycle()
    (c,) = fold.traded_cycles
    assert c.outcome == "completed"
    assert c.volume_usd == D("396.099")
    assert c.fees == D("0.08")
    assert c.slippage_usd == D("0.099")
    assert c.cost_per_million_usd == D("0.179") / D("396.099") * 1_000_000
    assert f"{c.cost_per_million_usd:.4f}" == "451.9072"
    assert c.maker_notional == D("198.000")  # the duplicate counted once
    assert c.maker_share == D("198.000") / D("396.099")
    assert c.hedge_ns == [50 * MS, 200 * MS]
    assert c.one_leg_s == D("0.25")
    assert c.hedge_max_s == D("0.2")
    t = fold.cost_totals()
    assert (t.volume, t.fees, t.slippage, t.episodes) == (c.volume_usd, c.fees, D("0.099"), 2)
    keys = t.as_json()
    assert keys == {
        "volume_usd": "396.10",
        "slippage_usd": "0.0990",
        "cost_per_million_usd": "451.91",
        "maker_share": "0.4999",
        "one_leg_exposure_s": "0.25",
        "one_leg_episodes": 2,
        "hedge_latency_p99_s": "0.2",
        "hedge_latency_max_s": "0.2",
    }


def test_a_closed_cycle_keeps_its_numbers_when_the_ledger_forgets_its_orders():
    fold = one_cycle()
    (c,) = fold.traded_cycles
    fold.ledger.orders.clear()  # a live ledger forgets done orders beyond 1 000
    assert (c.volume_usd, c.fees, c.slippage_usd) == (D("396.099"), D("0.08"), D("0.099"))


def test_an_episode_still_open_counts_up_to_the_last_record():
    f = Feed()
    f.note(0, "run_started", config=CONFIG)
    f.bbo(0, 4, "2999", "3001")
    f.bbo(0, 8, "149.9", "150.1")
    f.place(0, "flatten:session:9", "x1", 4, "buy", "0.033", "3003")
    f.fill(1 * S, "x1", 4, "buy", "0.033", "3000")
    f.bbo(4 * S, 8, "149.9", "150.1")
    t = f.fold.cost_totals()
    assert (t.episodes, t.one_leg_ns, t.max_ns) == (1, 3 * S, 3 * S)


@pytest.mark.parametrize(
    ("side", "avg", "usd"),
    [
        ("buy", "101", "0.995"),  # paid 0.995 above the mid 100.005
        ("sell", "99", "1.005"),  # sold 1.005 below it
        ("buy", "100", "-0.005"),  # a maker buy at the bid: half the spread earned
    ],
)
def test_slippage_is_against_the_decision_mid_positive_when_worse(side, avg, usd):
    class _Rec:
        filled, notional, fees = D(1), D(avg), D(0)

    class _Ledger:
        def order(self, _oid: str) -> _Rec:
            return _Rec()

    o = OrderFacts(
        order_id="o",
        machine="build:session:1",
        cycle=1,
        product_id=4,
        side=side,
        qty=D(1),
        limit_price=D(100),
        purpose="build",
        sent_ns=0,
        ref_bid=D(100),
        ref_ask=D("100.01"),
        ref_mid=D("100.005"),
        ledger=_Ledger(),  # type: ignore[arg-type]
    )
    assert o.slippage_usd == D(usd)
    assert o.slippage_bps == D(usd) / D("100.005") * 10_000


def test_cost_per_million_is_fees_plus_slippage_per_million_of_volume():
    assert cost_per_million(D("0.08"), D("0.02"), D(400)) == D(250)
    assert cost_per_million(D("0.08"), D("-0.10"), D(400)) == D(-50)  # maker rebates
    assert cost_per_million(D(1), D(1), D(0)) is None


def test_the_p99_is_the_nearest_rank_of_every_value_rounded_up_to_the_ms():
    rng = random.Random(3)
    t, seen = CostTotals(), []
    for _ in range(2500):
        v = rng.choice((rng.randint(0, 10**9), rng.randint(0, 3 * 10**7)))
        t.add_episode(v)
        seen.append(v)
        exact = sorted(seen)[p99_rank(len(seen)) - 1]
        assert t.p99_ns() == -(-exact // MS) * MS
    assert t.max_ns == max(seen)
    assert t.one_leg_ns == sum(seen)
    assert p99_rank(100) == 99
    assert p99_rank(101) == 100
    assert p99_rank(1) == 1


def test_report_shows_the_costs_per_cycle_and_in_totals(tmp_path):
    fold = one_cycle()
    text = report.render_table(fold)
    header, _rule, row = text.splitlines()[:3]
    for title in ("cost/M", "maker", "1leg s"):
        assert title in header
    assert "451.9" in row
    assert "0.50" in row  # maker share
    assert "0.250" in row  # one leg alone, s
    assert "cost 451.91 USD per million of volume   maker share 0.4999" in text
    assert "one leg alone 0.250 s in 2 episode(s); per fill p99 0.200 s, max 0.200 s" in text
    assert "slippage 0.0990 USD (against the decision mid)" in text
    (r,) = report.rows(fold)
    assert (r["cost_per_million_usd"], r["maker_share"]) == ("451.91", "0.4999")
    assert (r["one_leg_s"], r["hedge_max_s"]) == ("0.250", "0.200")


def test_the_chart_splits_gross_pnl_from_fees(tmp_path):
    fold = one_cycle()
    _labels, series, _times = report.pnl_series(fold)
    # gross: ETH 98.967 - 99.033, SOL 99.033 - 99.066 = -0.099; fees 0.08
    assert series == {"gross": [-0.099], "fees": [-0.08], "net": [-0.179]}
    page = tmp_path / "c.html"
    report.write_chart(fold, str(page))
    html = page.read_text()
    for name in ("gross", "fees", "net"):
        assert f'class="{name}"' in html
    assert "gross PnL" in html
    assert "fees (paid, below 0)" in html


COST_KEYS = {
    "volume_usd",
    "fees_usd",
    "slippage_usd",
    "cost_per_million_usd",
    "maker_share",
    "one_leg_exposure_s",
    "one_leg_episodes",
    "hedge_latency_p99_s",
    "hedge_latency_max_s",
}


def test_run_summary_json_has_the_costs_and_they_agree_with_the_report(tmp_path, capsys):
    from engine.runtime.cli import main

    faults = tmp_path / "f.toml"
    faults.write_text("[orders]\npartial_fill = 0.3\n[ws]\ndelay_ms = [0, 200]\n")
    journal, out = tmp_path / "j.db", tmp_path / "s.json"
    args = ["run", "--pair", "ETH-SOL", "--clock", "virtual", "--quiet", "--cycles", "8"]
    args += ["--seed", "5", "--faults", str(faults), "--journal", str(journal)]
    assert main([*args, "--summary-json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert set(s) >= COST_KEYS
    volume, fees, slip = D(s["volume_usd"]), D(s["fees_usd"]), D(s["slippage_usd"])
    assert volume > 8 * 4 * 90  # 8 cycles of four ~100 USD orders
    cpm = D(s["cost_per_million_usd"])
    assert abs(cpm - (fees + slip) / volume * 1_000_000) < D("0.1")  # the rounded inputs
    assert D(0) <= D(s["maker_share"]) <= D(1)
    alone, worst = D(s["one_leg_exposure_s"]), D(s["hedge_latency_max_s"])
    assert s["one_leg_episodes"] > 0  # 200 ms of push jitter: legs heard apart
    assert alone >= worst >= D(s["hedge_latency_p99_s"]) - D("0.001") > 0
    # The live fold's totals are the report's, read back from the journal.
    t = report.totals(report.load(str(journal)))
    assert s["volume_usd"] == str(t["volume_usd"].quantize(D("0.01")))
    assert s["slippage_usd"] == str(t["slippage_usd"].quantize(D("0.0001")))
    assert D(s["fees_usd"]) == t["fees_usd"]
    assert (s["one_leg_episodes"], alone) == (t["one_leg_episodes"], t["one_leg_s"])
    assert worst == t["hedge_latency_max_s"]
    assert main(["report", str(journal)]) == 0
    text = capsys.readouterr().out
    assert f"cost {t['cost_per_million_usd']:.2f} USD per million of volume" in text
