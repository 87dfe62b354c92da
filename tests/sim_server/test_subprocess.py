"""`dnpair venue serve --port 0` as a real process: the first stdout line is the gateway
URL, `symbols` lists ETH-PERP and SOL-PERP, BBO streams over the WebSocket, and SIGTERM
stops it cleanly (exit 0)."""

from __future__ import annotations

import asyncio
import json
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from adapters.nado.mapping import BboUpdated
from adapters.nado.mapping import parse_stream_frame
from adapters.nado.queries import parse_envelope
from adapters.nado.queries import parse_product_symbols
from adapters.nado.queries import parse_symbols
from adapters.nado.wire import loads

START_S = 30.0  # importing the SDK stack is the slow part of a cold start


def _command() -> list[str]:
    exe = Path(sys.executable).with_name("dnpair")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "engine.runtime.cli"]
    return [*head, "venue", "serve", "--port", "0", "--seed", "7"]


async def _bbo_frames(ws_url: str, want: set[int]) -> set[int]:
    seen: set[int] = set()
    async with connect(ws_url, open_timeout=5) as ws:
        for i, pid in enumerate(sorted(want)):
            stream = {"type": "best_bid_offer", "product_id": pid}
            await ws.send(json.dumps({"method": "subscribe", "id": i + 1, "stream": stream}))
        while seen != want:
            frame = parse_stream_frame(loads(await asyncio.wait_for(ws.recv(), 5)))
            if isinstance(frame, BboUpdated):
                assert 0 < frame.bid < frame.ask
                seen.add(frame.product_id)
    return seen


@pytest.mark.slow
def test_venue_serve_subprocess(tmp_path: Path) -> None:
    err = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(_command(), stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_S)
        assert ready, "no output from dnpair venue serve"
        line = proc.stdout.readline()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+)/v1)\n", line)
        assert match, line
        url = match.group(1)
        assert int(match.group(2)) > 0

        r = httpx.post(url + "/query", json={"type": "symbols"}, timeout=5)
        symbols = parse_symbols(parse_envelope(loads(r.text)).data)
        assert {"ETH-PERP": 4, "SOL-PERP": 8}.items() <= {
            s: i.product_id for s, i in symbols.items()
        }.items()
        r = httpx.get(url + "/symbols", timeout=5)
        assert set(parse_product_symbols(loads(r.text))) >= {"ETH-PERP", "SOL-PERP"}

        ws_url = url.replace("http://", "ws://") + "/subscribe"
        assert asyncio.run(_bbo_frames(ws_url, {4, 8})) == {4, 8}

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        err.close()
    assert "venue stopped" in (tmp_path / "stderr.txt").read_text()
