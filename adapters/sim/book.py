"""The crowd: synthetic resting liquidity around the mid for one product.

Each side has `book_levels` levels, `level_step_bps` apart, starting half a spread from
the mid; level i holds about `level_usd` * (1 + i/4) of base, scaled by the step's depth
factor. Takers eat it from the top. What they ate is remembered as a quantity removed
from the top of that side, and it grows back linearly: a fully eaten side is whole again
after `book_refill_s`. The removed quantity is a function of time (last value, last
time), so how often anyone looks at the book never changes what it holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN
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
        self._sizes = [self.base * w for w in self.weights]  # a level's size before depth
        self.half_spread = settings.spread_bps / 20_000
        # The best prices' distance from the mid, as factors (the same on every step).
        self._bid_factor, self._ask_factor = 1 - self.half_spread, 1 + self.half_spread
        self.step_bps = settings.level_step_bps / 10_000
        nominal = sum((self.base * w for w in self.weights), ZERO)
        self.refill_per_ns = nominal / (settings.book_refill_s * 1_000_000_000)
        self._eaten: dict[BookSide, tuple[Decimal, int]] = {
            "bid": (ZERO, start_ns),
            "ask": (ZERO, start_ns),
        }
        # (the eaten state above, a time by which it had all grown back)
        self._whole: dict[BookSide, tuple[tuple[Decimal, int], int]] = {}
        self.set_market(spec.start_mid, (1.0, 1.0))

    def set_market(self, mid: Decimal, factors: tuple[float, float]) -> None:
        # Everything below is derived on first use: most market steps are never looked at
        # level by level.
        self.mid = mid
        self._raw_factors = factors
        self._factors: tuple[Decimal, Decimal] | None = None
        self._frame: tuple[Decimal, Decimal, Decimal] | None = None
        self._derived: dict[tuple[BookSide, int], Level | None] = {}
        self._full: dict[BookSide, list[Level]] = {}
        self._kept: dict[BookSide, tuple[int, Level | None]] = {}  # see `best`

    def full(self, side: BookSide) -> list[Level]:
        """Every level of one side before takers ate any of it, best first."""
        levels = self._full.get(side)
        if levels is None:
            levels = self._full[side] = list(self._levels(side))
        return levels

    def _levels(self, side: BookSide) -> Iterator[Level]:
        """`full`, each level derived only when it is read."""
        for i in range(len(self.weights)):
            level = self._level(side, i)
            if level is not None:
                yield level

    def _level(self, side: BookSide, i: int) -> Level | None:
        """Level `i` of one side before takers ate any of it (None where the price would
        not be positive), derived once per market step."""
        key = (side, i)
        if key not in self._derived:
            self._derived[key] = self._derive(side, i)
        return self._derived[key]

    def _derive(self, side: BookSide, i: int) -> Level | None:
        if self._frame is None:
            tick = self.spec.tick
            ticks = (self.mid * self.step_bps / tick).to_integral_value(ROUND_HALF_EVEN)
            step = tick * max(1, int(ticks))
            best_bid = floor_to(self.mid * self._bid_factor, tick)
            best_ask = max(ceil_to(self.mid * self._ask_factor, tick), best_bid + tick)
            self._frame = (best_bid, best_ask, step)
        best_bid, best_ask, step = self._frame
        if self._factors is None:
            raw = self._raw_factors
            self._factors = (to_decimal(raw[0], 6), to_decimal(raw[1], 6))
        factor = self._factors[0 if side == "bid" else 1]
        inc = self.spec.size_increment
        qty = max(inc, floor_to(self._sizes[i] * factor, inc))
        price = best_bid - step * i if side == "bid" else best_ask + step * i
        return (price, qty) if price > 0 else None

    def eaten(self, side: BookSide, now_ns: int) -> Decimal:
        state = self._eaten[side]
        qty, since = state
        if qty == 0:
            return ZERO
        whole = self._whole.get(side)
        if whole is not None and whole[0] is state and now_ns >= whole[1]:
            return ZERO  # it was whole again by then, and refilling never goes back
        left = qty - self.refill_per_ns * (now_ns - since)
        if left <= 0:
            self._whole[side] = (state, now_ns)
            return ZERO
        return left

    def available(self, side: BookSide, now_ns: int) -> Iterable[Level]:
        """What a taker can hit right now, best first; each level is derived only when
        it is read (a taker reaching one level does not derive the other nine)."""
        gone = self.eaten(side, now_ns)
        return self._levels(side) if gone == 0 else self._left(side, gone)

    def best(self, side: BookSide, now_ns: int) -> Level | None:
        """The best level of `side` at `now_ns`. Once the side has nothing left to grow
        back it stays as it is until the next market step or `consume`, at any later
        time (refilling never goes back): kept until then."""
        kept = self._kept.get(side)
        if kept is not None and now_ns >= kept[0]:
            return kept[1]
        gone = self.eaten(side, now_ns)
        top = self._level(side, 0)
        if gone == 0:
            self._kept[side] = (now_ns, top)
            return top
        if top is None:  # no level 0: no level at all (the bids' prices fall)
            return None
        if gone < top[1]:  # the usual case, `_left` without its generators
            left = floor_to(top[1] - gone, self.spec.size_increment)
            if left > 0:
                return (top[0], left)
        return next(self._left(side, gone), None)

    def _left(self, side: BookSide, gone: Decimal) -> Iterator[Level]:
        """The levels of `side` with `gone` eaten from the top, best first."""
        inc = self.spec.size_increment
        for price, qty in self._levels(side):
            if gone >= qty:
                gone -= qty
                continue
            left = floor_to(qty - gone, inc)
            gone = ZERO
            if left > 0:
                yield (price, left)

    def consume(self, side: BookSide, qty: Decimal, now_ns: int) -> None:
        self._eaten[side] = (self.eaten(side, now_ns) + qty, now_ns)
        self._kept.pop(side, None)
