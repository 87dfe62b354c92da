"""Quotes: stream BBO through the gate, REST `market_prices` when the stream cannot say.

- QueryMarketPrices: one `BboUpdated` per product from `market_prices` (cached
  `quote_cache_s`), through the BBO gate.
- Pushed `BboUpdated`: stream quotes that pass `BboGate`; a refused quote falls back to
  the REST `market_price` (rest_quotes.py).

Quotes are kept confirmed: a product whose stream has said nothing for `quiet_quote_s`
(half the engine's BBO age limit) is asked by REST (`market_prices`); the answer passes the
same gate and reaches the engine as a fresh `BboUpdated` (Nado pushes BBO only on change,
nado-protocol.md §13). Every quote is stamped with the oracle price (oracles.py).
"""

from __future__ import annotations

import asyncio

from adapters.nado.bbo import BboGate
from adapters.nado.client import GatewayError
from adapters.nado.core import NS
from adapters.nado.core import Core
from adapters.nado.oracles import Oracles
from adapters.nado.rest_quotes import RestQuotes
from engine.core.events import BboUpdated
from engine.core.intents import QueryMarketPrices

__all__ = ["Quotes"]


class Quotes:
    def __init__(self, core: Core, oracles: Oracles) -> None:
        self.core, self.oracles = core, oracles
        self.gate = BboGate(core.settings.bbo)
        self.rest = RestQuotes(
            query=lambda *a, **k: core.client.query(*a, **k),
            known=lambda pid: pid in core.symbols,
            now_ns=core.clock.now_ns,
            cache_ns=lambda: int(core.settings.quote_cache_s * NS),
            deliver=self._pass_rest_quote,
            stats=core.stats,
        )
        self._confirmed: dict[int, int] = {}  # pid -> clock ns a quote last reached the engine
        self.refresh: asyncio.Task[None] | None = None
        # Tests set it (10**18: never ask REST for a quiet quote).
        self.quiet_ns = max(int(core.settings.quiet_quote_s * NS), 1)

    def start(self) -> None:
        self.core.later_ns(self.quiet_ns, self._check)

    def tasks(self) -> list[asyncio.Task[None]]:
        """What `close` cancels."""
        return self.rest.tasks() + ([self.refresh] if self.refresh is not None else [])

    async def market_prices(self, intent: QueryMarketPrices) -> None:
        pids = self.core.pids(intent.product_ids)
        missing = [p for p in pids if not self.rest.fresh(p)]
        if missing:
            try:
                await self.rest.fetch(missing, intent.kind)
            except GatewayError as exc:
                self.core.error(exc.classified, intent.kind, request_id=intent.request_id)
                return
        self.rest.deliver_held(pids)

    def _pass_rest_quote(self, quote: BboUpdated) -> None:
        core = self.core
        verdict = self.gate.check(quote, now_ns=core.unix_ns(), ts_ns=core.unix_ns())
        if verdict.ok:
            core.stats["bbo_rest"] += 1
            self._confirmed[quote.product_id] = core.clock.now_ns()
            core.emit(self.oracles.stamped(quote))
        else:
            core.stats[f"bbo_rest_rejected.{verdict.reason}"] += 1

    def on_bbo(self, bbo: BboUpdated) -> None:
        core = self.core
        if bbo.product_id not in core.symbols:
            return
        verdict = self.gate.check(bbo, now_ns=core.unix_ns())
        if verdict.ok:
            core.stats["bbo_stream"] += 1
            self._confirmed[bbo.product_id] = core.clock.now_ns()
            core.emit(self.oracles.stamped(bbo))
            return
        core.stats[f"bbo_rejected.{verdict.reason}"] += 1
        self.rest.fallback(bbo.product_id)

    def _check(self) -> None:
        """Products whose quote nobody confirmed for `quiet_quote_s` while the stream is
        up are asked by REST.

        Nado pushes a BBO only when the book changes: on a quiet book the stream says
        nothing, and only a REST answer keeps the engine's quote confirmed (its age is
        the time since the last confirmation, engine/core/ledger.py)."""
        core, quiet = self.core, self.quiet_ns
        now = core.clock.now_ns()
        due = [p for p in core.symbols if now - self._confirmed.get(p, now - quiet) >= quiet]
        running = self.refresh is not None and not self.refresh.done()
        _, up = core.stream_epoch()
        # While the stream is down the connection machine's polls ask for quotes.
        if due and up and not running:
            core.stats["quote_refresh"] += 1
            refresh = self.rest.refresh(due, "quote_refresh")
            self.refresh = asyncio.get_running_loop().create_task(refresh)
        # The next product to go quiet; one just asked (its answer due): half a period.
        nxt = min((self._confirmed.get(p, now) + quiet for p in core.symbols), default=now)
        core.later_ns(nxt - now if nxt > now else quiet // 2, self._check)
