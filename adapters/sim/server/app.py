"""`VenueServer`: the exchange core behind a loopback gateway that speaks Nado's protocol.

One port serves REST (`POST /v1/execute`, `POST`/`GET /v1/query`, `GET /v1/symbols`,
`GET /v1/time`) and the WebSocket `/v1/subscribe`, with aiohttp; the other Nado
services (edge query, `/v2`, archive, trigger, `/ws/v2`) at the real hosts' paths on the
same port come from `services.py` (adapters/sim/README.md, "venue serve routes"). The
exchange lives as long as the server, so positions survive client restarts. Time is the
wall clock (`engine.core.clock.WallClock`): the market steps, BBO pushes, fault windows and
forced disconnects are timers on it, and profile times are seconds since the server
started.

Faults on the wire (the same TOML as the in-process sim, adapters/sim/README.md), decided
by the same `FaultPlan` (adapters/sim/faultplan.py); this module only carries them out:
- `rest.latency_ms`: a delay before the request reaches the venue and another before
  the answer leaves; `rest.rate_limit` windows: HTTP 429, code 1000, `Retry-After`;
  `rest.timeout`: no answer (the connection is held for `[sim] request_timeout_ms`, then
  closed); half of the lost executes take effect first, queries never do;
- `venue.down` windows: the listening socket is closed (connection refused), open
  connections are cut, WebSockets included; answers due inside the window are lost;
- `ws.*`: each connection's pushes go through its own `PushChannel` (drop, duplicate,
  reorder, delay); `ws.disconnect_mean_s`: the server closes every WebSocket (code 1001)
  and refuses new ones (503) for `[sim] ws_reconnect_ms`;
- `orders.*`, `market.*`, `venue.position_lag_ms`: as in the core.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any
from typing import TextIO

import attrs
from aiohttp import WSMsgType
from aiohttp import web

from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import loads as codec_loads
from adapters.sim.channel import PushChannel
from adapters.sim.exchange import Exchange
from adapters.sim.faultplan import FaultPlan
from adapters.sim.faults import NS_PER_MS
from adapters.sim.faults import FaultProfile
from adapters.sim.mapping import skewed
from adapters.sim.matching import Bbo
from adapters.sim.products import resolve
from adapters.sim.records import FillRecord
from adapters.sim.records import OrderUpdateRecord
from adapters.sim.records import Record
from adapters.sim.server import codec
from adapters.sim.server.codec import CODES
from adapters.sim.server.codec import WireTime
from adapters.sim.server.gateway import DelayedCancel
from adapters.sim.server.gateway import Gateway
from adapters.sim.server.gateway import Reply
from adapters.sim.server.gateway import parse_query_string
from adapters.sim.server.services import KINDS as SERVICE_KINDS
from adapters.sim.server.services import ROUTES as SERVICE_ROUTES
from adapters.sim.server.services import Services
from adapters.sim.server.streams import AUTH_STREAMS
from adapters.sim.server.streams import StreamSession
from adapters.sim.server.timers import OrderedTimers
from adapters.sim.venue import DEFAULT_SYMBOLS
from adapters.sleep import clock_sleep
from engine.core.clock import Clock
from engine.core.clock import WallClock

__all__ = [
    "SIM_CHAIN_ID",
    "SIM_ENDPOINT",
    "ServerOptions",
    "VenueServer",
    "gateway_url",
    "serve",
]

log = logging.getLogger("dnpair.venue")

# Not a real chain: signatures made for the sim can never be replayed on Nado.
SIM_CHAIN_ID = 31337
SIM_ENDPOINT = "0x" + "e0" * 20
NS_PER_S = 1_000_000_000
MAX_BODY = 1 << 20


@attrs.frozen(kw_only=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    profile: FaultProfile = attrs.field(factory=FaultProfile)
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    chain_id: int = SIM_CHAIN_ID
    endpoint_addr: str = SIM_ENDPOINT
    check_times: bool = True  # refuse expired orders and nonces past their recv_time
    auth_streams: frozenset[str] = AUTH_STREAMS
    queue_limit: int = 10_000  # frames waiting for one slow WebSocket before it is closed


def gateway_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    text = json.dumps(payload, separators=(",", ":"))
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


class _WsConn:
    """One `/v1/subscribe` connection: its session, push channel and writer queue."""

    def __init__(self, server: VenueServer, n: int, ws: Any) -> None:
        opts = server.options
        self.n = n
        self.ws = ws
        self.server = server
        self.closed = False
        self.gateway_ws = False  # /ws/v2 and /v1/ws also take executes and queries
        self.session = StreamSession(
            product_ids=server.exchange.specs,
            chain_id=opts.chain_id,
            endpoint_addr=opts.endpoint_addr.lower(),
            now_unix_ms=server.unix_ms,
            auth_streams=opts.auth_streams,
        )
        sim = opts.profile.sim
        self.channel: PushChannel[str] = PushChannel(
            plan=server.plan.pushes(f"ws/{n}"),
            latency_ns=0,  # the socket is the network; [ws] delay_ms adds to it
            flush_ns=int(sim.reorder_flush_ms * NS_PER_MS),
            now=server.timers.now,
            schedule=server.timers.later,
            deliver=self._enqueue,
        )
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()

    def push(self, text: str) -> None:
        if not self.closed:
            self.channel.push(text)

    def reply(self, frame: dict[str, Any]) -> None:
        """Control replies bypass the push faults (they answer the client's own frames)."""
        self._enqueue(json.dumps(frame, separators=(",", ":")))

    def _enqueue(self, text: str) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= self.server.options.queue_limit:
            log.warning("ws#%d: %d frames unread, closing", self.n, self.queue.qsize())
            self.close(1008, "slow consumer")
            return
        self.queue.put_nowait(text)

    async def writer(self) -> None:
        while True:
            text = await self.queue.get()
            if text is None or self.ws.closed:
                return
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    def close(self, code: int, reason: str) -> None:
        """Close with a close frame (in the background)."""
        if self.closed:
            return
        self.mark_closed()
        self.server.spawn(self.ws.close(code=code, message=reason.encode()))

    def mark_closed(self) -> None:
        self.closed = True
        self.channel.disconnect()
        self.queue.put_nowait(None)


class VenueServer:
    def __init__(
        self,
        options: ServerOptions | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.options = opts = options or ServerOptions()
        self.profile = profile = opts.profile
        self.clock: Clock = clock or WallClock()
        self.origin_ns = self.clock.now_ns()
        self.wire = WireTime(origin_ns=self.origin_ns, epoch_ns=time.time_ns())
        self.exchange = Exchange(
            resolve(opts.symbols), seed=opts.seed, profile=profile, start_ns=self.origin_ns
        )
        self.gateway = Gateway(
            self.exchange,
            wire=self.wire,
            now=self.clock.now_ns,
            sync=self.sync,
            chain_id=opts.chain_id,
            endpoint_addr=opts.endpoint_addr,
            check_times=opts.check_times,
        )
        self.services = Services(
            self.exchange,
            self.gateway,
            self.wire,
            now=self.clock.now_ns,
            sync=self.sync,
            wants=self._wants,
            push=self._push_public,
            chain_id=opts.chain_id,
            endpoint_addr=opts.endpoint_addr,
        )
        sim = profile.sim
        self._market_ns = int(sim.market_step_ms * NS_PER_MS)
        self.timers = OrderedTimers(self.clock)
        self.plan = FaultPlan(profile, opts.seed)  # the same plan as the in-process sim's
        self._timeout_ns = int(sim.request_timeout_ms * NS_PER_MS)
        self._bbo_ns = int(sim.bbo_interval_ms * NS_PER_MS)
        self._reconnect_ns = int(sim.ws_reconnect_ms * NS_PER_MS)
        self._next_bbo = self.origin_ns
        self._last_bbo: dict[int, dict[str, Any]] = {}
        self._on_change = profile.market.bbo_push == "on_change"
        self._top: dict[int, tuple[object, ...]] = {}  # the top of book last pushed
        self._conns: dict[int, _WsConn] = {}
        self._ws_seq = 0
        self._down = 0  # overlapping venue.down windows in force
        self._down_epoch = 0
        self._ws_gap = False
        self._transition = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._bind: tuple[socket.AddressFamily, Any] | None = None  # what we bound
        self.host = opts.host
        self.port = opts.port
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "requests",
                "rate_limited",
                "timeouts",
                "timeouts_applied",
                "refused",
                "answers_lost",
                "bad_requests",
                "internal_errors",
                "ws_connections",
                "ws_forced_disconnects",
                "ws_refused",
                "down_windows",
                "stale_bbo",
                "crossed_bbo",
            ),
            0,
        )

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return gateway_url(self.host, self.port)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/subscribe"

    def routes(self) -> list[tuple[str, str, Callable[[Any], Any]]]:
        """(method, path, handler) of every route but the catch-all `_not_found`; the
        aiohttp app and the in-memory transport (memory.py) both serve these."""
        out: list[tuple[str, str, Callable[[Any], Any]]] = [
            ("POST", "/v1/execute", self._execute),
            ("POST", "/v1/query", self._query_post),
            ("GET", "/v1/query", self._query_get),
            ("GET", "/v1/symbols", self._symbols),
            ("GET", "/v1/time", self._time),
            ("GET", "/v1/subscribe", self._subscribe),
            ("GET", "/ws/v2", self._subscribe),  # executes and queries too
            ("GET", "/v1/ws", self._subscribe),
        ]
        out.extend(
            (method, path, self._service_handler(kind)) for method, path, kind in SERVICE_ROUTES
        )
        return out

    async def start(self) -> None:
        """Listen on the loopback socket and start the venue's clocks."""
        app = web.Application(client_max_size=MAX_BODY)
        for method, path, handler in self.routes():
            app.router.add_route(method, path, handler)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = self._listen_socket(self.options.host, self.options.port)
        self.port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()
        self.start_clocks()
        log.info("venue listening on %s (seed %d)", self.url, self.options.seed)

    def start_clocks(self) -> None:
        """Arm the market, the pushes and the profile's timed faults (`start` does; the
        in-memory transport calls it alone, without a socket)."""
        for w in self.plan.down_windows:
            self.timers.at(self.origin_ns + w.start_ns, lambda: self._set_down(+1))
            self.timers.at(self.origin_ns + w.end_ns, lambda: self._set_down(-1))
        self._schedule_disconnect()
        self.timers.later(0, self._tick)
        self.timers.later(0, self._market_tick)

    async def stop(self) -> None:
        self.timers.close()
        for conn in list(self._conns.values()):
            conn.close(1001, "server shutting down")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._tasks):
            task.cancel()
        log.info("venue stopped: %s", json.dumps(self.stats, sort_keys=True))

    async def sleep_ns(self, ns: int) -> None:
        """Wait `ns` on the server's clock: the wall clock when served on a socket, the
        test's virtual clock in memory (memory.py)."""
        await clock_sleep(self.clock, ns)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("venue task failed", exc_info=task.exception())

    def _listen_socket(self, host: str, port: int) -> socket.socket:
        family: socket.AddressFamily
        if self._bind is None:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, addr = infos[0][0], infos[0][4]
        else:
            family, addr = self._bind
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        if self._bind is None:
            bound = sock.getsockname()
            self._bind = (family, bound)
        return sock

    # -- time, market and pushes -----------------------------------------------------------
    def unix_ms(self) -> int:
        return self.wire.unix_ms(self.clock.now_ns())

    def sync(self) -> None:
        """Advance the exchange to now and push what it recorded."""
        self.exchange.advance_to(self.clock.now_ns())
        for rec in self.exchange.drain():
            self.services.record(rec)
            self._route(rec)
        if self._on_change:  # Nado pushes best_bid_offer when the top of book changes
            for pid in self.exchange.specs:
                bbo = self._shown(pid)
                if self._top.get(pid) != (bbo.bid, bbo.bid_qty, bbo.ask, bbo.ask_qty):
                    self._push_bbo(pid)

    def _wants(self, kind: str, pid: int | None) -> bool:
        return any(c.session.wants(kind, pid) for c in self._conns.values())

    def _push_public(self, kind: str, pid: int | None, frame: dict[str, Any]) -> None:
        conns = [c for c in self._conns.values() if c.session.wants(kind, pid)]
        if conns:
            text = json.dumps(frame, separators=(",", ":"))
            for conn in conns:
                conn.push(text)

    def _market_tick(self) -> None:
        """book_depth / all_bbo / funding_rate (services.py), on the market's step."""
        self.sync()
        self.services.tick()
        self.timers.later(self._market_ns, self._market_tick)

    def _route(self, rec: Record) -> None:
        conns = [
            c
            for c in self._conns.values()
            if c.session.wants(_kind(rec), rec.product_id, rec.subaccount)
        ]
        if not conns:
            return
        frame: dict[str, Any]
        if isinstance(rec, FillRecord):
            frame = codec.fill_frame(rec, self.wire)
        elif isinstance(rec, OrderUpdateRecord):
            order = self.exchange.order(rec.digest)
            side = order.side if order is not None else "buy"
            frame = codec.order_update_frame(
                rec, side, self.wire, filled=self.profile.sim.order_update_filled == "cumulative"
            )
        else:
            frame = codec.position_change_frame(rec, self.wire)
        text = json.dumps(frame, separators=(",", ":"))
        for conn in conns:
            conn.push(text)

    def _tick(self) -> None:
        now = self.clock.now_ns()
        self.sync()
        step = self._bbo_ns
        if self._on_change:
            step = self.exchange.step_ns  # look at the book on every market step
        elif now >= self._next_bbo:
            for pid in self.exchange.specs:
                self._push_bbo(pid)
        while self._next_bbo <= now:
            self._next_bbo += step
        self.timers.at(self._next_bbo, self._tick)

    def _shown(self, pid: int) -> Bbo:
        """The top of book as pushed: `market.skew` applied (rounded down to the tick),
        as the in-process feed shows it; matching and the oracle (`all_products`, the fair
        mid) stay where they are."""
        bbo = self.exchange.bbo(pid)
        spec = self.exchange.specs[pid]
        skew = self.profile.market.skew_factor(spec.symbol, self.exchange.now_ns - self.origin_ns)
        if skew is None:
            return bbo
        bid, _bid_qty, ask, _ask_qty = skewed(
            (bbo.bid, bbo.bid_qty, bbo.ask, bbo.ask_qty), skew, spec.tick
        )
        return attrs.evolve(bbo, bid=bid, ask=ask)

    def _push_bbo(self, pid: int) -> None:
        bbo = self._shown(pid)
        self._top[pid] = (bbo.bid, bbo.bid_qty, bbo.ask, bbo.ask_qty)
        fresh = codec.bbo_frame(bbo, self.wire)
        frame = fresh
        last = self._last_bbo.get(pid)
        fault = self.plan.quote(has_last=last is not None)
        if fault == "stale" and last is not None:
            self.stats["stale_bbo"] += 1
            frame = last  # an old quote with its old timestamp
        elif fault == "crossed":
            self.stats["crossed_bbo"] += 1
            frame = codec.swap_sides(fresh)
        self._last_bbo[pid] = fresh
        conns = [c for c in self._conns.values() if c.session.wants("best_bid_offer", pid)]
        if conns:
            text = json.dumps(frame, separators=(",", ":"))
            for conn in conns:
                conn.push(text)

    # -- connection faults ----------------------------------------------------------------
    def _schedule_disconnect(self) -> None:
        wait_ns = self.plan.next_disconnect_ns()
        if wait_ns is not None:
            self.timers.later(wait_ns, self._forced_disconnect)

    def _forced_disconnect(self) -> None:
        self.stats["ws_forced_disconnects"] += 1
        self._ws_gap = True
        log.info("forced disconnect of %d websocket(s)", len(self._conns))
        for conn in list(self._conns.values()):
            conn.close(1001, "sim: forced disconnect")
        self.timers.later(self._reconnect_ns, self._gap_over)

    def _gap_over(self) -> None:
        self._ws_gap = False
        self._schedule_disconnect()

    def _set_down(self, delta: int) -> None:
        self._down += delta
        if delta > 0 and self._down == 1:
            self.stats["down_windows"] += 1
            self._down_epoch += 1
            self.spawn(self._go_down())
        elif delta < 0 and self._down == 0:
            self.spawn(self._come_up())

    async def _go_down(self) -> None:
        async with self._transition:
            log.info("venue down: refusing connections")
            if self._site is not None:
                await self._site.stop()
                self._site = None
            for conn in list(self._conns.values()):
                conn.mark_closed()
                cut = getattr(conn.ws, "cut", None)  # in memory (memory.py): no TCP to reset
                if cut is not None:
                    cut()
            if self._runner is not None and self._runner.server is not None:
                for handler in self._runner.server.connections:
                    handler.force_close()

    async def _come_up(self) -> None:
        async with self._transition:
            while self._down == 0 and self._site is None and self._runner is not None:
                try:
                    sock = self._listen_socket(self.options.host, self.port)
                except OSError as exc:
                    log.warning("venue up: cannot listen again yet (%s); retrying", exc)
                    await asyncio.sleep(0.1)
                    continue
                self._site = web.SockSite(self._runner, sock)
                await self._site.start()
                log.info("venue up: listening on %s", self.url)

    # -- REST -----------------------------------------------------------------------------
    async def _execute(self, request: web.Request) -> web.StreamResponse:
        return await self._rest(request, "execute")

    async def _query_post(self, request: web.Request) -> web.StreamResponse:
        return await self._rest(request, "query")

    async def _query_get(self, request: web.Request) -> web.StreamResponse:
        return await self._rest(request, "query_get")

    async def _symbols(self, request: web.Request) -> web.StreamResponse:
        return await self._rest(request, "symbols")

    async def _time(self, request: web.Request) -> web.StreamResponse:
        return await self._rest(request, "time")

    def _service_handler(self, kind: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._rest(request, kind)

        return handler

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        code, _ = CODES["bad_request"]
        return _json(codec.failure(None, code, f"no route {request.method} {request.path}"), 404)

    async def _rest(self, request: web.Request, kind: str) -> web.StreamResponse:
        self.stats["requests"] += 1
        epoch = self._down_epoch
        if self._down:
            return self._drop(request, "refused")
        try:
            raw = await request.read() if request.method == "POST" else b""
        except web.HTTPException as exc:  # body too large
            code, _ = CODES["bad_request"]
            return _json(codec.failure(None, code, exc.reason), exc.status)
        except (ConnectionError, asyncio.IncompleteReadError):
            return self._drop(request, "refused")
        arrived = self.clock.now_ns()
        # Every draw happens here, in arrival order, whatever the request turns out to be.
        fate = self.plan.request(effectful=kind == "execute")
        d_in, d_out, lost, applied = fate.in_ns, fate.out_ns, fate.lost, fate.applied
        if d_in:
            await self.sleep_ns(d_in)
        if self._down or epoch != self._down_epoch:
            return self._drop(request, "answers_lost")
        now = self.clock.now_ns()
        window = self.plan.rate_limited(now - self.origin_ns)
        if window is not None and not lost:
            self.stats["rate_limited"] += 1
            wait_ns = self.origin_ns + window.end_ns - now
            return await self._answer(request, epoch, d_out, self._rate_limited(wait_ns))
        if lost:
            self.stats["timeouts"] += 1
            if applied and window is None:
                self.stats["timeouts_applied"] += 1
                outcome = self._handle(kind, raw, request)
                if isinstance(outcome, DelayedCancel):
                    self._finish_later(kind, outcome)
            hold_ns = arrived + self._timeout_ns - self.clock.now_ns()
            if hold_ns > 0:
                await self.sleep_ns(hold_ns)
            return self._drop(request, "answers_lost")
        outcome = self._handle(kind, raw, request)
        if isinstance(outcome, DelayedCancel):
            await self.sleep_ns(outcome.delay_ns)
            outcome = self._guard(kind, outcome.finish)
        assert isinstance(outcome, Reply)  # a finished cancel is never delayed again
        return await self._answer(request, epoch, d_out, outcome)

    def _finish_later(self, kind: str, delayed: DelayedCancel) -> None:
        def run() -> None:
            self._guard(kind, delayed.finish)

        self.timers.later(delayed.delay_ns, run)

    def _handle(self, kind: str, raw: bytes, request: web.Request | None) -> Reply | DelayedCancel:
        gw = self.gateway
        if kind == "execute":
            return self._guard(kind, lambda: gw.execute(raw))
        items = [] if request is None else list(request.query.items())
        if kind in SERVICE_KINDS:
            return self._guard(kind, lambda: self.services.handle(kind, raw, items))
        if kind == "query":
            return self._guard(kind, lambda: self._query(raw))
        if kind == "query_get":
            params = parse_query_string(items)
            return self._guard(kind, lambda: self._query(params))
        if kind == "symbols":
            return self.services.symbols()
        return Reply(self.unix_ms())

    def _query(self, body: bytes | dict[str, Any]) -> Reply:
        """Engine queries; `fee_rates` and `max_order_size` are answered by services.py."""
        if isinstance(body, bytes):
            try:
                params: object = codec_loads(body)
            except MalformedFrame:
                return self.gateway.query_raw(body)  # its own error answer
        else:
            params = body
        extra = self.services.intercept_query(params)
        return extra if extra is not None else self.gateway.query(params)

    def _guard(self, kind: str, fn: Callable[[], Reply | DelayedCancel]) -> Reply | DelayedCancel:
        """A bug must not take the connection down: it becomes a 500 with code 5000."""
        try:
            outcome = fn()
        except Exception:
            self.stats["internal_errors"] += 1
            log.exception("venue: %s handler failed", kind)
            code, text = CODES["internal"]
            return Reply(codec.failure(None, code, text), 500)
        if isinstance(outcome, Reply) and _is_failure(outcome.payload):
            self.stats["bad_requests"] += 1
        return outcome

    def _rate_limited(self, wait_ns: int) -> Reply:
        code, text = CODES["rate_limited"]
        retry_after = max(1, math.ceil(wait_ns / NS_PER_S))
        payload = codec.failure(None, code, text)
        return Reply(payload, 429, {"Retry-After": str(retry_after)})

    async def _answer(
        self, request: web.Request, epoch: int, d_out: int, reply: Reply
    ) -> web.StreamResponse:
        if d_out:
            await self.sleep_ns(d_out)
        if self._down or epoch != self._down_epoch:
            return self._drop(request, "answers_lost")
        headers = dict(reply.headers) if reply.headers else None
        return _json(reply.payload, reply.http_status, headers)

    def _drop(self, request: web.Request, stat: str) -> web.StreamResponse:
        """No answer: cut the connection (the client sees it closed or reset)."""
        self.stats[stat] += 1
        handler = request.protocol
        if handler is not None:
            handler.force_close()
        return web.Response(status=500)

    # -- WebSocket ------------------------------------------------------------------------
    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        if self.ws_refused():
            self.stats["ws_refused"] += 1
            code, text = CODES["unavailable"]
            return _json(codec.failure(None, code, text), 503)
        ws = web.WebSocketResponse(max_msg_size=MAX_BODY, timeout=1.0)
        if not ws.can_prepare(request).ok:
            code, _ = CODES["bad_request"]
            return _json(codec.failure(None, code, "expected a WebSocket upgrade"), 400)
        await ws.prepare(request)
        await self.serve_ws(ws, request.path)
        return ws

    def ws_refused(self) -> bool:
        """New WebSockets are refused (503) while the venue is down or in a forced gap."""
        return bool(self._down or self._ws_gap)

    async def serve_ws(self, ws: Any, path: str) -> None:
        """One accepted WebSocket until it closes: `ws` is aiohttp's WebSocketResponse, or
        the in-memory twin's server side (memory.py), which has the same surface."""
        self._ws_seq += 1
        self.stats["ws_connections"] += 1
        conn = _WsConn(self, self._ws_seq, ws)
        conn.gateway_ws = path != "/v1/subscribe"
        self._conns[conn.n] = conn
        writer = asyncio.ensure_future(conn.writer())
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    request_body = _gateway_request(msg.data) if conn.gateway_ws else None
                    if request_body is not None:
                        self.spawn(self._ws_gateway(conn, request_body))
                    else:
                        conn.reply(self._ws_message(conn, msg.data))
                elif msg.type == WSMsgType.ERROR:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.pop(conn.n, None)
            if not conn.closed:
                conn.mark_closed()
            writer.cancel()

    async def _ws_gateway(self, conn: _WsConn, body: dict[str, Any]) -> None:
        """An execute or query over `/ws/v2` (or `/v1/ws`): the same answer as REST,
        sent when ready (so replies may come out of order, as on `/ws/v2`)."""
        kind = "query" if "type" in body else "execute"
        raw = json.dumps(body).encode()
        outcome = self._handle(kind, raw, None)
        if isinstance(outcome, DelayedCancel):
            await self.sleep_ns(outcome.delay_ns)
            outcome = self._guard(kind, outcome.finish)
        assert isinstance(outcome, Reply)
        payload = outcome.payload
        if kind == "query" and isinstance(payload, dict) and "id" in body:
            payload = {**payload, "id": body["id"]}
        if not conn.closed:
            conn.reply(payload)

    def _ws_message(self, conn: _WsConn, data: str | bytes) -> dict[str, Any]:
        try:
            return conn.session.handle(data)
        except Exception:
            self.stats["internal_errors"] += 1
            log.exception("venue: websocket message handler failed")
            code, text = CODES["internal"]
            return {"status": "failure", "error": text, "error_code": code, "id": None}


def _gateway_request(data: str | bytes) -> dict[str, Any] | None:
    """A `/ws/v2` message that is an execute or a query (no `method`), else None."""
    try:
        body = codec_loads(data)
    except MalformedFrame:
        return None
    return body if isinstance(body, dict) and "method" not in body else None


def _kind(rec: Record) -> str:
    if isinstance(rec, FillRecord):
        return "fill"
    if isinstance(rec, OrderUpdateRecord):
        return "order_update"
    return "position_change"


def _is_failure(payload: object) -> bool:
    return isinstance(payload, dict) and payload.get("status") == "failure"


async def serve(
    options: ServerOptions,
    *,
    out: TextIO = sys.stdout,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until SIGINT/SIGTERM (or `stop` is set); the first line on `out` is the URL."""
    server = VenueServer(options)
    await server.start()
    print(f"listening on {server.url}", file=out, flush=True)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform
            pass
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.stop()
    return 0
