"""The in-process simulator as paper trading's "live" market, on any engine clock.

For the chaos tier and tests on the virtual clock: a `SimVenue` with the run's fault
profile stands in for Nado's market data. Its pushed quotes and stream states reach the
engine through the same BBO gate as live data (a stale or crossed push is refused and
the REST quote used instead), its stream drops, gaps and down windows through the same
connection machine; its crowd's depth is the "REST snapshot" that seeds the paper books
(at start, on every reconnect, every `refresh_s`, and every `poll_s` while the stream is
down, unless the venue is down). No order ever reaches the simulator's exchange: the
paper venue matches them locally against these books.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal

from adapters.base import ProductInfo
from adapters.nado.bbo import BboGate
from adapters.nado.bbo import BboLimits
from adapters.paper.book import DepthChain
from adapters.paper.book import LiveBook
from adapters.paper.book import Snapshot
from adapters.paper.exchange import FeeRates
from adapters.paper.venue import MarketHooks
from adapters.sim.faults import NS_PER_MS
from adapters.sim.faults import FaultProfile
from adapters.sim.products import resolve
from adapters.sim.scheduler import Scheduler
from adapters.sim.venue import SimVenue
from engine.core.clock import Clock
from engine.core.events import BboUpdated
from engine.core.events import ConnectionChanged
from engine.core.events import Event
from engine.core.events import VenueError
from engine.core.intents import QueryMarketPrices

__all__ = ["SimMarketSource"]

NS = 1_000_000_000


class SimMarketSource:
    name = "the in-process simulator"

    def __init__(
        self,
        clock: Clock,
        seed: int,
        profile: FaultProfile,
        symbols: Sequence[str],
        *,
        bbo: BboLimits | None = None,
        depth_levels: int = 10,
        refresh_s: Decimal = Decimal(5),
        poll_s: Decimal = Decimal(1),
        quiet_quote_s: Decimal = Decimal(1),
    ) -> None:
        self.clock = clock
        self.profile = profile
        self.sim = SimVenue(clock, seed, profile, symbols)
        self.gate = BboGate(bbo)
        self.depth_levels = depth_levels
        self.refresh_ns = int(refresh_s * NS)
        self.poll_ns = int(poll_s * NS)
        self.quiet_ns = max(int(quiet_quote_s * NS), 1)
        self._confirmed: dict[int, int] = {}  # pid -> clock ns a quote last reached the engine
        self._sched = Scheduler(clock)
        self._origin = clock.now_ns()
        sim = profile.sim
        self._rtt_ns = int((sim.request_latency_ms + sim.response_latency_ms) * NS_PER_MS)
        fee = (sim.maker_fee_bps / 10_000, sim.taker_fee_bps / 10_000)
        self._fees = {s.product_id: fee for s in resolve(symbols)}
        self._books: dict[int, LiveBook] = {s.product_id: LiveBook(s) for s in resolve(symbols)}
        self.chains = {pid: DepthChain() for pid in self._books}
        self._hooks: MarketHooks | None = None
        self._feed_up = False  # the simulator's stream is up
        self._open = False  # our socket is open: connected and not dropped since
        self._connects = 0
        self.stats: Counter[str] = Counter()

    # -- MarketSource -------------------------------------------------------------------------
    @property
    def products(self) -> dict[str, ProductInfo]:
        return self.sim.products

    @property
    def fees(self) -> dict[int, FeeRates]:
        return dict(self._fees)

    @property
    def books(self) -> dict[int, LiveBook]:
        return self._books

    async def start(self, hooks: MarketHooks) -> None:
        for pid in self._books:
            self._snapshot(pid, "start")
        self._hooks = hooks
        await self.sim.start(self._on_event)
        self._sched.later(self.poll_ns, self._keep)
        self._sched.later(self.quiet_ns // 2, self._quote_check)

    def connect(self, attempt: int) -> None:
        """One attempt, answered once after a round trip, as the Nado stream client does:
        `connected` when the simulator's stream is up, else `failed`."""
        self._open = False
        self._sched.later(self._rtt_ns, lambda: self._attempt(attempt))

    def _attempt(self, attempt: int) -> None:
        hooks = self._hooks
        if hooks is None:
            return
        if not self._feed_up or self._venue_down():
            self.stats["connect_failed"] += 1
            hooks.emit(
                ConnectionChanged(
                    channel="ws", state="failed", detail=f"attempt {attempt}: stream down"
                )
            )
            return
        self._open = True
        for chain in self.chains.values():
            chain.reset()
        hooks.emit(ConnectionChanged(channel="ws", state="connected", detail=f"attempt {attempt}"))
        self._connects += 1
        for pid in self._books:
            self._snapshot(pid, "connect" if self._connects == 1 else "reconnect")

    def query_prices(self, intent: QueryMarketPrices) -> None:
        self._sched.later(self._rtt_ns, lambda: self._answer_prices(intent))

    async def close(self) -> None:
        self._sched.close()
        await self.sim.close()

    # -- ground truth ---------------------------------------------------------------------------
    def mid(self, product_id: int) -> Decimal:
        return self.sim.exchange.mid(product_id)

    # -- internals ------------------------------------------------------------------------------
    def _venue_down(self) -> bool:
        t = self.clock.now_ns() - self._origin
        return any(w.contains(t) for w in self.profile.venue.down)

    def _snapshot(self, pid: int, why: str) -> None:
        now = self.clock.now_ns()
        exchange = self.sim.exchange
        exchange.advance_to(now)
        bids, asks = exchange.depth(pid, self.depth_levels)
        self._books[pid].seed(Snapshot(bids=bids, asks=asks, ts_ns=now), now)
        self.chains[pid].seeded(now)
        self.stats["snapshots"] += 1
        self.stats[f"snapshots.{why}"] += 1
        if self._hooks is not None:
            self._hooks.book_changed(pid)

    def _keep(self) -> None:
        now = self.clock.now_ns()
        if not self._venue_down():
            for pid, book in self._books.items():
                quiet = book.updated_ns is None or now - book.updated_ns >= self.refresh_ns
                if not self._open or quiet:
                    self._snapshot(pid, "poll" if not self._open else "refresh")
        self._sched.later(self.poll_ns, self._keep)

    def _quote_check(self) -> None:
        """As the Nado adapter: a quote nothing confirmed for `quiet_quote_s` while the
        stream is open is asked by REST (a simulator that pushes only on change is quiet)."""
        now = self.clock.now_ns()
        hooks = self._hooks
        if self._open and hooks is not None:
            quiet = self.quiet_ns
            for pid in self._books:
                if now - self._confirmed.get(pid, now - quiet) >= quiet:
                    self._confirmed[pid] = now  # asked: one question per period
                    self._sched.later(self._rtt_ns, lambda p=pid: self._rest_quote(p, hooks))  # type: ignore[misc]
        self._sched.later(self.quiet_ns // 2, self._quote_check)

    def _on_event(self, ev: Event) -> None:
        hooks = self._hooks
        if hooks is None:
            return
        if isinstance(ev, BboUpdated):
            if self._open:
                self._on_bbo(ev, hooks)
        elif isinstance(ev, ConnectionChanged):
            self._feed_up = ev.state == "connected"
            if not self._feed_up and self._open:
                self._open = False  # the socket dropped; the connection machine reconnects
                for chain in self.chains.values():
                    chain.reset()
                hooks.emit(ConnectionChanged(channel="ws", state="disconnected", detail=ev.detail))
        # No orders live at the simulator: nothing else comes from it.

    def _on_bbo(self, bbo: BboUpdated, hooks: MarketHooks) -> None:
        pid = bbo.product_id
        if pid not in self._books:
            return
        verdict = self.gate.check(bbo, now_ns=self.clock.now_ns())
        if not verdict.ok:
            self.stats[f"bbo_rejected.{verdict.reason}"] += 1
            self._sched.later(self._rtt_ns, lambda: self._rest_quote(pid, hooks))
            return
        self._confirmed[pid] = self.clock.now_ns()
        hooks.emit(bbo)
        assert bbo.ts_venue_ns is not None
        self._books[pid].confirm_top(
            bbo.bid, bbo.bid_qty, bbo.ask, bbo.ask_qty, bbo.ts_venue_ns, self.clock.now_ns()
        )
        hooks.book_changed(pid)

    def _rest_quote(self, pid: int, hooks: MarketHooks) -> None:
        if self._venue_down():
            return
        now = self.clock.now_ns()
        self.sim.exchange.advance_to(now)
        b = self.sim.exchange.bbo(pid)
        quote = BboUpdated(  # stamped with the oracle, as the Nado adapter stamps its own
            product_id=pid,
            bid=b.bid,
            bid_qty=b.bid_qty,
            ask=b.ask,
            ask_qty=b.ask_qty,
            oracle_price=self.sim.exchange.mid(pid),
        )
        if self.gate.check(quote, now_ns=now, ts_ns=now).ok:
            self._confirmed[pid] = now
            hooks.emit(quote)  # unstamped, as the Nado adapter sends a REST quote

    def _answer_prices(self, intent: QueryMarketPrices) -> None:
        hooks = self._hooks
        if hooks is None:
            return
        if self._venue_down():
            hooks.emit(
                VenueError(
                    error_class="retryable",
                    request=intent.kind,
                    request_id=intent.request_id,
                    message="venue unreachable",
                )
            )
            return
        for pid in intent.product_ids or tuple(self._books):
            if pid in self._books:
                self._rest_quote(pid, hooks)
