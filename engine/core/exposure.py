"""Exposure as it happened at the venue, beside exposure as the engine believed it.

The engine believes a leg is open from the moment it hears of the fill until it hears of
the other leg's; when pushes are lost, that can be seconds for a book the venue filled
hedged milliseconds apart (issue 11 item 8). `FillTimeline` replays every fill the engine
learned of on the venue's own clock (the fill's `ts_venue_ns`) and reports the largest
unhedged notional and the longest stretch above tolerance as the venue's timestamps show
them. A fill known only from the venue's word on an order's total (a cancel ack, an order
status: no timestamp of its own) is placed at the order's acknowledgement, moved onto the
venue's clock by the offset seen on timed fills (an IOC matches before it is acked); such
fills are counted as `untimed` so the reader knows.

`in_flight_usd` answers the believed side's question "could the orders still working
explain this imbalance?": an imbalance that the open orders' remainders would hedge is
not yet proven unhedged, and does not raise `exposure_above_tolerance` by itself.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any

from engine.core.clock import NS_PER_S
from engine.core.ledger import Ledger

__all__ = ["FillTimeline", "in_flight_hedge_usd"]

ZERO = Decimal(0)
_OFFSETS_KEPT = 101  # the median of the latest offsets places an untimed fill


class FillTimeline:
    def __init__(self, product_ids: list[int], tolerance_usd: Decimal) -> None:
        self.product_ids = set(product_ids)
        self.tolerance = tolerance_usd
        self._fills: dict[str, tuple[int, int, Decimal, Decimal]] = {}  # id → ts, pid, qty, px
        self._acked: dict[str, int] = {}  # order → engine ns of its ack
        self._words: dict[str, tuple[int, str, Decimal, Decimal]] = {}  # order → pid, side…
        self._heard: dict[str, Decimal] = {}  # order → sum of timed fills
        # venue ts - engine ts of the latest timed fills (only the last 101 are read)
        self._offsets: deque[int] = deque(maxlen=_OFFSETS_KEPT)
        self._sides: dict[str, tuple[int, str, Decimal]] = {}  # order → pid, side, limit px

    def observe(self, kind: str, data: dict[str, Any], engine_ns: int) -> None:
        if kind == "intent" and data.get("kind") == "place_order":
            oid = str(data["order_id"])
            self._sides[oid] = (int(data["product_id"]), str(data["side"]), _d(data["price"]))
            return
        if kind != "event":
            return
        ev = data.get("kind")
        oid = str(data.get("order_id") or "")
        if ev == "order_accepted":
            self._acked.setdefault(oid, engine_ns)
        elif ev == "fill_received":
            pid = int(data["product_id"])
            if pid not in self.product_ids or str(data["fill_id"]) in self._fills:
                return
            qty = _d(data["qty"])
            signed = qty if data["side"] == "buy" else -qty
            ts = data.get("ts_venue_ns")
            if ts is None:
                ts = engine_ns + self._offset()
            else:
                self._offsets.append(int(ts) - engine_ns)
            self._fills[str(data["fill_id"])] = (int(ts), pid, signed, _d(data["price"]))
            self._heard[oid] = self._heard.get(oid, ZERO) + qty
        elif data.get("filled_qty") is not None and oid in self._sides:
            pid, side, px = self._sides[oid]
            total = _d(data["filled_qty"])
            at = self._acked.get(oid, engine_ns)
            prev = self._words.get(oid)
            if prev is None or total > prev[3]:
                self._words[oid] = (at, side, px, total)

    def _offset(self) -> int:
        if not self._offsets:
            return 0
        ordered = sorted(self._offsets)
        return ordered[len(ordered) // 2]

    def untimed(self) -> int:
        return sum(1 for oid, w in self._words.items() if w[3] > self._heard.get(oid, ZERO))

    def summary(self) -> tuple[Decimal, Decimal]:
        """(largest |Σ position x price| in USD, longest stretch above tolerance in s),
        both on the venue's clock."""
        events = list(self._fills.values())
        offset = self._offset()
        for oid, (at, side, px, total) in self._words.items():
            missing = total - self._heard.get(oid, ZERO)
            if missing > 0 and oid in self._sides:
                signed = missing if side == "buy" else -missing
                events.append((at + offset, self._sides[oid][0], signed, px))
        events.sort(key=lambda e: e[0])
        pos: dict[int, Decimal] = {}
        mark: dict[int, Decimal] = {}
        worst_usd, worst_ns = ZERO, 0
        since: int | None = None
        for i, (ts, pid, signed, px) in enumerate(events):
            if since is not None:
                worst_ns = max(worst_ns, ts - since)
            pos[pid] = pos.get(pid, ZERO) + signed
            mark[pid] = px
            if i + 1 < len(events) and events[i + 1][0] == ts:
                continue  # the venue's same instant: only the state after it was held
            net = abs(sum((q * mark.get(p, ZERO) for p, q in pos.items()), ZERO))
            worst_usd = max(worst_usd, net)
            since = (ts if since is None else since) if net > self.tolerance else None
        return worst_usd, Decimal(worst_ns) / NS_PER_S


def in_flight_hedge_usd(ledger: Ledger, net_usd: Decimal) -> Decimal:
    """|net| once every order still working (not known done) filled its remainder: what
    the imbalance would be if the venue has already filled what we have not heard of."""
    net = net_usd
    for order in ledger.open_orders():
        quote = ledger.quote(order.product_id)
        if quote is None:
            continue
        rem = order.remaining
        net += (rem if order.side == "buy" else -rem) * quote.mid
    return abs(net)


def _d(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))
