from __future__ import annotations

import random
from decimal import Decimal

import pytest

from adapters.sim.faults import FaultProfile
from adapters.sim.faults import FaultProfileError
from adapters.sim.faults import MsRange
from adapters.sim.faults import Window
from adapters.sim.faults import load_profile
from adapters.sim.faults import parse_profile

FULL = """
[orders]
ioc_no_fill = 0.1
partial_fill = 0.2
reject = 0.05
cancel_delay_ms = [10, 50]
[ws]
drop = 0.01
duplicate = 0.02
reorder = 0.03
delay_ms = [0, 20]
disconnect_mean_s = 30
[rest]
latency_ms = [5, 15]
timeout = 0.01
rate_limit = [{ at_s = 30, for_s = 10 }]
[venue]
down = [{ at_s = 60, for_s = 20.5 }]
position_lag_ms = 250
[market]
volatility_bps_per_sqrt_s = 8.5
stale_bbo = 0.1
crossed_bbo = 0.01
jumps = [{ at_s = 120, bps = -500, product = "SOL-PERP" }]
[sim]
correlation = 0.5
taker_fee_bps = 3
fok_unfillable = "expire"
"""


def test_empty_profile_is_all_off_with_default_volatility():
    p = parse_profile("")
    assert p == FaultProfile()
    assert p.orders.reject == 0.0
    assert p.ws.delay_ms.is_zero
    assert p.rest.rate_limit == ()
    assert p.market.volatility_bps_per_sqrt_s == Decimal(5)
    assert p.venue.position_lag_ms == 0


def test_every_knob_parses():
    p = parse_profile(FULL)
    assert p.orders.ioc_no_fill == 0.1
    assert p.orders.partial_fill == 0.2
    assert p.orders.reject == 0.05
    assert p.orders.cancel_delay_ms == MsRange(lo=Decimal(10), hi=Decimal(50))
    assert (p.ws.drop, p.ws.duplicate, p.ws.reorder) == (0.01, 0.02, 0.03)
    assert p.ws.delay_ms.hi == 20
    assert p.ws.disconnect_mean_s == 30
    assert p.rest.latency_ms == MsRange(lo=Decimal(5), hi=Decimal(15))
    assert p.rest.timeout == 0.01
    assert p.rest.rate_limit == (Window(at_s=Decimal(30), for_s=Decimal(10)),)
    assert p.venue.down[0].end_ns == 80_500_000_000
    assert p.venue.position_lag_ms == 250
    assert p.market.volatility_bps_per_sqrt_s == Decimal("8.5")
    assert (p.market.stale_bbo, p.market.crossed_bbo) == (0.1, 0.01)
    jump = p.market.jumps[0]
    assert (jump.at_ns, jump.bps, jump.product) == (120 * 10**9, Decimal(-500), "SOL-PERP")
    assert p.sim.correlation == Decimal("0.5")
    assert p.sim.taker_fee_bps == 3
    assert p.sim.fok_unfillable == "expire"


def test_load_profile_from_file(tmp_path):
    path = tmp_path / "f.toml"
    path.write_text(FULL, encoding="utf-8")
    assert load_profile(path).orders.reject == 0.05


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[orders]\nreject = 1.5", "orders.reject: probability must be in [0, 1], got 1.5"),
        ("[ws]\ndrop = -0.1", "ws.drop: probability must be in [0, 1]"),
        ("[ws]\ndrop = true", "ws.drop: expected a number"),
        ("[ws]\nduplicate = nan", "ws.duplicate: must be finite"),
        ("[orders]\nrejectt = 0.1", "orders.rejectt: unknown key (did you mean 'reject'?)"),
        ("[ordrs]\nreject = 0.1", "ordrs: unknown section (did you mean 'orders'?)"),
        ("[nonsense]\nx = 1", "nonsense: unknown section (known: archive, market, orders,"),
        ("orders = 3", "orders: expected a table"),
        ("[ws]\ndelay_ms = [5, 1]", "ws.delay_ms: range must be [lo, hi] with 0 <= lo <= hi"),
        ("[rest]\nlatency_ms = [-1, 1]", "rest.latency_ms: range must be"),
        ("[rest]\nlatency_ms = 5", "rest.latency_ms: expected a range [lo, hi]"),
        ("[orders]\ncancel_delay_ms = [1, 2, 3]", "orders.cancel_delay_ms: expected a range"),
        (
            "[rest]\nrate_limit = [{ at_s = -1, for_s = 5 }]",
            "rest.rate_limit[0].at_s: must be >= 0",
        ),
        (
            "[rest]\nrate_limit = [{ at_s = 1, for_s = 5 }, { at_s = 1, for_s = -5 }]",
            "rest.rate_limit[1].for_s: must be >= 0",
        ),
        ("[venue]\ndown = [{ at_s = 1 }]", "venue.down[0]: missing for_s"),
        ("[venue]\ndown = [{ at_s = 1, for_s = 2, x = 3 }]", "venue.down[0].x: unknown key"),
        ("[venue]\ndown = { at_s = 1, for_s = 2 }", "venue.down: expected a list of tables"),
        ("[venue]\nposition_lag_ms = -5", "venue.position_lag_ms: must be >= 0"),
        ("[ws]\ndisconnect_mean_s = -1", "ws.disconnect_mean_s: must be >= 0"),
        ("[market]\nvolatility_bps_per_sqrt_s = -2", "market.volatility_bps_per_sqrt_s: must be"),
        (
            '[market]\njumps = [{ at_s = 1, bps = 5, product = "DOGE-PERP" }]',
            "market.jumps[0].product: unknown product 'DOGE-PERP'",
        ),
        (
            '[market]\njumps = [{ at_s = 1, bps = -10000, product = "ETH-PERP" }]',
            "market.jumps[0].bps: must be >= -9999",
        ),
        ("[market]\njumps = [{ at_s = 1, bps = 5 }]", "market.jumps[0]: missing product"),
        ('[market]\njumps = [{ at_s = "x", bps = 5 }]', "market.jumps[0].at_s: expected a number"),
        ("[sim]\ncorrelation = 1.5", "sim.correlation: must be <= 1"),
        ("[sim]\nbook_levels = 2.5", "sim.book_levels: expected an integer"),
        ("[sim]\nmarket_step_ms = 0", "sim.market_step_ms: must be > 0"),
        ('[sim]\nfok_unfillable = "maybe"', "sim.fok_unfillable: must be one of reject, expire"),
        ("[orders\nreject = 1", "invalid TOML"),
    ],
)
def test_bad_profiles_name_the_key(text, message):
    with pytest.raises(FaultProfileError) as info:
        parse_profile(text)
    assert message in str(info.value)


