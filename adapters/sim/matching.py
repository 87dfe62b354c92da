"""Which liquidity a taker order can reach, in the order it takes it."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from decimal import Decimal

import attrs

from adapters.sim.book import Level
from adapters.sim.flow import level_queue
from adapters.sim.records import OrderRequest
from adapters.sim.records import SimOrder

__all__ = ["Bbo", "Candidate", "Top", "candidates", "reach", "top_of_book"]

ZERO = Decimal(0)


@attrs.frozen
class Candidate:
    price: Decimal
    qty: Decimal
    maker: SimOrder | None  # None: the crowd's synthetic level


def candidates(
    req: OrderRequest, crowd: Iterable[Level], resting: Sequence[SimOrder]
) -> Iterator[Candidate]:
    """Crowd levels and resting user orders on the other side that cross the limit price,
    best price first; at one price in time priority (`flow.level_queue`): the crowd's size
    ahead of a user order first, then the order, then the crowd behind it. An order priced
    where the crowd shows nothing has an empty queue and comes first.
    Own resting orders are included: the sim does not prevent self-trades."""
    buy = req.side == "buy"

    def crosses(price: Decimal) -> bool:
        return price <= req.price if buy else price >= req.price

    users: dict[Decimal, list[SimOrder]] = {}
    for o in resting:
        if o.side != req.side and o.state == "open" and crosses(o.price):
            users.setdefault(o.price, []).append(o)
    if not users:  # the crowd alone: its levels (distinct prices, best first) as they are
        for price, qty in crowd:
            if not crosses(price):
                return
            yield Candidate(price, qty, None)
        return
    crowd_at: dict[Decimal, Decimal] = {}
    for price, qty in crowd:
        if not crosses(price):
            break
        crowd_at[price] = qty
    for price in sorted(set(crowd_at) | set(users), reverse=not buy):
        for qty, maker in level_queue(crowd_at.get(price, ZERO), users.get(price, ())):
            yield Candidate(price, qty, maker)


def reach(found: Iterable[Candidate], qty: Decimal) -> list[Candidate]:
    """The candidates a taker of `qty` gets to: in order, up to the one where their total
    reaches `qty` (what lies deeper cannot trade, so it is never derived)."""
    out: list[Candidate] = []
    total = ZERO
    for c in found:
        out.append(c)
        total += c.qty
        if total >= qty:
            break
    return out


Top = tuple[Decimal, Decimal, Decimal, Decimal]  # (bid, bid qty, ask, ask qty); 0 if empty


@attrs.frozen(kw_only=True)
class Bbo:
    product_id: int
    bid: Decimal  # 0 when the side is empty
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal
    ts_ns: int


def top_of_book(crowd: Level | None, orders: list[SimOrder], side: str) -> Level | None:
    """Top of book on one side: the crowd's best level merged with resting user orders."""
    best = crowd
    for o in orders:
        if o.side != side:
            continue
        if best is None or (o.price > best[0] if side == "buy" else o.price < best[0]):
            best = (o.price, o.remaining)
        elif o.price == best[0]:
            best = (best[0], best[1] + o.remaining)
    return best
