"""Fault profile: the TOML file of DESIGN.md §4, parsed and validated into frozen classes.

Every knob is optional and off by default. Errors name the offending key path, e.g.
`orders.reject: probability must be in [0, 1], got 1.5`. The `[sim]` section holds the
sim's own model parameters (latencies, book shape, fees); see adapters/sim/README.md.
"""

from __future__ import annotations

import difflib
import math
import random
import tomllib
from collections.abc import Callable
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from adapters.sim.products import CATALOGUE

__all__ = [
    "ArchiveFaults",
    "FaultProfile",
    "FaultProfileError",
    "Jump",
    "MarketFaults",
    "MsRange",
    "OrdersFaults",
    "RestFaults",
    "SimSettings",
    "VenueFaults",
    "Window",
    "WsFaults",
    "load_profile",
    "parse_profile",
    "profile_from_dict",
]

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
ZERO = Decimal(0)


class FaultProfileError(ValueError):
    """A fault profile that cannot be used; the message names the key path."""


@attrs.frozen(kw_only=True)
class MsRange:
    """A uniform range of milliseconds, drawn in whole nanoseconds."""

    lo: Decimal = ZERO
    hi: Decimal = ZERO

    @property
    def is_zero(self) -> bool:
        return self.hi == 0

    def draw_ns(self, rng: random.Random) -> int:
        lo, hi = int(self.lo * NS_PER_MS), int(self.hi * NS_PER_MS)
        return lo if lo == hi else rng.randint(lo, hi)


@attrs.frozen(kw_only=True)
class Window:
    """`[at_s, at_s + for_s)` in simulated seconds from the venue's start."""

    at_s: Decimal
    for_s: Decimal

    @property
    def start_ns(self) -> int:
        return int(self.at_s * NS_PER_S)

    @property
    def end_ns(self) -> int:
        return int((self.at_s + self.for_s) * NS_PER_S)

    def contains(self, t_ns: int) -> bool:
        return self.start_ns <= t_ns < self.end_ns


@attrs.frozen(kw_only=True)
class Jump:
    at_s: Decimal
    bps: Decimal
    product: str

    @property
    def at_ns(self) -> int:
        return int(self.at_s * NS_PER_S)


@attrs.frozen(kw_only=True)
class OrdersFaults:
    ioc_no_fill: float = 0.0
    partial_fill: float = 0.0
    reject: float = 0.0
    cancel_delay_ms: MsRange = MsRange()


@attrs.frozen(kw_only=True)
class WsFaults:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay_ms: MsRange = MsRange()
    disconnect_mean_s: Decimal = ZERO


@attrs.frozen(kw_only=True)
class RestFaults:
    latency_ms: MsRange = MsRange()
    timeout: float = 0.0
    rate_limit: tuple[Window, ...] = ()


@attrs.frozen(kw_only=True)
class ForeignFill:
    """Someone else trades our subaccount (another client, a manual order): an IOC of
    `qty` through the book at `at_s`, with no client id the engine could know."""

    at_s: Decimal
    product: str
    side: str
    qty: Decimal

    @property
    def at_ns(self) -> int:
        return int(self.at_s * NS_PER_S)


@attrs.frozen(kw_only=True)
class VenueFaults:
    down: tuple[Window, ...] = ()
    position_lag_ms: Decimal = ZERO
    foreign_fills: tuple[ForeignFill, ...] = ()
    # Positions the account already holds when the venue starts (symbol → signed qty),
    # e.g. an absurd 1e6 ETH a restore must not trade slice by slice.
    start_positions: tuple[tuple[str, Decimal], ...] = ()


@attrs.frozen(kw_only=True)
class Skew:
    """`[at_s, at_s + for_s)`: the quotes shown for `product` (pushed BBO and REST market
    price) are `bps` off the real book, which (like the oracle) stays where it is; the
    quote is neither crossed nor wide (issue 11 item 4; unverified how often Nado shows
    this: a stale or manipulated feed)."""

    at_s: Decimal
    for_s: Decimal
    bps: Decimal
    product: str

    def factor_at(self, t_ns: int) -> Decimal | None:
        start = int(self.at_s * NS_PER_S)
        end = int((self.at_s + self.for_s) * NS_PER_S)
        return 1 + self.bps / 10_000 if start <= t_ns < end else None


