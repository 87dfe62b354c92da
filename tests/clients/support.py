"""Third-party clients against a `dnpair venue serve` subprocess.

`venue_serve` starts the real command (as `python -m engine.runtime.cli`, so the code under test
is this checkout's) on port 0 with a fault profile, reads `listening on URL` and yields
the base `http://127.0.0.1:PORT`; the clients are then pointed at the real hosts' paths
on it (`/v1`, `/v2`, `/archive/v1`, `/archive/v2`, `/trigger/v1`, `/v1/subscribe`,
`/ws/v2`): only their URLs change. Every wait is bounded; no sleeps.

`Maker` places orders with this project's own signer (no builder bits), for the other
side of a trade or for state a client then reads.
"""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account

from adapters.nado.mapping import order_amount_x18
from adapters.nado.mapping import order_price_x18
from adapters.nado.signing import Secret
from adapters.nado.signing import Signer
from adapters.nado.timing import Timing
from adapters.sim.server import SIM_CHAIN_ID
from adapters.sim.server import SIM_ENDPOINT

ROOT = Path(__file__).resolve().parents[2]
START_S = 30.0
WAIT_S = 10.0  # bound on any one wait for an answer or an event
ETH, SOL = 4, 8
TICK = {ETH: Decimal("0.1"), SOL: Decimal("0.01")}
SIZE = {ETH: Decimal("0.001"), SOL: Decimal("0.01")}
# Still prices, no crowd flow against resting orders, and a spread wide enough (about
# 6 USD on ETH) for a resting order strictly inside it: fills happen only where a test
# puts them.
PROFILE = """
[market]
volatility_bps_per_sqrt_s = 0
[sim]
maker_fill_rate_per_s = 0
spread_bps = 20
"""
TIMING = Timing()


def key(n: int) -> str:
    """A throwaway private key per test, so each test owns its subaccount."""
    return "0x" + f"{0xC0FFEE00 + n:064x}"


def address(private_key: str) -> str:
    return str(Account.from_key(private_key).address)


@contextmanager
def venue_serve(tmp: Path, profile: str = PROFILE, seed: int = 5) -> Iterator[str]:
    faults = tmp / "faults.toml"
    faults.write_text(profile)
    err = (tmp / "venue.stderr").open("w")
    cmd = [sys.executable, "-m", "engine.runtime.cli", "venue", "serve", "--port", "0"]
    cmd += ["--seed", str(seed), "--faults", str(faults)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_S)
        assert ready, "no output from dnpair venue serve"
        line = proc.stdout.readline()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)/v1\n", line)
        assert match, line
        yield match.group(1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        err.close()


def ccxt_urls(base: str) -> dict[str, Any]:
    ws = base.replace("http://", "ws://", 1)
    return {
        "gateway": f"{base}/v1",
        "gatewayV2": f"{base}/v2",
        "archive": f"{base}/archive/v1",
        "archiveV2": f"{base}/archive/v2",
        "trigger": f"{base}/trigger/v1",
        "ws": {"gateway": f"{ws}/ws/v2", "subscriptions": f"{ws}/v1/subscribe"},
    }


class Maker:
    """Signs with this project's `Signer` and posts over plain HTTP."""

    def __init__(self, base: str, private_key: str) -> None:
        self.base = base
        self.signer = Signer(Secret(private_key), chain_id=SIM_CHAIN_ID, endpoint_addr=SIM_ENDPOINT)
        self.sender = self.signer.sender
        self._tag = 0

    def place(
        self,
        pid: int,
        side: str,
        qty: str,
        price: str | Decimal,
        tif: str,
        *,
        reduce_only: bool = False,
    ) -> dict[str, Any]:
        self._tag += 1
        now_ms = int(time.time() * 1000)
        order = self.signer.sign_order(
            pid,
            price_x18=order_price_x18(Decimal(price), int(TICK[pid] * 10**18)),
            amount_x18=order_amount_x18(side, Decimal(qty), int(SIZE[pid] * 10**18)),
            expiration=TIMING.expiration(now_ms // 1000, tif),
            nonce=TIMING.nonce(now_ms, self._tag),
            tif=tif,
            reduce_only=reduce_only,
            client_id=self._tag,
        )
        r = httpx.post(f"{self.base}/v1/execute", json=order.body(), timeout=WAIT_S)
        out: dict[str, Any] = r.json()
        assert out["status"] == "success", out
        return out

    def bbo(self, pid: int) -> tuple[Decimal, Decimal]:
        r = httpx.get(f"{self.base}/v1/query", params={"type": "market_price", "product_id": pid})
        data = r.json()["data"]
        return Decimal(data["bid_x18"]) / 10**18, Decimal(data["ask_x18"]) / 10**18


def inside(bid: Decimal, ask: Decimal, tick: Decimal) -> Decimal:
    """A price on the tick grid strictly between bid and ask."""
    price = ((bid + ask) / 2 // tick) * tick
    assert bid < price < ask, (bid, price, ask)
    return price
