"""Nado's public market data for paper trading, with no key: the Nado adapter's own
discovery (`adapters.nado.discovery`), REST client and rate limiter
(`adapters.nado.client`, `.ratelimit`), stream client (`adapters.nado.stream`, here as a
public socket that never authenticates) and BBO gate (`adapters.nado.bbo`).

- **Products** from `discover` (contracts, status, `symbols`, `all_products`, checked
  against the network's expectations exactly as for live trading); **fee rates** are the
  published per-product `maker_fee_rate_x18` / `taker_fee_rate_x18` of the same
  `symbols` reply (nado-protocol.md §6.1).
- **Books**: seeded from `market_liquidity` (§6.2), kept by `book_depth` events on the
  `last_max_timestamp` chain (§7.5) and by gated `best_bid_offer` quotes. Every
  (re)connect and every chain gap re-seeds from a REST snapshot; a book no event has
  confirmed for `refresh_s` is refreshed from REST ("last confirmed", §13 Q9: a quiet
  book sends nothing); while the stream is down the books are polled every `poll_s`.
- **Streams**: `best_bid_offer` per product is required; `book_depth` and `trade` are
  optional: a gateway that refuses them leaves the book to snapshots and quotes, and
  resting paper orders to trade-through (logged once).
- **Quotes to the engine**: stream quotes that pass the gate; a refused one falls back
  to the REST `market_prices` quote (cached `quote_cache_s`), as the Nado adapter does;
  `QueryMarketPrices` the same way; and a quote nothing confirmed for `quiet_quote_s`
  while the stream is up is re-read from REST (a quiet book pushes nothing).

`QueryOnlyGateway` is the only REST handle here: it has no execute method.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs

from adapters.base import ProductInfo
from adapters.nado.bbo import BboGate
from adapters.nado.bbo import BboLimits
from adapters.nado.client import ClientConfig
from adapters.nado.client import GatewayClient
from adapters.nado.client import GatewayError
from adapters.nado.discovery import Discovery
from adapters.nado.discovery import DiscoveryError
from adapters.nado.discovery import Expectations
from adapters.nado.discovery import discover
from adapters.nado.errors import Classified
from adapters.nado.mapping import decode_stream
from adapters.nado.mapping import from_x18
from adapters.nado.ratelimit import LimiterConfig
from adapters.nado.ratelimit import Priority
from adapters.nado.ratelimit import RateLimiter
from adapters.nado.rest_quotes import RestQuotes
from adapters.nado.stream import StreamClient
from adapters.nado.stream import StreamConfig
from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import as_int
from adapters.nado.wire import loads
from adapters.nado.wire import req_obj
from adapters.nado.wire import subscribe_url
from adapters.paper.book import DepthChain
from adapters.paper.book import DepthEvent
from adapters.paper.book import LiveBook
from adapters.paper.book import TradeEvent
from adapters.paper.book import parse_book_depth
from adapters.paper.book import parse_liquidity
from adapters.paper.book import parse_trade
from adapters.paper.exchange import FeeRates
from adapters.paper.venue import MarketHooks
from adapters.sim.products import ProductSpec
from engine.core.clock import Clock
from engine.core.events import BboUpdated
from engine.core.events import ConnectionChanged
from engine.core.events import VenueError
from engine.core.intents import QueryMarketPrices

__all__ = [
    "NadoMarketSource",
    "PaperSettings",
    "PublicStream",
    "QueryOnlyGateway",
    "decode_public",
    "parse_fee_rates",
]

log = logging.getLogger("dnpair.paper")
NS = 1_000_000_000
REQUIRED_STREAMS = ("best_bid_offer",)


@attrs.frozen(kw_only=True)
class PaperSettings:
    gateway_url: str  # e.g. https://gateway.prod.nado.xyz/v1
    pair: tuple[str, ...]
    expect: Expectations = attrs.field(factory=Expectations)
    client: ClientConfig = attrs.field(factory=ClientConfig)
    stream: StreamConfig = attrs.field(factory=StreamConfig)
    limiter: LimiterConfig = attrs.field(factory=LimiterConfig)
    bbo: BboLimits = attrs.field(factory=BboLimits)
    streams: tuple[str, ...] = ("best_bid_offer", "book_depth", "trade")
    depth_levels: int = 50  # market_liquidity depth of a snapshot
    refresh_s: Decimal = Decimal(5)  # a book unconfirmed this long is re-read from REST
    poll_s: Decimal = Decimal(1)  # book snapshots while the stream is down
    quote_cache_s: Decimal = Decimal(1)
    # A product's quote unconfirmed (no push, no REST answer) this long is asked by REST,
    # as the Nado adapter does: Nado pushes a BBO only when the book changes (§13 Q9).
    quiet_quote_s: Decimal = Decimal(1)
    discovery_attempts: int = 3
    seed: int = 0

    @property
    def ws_url(self) -> str:
        return subscribe_url(self.gateway_url)


class QueryOnlyGateway:
    """The gateway's `/v1/query`, and nothing else: paper trading holds no other handle."""

    def __init__(self, client: GatewayClient) -> None:
        self._client = client

    async def query(
        self,
        params: Mapping[str, Any],
        *,
        request: str,
        priority: Priority,
        weight: int | None = None,
    ) -> Any:
        return await self._client.query(params, request=request, priority=priority, weight=weight)

    @property
    def stats(self) -> Counter[str]:
        return self._client.stats

    async def aclose(self) -> None:
        await self._client.aclose()


