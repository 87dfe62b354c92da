"""Request budgets per Nado's weights, with a priority lane (nado-protocol.md §8).

Budgets: `execute` (per wallet: 600 weight/min and 100/10 s) and `query` (per IP:
2400/min and 400/10 s), each held to `safety` (90 %) of the published limit. A
budget is a token bucket whose spent tokens come back exactly one window later, so
no sliding window ever carries more than its limit (a classic refilling bucket
can let through twice its capacity in one window).

Priorities: RISK (cancels, reduce-only places, position and order queries) is served
before NORMAL; NORMAL may not use the last 10 % of a window; READ (market data,
polls) never queues: it is shed at once when it would dip into the last 30 %, when
anything else is waiting, or while the budget is paused. After a 429 / error 1000 the
budget pauses for max(Retry-After, exponential backoff with jitter); RISK goes first
when it resumes.

Time comes from an injected clock (`now_ns()`), jitter from an injected
`random.Random`, and waiting from an injected `sleep(ns)` coroutine, so tests run on
virtual time without sleeping. `request`/`pump` are synchronous; `acquire` is the
asyncio face.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections import deque
from collections.abc import Awaitable
from collections.abc import Callable
from decimal import ROUND_CEILING
from decimal import ROUND_FLOOR
from decimal import Decimal
from enum import IntEnum
from typing import Literal
from typing import Protocol

import attrs

from engine.core.intents import RISK_REDUCING
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder

__all__ = [
    "LimiterConfig",
    "NowNs",
    "Priority",
    "RateLimiter",
    "Shed",
    "Ticket",
    "Window",
    "execute_weight",
    "priority_for",
    "query_weight",
]

S = 1_000_000_000
Budget = Literal["execute", "query"]
BUDGETS: tuple[Budget, ...] = ("execute", "query")


class NowNs(Protocol):
    def now_ns(self) -> int: ...


class Priority(IntEnum):
    RISK = 0
    NORMAL = 1
    READ = 2


def priority_for(intent: Intent) -> Priority:
    """Cancels, reduce-only places and position/order queries ride the risk lane."""
    if intent.kind in RISK_REDUCING:
        return Priority.RISK
    if isinstance(intent, PlaceOrder) and intent.reduce_only:
        return Priority.RISK
    return Priority.NORMAL


_QUERY_WEIGHTS = {
    "status": 1,
    "contracts": 1,
    "order": 1,
    "market_liquidity": 1,
    "market_price": 1,
    "symbols": 2,
    "nonces": 2,
    "fee_rates": 2,
    "health_groups": 2,
    "insurance": 2,
    "subaccount_orders": 2,
    "all_products": 5,
    "max_order_size": 5,
    "linked_signer": 5,
    "isolated_positions": 10,
}


def query_weight(
    query_type: str, *, n_products: int = 1, txns: bool = False, pre_state: bool = False
) -> int:
    """IP weight of one gateway query (§8); unknown types are charged 10 to be safe."""
    if query_type == "market_prices":
        return max(1, n_products)
    if query_type == "orders":
        return 2 * max(1, n_products)
    if query_type == "subaccount_info":
        return 15 if pre_state else 10 if txns else 2
    return _QUERY_WEIGHTS.get(query_type, 10)


def execute_weight(
    execute_type: str, *, n_digests: int = 0, n_products: int = 0, spot_leverage: bool | None = None
) -> int:
    """Wallet weight of one execute (§8)."""
    place = 20 if spot_leverage is False else 1
    cancel = max(1, n_digests)
    if execute_type == "place_order":
        return place
    if execute_type == "cancel_orders":
        return cancel
    if execute_type == "cancel_product_orders":
        return 5 * n_products if n_products else 50
    if execute_type == "cancel_and_place":
        return cancel + place
    raise ValueError(f"unknown execute type {execute_type!r}")


@attrs.frozen
class Window:
    limit: int
    window_ns: int


def _default_windows() -> dict[str, tuple[Window, ...]]:
    return {
        "execute": (Window(600, 60 * S), Window(100, 10 * S)),
        "query": (Window(2400, 60 * S), Window(400, 10 * S)),
    }


def _default_floors() -> dict[Priority, Decimal]:
    return {
        Priority.RISK: Decimal(0),
        Priority.NORMAL: Decimal("0.1"),
        Priority.READ: Decimal("0.3"),
    }


@attrs.frozen(kw_only=True)
class LimiterConfig:
    windows: dict[str, tuple[Window, ...]] = attrs.field(factory=_default_windows)
    safety: Decimal = Decimal("0.9")  # share of the published limit we allow ourselves
    # Share of each window that must remain after a grant at this priority.
    floors: dict[Priority, Decimal] = attrs.field(factory=_default_floors)
    backoff_base_ns: int = S // 2
    backoff_max_ns: int = 30 * S


class Shed(Exception):
    """A request refused without waiting (reads under pressure, or the limiter closed)."""


TicketState = Literal["waiting", "granted", "shed", "cancelled"]


@attrs.define(eq=False)
class Ticket:
    budget: str
    weight: int
    priority: Priority
    seq: int
    state: TicketState = "waiting"
    granted_ns: int | None = None
    grant_no: int | None = None  # position in the limiter's grant sequence
    event: asyncio.Event | None = None

    @property
    def granted(self) -> bool:
        return self.state == "granted"

    def _settle(self, state: TicketState, now_ns: int | None = None) -> None:
        self.state = state
        self.granted_ns = now_ns
        if self.event is not None:
            self.event.set()


class _Bucket:
    """Tokens spent at t return at t + window: `limit` bounds every sliding window."""

    def __init__(self, limit: int, window_ns: int) -> None:
        self.limit, self.window_ns = limit, window_ns
        self.spent: deque[tuple[int, int]] = deque()
        self.used = 0

    def expire(self, now_ns: int) -> None:
        while self.spent and self.spent[0][0] + self.window_ns <= now_ns:
            self.used -= self.spent.popleft()[1]

    def ready_at(self, need: int, now_ns: int) -> int:
        """Earliest time at which `need` tokens are free (`need` <= limit)."""
        free = self.limit - self.used
        if free >= need:
            return now_ns
        for t, weight in self.spent:
            free += weight
            if free >= need:
                return t + self.window_ns
        raise AssertionError("need exceeds the bucket")  # guarded by RateLimiter.request

    def spend(self, weight: int, now_ns: int) -> None:
        self.spent.append((now_ns, weight))
        self.used += weight


Sleep = Callable[[int], Awaitable[None]]


async def _asyncio_sleep_ns(ns: int) -> None:
    await asyncio.sleep(ns / S)


class RateLimiter:
    def __init__(
        self,
        clock: NowNs,
        rng: random.Random,
        config: LimiterConfig | None = None,
        *,
        sleep: Sleep | None = None,
    ) -> None:
        self.config = config or LimiterConfig()
        self._clock, self._rng = clock, rng
        self._sleep = sleep or _asyncio_sleep_ns
        self._buckets: dict[str, list[_Bucket]] = {}
        for name, windows in self.config.windows.items():
            self._buckets[name] = [
                _Bucket(_scaled(w.limit, self.config.safety, ROUND_FLOOR), w.window_ns)
                for w in windows
            ]
        self._queues = {
            b: {Priority.RISK: deque[Ticket](), Priority.NORMAL: deque[Ticket]()}
            for b in self._buckets
        }
        self._paused_until = dict.fromkeys(self._buckets, 0)
        self._strikes = dict.fromkeys(self._buckets, 0)
        self._seq = 0
        self._grants = 0
        self._pumper: asyncio.Task[None] | None = None
        self._pumper_wake: int | None = None
        self.stats: Counter[str] = Counter()

    # --- synchronous core ---------------------------------------------------------------

    def request(self, budget: str, weight: int, priority: Priority) -> Ticket:
        """Grant now, queue (RISK/NORMAL) or shed (READ). Never blocks."""
        buckets = self._buckets.get(budget)
        if buckets is None:
            raise ValueError(f"unknown budget {budget!r}")
        if weight <= 0 or any(weight + self._floor(b, priority) > b.limit for b in buckets):
            raise ValueError(f"weight {weight} can never fit budget {budget!r} at {priority.name}")
        self._seq += 1
        ticket = Ticket(budget, weight, priority, self._seq)
        now = self._clock.now_ns()
        self._expire(budget, now)
        if priority is Priority.READ:
            if self._read_ok(budget, weight, now):
                self._grant(ticket, now)
            else:
                ticket._settle("shed")
                self.stats[f"shed.{budget}"] += 1
            return ticket
        self._queues[budget][priority].append(ticket)
        self.pump()
        return ticket

    def pump(self) -> int | None:
        """Grant what fits now, strictly by priority then arrival. Returns when to pump
        next (ns), or None if nothing waits."""
        now = self._clock.now_ns()
        wake: int | None = None
        for budget in self._buckets:
            nxt = self._pump_budget(budget, now)
            if nxt is not None and (wake is None or nxt < wake):
                wake = nxt
        return wake

    def cancel(self, ticket: Ticket) -> None:
        if ticket.state == "waiting":
            self._queues[ticket.budget][ticket.priority].remove(ticket)
            ticket._settle("cancelled")

    def note_rate_limited(self, budget: str, retry_after_s: Decimal | None = None) -> int:
        """A 429 / error 1000 on this budget: pause it; returns the pause end (ns)."""
        self._strikes[budget] += 1
        self.stats[f"rate_limited.{budget}"] += 1
        cfg = self.config
        backoff = min(cfg.backoff_max_ns, cfg.backoff_base_ns << min(self._strikes[budget] - 1, 40))
        jittered = backoff // 2 + int(self._rng.random() * (backoff // 2))  # equal jitter
        honour = 0 if retry_after_s is None else _scaled(S, retry_after_s, ROUND_CEILING)
        until = self._clock.now_ns() + max(jittered, honour)
        self._paused_until[budget] = max(self._paused_until[budget], until)
        return self._paused_until[budget]

    def note_success(self, budget: str) -> None:
        self._strikes[budget] = 0

    def paused_until(self, budget: str) -> int:
        return self._paused_until[budget]

    def available(self, budget: str) -> int:
        now = self._clock.now_ns()
        self._expire(budget, now)
        return min(b.limit - b.used for b in self._buckets[budget])

    def waiting(self, budget: str) -> list[Ticket]:
        q = self._queues[budget]
        return [*q[Priority.RISK], *q[Priority.NORMAL]]

    def _floor(self, bucket: _Bucket, priority: Priority) -> int:
        frac = self.config.floors.get(priority, Decimal(0))
        return _scaled(bucket.limit, frac, ROUND_CEILING)

    def _expire(self, budget: str, now: int) -> None:
        for b in self._buckets[budget]:
            b.expire(now)

    def _ready_at(self, budget: str, weight: int, priority: Priority, now: int) -> int:
        ready = max(now, self._paused_until[budget])
        for b in self._buckets[budget]:
            ready = max(ready, b.ready_at(weight + self._floor(b, priority), now))
        return ready

    def _read_ok(self, budget: str, weight: int, now: int) -> bool:
        if any(self._queues[budget].values()):
            return False  # someone more important is waiting
        return self._ready_at(budget, weight, Priority.READ, now) <= now

    def _grant(self, ticket: Ticket, now: int) -> None:
        for b in self._buckets[ticket.budget]:
            b.spend(ticket.weight, now)
        self._grants += 1
        ticket.grant_no = self._grants
        ticket._settle("granted", now)
        self.stats[f"granted.{ticket.budget}.{ticket.priority.name.lower()}"] += 1

    def _pump_budget(self, budget: str, now: int) -> int | None:
        self._expire(budget, now)
        for priority in (Priority.RISK, Priority.NORMAL):
            queue = self._queues[budget][priority]
            while queue:
                head = queue[0]
                ready = self._ready_at(budget, head.weight, priority, now)
                if ready > now:
                    return ready  # strict priority: nothing behind the head may pass
                queue.popleft()
                self._grant(head, now)
        return None

    # --- asyncio face -------------------------------------------------------------------

    async def acquire(self, budget: str, weight: int, priority: Priority) -> Ticket:
        """Wait for a grant. READ raises `Shed` instead of waiting; cancellation of the
        caller withdraws the request."""
        ticket = self.request(budget, weight, priority)
        if ticket.state == "granted":
            return ticket
        if ticket.state == "shed":
            raise Shed(f"{budget} read shed")
        ticket.event = asyncio.Event()
        self._kick()
        try:
            await ticket.event.wait()
        except asyncio.CancelledError:
            self.cancel(ticket)
            raise
        if not ticket.granted:
            raise Shed(f"{budget} request {ticket.state}")
        return ticket

    def _kick(self) -> None:
        wake = self.pump()
        if wake is None:
            return
        running = self._pumper is not None and not self._pumper.done()
        if running and self._pumper_wake is not None and self._pumper_wake <= wake:
            return
        if self._pumper is not None:
            self._pumper.cancel()
        self._pumper_wake = wake
        self._pumper = asyncio.get_running_loop().create_task(self._pump_at(wake))

    async def _pump_at(self, wake: int) -> None:
        delay = wake - self._clock.now_ns()
        if delay > 0:
            await self._sleep(delay)
        if self._pumper is asyncio.current_task():
            self._pumper = None
            self._pumper_wake = None
        self._kick()

    async def close(self) -> None:
        """Refuse everything still waiting and stop the pump task."""
        for budget in self._queues:
            for ticket in self.waiting(budget):
                self.cancel(ticket)
        task, self._pumper = self._pumper, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _scaled(value: int, frac: Decimal, rounding: str) -> int:
    return int((Decimal(value) * frac).to_integral_value(rounding=rounding))
