"""Alerts: one path, a structured payload, to the log and (optionally) a webhook.

`Alerter.raise_alert(alert)` never blocks and never raises: it logs the alert at once
(tag [ALERT], level by severity), drops a duplicate of the same (event, state) seen within
`dedupe_s` of engine time (counting it into the next one sent), and queues the payload
for the webhook sender. The sender is an asyncio task: it POSTs JSON over httpx with a
short timeout and a bounded number of retries with backoff (connect errors, timeouts,
5xx and 429 are retried; other 4xx are not); the queue is bounded and sheds the oldest
alert when full. Trading code never awaits any of it; `aclose()` gives the queue a
bounded time to drain at exit.

The payload: event, severity, pair, exposure_usd, state, action, message, ts_utc
(wall clock), engine_s (engine clock), run (journal path), repeats (duplicates
suppressed since the last one sent), and `text` (a one-line summary, which is what
Slack-style incoming webhooks display).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx

from engine.core.clock import NS_PER_S
from engine.ops.logs import LOGGER

__all__ = ["Alert", "Alerter", "WebhookStats", "mask_url"]

SEVERITIES = ("info", "warning", "critical")
_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


@attrs.frozen(kw_only=True)
class Alert:
    event: str
    severity: str = attrs.field(validator=attrs.validators.in_(SEVERITIES))
    message: str
    pair: str = ""
    exposure_usd: Decimal | None = None
    state: str = ""
    action: str = ""
    engine_ns: int = 0
    ts_utc: float = attrs.field(factory=time.time)
    source: str = ""  # machine or component that raised it

    def payload(self, *, run: str = "", repeats: int = 0) -> dict[str, Any]:
        exposure = None if self.exposure_usd is None else str(self.exposure_usd)
        text = f"[{self.severity.upper()}] {self.pair} {self.event}: {self.message}"
        if exposure is not None:
            text += f" (exposure {exposure} USD)"
        if self.action:
            text += f" — {self.action}"
        return {
            "event": self.event,
            "severity": self.severity,
            "pair": self.pair,
            "exposure_usd": exposure,
            "state": self.state,
            "action": self.action,
            "message": self.message,
            "source": self.source,
            "ts_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.ts_utc)),
            "engine_s": str(Decimal(self.engine_ns) / NS_PER_S),
            "run": run,
            "repeats": repeats,
            "text": text,
        }


def mask_url(url: str) -> str:
    """Webhook URLs often embed a token: show scheme and host only."""
    parts = urlsplit(url)
    return (
        f"{parts.scheme}://{parts.hostname or '?'}{':' + str(parts.port) if parts.port else ''}/…"
    )


@attrs.define
class WebhookStats:
    sent: int = 0
    failed: int = 0  # gave up after the retries
    attempts: int = 0
    shed: int = 0  # dropped because the queue was full
    deduped: int = 0


Sleep = Callable[[float], Awaitable[None]]


class Alerter:
    def __init__(
        self,
        *,
        pair: str = "",
        run: str = "",
        webhook_url: str | None = None,
        dedupe_s: float = 300.0,
        now_ns: Callable[[], int] = lambda: 0,
        timeout_s: float = 3.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        queue_size: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        logger: logging.Logger = LOGGER,
    ) -> None:
        self.log = logger
        self.pair, self.run = pair, run
        self.webhook_url = webhook_url
        self.dedupe_ns = int(dedupe_s * NS_PER_S)
        self.now_ns = now_ns
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.queue_size = queue_size
        self.transport = transport
        self.sleep = sleep
        self.stats = WebhookStats()
        self.history: deque[Alert] = deque(maxlen=50)
        self.listeners: list[Callable[[Alert], None]] = []
        self._last: dict[tuple[str, str], int] = {}
        self._repeats: dict[tuple[str, str], int] = {}
        self._queue: deque[dict[str, Any]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._closing = False

    # -- raising (synchronous, never blocks) -------------------------------------------------
    def raise_alert(self, alert: Alert) -> bool:
        """Log and queue; False if it was a duplicate inside the dedupe window."""
        try:
            return self._raise(alert)
        except Exception:  # an alert must never take trading down
            self.log.exception("[ALERT] failed to raise alert %s", alert.event)
            return False

    def _raise(self, alert: Alert) -> bool:
        if not alert.pair and self.pair:
            alert = attrs.evolve(alert, pair=self.pair)
        if not alert.engine_ns:
            alert = attrs.evolve(alert, engine_ns=self.now_ns())
        key = (alert.event, alert.state)
        last = self._last.get(key)
        if last is not None and alert.engine_ns - last < self.dedupe_ns:
            self._repeats[key] = self._repeats.get(key, 0) + 1
            self.stats.deduped += 1
            self.log.info(
                "[ALERT] duplicate %s suppressed",
                alert.event,
                extra={"tag": "ALERT", "console": False},
            )
            return False
        self._last[key] = alert.engine_ns
        repeats = self._repeats.pop(key, 0)
        payload = alert.payload(run=self.run, repeats=repeats)
        exposure = f" (open exposure {alert.exposure_usd} USD)" if alert.exposure_usd else ""
        self.log.log(
            _LEVEL[alert.severity],
            f"[ALERT] {alert.severity}: {alert.event}: {alert.message}{exposure}"
            + (f" — {alert.action}" if alert.action else ""),
            extra={
                "tag": "ALERT",
                "machine": alert.source or None,
                "engine_ns": alert.engine_ns,
                "fields": payload,
            },
        )
        self.history.append(alert)
        for listener in self.listeners:
            listener(alert)
        if self.webhook_url:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.stats.shed += 1
            self._queue.append(payload)
            if self._wake is not None:
                self._wake.set()
        return True

    # -- delivery (asyncio) ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the sender on the running loop (no-op without a webhook)."""
        if not self.webhook_url or self._task is not None:
            return
        self._wake = asyncio.Event()
        if self._queue:
            self._wake.set()
        self._client = httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dnpair-alerts")

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            while self._queue:
                payload = self._queue.popleft()
                await self._deliver(payload)
            if self._closing:
                return
            self._wake.clear()
            await self._wake.wait()

    async def _deliver(self, payload: dict[str, Any]) -> None:
        assert self._client is not None
        assert self.webhook_url
        delay = self.backoff_s
        for attempt in range(1, self.retries + 1):
            self.stats.attempts += 1
            retry = True
            try:
                resp = await self._client.post(self.webhook_url, json=payload)
                if resp.status_code < 300:
                    self.stats.sent += 1
                    return
                retry = resp.status_code >= 500 or resp.status_code == 429
                why = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            self.log.warning(
                f"[ALERT] webhook {mask_url(self.webhook_url)} failed ({why}), "
                f"attempt {attempt}/{self.retries}",
                extra={"tag": "ALERT", "console": False},
            )
            if not retry or attempt == self.retries:
                break
            await self.sleep(delay)
            delay *= 2
        self.stats.failed += 1

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Let the queue drain for at most `timeout_s`, then stop the sender."""
        if self._task is not None and self._task.get_loop() is not asyncio.get_running_loop():
            # Started on a loop that has ended (the run's): that sender and its client went
            # with it. Whatever is still queued goes out from this loop.
            self._task, self._client, self._wake = None, None, None
        if self.webhook_url and self._task is None and self._queue:
            self.start()  # a virtual-clock run raised alerts with the loop blocked
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                left = len(self._queue)
                self.stats.failed += left
                self._queue.clear()
                self.log.warning(
                    f"[ALERT] webhook delivery stopped at exit; {left} alert(s) not delivered",
                    extra={"tag": "ALERT"},
                )
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
