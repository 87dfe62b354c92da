"""RESTORE (sync): believe nothing about the venue until it has answered.

Runs at start, after a reconnect audit that disagrees with the ledger, and on
operator request, while the session keeps the submission gate closed (it spawns no
trading machine until this one finishes). Events that arrive meanwhile reach the
ledger at once and never a trading machine, so none is dropped.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.core import flatness
from engine.core.events import DeadlineExpired
from engine.core.events import OpenOrdersSnapshot
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import AdoptVenuePositions
from engine.core.intents import CancelOrder
from engine.core.intents import CancelProductOrders
from engine.core.intents import QueryOpenOrders
from engine.core.intents import QueryPositions
from machines.base import PureMachine
from machines.base import State
from machines.params import CycleParams
from machines.pricing import read_lags_fills


class RestoreMachine(PureMachine):
    """Read positions and open orders, cancel orphans, adopt venue positions.

    Ends synced (flat, no orphans), exposed (a residual position: the session runs the
    emergency exit) or failed (the venue never answered within the query budget).
    """

    reading_positions = State(initial=True)
    reading_orders = State()
    cancelling = State()
    synced = State(final=True)
    exposed = State(final=True)
    failed = State(final=True)

    # `answers_me`: restore re-asks (a lagging read, a timed-out query, the re-read after
    # cancelling orphans), so only the answer to its latest question decides.
    position_snapshot = (
        # A read lacking fills this engine heard of (a resume or audit mid-session) lags:
        # it is asked again within the lag budget before it is adopted (issue 11).
        reading_positions.to(None, cond=["answers_me", "read_lags"], on="ask_later")
        | reading_positions.to(reading_orders, cond="answers_me")
    )
    open_orders_snapshot = (
        reading_orders.to(cancelling, cond=["answers_me", "has_orphans"])
        | reading_orders.to(exposed, cond=["answers_me", "has_residual"])
        | reading_orders.to(synced, cond="answers_me")
        | cancelling.to(exposed, cond=["answers_me", "no_orphans", "has_residual"])
        | cancelling.to(synced, cond=["answers_me", "no_orphans"])
        | cancelling.to(None, cond=["answers_me", "can_retry"], on="cancel_again")
        | cancelling.to(failed, cond="answers_me")
    )
    # A failed or missing report is never "flat": retry within a count, then fail.
    venue_error = (
        reading_positions.to(None, cond=["answers_me", "can_retry"], on="ask_again")
        | reading_orders.to(None, cond=["answers_me", "can_retry"], on="ask_again")
        | cancelling.to(None, cond=["answers_me", "can_retry"], on="ask_again")
        | reading_positions.to(failed, cond="answers_me")
        | reading_orders.to(failed, cond="answers_me")
        | cancelling.to(failed, cond="answers_me")
    )
    recheck_due = reading_positions.to(None, on="ask_recheck")
    answer_timeout = (
        reading_positions.to(None, cond="can_retry", on="ask_again")
        | reading_orders.to(None, cond="can_retry", on="ask_again")
        | cancelling.to(None, cond="can_retry", on="ask_again")
        | reading_positions.to(failed)
        | reading_orders.to(failed)
        | cancelling.to(failed)
    )

    def setup(self, **params: Any) -> None:
        self.p: CycleParams = params["params"]
        self.max_queries = int(params.get("max_queries", 6))
        self.queries = 0
        self.request_id = ""
        self.orphans: list[str] = []
        self.lag_since: int | None = None
        self.lag_asks = 0

    # -- guards -------------------------------------------------------------------------
    def answers_me(self, ev: PositionSnapshot | OpenOrdersSnapshot | VenueError) -> bool:
        return ev.request_id == self.request_id

    def can_retry(self, ev: DeadlineExpired | VenueError) -> bool:
        return self.queries < self.max_queries

    def read_lags(self, ev: PositionSnapshot) -> bool:
        budget = self.p.position_lag_budget_s
        waited = Decimal(self.ledger.now_ns - (self.lag_since or self.ledger.now_ns)) / 10**9
        if waited >= budget:
            return False
        return read_lags_fills(self.ledger, self.p.legs, ev, budget)

    def has_orphans(self, ev: OpenOrdersSnapshot) -> bool:
        return bool(self._pair_orders(ev))

    def no_orphans(self, ev: OpenOrdersSnapshot) -> bool:
        return not self._pair_orders(ev)

    def has_residual(self, ev: OpenOrdersSnapshot) -> bool:
        return bool(self.residuals())

    # -- actions ------------------------------------------------------------------------
    def on_enter_reading_positions(self) -> None:
        self._query_positions()

    def on_enter_reading_orders(self) -> None:
        self.emit(AdoptVenuePositions(product_ids=self.p.product_ids))
        self._query_orders()

    def on_enter_cancelling(self, ev: OpenOrdersSnapshot) -> None:
        self._cancel(ev)

    def cancel_again(self, ev: OpenOrdersSnapshot) -> None:
        self._cancel(ev)

    def on_enter_exposed(self) -> None:
        self.note("residual exposure at restore", positions=self.residuals())

    def ask_later(self) -> None:
        if self.lag_since is None:
            self.lag_since = self.ledger.now_ns
            self.note("position read lags the reported fills: asking again before adopting")
        self.lag_asks += 1
        p = self.p
        delay = min(p.verify_retry_s * 2 ** min(self.lag_asks - 1, 16), p.verify_timeout_s)
        self.disarm("answer_timeout")
        self.arm("recheck_due", delay)

    def ask_recheck(self) -> None:
        self.queries -= 1  # a lagging answer was an answer: not a failed query
        self._query_positions()

    def ask_again(self) -> None:
        if self.current_state_value == "reading_positions":
            self._query_positions()
        else:
            self._query_orders()

    # -- helpers ------------------------------------------------------------------------
    def residuals(self) -> dict[str, str]:
        out = {}
        for leg in self.p.legs:
            pos = self.ledger.venue_position(leg.product_id) or Decimal(0)
            mid = flatness.mid_of(self.ledger.quote(leg.product_id))
            # Anything of one size increment or more counts when no price is known yet.
            if not flatness.is_dust(pos, mid, self.p.dust_usd, leg.size_increment):
                out[leg.symbol] = str(pos)
        return out

    def _pair_orders(self, ev: OpenOrdersSnapshot) -> list[Any]:
        return [o for o in ev.orders if o.product_id in self.p.product_ids]

    def _cancel(self, ev: OpenOrdersSnapshot) -> None:
        orders = self._pair_orders(ev)
        self.note("cancelling orphan orders", orders=[o.order_id for o in orders])
        for o in orders:
            self.emit(CancelOrder(order_id=o.order_id, product_id=o.product_id, digest=o.digest))
        # Belt and braces: also cancel by product, which catches orders we cannot name.
        self.emit(CancelProductOrders(request_id=self.next_id("c"), product_ids=self.p.product_ids))
        self._query_orders()

    def _query_positions(self) -> None:
        self.queries += 1
        self.request_id = self.next_id("q")
        self.emit(QueryPositions(request_id=self.request_id, product_ids=self.p.product_ids))
        self.arm("answer_timeout", self.p.verify_timeout_s)

    def _query_orders(self) -> None:
        self.queries += 1
        self.request_id = self.next_id("q")
        self.emit(QueryOpenOrders(request_id=self.request_id, product_ids=self.p.product_ids))
        self.arm("answer_timeout", self.p.verify_timeout_s)
