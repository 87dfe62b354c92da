"""Parameters the session hands to the cycle machines. Plain frozen data, no behaviour
beyond rounding helpers. Defaults follow the seeds (fill timeout 5 s, slippage ladder
50 → 150 → 500 bps, emergency budget 30 s)."""

from __future__ import annotations

from decimal import ROUND_DOWN
from decimal import ROUND_UP
from decimal import Decimal
from operator import is_

import attrs

from engine.core.messages import dec
from engine.core.messages import opt_dec

__all__ = ["PER_CYCLE", "CycleParams", "LegSpec"]


def _bps_ladder(values: object) -> tuple[Decimal, ...]:
    if not isinstance(values, list | tuple) or not values:
        raise ValueError("exit_ladder_bps must be a non-empty list")
    ladder = tuple(dec(v) for v in values)
    if type(values) is tuple and all(map(is_, ladder, values)):
        return values  # already exact: the same tuple (every cycle's, from the template's)
    return ladder


@attrs.frozen(kw_only=True)
class LegSpec:
    """One product of the pair, with the venue's increments."""

    symbol: str
    product_id: int
    tick_size: Decimal = attrs.field(converter=dec)
    size_increment: Decimal = attrs.field(converter=dec)
    min_order_value_usd: Decimal = attrs.field(default=Decimal(0), converter=dec)

    def round_size_down(self, qty: Decimal) -> Decimal:
        return (qty / self.size_increment).to_integral_value(ROUND_DOWN) * self.size_increment

    def round_price(self, price: Decimal, side: str) -> Decimal:
        """Round to tick in the aggressive direction for `side` (buy up, sell down)."""
        mode = ROUND_UP if side == "buy" else ROUND_DOWN
        return (price / self.tick_size).to_integral_value(mode) * self.tick_size


@attrs.frozen(kw_only=True)
class CycleParams:
    """Everything one BUILD / UNWIND / emergency exit needs; identical for replay."""

    cycle: int
    long: LegSpec  # bought on BUILD, sold on UNWIND
    short: LegSpec  # sold on BUILD, bought on UNWIND
    notional_usd: Decimal = attrs.field(converter=dec)
    carry_usd: Decimal = attrs.field(default=Decimal(0), converter=dec)  # rounding residual
    order_style: str = attrs.field(
        default="ioc", validator=attrs.validators.in_(("ioc", "post_only"))
    )
    cross_bps: Decimal = attrs.field(default=Decimal(10), converter=dec)
    fill_timeout_s: Decimal = attrs.field(default=Decimal(5), converter=dec)
    verify_timeout_s: Decimal = attrs.field(default=Decimal(5), converter=dec)
    repair_attempts: int = 2
    repair_step_bps: Decimal = attrs.field(default=Decimal(25), converter=dec)
    post_only_attempts: int = 2
    unwind_ioc_attempts: int = 3
    exit_ladder_bps: tuple[Decimal, ...] = attrs.field(
        default=(Decimal(50), Decimal(150), Decimal(500)), converter=_bps_ladder
    )
    exit_attempt_timeout_s: Decimal = attrs.field(default=Decimal(3), converter=dec)
    exit_budget_s: Decimal = attrs.field(default=Decimal(30), converter=dec)
    max_slice_usd: Decimal = attrs.field(default=Decimal(50_000), converter=dec)
    dust_usd: Decimal = attrs.field(default=Decimal(1), converter=dec)
    bbo_max_age_s: Decimal = attrs.field(default=Decimal(2), converter=dec)
    max_position_usd: Decimal = attrs.field(default=Decimal(100_000), converter=dec)
    exposure_tolerance_pct: Decimal = attrs.field(default=Decimal(5), converter=dec)
    # Added for the cycle machines (build / unwind / emergency exit); defaults keep older
    # callers valid.
    cancel_timeout_s: Decimal = attrs.field(default=Decimal(2), converter=dec)  # cancel ack wait
    verify_attempts: int = 3  # position queries per verification (first + 2 retries)
    verify_retry_s: Decimal = attrs.field(default=Decimal("0.5"), converter=dec)  # lag re-ask
    # Emergency exit attempts that reduce nothing before HALT; 0 = one per ladder step.
    # Attempts that do reduce the position go on within the budget (hard cap 3x).
    exit_max_attempts: int = 0
    exit_backoff_s: Decimal = attrs.field(default=Decimal("0.5"), converter=dec)  # after refusal
    # UNWIND's last rung: an aggressive reduce-only IOC ("market") through the book by this
    # many bps (None: the first exit-ladder step), sliced by max_slice_usd.
    use_market_fallback: bool = True
    market_max_slippage_bps: Decimal | None = attrs.field(default=None, converter=opt_dec)
    # A position read that disagrees with the fills the venue reported is lagging, not
    # evidence: it is asked again (backing off) for at most this long before the
    # disagreement itself is acted on (issue 11: real Nado reads lag fills by ~20 s).
    position_lag_budget_s: Decimal = attrs.field(default=Decimal(45), converter=dec)
    # Bounds on one step's work: at most this many orders per leg in one round (a larger
    # position than that is not traded slice by slice: it halts, the exposure stated).
    max_slices_per_step: int = 20
    # Entries need both quotes within this many bps of the venue's oracle price; exits
    # price from the quote clamped into the band (RELIABILITY D5). 0 disables it.
    price_band_bps: Decimal = attrs.field(default=Decimal(500), converter=dec)
    # Execution mode (issue 14): "taker" crosses the book on both legs; "maker_first"
    # rests one leg post-only at the touch and hedges each of its fills at once with an
    # IOC on the other leg (machines/policy.py, machines/pricing.py). The resting order
    # is repriced every `maker_reprice_s` and steps aside after `maker_budget_s` (the
    # taker rungs take the rest).
    execution: str = attrs.field(
        default="taker", validator=attrs.validators.in_(("taker", "maker_first"))
    )
    maker_reprice_s: Decimal = attrs.field(default=Decimal(1), converter=dec)
    maker_budget_s: Decimal = attrs.field(default=Decimal(10), converter=dec)

    @property
    def exit_attempts(self) -> int:
        return self.exit_max_attempts or len(self.exit_ladder_bps)

    @property
    def exposure_tolerance_usd(self) -> Decimal:
        """Legs apart by more than this much USD are one leg alone (seed 002: 5 % of the
        cycle's notional); the session, the hedge deadline and the chaos checker read it."""
        return self.notional_usd * self.exposure_tolerance_pct / 100

    @property
    def legs(self) -> tuple[LegSpec, LegSpec]:
        return (self.long, self.short)

    @property
    def product_ids(self) -> tuple[int, int]:
        return (self.long.product_id, self.short.product_id)


# The CycleParams fields the session sets for each cycle; every other field is the run's
# template's, the same objects every cycle.
PER_CYCLE = frozenset({"cycle", "long", "short", "carry_usd"})
