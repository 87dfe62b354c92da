"""The one definition each of dust, flat and unhedged exposure (issue 13).

Pure functions on quantities and mid prices, no I/O: the machines (pure), the runner's
Monitor and summary, the status view, the metrics and the invariant checker all call
these; `tests/unit/test_flatness.py` fails if a second definition appears.

- dust: a position below one size increment (it cannot be traded), or worth at most
  `dust_usd` at mid; without a mid, only a position below one increment is dust;
- flat: every leg is dust;
- unhedged exposure: |Σ position x mid| over the legs with a mid, in USD (the pair's
  net delta; a leg without a quote does not count);
- one leg alone: unhedged exposure above the tolerance, `TOLERANCE_SHARE` of the per-leg
  size (the Monitor's alerts, the venue-clock timeline and the report's one-leg seconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.core.ledger import Quote

__all__ = [
    "TOLERANCE_SHARE",
    "exposure_tolerance_usd",
    "is_dust",
    "is_flat",
    "mid_of",
    "net_usd",
    "unhedged_usd",
]

ZERO = Decimal(0)
TOLERANCE_SHARE = Decimal("0.05")


def exposure_tolerance_usd(size_usd: Decimal) -> Decimal:
    """Unhedged USD above this is one leg alone (5 % of the per-leg size)."""
    return TOLERANCE_SHARE * size_usd


def mid_of(quote: Quote | None) -> Decimal | None:
    return quote.mid if quote is not None else None


def is_dust(
    qty: Decimal, mid: Decimal | None, dust_usd: Decimal, size_increment: Decimal = ZERO
) -> bool:
    """Nothing worth (or possible) to trade: below one increment, or worth ≤ dust at mid.
    Without a mid only a position below one increment (or zero) is dust."""
    size = abs(qty)
    if size == 0 or size < size_increment:
        return True
    if mid is None:
        return False
    return size * mid <= dust_usd


def is_flat(
    positions: Mapping[int, Decimal],
    mids: Mapping[int, Decimal | None],
    dust_usd: Decimal,
    increments: Mapping[int, Decimal] | None = None,
) -> bool:
    """Every leg (product id → position) is dust."""
    steps = increments or {}
    return all(
        is_dust(qty, mids.get(pid), dust_usd, steps.get(pid, ZERO))
        for pid, qty in positions.items()
    )


def net_usd(positions: Mapping[int, Decimal], mids: Mapping[int, Decimal | None]) -> Decimal:
    """Σ position x mid over the legs with a mid: the pair's signed USD delta."""
    net = ZERO
    for pid, qty in positions.items():
        mid = mids.get(pid)
        if mid is not None:
            net += qty * mid
    return net


def unhedged_usd(positions: Mapping[int, Decimal], mids: Mapping[int, Decimal | None]) -> Decimal:
    """|net USD delta| of the legs: the exposure a delta-neutral pair should not have."""
    return abs(net_usd(positions, mids))
