"""The archive client without sockets (httpx.MockTransport): reply parsing, the indexing
lag rule, and failures that stay failures."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import httpx
import pytest

from adapters.nado.archive import ArchiveClient
from adapters.nado.archive import archive_weight
from adapters.nado.archive import parse_archive_orders
from adapters.nado.client import GatewayError
from adapters.nado.ratelimit import LimiterConfig
from adapters.nado.ratelimit import RateLimiter
from adapters.nado.ratelimit import Window
from adapters.nado.wire import MalformedFrame
from engine.core.clock import VirtualClock

X18 = 10**18
DIGEST = "0x" + "ab" * 32
NOW_S = 1_767_200_000


def entry(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "digest": DIGEST,
        "subaccount": "0x" + "11" * 32,
        "product_id": 4,
        "submission_idx": "77",
        "amount": str(-2 * X18),
        "price_x18": str(3000 * X18),
        "base_filled": str(-X18 // 2),
        "quote_filled": str(1500 * X18),
        "fee": "0",
        "timestamp": str(NOW_S - 30),
        "first_fill_timestamp": str(NOW_S - 30),
        "last_fill_timestamp": str(NOW_S - 20),
    }
    base.update(kw)
    return base


def test_parse_reads_absolute_cumulative_fills() -> None:
    found = parse_archive_orders({"orders": [entry()]})
    order = found[DIGEST]
    assert (order.qty, order.filled, order.last_s) == (Decimal(2), Decimal("0.5"), NOW_S - 20)
    assert not order.complete
    assert parse_archive_orders({"orders": []}) == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"orders": [entry(base_filled=str(X18))]},  # sign differs from the order's
        {"orders": [entry(base_filled=str(-3 * X18))]},  # more than the order
        {"orders": [entry(amount="0")]},
        {"orders": [entry(digest="0x12")]},
        {"orders": "x"},
        [],
    ],
)
def test_parse_refuses_inconsistent_replies(bad: object) -> None:
    with pytest.raises(MalformedFrame):
        parse_archive_orders(bad)


def limiter() -> RateLimiter:
    windows = {"archive": (Window(400, 10 * 10**9),)}
    return RateLimiter(VirtualClock(), random.Random(0), LimiterConfig(windows=windows))


def client(handler: object, settle_s: int = 10) -> ArchiveClient:
    return ArchiveClient(
        "https://archive.test/v1",
        limiter(),
        unix_ns=lambda: NOW_S * 10**9,
        settle_s=settle_s,
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
    )


@pytest.mark.asyncio
async def test_client_posts_digests_and_applies_the_lag_rule() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"orders": [entry()]})

    c = client(handler, settle_s=10)
    found = await c.orders([DIGEST], request="query_order")
    assert seen == [{"orders": {"digests": [DIGEST]}}]
    assert c.settled(found[DIGEST])  # quiet for 20 s
    late = client(handler, settle_s=60)
    assert not late.settled(found[DIGEST])  # indexing may still be behind
    complete = parse_archive_orders({"orders": [entry(base_filled=str(-2 * X18))]})[DIGEST]
    assert late.settled(complete)  # completely filled: nothing can be missing
    await c.aclose()
    await late.aclose()
    assert archive_weight(1) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("response", "error_class"),
    [
        (httpx.Response(429, headers={"Retry-After": "3"}, text="slow down"), "rate_limited"),
        (httpx.Response(503, text="busy"), "retryable"),
        (httpx.Response(200, text="not json"), "retryable"),
    ],
)
async def test_failures_are_errors_never_empty_answers(
    response: httpx.Response, error_class: str
) -> None:
    c = client(lambda _r: response)
    with pytest.raises(GatewayError) as err:
        await c.orders([DIGEST], request="query_order")
    assert err.value.error_class == error_class
    await c.aclose()
