"""A NadoVenue on the virtual clock, without sockets: a scripted gateway answers REST after
a fixed round trip, and the test hands it stream frames as wire JSON (`decode_stream`, the
parser the socket uses). Deterministic: time moves only when `run` advances the clock.

Frames are built from plain data (`Step`), so a recorded corpus of wire frames can be fed
through `OfflineVenue.frame` just the same.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from adapters.nado.client import GatewayError
from adapters.nado.errors import Classified
from adapters.nado.mapping import decode_stream
from adapters.nado.mapping import to_x18
from adapters.nado.queries import SymbolInfo
from adapters.nado.signing import Secret
from adapters.nado.signing import Signer
from adapters.nado.venue import NadoSettings
from adapters.nado.venue import NadoVenue
from engine.core.clock import VirtualClock
from engine.core.events import Event
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder

KEY = "0x" + "22" * 32
ETH, SOL = 4, 8
MS = 1_000_000
S = 1_000_000_000
UNIX0 = 1_767_200_000 * S  # wall time at virtual time 0
D = Decimal

SYMBOLS = {
    ETH: SymbolInfo(
        symbol="ETH-PERP",
        product_id=ETH,
        type="perp",
        price_increment_x18=10**17,
        size_increment_x18=10**15,
        min_size_x18=10 * 10**18,
        trading_status="live",
        isolated_only=False,
    ),
    SOL: SymbolInfo(
        symbol="SOL-PERP",
        product_id=SOL,
        type="perp",
        price_increment_x18=10**16,
        size_increment_x18=10**16,
        min_size_x18=10 * 10**18,
        trading_status="live",
        isolated_only=False,
    ),
}


def not_found() -> GatewayError:
    return GatewayError(
        Classified(error_class="permanent", reason="not_found", code=2020, message="not found"),
        "query_order",
    )


def unreachable(request: str) -> GatewayError:
    return GatewayError(Classified(error_class="retryable", reason="connect_error"), request)


def perp_entry(pid: int, oracle: Decimal) -> dict[str, Any]:
    """An `all_products` perp entry: the oracle price and the book increments."""
    info = SYMBOLS[pid]
    return {
        "product_id": pid,
        "oracle_price_x18": str(to_x18(oracle)),
        "book_info": {
            "price_increment_x18": str(info.price_increment_x18),
            "size_increment": str(info.size_increment_x18),
            "min_size": str(info.min_size_x18),
        },
    }


class FakeStream:
    """What NadoVenue reads of its StreamClient: the epoch and whether it is up."""

    def __init__(self) -> None:
        self.epoch, self.connected = 1, True

    def connect(self, attempt: int) -> None:
        pass

    async def close(self) -> None:
        pass

    def gap(self) -> None:
        self.epoch += 1


class Gateway:
    """Answers after `rtt_ms`: placements (the body's own digest), `order` (2020 unless
    listed in `resting`), `market_prices` (from `quotes`, or failing), archive-less."""

    def __init__(self, clock: VirtualClock, rtt_ms: int = 50) -> None:
        self.clock, self.rtt_ns = clock, rtt_ms * MS
        self.digest_of: Callable[[Any], str] = lambda body: "0x" + "00" * 32
        self.resting: dict[str, dict[str, Any]] = {}
        self.quotes: dict[int, tuple[Decimal, Decimal]] = {ETH: (D(3000), D("3000.5"))}
        self.quotes_fail = False
        # `all_products`: the oracle price per product (the venue's index, §6.1).
        self.oracles: dict[int, Decimal] = {}
        self.oracles_fail = False
        self.log: list[tuple[int, str]] = []  # (virtual ns sent, request type)

    async def _trip(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.clock.call_later(self.rtt_ns, lambda: fut.done() or fut.set_result(None))
        await fut

    async def execute(self, body: Any, *, request: str, priority: Any, weight: int) -> Any:
        self.log.append((self.clock.now_ns(), next(iter(body))))
        await self._trip()
        return {"digest": self.digest_of(body)}

    async def query(
        self, params: Any, *, request: str, priority: Any, weight: int | None = None
    ) -> Any:
        kind = str(params["type"])
        self.log.append((self.clock.now_ns(), kind))
        await self._trip()
        if kind == "order":
            found = self.resting.get(params["digest"])
            if found is None:
                raise not_found()
            return found
        if kind == "market_prices":
            if self.quotes_fail:
                raise unreachable(request)
            return {
                "market_prices": [
                    {
                        "product_id": pid,
                        "bid_x18": str(to_x18(self.quotes[pid][0])),
                        "ask_x18": str(to_x18(self.quotes[pid][1])),
                    }
                    for pid in params["product_ids"]
                    if pid in self.quotes
                ]
            }
        if kind == "all_products":
            if self.oracles_fail:
                raise unreachable(request)
            return {
                "spot_products": [],
                "perp_products": [perp_entry(p, o) for p, o in self.oracles.items()],
            }
        raise unreachable(request)

    async def aclose(self) -> None:
        pass

    def sent(self, kind: str) -> list[int]:
        return [t for t, k in self.log if k == kind]


class OfflineVenue:
    def __init__(
        self,
        rtt_ms: int = 50,
        on_sent: Callable[[str], None] | None = None,
        **settings: Any,
    ) -> None:
        self.clock = VirtualClock()
        base: dict[str, Any] = {"gateway_url": "http://127.0.0.1:9/v1", "pair": ("ETH-PERP",)}
        base.update(settings)
        self.venue = NadoVenue(
            NadoSettings(**base),
            Secret(KEY),
            clock=self.clock,
            unix_ns=lambda: UNIX0 + self.clock.now_ns(),
            on_sent=on_sent,
        )
        self.gateway = Gateway(self.clock, rtt_ms)
        self.gateway.digest_of = self._digest_of
        self.stream = FakeStream()
        self.events: list[tuple[int, Event]] = []

    def _digest_of(self, body: Any) -> str:
        for entry in self.venue.orders.values():
            if entry.signed.body() == body:
                return entry.digest
        raise AssertionError("placement of an unknown body")

    async def start(self, symbols: tuple[int, ...] = (ETH,)) -> None:
        """What `NadoVenue._start` sets up, minus discovery and the socket; the oracle
        prices discovery would have read are the gateway's `oracles` now."""
        v = self.venue
        signer = Signer(
            Secret(KEY),
            chain_id=763373,
            endpoint_addr="0x698d87105274292b5673367dec81874ce3633ac2",
            subaccount_name="default",
        )
        v.adopt({pid: SYMBOLS[pid] for pid in symbols}, signer)
        v.client = self.gateway  # type: ignore[assignment]
        v.core.stream = self.stream  # type: ignore[assignment]
        v.begin(self._sink, dict(self.gateway.oracles))
        await self.settle()

    def _sink(self, ev: Event) -> None:
        self.events.append((self.clock.now_ns(), ev))

    async def settle(self) -> None:
        for _ in range(30):
            await asyncio.sleep(0)

    async def run(self, ms: float) -> None:
        """Advance virtual time by `ms`, firing timers in order and letting tasks run."""
        target = self.clock.now_ns() + int(ms * MS)
        await self.settle()
        while True:
            due = self.clock.next_due_ns()
            if due is None or due > target:
                break
            self.clock.advance_to(due)
            await self.settle()
        self.clock.advance_to(target)
        await self.settle()

    async def submit(self, intent: Intent) -> None:
        self.venue.submit(intent)
        await self.settle()

    async def place(self, intent: PlaceOrder) -> str:
        """Place and wait for the ack; returns the order's digest."""
        await self.submit(intent)
        await self.run(self.gateway.rtt_ns / MS)
        return self.venue.orders[intent.order_id].digest

    # -- frames ------------------------------------------------------------------------------
    async def frame(self, obj: dict[str, Any]) -> None:
        self.venue._on_frame(decode_stream(json.dumps(obj)))
        await self.settle()

    def unix_ns(self) -> int:
        return UNIX0 + self.clock.now_ns()

    @property
    def sender(self) -> str:
        assert self.venue.signer is not None
        return self.venue.signer.sender

    def of(self, cls: type[Any]) -> list[Any]:
        return [ev for _, ev in self.events if isinstance(ev, cls)]

    async def close(self) -> None:
        await self.venue.close()


