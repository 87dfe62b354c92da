"""Correlated random-walk mid prices on a fixed time grid, plus scheduled jumps.

One common factor gives every pair of products the same correlation `rho`:
z_i = sqrt(rho) * c + sqrt(1 - rho) * e_i. Steps are log-normal, so mids stay positive.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN
from decimal import Decimal

from adapters.sim.products import ProductSpec
from adapters.sim.products import to_decimal

__all__ = ["PriceProcess"]

MID_PLACES = Decimal("1e-8")


class PriceProcess:
    def __init__(
        self,
        specs: Sequence[ProductSpec],
        rng: random.Random,
        *,
        volatility_bps_per_sqrt_s: Decimal,
        correlation: Decimal,
        step_ns: int,
    ) -> None:
        self._rng = rng
        self._ids = [s.product_id for s in specs]
        self.mids: dict[int, Decimal] = {s.product_id: s.start_mid for s in specs}
        # Per step and side, a depth factor in [0.5, 1.5] (the crowd's size breathes).
        self.depth: dict[int, tuple[float, float]] = dict.fromkeys(self._ids, (1.0, 1.0))
        self._sigma = float(volatility_bps_per_sqrt_s) / 1e4 * math.sqrt(step_ns / 1e9)
        self._drift = 0.5 * self._sigma**2  # the log-normal correction, the same every step
        rho = float(correlation)
        self._common, self._own = math.sqrt(rho), math.sqrt(1.0 - rho)
        self.steps = 0

    def step(self) -> None:
        rng, sigma, drift = self._rng, self._sigma, self._drift
        common = rng.gauss(0.0, 1.0)
        for pid in self._ids:
            z = self._common * common + self._own * rng.gauss(0.0, 1.0)
            factor = to_decimal(math.exp(sigma * z - drift))
            self.mids[pid] = (self.mids[pid] * factor).quantize(MID_PLACES, ROUND_HALF_EVEN)
            self.depth[pid] = (rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5))
        self.steps += 1

    def jump(self, product_id: int, bps: Decimal) -> None:
        if product_id in self.mids:
            mid = self.mids[product_id] * (1 + bps / 10_000)
            self.mids[product_id] = mid.quantize(MID_PLACES, ROUND_HALF_EVEN)
