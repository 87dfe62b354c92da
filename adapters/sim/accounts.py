"""Per-subaccount positions: signed size, average entry, realised PnL (before fees), fees.

A short history of each position serves position queries that lag behind fills
(`venue.position_lag_ms`).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN
from decimal import Decimal

import attrs

from adapters.sim.products import tidy

__all__ = ["Account", "PositionState"]

ZERO = Decimal(0)
ENTRY_PLACES = Decimal("1e-10")


@attrs.define
class PositionState:
    qty: Decimal = ZERO  # long > 0, short < 0
    entry: Decimal = ZERO  # average entry of the open position; 0 when flat
    realized_pnl: Decimal = ZERO  # closed PnL, fees not included
    fees: Decimal = ZERO
    volume: Decimal = ZERO  # traded notional

    def apply(self, side: str, qty: Decimal, price: Decimal, fee: Decimal) -> None:
        signed = qty if side == "buy" else -qty
        old = self.qty
        self.fees += fee
        self.volume += qty * price
        if old == 0 or (old > 0) == (signed > 0):
            total = abs(old) + qty
            entry = (abs(old) * self.entry + qty * price) / total
            self.entry = tidy(entry.quantize(ENTRY_PLACES, ROUND_HALF_EVEN))
        else:
            closed = min(abs(old), qty)
            direction = 1 if old > 0 else -1
            self.realized_pnl += (price - self.entry) * closed * direction
            if qty > abs(old):
                self.entry = price  # flipped: the rest opens at this price
        self.qty = old + signed
        if self.qty == 0:
            self.entry = ZERO


class Account:
    def __init__(self, subaccount: str) -> None:
        self.subaccount = subaccount
        self.positions: dict[int, PositionState] = {}
        self._history: dict[int, list[tuple[int, Decimal, Decimal]]] = {}

    def position(self, product_id: int) -> PositionState:
        pos = self.positions.get(product_id)
        if pos is None:
            pos = self.positions[product_id] = PositionState()
        return pos

    def apply_fill(
        self,
        ts_ns: int,
        product_id: int,
        side: str,
        qty: Decimal,
        price: Decimal,
        fee: Decimal,
        lag_ns: int,
    ) -> PositionState:
        pos = self.position(product_id)
        pos.apply(side, qty, price, fee)
        if lag_ns > 0:
            hist = self._history.setdefault(product_id, [])
            hist.append((ts_ns, pos.qty, pos.entry))
            # Keep one entry older than the lag window: it is the view right now.
            cutoff = ts_ns - lag_ns
            drop = 0
            while drop + 1 < len(hist) and hist[drop + 1][0] <= cutoff:
                drop += 1
            del hist[:drop]
        return pos

    def seed_history(self, product_id: int, ts_ns: int, qty: Decimal, entry: Decimal) -> None:
        """A position held since `ts_ns` (a venue that starts with one)."""
        self._history.setdefault(product_id, []).insert(0, (ts_ns, qty, entry))

    def view(self, product_id: int, now_ns: int, lag_ns: int) -> tuple[Decimal, Decimal]:
        """(qty, entry) as a query at `now_ns` sees it: fills newer than the lag are hidden."""
        pos = self.position(product_id)
        if lag_ns <= 0:
            return pos.qty, pos.entry
        cutoff = now_ns - lag_ns
        seen = (ZERO, ZERO)
        for ts, qty, entry in self._history.get(product_id, ()):
            if ts > cutoff:
                break
            seen = (qty, entry)
        return seen
