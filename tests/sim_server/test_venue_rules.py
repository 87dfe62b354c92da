"""Venue rules `venue serve` enforces like Nado: the recv_time window on orders and
cancels, builder-fee and isolated appendix bits, and bounded work per request."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from adapters.nado import signing
from adapters.nado.mapping import order_amount_x18
from adapters.nado.mapping import order_price_x18
from adapters.nado.signing import order_nonce
from tests.sim_server.helpers import ETH
from tests.sim_server.helpers import TIMING
from tests.sim_server.helpers import client
from tests.sim_server.helpers import running
from tests.sim_server.helpers import still

pytestmark = pytest.mark.asyncio

ONE = 10**18


async def test_a_cancel_outside_the_recv_time_window_is_refused_and_changes_nothing() -> None:
    async with running() as server, client(server) as c:
        bid, _ = await c.bbo(ETH)
        order = c.sign(ETH, "buy", "0.1", bid - 5, "default")
        assert (await c.place(order)).ok
        now_ms = int(time.time() * 1000)
        for recv_ms in (now_ms - 5_000, now_ms + 3_600_000):  # 5 s late; an hour ahead
            signed = c.signer.sign_cancel([ETH], [order.digest], nonce=order_nonce(recv_ms, 1))
            _, env = await c.execute(signed.body())
            assert (env.ok, env.error_code) == (False, 2011)
            assert [o.digest for o in server.exchange.open_orders(c.signer.sender)] == [
                order.digest
            ]
        env = await c.cancel([ETH], [order.digest])  # recv_time = now + 90 s: inside
        assert env.ok
        assert server.exchange.open_orders(c.signer.sender) == []


async def test_builder_fee_bits_are_accepted_and_charged_isolated_orders_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # builder id 7 at 5 tenths of a bp (bits 48..63 and 38..47), isolated (bit 8), IOC.
    appendix = 1 | (1 << 9) | (5 << 38) | (7 << 48)
    async with running(still(sim="taker_fee_bps = 0")) as server, client(server) as c:
        _, ask = await c.bbo(ETH)
        monkeypatch.setattr(signing, "appendix_for", lambda tif, reduce_only: appendix)
        order = c.sign(ETH, "buy", "1", ask, "ioc")
        env = await c.place(order)
        assert env.ok, env
        placed = server.exchange.order(order.digest)
        assert placed is not None
        assert placed.request.appendix == appendix  # echoed as sent
        assert placed.request.builder_id == 7
        assert placed.fees == (ask * Decimal("0.00005")).quantize(Decimal("1e-8")).normalize()
        monkeypatch.setattr(signing, "appendix_for", lambda tif, reduce_only: 1 | (1 << 9) | 256)
        iso = c.sign(ETH, "buy", "0.1", ask + 1, "ioc")
        assert (await c.place(iso)).ok
        assert server.exchange.position(c.signer.sender, ETH).qty == Decimal("1.1")


async def test_trigger_orders_and_nonces_with_bit_63_belong_to_the_trigger_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running() as server, client(server) as c:
        _, ask = await c.bbo(ETH)
        monkeypatch.setattr(signing, "appendix_for", lambda tif, reduce_only: 1 | (1 << 12))
        env = await c.place(c.sign(ETH, "buy", "0.1", ask, "ioc"))
        assert (env.ok, env.error_code) == (False, 4001)
        monkeypatch.undo()
        now_ms = int(time.time() * 1000)
        signed = c.signer.sign_order(
            ETH,
            price_x18=order_price_x18(ask, ONE // 10),
            amount_x18=order_amount_x18("buy", Decimal("0.1"), ONE // 1000),
            expiration=TIMING.expiration(now_ms // 1000, "ioc"),
            nonce=2**64 - 1,
            tif="ioc",
        )
        _, env = await c.execute(signed.body())
        assert (env.ok, env.error_code) == (False, 4001)
        assert server.exchange.position(c.signer.sender, ETH).qty == 0


async def test_market_prices_dedupes_and_refuses_runaway_id_lists_cheaply() -> None:
    async with running() as server, client(server) as c:
        env = await c.query(type="market_prices", product_ids=[4, 8, 4, 4, 8])
        assert env.ok
        assert [p["product_id"] for p in env.data["market_prices"]] == [4, 8]
        body = json.dumps({"type": "market_prices", "product_ids": [4] * 300_000})
        r = await c.http.post("/query", content=body)
        reply = r.json()
        assert (reply["status"], reply["error_code"]) == ("failure", 2000)
        assert "too many product_ids" in reply["error"]
        assert len(r.content) < 1000  # not 26 MB
        digests = ["0x" + "ab" * 32] * 101
        cancel = {
            "cancel_orders": {
                "tx": {
                    "sender": c.signer.sender,
                    "productIds": [4] * 101,
                    "digests": digests,
                    "nonce": "1",
                },
                "signature": "0x" + "00" * 65,
            }
        }
        _, env = await c.execute(cancel)
        assert (env.ok, env.error_code) == (False, 2000)
        assert server.stats["internal_errors"] == 0
