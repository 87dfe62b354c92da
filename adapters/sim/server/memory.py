"""`venue serve` without sockets: an httpx transport and a WebSocket twin that hand requests
and frames straight to a `VenueServer`'s handlers, for tests on a virtual clock.

`MemoryTransport` is an `httpx.AsyncBaseTransport` (httpx's MockTransport seam): each
request runs the server's own handler for its route (the same `routes()` the aiohttp app
serves), fault plan and all. The server's waits (latency, held lost answers, slow cancels)
are on its clock (`VenueServer.sleep_ns`), so on a `VirtualClock` they last exactly as
long as the test moves time. What a socket would do becomes the httpx error a socket would
raise: a venue that is down refuses (`ConnectError`), an answer the server cut is a
`RemoteProtocolError` (the connection closed without a response).

`MemoryWebSocket.connect` has the shape of `websockets.asyncio.client.connect` (the Nado
adapter's `StreamClient` takes it as `connect`): a refused upgrade raises, else the
server serves the twin's other end (`VenueServer.serve_ws`) exactly as an aiohttp
WebSocket. Frames are delivered in order, at once; `transport.abort()` cuts the socket
without a close frame, as `StreamClient.kill_socket` does on a real one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import websockets.exceptions
from aiohttp import WSMsgType
from multidict import MultiDict
from websockets.frames import Close

from adapters.sim.server.app import VenueServer

__all__ = ["MemoryTransport", "MemoryWebSocket"]


class _Cut:
    """Stands in for aiohttp's protocol handler: `force_close` is the server cutting the
    connection instead of answering."""

    def __init__(self) -> None:
        self.cut = False

    def force_close(self) -> None:
        self.cut = True


class _Request:
    """The part of `aiohttp.web.Request` the server's REST handlers read."""

    def __init__(self, method: str, path: str, query: MultiDict[str], body: bytes) -> None:
        self.method, self.path, self.query = method, path, query
        self._body = body
        self.protocol = _Cut()

    async def read(self) -> bytes:
        return self._body


class MemoryTransport(httpx.AsyncBaseTransport):
    """`rtt_ns`: the network's round trip on the server's clock, half each way (a refused
    connection takes it too), so a request and its answer are never the same instant."""

    def __init__(self, server: VenueServer, *, rtt_ns: int = 0) -> None:
        self.server = server
        self.rtt_ns = rtt_ns
        self._routes: dict[tuple[str, str], Callable[[Any], Any]] = {
            (method, path): handler for method, path, handler in server.routes()
        }
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        server = self.server
        if self.rtt_ns:
            await server.sleep_ns(self.rtt_ns // 2)
        if server._down:
            raise httpx.ConnectError("venue down: connection refused", request=request)
        self.requests += 1
        body = await request.aread()
        path = request.url.path
        handler = self._routes.get((request.method, path), server._not_found)
        query: MultiDict[str] = MultiDict(request.url.params.multi_items())
        req = _Request(request.method, path, query, body)
        response = await handler(req)
        if self.rtt_ns:
            await server.sleep_ns(self.rtt_ns - self.rtt_ns // 2)
        if req.protocol.cut:
            raise httpx.RemoteProtocolError("server closed the connection", request=request)
        headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
        return httpx.Response(
            response.status, headers=headers, content=response.body or b"", request=request
        )


@attrs.frozen
class _Message:
    """What aiohttp's WebSocketResponse yields: the server's loop reads `type` and `data`."""

    type: WSMsgType
    data: str


_EOF = object()  # this end is closed: the reader stops
_ABORT = object()  # the network dropped the socket: no close frame


class _Pipe:
    """Both directions of one in-memory socket."""

    def __init__(self) -> None:
        self.to_server: asyncio.Queue[object] = asyncio.Queue()
        self.to_client: asyncio.Queue[object] = asyncio.Queue()
        self.server_closed = False
        self.client_closed = False


class _ServerEnd:
    """The surface of aiohttp's WebSocketResponse that `VenueServer.serve_ws` uses."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe

    @property
    def closed(self) -> bool:
        return self._pipe.server_closed

    async def send_str(self, text: str) -> None:
        if self._pipe.server_closed:
            raise ConnectionError("socket closed")
        self._pipe.to_client.put_nowait(text)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        pipe = self._pipe
        if pipe.server_closed:
            return False
        pipe.server_closed = True
        pipe.to_client.put_nowait(Close(code, message.decode()))
        pipe.to_server.put_nowait(_EOF)  # ends the server's read loop
        return True

    def cut(self) -> None:
        """The venue went down: the socket is reset, no close frame (`_go_down`)."""
        pipe = self._pipe
        if pipe.server_closed:
            return
        pipe.server_closed = True
        pipe.to_client.put_nowait(_ABORT)
        pipe.to_server.put_nowait(_EOF)

    def __aiter__(self) -> AsyncIterator[_Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[_Message]:
        while True:
            item = await self._pipe.to_server.get()
            if item is _EOF:
                self._pipe.server_closed = True
                return
            assert isinstance(item, str)
            yield _Message(WSMsgType.TEXT, item)


class _Abort:
    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe

    def abort(self) -> None:
        """The network drops the socket: no close frame either way."""
        pipe = self._pipe
        if pipe.client_closed:
            return
        pipe.client_closed = True
        pipe.to_client.put_nowait(_ABORT)
        pipe.to_server.put_nowait(_EOF)


class _ClientEnd:
    """The surface of websockets' ClientConnection that `StreamClient` uses."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe
        self.transport = _Abort(pipe)

    async def send(self, text: str) -> None:
        if self._pipe.client_closed or self._pipe.server_closed:
            raise websockets.exceptions.ConnectionClosedError(None, None)
        self._pipe.to_server.put_nowait(text)

    async def close(self) -> None:
        pipe = self._pipe
        if pipe.client_closed:
            return
        pipe.client_closed = True
        pipe.to_server.put_nowait(_EOF)
        pipe.to_client.put_nowait(_EOF)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[str]:
        while True:
            item = await self._pipe.to_client.get()
            if isinstance(item, str):
                yield item
            elif isinstance(item, Close):
                if item.code in (1000, 1001):
                    return  # a clean close ends the iteration, as in websockets
                raise websockets.exceptions.ConnectionClosedError(item, None)
            elif item is _ABORT:
                raise websockets.exceptions.ConnectionClosedError(None, None)
            else:
                return  # closed by us


class MemoryWebSocket:
    """`connect(url, **options)` for the Nado adapter's StreamClient, served in memory."""

    def __init__(self, server: VenueServer) -> None:
        self.server = server
        self.opened = 0

    async def connect(self, url: str, **_options: Any) -> _ClientEnd:
        server = self.server
        if server.ws_refused():
            server.stats["ws_refused"] += 1
            raise ConnectionRefusedError("HTTP 503: venue unavailable")
        path = httpx.URL(url).path
        pipe = _Pipe()
        self.opened += 1
        server.spawn(server.serve_ws(_ServerEnd(pipe), path))
        return _ClientEnd(pipe)