def order_update_frame(
    digest: str, amount: Decimal | str, reason: str, *, ts_ns: int, pid: int = ETH
) -> dict[str, Any]:
    return {
        "type": "order_update",
        "timestamp": str(ts_ns),
        "product_id": pid,
        "digest": digest,
        "amount": str(to_x18(D(amount))),
        "reason": reason,
    }


def fill_frame(
    digest: str,
    sender: str,
    *,
    filled: Decimal | str,
    remaining: Decimal | str,
    original: Decimal | str,
    price: Decimal | str,
    is_bid: bool,
    ts_ns: int,
    pid: int = ETH,
) -> dict[str, Any]:
    return {
        "type": "fill",
        "timestamp": str(ts_ns),
        "product_id": pid,
        "subaccount": sender,
        "order_digest": digest,
        "filled_qty": str(to_x18(D(filled))),
        "remaining_qty": str(to_x18(D(remaining))),
        "original_qty": str(to_x18(D(original))),
        "price": str(to_x18(D(price))),
        "is_taker": True,
        "is_bid": is_bid,
        "fee": "0",
    }


def bbo_frame(bid: str, ask: str, *, ts_ns: int, pid: int = ETH) -> dict[str, Any]:
    return {
        "type": "best_bid_offer",
        "timestamp": str(ts_ns),
        "product_id": pid,
        "bid_price": str(to_x18(D(bid))),
        "bid_qty": str(to_x18(D(1))),
        "ask_price": str(to_x18(D(ask))),
        "ask_qty": str(to_x18(D(1))),
    }
