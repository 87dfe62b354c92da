"""Which liquidity a taker order can reach, in the order it takes it."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import attrs

from adapters.sim.book import Level
from adapters.sim.records import OrderRequest
from adapters.sim.records import SimOrder

__all__ = ["Bbo", "Candidate", "candidates", "top_of_book"]


@attrs.frozen
class Candidate:
    price: Decimal
    qty: Decimal
    maker: SimOrder | None  # None: the crowd's synthetic level


def candidates(
    req: OrderRequest, crowd: Sequence[Level], resting: Sequence[SimOrder]
) -> list[Candidate]:
    """Crowd levels and resting user orders on the other side that cross the limit price,
    best price first; at one price, user orders (by arrival) come before the crowd.
    Own resting orders are included: the sim does not prevent self-trades."""
    buy = req.side == "buy"

    def crosses(price: Decimal) -> bool:
        return price <= req.price if buy else price >= req.price

    keyed: list[tuple[Decimal, int, int, Candidate]] = [
        (o.price if buy else -o.price, 0, o.seq, Candidate(o.price, o.remaining, o))
        for o in resting
        if o.side != req.side and o.state == "open" and crosses(o.price)
    ]
    for i, (price, qty) in enumerate(crowd):
        if not crosses(price):
            break
        keyed.append((price if buy else -price, 1, i, Candidate(price, qty, None)))
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [k[3] for k in keyed]


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
