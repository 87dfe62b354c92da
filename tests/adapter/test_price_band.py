"""The price band over real sockets (issue 11 item 4, RELIABILITY D5): a `VenueServer`
whose `best_bid_offer` pushes for SOL sit 19 % below its book (`market.skew`) while its
`all_products` oracle stays at the fair mid, the Nado adapter stamping that oracle on its
quotes, and BUILD on an Engine fed by them: refused with the `price_band` alert, nothing
placed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.core.events import BboUpdated
from engine.core.events import Position
from engine.core.events import PositionSnapshot
from engine.core.intents import PlaceOrder
from engine.core.intents import SendAlert
from machines.position_work import PositionWork
from tests.adapter.memory import engine_rig
from tests.adapter.memory import serving
from tests.adapter.support import ETH
from tests.adapter.support import SOL
from tests.adapter.support import EngineRig
from tests.unit.machines.fakes import params

pytestmark = pytest.mark.asyncio

D = Decimal
SKEWED = """
[market]
skew = [{ at_s = 0, for_s = 600, bps = -1900, product = "SOL-PERP" }]
"""


def stamped(r: EngineRig, pid: int) -> list[BboUpdated]:
    return [
        e
        for e in r.of(BboUpdated)
        if e.product_id == pid and e.oracle_price is not None and e.ts_venue_ns is not None
    ]


def alerts(r: EngineRig) -> list[Any]:
    return [i for i in r.intents if isinstance(i, SendAlert) and i.event == "price_band"]


async def test_build_refuses_a_skewed_quote_over_venue_serve_with_the_band_alert() -> None:
    async with serving(SKEWED, seed=3) as server, engine_rig(server) as r:
        await r.until(lambda: bool(stamped(r, ETH)) and bool(stamped(r, SOL)))
        eth, sol = stamped(r, ETH)[-1], stamped(r, SOL)[-1]
        assert sol.oracle_price is not None
        assert eth.oracle_price is not None
        # The oracle is the venue's fair mid; the pushed SOL quote is 19 % below it.
        fair = server.exchange.mid(SOL)
        assert abs(sol.oracle_price / fair - 1) < D("0.01")
        assert (sol.bid + sol.ask) / 2 / sol.oracle_price < D("0.83")
        assert abs((eth.bid + eth.ask) / 2 / eth.oracle_price - 1) < D("0.01")

        flat = [Position(product_id=p, qty=D(0)) for p in (ETH, SOL)]
        r.engine.process(PositionSnapshot(positions=flat, request_id="session:q"))
        r.engine.spawn(PositionWork, "m", params=params(), purpose="build")
        for intent in r.engine._finish_step():
            r.send(intent)
        await r.until(lambda: "m" in r.engine.finished)
        assert r.engine.finished["m"] == "aborted"
        assert not [i for i in r.intents if isinstance(i, PlaceOrder)]
        assert server.exchange.open_orders(r.sender, [ETH, SOL]) == []
        (alert,) = alerts(r)
        assert "SOL-PERP" in alert.message
        assert "oracle" in alert.message