@attrs.frozen(kw_only=True)
class MarketFaults:
    volatility_bps_per_sqrt_s: Decimal = Decimal(5)
    stale_bbo: float = 0.0
    crossed_bbo: float = 0.0
    jumps: tuple[Jump, ...] = ()
    # Nado pushes best_bid_offer when the top of book changes (nado-protocol.md §13);
    # "periodic" is the old every-`bbo_interval_ms` push, kept as a knob.
    bbo_push: str = "on_change"
    # Stretches with no market activity: mids, crowd depth and maker flow hold still, so
    # an on-change BBO stream goes silent and quotes age (stale-quote paths run).
    quiet: tuple[Window, ...] = ()
    skew: tuple[Skew, ...] = ()

    def skew_factor(self, product: str, t_ns: int) -> Decimal | None:
        for s in self.skew:
            if s.product == product:
                f = s.factor_at(t_ns)
                if f is not None:
                    return f
        return None


@attrs.frozen(kw_only=True)
class ArchiveFaults:
    """`[archive]`: the indexer (`venue serve`'s `/archive/v1`) sees an event only this
    long after it happened (real indexers lag the engine; the size is `unverified`)."""

    lag_ms: Decimal = ZERO


@attrs.frozen(kw_only=True)
class SimSettings:
    """The sim's model parameters (not faults): the `[sim]` section."""

    correlation: Decimal = Decimal("0.8")
    request_latency_ms: Decimal = Decimal(25)
    response_latency_ms: Decimal = Decimal(25)
    push_latency_ms: Decimal = Decimal(25)
    request_timeout_ms: Decimal = Decimal(3000)
    ws_reconnect_ms: Decimal = Decimal(1000)
    reorder_flush_ms: Decimal = Decimal(250)
    market_step_ms: Decimal = Decimal(100)
    bbo_interval_ms: Decimal = Decimal(100)
    # Nado's published entry-tier rates (docs.nado.xyz "Fees & Rebates": taker 3.5 bps,
    # maker 1 bp at $0 30-day volume; the same in ccxt's static `nado` market data,
    # `maker` 0.0001 / `taker` 0.00035). Served by `venue serve`'s `fee_rates` query.
    maker_fee_bps: Decimal = Decimal(1)
    taker_fee_bps: Decimal = Decimal("3.5")
    book_levels: int = 10
    level_usd: Decimal = Decimal(20000)
    spread_bps: Decimal = Decimal(1)
    level_step_bps: Decimal = Decimal("0.5")
    book_refill_s: Decimal = Decimal(5)
    # Taker flow (model, not venue behaviour; adapters/sim/flow.py): market orders of
    # others arrive on each side of each product at this Poisson rate (the name predates
    # the queue model; 0 = none), each of an exponentially distributed USD size.
    maker_fill_rate_per_s: Decimal = Decimal(1)
    taker_flow_mean_usd: Decimal = Decimal(5000)
    taker_flow_max_usd: Decimal = Decimal(50000)
    oracle_band: Decimal = Decimal("0.2")
    # Nado's docs: a FOK that cannot fill is accepted, then cancelled with no fill
    # (nado-protocol.md §13). "reject" answers failure 2031 instead (the old default).
    fok_unfillable: str = "expire"
    # `venue serve`'s order_update frames: "cumulative" adds `filled_qty` (the order's
    # filled size so far) and `filled_price` (the average price of its matches so far, "0"
    # before any) as in ccxt's real `order_update` sample (pro/nado parse_ws_order); the
    # TS SDK types omit both and their meaning on every reason is unverified. "omit":
    # only the TS SDK's fields.
    order_update_filled: str = "cumulative"
    # Deposits: "default" = every owner's subaccount named "default" holds `collateral`
    # USDT0 and any other name was never funded; "all" = every subaccount is funded.
    funded: str = "default"
    collateral: Decimal = Decimal(1_000_000)


@attrs.frozen(kw_only=True)
class FaultProfile:
    orders: OrdersFaults = OrdersFaults()
    ws: WsFaults = WsFaults()
    rest: RestFaults = RestFaults()
    venue: VenueFaults = VenueFaults()
    market: MarketFaults = MarketFaults()
    sim: SimSettings = SimSettings()
    archive: ArchiveFaults = ArchiveFaults()


# -- validation ---------------------------------------------------------------------------

Parser = Callable[[str, Any], Any]


