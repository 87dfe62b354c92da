"""A SimVenue on a VirtualClock that records every event with its delivery time."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any
from typing import TypeVar

from adapters.sim.faults import parse_profile
from adapters.sim.venue import SimVenue
from engine.core.clock import VirtualClock
from engine.core.events import BboUpdated
from engine.core.events import Event
from engine.core.intents import CancelOrder
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOpenOrders
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from engine.core.messages import dumps
from engine.core.messages import to_dict

MS = 1_000_000
S = 1_000_000_000
ETH, SOL = 4, 8
STILL = "[market]\nvolatility_bps_per_sqrt_s = 0\n"

E = TypeVar("E", bound=Event)


def sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (SimVenue.start/close) without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("coroutine suspended")


class Harness:
    def __init__(self, profile: str = "", seed: int = 1, **kwargs: Any) -> None:
        self.clock = VirtualClock()
        self.venue = SimVenue(self.clock, seed, parse_profile(profile), **kwargs)
        self.log: list[tuple[int, Event]] = []
        self._n = 0
        sync(self.venue.start(self._sink))

    def _sink(self, ev: Event) -> None:
        self.log.append((self.clock.now_ns(), ev))

    @property
    def events(self) -> list[Event]:
        return [ev for _, ev in self.log]

    def of(self, cls: type[E], since: int = 0) -> list[E]:
        return [ev for t, ev in self.log if isinstance(ev, cls) and t >= since]

    def timed(self, cls: type[E], since: int = 0) -> list[tuple[int, E]]:
        return [(t, ev) for t, ev in self.log if isinstance(ev, cls) and t >= since]

    def about(self, order_id: str) -> list[Event]:
        return [ev for ev in self.events if getattr(ev, "order_id", None) == order_id]

    def run(self, seconds: float) -> None:
        self.clock.advance(int(seconds * S))

    @property
    def now(self) -> int:
        return self.clock.now_ns()

    def bbo(self, pid: int = ETH) -> BboUpdated:
        b = self.venue.exchange.bbo(pid)
        return BboUpdated(
            product_id=pid, bid=b.bid, bid_qty=b.bid_qty, ask=b.ask, ask_qty=b.ask_qty
        )

    def next_id(self) -> str:
        self._n += 1
        return f"o{self._n}"

    def place(
        self,
        side: str = "buy",
        qty: str | Decimal = "1",
        price: str | Decimal | None = None,
        tif: str = "ioc",
        pid: int = ETH,
        reduce_only: bool = False,
        order_id: str | None = None,
    ) -> str:
        if price is None:
            b = self.bbo(pid)
            price = b.ask + 5 * _tick(pid) if side == "buy" else b.bid - 5 * _tick(pid)
        oid = order_id or self.next_id()
        self.venue.submit(
            PlaceOrder(
                order_id=oid,
                product_id=pid,
                side=side,
                qty=Decimal(qty),
                price=Decimal(price),
                tif=tif,
                reduce_only=reduce_only,
            )
        )
        return oid

    def submit(self, intent: Intent) -> None:
        self.venue.submit(intent)

    def close(self) -> None:
        sync(self.venue.close())

    def digest_of_log(self) -> str:
        text = "\n".join(f"{t} {dumps(to_dict(ev))}" for t, ev in self.log)
        return hashlib.sha256(text.encode()).hexdigest()


def _tick(pid: int) -> Decimal:
    return Decimal("0.1") if pid == ETH else Decimal("0.01")


def random_trader(h: Harness, seconds: int, seed: int) -> None:
    """A deterministic stream of every intent kind, every 200 ms of venue time."""
    rng = random.Random(seed)
    for n in range(1, seconds * 5 + 1):
        pid = rng.choice((ETH, SOL))
        roll = rng.random()
        if roll < 0.55:
            b = h.bbo(pid)
            side = rng.choice(("buy", "sell"))
            tif = rng.choice(("ioc", "ioc", "default", "post_only", "fok"))
            offset = rng.randint(-8, 8) * _tick(pid)
            price = (b.ask if side == "buy" else b.bid) + offset
            if price <= 0:
                price = _tick(pid)
            qty = Decimal(rng.randint(1, 40)) * (Decimal("0.05") if pid == ETH else Decimal(1))
            reduce_only = rng.random() < 0.15
            h.place(side, qty, price, tif, pid, reduce_only, order_id=f"t{n}")
        elif roll < 0.7:
            h.submit(CancelOrder(order_id=f"t{rng.randint(1, n)}", product_id=pid))
        elif roll < 0.8:
            h.submit(QueryPositions(request_id=f"q{n}", product_ids=(ETH, SOL)))
        elif roll < 0.9:
            h.submit(
                QueryOrder(request_id=f"q{n}", order_id=f"t{rng.randint(1, n)}", product_id=pid)
            )
        else:
            h.submit(QueryOpenOrders(request_id=f"q{n}", product_ids=(pid,)))
        h.clock.advance(200 * MS)
