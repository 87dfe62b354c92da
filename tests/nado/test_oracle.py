"""The oracle price on the Nado adapter's quotes (issue 11 item 4, RELIABILITY D5), on the
virtual clock.

Nado's quote sources carry no oracle; `all_products` does (`oracle_price_x18`,
nado-protocol.md §6.1). The adapter reads it at start-up and every `oracle_refresh_s`, and
stamps it on every quote it emits while it is younger than `oracle_max_age_s`. Then BUILD,
driven by the adapter's own events, refuses a skewed quote with the `price_band` alert and
sends nothing, and refuses a quote whose oracle went stale.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest

from engine.core.events import BboUpdated
from engine.core.events import Event
from engine.core.events import Position
from engine.core.events import PositionSnapshot
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import SendAlert
from engine.core.loop import Engine
from machines.position_work import PositionWork
from tests.nado.offline import ETH
from tests.nado.offline import SOL
from tests.nado.offline import OfflineVenue
from tests.nado.offline import S
from tests.nado.offline import bbo_frame
from tests.unit.machines.fakes import params

pytestmark = pytest.mark.asyncio

D = Decimal
PAIR = ("ETH-PERP", "SOL-PERP")


def quotes(rig: OfflineVenue, pid: int = ETH) -> list[tuple[int, BboUpdated]]:
    return [(t, e) for t, e in rig.events if isinstance(e, BboUpdated) and e.product_id == pid]


async def push(rig: OfflineVenue, bid: str, ask: str, pid: int = ETH) -> BboUpdated:
    await rig.frame(bbo_frame(bid, ask, ts_ns=rig.unix_ns(), pid=pid))
    return quotes(rig, pid)[-1][1]


# -- stamping ----------------------------------------------------------------------------------
async def test_pushed_and_rest_quotes_carry_the_oracle_read_at_start_up() -> None:
    rig = OfflineVenue(quiet_quote_s=D(1))
    rig.gateway.oracles = {ETH: D("3001.5")}
    await rig.start()
    pushed = await push(rig, "3000", "3000.5")
    assert pushed.oracle_price == D("3001.5")
    await rig.run(3_000)  # a quiet book: REST confirms the quote
    rest = [e for _, e in quotes(rig) if e.ts_venue_ns is None]
    assert rest
    assert all(e.oracle_price == D("3001.5") for e in rest)
    await rig.close()


async def test_the_oracle_is_read_again_every_refresh_period_and_stamped_from_then_on() -> None:
    rig = OfflineVenue(oracle_refresh_s=D(5))
    rig.gateway.oracles = {ETH: D(3000)}
    await rig.start()
    await rig.run(4_000)
    rig.gateway.oracles = {ETH: D(3100)}
    assert (await push(rig, "3000", "3000.5")).oracle_price == D(3000)  # not read yet
    await rig.run(1_100)  # the 5 s read and its answer (one 50 ms round trip)
    assert (await push(rig, "3000.1", "3000.6")).oracle_price == D(3100)
    await rig.run(60_000)
    asked = rig.gateway.sent("all_products")
    assert len(asked) == 13  # at 5, 10, ... 65 s: a bounded rate (5 weight each)
    assert all(b - a == 5 * S for a, b in itertools.pairwise(asked))
    await rig.close()


async def test_an_oracle_older_than_its_bound_is_not_stamped_until_read_again() -> None:
    rig = OfflineVenue(oracle_refresh_s=D(5), oracle_max_age_s=D(15))
    rig.gateway.oracles = {ETH: D(3000)}
    await rig.start()
    rig.gateway.oracles_fail = True  # every later read fails
    await rig.run(14_900)
    assert (await push(rig, "3000", "3000.5")).oracle_price == D(3000)  # 14.9 s old
    await rig.run(200)
    assert (await push(rig, "3000.1", "3000.6")).oracle_price is None  # 15.1 s: too old
    assert rig.venue.stats["oracle_refresh_failed.connect_error"] == 3
    rig.gateway.oracles_fail = False
    rig.gateway.oracles = {ETH: D(3002)}
    await rig.run(5_000)  # the next read answers
    assert (await push(rig, "3000.2", "3000.7")).oracle_price == D(3002)
    await rig.close()


async def test_a_zero_oracle_is_no_oracle() -> None:
    rig = OfflineVenue()
    rig.gateway.oracles = {ETH: D(0)}
    await rig.start()
    assert (await push(rig, "3000", "3000.5")).oracle_price is None
    await rig.close()


# -- BUILD over the adapter ----------------------------------------------------------------------
class Driven:
    """An Engine fed by the offline adapter's events, its intents sent back to the adapter
    (alerts kept), as `dnpair run` wires them; all on the rig's virtual clock."""

    def __init__(self, rig: OfflineVenue) -> None:
        self.rig = rig
        self.engine = Engine(rig.clock)
        self.intents: list[Intent] = []
        rig.venue.core.sink = self._sink

    def _sink(self, ev: Event) -> None:
        self.rig._sink(ev)
        self.engine.submit(ev)

    def route(self, intents: list[Intent]) -> None:
        for intent in intents:
            self.intents.append(intent)
            if not isinstance(intent, SendAlert):
                self.rig.venue.submit(intent)

    async def build(self, within_ms: int = 10_000) -> str:
        """BUILD from flat (the session's position read first), run until it ends."""
        self.route(self.engine.drain())
        flat = [Position(product_id=p, qty=D(0)) for p in (ETH, SOL)]
        self.engine.process(PositionSnapshot(positions=flat, request_id="session:q"))
        self.engine.spawn(PositionWork, "m", params=params(), purpose="build")
        self.route(self.engine._finish_step())
        for _ in range(within_ms // 10):
            if "m" in self.engine.finished:
                break
            await self.rig.run(10)
            self.route(self.engine.drain())
        return self.engine.finished.get("m", "running")

    def of(self, cls: type[Intent]) -> list[Any]:
        return [i for i in self.intents if isinstance(i, cls)]


async def _pair_rig(sol_oracle: Decimal, **settings: Any) -> tuple[OfflineVenue, Driven]:
    rig = OfflineVenue(pair=PAIR, **settings)
    rig.gateway.quotes = {ETH: (D(3000), D("3000.5")), SOL: (D(150), D("150.02"))}
    rig.gateway.oracles = {ETH: D("3000.25"), SOL: sol_oracle}
    await rig.start(symbols=(ETH, SOL))
    driven = Driven(rig)
    await push(rig, "3000", "3000.5", ETH)
    await push(rig, "150", "150.02", SOL)
    driven.route(driven.engine.drain())
    return rig, driven


async def test_build_refuses_a_skewed_quote_on_nado_with_the_band_alert_and_sends_nothing() -> None:
    # SOL shows 150 while Nado's oracle says 185 (-19 %, inside Nado's own 2007 band).
    rig, driven = await _pair_rig(D(185))
    assert quotes(rig, SOL)[-1][1].oracle_price == D(185)
    assert await driven.build() == "aborted"
    assert not driven.of(PlaceOrder)
    assert rig.gateway.sent("place_order") == []
    (alert,) = [a for a in driven.of(SendAlert) if a.event == "price_band"]
    assert "SOL-PERP" in alert.message
    await rig.close()


async def test_build_trades_on_nado_when_the_quotes_agree_with_the_oracle() -> None:
    rig, driven = await _pair_rig(D("150.01"))
    await driven.build(within_ms=200)
    placed = driven.of(PlaceOrder)
    assert {i.product_id for i in placed} == {ETH, SOL}
    assert not [a for a in driven.of(SendAlert) if a.event == "price_band"]
    await rig.close()


async def test_build_refuses_a_quote_whose_oracle_went_stale() -> None:
    rig, driven = await _pair_rig(D("150.01"), oracle_max_age_s=D(15))
    rig.gateway.oracles_fail = True
    await rig.run(15_100)
    driven.route(driven.engine.drain())
    await push(rig, "3000", "3000.5", ETH)  # fresh quotes, no oracle stamped on them
    await push(rig, "150", "150.02", SOL)
    assert quotes(rig, SOL)[-1][1].oracle_price is None
    assert await driven.build() == "aborted"
    assert not driven.of(PlaceOrder)
    (alert,) = [a for a in driven.of(SendAlert) if a.event == "price_band"]
    assert "no current oracle price" in alert.message
    await rig.close()
