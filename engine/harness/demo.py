"""The probe app: one ProbeMachine per run. Used by tests, benchmarks and `replay`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.core.loop import Engine
from machines.demo import ProbeMachine


def start_probe(engine: Engine, config: Mapping[str, Any]) -> None:
    for i in range(int(config.get("machines", 1))):
        engine.spawn(
            ProbeMachine,
            f"probe{i}",
            product_id=int(config.get("product_id", 4)) + i,  # one product each
            qty=config.get("qty", "0.1"),
            price=config.get("price", "3000"),
            fill_timeout_s=config.get("fill_timeout_s", "5"),
        )
