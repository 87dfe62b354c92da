"""The invariant checker can fail: each test plants one bug in the engine (monkeypatch)
and asserts the chaos run reports the invariant it breaks, with the first bad record."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from engine.core.ledger import Ledger
from engine.harness.chaos import ChaosProfile
from engine.harness.chaos import run_one
from engine.runtime.config import load_settings

QUIET = ChaosProfile("quiet", "")


def _invariants(result) -> set[str]:
    return {v.split("]")[0].lstrip("[") for v in result.violations}


def test_a_clean_run_has_no_violation(settings):
    result = run_one(1, QUIET, cycles=2, settings=settings)
    assert result.violations == ()
    assert result.outcome == "flat"
    assert result.cycles_completed == 2


def test_S_G_reused_order_id_is_caught(monkeypatch, settings):
    from machines.base import PureMachine

    original = PureMachine.next_id

    def reuse(self, tag=""):
        return f"{self.ctx.machine_id}:o1" if tag == "o" else original(self, tag)

    monkeypatch.setattr(PureMachine, "next_id", reuse)
    result = run_one(1, QUIET, cycles=2, settings=settings)
    assert "order_ids" in _invariants(result)
    assert any("sent twice" in v and "first bad record" in v for v in result.violations)


def test_double_counted_duplicate_fill_is_caught(monkeypatch, settings):
    original = Ledger._apply_fill

    def count_twice(self, ev):
        notes = original(self, ev)
        order = self.orders.get(ev.order_id)
        if order is not None and any("duplicate" in n for n in notes):
            order.filled += ev.qty
            self._move_position(ev.product_id, ev.side, ev.qty, ev.price, ev.fee)
        return notes

    monkeypatch.setattr(Ledger, "_apply_fill", count_twice)
    dup = ChaosProfile("dup", "[ws]\nduplicate = 0.6\n")
    result = run_one(2, dup, cycles=2, settings=settings)
    assert "fills" in _invariants(result)


def test_ledger_ignoring_the_venues_word_on_lost_fills_is_caught_at_rest(monkeypatch, settings):
    # The bug fixed in f1ef8ea, planted back: lost fill pushes leave ledger != venue.
    monkeypatch.setattr(Ledger, "_venue_says_filled", lambda self, order, total: [])
    lossy = ChaosProfile("lossy", "[ws]\ndrop = 0.3\n")
    found = set()
    for seed in range(1, 6):
        found |= _invariants(run_one(seed, lossy, cycles=2, settings=settings))
    assert {"at_rest", "fills"} <= found


def _plant(monkeypatch, purpose, guard, answer):
    """A bug planted in one purpose's guard of the position-work machine."""
    from machines.position_work import PositionWork

    original = getattr(PositionWork, guard)

    def planted(self, ev):
        return answer if self.policy.purpose == purpose else original(self, ev)

    monkeypatch.setattr(PositionWork, guard, planted)


def _plant_unwind_flat(monkeypatch):
    """UNWIND takes its opening read as flat whatever it says. Planted on the read-first
    path: placing from BUILD's verified belief, UNWIND judges no opening read for flatness
    (its orders go out with the read), so the planted guard would meet only the final read,
    taken once the legs are closed, and claim nothing wrong."""
    from machines.position_work import PositionWork

    _plant(monkeypatch, "unwind", "venue_flat", True)
    monkeypatch.setattr(PositionWork, "belief_verified", lambda self: False)


def test_flat_claimed_on_a_non_flat_answer_is_caught(monkeypatch, settings):
    _plant_unwind_flat(monkeypatch)
    result = run_one(1, QUIET, cycles=2, settings=settings)
    assert "verified" in _invariants(result)


def test_flat_claimed_against_the_reported_fills_is_caught(monkeypatch, settings):
    # Issue 11's bug planted back: the emergency exit takes a lagging 0/0 read as flat
    # although its own ledger holds the BUILD leg that filled.
    _plant(monkeypatch, "exit", "read_lags", False)
    _plant(monkeypatch, "exit", "stale_suspected", False)
    _plant(monkeypatch, "exit", "read_agrees", True)
    legging = ChaosProfile(
        "legging", "[venue]\nposition_lag_ms = 20000\n[orders]\nioc_no_fill = 0.5\n"
    )
    found: set[str] = set()
    for seed in range(1, 9):
        found |= _invariants(run_one(seed, legging, cycles=2, settings=settings, replay=False))
        if "flat_claims" in found:
            break
    assert "flat_claims" in found


def test_unknown_order_fill_without_an_alert_is_caught(monkeypatch, settings):
    from machines.session import SessionMachine

    monkeypatch.setattr(SessionMachine, "foreign_fill", lambda self, ev: False)
    foreign = ChaosProfile(
        "foreign",
        '[venue]\nforeign_fills = [{ at_s = 1.5, product = "ETH-PERP", side = "buy", qty = 1 }]\n',
    )
    result = run_one(1, foreign, cycles=2, settings=settings, replay=False)
    assert "fills" in _invariants(result)
    assert any("unknown order" in v for v in result.violations)


