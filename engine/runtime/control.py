"""Operator control of a running engine over a local Unix socket.

A wall-clock `dnpair run` listens on a socket whose path is derived from its journal's
absolute path (so `dnpair status|flatten|resume --journal J` find it without any other
configuration); only the local user can reach it (mode 0600). Protocol: one JSON line
in (`{"cmd": "status" | "flatten" | "resume" | "stop"}`), one JSON line out
(`{"ok": bool, "message": str, ...}`). Commands become ordinary `OperatorCommand`
events in the engine's inbox, journaled like any other event, so a replay sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "ControlServer", "NoEngine", "control_path", "request"]

COMMANDS = ("status", "flatten", "resume", "stop")
Handler = Callable[[str], dict[str, Any]]


class NoEngine(Exception):
    """Nothing listens for this journal: the engine is not running (on the wall clock)."""


def control_path(journal: str) -> str:
    """A short socket path (Unix sockets are limited to ~100 bytes) unique per journal."""
    digest = hashlib.sha256(str(Path(journal).resolve()).encode()).hexdigest()[:16]
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"dnpair-{digest}.sock")


class ControlServer:
    def __init__(self, journal: str, handler: Handler) -> None:
        self.path = control_path(journal)
        self.handler = handler
        self._server: asyncio.Server | None = None

    def _clear_stale(self) -> None:
        if not os.path.exists(self.path):
            return
        try:
            request(self.path, "status", timeout_s=0.5, raw_path=True)
        except NoEngine:
            os.unlink(self.path)  # left behind by a process that died
        else:
            raise RuntimeError(f"another engine is already running on this journal ({self.path})")

    async def start(self) -> str:
        self._clear_stale()
        self._server = await asyncio.start_unix_server(self._handle, path=self.path)
        self._restrict()
        return self.path

    def _restrict(self) -> None:
        os.chmod(self.path, 0o600)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                line = await reader.readline()
            try:
                cmd = str(json.loads(line or b"{}").get("cmd", ""))
            except (ValueError, AttributeError):
                cmd = ""
            if cmd not in COMMANDS:
                reply: dict[str, Any] = {"ok": False, "message": f"unknown command {cmd!r}"}
            else:
                reply = self.handler(cmd)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def request(
    journal: str, cmd: str, *, timeout_s: float = 5.0, raw_path: bool = False
) -> dict[str, Any]:
    """Send one command to the engine running on `journal`; raises NoEngine if none."""
    path = journal if raw_path else control_path(journal)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoEngine(f"no engine is running on this journal ({exc.strerror})") from None
        sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    text = b"".join(chunks).decode()
    if not text.strip():
        raise NoEngine("the engine closed the connection without answering")
    reply: dict[str, Any] = json.loads(text)
    return reply
