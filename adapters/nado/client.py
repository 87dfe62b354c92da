"""Async REST for the gateway: `POST /v1/query` and `POST /v1/execute` over httpx.

Every request first takes its weight from the `RateLimiter` (nado-protocol.md §8) in
its priority lane, then goes out once; nothing is retried here. The reply is
classified (`adapters.nado.errors`): a success envelope returns its `data`, anything
else raises `GatewayError` carrying the classification, so a failed read can never
look like an empty answer. A 429 or code 1000 pauses the budget (Retry-After honoured,
else jittered exponential backoff) before the error is raised: requests behind it wait
in the limiter instead of reaching the venue.

A request that would wait in the limiter longer than its lane's `max_hold_s` is
withdrawn unsent (`rate_limited`, reason `held_back`): a price chosen before a long
rate-limit window must not reach the book after it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs
import httpx

from adapters.nado.errors import Classified
from adapters.nado.errors import classify_exception
from adapters.nado.errors import classify_http
from adapters.nado.queries import parse_envelope
from adapters.nado.ratelimit import NowNs
from adapters.nado.ratelimit import Priority
from adapters.nado.ratelimit import RateLimiter
from adapters.nado.ratelimit import Shed
from adapters.nado.ratelimit import query_weight
from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import loads

__all__ = ["ClientConfig", "GatewayClient", "GatewayError"]


class GatewayError(Exception):
    """A request that did not succeed. `classified.error_class` says what is known."""

    def __init__(self, classified: Classified, request: str) -> None:
        self.classified = classified
        self.request = request
        super().__init__(f"{request}: {classified.error_class} ({classified.reason})")

    @property
    def error_class(self) -> str:
        return self.classified.error_class

    @property
    def code(self) -> int | None:
        return self.classified.code


def _default_holds() -> dict[Priority, float]:
    return {Priority.RISK: 30.0, Priority.NORMAL: 5.0, Priority.READ: 0.0}


@attrs.frozen(kw_only=True)
class ClientConfig:
    timeout_s: float = 5.0  # whole request; a write past it has an unknown outcome
    connect_timeout_s: float = 2.0  # nothing was sent: retryable
    max_hold_s: dict[Priority, float] = attrs.field(factory=_default_holds)


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        limiter: RateLimiter,
        clock: NowNs,
        unix_ns: Callable[[], int],
        config: ClientConfig | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.clock = clock
        self.unix_ns = unix_ns  # wall time, for Retry-After given as an HTTP date
        self.config = cfg = config or ClientConfig()
        timeout = httpx.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"Accept-Encoding": "gzip", "Content-Type": "application/json"},
        )
        self.stats: Counter[str] = Counter()
        self.sent_log: list[tuple[str, int]] = []  # (label, clock ns) of each request sent

    async def aclose(self) -> None:
        await self._http.aclose()

    async def query(
        self,
        params: Mapping[str, Any],
        *,
        request: str,
        priority: Priority,
        weight: int | None = None,
    ) -> Any:
        """`POST /v1/query`; returns the success `data`. `request` is the engine's name for
        the read (for classification and errors)."""
        qtype = str(params["type"])
        if weight is None:
            n = len(params.get("product_ids", ()) or ())
            weight = query_weight(qtype, n_products=max(n, 1))
        return await self._send("query", f"query.{qtype}", params, request, priority, weight)

    async def execute(
        self, body: Mapping[str, Any], *, request: str, priority: Priority, weight: int
    ) -> Any:
        """`POST /v1/execute`; returns the success `data`."""
        kind = next(iter(body))
        return await self._send("execute", f"execute.{kind}", body, request, priority, weight)

    async def _send(
        self,
        budget: str,
        label: str,
        payload: Mapping[str, Any],
        request: str,
        priority: Priority,
        weight: int,
    ) -> Any:
        await self._acquire(budget, weight, priority, request)
        self.stats[label] += 1
        self.stats["requests"] += 1
        self.sent_log.append((label, self.clock.now_ns()))
        path = "/query" if budget == "query" else "/execute"
        content = json.dumps(payload, separators=(",", ":"))
        try:
            response = await self._http.post(path, content=content)
        except (TimeoutError, httpx.HTTPError, OSError) as exc:
            classified = classify_exception(exc, request)
            self.stats[f"failed.{classified.reason}"] += 1
            raise GatewayError(classified, request) from None
        text = response.text
        classified_or_none = classify_http(
            response.status_code,
            dict(response.headers),
            text,
            request,
            now_unix_s=Decimal(self.unix_ns()) / 1_000_000_000,
        )
        if classified_or_none is None:
            try:
                envelope = parse_envelope(loads(text))
            except MalformedFrame as exc:
                classified = classify_exception(exc, request)
                self.stats[f"failed.{classified.reason}"] += 1
                raise GatewayError(classified, request) from None
            self.limiter.note_success(budget)
            return envelope.data
        classified = classified_or_none
        self.stats[f"failed.{classified.reason}"] += 1
        if classified.error_class == "rate_limited":
            self.stats["rate_limited"] += 1
            self.limiter.note_rate_limited(budget, classified.retry_after_s)
        raise GatewayError(classified, request)

    async def _acquire(self, budget: str, weight: int, priority: Priority, request: str) -> None:
        hold = self.config.max_hold_s.get(priority, 0.0)
        try:
            if priority is Priority.READ or hold <= 0:
                await self.limiter.acquire(budget, weight, priority)
            else:
                await asyncio.wait_for(self.limiter.acquire(budget, weight, priority), hold)
        except Shed:
            self.stats["shed"] += 1
            raise GatewayError(
                Classified(error_class="rate_limited", reason="shed", message="read shed"),
                request,
            ) from None
        except TimeoutError:
            self.stats["held_back"] += 1
            paused = self.limiter.paused_until(budget) - self.clock.now_ns()
            after = Decimal(max(paused, 0)) / 1_000_000_000 if paused > 0 else None
            raise GatewayError(
                Classified(
                    error_class="rate_limited",
                    reason="held_back",
                    retry_after_s=after,
                    message=f"not sent: waited {hold}s for the {budget} budget",
                ),
                request,
            ) from None
