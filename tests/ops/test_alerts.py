"""Alerts: one path to the log and a webhook; retry, dedupe, never blocking trading."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import httpx
import pytest

from engine.ops.alerts import Alert
from engine.ops.alerts import Alerter
from engine.ops.alerts import mask_url
from engine.ops.logs import configure
from engine.ops.logs import run_logger
from tests.ops.support import FAULTY
from tests.ops.support import run_session
from tests.ops.support import session

NS = 1_000_000_000


def _alert(event: str = "halt", state: str = "halted", ns: int = 1) -> Alert:
    return Alert(
        event=event,
        severity="critical",
        message="two consecutive failed cycles",
        exposure_usd=Decimal("12.5"),
        state=state,
        action="no new entries until an operator resumes",
        engine_ns=ns,
    )


async def _no_sleep(_s: float) -> None:
    return None


def test_payload_is_structured_and_duplicates_are_suppressed_on_engine_time():
    now = [0]
    logger = run_logger()
    lines: list[str] = []
    setup = configure(logger, console=lines.append)
    alerter = Alerter(pair="ETH-SOL", run="j.db", dedupe_s=60, now_ns=lambda: now[0], logger=logger)
    assert alerter.raise_alert(_alert(ns=1 * NS))
    assert not alerter.raise_alert(_alert(ns=30 * NS))  # within 60 s: suppressed
    assert alerter.raise_alert(_alert(event="breaker_open", state="open", ns=31 * NS))
    assert alerter.raise_alert(_alert(ns=62 * NS))  # window over
    setup.close()
    assert [a.event for a in alerter.history] == ["halt", "breaker_open", "halt"]
    assert alerter.stats.deduped == 1
    assert sum("[ALERT] critical: halt" in line for line in lines) == 2
    payload = alerter.history[-1].payload(run="j.db", repeats=1)
    for key in ("event", "severity", "pair", "exposure_usd", "state", "action", "ts_utc", "text"):
        assert payload[key], key
    assert payload["exposure_usd"] == "12.5"
    assert payload["engine_s"] == "62"


def test_webhook_retries_5xx_then_delivers_and_does_not_retry_4xx():
    calls: list[dict[str, object]] = []
    answers = [500, 503, 200, 400]

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        return httpx.Response(answers[len(calls) - 1])

    async def main() -> Alerter:
        alerter = Alerter(
            webhook_url="https://hooks.example/T0K3N",
            transport=httpx.MockTransport(handler),
            sleep=_no_sleep,
            logger=run_logger(),
        )
        alerter.start()
        alerter.raise_alert(_alert(ns=1))
        alerter.raise_alert(_alert(event="breaker_open", state="open", ns=2))
        await alerter.aclose(timeout_s=5)
        return alerter

    alerter = asyncio.run(main())
    assert [c["event"] for c in calls] == ["halt", "halt", "halt", "breaker_open"]
    assert alerter.stats.sent == 1
    assert alerter.stats.failed == 1  # the 400 is not retried
    assert alerter.stats.attempts == 4


def test_webhook_url_is_masked():
    assert (
        mask_url("https://hooks.slack.com/services/T000/B000/XXXX") == "https://hooks.slack.com/…"
    )


async def _receiver(
    bodies: list[dict[str, object]], status: int = 200
) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        bodies.append(json.loads(await reader.readexactly(length)))
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_loopback_receiver_gets_the_alert():
    bodies: list[dict[str, object]] = []

    async def main() -> Alerter:
        server, port = await _receiver(bodies)
        alerter = Alerter(pair="ETH-SOL", webhook_url=f"http://127.0.0.1:{port}/hook")
        alerter.start()
        alerter.raise_alert(_alert())
        await alerter.aclose(timeout_s=5)
        server.close()
        await server.wait_closed()
        return alerter

    alerter = asyncio.run(main())
    assert alerter.stats.sent == 1
    assert bodies[0]["event"] == "halt"
    assert bodies[0]["pair"] == "ETH-SOL"
    assert bodies[0]["state"] == "halted"


def test_a_receiver_that_is_down_does_not_stall_a_run(tmp_path):
    async def closed_port() -> int:
        server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return int(port)

    port = asyncio.run(closed_port())
    alerter = Alerter(
        pair="ETH-SOL", webhook_url=f"http://127.0.0.1:{port}/hook", retries=2, backoff_s=0.01
    )
    s = session(tmp_path, cycles=12, seed=4, faults=FAULTY)
    s.alerter = alerter
    s.monitor = None
    run_session(s)  # the run completes: alerts were queued, never awaited by trading
    assert s.summary()["cycles_completed"] == 12
    assert len(alerter.history) >= 1
    assert alerter.pending == len(alerter.history)  # nothing could be sent while trading

    asyncio.run(alerter.aclose(timeout_s=5))
    assert alerter.stats.sent == 0
    assert alerter.stats.failed == len(alerter.history)


@pytest.mark.parametrize("severity", ["loud", ""])
def test_unknown_severity_is_refused(severity):
    with pytest.raises(ValueError, match="severity"):
        Alert(event="x", severity=severity, message="m")
