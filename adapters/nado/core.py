"""What every part of the Nado adapter shares: the connections, the orders' wire facts,
and the plumbing that turns the venue's words into engine events.

`Core` holds the gateway client, the archive, the signer and the stream once start-up
(startup.py) made them; the orders this process signed, by engine order id and by digest;
and the timers and tasks `close` ends. Its methods are the only way a part reaches the
engine: `emit` (now), `later` (on the next loop turn, never inside `submit`), `later_ns`
(a timer on the engine's clock) and `spawn` (a request task).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from collections.abc import Coroutine
from decimal import Decimal
from typing import TYPE_CHECKING
from typing import Any

import attrs

from adapters.base import EventSink
from adapters.nado.archive import ArchiveClient
from adapters.nado.bbo import BboLimits
from adapters.nado.client import ClientConfig
from adapters.nado.client import GatewayClient
from adapters.nado.discovery import Expectations
from adapters.nado.errors import Classified
from adapters.nado.orders import OrderEntry
from adapters.nado.queries import SymbolInfo
from adapters.nado.ratelimit import LimiterConfig
from adapters.nado.signing import Signer
from adapters.nado.stream import StreamConfig
from adapters.nado.timing import Timing
from adapters.nado.wire import subscribe_url
from engine.core.clock import Clock
from engine.core.clock import TimerHandle
from engine.core.events import Event
from engine.core.events import VenueError

if TYPE_CHECKING:
    from adapters.nado.stream import StreamClient

__all__ = ["NS", "Core", "NadoSettings"]

log = logging.getLogger("dnpair.nado")

NS = 1_000_000_000
TAG_SPACE = 1 << 20


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
        return subscribe_url(self.gateway_url)


class Core:
    def __init__(
        self,
        settings: NadoSettings,
        *,
        clock: Clock,
        unix_ns: Callable[[], int],
        client: GatewayClient,
        archive: ArchiveClient | None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.unix_ns = unix_ns
        self.client = client
        self.archive = archive
        self.stats: Counter[str] = Counter()
        self.signer: Signer | None = None
        self.stream: StreamClient | None = None
        self.symbols: dict[int, SymbolInfo] = {}
        self.sink: EventSink | None = None
        self.closed = False
        self.orders: dict[str, OrderEntry] = {}  # by engine order id
        self.by_digest: dict[str, OrderEntry] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.timers: set[TimerHandle] = set()
        self.rtt_ns: int | None = None  # placement round trips, smoothed
        self._tag = 0

    # -- to the engine ---------------------------------------------------------------------
    def emit(self, ev: Event) -> None:
        if self.closed or self.sink is None:
            return
        self.stats[f"event.{ev.kind}"] += 1
        self.sink(ev)

    def later(self, ev: Event) -> None:
        asyncio.get_running_loop().call_soon(self.emit, ev)

    def error(
        self,
        classified: Classified,
        request: str,
        *,
        order_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.emit(classified.to_event(request, order_id=order_id, request_id=request_id))

    def unreadable(
        self,
        request: str,
        what: str,
        exc: Exception,
        *,
        request_id: str | None,
        order_id: str | None = None,
    ) -> None:
        """A reply we cannot read is a retryable error for the asker, never a guess."""
        self.emit(
            VenueError(
                error_class="retryable",
                request=request,
                request_id=request_id,
                order_id=order_id,
                message=f"unreadable {what}: {exc}"[:300],
            )
        )

    # -- tasks and timers ------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.stats["task_errors"] += 1
            log.error("nado venue task failed", exc_info=task.exception())

    def later_ns(self, delay_ns: int, callback: Callable[[], None]) -> None:
        """A timer on the engine's clock, cancelled by `close`."""
        if self.closed:
            return
        box: list[TimerHandle] = []

        def fire() -> None:
            self.timers.discard(box[0])
            if not self.closed:
                callback()

        box.append(self.clock.call_later(max(delay_ns, 0), fire))
        self.timers.add(box[0])

    # -- facts shared by the parts ---------------------------------------------------------
    @property
    def product_ids(self) -> tuple[int, ...]:
        return tuple(self.symbols)

    def pids(self, asked: tuple[int, ...]) -> tuple[int, ...]:
        return asked or self.product_ids

    def now_ms(self) -> int:
        return self.unix_ns() // 1_000_000

    def nonce(self) -> int:
        """A fresh nonce for a cancel (placements take theirs when signed)."""
        return self.settings.timing.nonce(self.now_ms(), self.next_tag())

    def next_tag(self) -> int:
        self._tag = (self._tag + 1) % TAG_SPACE
        return self._tag

    def stream_epoch(self) -> tuple[int, bool]:
        if self.stream is None:
            return 0, False
        return self.stream.epoch, self.stream.connected

    def note_rtt(self, rtt_ns: int) -> None:
        self.rtt_ns = rtt_ns if self.rtt_ns is None else (3 * self.rtt_ns + rtt_ns) // 4

    def probe_ns(self) -> int:
        """`probe_rtts` measured round trips, within [probe_floor_s, probe_cap_s]."""
        s = self.settings
        rtt = self.rtt_ns if self.rtt_ns is not None else int(s.probe_floor_s * NS)
        wait = s.probe_rtts * rtt
        return min(max(wait, int(s.probe_floor_s * NS)), int(s.probe_cap_s * NS))

    def order_id_for(self, digest: str) -> str | None:
        entry = self.by_digest.get(digest)
        return None if entry is None else entry.order_id
