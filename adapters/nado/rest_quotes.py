"""Quotes read from Nado's `market_prices` query: one cache the Nado adapter and the paper
venue's market source share.

A REST quote stands in for the stream's when the stream says nothing (a quiet book), when
the gate refused a pushed quote, or when the engine asks (`QueryMarketPrices`). Answers are
kept per product with the clock time they were read; a fallback fetch runs at most once at a
time per product, and not while the last answer is younger than the cache period. What a
held quote becomes on its way to the engine (gate check, oracle stamp, confirmation) is the
owner's `deliver`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from adapters.nado.client import GatewayError
from adapters.nado.errors import Classified
from adapters.nado.queries import parse_market_prices
from adapters.nado.ratelimit import Priority
from adapters.nado.ratelimit import query_weight
from adapters.nado.wire import MalformedFrame
from engine.core.events import BboUpdated

__all__ = ["Query", "RestQuotes"]

Query = Callable[..., Awaitable[Any]]  # GatewayClient.query's shape


class RestQuotes:
    def __init__(
        self,
        *,
        query: Query,
        known: Callable[[int], bool],
        now_ns: Callable[[], int],
        cache_ns: Callable[[], int],
        deliver: Callable[[BboUpdated], None],
        stats: Counter[str],
    ) -> None:
        self._query, self._known, self._now_ns = query, known, now_ns
        self._cache_ns, self._deliver, self._stats = cache_ns, deliver, stats
        self._held: dict[int, tuple[int, BboUpdated]] = {}  # pid -> (clock ns, quote)
        self._fallbacks: dict[int, asyncio.Task[None]] = {}

    def tasks(self) -> list[asyncio.Task[None]]:
        """The fallback fetches, for the owner's shutdown."""
        return list(self._fallbacks.values())

    def fresh(self, pid: int) -> bool:
        held = self._held.get(pid)
        return held is not None and self._now_ns() - held[0] < self._cache_ns()

    async def fetch(self, pids: list[int], request: str) -> None:
        """Read the products' quotes into the cache; a reply we cannot read is a
        retryable GatewayError, like any other failed request."""
        try:
            data = await self._query(
                {"type": "market_prices", "product_ids": pids},
                request=request,
                priority=Priority.READ,
                weight=query_weight("market_prices", n_products=len(pids)),
            )
            quotes = parse_market_prices(data)
        except MalformedFrame as exc:
            raise GatewayError(
                Classified(error_class="retryable", reason="malformed_reply", message=str(exc)),
                request,
            ) from None
        now = self._now_ns()
        for quote in quotes:
            if self._known(quote.product_id):
                self._held[quote.product_id] = (now, quote)

    def deliver_held(self, pids: Iterable[int]) -> None:
        for pid in pids:
            held = self._held.get(pid)
            if held is not None:
                self._deliver(held[1])

    async def refresh(self, pids: list[int], request: str) -> None:
        """Fetch and deliver; a failure is counted as `{request}_failed.{reason}`."""
        try:
            await self.fetch(pids, request)
        except GatewayError as exc:
            self._stats[f"{request}_failed.{exc.classified.reason}"] += 1
            return
        self.deliver_held(pids)

    def fallback(self, pid: int) -> None:
        """A stream quote was refused: the REST quote instead (cached, one fetch at a time)."""
        if self.fresh(pid):
            return  # the fallback of the last cache period stands; do not re-emit it per push
        running = self._fallbacks.get(pid)
        if running is not None and not running.done():
            return
        loop = asyncio.get_running_loop()
        self._fallbacks[pid] = loop.create_task(self.refresh([pid], "bbo_fallback"))
