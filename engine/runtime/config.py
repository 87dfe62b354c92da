"""Run configuration: defaults ← TOML file ← DN_* environment flags ← CLI flags.

Every value is validated at this boundary; a bad one raises `ConfigError` naming
the key and where it came from, before anything is sent. `describe()` lists every
flag with its value and source; `dnpair run` prints it at start.
"""

from __future__ import annotations

import itertools
import os
import tomllib
from collections.abc import Callable
from collections.abc import Mapping
from decimal import Decimal
from decimal import InvalidOperation
from pathlib import Path
from typing import Any

import attrs

__all__ = ["FLAGS", "ConfigError", "Flag", "Settings", "check_safe", "load_settings"]


class ConfigError(ValueError):
    """Bad configuration: the message names the key. `dnpair run` exits 2 on it."""


def _decimal(lo: Decimal | None = None, hi: Decimal | None = None) -> Callable[[Any], Decimal]:
    def parse(raw: Any) -> Decimal:
        if isinstance(raw, bool) or (isinstance(raw, float) and raw != raw):
            raise ValueError(f"not a number: {raw!r}")
        try:
            value = Decimal(str(raw).strip())
        except InvalidOperation:
            raise ValueError(f"not a number: {raw!r}") from None
        if not value.is_finite():
            raise ValueError(f"not a finite number: {raw!r}")
        if lo is not None and value < lo:
            raise ValueError(f"must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise ValueError(f"must be <= {hi}, got {value}")
        return value

    return parse


def _int(lo: int = 0, hi: int | None = None) -> Callable[[Any], int]:
    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError(f"not an integer: {raw!r}")
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ValueError(f"not an integer: {raw!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise ValueError(f"must be in [{lo}, {hi if hi is not None else '∞'}], got {value}")
        return value

    return parse


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean (true/false): {raw!r}")


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        text = str(raw).strip().lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {raw!r}")
        return text

    return parse


def _ladder(raw: Any) -> tuple[Decimal, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    values = tuple(_decimal(Decimal(0), Decimal(5000))(v) for v in items)
    if not values:
        raise ValueError("needs at least one step")
    if any(b < a for a, b in itertools.pairwise(values)):
        raise ValueError(f"steps must not decrease: {[str(v) for v in values]}")
    return values


@attrs.frozen
class Flag:
    name: str  # field name and TOML key
    parse: Callable[[Any], Any]
    default: Any
    help: str
    env: str = ""  # DN_* name; defaults to DN_<NAME>

    @property
    def env_name(self) -> str:
        return self.env or f"DN_{self.name.upper()}"


D = Decimal
FLAGS: tuple[Flag, ...] = (
    Flag("size_usd", _decimal(D(1), D(1_000_000)), D(100), "USD notional per leg per cycle"),
    Flag("order_style", _choice("ioc", "post_only"), "ioc", "BUILD order style"),
    Flag(
        "execution",
        _choice("taker", "maker_first"),
        "maker_first",
        "maker_first (default): one leg rests post-only at the touch, each of its fills "
        "hedged at once by an IOC on the other (BUILD and UNWIND); taker: IOC on both legs",
    ),
    Flag(
        "maker_reprice_s",
        _decimal(D("0.05"), D(60)),
        D(1),
        "maker_first: a resting order not filled this long is cancelled and re-placed at the touch",
    ),
    Flag(
        "maker_budget_s",
        _decimal(D("0.05"), D(600)),
        D(10),
        "maker_first: total resting time per BUILD/UNWIND before the taker rungs take over",
    ),
    Flag("cross_bps", _decimal(D(0), D(1000)), D(10), "IOC price through the touch, bps"),
    Flag("fill_timeout_s", _decimal(D("0.1"), D(600)), D(5), "wait for BUILD fills"),
    Flag("verify_timeout_s", _decimal(D("0.1"), D(600)), D(5), "wait for a position answer"),
    Flag("hold_s", _decimal(D(0), D(86400)), D(2), "hold between BUILD and UNWIND"),
    Flag("pause_s", _decimal(D(0), D(86400)), D("0.5"), "pause between cycles (flat only)"),
    Flag("pause_jitter_s", _decimal(D(0), D(86400)), D(0), "extra pause, varied per cycle"),
    Flag("repair_attempts", _int(0, 10), 2, "retries of a missing BUILD leg"),
    Flag("repair_step_bps", _decimal(D(0), D(1000)), D(25), "extra aggression per repair"),
    Flag("post_only_attempts", _int(0, 20), 2, "post-only reprices before IOC"),
    Flag("unwind_ioc_attempts", _int(1, 20), 3, "IOC attempts in UNWIND before market"),
    Flag("exit_ladder_bps", _ladder, (D(50), D(150), D(500)), "emergency slippage ladder"),
    Flag("exit_attempt_timeout_s", _decimal(D("0.1"), D(60)), D(3), "per exit attempt"),
    Flag("exit_max_attempts", _int(1, 100), 6, "exit attempts that reduce nothing"),
    Flag("exit_budget_s", _decimal(D(1), D(600)), D(30), "total emergency exit budget"),
    Flag(
        "position_lag_budget_s",
        _decimal(D(1), D(600)),
        D(45),
        "re-ask a position read that lags the reported fills for this long",
    ),
    Flag(
        "price_band_bps",
        _decimal(D(0), D(5000)),
        D(500),
        "quote vs oracle band: beyond it, or with the oracle lost, no entries (0: off)",
    ),
    Flag("max_position_usd", _decimal(D(1), D(10_000_000)), D(10_000), "MAX_POSITION per leg"),
    Flag("max_daily_loss_usd", _decimal(D(0), D(10_000_000)), D(500), "MAX_DAILY_LOSS (UTC)"),
    Flag("stop_loss_pct", _decimal(D("0.1"), D(100)), D(5), "open pair loss, % of size: exit"),
    Flag("dust_usd", _decimal(D(0), D(1000)), D(1), "a position below this is flat"),
    Flag("max_aborts", _int(1, 1000), 5, "consecutive refused BUILDs before HALT"),
    Flag(
        "use_market_fallback",
        _bool,
        True,
        "UNWIND falls back to aggressive IOC",
        env="DN_USE_MARKET_FALLBACK",
    ),
    Flag(
        "market_max_slippage_bps",
        _decimal(D(0), D(5000)),
        D(50),
        "slippage cap of the market fallback",
        env="DN_MARKET_MAX_SLIPPAGE_BPS",
    ),
    Flag("enable_rate_limiting", _bool, True, "client-side token bucket"),
    Flag("rate_limit_per_second", _decimal(D("0.1"), D(1000)), D(10), "token refill rate"),
    Flag("burst_size", _int(1, 10_000), 20, "token bucket size"),
    Flag("enable_circuit_breaker", _bool, True, "breaker blocks entries after failures"),
    Flag("circuit_failure_threshold", _int(1, 1000), 5, "venue failures before it opens"),
    Flag("circuit_timeout_seconds", _decimal(D(1), D(86400)), D(60), "open → half-open"),
    Flag("use_websocket_bbo", _bool, True, "BBO from the stream (else REST polling)"),
    Flag(
        "bbo_max_age_seconds",
        _decimal(D("0.1"), D(600)),
        D(2),
        "older BBO is stale: no BUILD",
    ),
    Flag(
        "startup_budget_s",
        _decimal(D(0), D(3600)),
        D(60),
        "retry a venue that is down at start-up this long, then exit 3",
    ),
    Flag(
        "journal_max_mb",
        _decimal(D(0), D(1_000_000)),
        D(256),
        "past this size a journal file is closed and the next segment (PATH.1.db …) "
        "continues its hash chain; 0 = one file",
    ),
    Flag(
        "min_free_disk_mb",
        _int(0, 10_000_000),
        256,
        "below this free space beside the journal: no new cycles, flatten, stop (exit 3)",
    ),
)
_BY_NAME = {f.name: f for f in FLAGS}


@attrs.frozen
class Settings:
    values: Mapping[str, Any]
    sources: Mapping[str, str]  # name → "default" | "file" | "env" | "cli"

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def describe(self) -> list[str]:
        out = []
        for flag in FLAGS:
            value = self.values[flag.name]
            shown = ",".join(str(v) for v in value) if isinstance(value, tuple) else value
            out.append(f"{flag.env_name}={shown} ({self.sources[flag.name]})")
        return out


def load_settings(
    *,
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    values = {f.name: f.default for f in FLAGS}
    sources = dict.fromkeys(values, "default")
    if config_file:
        for key, raw in _read_toml(config_file).items():
            values[key] = _parse(_BY_NAME[key], raw, f"{config_file}: {key}")
            sources[key] = "file"
    known_env = {f.env_name for f in FLAGS}
    for name in sorted(env):
        if name.startswith("DN_") and name not in known_env:
            raise ConfigError(f"{name}: unknown DN_* flag (known: see `dnpair run --help`)")
    for flag in FLAGS:
        if flag.env_name in env:
            values[flag.name] = _parse(flag, env[flag.env_name], flag.env_name)
            sources[flag.name] = "env"
    for key, raw in (cli or {}).items():
        if raw is not None:
            values[key] = _parse(_BY_NAME[key], raw, f"--{key.replace('_', '-')}")
            sources[key] = "cli"
    _cross_check(values)
    settings = Settings(values, sources)
    check_safe(settings)
    return settings


def check_safe(settings: Settings) -> None:
    """Combinations that cannot be safe (RELIABILITY C1): ConfigError naming both flags."""

    def name(key: str) -> str:
        flag = _BY_NAME[key]
        return f"{flag.env_name}={settings.values[key]} ({settings.sources[key]})"

    v = settings.values
    if v["dust_usd"] >= v["size_usd"]:
        raise ConfigError(
            f"{name('dust_usd')} must be below {name('size_usd')}: a whole naked leg "
            "would count as flat"
        )
    if v["max_position_usd"] < v["size_usd"]:
        raise ConfigError(
            f"{name('max_position_usd')} is below {name('size_usd')}: no cycle could open"
        )
    for key in ("exit_attempt_timeout_s", "fill_timeout_s"):
        if v[key] > v["exit_budget_s"]:
            raise ConfigError(
                f"{name(key)} is longer than {name('exit_budget_s')}: one wait would "
                "outlast the whole emergency exit"
            )


def _cross_check(values: Mapping[str, Any]) -> None:
    """Settings that only make sense together."""
    if values["execution"] == "maker_first":
        if values["order_style"] == "post_only":
            raise ConfigError(
                "DN_EXECUTION=maker_first and DN_ORDER_STYLE=post_only: both choose how the "
                "legs rest; maker_first already rests one leg post-only (use "
                "DN_ORDER_STYLE=ioc, or DN_EXECUTION=taker for post-only on both legs)"
            )
        reprice, budget = values["maker_reprice_s"], values["maker_budget_s"]
        if reprice > budget:
            raise ConfigError(
                f"DN_MAKER_REPRICE_S: {reprice} is longer than DN_MAKER_BUDGET_S {budget}: "
                "the resting order would step aside before its first reprice"
            )
    lag, verify = values["position_lag_budget_s"], values["verify_timeout_s"]
    if lag < verify:
        raise ConfigError(
            f"DN_POSITION_LAG_BUDGET_S: {lag} is shorter than DN_VERIFY_TIMEOUT_S {verify}: "
            "a lagging position read could never be asked again"
        )


def _parse(flag: Flag, raw: Any, where: str) -> Any:
    try:
        return flag.parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _read_toml(path: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    table = data.pop("engine", {})
    if data:
        raise ConfigError(f"{path}: unknown section(s) {sorted(data)}; expected [engine]")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [engine] must be a table")
    unknown = sorted(set(table) - set(_BY_NAME))
    if unknown:
        raise ConfigError(f"{path}: engine.{unknown[0]}: unknown key")
    return table
