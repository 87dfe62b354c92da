"""The crowd: synthetic resting liquidity around the mid for one product.

Each side has `book_levels` levels, `level_step_bps` apart, starting half a spread from
the mid; level i holds about `level_usd` * (1 + i/4) of base, scaled by the step's depth
factor. Takers eat it from the top. What they ate is remembered as a quantity removed
from the top of that side, and it grows back linearly: a fully eaten side is whole again
after `book_refill_s`. The removed quantity is a function of time (last value, last
time), so how often anyone looks at the book never changes what it holds.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from adapters.sim.faults import SimSettings
from adapters.sim.products import ProductSpec
from adapters.sim.products import ceil_to
from adapters.sim.products import floor_to
from adapters.sim.products import to_decimal

__all__ = ["BookSide", "CrowdBook", "Level"]

BookSide = Literal["bid", "ask"]
Level = tuple[Decimal, Decimal]  # (price, qty)
ZERO = Decimal(0)


class CrowdBook:
    def __init__(self, spec: ProductSpec, settings: SimSettings, start_ns: int = 0) -> None:
        self.spec = spec
        inc = spec.size_increment
        self.base = max(inc, floor_to(settings.level_usd / spec.start_mid, inc))
        self.weights = [1 + Decimal(i) / 4 for i in range(settings.book_levels)]
        self.half_spread = settings.spread_bps / 20_000
        self.step_bps = settings.level_step_bps / 10_000
        nominal = sum((self.base * w for w in self.weights), ZERO)
        self.refill_per_ns = nominal / (settings.book_refill_s * 1_000_000_000)
        self._eaten: dict[BookSide, tuple[Decimal, int]] = {
            "bid": (ZERO, start_ns),
            "ask": (ZERO, start_ns),
        }
        self.mid = spec.start_mid
        self._factors = (Decimal(1), Decimal(1))
        self._full: dict[BookSide, list[Level]] | None = None

    def set_market(self, mid: Decimal, factors: tuple[float, float]) -> None:
        self.mid = mid
        self._factors = (to_decimal(factors[0], 6), to_decimal(factors[1], 6))
        self._full = None

    def full(self, side: BookSide) -> list[Level]:
        if self._full is None:
            self._full = self._build()
        return self._full[side]

    def _build(self) -> dict[BookSide, list[Level]]:
        tick, inc = self.spec.tick, self.spec.size_increment
        step = tick * max(1, int((self.mid * self.step_bps / tick).to_integral_value()))
        best_bid = floor_to(self.mid * (1 - self.half_spread), tick)
        best_ask = max(ceil_to(self.mid * (1 + self.half_spread), tick), best_bid + tick)
        out: dict[BookSide, list[Level]] = {"bid": [], "ask": []}
        for i, w in enumerate(self.weights):
            bid_qty = max(inc, floor_to(self.base * w * self._factors[0], inc))
            ask_qty = max(inc, floor_to(self.base * w * self._factors[1], inc))
            bid = best_bid - step * i
            if bid > 0:
                out["bid"].append((bid, bid_qty))
            out["ask"].append((best_ask + step * i, ask_qty))
        return out

    def eaten(self, side: BookSide, now_ns: int) -> Decimal:
        qty, since = self._eaten[side]
        if qty == 0:
            return ZERO
        return max(ZERO, qty - self.refill_per_ns * (now_ns - since))

    def available(self, side: BookSide, now_ns: int) -> list[Level]:
        """What a taker can hit right now, best first."""
        inc = self.spec.size_increment
        gone = self.eaten(side, now_ns)
        if gone == 0:
            return self.full(side)
        out: list[Level] = []
        for price, qty in self.full(side):
            if gone >= qty:
                gone -= qty
                continue
            left = floor_to(qty - gone, inc)
            gone = ZERO
            if left > 0:
                out.append((price, left))
        return out

    def best(self, side: BookSide, now_ns: int) -> Level | None:
        levels = self.available(side, now_ns)
        return levels[0] if levels else None

    def consume(self, side: BookSide, qty: Decimal, now_ns: int) -> None:
        self._eaten[side] = (self.eaten(side, now_ns) + qty, now_ns)
