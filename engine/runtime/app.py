"""The DN pair app: builds the cycle parameters from a run's configuration and spawns
the session. Everything it reads is in the journal header, so replay rebuilds the
identical machines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.core.loop import Engine
from machines.breaker import BreakerMachine
from machines.connection import ConnectionMachine
from machines.health import HealthMachine
from machines.params import CycleParams
from machines.params import LegSpec
from machines.session import SessionMachine

__all__ = ["SESSION_ID", "cycle_template", "start_pair"]

SESSION_ID = "session"


def cycle_template(config: Mapping[str, Any]) -> CycleParams:
    s = config["settings"]
    legs = [LegSpec(**leg) for leg in config["legs"]]
    return CycleParams(
        cycle=0,
        long=legs[0],
        short=legs[1],
        notional_usd=s["size_usd"],
        order_style=s["order_style"],
        cross_bps=s["cross_bps"],
        fill_timeout_s=s["fill_timeout_s"],
        verify_timeout_s=s["verify_timeout_s"],
        repair_attempts=int(s["repair_attempts"]),
        repair_step_bps=s["repair_step_bps"],
        post_only_attempts=int(s["post_only_attempts"]),
        unwind_ioc_attempts=int(s["unwind_ioc_attempts"]),
        exit_ladder_bps=list(s["exit_ladder_bps"]),
        exit_attempt_timeout_s=s["exit_attempt_timeout_s"],
        exit_budget_s=s["exit_budget_s"],
        exit_max_attempts=int(s["exit_max_attempts"]),
        dust_usd=s["dust_usd"],
        bbo_max_age_s=s["bbo_max_age_seconds"],
        max_position_usd=s["max_position_usd"],
        use_market_fallback=bool(s["use_market_fallback"]),
        market_max_slippage_bps=s["market_max_slippage_bps"],
        # Journals from before these settings replay with the old defaults' meaning.
        position_lag_budget_s=s.get("position_lag_budget_s", 45),
        price_band_bps=s.get("price_band_bps", 0),
        execution=s.get("execution", "taker"),
        maker_reprice_s=s.get("maker_reprice_s", 1),
        maker_budget_s=s.get("maker_budget_s", 10),
    )


def start_pair(engine: Engine, config: Mapping[str, Any]) -> None:
    s = config["settings"]
    if s.get("enable_circuit_breaker", True):
        engine.spawn(
            BreakerMachine,
            "breaker",
            threshold=int(s["circuit_failure_threshold"]),
            cooldown_s=s["circuit_timeout_seconds"],
        )
    engine.spawn(HealthMachine, "health")
    if config.get("venue") in ("nado", "paper"):
        # The stream's reconnects, REST polls and audits (machines/connection.py); the sim
        # venue needs none, and its journals stay as they were. Paper trading's market
        # data stream goes through it exactly as live trading's.
        engine.spawn(
            ConnectionMachine,
            "connection",
            product_ids=[int(leg["product_id"]) for leg in config["legs"]],
            seed=int(config.get("seed", 0)),
            **dict(config.get("connection") or {}),
        )
    engine.spawn(
        SessionMachine,
        SESSION_ID,
        params=cycle_template(config),
        cycles=config.get("cycles"),
        hold_s=s["hold_s"],
        pause_s=s["pause_s"],
        pause_jitter_s=s["pause_jitter_s"],
        max_aborts=int(s["max_aborts"]),
        max_daily_loss_usd=s["max_daily_loss_usd"],
        stop_loss_pct=s["stop_loss_pct"],
        epoch_utc_s=config.get("epoch_utc_s", 0),
    )
