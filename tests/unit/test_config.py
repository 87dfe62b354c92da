from __future__ import annotations

from decimal import Decimal

import pytest

from engine.runtime.config import FLAGS
from engine.runtime.config import ConfigError
from engine.runtime.config import load_settings


def test_defaults_cover_the_seed_flags():
    names = {f.env_name for f in FLAGS}
    seed_000_task_5_1 = {
        "DN_USE_MARKET_FALLBACK",
        "DN_MARKET_MAX_SLIPPAGE_BPS",
        "DN_ENABLE_RATE_LIMITING",
        "DN_RATE_LIMIT_PER_SECOND",
        "DN_BURST_SIZE",
        "DN_ENABLE_CIRCUIT_BREAKER",
        "DN_CIRCUIT_FAILURE_THRESHOLD",
        "DN_CIRCUIT_TIMEOUT_SECONDS",
        "DN_USE_WEBSOCKET_BBO",
        "DN_BBO_MAX_AGE_SECONDS",
    }
    assert seed_000_task_5_1 <= names
    s = load_settings(env={})
    assert s.circuit_failure_threshold == 5
    assert s.exit_ladder_bps == (Decimal(50), Decimal(150), Decimal(500))


def test_precedence_file_then_env_then_cli(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[engine]\ncross_bps = 7\nsize_usd = "250"\nhold_s = 1\n')
    s = load_settings(config_file=str(cfg), env={"DN_CROSS_BPS": "9"}, cli={"size_usd": "300"})
    assert (s.cross_bps, s.size_usd, s.hold_s) == (Decimal(9), Decimal(300), Decimal(1))
    assert (s.sources["cross_bps"], s.sources["size_usd"], s.sources["hold_s"]) == (
        "env",
        "cli",
        "file",
    )
    assert "DN_CROSS_BPS=9 (env)" in s.describe()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DN_CROSS_BPS": "abc"}, "DN_CROSS_BPS: not a number"),
        ({"DN_CROSS_BPS": "NaN"}, "DN_CROSS_BPS: not a finite number"),
        ({"DN_SIZE_USD": "-5"}, "DN_SIZE_USD: must be >= 1"),
        ({"DN_BURST_SIZE": "1.5"}, "DN_BURST_SIZE: not an integer"),
        ({"DN_USE_MARKET_FALLBACK": "maybe"}, "DN_USE_MARKET_FALLBACK: not a boolean"),
        ({"DN_ORDER_STYLE": "market"}, "DN_ORDER_STYLE: must be one of ioc, post_only"),
        ({"DN_EXIT_LADDER_BPS": "150,50"}, "DN_EXIT_LADDER_BPS: steps must not decrease"),
        ({"DN_TYPO": "1"}, "DN_TYPO: unknown DN_* flag"),
        ({"DN_EXECUTION": "maker"}, "DN_EXECUTION: must be one of taker, maker_first"),
        ({"DN_MAKER_REPRICE_S": "0"}, "DN_MAKER_REPRICE_S: must be >= 0.05"),
        ({"DN_MAKER_BUDGET_S": "x"}, "DN_MAKER_BUDGET_S: not a number"),
        (
            {"DN_EXECUTION": "maker_first", "DN_ORDER_STYLE": "post_only"},
            "DN_EXECUTION=maker_first and DN_ORDER_STYLE=post_only",
        ),
        (
            {"DN_EXECUTION": "maker_first", "DN_MAKER_REPRICE_S": "5", "DN_MAKER_BUDGET_S": "2"},
            "DN_MAKER_REPRICE_S: 5 is longer than DN_MAKER_BUDGET_S 2",
        ),
    ],
)
def test_bad_values_name_the_flag(env, message):
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        load_settings(env=env)


def test_bad_file_names_the_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[engine]\ncross_bsp = 7\n")
    with pytest.raises(ConfigError, match=r"engine\.cross_bsp: unknown key"):
        load_settings(config_file=str(cfg), env={})
    cfg.write_text("[engine\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_file=str(cfg), env={})
    cfg.write_text("[other]\nx=1\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_settings(config_file=str(cfg), env={})


def test_execution_mode_defaults_to_maker_first_and_reaches_the_cycle_params():
    from engine.runtime.app import cycle_template
    from tests.unit.machines.fakes import ETH
    from tests.unit.machines.fakes import SOL

    legs = [
        {
            "symbol": leg.symbol,
            "product_id": leg.product_id,
            "tick_size": leg.tick_size,
            "size_increment": leg.size_increment,
        }
        for leg in (ETH, SOL)
    ]
    assert load_settings(env={}).execution == "maker_first"
    taker = load_settings(env={"DN_EXECUTION": "taker"})
    assert cycle_template({"settings": dict(taker.values), "legs": legs}).execution == "taker"
    s = load_settings(env={"DN_EXECUTION": "Maker_First", "DN_MAKER_REPRICE_S": "0.5"})
    assert (s.execution, s.maker_reprice_s, s.maker_budget_s) == (
        "maker_first",
        Decimal("0.5"),
        Decimal(10),
    )
    p = cycle_template({"settings": dict(s.values), "legs": legs})
    assert (p.execution, p.maker_reprice_s, p.maker_budget_s) == (
        "maker_first",
        Decimal("0.5"),
        Decimal(10),
    )
    # A journal written before the mode existed replays as taker.
    old = {k: v for k, v in s.values.items() if not k.startswith(("execution", "maker_"))}
    assert cycle_template({"settings": old, "legs": legs}).execution == "taker"