def _number(path: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultProfileError(f"{path}: expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise FaultProfileError(f"{path}: must be finite, got {value!r}")
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


def _prob(path: str, value: Any) -> float:
    p = _number(path, value)
    if not 0 <= p <= 1:
        raise FaultProfileError(f"{path}: probability must be in [0, 1], got {value!r}")
    return float(p)


def _between(lo: Decimal | None, hi: Decimal | None, *, strict_lo: bool = False) -> Parser:
    def parse(path: str, value: Any) -> Decimal:
        d = _number(path, value)
        if lo is not None and (d <= lo if strict_lo else d < lo):
            raise FaultProfileError(
                f"{path}: must be {'>' if strict_lo else '>='} {lo}, got {value!r}"
            )
        if hi is not None and d > hi:
            raise FaultProfileError(f"{path}: must be <= {hi}, got {value!r}")
        return d

    return parse


_nonneg = _between(ZERO, None)
_positive = _between(ZERO, None, strict_lo=True)


def _count(lo: int, hi: int) -> Parser:
    def parse(path: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FaultProfileError(f"{path}: expected an integer, got {value!r}")
        if not lo <= value <= hi:
            raise FaultProfileError(f"{path}: must be in [{lo}, {hi}], got {value!r}")
        return value

    return parse


def _choice(*options: str) -> Parser:
    def parse(path: str, value: Any) -> str:
        if value not in options:
            raise FaultProfileError(f"{path}: must be one of {', '.join(options)}; got {value!r}")
        return str(value)

    return parse


def _range_ms(path: str, value: Any) -> MsRange:
    if not isinstance(value, list) or len(value) != 2:
        raise FaultProfileError(f"{path}: expected a range [lo, hi], got {value!r}")
    lo, hi = _number(f"{path}[0]", value[0]), _number(f"{path}[1]", value[1])
    if lo < 0 or lo > hi:
        raise FaultProfileError(f"{path}: range must be [lo, hi] with 0 <= lo <= hi, got {value!r}")
    return MsRange(lo=lo, hi=hi)


def _table(path: str, value: Any, known: Mapping[str, Parser]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise FaultProfileError(f"{path}: expected a table, got {value!r}")
    out: dict[str, Any] = {}
    for key, raw in value.items():
        sub = f"{path}.{key}" if path else key
        parser = known.get(key)
        if parser is None:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
            what = "section" if not path else "key"
            raise FaultProfileError(f"{sub}: unknown {what} ({hint})")
        out[key] = parser(sub, raw)
    return out


def _items(path: str, value: Any, item: Parser) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise FaultProfileError(f"{path}: expected a list of tables, got {value!r}")
    return tuple(item(f"{path}[{i}]", v) for i, v in enumerate(value))


def _window(path: str, value: Any) -> Window:
    fields = _table(path, value, {"at_s": _nonneg, "for_s": _nonneg})
    missing = [k for k in ("at_s", "for_s") if k not in fields]
    if missing:
        raise FaultProfileError(f"{path}: missing {', '.join(missing)}")
    return Window(**fields)


def _product(path: str, value: Any) -> str:
    if value not in CATALOGUE:
        raise FaultProfileError(
            f"{path}: unknown product {value!r} (known: {', '.join(sorted(CATALOGUE))})"
        )
    return str(value)


def _jump(path: str, value: Any) -> Jump:
    known = {"at_s": _nonneg, "bps": _between(Decimal(-9999), None), "product": _product}
    fields = _table(path, value, known)
    missing = [k for k in ("at_s", "bps", "product") if k not in fields]
    if missing:
        raise FaultProfileError(f"{path}: missing {', '.join(missing)}")
    return Jump(**fields)


def _windows(path: str, value: Any) -> tuple[Window, ...]:
    return _items(path, value, _window)


def _jumps(path: str, value: Any) -> tuple[Jump, ...]:
    return _items(path, value, _jump)


def _side(path: str, value: Any) -> str:
    if value not in ("buy", "sell"):
        raise FaultProfileError(f"{path}: must be buy or sell, got {value!r}")
    return str(value)


def _foreign_fill(path: str, value: Any) -> ForeignFill:
    known = {"at_s": _nonneg, "product": _product, "side": _side, "qty": _positive}
    fields = _table(path, value, known)
    missing = [k for k in known if k not in fields]
    if missing:
        raise FaultProfileError(f"{path}: missing {', '.join(missing)}")
    return ForeignFill(**fields)


def _skew(path: str, value: Any) -> Skew:
    known = {
        "at_s": _nonneg,
        "for_s": _nonneg,
        "bps": _between(Decimal(-9000), Decimal(9000)),
        "product": _product,
    }
    fields = _table(path, value, known)
    missing = [k for k in known if k not in fields]
    if missing:
        raise FaultProfileError(f"{path}: missing {', '.join(missing)}")
    return Skew(**fields)


def _skews(path: str, value: Any) -> tuple[Skew, ...]:
    return _items(path, value, _skew)


def _foreign_fills(path: str, value: Any) -> tuple[ForeignFill, ...]:
    return _items(path, value, _foreign_fill)


def _start_positions(path: str, value: Any) -> tuple[tuple[str, Decimal], ...]:
    if not isinstance(value, Mapping):
        raise FaultProfileError(f"{path}: expected a table of product = qty, got {value!r}")
    return tuple((_product(f"{path}.{k}", k), _number(f"{path}.{k}", v)) for k, v in value.items())


_ms = _nonneg
_SECTIONS: dict[str, tuple[type[Any], dict[str, Parser]]] = {
    "orders": (
        OrdersFaults,
        {
            "ioc_no_fill": _prob,
            "partial_fill": _prob,
            "reject": _prob,
            "cancel_delay_ms": _range_ms,
        },
    ),
    "ws": (
        WsFaults,
        {
            "drop": _prob,
            "duplicate": _prob,
            "reorder": _prob,
            "delay_ms": _range_ms,
            "disconnect_mean_s": _nonneg,
        },
    ),
    "rest": (RestFaults, {"latency_ms": _range_ms, "timeout": _prob, "rate_limit": _windows}),
    "venue": (
        VenueFaults,
        {
            "down": _windows,
            "position_lag_ms": _ms,
            "foreign_fills": _foreign_fills,
            "start_positions": _start_positions,
        },
    ),
    "market": (
        MarketFaults,
        {
            "volatility_bps_per_sqrt_s": _nonneg,
            "stale_bbo": _prob,
            "crossed_bbo": _prob,
            "jumps": _jumps,
            "bbo_push": _choice("on_change", "periodic"),
            "quiet": _windows,
            "skew": _skews,
        },
    ),
    "archive": (ArchiveFaults, {"lag_ms": _ms}),
    "sim": (
        SimSettings,
        {
            "correlation": _between(ZERO, Decimal(1)),
            "request_latency_ms": _ms,
            "response_latency_ms": _ms,
            "push_latency_ms": _ms,
            "request_timeout_ms": _positive,
            "ws_reconnect_ms": _ms,
            "reorder_flush_ms": _positive,
            "market_step_ms": _positive,
            "bbo_interval_ms": _positive,
            "maker_fee_bps": _between(Decimal(-100), Decimal(100)),
            "taker_fee_bps": _between(ZERO, Decimal(100)),
            "book_levels": _count(1, 200),
            "level_usd": _positive,
            "spread_bps": _positive,
            "level_step_bps": _positive,
            "book_refill_s": _positive,
            "maker_fill_rate_per_s": _between(ZERO, Decimal(1000)),
            "taker_flow_mean_usd": _between(ZERO, Decimal(10**9), strict_lo=True),
            "taker_flow_max_usd": _between(ZERO, Decimal(10**9), strict_lo=True),
            "oracle_band": _between(ZERO, Decimal(1), strict_lo=True),
            "fok_unfillable": _choice("reject", "expire"),
            "order_update_filled": _choice("cumulative", "omit"),
            "funded": _choice("default", "all"),
            "collateral": _nonneg,
        },
    ),
}


def profile_from_dict(data: Mapping[str, Any]) -> FaultProfile:
    sections = {name: _section_parser(name) for name in _SECTIONS}
    return FaultProfile(**_table("", data, sections))


def _section_parser(name: str) -> Parser:
    cls, known = _SECTIONS[name]

    def parse(path: str, value: Any) -> Any:
        return cls(**_table(path, value, known))

    return parse


def parse_profile(text: str, source: str = "<profile>") -> FaultProfile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FaultProfileError(f"{source}: invalid TOML: {exc}") from None
    return profile_from_dict(data)


def load_profile(path: str | Path) -> FaultProfile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FaultProfileError(f"{p}: cannot read fault profile: {exc.strerror}") from None
    try:
        return parse_profile(text, str(p))
    except FaultProfileError as exc:
        raise FaultProfileError(f"{p}: {exc}") from None
