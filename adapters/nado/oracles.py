"""The venue's oracle price per product, stamped on every quote the engine hears.

Every quote (pushed or REST) carries the oracle price (`oracle_price`, the price band's
reference, RELIABILITY D5) when the adapter holds one no older than `oracle_max_age_s`,
else none. Nado's quote sources carry no oracle (`best_bid_offer`, `market_prices`), so it
comes from `all_products` (`oracle_price_x18`, nado-protocol.md §6.1; the SDK's
`PerpProduct`): read at discovery, then every `oracle_refresh_s` (IP weight 5, §8: 60
weight/min of the 2400 budget at 5 s). How often Nado itself moves its oracle is not
documented (unverified); the age bound is ours, counted from the answer. A failed read
keeps the last price until it is too old; then quotes go unstamped, and the engine refuses
entries on a product whose oracle was once known and is no more (engine/core/ledger.py,
machines/position_work.py `within_price_band`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from decimal import Decimal

import attrs

from adapters.nado.client import GatewayError
from adapters.nado.core import NS
from adapters.nado.core import Core
from adapters.nado.queries import parse_all_products
from adapters.nado.ratelimit import Priority
from adapters.nado.ratelimit import query_weight
from adapters.nado.wire import MalformedFrame
from engine.core.events import BboUpdated

__all__ = ["Oracles"]


class Oracles:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._held: dict[int, tuple[int, Decimal]] = {}  # pid -> (clock ns read, price)
        self.task: asyncio.Task[None] | None = None

    def start(self, initial: Mapping[int, Decimal]) -> None:
        """Hold the oracle prices read at start-up and keep reading them."""
        self._note(initial)
        self.core.later_ns(self._refresh_ns(), self._check)

    def _refresh_ns(self) -> int:
        return max(int(self.core.settings.oracle_refresh_s * NS), 1)

    def _note(self, prices: Mapping[int, Decimal]) -> None:
        now = self.core.clock.now_ns()
        for pid, price in prices.items():
            if pid in self.core.symbols and price > 0:  # 0: the venue gives none
                self._held[pid] = (now, price)

    def price(self, pid: int) -> Decimal | None:
        """The oracle price of `pid` if read within `oracle_max_age_s`, else None."""
        held = self._held.get(pid)
        if held is None:
            return None
        max_age = int(self.core.settings.oracle_max_age_s * NS)
        if self.core.clock.now_ns() - held[0] > max_age:
            return None
        return held[1]

    def stamped(self, quote: BboUpdated) -> BboUpdated:
        """The quote with the oracle price held now (None when unknown or too old)."""
        oracle = self.price(quote.product_id)
        if oracle == quote.oracle_price:
            return quote
        return attrs.evolve(quote, oracle_price=oracle)

    def _check(self) -> None:
        core = self.core
        if self.task is None or self.task.done():
            core.stats["oracle_refresh"] += 1
            self.task = core.spawn(self._refresh())
        core.later_ns(self._refresh_ns(), self._check)

    async def _refresh(self) -> None:
        core = self.core
        try:
            data = await core.client.query(
                {"type": "all_products"},
                request="oracle_refresh",
                priority=Priority.READ,
                weight=query_weight("all_products"),
            )
            books = parse_all_products(data)
        except GatewayError as exc:
            core.stats[f"oracle_refresh_failed.{exc.classified.reason}"] += 1
            return
        except MalformedFrame:
            core.stats["oracle_refresh_failed.malformed_reply"] += 1
            return
        self._note({pid: b.oracle_price for pid, b in books.items()})
