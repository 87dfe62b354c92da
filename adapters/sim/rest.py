"""Requests and their answers, with the `[rest]` and `[venue]` faults (decided by the fault
plan, faultplan.py, shared with `venue serve`).

A request reaches the venue after `request_latency_ms` + `rest.latency_ms`; its answer
comes back after `response_latency_ms` + `rest.latency_ms`. An answer the client would
not get before `request_timeout_ms` (a `rest.timeout`, a cancel slower than the timeout,
the venue going down in between) becomes a VenueError at the timeout instead:
`unknown_outcome` for placements and cancels, `retryable` for queries.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Sequence
from decimal import Decimal
from functools import partial

import attrs

from adapters.sim.exchange import Exchange
from adapters.sim.faultplan import FaultPlan
from adapters.sim.faultplan import RequestFate
from adapters.sim.faults import NS_PER_MS
from adapters.sim.faults import FaultProfile
from adapters.sim.mapping import EFFECTFUL
from adapters.sim.mapping import client_order_id
from adapters.sim.mapping import ids
from adapters.sim.mapping import lost_answer
from adapters.sim.mapping import open_order
from adapters.sim.mapping import order_request
from adapters.sim.mapping import retry_after
from adapters.sim.records import ERRORS
from adapters.sim.scheduler import Scheduler
from engine.core.events import BboUpdated
from engine.core.events import Event
from engine.core.events import OpenOrdersSnapshot
from engine.core.events import OrderAccepted
from engine.core.events import OrderCancelled
from engine.core.events import OrderRejected
from engine.core.events import OrderStatus
from engine.core.events import Position
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import CancelOrder
from engine.core.intents import CancelProductOrders
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryMarketPrices
from engine.core.intents import QueryOpenOrders
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions

__all__ = ["RestFace"]

ZERO = Decimal(0)


@attrs.define
class _Request:
    intent: Intent
    sent_ns: int
    fate: RequestFate
    answered: bool = True  # False once its answer is known to be lost


class RestFace:
    def __init__(
        self,
        *,
        exchange: Exchange,
        profile: FaultProfile,
        plan: FaultPlan,
        subaccount: str,
        product_ids: Sequence[int],
        origin_ns: int,
        sched: Scheduler,
        emit: Callable[[Event], None],
        flush: Callable[[], None],
        history_limit: int,
    ) -> None:
        self.exchange, self.profile, self.sched, self.emit = exchange, profile, sched, emit
        self.flush = flush
        self.subaccount = subaccount
        self._pids = tuple(product_ids)
        self._origin = origin_ns
        sim = profile.sim
        self._req_ns = int(sim.request_latency_ms * NS_PER_MS)
        self._resp_ns = int(sim.response_latency_ms * NS_PER_MS)
        self._timeout_ns = int(sim.request_timeout_ms * NS_PER_MS)
        self.plan = plan
        self._rejected: OrderedDict[str, int | None] = OrderedDict()
        self._history_limit = history_limit
        self.stats = dict.fromkeys(
            ("requests", "timeouts", "lost_answers", "rate_limited", "refused"), 0
        )

    def submit(self, intent: Intent) -> None:
        self.stats["requests"] += 1
        fate = self.plan.request(effectful=isinstance(intent, EFFECTFUL))
        req = _Request(intent, self.sched.now(), fate)
        arrives = True
        if fate.lost:
            self.stats["timeouts"] += 1
            # Half of the lost placements (and cancels) reach the venue before the answer dies.
            arrives = fate.applied
            self._give_up(req)
        if arrives:
            self.sched.later(self._req_ns + fate.in_ns, partial(self._arrive, req))

    # -- at the venue ---------------------------------------------------------------------
    def _arrive(self, req: _Request) -> None:
        now = self.sched.now()
        t = now - self._origin
        down = limited = None
        if self.plan.windows:  # (`rest.rate_limit` or `venue.down` windows to look up)
            down, limited = self.plan.down(t), self.plan.rate_limited(t)
        if down is not None:
            self.stats["refused"] += 1
            self._answer(req, self._error(req, "retryable", "venue unreachable"))
        elif limited is not None:
            self.stats["rate_limited"] += 1
            code, text = ERRORS["rate_limited"]
            wait = retry_after(limited.end_ns - t)
            self._answer(req, self._error(req, "rate_limited", text, code=code, wait=wait))
        else:
            self.exchange.advance_to(now)
            self.flush()
            self._handle(req)
            self.flush()

    def _handle(self, req: _Request) -> None:
        intent = req.intent
        if isinstance(intent, PlaceOrder):
            self._place(req, intent)
        elif isinstance(intent, CancelOrder | CancelProductOrders):
            delay = self.exchange.cancel_delay_ns()
            if self.sched.now() + delay + self._resp_ns > req.sent_ns + self._timeout_ns:
                self._give_up(req)
            if delay:
                self.sched.later(delay, lambda: self._cancel(req))
            else:
                self._cancel(req)
        elif isinstance(intent, QueryPositions):
            pids = intent.product_ids or self._pids
            positions = [self._position_view(pid) for pid in pids]
            self._answer(req, PositionSnapshot(positions=positions, request_id=intent.request_id))
        elif isinstance(intent, QueryOrder):
            self._answer(req, self._order_status(intent))
        elif isinstance(intent, QueryOpenOrders):
            orders = self.exchange.open_orders(self.subaccount, intent.product_ids)
            snapshot = OpenOrdersSnapshot(
                orders=[open_order(o) for o in orders],
                product_ids=intent.product_ids,
                request_id=intent.request_id,
            )
            self._answer(req, snapshot)
        elif isinstance(intent, QueryMarketPrices):
            # Nado's `market_price(s)`: top of book now, without a venue stamp.
            for pid in intent.product_ids or self._pids:
                if pid in self.exchange.specs:
                    b = self.exchange.bbo(pid)
                    # Stamped with the oracle (the fair mid), as the Nado adapter stamps
                    # its REST quotes from `all_products`.
                    quote = BboUpdated(
                        product_id=pid,
                        bid=b.bid,
                        bid_qty=ZERO,
                        ask=b.ask,
                        ask_qty=ZERO,
                        oracle_price=self.exchange.mid(pid),
                    )
                    self._answer(req, quote)

    def _place(self, req: _Request, intent: PlaceOrder) -> None:
        result = self.exchange.place(self.sched.now(), order_request(self.subaccount, intent))
        if result.ok:
            self._answer(req, OrderAccepted(order_id=intent.order_id, digest=result.digest))
            return
        self._rejected[intent.order_id] = result.code
        while len(self._rejected) > self._history_limit:
            self._rejected.popitem(last=False)
        ev = OrderRejected(order_id=intent.order_id, reason=result.error, code=result.code)
        self._answer(req, ev)

    def _cancel(self, req: _Request) -> None:
        now = self.sched.now()
        self.exchange.advance_to(now)
        self.flush()  # fills that beat the cancel go out first
        intent = req.intent
        if isinstance(intent, CancelProductOrders):
            for o in self.exchange.cancel_products(now, self.subaccount, intent.product_ids):
                oid = client_order_id(o)
                done = OrderCancelled(order_id=oid, filled_qty=o.filled, reason="product cancel")
                self._answer(req, done)
        elif isinstance(intent, CancelOrder):
            order = self.exchange.order(intent.digest) if intent.digest else None
            order = order or self.exchange.find(self.subaccount, intent.order_id)
            gone = self.exchange.cancel(now, self.subaccount, [order.digest]) if order else []
            if gone:
                ev: Event = OrderCancelled(
                    order_id=intent.order_id, filled_qty=gone[0].filled, reason="cancelled"
                )
            else:
                code, _ = ERRORS["not_found"]
                state = order.state if order else "unknown"
                ev = self._error(req, "permanent", f"order not open ({state})", code=code)
            self._answer(req, ev)
        self.flush()

    def _order_status(self, intent: QueryOrder) -> OrderStatus:
        order = self.exchange.find(self.subaccount, intent.order_id)
        state, filled, remaining = "not_found", ZERO, ZERO
        if order is not None:
            state, filled = order.state, order.filled
            remaining = order.remaining if order.state == "open" else ZERO
        elif intent.order_id in self._rejected:
            state = "rejected"
        return OrderStatus(
            order_id=intent.order_id,
            state=state,
            filled_qty=filled,
            remaining_qty=remaining,
            request_id=intent.request_id,
        )

    def _position_view(self, pid: int) -> Position:
        if pid not in self.exchange.specs:
            return Position(product_id=pid, qty=ZERO)
        qty, entry = self.exchange.position_view(self.subaccount, pid)
        return Position(product_id=pid, qty=qty, entry_price=entry if qty else None)

    # -- answers --------------------------------------------------------------------------
    def _answer(self, req: _Request, ev: Event) -> None:
        if not req.answered:
            self.stats["lost_answers"] += 1
            return
        now = self.sched.now()
        due = now + self._resp_ns + req.fate.out_ns
        dies = self.plan.goes_down_between(now - self._origin, due - self._origin)
        if dies or due > req.sent_ns + self._timeout_ns:
            self.stats["lost_answers"] += 1
            self._give_up(req)
            return
        self.sched.later(due - now, partial(self.emit, ev))

    def _give_up(self, req: _Request) -> None:
        """The client hears nothing: at its timeout it reports the request as lost."""
        if not req.answered:
            return
        req.answered = False
        ev = lost_answer(req.intent, Decimal(self._timeout_ns) / 1_000_000_000)
        self.sched.at(max(self.sched.now(), req.sent_ns + self._timeout_ns), lambda: self.emit(ev))

    def _error(
        self,
        req: _Request,
        error_class: str,
        message: str,
        *,
        code: int | None = None,
        wait: Decimal | None = None,
    ) -> VenueError:
        order_id, request_id = ids(req.intent)
        return VenueError(
            error_class=error_class,
            request=req.intent.kind,
            message=message,
            order_id=order_id,
            request_id=request_id,
            code=code,
            retry_after_s=wait,
        )
