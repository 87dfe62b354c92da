"""Small fakes for engine tests: a scripted venue on the virtual clock."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from engine.core.clock import VirtualClock
from engine.core.events import FillReceived
from engine.core.events import OrderAccepted
from engine.core.events import OrderExpired
from engine.core.events import Position
from engine.core.events import PositionSnapshot
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryPositions
from engine.core.journal import Record
from engine.core.loop import Engine
from engine.core.timers import journaled_deadlines

MS = 1_000_000


def deadlines_armed(records: Iterable[Record]) -> list[tuple[str, dict[str, Any]]]:
    """(machine, {"name", "due_ns", "generation"}) for every deadline the journal says was
    armed, in order (transitions and spawn notes carry them, journal schema 4)."""
    out = []
    for r in records:
        changed = journaled_deadlines(r.kind, r.machine, r.data)
        if changed is not None:
            out.extend((changed.machine, dict(a)) for a in changed.armed)
    return out


def deadlines_disarmed(records: Iterable[Record]) -> list[tuple[str, str]]:
    """(machine, name) for every deadline the journal says was disarmed, in order."""
    out = []
    for r in records:
        changed = journaled_deadlines(r.kind, r.machine, r.data)
        if changed is not None:
            out.extend((changed.machine, n) for n in changed.disarmed)
    return out


class ScriptedVenue:
    """Fills every order in full after `fill_ms` (or never, if fill_ms is None)."""

    def __init__(
        self,
        engine: Engine,
        clock: VirtualClock,
        *,
        fill_ms: int | None = 50,
        ack_ms: int = 25,
        positions_ms: int = 50,
        duplicate_fills: bool = False,
    ) -> None:
        self.engine, self.clock = engine, clock
        self.fill_ms, self.ack_ms, self.positions_ms = fill_ms, ack_ms, positions_ms
        self.duplicate_fills = duplicate_fills
        self.positions: dict[int, Decimal] = {}
        self.sent: list[Intent] = []

    def send(self, intent: Intent) -> None:
        self.sent.append(intent)
        if isinstance(intent, PlaceOrder):
            self._later(self.ack_ms, OrderAccepted(order_id=intent.order_id, digest="0xd"))
            if self.fill_ms is None:
                return
            fill = FillReceived(
                order_id=intent.order_id,
                fill_id=f"f-{intent.order_id}",
                product_id=intent.product_id,
                side=intent.side,
                price=intent.price,
                qty=intent.qty,
                cumulative_qty=intent.qty,
                remaining_qty=0,
            )

            def apply() -> None:
                signed = intent.qty if intent.side == "buy" else -intent.qty
                self.positions[intent.product_id] = (
                    self.positions.get(intent.product_id, Decimal(0)) + signed
                )
                self.engine.submit(fill)
                if self.duplicate_fills:
                    self.engine.submit(fill)

            self.clock.call_later(self.fill_ms * MS, apply)
        elif isinstance(intent, QueryPositions):
            snap = PositionSnapshot(
                positions=[
                    Position(product_id=p, qty=self.positions.get(p, Decimal(0)))
                    for p in intent.product_ids
                ],
                request_id=intent.request_id,
            )
            self._later(self.positions_ms, snap)

    def expire(self, order_id: str) -> None:
        self.engine.submit(OrderExpired(order_id=order_id, filled_qty=0))

    def _later(self, ms: int, ev: object) -> None:
        self.clock.call_later(ms * MS, lambda: self.engine.submit(ev))  # type: ignore[arg-type]
