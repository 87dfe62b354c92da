"""Best-bid/offer quality gate (issue 5 §7, RELIABILITY D1/D2/D5).

A quote is usable only if both prices are positive, ask > bid, the spread is under
10 % of mid, it is younger than `max_age_ns` (2 s) and its mid has not jumped more
than 50 % from the last good quote of the same product. Times are integer
nanoseconds in one timebase chosen by the caller (venue stamps are unix ns, so
`now_ns` then comes from a unix wall clock); nothing here reads a clock.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import attrs

from engine.core.events import BboUpdated

__all__ = ["BboGate", "BboLimits", "BboVerdict", "check_bbo"]

NS_PER_S = 1_000_000_000


@attrs.frozen(kw_only=True)
class BboLimits:
    max_age_ns: int = 2 * NS_PER_S
    max_spread_frac: Decimal = Decimal("0.10")
    max_jump_frac: Decimal = Decimal("0.50")
    # A reference quote older than this no longer vetoes a jump (else one bad stretch
    # would lock the product out forever, REST fallback included).
    jump_window_ns: int = 60 * NS_PER_S
    # Tolerated clock skew: a stamp this far in the future is still accepted.
    max_future_ns: int = 2 * NS_PER_S


@attrs.frozen
class BboVerdict:
    ok: bool
    reason: str = ""  # "" | not_positive | crossed | wide | no_timestamp | stale | future | jump


OK = BboVerdict(True)


def check_bbo(
    bbo: BboUpdated,
    *,
    now_ns: int,
    ts_ns: int | None = None,
    last_good: BboUpdated | None = None,
    last_good_ts_ns: int | None = None,
    limits: BboLimits = BboLimits(),
) -> BboVerdict:
    """Judge one quote. `ts_ns` defaults to the venue stamp `bbo.ts_venue_ns`."""
    bid, ask = bbo.bid, bbo.ask
    if bid <= 0 or ask <= 0:
        return BboVerdict(False, "not_positive")
    if ask <= bid:
        return BboVerdict(False, "crossed")
    # spread / mid < frac  <=>  2 (ask - bid) < frac (ask + bid); exact in Decimal
    if 2 * (ask - bid) >= limits.max_spread_frac * (ask + bid):
        return BboVerdict(False, "wide")
    stamp = bbo.ts_venue_ns if ts_ns is None else ts_ns
    if stamp is None:
        return BboVerdict(False, "no_timestamp")
    age = now_ns - stamp
    if age >= limits.max_age_ns:
        return BboVerdict(False, "stale")
    if -age > limits.max_future_ns:
        return BboVerdict(False, "future")
    if last_good is not None and _recent(last_good_ts_ns, now_ns, limits):
        mid2, ref2 = ask + bid, last_good.ask + last_good.bid  # 2 x mid on both sides
        if abs(mid2 - ref2) > limits.max_jump_frac * ref2:
            return BboVerdict(False, "jump")
    return OK


def _recent(ts_ns: int | None, now_ns: int, limits: BboLimits) -> bool:
    return ts_ns is None or now_ns - ts_ns <= limits.jump_window_ns


class BboGate:
    """Remembers the last good quote per product and counts rejections by reason."""

    def __init__(self, limits: BboLimits | None = None) -> None:
        self.limits = limits or BboLimits()
        self._last: dict[int, tuple[BboUpdated, int]] = {}
        self.rejected: Counter[str] = Counter()

    def check(self, bbo: BboUpdated, *, now_ns: int, ts_ns: int | None = None) -> BboVerdict:
        ref = self._last.get(bbo.product_id)
        verdict = check_bbo(
            bbo,
            now_ns=now_ns,
            ts_ns=ts_ns,
            last_good=None if ref is None else ref[0],
            last_good_ts_ns=None if ref is None else ref[1],
            limits=self.limits,
        )
        if verdict.ok:
            stamp = bbo.ts_venue_ns if ts_ns is None else ts_ns
            assert stamp is not None  # check_bbo refuses a quote without a stamp
            self._last[bbo.product_id] = (bbo, stamp)
        else:
            self.rejected[verdict.reason] += 1
        return verdict

    def last_good(self, product_id: int) -> BboUpdated | None:
        ref = self._last.get(product_id)
        return None if ref is None else ref[0]

    def reset(self, product_id: int | None = None) -> None:
        """Forget the jump reference (after an operator-confirmed move or a resync)."""
        if product_id is None:
            self._last.clear()
        else:
            self._last.pop(product_id, None)
