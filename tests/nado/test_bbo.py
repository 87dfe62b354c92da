"""BBO quality gate: positive, ask > bid, spread < 10 % of mid, age < 2 s, jump < 50 %."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.nado.bbo import BboGate
from adapters.nado.bbo import BboLimits
from adapters.nado.bbo import check_bbo
from engine.core.events import BboUpdated

S = 1_000_000_000
T0 = 1_767_200_000 * S


def bbo(bid, ask, ts=T0, pid=4):
    return BboUpdated(
        product_id=pid, bid=Decimal(bid), bid_qty=1, ask=Decimal(ask), ask_qty=1, ts_venue_ns=ts
    )


@pytest.mark.parametrize(
    ("quote", "now", "reason"),
    [
        (bbo("3499.9", "3500"), T0, ""),
        (bbo("0", "3500"), T0, "not_positive"),
        (bbo("3500", "0"), T0, "not_positive"),
        (bbo("3500", "3500"), T0, "crossed"),
        (bbo("3501", "3500"), T0, "crossed"),
        (bbo("95", "105"), T0, "wide"),  # spread 10 / mid 100 = exactly 10 %: refused
        (bbo("95.01", "105"), T0, ""),  # just under 10 %
        (bbo("3499", "3500", ts=T0 - 2 * S), T0, "stale"),  # exactly 2 s old
        (bbo("3499", "3500", ts=T0 - 2 * S + 1), T0, ""),
        (bbo("3499", "3500", ts=T0 + 3 * S), T0, "future"),
        (bbo("3499", "3500", ts=None), T0, "no_timestamp"),
    ],
)
def test_check_bbo(quote, now, reason):
    verdict = check_bbo(quote, now_ns=now)
    assert verdict.reason == reason
    assert verdict.ok is (reason == "")


def test_local_receive_time_overrides_venue_stamp():
    assert check_bbo(bbo("1", "1.01", ts=None), now_ns=10 * S, ts_ns=9 * S).ok


def test_jump_against_last_good():
    ref = bbo("99.9", "100.1")
    assert check_bbo(bbo("149", "150"), now_ns=T0, last_good=ref).ok  # +49.5 %
    assert check_bbo(bbo("150.9", "151.1"), now_ns=T0, last_good=ref).reason == "jump"
    assert check_bbo(bbo("49", "49.1"), now_ns=T0, last_good=ref).reason == "jump"


def test_configurable_limits():
    limits = BboLimits(max_age_ns=5 * S, max_spread_frac=Decimal("0.2"))
    assert check_bbo(bbo("91", "110", ts=T0 - 4 * S), now_ns=T0, limits=limits).ok


def test_gate_tracks_last_good_and_counts():
    gate = BboGate()
    assert gate.check(bbo("99.9", "100.1"), now_ns=T0).ok
    assert not gate.check(bbo("199.9", "200.1", ts=T0 + S), now_ns=T0 + S).ok  # jump
    assert not gate.check(bbo("101", "100", ts=T0 + S), now_ns=T0 + S).ok  # crossed
    assert gate.last_good(4) == bbo("99.9", "100.1")
    assert gate.rejected == {"jump": 1, "crossed": 1}
    # another product has its own reference
    assert gate.check(bbo("199.9", "200.1", pid=8), now_ns=T0).ok
    # once the reference is older than the jump window, a new level is accepted
    later = T0 + 61 * S
    assert gate.check(bbo("199.9", "200.1", ts=later), now_ns=later).ok
    gate.reset(4)
    assert gate.last_good(4) is None
    gate.reset()
    assert gate.last_good(8) is None
