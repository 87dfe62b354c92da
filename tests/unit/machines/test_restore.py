from __future__ import annotations

from decimal import Decimal

from engine.core.clock import VirtualClock
from engine.core.events import FillReceived
from engine.core.events import OpenOrder
from engine.core.events import OpenOrdersSnapshot
from engine.core.events import OrderCancelled
from engine.core.events import Position
from engine.core.events import PositionSnapshot
from engine.core.intents import CancelOrder
from engine.core.intents import CancelProductOrders
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOpenOrders
from engine.core.intents import QueryPositions
from engine.core.loop import Engine
from engine.runtime.runner import run_virtual
from machines.params import CycleParams
from machines.params import LegSpec
from machines.restore import RestoreMachine

MS = 1_000_000
ETH = LegSpec(symbol="ETH-PERP", product_id=4, tick_size="0.1", size_increment="0.001")
SOL = LegSpec(symbol="SOL-PERP", product_id=8, tick_size="0.01", size_increment="0.01")
PARAMS = CycleParams(cycle=0, long=ETH, short=SOL, notional_usd="100", verify_timeout_s="2")


class BookKeeper:
    """A venue that knows positions and resting orders and answers queries after 20 ms."""

    def __init__(self, engine, clock, positions=None, orders=None, silent=False):
        self.engine, self.clock = engine, clock
        self.positions = dict(positions or {})
        self.orders = list(orders or [])
        self.silent = silent
        self.sent = []
        self.hooks = []

    def later(self, ev, ms=20):
        self.clock.call_later(ms * MS, lambda: self.engine.submit(ev))

    def send(self, intent):
        self.sent.append(intent)
        for hook in self.hooks:
            hook(intent)
        if self.silent:
            return
        if isinstance(intent, QueryPositions):
            snap = [
                Position(product_id=p, qty=self.positions.get(p, 0)) for p in intent.product_ids
            ]
            self.later(PositionSnapshot(positions=snap, request_id=intent.request_id))
        elif isinstance(intent, QueryOpenOrders):
            live = [o for o in self.orders if o.product_id in intent.product_ids]
            self.later(
                OpenOrdersSnapshot(
                    orders=live, product_ids=intent.product_ids, request_id=intent.request_id
                )
            )
        elif isinstance(intent, CancelOrder):
            self.orders = [o for o in self.orders if o.order_id != intent.order_id]
            self.later(OrderCancelled(order_id=intent.order_id), ms=5)
        elif isinstance(intent, CancelProductOrders):
            self.orders = [o for o in self.orders if o.product_id not in intent.product_ids]


def restore(**venue):
    clock = VirtualClock()
    engine = Engine(clock)
    fake = BookKeeper(engine, clock, **venue)
    machine = engine.spawn(RestoreMachine, "restore", params=PARAMS)
    first = engine._finish_step()
    run_virtual(engine, clock, fake.send, initial=first, until=lambda: "restore" in engine.finished)
    return engine, fake, machine


def test_restore_flat_and_no_orders_is_synced():
    engine, fake, _ = restore()
    assert engine.finished == {"restore": "synced"}
    assert [type(i) for i in fake.sent] == [QueryPositions, QueryOpenOrders]


def test_restore_cancels_orphan_orders_on_both_products_then_syncs():
    orphan_eth = OpenOrder(
        order_id="old:1", product_id=4, side="buy", price="2900", qty="0.1", remaining_qty="0.1"
    )
    orphan_sol = OpenOrder(
        order_id="old:2", product_id=8, side="sell", price="160", qty="1", remaining_qty="1"
    )
    other = OpenOrder(order_id="x", product_id=2, side="buy", price="1", qty="1", remaining_qty="1")
    engine, fake, _ = restore(orders=[orphan_eth, orphan_sol, other])
    assert engine.finished == {"restore": "synced"}
    cancelled = {i.order_id for i in fake.sent if isinstance(i, CancelOrder)}
    assert cancelled == {"old:1", "old:2"}  # not the foreign product's order
    assert any(isinstance(i, CancelProductOrders) for i in fake.sent)


def test_restore_with_residual_position_is_exposed_and_adopts_the_venue_position():
    engine, _, _ = restore(positions={4: Decimal("0.25")})
    assert engine.finished == {"restore": "exposed"}
    assert engine.ledger.position(4) == Decimal("0.25")  # ledger rebuilt from the venue


def test_restore_never_reads_silence_as_flat():
    engine, _fake, machine = restore(silent=True)
    assert engine.finished == {"restore": "failed"}
    assert machine.queries == machine.max_queries
    # every attempt waited its full deadline: bounded, never assumed flat
    assert engine.clock.now_ns() == machine.max_queries * 2_000 * MS


def test_fill_arriving_during_restore_is_counted_not_dropped():
    # Seed 003: a position change lands while the snapshot is being taken.
    clock = VirtualClock()
    engine = Engine(clock)
    fake = BookKeeper(engine, clock, positions={8: Decimal("-2")})

    def close_during_snapshot(intent):
        if isinstance(intent, QueryPositions):
            fake.positions[8] = Decimal(0)  # venue already flat when it answers...
            fill = FillReceived(
                order_id="prev:9", fill_id="F9", product_id=8, side="buy", price="150", qty="2"
            )
            clock.call_later(40 * MS, lambda: engine.submit(fill))  # ...fill pushed later

    fake.hooks.append(close_during_snapshot)
    engine.spawn(RestoreMachine, "restore", params=PARAMS)
    run_virtual(engine, clock, fake.send, initial=engine._finish_step())
    assert engine.finished == {"restore": "synced"}
    fills = [r for r in engine.journal.records() if r.kind == "event" and "F9" in r.payload]
    assert len(fills) == 1
    assert engine.ledger.unknown_fills[0].fill_id == "F9"


def test_restore_mid_session_waits_for_a_read_that_lags_the_fills_before_adopting_it():
    # Issue 11: a resume right after a fill the engine heard of; the venue's reads show it
    # only 3 s later. The lagging 0 is asked again, never adopted over the fill.
    clock = VirtualClock()
    engine = Engine(clock)
    fake = BookKeeper(engine, clock)
    engine.ledger.apply_intent(
        PlaceOrder(
            order_id="o1", product_id=4, side="buy", qty=Decimal("0.25"), price=3000, tif="ioc"
        )
    )
    engine.process(
        FillReceived(
            order_id="o1", fill_id="f1", product_id=4, side="buy", price="3000", qty="0.25"
        )
    )
    clock.call_later(3_000 * MS, lambda: fake.positions.update({4: Decimal("0.25")}))
    engine.spawn(RestoreMachine, "restore", params=PARAMS)
    first = engine._finish_step()
    run_virtual(engine, clock, fake.send, initial=first, until=lambda: "restore" in engine.finished)
    assert engine.finished["restore"] == "exposed"
    assert engine.ledger.position(4) == Decimal("0.25")  # never adopted the lagging 0
    asked = [i for i in fake.sent if isinstance(i, QueryPositions)]
    assert len(asked) >= 3
