"""The sim's product catalogue and Decimal rounding helpers."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_CEILING
from decimal import ROUND_FLOOR
from decimal import ROUND_HALF_EVEN
from decimal import Decimal

import attrs

from adapters.base import ProductInfo

__all__ = [
    "CATALOGUE",
    "ProductSpec",
    "ceil_to",
    "floor_to",
    "resolve",
    "round_to",
    "tidy",
    "to_decimal",
]


@attrs.frozen(kw_only=True)
class ProductSpec:
    symbol: str
    product_id: int
    start_mid: Decimal
    tick: Decimal
    size_increment: Decimal
    min_notional: Decimal  # Nado's `min_size`: a quote notional, for resting orders only

    def info(self) -> ProductInfo:
        return ProductInfo(
            symbol=self.symbol,
            product_id=self.product_id,
            tick_size=self.tick,
            size_increment=self.size_increment,
            min_order_value_usd=self.min_notional,
        )


def _spec(symbol: str, pid: int, mid: str, tick: str, size: str, min_usd: str) -> ProductSpec:
    return ProductSpec(
        symbol=symbol,
        product_id=pid,
        start_mid=Decimal(mid),
        tick=Decimal(tick),
        size_increment=Decimal(size),
        min_notional=Decimal(min_usd),
    )


# Ids per nado-protocol.md §2.1; increments are plausible guesses (live values unknown, §12.2).
CATALOGUE: dict[str, ProductSpec] = {
    s.symbol: s
    for s in (
        _spec("BTC-PERP", 2, "95000", "1", "0.0001", "10"),
        _spec("ETH-PERP", 4, "3000", "0.1", "0.001", "10"),
        _spec("SOL-PERP", 8, "150", "0.01", "0.01", "10"),
    )
}


def resolve(symbols: Iterable[str]) -> list[ProductSpec]:
    out: list[ProductSpec] = []
    for symbol in symbols:
        spec = CATALOGUE.get(symbol)
        if spec is None:
            known = ", ".join(sorted(CATALOGUE))
            raise ValueError(f"sim venue does not list {symbol!r} (known: {known})")
        if spec not in out:
            out.append(spec)
    if not out:
        raise ValueError("sim venue needs at least one product")
    return out


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


def round_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_HALF_EVEN) * step


def to_decimal(x: float, places: int = 12) -> Decimal:
    """A float draw as an exact Decimal (rounded first so the text is short)."""
    return Decimal(str(round(x, places)))


def tidy(value: Decimal) -> Decimal:
    """Drop trailing zeros without going to exponent form (3000.10 -> 3000.1, 3E+3 -> 3000)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1)) + 0
    return value.normalize()
