"""Golden journals of the seeds' incidents: each replays, each still reproduces, and each
shows the behaviour its incident demands. After an intended behaviour change run
`make golden` and review the diff of tests/replay/golden/ like code."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.core.journal import Record
from engine.core.journal import read_records
from engine.runtime.cli import main
from tests.replay.scenarios import SCENARIOS
from tests.replay.scenarios import Outcome
from tests.replay.scenarios import golden_path
from tests.replay.scenarios import run_scenario

S = 1_000_000_000
D = Decimal


def data(records: list[Record], kind: str, **match: Any) -> list[tuple[Record, dict[str, Any]]]:
    out = []
    for r in records:
        if r.kind != kind:
            continue
        d = r.data
        if all(d.get(k) == v for k, v in match.items()):
            out.append((r, d))
    return out


def events(records, ev_kind):
    return [d for r, d in data(records, "event") if d.get("kind") == ev_kind]


def intents(records, kind):
    return [(r, d) for r, d in data(records, "intent") if d.get("kind") == kind]


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def outcome(request) -> tuple[str, Outcome]:
    return request.param, run_scenario(SCENARIOS[request.param])


def test_golden_journal_replays(outcome):
    name, _ = outcome
    path = golden_path(name)
    assert path.exists(), f"missing {path}: run `make golden`"
    assert main(["journal", "verify", str(path)]) == 0
    assert main(["replay", str(path)]) == 0


def test_scenario_still_reproduces_its_golden_journal(outcome):
    name, out = outcome
    golden = list(read_records(golden_path(name)))
    now = out.records
    first = next(
        (i for i, (a, b) in enumerate(zip(golden, now, strict=False)) if a.hash != b.hash),
        None,
    )
    hint = (
        f"{name}: the run no longer matches its golden journal (first difference at record "
        f"{first}, {len(golden)} vs {len(now)} records). If the change is intended, run "
        "`make golden` and review the diff."
    )
    assert first is None, hint
    assert len(golden) == len(now), hint


def test_every_scenario_ends_flat_by_the_venues_word(outcome):
    name, out = outcome
    s = out.summary
    assert s["flat"], f"{name}: {s['final_positions']} halted={s['halted']} {s['halt_reason']}"
    assert all(q == 0 for q in out.venue.venue_positions().values())


def fills_by_product(records):
    pos: dict[int, Decimal] = {}
    peak: dict[int, Decimal] = {}
    for d in events(records, "fill_received"):
        signed = D(d["qty"]) if d["side"] == "buy" else -D(d["qty"])
        pos[d["product_id"]] = pos.get(d["product_id"], D(0)) + signed
        peak[d["product_id"]] = max(peak.get(d["product_id"], D(0)), abs(pos[d["product_id"]]))
    return pos, peak


def test_fault_free_cycles_reconcile_pnl_and_fees_with_the_venue():
    out = run_scenario(SCENARIOS["fault_free_10_cycles"])
    assert out.summary["cycles_completed"] == 10
    assert not out.summary["halted"]
    venue = out.venue
    assert D(out.summary["fees_usd"]) == venue.fees_paid()
    assert D(out.summary["realized_pnl_usd"]) == venue.realized_pnl() - venue.fees_paid()


def test_cycle6_one_leg_unfilled_is_repaired_or_flattened():
    out = run_scenario(SCENARIOS["cycle6_one_leg_unfilled"])
    recs = out.records
    expired = {d["order_id"] for d in events(recs, "order_expired") if D(d["filled_qty"]) == 0}
    filled = {d["order_id"] for d in events(recs, "fill_received")}
    builds = [d for _, d in intents(recs, "place_order") if d["purpose"] == "build"]
    by_round: dict[str, list[dict[str, Any]]] = {}
    for b in builds:
        by_round.setdefault(b["order_id"].rsplit(":", 1)[0], []).append(b)
    one_leg = [
        legs
        for legs in by_round.values()
        if any(leg["order_id"] in expired for leg in legs)
        and any(leg["order_id"] in filled for leg in legs)
    ]
    assert one_leg, "the scenario must contain the incident: one leg filled, one expired"
    repairs = [
        d for _, d in intents(recs, "place_order") if d["purpose"] in ("repair", "emergency")
    ]
    assert repairs  # the missing leg was retried or the filled leg flattened
    # ...and the venue confirmed where every cycle ended.
    assert data(recs, "note", note="flat: verified by the venue") or data(
        recs, "note", note="built: venue position at target"
    )


def test_seed002_partial_fill_then_cancel_never_sells_twice():
    out = run_scenario(SCENARIOS["seed002_partial_fill_then_cancel"])
    recs = out.records
    partial = [d for d in events(recs, "fill_received") if D(d.get("remaining_qty") or 0) > 0]
    assert partial, "the scenario must contain partial fills"
    cancelled = events(recs, "order_cancelled") + events(recs, "order_expired")
    assert cancelled, "and cancels/expiries of partially filled orders"
    target: dict[int, Decimal] = {}
    for _, d in intents(recs, "place_order"):
        if d["purpose"] == "build" and d["order_id"].endswith((":o1", ":o2")):
            target[d["product_id"]] = max(target.get(d["product_id"], D(0)), D(d["qty"]))
    final, peak = fills_by_product(recs)
    increment = {4: D("0.001"), 8: D("0.01")}
    for pid, peak_qty in peak.items():
        # Never more than one cycle's size open on a leg: a double sell would show here.
        assert peak_qty <= target[pid] + increment[pid], (pid, peak_qty, target[pid])
    assert all(q == 0 for q in final.values())


def test_seed003_restart_cancels_the_orphan_and_flattens_before_any_build():
    out = run_scenario(SCENARIOS["seed003_restart_with_residual"])
    recs = out.records
    cancels = [d["order_id"] for _, d in intents(recs, "cancel_order")]
    assert "crashed:2" in cancels  # the orphan resting order
    assert not out.venue.open_orders()
    places = [(r.seq, d) for r, d in intents(recs, "place_order")]
    first_build = min(seq for seq, d in places if d["purpose"] == "build")
    first_exit = min(seq for seq, d in places if d["purpose"] == "emergency")
    assert first_exit < first_build


def test_one_leg_reject_flattens_and_alerts():
    out = run_scenario(SCENARIOS["one_leg_reject"])
    recs = out.records
    rejected = {d["order_id"] for d in events(recs, "order_rejected")}
    filled = {d["order_id"] for d in events(recs, "fill_received")}
    builds: dict[str, set[str]] = {}
    for _, d in intents(recs, "place_order"):
        if d["purpose"] == "build":
            builds.setdefault(d["order_id"].rsplit(":", 1)[0], set()).add(d["order_id"])
    assert any(ids & rejected and ids & filled for ids in builds.values()), (
        "the scenario must contain the incident: one leg rejected, the other filled"
    )
    alerts = [d["event"] for _, d in intents(recs, "send_alert")]
    assert "emergency_exit" in alerts
    # the alert states the one leg that filled (about 100 USD), not the snapshot BUILD
    # read before it placed (flat): it stated 0.00 USD open before this was fixed
    exits = [d for _, d in intents(recs, "send_alert") if d["event"] == "emergency_exit"]
    assert all(Decimal(d["exposure_usd"]) > 50 for d in exits), exits


def test_post_only_that_never_fills_escalates_to_ioc():
    out = run_scenario(SCENARIOS["post_only_never_fills"])
    tifs = [d["tif"] for _, d in intents(out.records, "place_order")]
    assert "post_only" in tifs
    assert "ioc" in tifs[tifs.index("post_only") :]


def test_bug003_stop_through_exits_within_budget_and_bounds_the_loss():
    out = run_scenario(SCENARIOS["bug003_stop_through_with_timeouts"])
    recs = out.records
    alert = next(r for r, d in intents(recs, "send_alert") if d["event"] == "stop_loss")
    flat = [
        r for r, _ in data(recs, "note", note="flat: verified by the venue") if r.ts >= alert.ts
    ]
    assert flat
    assert flat[0].ts - alert.ts <= 30 * S  # the exit budget
    # Loss within the stop (3 % of 100 USD) + the jump overshoot + the slippage cap (5 %).
    assert -D(out.summary["realized_pnl_usd"]) <= D(100) * D("0.04") + D(100) * D("0.05")
