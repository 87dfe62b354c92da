"""NadoVenue: the engine's VenuePort over Nado's gateway (REST + one stream socket).

`start` runs discovery and checks the subaccount (startup.py); the stream opens only when
the engine asks (`StreamConnect`, from the connection machine). `submit` never blocks:
each intent becomes a task; the tasks of one order run one at a time (its lock), so a
cancel or a status query never overtakes the placement it concerns.

This class only composes the adapter's parts, one concern each; what the engine hears,
per intent, is written beside its handler (the SimVenue's vocabulary, adapters/sim/README.md):

- core.py: settings, the shared connections, the orders' wire facts, emit/timers/tasks;
- startup.py: discovery, the subaccount check, the stream's subscriptions;
- placing.py: PlaceOrder (signing once, re-sends, the IOC/FOK probe);
- cancelling.py: CancelOrder, CancelProductOrders;
- reads.py: QueryPositions, QueryOpenOrders, QueryOrder (with the archive);
- quotes.py and oracles.py: QueryMarketPrices, the BBO gate, quiet-quote REST
  confirmations, the oracle stamp;
- pushes.py and ends.py: stream dispatch, and how an order the venue ended is reported;
- StreamConnect: exactly one `ConnectionChanged(ws, connected | failed)`; later, one
  `disconnected` when the socket drops, `degraded` when it goes silent (stream.py).

`transport` and `connect` replace the network (tests: `venue serve` in memory on the
virtual clock, adapters/sim/server/memory.py); `on_sent` is the composition root's hook, called
with the order id when a placement's answer arrives, before its ack is reported (the
crash test's; engine/runtime/run.py injects it).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from collections.abc import Mapping
from decimal import Decimal

import attrs
import httpx

from adapters.base import EventSink
from adapters.base import ProductInfo
from adapters.nado.archive import ArchiveClient
from adapters.nado.bbo import BboGate
from adapters.nado.cancelling import Cancelling
from adapters.nado.client import GatewayClient
from adapters.nado.core import NS
from adapters.nado.core import Core
from adapters.nado.core import NadoSettings
from adapters.nado.discovery import Discovery
from adapters.nado.ends import Ends
from adapters.nado.mapping import StreamFrame
from adapters.nado.oracles import Oracles
from adapters.nado.orders import OrderEntry
from adapters.nado.placing import Placing
from adapters.nado.pushes import Pushes
from adapters.nado.queries import SymbolInfo
from adapters.nado.quotes import Quotes
from adapters.nado.ratelimit import RateLimiter
from adapters.nado.ratelimit import Window
from adapters.nado.reads import Reads
from adapters.nado.signing import Secret
from adapters.nado.signing import Signer
from adapters.nado.startup import check_subaccount
from adapters.nado.startup import discover_venue
from adapters.nado.startup import subscriptions
from adapters.nado.stream import Connector
from adapters.nado.stream import StreamClient
from adapters.sleep import sleeper
from engine.core.clock import Clock
from engine.core.intents import CancelOrder
from engine.core.intents import CancelProductOrders
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryMarketPrices
from engine.core.intents import QueryOpenOrders
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from engine.core.intents import StreamConnect

__all__ = ["NadoSettings", "NadoVenue"]

log = logging.getLogger("dnpair.nado")


class NadoVenue:
    name = "nado"

    def __init__(
        self,
        settings: NadoSettings,
        key: Secret,
        *,
        clock: Clock,
        unix_ns: Callable[[], int],
        on_sent: Callable[[str], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        connect: Connector | None = None,
    ) -> None:
        """`clock` is monotonic (the engine's); `unix_ns` is wall time for nonces,
        expirations, stream authentication and quote ages."""
        self.settings = settings
        self._key = key
        self.clock = clock
        self.unix_ns = unix_ns
        self._connect = connect
        limits = settings.limiter
        if "archive" not in limits.windows:  # its own host and budget (§8)
            windows = {**limits.windows, "archive": (Window(2400, 60 * NS), Window(400, 10 * NS))}
            limits = attrs.evolve(limits, windows=windows)
        self._sleep = sleeper(clock)  # every wait on the engine's clock
        self.limiter = RateLimiter(clock, random.Random(settings.seed), limits, sleep=self._sleep)
        client = GatewayClient(
            settings.gateway_url, self.limiter, clock, unix_ns, settings.client, transport=transport
        )
        archive: ArchiveClient | None = None
        if settings.archive_url is not None:
            archive = ArchiveClient(
                settings.archive_url,
                self.limiter,
                unix_ns=unix_ns,
                settle_s=settings.archive_settle_s,
                timeout_s=settings.client.timeout_s,
                transport=transport,
            )
        self.core = core = Core(
            settings, clock=clock, unix_ns=unix_ns, client=client, archive=archive
        )
        self.discovery: Discovery | None = None
        self._products: dict[str, ProductInfo] = {}
        self._started = False
        self._shut = False
        self.oracles = Oracles(core)
        self.quotes = Quotes(core, self.oracles)
        self.ends = Ends(core)
        self.reads = Reads(core)
        self.placing = Placing(core, self.ends, self.reads, on_sent)
        self.cancelling = Cancelling(core)
        self.pushes = Pushes(core, self.quotes, self.ends)

    # -- what tests and the runner read (the parts hold the state) --------------------------
    @property
    def stats(self) -> Counter[str]:
        return self.core.stats

    @property
    def orders(self) -> dict[str, OrderEntry]:
        return self.core.orders

    @property
    def client(self) -> GatewayClient:
        return self.core.client

    @client.setter
    def client(self, client: GatewayClient) -> None:
        self.core.client = client

    @property
    def archive(self) -> ArchiveClient | None:
        return self.core.archive

    @archive.setter
    def archive(self, archive: ArchiveClient | None) -> None:
        self.core.archive = archive

    @property
    def signer(self) -> Signer | None:
        return self.core.signer

    @property
    def stream(self) -> StreamClient | None:
        return self.core.stream

    @property
    def gate(self) -> BboGate:
        return self.quotes.gate

    @property
    def rtt_ns(self) -> int | None:
        return self.core.rtt_ns

    @property
    def fill_latency_ns(self) -> list[int]:
        return self.pushes.fill_latency_ns

    def oracle(self, pid: int) -> Decimal | None:
        """The oracle price of `pid` if read within `oracle_max_age_s`, else None."""
        return self.oracles.price(pid)

    # -- VenuePort -------------------------------------------------------------------------
    @property
    def products(self) -> dict[str, ProductInfo]:
        return dict(self._products)

    @property
    def product_ids(self) -> tuple[int, ...]:
        return self.core.product_ids

    async def start(self, sink: EventSink) -> None:
        if self._started:
            raise RuntimeError("NadoVenue already started")
        self._started = True
        try:
            await self._start(sink)
        except BaseException:
            await self.close()  # refused: leave no socket open
            raise

    async def _start(self, sink: EventSink) -> None:
        core = self.core
        found = await discover_venue(core)
        self.discovery = found
        self.adopt(
            {i.product_id: i for i in found.symbols.values()},
            Signer(
                self._key,
                chain_id=found.contracts.chain_id,
                endpoint_addr=found.contracts.endpoint_addr,
                subaccount_name=self.settings.subaccount_name,
            ),
        )
        await check_subaccount(core)
        assert core.signer is not None
        core.stream = StreamClient(
            self.settings.ws_url,
            core.signer,
            subscriptions(core),
            self.pushes.on_frame,
            self.pushes.on_state,
            clock=self.clock,
            unix_ms=core.now_ms,
            timing=self.settings.timing,
            config=self.settings.stream,
            connect=self._connect,
            sleep_ns=self._sleep,
        )
        self.begin(sink, found.oracles)
        log.info(
            "nado venue ready: chain %d, %s, subaccount %s",
            found.contracts.chain_id,
            ", ".join(f"{s}={i.product_id}" for s, i in found.symbols.items()),
            core.signer.sender,
        )

    def adopt(self, symbols: Mapping[int, SymbolInfo], signer: Signer) -> None:
        """The products and the signer discovery settled on."""
        self.core.symbols = dict(symbols)
        self._products = {i.symbol: i.product_info() for i in symbols.values()}
        self.core.signer = signer

    def begin(self, sink: EventSink, oracles: Mapping[int, Decimal]) -> None:
        """Start telling `sink`: quote confirmations and oracle reads begin."""
        self.core.sink = sink
        self.quotes.start()
        self.oracles.start(oracles)

    def submit(self, intent: Intent) -> None:
        core = self.core
        if core.closed:
            return
        if core.sink is None:
            raise RuntimeError("NadoVenue.submit before start")
        core.stats[f"intent.{intent.kind}"] += 1
        if isinstance(intent, PlaceOrder):
            self.placing.submit(intent)
        elif isinstance(intent, CancelOrder):
            core.spawn(self.cancelling.cancel(intent))
        elif isinstance(intent, CancelProductOrders):
            core.spawn(self.cancelling.cancel_products(intent))
        elif isinstance(intent, QueryPositions):
            core.spawn(self.reads.positions(intent))
        elif isinstance(intent, QueryOpenOrders):
            core.spawn(self.reads.open_orders(intent))
        elif isinstance(intent, QueryOrder):
            core.spawn(self.reads.order_status(intent))
        elif isinstance(intent, QueryMarketPrices):
            core.spawn(self.quotes.market_prices(intent))
        elif isinstance(intent, StreamConnect):
            assert core.stream is not None
            core.stream.connect(intent.attempt)
        # Engine-side intents (alerts, halt) have nothing to do with the venue.

    async def close(self) -> None:
        if self._shut:
            return
        self._shut = True
        core = self.core
        core.closed = True
        if core.stream is not None:
            await core.stream.close()
        for timer in core.timers:
            timer.cancel()
        core.timers.clear()
        tasks = list(core.tasks) + self.quotes.tasks()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.limiter.close()
        await core.client.aclose()
        if core.archive is not None:
            await core.archive.aclose()

    # -- for tests that feed frames or run the start-up check alone -------------------------
    def _on_frame(self, frame: StreamFrame) -> None:
        self.pushes.on_frame(frame)

    async def _check_subaccount(self) -> None:
        await check_subaccount(self.core)
