"""The `/v1/subscribe` WebSocket: one socket at a time, opened only when asked.

`StreamClient.connect(attempt)` replaces any socket still held and starts one attempt:
open (permessage-deflate, protocol pings every `ping_interval_s`), authenticate (EIP-712,
expiry in ms, nado-protocol.md §7.3), subscribe every stream and wait for each ack. The
outcome is reported exactly once through `on_state`: `connected`, or `failed` with the
reason (an attempt that never connected is not a dropped stream). Afterwards the socket
reports `disconnected` once when it dies and `degraded` when no frame at all (pongs
included) arrived for `silence_s`; it never reconnects by itself (the engine's
connection machine decides when).

Frames are decoded by `adapters.nado.mapping.decode_stream`; a frame it refuses is
counted (`stats["malformed"]`) and skipped, never fatal. An application `ping` goes out
every `app_ping_s` so that a healthy socket is never silent, even on a quiet market.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import attrs
import websockets.exceptions
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websockets_connect

from adapters.nado.mapping import StreamError
from adapters.nado.mapping import StreamFrame
from adapters.nado.mapping import StreamReply
from adapters.nado.mapping import decode_stream
from adapters.nado.ratelimit import NowNs
from adapters.nado.signing import Signer
from adapters.nado.timing import Timing
from adapters.nado.wire import MalformedFrame

__all__ = ["Connector", "StreamClient", "StreamConfig"]

# Opens a socket: `websockets.asyncio.client.connect`'s signature (tests pass an in-memory
# twin with the same send/recv/close surface, adapters/sim/server/memory.py).
Connector = Callable[..., Awaitable[Any]]
OnFrame = Callable[[StreamFrame], None]
OnState = Callable[[str, str], None]  # (state, detail)


@attrs.frozen(kw_only=True)
class StreamConfig:
    open_timeout_s: float = 5.0  # socket open, authentication and every ack
    ping_interval_s: float = 20.0  # protocol pings: Nado drops sockets silent for 30 s
    ping_timeout_s: float = 20.0
    app_ping_s: float = 5.0
    silence_s: float = 15.0
    max_size: int = 1 << 20


class _Refused(Exception):
    """The venue answered a control message with an error frame."""


class StreamClient:
    def __init__(
        self,
        url: str,
        signer: Signer | None,
        subscriptions: Sequence[dict[str, Any]],
        on_frame: OnFrame,
        on_state: OnState,
        *,
        clock: NowNs,
        unix_ms: Callable[[], int],
        timing: Timing | None = None,
        config: StreamConfig | None = None,
        decode: Callable[[str | bytes], StreamFrame] = decode_stream,
        connect: Connector | None = None,
        sleep_ns: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """`signer` None: a public socket (market data only), never authenticated.
        `decode` reads one text frame (raises MalformedFrame for one it refuses)."""
        self.url = url
        self.signer = signer
        self.decode = decode
        self._open: Connector = connect or websockets_connect
        # The watchdog waits on the engine's clock when given one (virtual in tests).
        self._sleep_ns = sleep_ns or _asyncio_sleep_ns
        self.subscriptions = [dict(s) for s in subscriptions]
        self.on_frame = on_frame
        self.on_state = on_state
        self.timing = timing or Timing()
        self.config = config or StreamConfig()
        self.clock = clock  # monotonic ns: silence and ping round trips
        self.unix_ms = unix_ms  # wall ms: authentication expiry, ping client_time
        self.stats: Counter[str] = Counter()
        self.connected = False  # authenticated and subscribed, socket open
        self.epoch = 0  # +1 per successful connection: a gap in the private streams
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._waiting: dict[int, asyncio.Future[StreamReply]] = {}
        self._next_id = 0
        self._last_frame = clock.now_ns()
        self.pong_rtts_ms: list[float] = []
        self._pings: dict[int, int] = {}
        # Pushes that arrive during the handshake (after the first subscription's ack)
        # wait for the `connected` report, so the engine hears of the socket first.
        self._early: list[StreamFrame] | None = None

    # -- control ---------------------------------------------------------------------------
    def connect(self, attempt: int) -> None:
        """Start one attempt, replacing (closing) the current socket. Answers via on_state."""
        old = self._task
        self.connected = False
        self._task = asyncio.get_running_loop().create_task(self._run(attempt, old))

    async def close(self) -> None:
        task, self._task = self._task, None
        self.connected = False
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._drop_socket()

    async def kill_socket(self) -> None:
        """Tests: cut the socket as a network fault would (no close handshake)."""
        ws = self._ws
        if ws is not None and ws.transport is not None:
            ws.transport.abort()

    # -- one attempt, then the reader --------------------------------------------------------
    async def _run(self, attempt: int, old: asyncio.Task[None] | None) -> None:
        if old is not None and not old.done():
            old.cancel()
            await asyncio.gather(old, return_exceptions=True)
        await self._drop_socket()
        self.stats["attempts"] += 1
        try:
            ws = await self._open(
                self.url,
                open_timeout=self.config.open_timeout_s,
                ping_interval=self.config.ping_interval_s,
                ping_timeout=self.config.ping_timeout_s,
                close_timeout=1.0,
                compression="deflate",
                max_size=self.config.max_size,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats["connect_failed"] += 1
            self._report("failed", f"attempt {attempt}: cannot open: {_why(exc)}")
            return
        self._ws = ws
        self._last_frame = self.clock.now_ns()
        self._early = []
        reader = asyncio.get_running_loop().create_task(self._read(ws))
        try:
            await asyncio.wait_for(self._handshake(), self.config.open_timeout_s)
        except asyncio.CancelledError:
            self._early = None
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            raise
        except Exception as exc:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self._early = None
            await self._drop_socket()
            self.stats["handshake_failed"] += 1
            self._report("failed", f"attempt {attempt}: {_why(exc)}")
            return
        self.connected = True
        self.epoch += 1
        self.stats["connects"] += 1
        self._report("connected", f"attempt {attempt}: subscribed to {len(self.subscriptions)}")
        early, self._early = self._early or [], None
        for frame in early:
            self.on_frame(frame)
        watchdog = asyncio.get_running_loop().create_task(self._watch(ws))
        try:
            why = await reader
        finally:
            for task in (watchdog, reader):
                task.cancel()
            await asyncio.gather(watchdog, reader, return_exceptions=True)
        self.connected = False
        await self._drop_socket()
        self.stats["disconnects"] += 1
        self._report("disconnected", why)

    async def _handshake(self) -> None:
        if self.signer is not None:
            expiry = self.timing.stream_auth_expiration(self.unix_ms())
            rid = self._new_id()
            await self._request(rid, self.signer.stream_auth(expiry, request_id=rid))
        acks = []
        for stream in self.subscriptions:
            rid = self._new_id()
            acks.append(self._request(rid, {"method": "subscribe", "id": rid, "stream": stream}))
        await asyncio.gather(*acks)

    async def _request(self, rid: int, message: dict[str, Any]) -> StreamReply:
        fut: asyncio.Future[StreamReply] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            assert self._ws is not None
            await self._ws.send(json.dumps(message, separators=(",", ":")))
            return await fut
        finally:
            self._waiting.pop(rid, None)

    async def _read(self, ws: ClientConnection) -> str:
        """Read until the socket dies; returns why. Never raises for a bad frame."""
        try:
            async for raw in ws:
                self._last_frame = self.clock.now_ns()
                self.stats["frames"] += 1
                try:
                    frame = self.decode(raw)
                except MalformedFrame as exc:
                    self.stats["malformed"] += 1
                    self.stats[f"malformed.{exc.where or 'frame'}"] += 1
                    continue
                self._dispatch(frame)
        except websockets.exceptions.ConnectionClosed as exc:
            return f"closed: {_close_text(exc)}"
        except OSError as exc:
            return f"socket error: {type(exc).__name__}"
        return "closed by the venue"

    def _dispatch(self, frame: StreamFrame) -> None:
        if isinstance(frame, StreamReply | StreamError) and frame.id in self._waiting:
            fut = self._waiting[frame.id]
            if not fut.done():
                if isinstance(frame, StreamError):
                    fut.set_exception(_Refused(f"refused: {frame.error} (code {frame.code})"))
                else:
                    fut.set_result(frame)
            return
        if isinstance(frame, StreamReply) and frame.method == "pong":
            sent = self._pings.pop(frame.id or -1, None)
            if sent is not None:
                self.pong_rtts_ms.append((self.clock.now_ns() - sent) / 1e6)
                del self.pong_rtts_ms[:-100]
            self.stats["pongs"] += 1
            return
        if isinstance(frame, StreamError):
            self.stats["error_frames"] += 1
        if self._early is not None:
            self._early.append(frame)
            return
        self.on_frame(frame)

    async def _watch(self, ws: ClientConnection) -> None:
        """Application pings, and a `degraded` report when nothing at all arrives."""
        cfg = self.config
        silence_ns = int(cfg.silence_s * 1e9)
        ping_ns = int(cfg.app_ping_s * 1e9)
        silent = False
        next_ping = self.clock.now_ns() + ping_ns
        while True:
            now = self.clock.now_ns()
            quiet = now - self._last_frame
            if quiet >= silence_ns and not silent:
                silent = True
                self.stats["silences"] += 1
                self._report("degraded", f"silent for {quiet / 1e9:.1f}s")
            elif quiet < silence_ns and silent:
                silent = False
                self._report("connected", "frames again after a silence")
            if now >= next_ping:
                next_ping = now + ping_ns
                rid = self._new_id()
                self._pings = {k: v for k, v in self._pings.items() if k > rid - 10}
                self._pings[rid] = now
                msg = {"method": "ping", "id": rid, "client_time": str(self.unix_ms())}
                with contextlib.suppress(websockets.exceptions.ConnectionClosed, OSError):
                    await ws.send(json.dumps(msg, separators=(",", ":")))
            wake_ns = min(next_ping, self._last_frame + silence_ns) - self.clock.now_ns()
            await self._sleep_ns(int(max(0.05, min(wake_ns / 1e9, 1.0)) * 1e9))

    # -- plumbing ----------------------------------------------------------------------------
    def _report(self, state: str, detail: str) -> None:
        self.stats[f"reported.{state}"] += 1
        self.on_state(state, detail)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _drop_socket(self) -> None:
        ws, self._ws = self._ws, None
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)


async def _asyncio_sleep_ns(ns: int) -> None:
    await asyncio.sleep(ns / 1e9)


def _why(exc: BaseException) -> str:
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, _Refused):
        return str(exc)[:200]
    return type(exc).__name__


def _close_text(exc: websockets.exceptions.ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is None:
        return "no close frame"
    return f"code {rcvd.code} {rcvd.reason[:80]}".strip()
