"""The venue seam: one protocol that the simulator and the Nado adapter both implement.

The engine hands intents to `submit` (non-blocking: the adapter's own workers do the
I/O) and receives events through the `sink` given to `start`. Product metadata is
known once `start` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Protocol

import attrs

from engine.core.events import Event
from engine.core.intents import Intent
from engine.core.messages import dec

__all__ = ["EventSink", "ProductInfo", "VenuePort"]

EventSink = Callable[[Event], None]


@attrs.frozen(kw_only=True)
class ProductInfo:
    symbol: str  # e.g. "ETH-PERP"
    product_id: int
    tick_size: Decimal = attrs.field(converter=dec)  # price increment
    size_increment: Decimal = attrs.field(converter=dec)
    min_order_value_usd: Decimal = attrs.field(converter=dec)


class VenuePort(Protocol):
    name: str

    @property
    def products(self) -> dict[str, ProductInfo]:
        """By symbol; filled in by `start`."""
        ...

    async def start(self, sink: EventSink) -> None: ...

    def submit(self, intent: Intent) -> None:
        """Queue one intent; never blocks, never raises for venue failures.

        Failures come back as events (OrderRejected, VenueError with a class).
        """
        ...

    async def close(self) -> None: ...