def parse_fee_rates(symbols_data: Any, pids: Mapping[str, int]) -> dict[int, FeeRates]:
    """(maker, taker) fee rates of the pair's products from a `symbols` reply."""
    w = "symbols"
    table = req_obj(symbols_data, "symbols", w)
    out: dict[int, FeeRates] = {}
    for symbol, pid in pids.items():
        entry = table.get(symbol)
        if not isinstance(entry, Mapping):
            raise MalformedFrame(f"{symbol} missing", where=w)
        rates = []
        for key in ("maker_fee_rate_x18", "taker_fee_rate_x18"):
            if entry.get(key) is None:
                raise MalformedFrame(f"{symbol}: {key} missing (no published fee rate)", where=w)
            rate = from_x18(as_int(entry[key], key, w))
            if abs(rate) >= Decimal("0.1"):
                raise MalformedFrame(f"{symbol}: {key} {rate} is not a fee rate", where=w)
            rates.append(rate)
        out[pid] = (rates[0], rates[1])
    return out


def decode_public(text: str | bytes) -> Any:
    """A `/v1/subscribe` frame: `book_depth` and `trade` here, the rest by the adapter."""
    obj = loads(text)
    if isinstance(obj, Mapping):
        kind = obj.get("type")
        try:
            if kind == "book_depth":
                return parse_book_depth(obj)
            if kind == "trade":
                return parse_trade(obj)
        except MalformedFrame:
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise MalformedFrame(f"invalid value: {exc}", where=str(kind)) from None
    return decode_stream(text)


