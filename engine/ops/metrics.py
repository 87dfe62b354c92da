"""Prometheus metrics (`dnpair run --metrics-port P`), every name prefixed `dnpair_`.

Gauges and counters are computed when scraped, from the engine, its ledger and the
run's journal fold (nothing is updated per event, so metrics cost the loop nothing);
histograms are observed when a cycle closes or an order's first fill is learnt. The
registry is private to the run. The endpoint is a small asyncio HTTP server on the
engine's own loop (no thread): `GET /metrics` in Prometheus text format.

Families: positions and notional per product, unhedged notional, each live machine's
state, cycles by outcome, cycle duration / fill latency (stream vs REST) / slippage
histograms, orders, fills, rejects, 429s, reconnects, emergency exits, alerts, breaker
and health state, WS connected, halted, PnL and fees.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Histogram
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from engine.core.flatness import mid_of
from engine.core.flatness import unhedged_usd
from engine.core.loop import Engine
from engine.ops.trades import CycleRecord
from engine.ops.trades import OrderFacts
from engine.ops.trades import RunFold
from engine.ops.trades import machine_kind

__all__ = ["CONTENT_TYPE", "MetricsServer", "RunMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BREAKER_CODES = {"closed": 0, "half_open": 1, "open": 2}
HEALTH_CODES = {"normal": 0, "degraded": 1, "minimal": 2}
CYCLE_BUCKETS = (0.25, 0.5, 1, 2, 3, 4, 6, 8, 10, 15, 20, 30, 60, 120)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5)
SLIPPAGE_BUCKETS = (-50, -20, -10, -5, -2, 0, 2, 5, 10, 20, 50, 100, 200, 500)


class _Live(Collector):
    def __init__(self, metrics: RunMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self.m.collect()


class RunMetrics:
    """The metric families of one run. `extra()` returns run-level values (the Monitor's)."""

    def __init__(
        self,
        engine: Engine,
        fold: RunFold,
        *,
        symbols: dict[int, str],
        extra: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.engine, self.fold, self.symbols, self.extra = engine, fold, symbols, extra
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.cycle_duration = Histogram(
            "dnpair_cycle_duration_seconds",
            "Cycle time from the pre-trade check to the verified end of UNWIND (hold included)",
            buckets=CYCLE_BUCKETS,
            registry=r,
        )
        self.cycle_active = Histogram(
            "dnpair_cycle_active_seconds",
            "Cycle time excluding the hold",
            buckets=CYCLE_BUCKETS,
            registry=r,
        )
        self.fill_latency = Histogram(
            "dnpair_fill_latency_seconds",
            "Order sent to its first fill known, by source (stream push or REST audit)",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fill_detection = Histogram(
            "dnpair_fill_detection_seconds",
            "Venue match time to engine ingress of a pushed fill",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.slippage = Histogram(
            "dnpair_slippage_bps",
            "Average fill price against the mid at decision time, bps (positive = worse)",
            ["side"],
            buckets=SLIPPAGE_BUCKETS,
            registry=r,
        )
        r.register(_Live(self))
        fold.on_cycle_closed.append(self._cycle_closed)
        fold.on_order_filled.append(self._order_filled)

    # -- observed ----------------------------------------------------------------------------
    def _cycle_closed(self, c: CycleRecord) -> None:
        if c.cycle_s is not None:
            self.cycle_duration.observe(float(c.cycle_s))
        if c.active_s is not None:
            self.cycle_active.observe(float(c.active_s))
        for o in c.orders:
            bps = o.slippage_bps
            if bps is not None:
                self.slippage.labels(side="entry" if o.is_entry else "exit").observe(float(bps))

    def _order_filled(self, o: OrderFacts) -> None:
        if o.fill_latency_ns is not None:
            self.fill_latency.labels(source=o.first_fill_source or "stream").observe(
                o.fill_latency_ns / 1e9
            )
        if o.detect_ns is not None:
            self.fill_detection.observe(o.detect_ns / 1e9)

    # -- computed at scrape ----------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        ledger, fold, c = self.engine.ledger, self.fold, self.fold.counters
        pos = GaugeMetricFamily(
            "dnpair_position",
            "Position per product (base units; the venue's when newer)",
            labels=["product"],
        )
        venue = GaugeMetricFamily(
            "dnpair_venue_position", "Last position the venue reported", labels=["product"]
        )
        notional = GaugeMetricFamily(
            "dnpair_position_notional_usd", "Signed position notional at mid", labels=["product"]
        )
        positions: dict[int, Decimal] = {}
        mids: dict[int, Decimal | None] = {}
        for pid, symbol in self.symbols.items():
            qty = positions[pid] = ledger.best_position(pid)
            pos.add_metric([symbol], float(qty))
            vq = ledger.venue_position(pid)
            if vq is not None:
                venue.add_metric([symbol], float(vq))
            px = mids[pid] = mid_of(ledger.quote(pid))
            if px is not None:
                notional.add_metric([symbol], float(qty * px))
        yield pos
        yield venue
        yield notional
        extra = self.extra()
        yield GaugeMetricFamily(
            "dnpair_unhedged_notional_usd",
            "Net notional of the pair at mid (what is not hedged)",
            value=float(unhedged_usd(positions, mids)),
        )
        yield GaugeMetricFamily(
            "dnpair_unhedged_notional_max_usd",
            "Largest unhedged notional seen this run",
            value=float(extra.get("max_unhedged_usd", 0)),
        )
        states = GaugeMetricFamily(
            "dnpair_machine_state",
            "1 for the state each live machine is in (machine = kind of machine)",
            labels=["machine", "state"],
        )
        for mid, machine in self.engine.machines.items():
            current = set(ledger.machine_states.get(mid, ()))
            kind = machine_kind(mid)
            for state in type(machine).states:
                if state.id in current or kind in ("session", "breaker", "health"):
                    states.add_metric([kind, state.id], 1.0 if state.id in current else 0.0)
        yield states
        outcomes = CounterMetricFamily(
            "dnpair_cycles", "Closed cycles by outcome", labels=["outcome"]
        )
        counts = dict(fold.outcomes)
        for name in ("completed", "aborted", "recovered", "flattened", "halted"):
            outcomes.add_metric([name], counts.pop(name, 0))
        for name, n in counts.items():
            outcomes.add_metric([name], n)
        yield outcomes
        for name, doc, value in (
            ("orders", "Orders sent", c.orders),
            ("fills", "Fills received on the stream (duplicates included)", c.fills),
            ("duplicate_fills", "Duplicate fills ignored by the ledger", c.duplicate_fills),
            ("rejects", "Orders rejected by the venue", c.rejects),
            ("rate_limited", "Requests refused with 429 / code 1000", c.rate_limited),
            ("venue_errors", "Venue errors of any class", c.venue_errors),
            ("reconnects", "Stream reconnections", c.reconnects),
            ("ws_disconnects", "Stream disconnections", c.disconnects),
            ("emergency_exits", "Emergency exits started", c.emergency_exits),
            ("halts", "HALTs", c.halts),
            ("bbo_rejected", "BBO updates rejected (crossed, zero)", c.bbo_rejected),
            ("alerts", "Alerts raised by the machines", fold.alerts_total),
            ("engine_events", "Events processed by the engine", self.engine.events_processed),
        ):
            yield CounterMetricFamily(f"dnpair_{name}", doc, value=value)
        breaker = ledger.machine_states.get("breaker")
        yield GaugeMetricFamily(
            "dnpair_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open, -1 disabled",
            value=BREAKER_CODES.get(breaker[-1], -1) if breaker else -1,
        )
        health = ledger.machine_states.get("health")
        yield GaugeMetricFamily(
            "dnpair_health_state",
            "Venue health: 0 normal, 1 degraded (no entries), 2 minimal (exits only)",
            value=HEALTH_CODES.get(health[-1], -1) if health else -1,
        )
        yield GaugeMetricFamily(
            "dnpair_ws_connected",
            "1 while the venue stream is connected",
            value=1.0 if fold.ws_connected else 0.0,
        )
        yield GaugeMetricFamily("dnpair_halted", "1 while halted", value=float(fold.halted))
        yield GaugeMetricFamily(
            "dnpair_realized_pnl_usd",
            "Realised PnL, fees included",
            value=float(ledger.realized_pnl),
        )
        yield GaugeMetricFamily("dnpair_fees_usd", "Fees paid", value=float(ledger.fees))
        yield GaugeMetricFamily(
            "dnpair_cycles_completed",
            "Cycles completed this run",
            value=float(extra.get("cycles_completed", 0)),
        )
        yield GaugeMetricFamily(
            "dnpair_journal_seq", "Last journal sequence number", value=float(fold.last_seq)
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """`GET /metrics` on the running asyncio loop. Port 0 picks a free port."""

    def __init__(self, metrics: RunMetrics, host: str = "127.0.0.1", port: int = 0) -> None:
        self.metrics, self.host, self.port = metrics, host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request.decode("latin-1").split()
            if (
                len(parts) >= 2
                and parts[0] == "GET"
                and parts[1].split("?")[0]
                in (
                    "/metrics",
                    "/",
                )
            ):
                body, status, ctype = self.metrics.render(), "200 OK", CONTENT_TYPE
            else:
                body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
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