def test_unflagged_exposure_past_the_budget_is_caught(monkeypatch, settings):
    # A 30 % jump on one leg while holding for 100 s, with the session's exposure guard
    # switched off: unhedged well above 5 % of the notional and nothing flagged.
    from machines.session import SessionMachine

    monkeypatch.setattr(SessionMachine, "unhedged", lambda self, ev: False)
    monkeypatch.setattr(SessionMachine, "stop_loss_hit", lambda self, ev: False)
    jump = ChaosProfile(
        "jump",
        '[market]\njumps = [{ at_s = 3, bps = 3000, product = "ETH-PERP" }]\n',
    )
    long_hold = load_settings(env={"DN_HOLD_S": "100"})
    result = run_one(1, jump, cycles=1, settings=long_hold)
    assert "exposure" in _invariants(result)
    assert any("unflagged" in v for v in result.violations)


def test_machine_outliving_its_bound_is_caught(monkeypatch, settings):
    from engine.harness.invariants import MachineBounds

    monkeypatch.setattr(MachineBounds, "unwind", lambda self: Decimal("0.001"))
    result = run_one(1, QUIET, cycles=1, settings=settings)
    assert "duration" in _invariants(result)
    # seen when it ended: the UNWIND's machine_finished event (journal schema 4)
    assert any("took" in v and '"machine_finished"' in v for v in result.violations)


def test_wait_without_a_deadline_is_caught(monkeypatch, settings):
    from engine.core.intents import QueryPositions
    from machines.pricing import OrderRounds

    def query_without_deadline(self):
        self.verifies += 1
        self.query_id = self.next_id("q")
        self.emit(QueryPositions(request_id=self.query_id, product_ids=self.p.product_ids))

    monkeypatch.setattr(OrderRounds, "query_positions", query_without_deadline)
    result = run_one(1, QUIET, cycles=1, settings=settings)
    assert "duration" in _invariants(result)
    assert any("no deadline" in v for v in result.violations)


def test_nondeterministic_machine_is_caught_by_replay(monkeypatch, settings):
    from machines.session import SessionMachine

    counter = itertools.count()
    monkeypatch.setattr(
        SessionMachine, "_pause", lambda self: Decimal("0.5") + Decimal(next(counter)) / 1000
    )
    result = run_one(1, QUIET, cycles=2, settings=settings)
    assert "replay" in _invariants(result)


def test_machine_error_is_reported_not_hidden(monkeypatch, settings):
    from machines.position_work import PositionWork

    verify = PositionWork.start_verifying

    def boom(self):
        if self.policy.purpose == "build":
            raise RuntimeError("planted")
        verify(self)

    monkeypatch.setattr(PositionWork, "start_verifying", boom)
    result = run_one(1, QUIET, cycles=1, settings=settings)
    assert result.outcome == "error"
    assert "terminated" in _invariants(result)
    assert any("planted" in v for v in result.violations)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "5-1"], "--seeds"),
        (["--seeds", "x"], "--seeds"),
        (["--seeds", "1-2", "--cycles", "0"], "--cycles"),
        (["--seeds", "1-2", "--jobs", "0"], "--jobs"),
        (["--seeds", "1-2", "--only"], "--only needs"),
        (["--seeds", "1-2", "--faults", "/nonexistent.toml"], "cannot read"),
    ],
)
def test_chaos_cli_bad_arguments_exit_2(args, message, capsys):
    from engine.runtime.cli import main

    assert main(["chaos", *args]) == 2
    assert message in capsys.readouterr().err


def test_chaos_cli_clean_run_prints_a_table_and_exits_0(tmp_path, capsys):
    from engine.runtime.cli import main

    profile = tmp_path / "mild.toml"
    profile.write_text("[orders]\nioc_no_fill = 0.2\n")
    code = main(["chaos", "--seeds", "1-3", "--only", "--faults", str(profile), "--cycles", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mild" in out
    assert "TOTAL" in out
    assert "0 with violations" in out


def test_chaos_cli_violation_prints_seed_profile_first_record_and_exits_1(
    tmp_path, capsys, monkeypatch
):
    from engine.runtime.cli import main

    _plant_unwind_flat(monkeypatch)
    profile = tmp_path / "calm.toml"
    profile.write_text("[market]\nvolatility_bps_per_sqrt_s = 1.0\n")
    code = main(["chaos", "--seeds", "7", "--only", "--faults", str(profile), "--cycles", "1"])
    out = capsys.readouterr().out
    assert code == 1
    assert "VIOLATION seed=7 profile=calm" in out
    assert "first bad record: seq=" in out
    assert f"reproduce: dnpair chaos --seeds 7-7 --cycles 1 --only --faults {profile}" in out