class PublicStream(StreamClient):
    """The adapter's stream client as a public socket: no authentication, and optional
    subscriptions a gateway may refuse (it then runs without them)."""

    def __init__(self, *args: Any, optional: Sequence[dict[str, Any]] = (), **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.optional = [dict(s) for s in optional]
        self.refused: list[str] = []

    async def _handshake(self) -> None:
        await super()._handshake()  # the required streams (no signer: no authentication)
        for stream in self.optional:
            rid = self._new_id()
            try:
                await self._request(rid, {"method": "subscribe", "id": rid, "stream": stream})
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused: run without it
                what = f"{stream.get('type')}:{stream.get('product_id')}"
                if what not in self.refused:
                    self.refused.append(what)
                    log.warning("paper: stream %s refused (%s); running without it", what, exc)


class NadoMarketSource:
    def __init__(
        self,
        settings: PaperSettings,
        *,
        clock: Clock,
        unix_ns: Callable[[], int],
        transport: Any = None,
    ) -> None:
        self.settings = settings
        self.name = settings.gateway_url
        self.clock = clock
        self.unix_ns = unix_ns
        self.limiter = RateLimiter(clock, random.Random(settings.seed), settings.limiter)
        client = GatewayClient(
            settings.gateway_url,
            self.limiter,
            clock,
            unix_ns,
            settings.client,
            transport=transport,
        )
        self.gateway = QueryOnlyGateway(client)
        self.gate = BboGate(settings.bbo)
        self.stats: Counter[str] = Counter()
        self.discovery: Discovery | None = None
        self.stream: PublicStream | None = None
        self._products: dict[str, ProductInfo] = {}
        self._fees: dict[int, FeeRates] = {}
        self._books: dict[int, LiveBook] = {}
        self.chains: dict[int, DepthChain] = {}
        self._hooks: MarketHooks | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._snapshotting: set[int] = set()
        self._last_snapshot: dict[int, int] = {}
        self._rest_quotes = RestQuotes(
            query=lambda *a, **k: self.gateway.query(*a, **k),
            known=lambda pid: pid in self._books,
            now_ns=self.clock.now_ns,
            cache_ns=lambda: int(self.settings.quote_cache_s * NS),
            deliver=self._pass_rest_quote,
            stats=self.stats,
        )
        self._keeper: asyncio.Task[None] | None = None
        self._confirmed: dict[int, int] = {}  # pid -> clock ns a quote last reached the engine
        self._refresh: asyncio.Task[None] | None = None
        self._depth_live = "book_depth" in settings.streams

    # -- MarketSource -----------------------------------------------------------------------
    @property
    def products(self) -> dict[str, ProductInfo]:
        return dict(self._products)

    @property
    def fees(self) -> dict[int, FeeRates]:
        return dict(self._fees)

    @property
    def books(self) -> dict[int, LiveBook]:
        return self._books

    async def start(self, hooks: MarketHooks) -> None:
        found, raw_symbols = await self._discover()
        self.discovery = found
        self._products = found.products
        pids = {s: i.product_id for s, i in found.symbols.items()}
        try:
            self._fees = parse_fee_rates(raw_symbols, pids)
        except MalformedFrame as exc:
            raise DiscoveryError(f"paper: cannot read the published fee rates ({exc})") from None
        for info in self._products.values():
            spec = ProductSpec(
                symbol=info.symbol,
                product_id=info.product_id,
                start_mid=Decimal(1),
                tick=info.tick_size,
                size_increment=info.size_increment,
                min_notional=info.min_order_value_usd,
            )
            self._books[info.product_id] = LiveBook(spec)
            self.chains[info.product_id] = DepthChain()
        for pid in self._books:
            try:
                await self._snapshot(pid, "start")
            except GatewayError as exc:
                raise DiscoveryError(
                    f"paper: cannot read the {self._symbol(pid)} book: {exc.classified.reason}"
                ) from None
        self._hooks = hooks
        required: list[dict[str, Any]] = []
        optional: list[dict[str, Any]] = []
        for pid in self._books:
            for kind in self.settings.streams:
                sub = {"type": kind, "product_id": pid}
                (required if kind in REQUIRED_STREAMS else optional).append(sub)
        self.stream = PublicStream(
            self.settings.ws_url,
            None,
            required,
            self._on_frame,
            self._on_stream_state,
            clock=self.clock,
            unix_ms=lambda: self.unix_ns() // 1_000_000,
            config=self.settings.stream,
            decode=decode_public,
            optional=optional,
        )
        self._keeper = asyncio.get_running_loop().create_task(self._keep())
        log.info(
            "paper market data from %s: %s (fees maker/taker %s); no key, nothing executed",
            self.settings.gateway_url,
            ", ".join(f"{s}={i.product_id}" for s, i in found.symbols.items()),
            ", ".join(f"{m}/{t}" for m, t in self._fees.values()),
        )

    def connect(self, attempt: int) -> None:
        if self.stream is not None and not self._closed:
            self.stream.connect(attempt)

    def query_prices(self, intent: QueryMarketPrices) -> None:
        self._spawn(self._market_prices(intent))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.stream is not None:
            await self.stream.close()
        tasks = [*self._tasks, *self._rest_quotes.tasks()]
        if self._refresh is not None:
            tasks.append(self._refresh)
        if self._keeper is not None:
            tasks.append(self._keeper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.limiter.close()
        await self.gateway.aclose()

    # -- discovery and snapshots --------------------------------------------------------------
    async def _discover(self) -> tuple[Discovery, Any]:
        raw: dict[str, Any] = {}

        async def query(params: Any) -> Any:
            data = await self.gateway.query(params, request="discovery", priority=Priority.RISK)
            if params.get("type") == "symbols":
                raw["symbols"] = data
            return data

        last: GatewayError | None = None
        for attempt in range(1, self.settings.discovery_attempts + 1):
            try:
                found = await discover(query, self.settings.pair, self.settings.expect)
                return found, raw.get("symbols")
            except GatewayError as exc:
                last = exc
                if exc.error_class == "permanent":
                    break
                await asyncio.sleep(min(0.5 * attempt, 2.0))
        assert last is not None
        raise DiscoveryError(
            f"venue discovery failed at {self.settings.gateway_url}: {last.classified.reason}"
            f"{': ' + last.classified.message if last.classified.message else ''}"
        )

    async def _snapshot(self, pid: int, why: str) -> None:
        """Seed `pid`'s book from `market_liquidity`; raises GatewayError."""
        self._snapshotting.add(pid)
        try:
            self._last_snapshot[pid] = self.clock.now_ns()
            data = await self.gateway.query(
                {
                    "type": "market_liquidity",
                    "product_id": pid,
                    "depth": self.settings.depth_levels,
                },
                request="book_snapshot",
                priority=Priority.READ,
            )
            try:
                snap = parse_liquidity(data)
            except MalformedFrame as exc:
                raise GatewayError(
                    Classified(error_class="retryable", reason="malformed_reply", message=str(exc)),
                    "book_snapshot",
                ) from None
        finally:
            self._snapshotting.discard(pid)
        book, chain = self._books[pid], self.chains[pid]
        book.seed(snap, self.clock.now_ns())
        for ev in chain.seeded(snap.ts_ns):
            book.apply(ev, self.clock.now_ns())
        self.stats["snapshots"] += 1
        self.stats[f"snapshots.{why}"] += 1
        if why not in ("start", "connect", "refresh", "poll"):
            # a warning: shown on the run's console (a reconnect or a chain gap is news)
            log.warning(
                "paper: %s book re-seeded from the REST snapshot (%s)", self._symbol(pid), why
            )
        if self._hooks is not None:
            self._hooks.book_changed(pid)

    def _resnapshot(self, pid: int, why: str) -> None:
        if pid in self._snapshotting or self._closed:
            return
        self._snapshotting.add(pid)

        async def run() -> None:
            try:
                await self._snapshot(pid, why)
            except GatewayError as exc:
                self.stats[f"snapshot_failed.{exc.classified.reason}"] += 1
                log.warning("paper: %s snapshot failed: %s", self._symbol(pid), exc)

        self._spawn(run())

    async def _keep(self) -> None:
        """Re-read books that need it: unseeded, unconfirmed too long, or stream down."""
        s = self.settings
        tick = float(min(s.poll_s, s.refresh_s, s.quiet_quote_s)) / 4
        refresh_ns = int(self.settings.refresh_s * NS)
        poll_ns = int(self.settings.poll_s * NS)
        while not self._closed:
            await asyncio.sleep(max(tick, 0.05))
            now = self.clock.now_ns()
            up = self.stream is not None and self.stream.connected
            for pid, book in self._books.items():
                since = now - self._last_snapshot.get(pid, 0)
                quiet = book.updated_ns is None or now - book.updated_ns >= refresh_ns
                if not up:
                    if since >= poll_ns:
                        self._resnapshot(pid, "poll")
                elif not self.chains[pid].synced:
                    self._resnapshot(pid, "gap")
                elif quiet and since >= refresh_ns:
                    self._resnapshot(pid, "refresh")
            if up:
                self._confirm_quiet_quotes(now)

    def _confirm_quiet_quotes(self, now: int) -> None:
        """Quotes nothing confirmed for `quiet_quote_s` are asked by REST (while the
        stream is down the connection machine's polls ask for quotes instead)."""
        quiet = int(self.settings.quiet_quote_s * NS)
        due = [p for p in self._books if now - self._confirmed.get(p, now - quiet) >= quiet]
        if not due or (self._refresh is not None and not self._refresh.done()):
            return
        self.stats["quote_refresh"] += 1
        refresh = self._rest_quotes.refresh(due, "quote_refresh")
        self._refresh = asyncio.get_running_loop().create_task(refresh)

    # -- the stream ----------------------------------------------------------------------------
    def _on_stream_state(self, state: str, detail: str) -> None:
        if state == "connected" and self.stream is not None:
            refused = {r.split(":")[0] for r in self.stream.refused}
            self._depth_live = "book_depth" in self.settings.streams and "book_depth" not in refused
        if state in ("connected", "disconnected", "failed"):
            # A new socket missed every event since the last one: re-seed from REST
            # (while the stream is down, the keeper polls the snapshots instead).
            first = self.stream is None or self.stream.epoch <= 1
            for pid, chain in self.chains.items():
                chain.reset()
                if state == "connected":
                    self._resnapshot(pid, "connect" if first else "reconnect")
        self._emit(ConnectionChanged(channel="ws", state=state, detail=detail[:200]))

    def _on_frame(self, frame: Any) -> None:
        if self._closed:
            return
        if isinstance(frame, BboUpdated):
            self._on_bbo(frame)
        elif isinstance(frame, DepthEvent):
            self._on_depth(frame)
        elif isinstance(frame, TradeEvent):
            if frame.product_id in self._books and self._hooks is not None:
                self.stats["trades"] += 1
                self._hooks.trade(frame)
        else:
            self.stats["other_frames"] += 1

    def _on_bbo(self, bbo: BboUpdated) -> None:
        pid = bbo.product_id
        if pid not in self._books:
            return
        verdict = self.gate.check(bbo, now_ns=self.unix_ns())
        if not verdict.ok:
            self.stats[f"bbo_rejected.{verdict.reason}"] += 1
            self._rest_quotes.fallback(pid)
            return
        self.stats["bbo_stream"] += 1
        self._confirmed[pid] = self.clock.now_ns()
        self._emit(bbo)
        assert bbo.ts_venue_ns is not None  # the gate refuses quotes without a stamp
        book = self._books[pid]
        book.confirm_top(
            bbo.bid, bbo.bid_qty, bbo.ask, bbo.ask_qty, bbo.ts_venue_ns, self.clock.now_ns()
        )
        if self._hooks is not None:
            self._hooks.book_changed(pid)

    def _on_depth(self, ev: DepthEvent) -> None:
        pid = ev.product_id
        chain = self.chains.get(pid)
        if chain is None:
            return
        verdict = chain.offer(ev)
        self.stats[f"depth.{verdict}"] += 1
        if verdict == "apply":
            self._books[pid].apply(ev, self.clock.now_ns())
            if self._hooks is not None:
                self._hooks.book_changed(pid)
        elif verdict == "gap":
            log.warning("paper: %s book_depth chain broken: re-seeding", self._symbol(pid))
            self._resnapshot(pid, "gap")

    # -- quotes ----------------------------------------------------------------------------------
    async def _market_prices(self, intent: QueryMarketPrices) -> None:
        pids = list(intent.product_ids or self._books)
        missing = [p for p in pids if not self._rest_quotes.fresh(p)]
        if missing:
            try:
                await self._rest_quotes.fetch(missing, intent.kind)
            except GatewayError as exc:
                self._emit(exc.classified.to_event(intent.kind, request_id=intent.request_id))
                return
        self._rest_quotes.deliver_held(pids)

    def _pass_rest_quote(self, quote: BboUpdated) -> None:
        stamp = self.unix_ns()
        verdict = self.gate.check(quote, now_ns=stamp, ts_ns=stamp)
        if verdict.ok:
            self.stats["bbo_rest"] += 1
            self._confirmed[quote.product_id] = self.clock.now_ns()
            self._emit(quote)  # unstamped, as the Nado adapter sends a REST quote
        else:
            self.stats[f"bbo_rest_rejected.{verdict.reason}"] += 1

    # -- plumbing --------------------------------------------------------------------------------
    def _emit(self, ev: BboUpdated | ConnectionChanged | VenueError) -> None:
        if not self._closed and self._hooks is not None:
            self._hooks.emit(ev)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["task_errors"] += 1
            log.error("paper market-data task failed", exc_info=task.exception())

    def _symbol(self, pid: int) -> str:
        return next((s for s, i in self._products.items() if i.product_id == pid), str(pid))
