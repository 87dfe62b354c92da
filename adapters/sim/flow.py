"""The maker fill model: queue position behind the crowd, and seeded taker flow.

Price-time priority. A resting user order that joins a price level queues behind the
size the crowd displays there (its `queue_ahead`, in base); an order priced inside the
spread (or between the crowd's levels) has an empty queue. Whatever trades at that
price, a user taker or the taker flow below, eats the queue in time order: the crowd
ahead, the order, the crowd behind it. The queue ahead shrinks as it is eaten, and as
the crowd's displayed size at the price falls below it (cancels ahead: an order can
never have more ahead of it than the level shows). Nado's matching is a central limit
order book (docs.nado.xyz "Orderbook Architecture"); that it is price-time (FIFO) within
a level is `unverified` (the usual CLOB rule; no public Nado source says).

Taker flow (model, not venue behaviour). Market orders from other traders arrive on each
side of each product as a Poisson process at `[sim] maker_fill_rate_per_s`, each of a USD
size drawn from an exponential distribution of mean `taker_flow_mean_usd`, capped at
`taker_flow_max_usd`. An arrival walks its side of the book from the best price (the
crowd's levels and every account's resting orders, each level in queue order) until its
size is used. The crowd is not depleted by the flow (others refill it at once), so the
flow changes nothing but the resting user orders it reaches and their queues. Each
(product, side) draws from its own stream `f"{seed}/flow/{product}/{side}"`, so the
arrival times and sizes depend on the seed only, never on what the client does.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN
from decimal import Decimal

from adapters.sim.book import BookSide
from adapters.sim.book import Level
from adapters.sim.records import SimOrder

__all__ = ["FlowStream", "level_queue", "sweep"]

ZERO = Decimal(0)
USD_PLACES = Decimal("0.01")

# (size in base, the resting user order, or None for a chunk of the crowd's level)
Chunk = tuple[Decimal, SimOrder | None]


def level_queue(crowd_qty: Decimal, orders: Sequence[SimOrder]) -> list[Chunk]:
    """One price level in time priority: crowd chunks and resting user orders (any order
    of `orders`; sorted here by arrival). An order's queue ahead counts at most what the
    crowd shows at the price."""
    out: list[Chunk] = []
    done = ZERO  # crowd placed in the queue so far
    for o in sorted(orders, key=lambda o: o.seq):
        ahead = min(o.queue_ahead, crowd_qty)
        if ahead > done:
            out.append((ahead - done, None))
            done = ahead
        if o.remaining > 0:
            out.append((o.remaining, o))
    if crowd_qty > done:
        out.append((crowd_qty - done, None))
    return out


def sweep(
    side: BookSide, crowd: Sequence[Level], orders: Sequence[SimOrder], qty: Decimal
) -> list[tuple[Decimal, Decimal, SimOrder | None]]:
    """A market order of `qty` (base) arriving on `side` ("ask": a buyer lifting asks):
    the (price, qty, maker) matches it makes, best price first, each level in queue order.
    Stops after the last resting user order it could reach (deeper crowd does not matter)."""
    if not orders or qty <= 0:
        return []
    by_price: dict[Decimal, list[SimOrder]] = {}
    for o in orders:
        by_price.setdefault(o.price, []).append(o)
    crowd_at = dict(crowd)
    bid = side == "bid"
    prices = sorted(set(crowd_at) | set(by_price), reverse=bid)
    last = max(by_price) if not bid else min(by_price)  # the deepest user order
    out: list[tuple[Decimal, Decimal, SimOrder | None]] = []
    left = qty
    for price in prices:
        if (price > last) if not bid else (price < last):
            break
        for size, maker in level_queue(crowd_at.get(price, ZERO), by_price.get(price, ())):
            take = min(size, left)
            out.append((price, take, maker))
            left -= take
            if left <= 0:
                return out
    return out


class FlowStream:
    """Arrivals of taker flow on one side of one product: Poisson at `rate_per_s`,
    sizes exponential with mean `mean_usd`, capped at `max_usd`."""

    def __init__(
        self,
        rng: random.Random,
        *,
        start_ns: int,
        rate_per_s: Decimal,
        mean_usd: Decimal,
        max_usd: Decimal,
    ) -> None:
        self._rng = rng
        self._rate = float(rate_per_s)
        self._mean = float(mean_usd)
        self._max = max_usd
        self.next_ns = start_ns
        self.next_usd = ZERO
        self.draw()

    def draw(self) -> None:
        """Schedule the next arrival after the current one (two draws per arrival)."""
        rng = self._rng
        gap_s = rng.expovariate(self._rate)
        size = Decimal(repr(rng.expovariate(1.0 / self._mean)))
        size = size.quantize(USD_PLACES, ROUND_HALF_EVEN)
        self.next_ns += max(1, math.ceil(gap_s * 1e9))
        self.next_usd = min(size, self._max)
