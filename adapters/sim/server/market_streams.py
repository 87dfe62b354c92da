"""Public streams of `venue serve` beyond `best_bid_offer`: `book_depth`, `trade`,
`all_bbo` and `funding_rate` frames, built from the exchange core.

- `book_depth` (ccxt pro/nado.py `handle_order_book` sample; TS SDK event types): level
  changes with absolute quantities, "0" for a removed level, and the
  `last_max_timestamp` chain per product: each event's `last_max_timestamp` is the
  previous event's `max_timestamp` for that product, so a lost event is detectable.
  Computed each `interval_ns` while someone listens, against the last published book
  (top `BOOK_LEVELS` levels per side, resting orders merged in).
- `trade`: one per match, pushed as the match happens (`public.PublicTrades`).
- `all_bbo` (ccxt pro/nado.py sample): `{type, time (ms), bbos: {"<pid>": {bid, ask}}}`
  every `ALL_BBO_MS` (cadence `unverified`).
- `funding_rate`: the sim has no funding model; a zero rate every `FUNDING_MS`. The
  field names (`funding_rate_x18`, `update_time`) are `unverified`.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from adapters.sim.book import Level
from adapters.sim.exchange import Exchange
from adapters.sim.server import public
from adapters.sim.server.codec import WireTime
from adapters.sim.server.codec import x18s

__all__ = ["ALL_BBO_MS", "BOOK_LEVELS", "FUNDING_MS", "MarketStreams"]

BOOK_LEVELS = 20
ALL_BBO_MS = 1_000
FUNDING_MS = 1_000
NS_PER_MS = 1_000_000

Wants = Callable[[str, int | None], bool]
Push = Callable[[str, int | None, dict[str, Any]], None]


class MarketStreams:
    def __init__(self, exchange: Exchange, wire: WireTime, *, wants: Wants, push: Push) -> None:
        self.exchange = exchange
        self.wire = wire
        self.wants = wants  # does any connection want (stream type, product id)?
        self.push = push  # send a frame to those that do
        self._books: dict[int, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
        self._last_max: dict[int, int] = {}
        self._next_all_bbo_ns = 0
        self._next_funding_ns = 0

    def tick(self, now_ns: int) -> None:
        """Called after the exchange has advanced to `now_ns`."""
        for pid in self.exchange.specs:
            if self.wants("book_depth", pid):
                self._book_depth(pid, now_ns)
        if now_ns >= self._next_all_bbo_ns:
            self._next_all_bbo_ns = now_ns + ALL_BBO_MS * NS_PER_MS
            if self.wants("all_bbo", None):
                self.push("all_bbo", None, self.all_bbo_frame(now_ns))
        if now_ns >= self._next_funding_ns:
            self._next_funding_ns = now_ns + FUNDING_MS * NS_PER_MS
            for pid in self.exchange.specs:
                if self.wants("funding_rate", pid):
                    self.push("funding_rate", pid, self.funding_frame(pid, now_ns))

    def _book_depth(self, pid: int, now_ns: int) -> None:
        bids, asks = public.book(self.exchange, pid, BOOK_LEVELS)
        new_bids, new_asks = dict(bids), dict(asks)
        old_bids, old_asks = self._books.get(pid, ({}, {}))
        bid_changes = _changes(old_bids, new_bids, reverse=True)
        ask_changes = _changes(old_asks, new_asks, reverse=False)
        self._books[pid] = (new_bids, new_asks)
        if not bid_changes and not ask_changes:
            return
        ts = max(self.wire.unix_ns(now_ns), self._last_max.get(pid, 0) + 1)
        last = self._last_max.get(pid, 0)
        self._last_max[pid] = ts
        frame = {
            "type": "book_depth",
            "min_timestamp": str(ts),
            "max_timestamp": str(ts),
            "last_max_timestamp": str(last),
            "product_id": pid,
            "bids": [[x18s(p), x18s(q)] for p, q in bid_changes],
            "asks": [[x18s(p), x18s(q)] for p, q in ask_changes],
        }
        self.push("book_depth", pid, frame)

    def all_bbo_frame(self, now_ns: int) -> dict[str, Any]:
        bbos = {}
        for pid in self.exchange.specs:
            bbo = self.exchange.bbo(pid)
            bbos[str(pid)] = {"bid": x18s(bbo.bid), "ask": x18s(bbo.ask)}
        return {"type": "all_bbo", "time": str(self.wire.unix_ms(now_ns)), "bbos": bbos}

    def funding_frame(self, pid: int, now_ns: int) -> dict[str, Any]:
        return {
            "type": "funding_rate",
            "timestamp": str(self.wire.unix_ns(now_ns)),
            "product_id": pid,
            "funding_rate_x18": "0",
            "update_time": str(self.wire.unix_s(now_ns)),
        }


def _changes(
    old: dict[Decimal, Decimal], new: dict[Decimal, Decimal], *, reverse: bool
) -> list[Level]:
    out: list[Level] = [(p, q) for p, q in new.items() if old.get(p) != q]
    out += [(p, Decimal(0)) for p in old if p not in new]
    out.sort(reverse=reverse)
    return out
