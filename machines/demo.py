"""PROBE: the smallest complete cycle, used to exercise the engine core.

Place one IOC order, wait for its fill under a deadline, then verify the position
with the venue under a second deadline. Success only on the venue's word.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.core.events import FillReceived
from engine.core.events import PositionSnapshot
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryPositions
from machines.base import PureMachine
from machines.base import State


class ProbeMachine(PureMachine):
    """Place → wait fill (deadline) → verify by position query (deadline) → verified | failed."""

    placing = State(initial=True)
    verifying = State()
    verified = State(final=True)
    failed = State(final=True)

    fill_received = placing.to(verifying, cond="order_filled")
    order_expired = placing.to(failed)
    order_rejected = placing.to(failed)
    position_snapshot = verifying.to(verified, cond="at_target") | verifying.to(failed)
    fill_timeout = placing.to(failed)
    verify_timeout = verifying.to(failed)

    def setup(self, **params: Any) -> None:
        self.product_id = int(params["product_id"])
        self.qty = Decimal(params["qty"])
        self.price = Decimal(params["price"])
        self.fill_timeout_s = Decimal(params.get("fill_timeout_s", "5"))
        self.verify_timeout_s = Decimal(params.get("verify_timeout_s", "2"))
        self.order_id = ""
        self.query_id = ""

    def on_enter_placing(self) -> None:
        self.order_id = self.next_id("o")
        self.emit(
            PlaceOrder(
                order_id=self.order_id,
                product_id=self.product_id,
                side="buy",
                qty=self.qty,
                price=self.price,
                tif="ioc",
                purpose="probe",
            )
        )
        self.arm("fill_timeout", self.fill_timeout_s)

    def order_filled(self, ev: FillReceived) -> bool:
        order = self.ledger.order(self.order_id)
        return order is not None and order.remaining <= 0

    def on_enter_verifying(self) -> None:
        self.query_id = self.next_id("q")
        self.emit(QueryPositions(request_id=self.query_id, product_ids=(self.product_id,)))
        self.arm("verify_timeout", self.verify_timeout_s)

    def at_target(self, ev: PositionSnapshot) -> bool:
        return self.ledger.venue_position(self.product_id) == self.qty
