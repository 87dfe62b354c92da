"""The archive (indexer): how an order that no longer rests ended (nado-protocol.md §6.4).

The gateway's `order` query lists resting orders only; the archive keeps every order
with its cumulative `base_filled`. It is another host with its own budget and no status
envelope: `POST <archive>` `{"orders": {"digests": [...]}}` → `{"orders": [...]}`.

It lags the engine (a third party saw fresh partial fills missing), so an entry is only
believed once its latest timestamp is `settle_s` old, or when it is completely filled
(nothing can be missing then); before that the answer is "not yet".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs
import httpx

from adapters.nado.client import GatewayError
from adapters.nado.errors import classify_exception
from adapters.nado.errors import classify_http
from adapters.nado.mapping import from_x18
from adapters.nado.ratelimit import Priority
from adapters.nado.ratelimit import RateLimiter
from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import loads
from adapters.nado.wire import opt_int
from adapters.nado.wire import req_hex
from adapters.nado.wire import req_int
from adapters.nado.wire import req_list

__all__ = ["ArchiveClient", "ArchiveOrder", "archive_weight", "parse_archive_orders"]

BUDGET = "archive"


@attrs.frozen(kw_only=True)
class ArchiveOrder:
    digest: str
    product_id: int
    qty: Decimal  # |amount|
    filled: Decimal  # |base_filled|, cumulative
    last_s: int  # unix seconds of the latest fill (or of the order, if none)

    @property
    def complete(self) -> bool:
        return self.filled >= self.qty


def parse_archive_orders(obj: Any) -> dict[str, ArchiveOrder]:
    """`{"orders": [...]}` → by digest. Quantities absolute (signed like the order)."""
    w = "archive_orders"
    if not isinstance(obj, Mapping):
        raise MalformedFrame("reply must be a JSON object", where=w)
    out: dict[str, ArchiveOrder] = {}
    for entry in req_list(obj, "orders", w):
        if not isinstance(entry, Mapping):
            raise MalformedFrame("order must be an object", where=w)
        amount = req_int(entry, "amount", w)
        base = req_int(entry, "base_filled", w)
        if amount == 0 or (base != 0 and (base < 0) != (amount < 0)) or abs(base) > abs(amount):
            raise MalformedFrame("base_filled inconsistent with amount", where=w)
        stamps = [
            opt_int(entry, key, w, min_value=0) or 0
            for key in ("timestamp", "first_fill_timestamp", "last_fill_timestamp")
        ]
        digest = req_hex(entry, "digest", w, nbytes=32)
        out[digest] = ArchiveOrder(
            digest=digest,
            product_id=req_int(entry, "product_id", w, min_value=0),
            qty=from_x18(abs(amount)),
            filled=from_x18(abs(base)),
            last_s=max(stamps),
        )
    return out


def archive_weight(n_digests: int) -> int:
    """`orders`: 2 + limit * subaccounts / 20 (§8); a digest lookup counts as limit 1."""
    return 2 + max(1, n_digests) // 20


class ArchiveClient:
    def __init__(
        self,
        url: str,
        limiter: RateLimiter,
        *,
        unix_ns: Callable[[], int],
        settle_s: int = 10,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.limiter = limiter
        self.unix_ns = unix_ns
        self.settle_s = settle_s
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
            transport=transport,
            headers={"Accept-Encoding": "gzip", "Content-Type": "application/json"},
        )
        self.requests = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def orders(self, digests: Sequence[str], *, request: str) -> dict[str, ArchiveOrder]:
        """The archive's entries for these digests (absent: not indexed, or unknown)."""
        await self.limiter.acquire(BUDGET, archive_weight(len(digests)), Priority.RISK)
        self.requests += 1
        body = json.dumps({"orders": {"digests": list(digests)}}, separators=(",", ":"))
        try:
            response = await self._http.post(self.url, content=body)
        except (TimeoutError, httpx.HTTPError, OSError) as exc:
            raise GatewayError(classify_exception(exc, request), request) from None
        if response.status_code != 200:
            classified = classify_http(
                response.status_code, dict(response.headers), response.text, request
            )
            if classified is not None:
                if classified.error_class == "rate_limited":
                    self.limiter.note_rate_limited(BUDGET, classified.retry_after_s)
                raise GatewayError(classified, request)
        try:
            found = parse_archive_orders(loads(response.text))
        except MalformedFrame as exc:
            raise GatewayError(classify_exception(exc, request), request) from None
        self.limiter.note_success(BUDGET)
        return found

    def settled(self, order: ArchiveOrder) -> bool:
        """Believable: completely filled, or quiet for `settle_s` (indexing lag)."""
        return order.complete or self.unix_ns() // 1_000_000_000 - order.last_s >= self.settle_s
