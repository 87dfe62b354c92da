"""NadoVenue: the engine's VenuePort over Nado's gateway (REST + one stream socket).

`start` runs discovery (adapters/nado/discovery.py) and checks the subaccount; the stream
opens only when the engine asks (`StreamConnect`, from the connection machine). `submit`
never blocks: each intent becomes a task; the tasks of one order run one at a time (its
lock), so a cancel or a status query never overtakes the placement it concerns.

What the engine hears, per intent (the SimVenue's vocabulary, adapters/sim/README.md):

- PlaceOrder: `OrderAccepted(digest)`; `OrderRejected(code)` for a venue refusal;
  `VenueError` `rate_limited` / `retryable` (provably not placed) or `unknown_outcome`
  (timeout, 5xx, lost answer: resolve with QueryOrder). Re-sending an order id re-sends
  the same signed body (same nonce, same digest); a duplicate-digest refusal (2013) then
  means "the venue has it" and answers `OrderAccepted`.
- CancelOrder: `OrderCancelled(filled_qty)` from the cancel answer; `VenueError
  (permanent, 2020)` when it was not open; `unknown_outcome` when the answer was lost.
- CancelProductOrders: one `OrderCancelled` per order cancelled.
- QueryPositions: `PositionSnapshot(request_id)` from `subaccount_info`; a failure is a
  `VenueError` with the request id, never a zero position.
- QueryOpenOrders: `OpenOrdersSnapshot(request_id)` from `orders` (orders this process
  did not place keep their digest as id).
- QueryOrder: `OrderStatus(open)` from the `order` query; for an order no longer resting,
  the end heard on the stream when that knowledge is complete (orders.py), else a
  `VenueError(retryable)` saying it cannot tell.
- QueryMarketPrices: one `BboUpdated` per product from `market_prices` (cached 1 s),
  through the BBO gate.
- StreamConnect: exactly one `ConnectionChanged(ws, connected | failed)`; later, one
  `disconnected` when the socket drops, `degraded` when it goes silent.

Pushed: `BboUpdated` (stream quotes that pass `BboGate`; a refused quote falls back to the
REST `market_price`, cached 1 s), `FillReceived` (fill id = digest + cumulative, so
duplicated or reordered frames are one fill), `OrderAccepted` on the first `order_update`
or fill of an order not yet answered by REST (the stream may beat the answer: accepted is
still said first), and `ConnectionChanged` for the stream.

When the venue ends an order on its own (an `order_update` with amount 0, or `cancelled`;
orders.py): `OrderExpired(filled_qty)` for an IOC/FOK, `OrderCancelled(filled_qty)` for a
resting order, `OrderStatus(filled)` when the fills heard fall short of a complete fill
(nothing when they cover it). `filled_qty` is the larger of the fills heard and `original -
remaining`; the report waits up to two round trips for fill frames still on their way
(their prices), and a later update that raises the total is reported again as an
`OrderStatus`. An order that ended across a stream gap is reported with `filled_qty=None`
(the engine asks QueryOrder).

Quotes are kept confirmed: a product whose stream has said nothing for `quiet_quote_s`
(half the engine's BBO age limit) is asked by REST (`market_prices`); the answer passes the
same gate and reaches the engine as a fresh `BboUpdated` (Nado pushes BBO only on change,
nado-protocol.md §13).

Every quote the engine hears (pushed or REST) carries the venue's oracle price
(`oracle_price`, the price band's reference, RELIABILITY D5) when the adapter holds one no
older than `oracle_max_age_s`, else none. Nado's quote sources carry no oracle
(`best_bid_offer`, `market_prices`), so it comes from `all_products` (`oracle_price_x18`,
nado-protocol.md §6.1; the SDK's `PerpProduct`): read at discovery, then every
`oracle_refresh_s` (IP weight 5, §8: 60 weight/min of the 2400 budget at 5 s). How often
Nado itself moves its oracle is not documented (unverified); the age bound is ours, counted
from the answer. A failed read keeps the last price until it is too old; then quotes go
unstamped, and the engine refuses entries on a product whose oracle was once known and is
no more (engine/ledger.py, machines/build.py `within_price_band`).

A lost push: an IOC/FOK whose end is not heard within `probe_rtts` round trips (measured
on the placements) after its ack, with the stream up since the send, is asked about at
once: what the stream said, then the archive (`orders` by digest; an IOC never rests, so
the `order` query would only say 2020); a decisive answer is emitted as an `OrderStatus`.
Without an archive (`venue serve`) the probe cannot decide and the machine's own
deadlines chase the order. Across a stream gap the connection machine's audit asks.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from collections.abc import Coroutine
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from adapters.base import EventSink
from adapters.base import ProductInfo
from adapters.nado.archive import ArchiveClient
from adapters.nado.archive import ArchiveOrder
from adapters.nado.bbo import BboGate
from adapters.nado.bbo import BboLimits
from adapters.nado.client import ClientConfig
from adapters.nado.client import GatewayClient
from adapters.nado.client import GatewayError
from adapters.nado.discovery import Discovery
from adapters.nado.discovery import DiscoveryError
from adapters.nado.discovery import Expectations
from adapters.nado.discovery import VenueUnavailable
from adapters.nado.discovery import discover
from adapters.nado.errors import Classified
from adapters.nado.mapping import NadoFill
from adapters.nado.mapping import NadoOrderUpdate
from adapters.nado.mapping import NadoPositionChange
from adapters.nado.mapping import NotRepresentable
from adapters.nado.mapping import StreamError
from adapters.nado.mapping import StreamFrame
from adapters.nado.mapping import order_amount_x18
from adapters.nado.mapping import order_price_x18
from adapters.nado.orders import OrderEntry
from adapters.nado.orders import Unknown
from adapters.nado.orders import status_from_knowledge
from adapters.nado.queries import SymbolInfo
from adapters.nado.queries import open_orders_snapshot
from adapters.nado.queries import parse_all_products
from adapters.nado.queries import parse_cancel_result
from adapters.nado.queries import parse_multi_orders
from adapters.nado.queries import parse_order
from adapters.nado.queries import parse_place_result
from adapters.nado.queries import parse_subaccount_info
from adapters.nado.ratelimit import LimiterConfig
from adapters.nado.ratelimit import Priority
from adapters.nado.ratelimit import RateLimiter
from adapters.nado.ratelimit import Window
from adapters.nado.ratelimit import execute_weight
from adapters.nado.ratelimit import priority_for
from adapters.nado.ratelimit import query_weight
from adapters.nado.rest_quotes import RestQuotes
from adapters.nado.signing import Secret
from adapters.nado.signing import Signer
from adapters.nado.stream import StreamClient
from adapters.nado.stream import StreamConfig
from adapters.nado.timing import Timing
from adapters.nado.wire import MalformedFrame
from engine import crashpoints
from engine.clock import Clock
from engine.clock import TimerHandle
from engine.events import BboUpdated
from engine.events import ConnectionChanged
from engine.events import Event
from engine.events import FillReceived
from engine.events import OrderAccepted
from engine.events import OrderCancelled
from engine.events import OrderExpired
from engine.events import OrderRejected
from engine.events import OrderStatus
from engine.events import VenueError
from engine.intents import CancelOrder
from engine.intents import CancelProductOrders
from engine.intents import Intent
from engine.intents import PlaceOrder
from engine.intents import QueryMarketPrices
from engine.intents import QueryOpenOrders
from engine.intents import QueryOrder
from engine.intents import QueryPositions
from engine.intents import StreamConnect

__all__ = ["NadoSettings", "NadoVenue"]

log = logging.getLogger("dnpair.nado")

NOT_FOUND_CODES = frozenset({2020, 2058})
DUPLICATE_CODE = 2013
TAG_SPACE = 1 << 20
NS = 1_000_000_000


@attrs.frozen(kw_only=True)
class NadoSettings:
    gateway_url: str  # e.g. https://gateway.prod.nado.xyz/v1
    pair: tuple[str, ...]
    subaccount_name: str = "default"
    expect: Expectations = attrs.field(factory=Expectations)
    timing: Timing = attrs.field(factory=Timing)
    client: ClientConfig = attrs.field(factory=ClientConfig)
    stream: StreamConfig = attrs.field(factory=StreamConfig)
    limiter: LimiterConfig = attrs.field(factory=LimiterConfig)
    bbo: BboLimits = attrs.field(factory=BboLimits)
    quote_cache_s: Decimal = Decimal(1)  # REST fallback quotes are reused this long
    # A product's quote unconfirmed (no push, no REST answer) this long is asked by REST:
    # half the engine's bbo_max_age (2 s), so a quiet book stays tradable (§13, Q9).
    quiet_quote_s: Decimal = Decimal(1)
    # The oracle price (all_products) is read again this often, and stamped on quotes
    # only while younger than `oracle_max_age_s` (two missed reads tolerated).
    oracle_refresh_s: Decimal = Decimal(5)
    oracle_max_age_s: Decimal = Decimal(15)
    # An IOC/FOK whose end is unheard this many round trips after its ack is asked about
    # at once; the same wait bounds how long an end waits for its fill frames.
    probe_rtts: int = 2
    probe_floor_s: Decimal = Decimal("0.02")
    probe_cap_s: Decimal = Decimal(2)
    discovery_attempts: int = 3
    # The indexer, for orders that ended while the stream had a gap (None: not used).
    archive_url: str | None = None
    archive_settle_s: int = 10  # its entries are believed once this quiet (indexing lag)
    # Per product, besides best_bid_offer. position_change is only counted (§12.4).
    private_streams: tuple[str, ...] = ("fill", "order_update", "position_change")
    seed: int = 0  # the limiter's backoff jitter

    @property
    def ws_url(self) -> str:
        base = self.gateway_url.rstrip("/")
        if base.startswith("https://"):
            base = "wss://" + base[len("https://") :]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://") :]
        return base + "/subscribe"


class NadoVenue:
    name = "nado"

    def __init__(
        self,
        settings: NadoSettings,
        key: Secret,
        *,
        clock: Clock,
        unix_ns: Callable[[], int],
    ) -> None:
        """`clock` is monotonic (the engine's); `unix_ns` is wall time for nonces,
        expirations, stream authentication and quote ages."""
        self.settings = settings
        self._key = key
        self.clock = clock
        self.unix_ns = unix_ns
        limits = settings.limiter
        if "archive" not in limits.windows:  # its own host and budget (§8)
            windows = {**limits.windows, "archive": (Window(2400, 60 * NS), Window(400, 10 * NS))}
            limits = attrs.evolve(limits, windows=windows)
        self.limiter = RateLimiter(clock, random.Random(settings.seed), limits)
        self.client = GatewayClient(
            settings.gateway_url, self.limiter, clock, unix_ns, settings.client
        )
        self.gate = BboGate(settings.bbo)
        self.archive: ArchiveClient | None = None
        if settings.archive_url is not None:
            self.archive = ArchiveClient(
                settings.archive_url,
                self.limiter,
                unix_ns=unix_ns,
                settle_s=settings.archive_settle_s,
                timeout_s=settings.client.timeout_s,
            )
        self.stats: Counter[str] = Counter()
        self.discovery: Discovery | None = None
        self.signer: Signer | None = None
        self.stream: StreamClient | None = None
        self._products: dict[str, ProductInfo] = {}
        self._symbols: dict[int, SymbolInfo] = {}
        self._sink: EventSink | None = None
        self._closed = False
        self._shut = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.orders: dict[str, OrderEntry] = {}  # by engine order id
        self._by_digest: dict[str, OrderEntry] = {}
        self._tag = 0
        self._rest_quotes = RestQuotes(
            query=lambda *a, **k: self.client.query(*a, **k),
            known=lambda pid: pid in self._symbols,
            now_ns=self.clock.now_ns,
            cache_ns=self._cache_ns,
            deliver=self._pass_rest_quote,
            stats=self.stats,
        )
        self._confirmed: dict[int, int] = {}  # pid -> clock ns a quote last reached the engine
        self._refresh: asyncio.Task[None] | None = None
        self._oracles: dict[int, tuple[int, Decimal]] = {}  # pid -> (clock ns read, price)
        self._oracle_task: asyncio.Task[None] | None = None
        self._timers: set[TimerHandle] = set()
        self.rtt_ns: int | None = None  # placement round trips, smoothed
        self.fill_latency_ns: list[int] = []  # venue stamp -> our receipt, per fill frame

    # -- VenuePort -------------------------------------------------------------------------
    @property
    def products(self) -> dict[str, ProductInfo]:
        return dict(self._products)

    @property
    def product_ids(self) -> tuple[int, ...]:
        return tuple(self._symbols)

    async def start(self, sink: EventSink) -> None:
        if self._sink is not None:
            raise RuntimeError("NadoVenue already started")
        try:
            await self._start(sink)
        except BaseException:
            await self.close()  # refused: leave no socket open
            raise

    async def _start(self, sink: EventSink) -> None:
        found = await self._discover()
        self.discovery = found
        self._symbols = {i.product_id: i for i in found.symbols.values()}
        self._products = found.products
        self.signer = Signer(
            self._key,
            chain_id=found.contracts.chain_id,
            endpoint_addr=found.contracts.endpoint_addr,
            subaccount_name=self.settings.subaccount_name,
        )
        await self._check_subaccount()
        sender = self.signer.sender
        subs: list[dict[str, Any]] = []
        for pid in self._symbols:
            subs.append({"type": "best_bid_offer", "product_id": pid})
            subs.extend(
                {"type": kind, "subaccount": sender, "product_id": pid}
                for kind in self.settings.private_streams
            )
        self.stream = StreamClient(
            self.settings.ws_url,
            self.signer,
            subs,
            self._on_frame,
            self._on_stream_state,
            clock=self.clock,
            unix_ms=lambda: self.unix_ns() // 1_000_000,
            timing=self.settings.timing,
            config=self.settings.stream,
        )
        self._sink = sink
        self._later_ns(self._quiet_ns(), self._quote_check)
        self._start_oracles(found.oracles)
        log.info(
            "nado venue ready: chain %d, %s, subaccount %s",
            found.contracts.chain_id,
            ", ".join(f"{s}={i.product_id}" for s, i in found.symbols.items()),
            sender,
        )

    def submit(self, intent: Intent) -> None:
        if self._closed:
            return
        if self._sink is None:
            raise RuntimeError("NadoVenue.submit before start")
        self.stats[f"intent.{intent.kind}"] += 1
        if isinstance(intent, PlaceOrder):
            entry = self._entry_for(intent)
            if entry is not None:
                self._spawn(self._place(entry))
        elif isinstance(intent, CancelOrder):
            self._spawn(self._cancel(intent))
        elif isinstance(intent, CancelProductOrders):
            self._spawn(self._cancel_products(intent))
        elif isinstance(intent, QueryPositions):
            self._spawn(self._positions(intent))
        elif isinstance(intent, QueryOpenOrders):
            self._spawn(self._open_orders(intent))
        elif isinstance(intent, QueryOrder):
            self._spawn(self._order_status(intent))
        elif isinstance(intent, QueryMarketPrices):
            self._spawn(self._market_prices(intent))
        elif isinstance(intent, StreamConnect):
            assert self.stream is not None
            self.stream.connect(intent.attempt)
        # Engine-side intents (alerts, halt) have nothing to do with the venue.

    async def close(self) -> None:
        if self._shut:
            return
        self._shut = True
        self._closed = True
        if self.stream is not None:
            await self.stream.close()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        tasks = list(self._tasks) + self._rest_quotes.tasks()
        if self._refresh is not None:
            tasks.append(self._refresh)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.limiter.close()
        await self.client.aclose()
        if self.archive is not None:
            await self.archive.aclose()

    # -- start-up ----------------------------------------------------------------------------
    async def _discover(self) -> Discovery:
        async def query(params: Any) -> Any:
            return await self.client.query(params, request="discovery", priority=Priority.RISK)

        last: GatewayError | None = None
        for attempt in range(1, self.settings.discovery_attempts + 1):
            try:
                return await discover(query, self.settings.pair, self.settings.expect)
            except GatewayError as exc:
                last = exc
                if exc.error_class == "permanent":
                    break
                await asyncio.sleep(min(0.5 * attempt, 2.0))
        assert last is not None
        error = DiscoveryError if last.error_class == "permanent" else VenueUnavailable
        raise error(
            f"venue discovery failed at {self.settings.gateway_url}: {last.classified.reason}"
            f"{': ' + last.classified.message if last.classified.message else ''}"
        )

    async def _check_subaccount(self) -> None:
        assert self.signer is not None
        try:
            data = await self.client.query(
                {"type": "subaccount_info", "subaccount": self.signer.sender},
                request="discovery",
                priority=Priority.RISK,
            )
            info = parse_subaccount_info(data)
        except (GatewayError, MalformedFrame) as exc:
            permanent = isinstance(exc, GatewayError) and exc.error_class == "permanent"
            error = DiscoveryError if permanent else VenueUnavailable
            raise error(f"cannot read subaccount {self.signer.sender}: {exc}") from None
        if not info.exists:
            raise DiscoveryError(
                f"subaccount {self.signer.sender} does not exist on this venue (deposit first)"
            )

    # -- plumbing ------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["task_errors"] += 1
            log.error("nado venue task failed", exc_info=task.exception())

    def _emit(self, ev: Event) -> None:
        if self._closed or self._sink is None:
            return
        self.stats[f"event.{ev.kind}"] += 1
        self._sink(ev)

    def _error(
        self,
        classified: Classified,
        request: str,
        *,
        order_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self._emit(classified.to_event(request, order_id=order_id, request_id=request_id))

    def _unreadable(
        self,
        request: str,
        what: str,
        exc: Exception,
        *,
        request_id: str | None,
        order_id: str | None = None,
    ) -> None:
        """A reply we cannot read is a retryable error for the asker, never a guess."""
        self._emit(
            VenueError(
                error_class="retryable",
                request=request,
                request_id=request_id,
                order_id=order_id,
                message=f"unreadable {what}: {exc}"[:300],
            )
        )

    def _now_ms(self) -> int:
        return self.unix_ns() // 1_000_000

    def _next_tag(self) -> int:
        self._tag = (self._tag + 1) % TAG_SPACE
        return self._tag

    def _stream_epoch(self) -> tuple[int, bool]:
        if self.stream is None:
            return 0, False
        return self.stream.epoch, self.stream.connected

    # -- placing -------------------------------------------------------------------------------
    def _entry_for(self, intent: PlaceOrder) -> OrderEntry | None:
        """The order's entry: signed now (digest known before sending), or the one made
        for the first send of this id. None if nothing may be sent (already answered)."""
        entry = self.orders.get(intent.order_id)
        if entry is not None:
            if entry.intent != intent:
                self.stats["order_id_reused"] += 1
                self._later(
                    VenueError(
                        error_class="permanent",
                        request=intent.kind,
                        order_id=intent.order_id,
                        message="order id reused with different fields; not sent",
                    )
                )
                return None
            self.stats["resends"] += 1
            return entry
        info = self._symbols.get(intent.product_id)
        if info is None:
            self._later(
                OrderRejected(order_id=intent.order_id, reason="product not traded by this run")
            )
            return None
        assert self.signer is not None
        now_ms = self._now_ms()
        tag = self._next_tag()
        try:
            signed = self.signer.sign_order(
                intent.product_id,
                price_x18=order_price_x18(intent.price, info.price_increment_x18),
                amount_x18=order_amount_x18(intent.side, intent.qty, info.size_increment_x18),
                expiration=self.settings.timing.expiration(now_ms // 1000, intent.tif),
                nonce=self.settings.timing.nonce(now_ms, tag),
                tif=intent.tif,
                reduce_only=intent.reduce_only,
                client_id=tag,
            )
        except (NotRepresentable, ValueError) as exc:
            self._later(OrderRejected(order_id=intent.order_id, reason=f"not sent: {exc}"))
            return None
        entry = OrderEntry(intent=intent, signed=signed)
        self.orders[intent.order_id] = entry
        self._by_digest[signed.digest] = entry
        return entry

    def _later(self, ev: Event) -> None:
        asyncio.get_running_loop().call_soon(self._emit, ev)

    def _later_ns(self, delay_ns: int, callback: Callable[[], None]) -> None:
        """A timer on the engine's clock, cancelled by `close`."""
        if self._closed:
            return
        box: list[TimerHandle] = []

        def fire() -> None:
            self._timers.discard(box[0])
            if not self._closed:
                callback()

        box.append(self.clock.call_later(max(delay_ns, 0), fire))
        self._timers.add(box[0])

    async def _place(self, entry: OrderEntry) -> None:
        intent = entry.intent
        async with entry.lock:
            if entry.placement == "accepted":
                # Already placed: say so again, never place twice.
                self._emit(OrderAccepted(order_id=entry.order_id, digest=entry.digest))
                return
            if entry.placement == "rejected":
                self._emit(OrderRejected(order_id=entry.order_id, reason="rejected earlier"))
                return
            if entry.sends == 0:
                epoch, up = self._stream_epoch()
                entry.sent_epoch = epoch if up else None
                entry.sent_unix_s = self.unix_ns() // NS
            entry.sends += 1
            entry.placement = "sending"
            sent_ns = self.clock.now_ns()
            try:
                data = await self.client.execute(
                    entry.signed.body(),
                    request=intent.kind,
                    priority=priority_for(intent),
                    weight=execute_weight("place_order"),
                )
                digest = parse_place_result(data)
            except GatewayError as exc:
                self._placement_failed(entry, exc.classified)
                return
            except MalformedFrame:
                entry.placement = "unknown"
                entry.had_unknown = True
                self._emit(
                    VenueError(
                        error_class="unknown_outcome",
                        request=intent.kind,
                        order_id=entry.order_id,
                        message="unreadable placement answer",
                    )
                )
                return
            crashpoints.sent(entry.order_id)  # no-op unless DNPAIR_CRASH_AT (crash test)
            if digest != entry.digest:
                self.stats["digest_mismatch"] += 1
                log.warning("venue digest %s differs from ours %s", digest, entry.digest)
            now = self.clock.now_ns()
            self._note_rtt(now - sent_ns)
            entry.acked_ns = now
            self._accepted(entry)
            if entry.immediate and entry.ended is None:
                # Its outcome is decided at the venue already: if the stream does not
                # tell within a couple of round trips, ask (issue 11, item 7).
                self._later_ns(self._probe_ns(), lambda: self._probe_due(entry))

    def _note_rtt(self, rtt_ns: int) -> None:
        self.rtt_ns = rtt_ns if self.rtt_ns is None else (3 * self.rtt_ns + rtt_ns) // 4

    def _probe_ns(self) -> int:
        s = self.settings
        rtt = self.rtt_ns if self.rtt_ns is not None else int(s.probe_floor_s * NS)
        wait = s.probe_rtts * rtt
        return min(max(wait, int(s.probe_floor_s * NS)), int(s.probe_cap_s * NS))

    def _probe_due(self, entry: OrderEntry) -> None:
        """Two round trips after an IOC/FOK's ack: its end is reported, or asked for."""
        if entry.ended is not None:
            self._settle_end(entry, final=True)
            return
        if entry.end_reported or entry.heard_qty >= entry.qty:
            return  # answered (a cancel), or completely filled by the fills heard
        epoch, up = self._stream_epoch()
        if not up or entry.sent_epoch != epoch:
            # Sent or acked while the stream was down or broken: its pushes may simply be
            # gone with the socket, and the connection machine's audit (on reconnect, or
            # its polls) asks about every order in flight.
            self.stats["probe_skipped_stream_gap"] += 1
            return
        self.stats["probes"] += 1
        self._spawn(self._probe(entry))

    async def _probe(self, entry: OrderEntry) -> None:
        """An IOC/FOK never rests: the `order` query could only say 2020, so ask what
        knows how it ended (what the stream said, then the archive) at once."""
        async with entry.lock:
            if entry.ended is not None or entry.end_reported or entry.heard_qty >= entry.qty:
                self._settle_end(entry, final=True)
                return
            answer = await self._ended(entry, None)
            if entry.end_reported or entry.ended is not None:
                self._settle_end(entry, final=True)  # heard while the archive was asked
                return
            if not isinstance(answer, OrderStatus) or answer.state in ("open", "not_found"):
                self.stats["probe_undecided"] += 1
                return  # the machine's own deadlines chase it
            entry.end_reported = True
            entry.reported_filled = answer.filled_qty
            self.stats["probe_resolved"] += 1
            self._emit(answer)

    def _accepted(self, entry: OrderEntry) -> None:
        entry.placement = "accepted"
        if not entry.accepted_reported:
            entry.accepted_reported = True
            self._emit(OrderAccepted(order_id=entry.order_id, digest=entry.digest))

    def _placement_failed(self, entry: OrderEntry, c: Classified) -> None:
        oid = entry.order_id
        if c.code == DUPLICATE_CODE or entry.seen_placed or entry.accepted_reported:
            # The venue holds this digest: an earlier send of the same body arrived (2013),
            # or the stream announced it while this answer was lost.
            self.stats[
                "duplicate_digest" if c.code == DUPLICATE_CODE else "accepted_by_stream"
            ] += 1
            self._accepted(entry)
            return
        if entry.had_unknown:
            # An earlier send of this body may have been placed: whatever this send's
            # failure, the order's fate is still open (never "refused" or "rejected").
            entry.placement = "unknown"
            self._emit(
                VenueError(
                    error_class="unknown_outcome",
                    request="place_order",
                    order_id=oid,
                    code=c.code,
                    message=f"re-send failed ({c.reason}); an earlier send may be live",
                )
            )
            return
        if c.error_class == "permanent":
            entry.placement = "rejected"
            self._emit(OrderRejected(order_id=oid, reason=c.message or c.reason, code=c.code))
            return
        if c.error_class == "unknown_outcome":
            entry.placement = "unknown"
            entry.had_unknown = True
        else:
            entry.placement = "refused"  # rate limited, never connected, held back: not sent
        self._error(c, "place_order", order_id=oid)

    # -- cancelling ----------------------------------------------------------------------------
    async def _cancel(self, intent: CancelOrder) -> None:
        entry = self.orders.get(intent.order_id)
        digest = entry.digest if entry is not None else intent.digest
        if digest is None:
            self._emit(
                VenueError(
                    error_class="permanent",
                    request=intent.kind,
                    order_id=intent.order_id,
                    code=2020,
                    message="unknown order id: no digest to cancel",
                )
            )
            return
        if entry is None:
            await self._send_cancel(intent, None, digest)
            return
        entry.cancels_in_flight += 1
        try:
            async with entry.lock:
                if entry.placement in ("new", "refused", "rejected"):
                    self._emit(
                        VenueError(
                            error_class="permanent",
                            request=intent.kind,
                            order_id=intent.order_id,
                            code=2020,
                            message="not open: the placement never reached the venue",
                        )
                    )
                    return
                await self._send_cancel(intent, entry, digest)
        finally:
            entry.cancels_in_flight -= 1

    async def _send_cancel(
        self, intent: CancelOrder, entry: OrderEntry | None, digest: str
    ) -> None:
        assert self.signer is not None
        signed = self.signer.sign_cancel(
            [intent.product_id],
            [digest],
            nonce=self.settings.timing.nonce(self._now_ms(), self._next_tag()),
        )
        try:
            data = await self.client.execute(
                signed.body(),
                request=intent.kind,
                priority=Priority.RISK,
                weight=execute_weight("cancel_orders", n_digests=1),
            )
            gone = parse_cancel_result(data)
        except GatewayError as exc:
            self._error(exc.classified, intent.kind, order_id=intent.order_id)
            return
        except MalformedFrame:
            self._emit(
                VenueError(
                    error_class="unknown_outcome",
                    request=intent.kind,
                    order_id=intent.order_id,
                    message="unreadable cancel answer",
                )
            )
            return
        mine = next((o for o in gone if o.digest == digest), None)
        if mine is None:
            self._emit(
                VenueError(
                    error_class="permanent",
                    request=intent.kind,
                    order_id=intent.order_id,
                    code=2020,
                    message="not open (filled, expired or cancelled already)",
                )
            )
            return
        if entry is not None:
            entry.cancel_filled = mine.filled_qty
            entry.end_reported = True
            entry.reported_filled = max(mine.filled_qty, entry.filled_evidence)
            entry.seen_placed = True
        self._emit(
            OrderCancelled(order_id=intent.order_id, filled_qty=mine.filled_qty, reason="cancelled")
        )

    async def _cancel_products(self, intent: CancelProductOrders) -> None:
        assert self.signer is not None
        pids = intent.product_ids or self.product_ids
        signed = self.signer.sign_cancel(
            pids, None, nonce=self.settings.timing.nonce(self._now_ms(), self._next_tag())
        )
        try:
            data = await self.client.execute(
                signed.body(),
                request=intent.kind,
                priority=Priority.RISK,
                weight=execute_weight("cancel_product_orders", n_products=len(pids)),
            )
            gone = parse_cancel_result(data)
        except GatewayError as exc:
            self._error(exc.classified, intent.kind, request_id=intent.request_id)
            return
        except MalformedFrame:
            self._emit(
                VenueError(
                    error_class="unknown_outcome",
                    request=intent.kind,
                    request_id=intent.request_id,
                    message="unreadable cancel answer",
                )
            )
            return
        for order in gone:
            entry = self._by_digest.get(order.digest)
            if entry is not None:
                entry.cancel_filled = order.filled_qty
                entry.end_reported = True
            oid = entry.order_id if entry is not None else order.digest
            self._emit(OrderCancelled(order_id=oid, filled_qty=order.filled_qty, reason="product"))

    # -- reads -----------------------------------------------------------------------------------
    def _pids(self, asked: tuple[int, ...]) -> tuple[int, ...]:
        return asked or self.product_ids

    async def _positions(self, intent: QueryPositions) -> None:
        assert self.signer is not None
        rid = intent.request_id
        try:
            data = await self.client.query(
                {"type": "subaccount_info", "subaccount": self.signer.sender},
                request=intent.kind,
                priority=priority_for(intent),
            )
            snapshot = parse_subaccount_info(data).position_snapshot(
                self._pids(intent.product_ids), request_id=rid
            )
        except GatewayError as exc:
            self._error(exc.classified, intent.kind, request_id=rid)
            return
        except MalformedFrame as exc:
            self._unreadable(intent.kind, "positions", exc, request_id=rid)
            return
        self._emit(snapshot)

    async def _open_orders(self, intent: QueryOpenOrders) -> None:
        assert self.signer is not None
        rid = intent.request_id
        pids = self._pids(intent.product_ids)
        try:
            data = await self.client.query(
                {"type": "orders", "sender": self.signer.sender, "product_ids": list(pids)},
                request=intent.kind,
                priority=priority_for(intent),
                weight=query_weight("orders", n_products=len(pids)),
            )
            by_product = parse_multi_orders(data)
        except GatewayError as exc:
            self._error(exc.classified, intent.kind, request_id=rid)
            return
        except MalformedFrame as exc:
            self._unreadable(intent.kind, "open orders", exc, request_id=rid)
            return
        orders = [o for pid in pids for o in by_product.get(pid, [])]
        for order in orders:
            entry = self._by_digest.get(order.digest)
            if entry is not None:
                entry.seen_placed = True
        self._emit(open_orders_snapshot(orders, pids, self._order_id_for, request_id=rid))

    def _order_id_for(self, digest: str) -> str | None:
        entry = self._by_digest.get(digest)
        return None if entry is None else entry.order_id

    async def _order_status(self, intent: QueryOrder) -> None:
        rid, oid = intent.request_id, intent.order_id
        entry = self.orders.get(oid)
        if entry is None:
            self._emit(
                VenueError(
                    error_class="permanent",
                    request=intent.kind,
                    request_id=rid,
                    order_id=oid,
                    message="order id not placed by this process: its digest is unknown here",
                )
            )
            return
        async with entry.lock:
            if entry.placement in ("new", "refused", "rejected"):
                self._emit(await self._ended(entry, rid))
                return
            try:
                data = await self.client.query(
                    {
                        "type": "order",
                        "product_id": entry.intent.product_id,
                        "digest": entry.digest,
                    },
                    request=intent.kind,
                    priority=priority_for(intent),
                )
                order = parse_order(data)
            except GatewayError as exc:
                if exc.code in NOT_FOUND_CODES:
                    self._emit(await self._ended(entry, rid))
                else:
                    self._error(exc.classified, intent.kind, order_id=oid, request_id=rid)
                return
            except MalformedFrame as exc:
                self._unreadable(intent.kind, "order", exc, request_id=rid, order_id=oid)
                return
            entry.seen_placed = True
            if entry.placement in ("unknown", "sending"):
                entry.placement = "accepted"
            self._emit(order.to_status(oid, request_id=rid))

    async def _ended(self, entry: OrderEntry, rid: str | None) -> Event:
        """How an order the venue no longer lists as resting ended: from what this process
        heard when that is complete, else from the archive, else "cannot tell"."""
        epoch, up = self._stream_epoch()
        try:
            return status_from_knowledge(entry, request_id=rid, stream_epoch=epoch, stream_up=up)
        except Unknown as exc:
            reason = exc.reason
        if self.archive is not None:
            try:
                found = (await self.archive.orders([entry.digest], request="query_order")).get(
                    entry.digest
                )
            except GatewayError as err:
                reason += f"; archive: {err.classified.reason}"
            else:
                status = self._from_archive(entry, found, rid)
                if status is not None:
                    self.stats["status_from_archive"] += 1
                    return status
                reason += "; not in the archive yet"
        self.stats["status_unknown"] += 1
        return VenueError(
            error_class="retryable",
            request="query_order",
            request_id=rid,
            order_id=entry.order_id,
            message=f"cannot tell how it ended: {reason}",
        )

    def _from_archive(
        self, entry: OrderEntry, found: ArchiveOrder | None, rid: str | None
    ) -> OrderStatus | None:
        archive = self.archive
        assert archive is not None
        oid = entry.order_id
        if found is None:
            # Not indexed: believable as "never placed" only long after the send.
            sent = entry.sent_unix_s
            quiet = sent is not None and self.unix_ns() // NS - sent >= archive.settle_s
            if entry.placement == "unknown" and not entry.seen_placed and quiet:
                return OrderStatus(order_id=oid, state="not_found", request_id=rid)
            return None
        if not archive.settled(found):
            return None
        filled = min(max(found.filled, entry.filled_evidence), entry.qty)
        ended = "expired" if entry.immediate else "cancelled"
        state = "filled" if filled >= entry.qty else ended
        return OrderStatus(order_id=oid, state=state, filled_qty=filled, request_id=rid)

    # -- the oracle price ----------------------------------------------------------------------
    def _start_oracles(self, initial: Mapping[int, Decimal]) -> None:
        """Hold the oracle prices read at start-up and keep reading them."""
        self._note_oracles(initial)
        self._later_ns(self._oracle_refresh_ns(), self._oracle_check)

    def _oracle_refresh_ns(self) -> int:
        return max(int(self.settings.oracle_refresh_s * NS), 1)

    def _note_oracles(self, prices: Mapping[int, Decimal]) -> None:
        now = self.clock.now_ns()
        for pid, price in prices.items():
            if pid in self._symbols and price > 0:  # 0: the venue gives none
                self._oracles[pid] = (now, price)

    def oracle(self, pid: int) -> Decimal | None:
        """The oracle price of `pid` if read within `oracle_max_age_s`, else None."""
        held = self._oracles.get(pid)
        if held is None:
            return None
        if self.clock.now_ns() - held[0] > int(self.settings.oracle_max_age_s * NS):
            return None
        return held[1]

    def _oracle_check(self) -> None:
        running = self._oracle_task is not None and not self._oracle_task.done()
        if not running:
            self.stats["oracle_refresh"] += 1
            task = asyncio.get_running_loop().create_task(self._refresh_oracles())
            self._oracle_task = task
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        self._later_ns(self._oracle_refresh_ns(), self._oracle_check)

    async def _refresh_oracles(self) -> None:
        try:
            data = await self.client.query(
                {"type": "all_products"},
                request="oracle_refresh",
                priority=Priority.READ,
                weight=query_weight("all_products"),
            )
            books = parse_all_products(data)
        except GatewayError as exc:
            self.stats[f"oracle_refresh_failed.{exc.classified.reason}"] += 1
            return
        except MalformedFrame:
            self.stats["oracle_refresh_failed.malformed_reply"] += 1
            return
        self._note_oracles({pid: b.oracle_price for pid, b in books.items()})

    def _stamped(self, quote: BboUpdated) -> BboUpdated:
        """The quote with the oracle price held now (None when unknown or too old)."""
        oracle = self.oracle(quote.product_id)
        if oracle == quote.oracle_price:
            return quote
        return attrs.evolve(quote, oracle_price=oracle)

    # -- quotes ------------------------------------------------------------------------------------
    async def _market_prices(self, intent: QueryMarketPrices) -> None:
        pids = self._pids(intent.product_ids)
        missing = [p for p in pids if not self._rest_quotes.fresh(p)]
        if missing:
            try:
                await self._rest_quotes.fetch(missing, intent.kind)
            except GatewayError as exc:
                self._error(exc.classified, intent.kind, request_id=intent.request_id)
                return
        self._rest_quotes.deliver_held(pids)

    def _cache_ns(self) -> int:
        return int(self.settings.quote_cache_s * NS)

    def _pass_rest_quote(self, quote: BboUpdated) -> None:
        verdict = self.gate.check(quote, now_ns=self.unix_ns(), ts_ns=self.unix_ns())
        if verdict.ok:
            self.stats["bbo_rest"] += 1
            self._confirmed[quote.product_id] = self.clock.now_ns()
            self._emit(self._stamped(quote))
        else:
            self.stats[f"bbo_rest_rejected.{verdict.reason}"] += 1

    def _quiet_ns(self) -> int:
        return max(int(self.settings.quiet_quote_s * NS), 1)

    def _quote_check(self) -> None:
        """Products whose quote nobody confirmed for `quiet_quote_s` while the stream is
        up are asked by REST.

        Nado pushes a BBO only when the book changes: on a quiet book the stream says
        nothing, and only a REST answer keeps the engine's quote confirmed (its age is
        the time since the last confirmation, engine/ledger.py)."""
        quiet = self._quiet_ns()
        now = self.clock.now_ns()
        due = [p for p in self._symbols if now - self._confirmed.get(p, now - quiet) >= quiet]
        running = self._refresh is not None and not self._refresh.done()
        _, up = self._stream_epoch()
        # While the stream is down the connection machine's polls ask for quotes.
        if due and up and not running:
            self.stats["quote_refresh"] += 1
            refresh = self._rest_quotes.refresh(due, "quote_refresh")
            self._refresh = asyncio.get_running_loop().create_task(refresh)
        # The next product to go quiet; one just asked (its answer due): half a period.
        nxt = min((self._confirmed.get(p, now) + quiet for p in self._symbols), default=now)
        self._later_ns(nxt - now if nxt > now else quiet // 2, self._quote_check)

    # -- the stream ------------------------------------------------------------------------------
    def _on_stream_state(self, state: str, detail: str) -> None:
        self._emit(ConnectionChanged(channel="ws", state=state, detail=detail[:200]))

    def _on_frame(self, frame: StreamFrame) -> None:
        if self._closed:
            return
        if isinstance(frame, BboUpdated):
            self._on_bbo(frame)
        elif isinstance(frame, NadoFill):
            self._on_fill(frame)
        elif isinstance(frame, NadoOrderUpdate):
            self._on_order_update(frame)
        elif isinstance(frame, NadoPositionChange):
            # Balance or delta is unsettled (§12.4): a trigger at most, never a position.
            self.stats["position_changes"] += 1
        elif isinstance(frame, StreamError):
            log.warning("stream error frame: %s (code %s)", frame.error, frame.code)
        else:
            self.stats["stream_replies"] += 1

    def _on_bbo(self, bbo: BboUpdated) -> None:
        if bbo.product_id not in self._symbols:
            return
        verdict = self.gate.check(bbo, now_ns=self.unix_ns())
        if verdict.ok:
            self.stats["bbo_stream"] += 1
            self._confirmed[bbo.product_id] = self.clock.now_ns()
            self._emit(self._stamped(bbo))
            return
        self.stats[f"bbo_rejected.{verdict.reason}"] += 1
        self._rest_quotes.fallback(bbo.product_id)

    def _on_fill(self, fill: NadoFill) -> None:
        assert self.signer is not None
        if fill.subaccount != self.signer.sender:
            self.stats["fills_foreign"] += 1
            return
        self.fill_latency_ns.append(self.unix_ns() - fill.ts_venue_ns)
        del self.fill_latency_ns[:-1000]
        entry = self._by_digest.get(fill.digest)
        if entry is None:
            self.stats["fills_unknown_order"] += 1
            ev: FillReceived = fill.to_event(fill.digest)
        else:
            if not entry.hear_fill(fill.fill_id, fill.cumulative_qty, fill.qty):
                self.stats["fills_duplicate"] += 1
            ev = fill.to_event(entry.order_id, side=entry.intent.side)
            self._accepted_by_stream(entry)
        self.stats["fills"] += 1
        self._emit(ev)  # the ledger counts each fill id once
        if entry is not None and entry.ended is not None and not entry.end_reported:
            self._settle_end(entry, final=False)  # the end waited for this fill's price

    def _on_order_update(self, update: NadoOrderUpdate) -> None:
        entry = self._by_digest.get(update.digest)
        if entry is None:
            self.stats["updates_unknown_order"] += 1
            return
        epoch, _ = self._stream_epoch()
        ended_now = entry.hear_update(update.reason, update.remaining_qty, epoch)
        self._accepted_by_stream(entry)
        if ended_now:
            self._settle_end(entry, final=False)
        elif entry.end_reported:
            self._correct_end(entry)

    def _accepted_by_stream(self, entry: OrderEntry) -> None:
        """Any fill or order_update of an order proves the venue has it: while its
        placement answer is still out (or was lost), say `OrderAccepted` now, so the
        engine hears accepted -> fills -> end whichever of stream and REST is first."""
        if entry.placement in ("sending", "unknown"):
            self._accepted(entry)

    def _settle_end(self, entry: OrderEntry, *, final: bool) -> None:
        """Tell the engine how an order the venue ended on its own ended, once.

        Not while our own cancel is out (its answer says it). The total is the larger of
        the fills heard and original - remaining; when the updates say more than the fills
        heard, the report waits (until `final`, two round trips) for the fill frames, so
        the ledger books their prices rather than the limit price."""
        if entry.ended is None or entry.end_reported or entry.cancels_in_flight:
            return
        evidence = entry.filled_evidence
        if entry.heard_qty < evidence and not final:
            self._later_ns(self._probe_ns(), lambda: self._settle_end(entry, final=True))
            return
        entry.end_reported = True
        oid = entry.order_id
        complete = entry.sent_epoch is not None and entry.ended_epoch == entry.sent_epoch
        if not complete:
            # Ended across a stream gap: updates or fills of it may be unheard; the
            # engine asks QueryOrder (answered from the archive, or "cannot tell").
            filled: Decimal | None = None
        else:
            filled = entry.reported_filled = evidence
        if filled is not None and filled >= entry.qty:
            if entry.heard_qty < entry.qty:
                self.stats["ends_filled_unheard"] += 1
                self._emit(
                    OrderStatus(order_id=oid, state="filled", filled_qty=filled, remaining_qty=0)
                )
            return  # else the fills said it all
        if entry.immediate:
            self._emit(OrderExpired(order_id=oid, filled_qty=filled))
        else:
            self._emit(OrderCancelled(order_id=oid, filled_qty=filled, reason="by the venue"))

    def _correct_end(self, entry: OrderEntry) -> None:
        """An update heard after the end was reported raises the total beyond what was
        said and what the fills carry: say the new total (the ledger takes the larger)."""
        said = entry.reported_filled
        evidence = entry.filled_evidence
        if said is None or evidence <= said or entry.heard_qty >= evidence:
            return
        entry.reported_filled = evidence
        self.stats["ends_corrected"] += 1
        state = (
            "filled" if evidence >= entry.qty else ("expired" if entry.immediate else "cancelled")
        )
        self._emit(
            OrderStatus(order_id=entry.order_id, state=state, filled_qty=evidence, remaining_qty=0)
        )
