"""Fault profiles for `dnpair chaos`: the shipped ones, per-seed generated ones over the
whole DESIGN.md §4 knob space, and per-seed jitter of a profile's windows and jumps."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from adapters.sim.faults import FaultProfile
from adapters.sim.faults import FaultProfileError
from adapters.sim.faults import parse_profile

__all__ = [
    "PAIR",
    "PROFILES_DIR",
    "ChaosProfile",
    "jittered",
    "load_chaos_profile",
    "random_profile",
    "shipped_profiles",
]

PROFILES_DIR = Path(__file__).resolve().parents[2] / "tests" / "chaos" / "profiles"
PAIR = ("ETH-PERP", "SOL-PERP")


@attrs.frozen
class ChaosProfile:
    name: str
    text: str  # the TOML, exactly as parsed
    path: str | None = None  # None for generated profiles

    def parse(self) -> FaultProfile:
        return parse_profile(self.text, self.path or self.name)

    def reproduce(self, seed: int, cycles: int, jitter_s: float = 0) -> str:
        opts = f"--seeds {seed}-{seed} --cycles {cycles}"
        if jitter_s:
            opts += f" --jitter-s {jitter_s:g}"
        if self.path is None:
            return (
                f"dnpair chaos {opts} --random-only  # profile {self.name}:\n{_indent(self.text)}"
            )
        return f"dnpair chaos {opts} --only --faults {self.path}"


def jittered(profile: FaultProfile, seed: int, jitter_s: float) -> FaultProfile:
    """Every window and jump moved later by its own uniform draw in [0, jitter_s] seconds
    (deterministic for the seed), so the same profile hits sessions at different phases."""
    if not jitter_s:
        return profile
    rng = random.Random(f"chaos-jitter/{seed}")

    def later(at_s: Decimal) -> Decimal:
        return at_s + Decimal(str(round(rng.uniform(0, jitter_s), 3)))

    rest = attrs.evolve(
        profile.rest,
        rate_limit=tuple(attrs.evolve(w, at_s=later(w.at_s)) for w in profile.rest.rate_limit),
    )
    venue = attrs.evolve(
        profile.venue, down=tuple(attrs.evolve(w, at_s=later(w.at_s)) for w in profile.venue.down)
    )
    market = attrs.evolve(
        profile.market,
        jumps=tuple(attrs.evolve(j, at_s=later(j.at_s)) for j in profile.market.jumps),
    )
    # drawn after the jumps, so profiles without quiet stretches keep their old draws
    market = attrs.evolve(
        market, quiet=tuple(attrs.evolve(w, at_s=later(w.at_s)) for w in profile.market.quiet)
    )
    return attrs.evolve(profile, rest=rest, venue=venue, market=market)


def _indent(text: str) -> str:
    return "\n".join(f"      {line}" for line in text.strip().splitlines())


def shipped_profiles(directory: Path = PROFILES_DIR) -> list[ChaosProfile]:
    return [load_chaos_profile(p) for p in sorted(directory.glob("*.toml"))]


def load_chaos_profile(path: str | Path) -> ChaosProfile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FaultProfileError(f"{p}: cannot read fault profile: {exc.strerror}") from None
    profile = ChaosProfile(p.stem, text, str(p))
    profile.parse()  # fail early, naming the key
    return profile


# -- generated profiles -------------------------------------------------------------------
def _p(rng: random.Random, hi: float) -> float:
    return round(rng.uniform(0, hi), 3)


def _windows(rng: random.Random, n: int, until_s: float, longest_s: float) -> list[dict[str, Any]]:
    out = [
        {
            "at_s": round(rng.uniform(0, until_s), 2),
            "for_s": round(rng.uniform(0.3, longest_s), 2),
        }
        for _ in range(n)
    ]
    return sorted(out, key=lambda w: w["at_s"])


def _random_sections(rng: random.Random) -> dict[str, dict[str, Any]]:
    s: dict[str, dict[str, Any]] = {}
    if rng.random() < 0.6:
        s["orders"] = {
            "ioc_no_fill": _p(rng, 0.4),
            "partial_fill": _p(rng, 0.7),
            "reject": _p(rng, 0.12),
            "cancel_delay_ms": [0, rng.randrange(0, 1500)],
        }
    if rng.random() < 0.6:
        s["ws"] = {
            "drop": _p(rng, 0.1),
            "duplicate": _p(rng, 0.3),
            "reorder": _p(rng, 0.3),
            "delay_ms": [0, rng.randrange(0, 800)],
            "disconnect_mean_s": rng.choice([0, 0, round(rng.uniform(2, 20), 1)]),
        }
    if rng.random() < 0.6:
        s["rest"] = {
            "latency_ms": [0, rng.randrange(0, 500)],
            "timeout": _p(rng, 0.15),
            "rate_limit": _windows(rng, rng.randrange(0, 4), 40, rng.choice([5, 20, 45])),
        }
    if rng.random() < 0.5:
        s["venue"] = {
            "down": _windows(rng, rng.randrange(0, 3), 40, rng.choice([5, 15, 60])),
            "position_lag_ms": rng.choice([0, 0, rng.randrange(0, 2500)]),
        }
    if rng.random() < 0.6:
        s["market"] = {
            "volatility_bps_per_sqrt_s": round(rng.uniform(1, 60), 1),
            "stale_bbo": _p(rng, 0.3),
            "crossed_bbo": _p(rng, 0.2),
            "jumps": [
                {
                    "at_s": round(rng.uniform(0, 40), 2),
                    "bps": rng.randrange(-1500, 1500),
                    "product": rng.choice(PAIR),
                }
                for _ in range(rng.randrange(0, 4))
            ],
        }
    return s


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def random_profile(seed: int) -> ChaosProfile:
    """A profile drawn from the whole knob space, deterministic for the seed."""
    rng = random.Random(f"chaos-random/{seed}")
    lines: list[str] = []
    for section, knobs in _random_sections(rng).items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in knobs.items()]
        lines.append("")
    return ChaosProfile(f"random/{seed}", "\n".join(lines))