def test_load_profile_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[orders]\nreject = 2\n", encoding="utf-8")
    with pytest.raises(FaultProfileError, match=r"bad\.toml: orders\.reject: probability"):
        load_profile(path)
    with pytest.raises(FaultProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.toml")


def test_profile_error_is_a_value_error():
    assert issubclass(FaultProfileError, ValueError)


def test_range_draws_stay_in_range_and_windows_are_half_open():
    r = MsRange(lo=Decimal(1), hi=Decimal(2))
    rng = random.Random(1)
    draws = [r.draw_ns(rng) for _ in range(200)]
    assert min(draws) >= 1_000_000
    assert max(draws) <= 2_000_000
    assert len(set(draws)) > 100
    w = Window(at_s=Decimal(1), for_s=Decimal(1))
    assert not w.contains(999_999_999)
    assert w.contains(1_000_000_000)
    assert not w.contains(2_000_000_000)


def test_venue_foreign_fills_and_start_positions_parse_and_validate():
    from adapters.sim.faults import parse_profile

    p = parse_profile(
        """
[venue]
foreign_fills = [{ at_s = 1.5, product = "ETH-PERP", side = "buy", qty = 1.5 }]
start_positions = { "ETH-PERP" = 1000000 }
"""
    )
    (ff,) = p.venue.foreign_fills
    assert (ff.product, ff.side, ff.qty, ff.at_ns) == ("ETH-PERP", "buy", 1.5, 1_500_000_000)
    assert p.venue.start_positions == (("ETH-PERP", 1000000),)
    for bad in (
        '[venue]\nforeign_fills = [{ at_s = 1, product = "ETH-PERP", side = "hold", qty = 1 }]',
        '[venue]\nforeign_fills = [{ at_s = 1, product = "ETH-PERP", side = "buy" }]',
        '[venue]\nstart_positions = { "NOPE-PERP" = 1 }',
    ):
        with pytest.raises(FaultProfileError):
            parse_profile(bad)


def test_sim_start_positions_and_foreign_fills_reach_the_account():
    import asyncio

    from adapters.sim import SimVenue
    from engine.core.clock import VirtualClock
    from engine.core.events import FillReceived

    clock = VirtualClock()
    profile = parse_profile(
        """
[venue]
foreign_fills = [{ at_s = 1, product = "SOL-PERP", side = "sell", qty = 2 }]
start_positions = { "ETH-PERP" = 3 }
"""
    )
    venue = SimVenue(clock, 1, profile)
    got: list[object] = []
    asyncio.run(venue.start(got.append))
    assert venue.position("ETH-PERP") == 3
    clock.advance_to(2_000_000_000)
    assert venue.position("SOL-PERP") == -2
    fills = [e for e in got if isinstance(e, FillReceived)]
    assert [(f.product_id, f.side, f.qty) for f in fills] == [(8, "sell", 2)]
    assert fills[0].order_id.startswith("0x")  # no client id: an order the engine never placed


def test_market_skew_shifts_the_shown_quote_not_the_oracle():
    import asyncio

    from adapters.sim import SimVenue
    from engine.core.clock import VirtualClock
    from engine.core.events import BboUpdated

    clock = VirtualClock()
    profile = parse_profile(
        '[market]\nskew = [{ at_s = 1, for_s = 1, bps = -1900, product = "SOL-PERP" }]\n'
    )
    venue = SimVenue(clock, 1, profile)
    got: list[object] = []
    asyncio.run(venue.start(got.append))
    clock.advance_to(3_000_000_000)
    sol = [e for e in got if isinstance(e, BboUpdated) and e.product_id == 8]
    inside = [e for e in sol if 1_000_000_000 <= (e.ts_venue_ns or 0) < 2_000_000_000]
    outside = [e for e in sol if (e.ts_venue_ns or 0) >= 2_100_000_000]
    assert inside
    assert outside
    for e in inside:
        assert e.oracle_price is not None
        assert (e.bid + e.ask) / 2 < e.oracle_price * Decimal("0.82")
    for e in outside:
        assert e.oracle_price is not None
        assert abs((e.bid + e.ask) / 2 / e.oracle_price - 1) < Decimal("0.01")
    with pytest.raises(FaultProfileError):
        parse_profile('[market]\nskew = [{ at_s = 1, bps = 10, product = "SOL-PERP" }]\n')
