"""Exposure as it happened at the venue, beside exposure as the engine believed it.

The engine believes a leg is open from the moment it hears of the fill until it hears of
the other leg's; when pushes are lost, that can be seconds for a book the venue filled
hedged milliseconds apart (issue 11 item 8). `FillTimeline` replays every fill the engine
learned of on the venue's own clock (the fill's `ts_venue_ns`) and reports the largest
unhedged notional and the longest stretch above tolerance as the venue's timestamps show
them. A fill known only from the venue's word on an order's total (a cancel ack, an order
status: no timestamp of its own) is placed at the order's acknowledgement, moved onto the
venue's clock by the offset seen on timed fills when the word arrived (an IOC matches
before it is acked); such fills are counted as `untimed` so the reader knows.

Bounded memory (issue 13): the replay is a fold over the fills sorted by venue time, so
the past can be folded into running state (position, marks, worst USD, worst stretch, the
open stretch's start) once no fill can still land before it. The fold's watermark is the
lowest venue time a future fill could carry:

- an order placed after the engine heard a fill stamped T matches after T at the venue
  (causality, one venue clock), so a new order's fills land at or after the latest venue
  time heard (`frontier`) when it was placed, less `MARGIN_NS` for fills placed by the
  engine's clock (untimed ones, words: their offset jitters by the delivery latency);
- an order still live (not known done, or done with a word whose fills were not all
  heard) holds the watermark at its floor until it is done and fully heard, or until it
  has been silent for `HOLD_NS` of engine time (a lost fill the audit did not bring back
  by then is the word's to place, as before).

Only the live orders, the fills above the watermark and a window of recent fill ids (for
duplicates) are kept. A fill or word that arrives below the watermark anyway (outside
both rules) is folded at once and counted in `late`: the result is exact while `late` is
0, which the tests check on real runs against a brute-force replay of every record.

`in_flight_usd` answers the believed side's question "could the orders still working
explain this imbalance?": an imbalance that the open orders' remainders would hedge is
not yet proven unhedged, and does not raise `exposure_above_tolerance` by itself.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections import deque
from decimal import Decimal
from typing import Any

import attrs

from engine.core.clock import NS_PER_S
from engine.core.ledger import Ledger

__all__ = ["FillTimeline", "in_flight_hedge_usd"]

ZERO = Decimal(0)
_OFFSETS_KEPT = 101  # the median of the latest offsets places an untimed fill
MARGIN_NS = NS_PER_S  # engine-placed fills (untimed, words) may land this far below
HOLD_NS = 60 * NS_PER_S  # a live order silent this long (engine time) is folded
FILL_IDS_KEPT = 4_096  # fill ids of folded orders remembered for late duplicates
_SWEEP_NS = NS_PER_S // 10  # fold at most this often (engine time)
# An order status in one of these states ends the order (no more fills from the venue).
_OPEN_STATES = frozenset({"open", "not_found", "unknown", "pending"})

# A fill on the venue's clock: (ts, rank, seq, product, signed qty, price). Rank 0 = a
# fill heard, 1 = a word's unheard remainder; within one instant fills come first, each in
# the order it was first learned of (the order the brute-force replay sorts them in).
_Item = tuple[int, int, int, int, Decimal, Decimal]


@attrs.define
class _Order:
    floor: int  # lowest venue time a fill of this order can land at
    last_ns: int  # engine time of the latest record about it
    pid: int | None = None  # from its placement (None: never seen placed)
    side: str = ""
    px: Decimal = ZERO
    qty: Decimal | None = None
    acked: int | None = None  # engine ns of its ack
    heard: Decimal = ZERO  # sum of the fills heard
    word: tuple[int, Decimal, int] | None = None  # (venue ts, total, seq) of its word
    done: bool = False  # the venue said it is over (cancel/expiry ack, final status)
    fill_ids: set[str] = attrs.Factory(set)


class FillTimeline:
    def __init__(self, product_ids: list[int], tolerance_usd: Decimal) -> None:
        self.product_ids = set(product_ids)
        self.tolerance = tolerance_usd
        # venue ts - engine ts of the latest timed fills (only the last 101 are read)
        self._offsets: deque[int] = deque(maxlen=_OFFSETS_KEPT)
        self._live: dict[str, _Order] = {}
        self._pending: list[_Item] = []  # heap of fills above the watermark
        self._seq = 0
        self._frontier: int | None = None  # latest venue time heard
        self._watermark: int | None = None  # everything below it is folded
        self._folded_ids: OrderedDict[str, None] = OrderedDict()
        self._folded_heard: OrderedDict[str, Decimal] = OrderedDict()  # order → fills heard
        self._last_sweep = -1 << 62
        self.late = 0  # fills/words that arrived below the watermark (inexact if > 0)
        self._untimed_folded = 0
        # The fold: positions, marks, worst USD, worst stretch, the open stretch's start,
        # and the last folded instant (its net is only taken once the instant is over).
        self._pos: dict[int, Decimal] = {}
        self._mark: dict[int, Decimal] = {}
        self._worst_usd = ZERO
        self._worst_ns = 0
        self._since: int | None = None
        self._held: int | None = None  # ts of a folded instant whose net is not taken yet

    # -- input --------------------------------------------------------------------------

    def observe(self, kind: str, data: dict[str, Any], engine_ns: int) -> None:
        if kind == "intent" and data.get("kind") == "place_order":
            oid = str(data["order_id"])
            order = self._order(oid, engine_ns)
            order.pid = int(data["product_id"])
            order.side = str(data["side"])
            order.px = _d(data["price"])
            order.qty = _d(data["qty"]) if data.get("qty") is not None else None
        elif kind == "event":
            self._event(data, engine_ns)
        if engine_ns - self._last_sweep >= _SWEEP_NS:
            self._last_sweep = engine_ns
            self._sweep(engine_ns)

    def _order(self, oid: str, engine_ns: int) -> _Order:
        order = self._live.get(oid)
        if order is None:
            floor = self._new_floor()
            order = self._live[oid] = _Order(floor=floor, last_ns=engine_ns)
        order.last_ns = engine_ns
        return order

    def _new_floor(self) -> int:
        if self._frontier is None:
            return -(1 << 62)
        return self._frontier - MARGIN_NS

    def _event(self, data: dict[str, Any], engine_ns: int) -> None:
        ev = data.get("kind")
        oid = str(data.get("order_id") or "")
        if ev in ("order_accepted", "order_rejected"):
            order = self._live.get(oid)  # an ack after the order was folded says nothing
            if order is not None:
                order.last_ns = engine_ns
                if ev == "order_rejected":
                    order.done = True
                elif order.acked is None:
                    order.acked = engine_ns
        elif ev == "fill_received":
            pid = int(data["product_id"])
            fid = str(data["fill_id"])
            if pid not in self.product_ids or fid in self._folded_ids:
                return
            order = self._order(oid, engine_ns)
            if fid in order.fill_ids:
                return
            qty = _d(data["qty"])
            signed = qty if data["side"] == "buy" else -qty
            ts = data.get("ts_venue_ns")
            if ts is None:
                ts = engine_ns + self._offset()
            else:
                self._offsets.append(int(ts) - engine_ns)
            ts = int(ts)
            order.fill_ids.add(fid)
            order.heard += qty
            order.floor = min(order.floor, ts)
            self._frontier = ts if self._frontier is None else max(self._frontier, ts)
            self._push((ts, 0, self._next(), pid, signed, _d(data["price"])))
            if order.qty is not None and order.heard >= order.qty:
                order.done = True
        elif data.get("filled_qty") is not None:
            order = self._live.get(oid)
            if order is None:
                heard = self._folded_heard.get(oid)
                if heard is not None and _d(data["filled_qty"]) > heard:
                    self.late += 1  # news of unheard fills on an order already folded
                return
            if order.pid is None:
                return
            order.last_ns = engine_ns
            if ev in ("order_cancelled", "order_expired") or (
                ev == "order_status" and str(data.get("state")) not in _OPEN_STATES
            ):
                order.done = True
            total = _d(data["filled_qty"])
            if order.word is None or total > order.word[1]:
                at = (order.acked if order.acked is not None else engine_ns) + self._offset()
                seq = order.word[2] if order.word is not None else self._next()
                order.word = (at, total, seq)
                order.floor = min(order.floor, at)

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _push(self, item: _Item) -> None:
        if self._watermark is not None and item[0] < self._watermark:
            self.late += 1  # below what is folded: folded now, after it
            self._fold([item])
            return
        heapq.heappush(self._pending, item)

    def _offset(self) -> int:
        if not self._offsets:
            return 0
        ordered = sorted(self._offsets)
        return ordered[len(ordered) // 2]

    # -- folding --------------------------------------------------------------------------

    def _sweep(self, now_ns: int) -> None:
        """Fold the orders that are over and everything below the new watermark."""
        for oid in [
            oid
            for oid, o in self._live.items()
            if (o.done and not self._missing(o)) or now_ns - o.last_ns > HOLD_NS
        ]:
            self._retire(oid)
        if self._frontier is None:
            return
        mark = self._frontier - MARGIN_NS
        for o in self._live.values():
            mark = min(mark, o.floor)
        if self._watermark is not None and mark <= self._watermark:
            return
        self._watermark = mark
        out: list[_Item] = []
        while self._pending and self._pending[0][0] < mark:
            out.append(heapq.heappop(self._pending))
        if out:
            self._fold(out)

    @staticmethod
    def _missing(o: _Order) -> Decimal:
        return o.word[1] - o.heard if o.word is not None else ZERO

    def _word_item(self, o: _Order) -> _Item | None:
        if o.word is None or o.pid is None:
            return None
        missing = self._missing(o)
        if missing <= 0:
            return None
        at, _total, seq = o.word
        return (at, 1, seq, o.pid, missing if o.side == "buy" else -missing, o.px)

    def _retire(self, oid: str) -> None:
        o = self._live.pop(oid)
        for fid in o.fill_ids:
            self._folded_ids[fid] = None
        while len(self._folded_ids) > FILL_IDS_KEPT:
            self._folded_ids.popitem(last=False)
        if o.pid is not None:
            self._folded_heard[oid] = o.heard
            while len(self._folded_heard) > FILL_IDS_KEPT:
                self._folded_heard.popitem(last=False)
        if o.word is not None and o.word[1] > o.heard:
            self._untimed_folded += 1
        item = self._word_item(o)
        if item is not None:
            self._push(item)

    def _fold(self, items: list[_Item]) -> None:
        """Run the replay over `items` (sorted; none below what is folded) into the fold."""
        state = self._run(
            items,
            (self._pos, self._mark, self._worst_usd, self._worst_ns, self._since, self._held),
        )
        (self._pos, self._mark, self._worst_usd, self._worst_ns, self._since, self._held) = state

    def _run(
        self,
        items: list[_Item],
        state: tuple[dict[int, Decimal], dict[int, Decimal], Decimal, int, int | None, int | None],
    ) -> tuple[dict[int, Decimal], dict[int, Decimal], Decimal, int, int | None, int | None]:
        """The replay's step over sorted fills from `state`. An instant's net is taken when
        the next instant begins (`held` is the instant not yet closed): only the state
        after the venue's same instant was held."""
        pos, mark, worst_usd, worst_ns, since, held = state
        for ts, _rank, _seq, pid, signed, px in items:
            if held is not None and ts != held:
                worst_usd, since = self._close(pos, mark, worst_usd, since, held)
            if since is not None:
                worst_ns = max(worst_ns, ts - since)
            pos[pid] = pos.get(pid, ZERO) + signed
            mark[pid] = px
            held = ts
        return pos, mark, worst_usd, worst_ns, since, held

    def _close(
        self,
        pos: dict[int, Decimal],
        mark: dict[int, Decimal],
        worst_usd: Decimal,
        since: int | None,
        ts: int,
    ) -> tuple[Decimal, int | None]:
        net = abs(sum((q * mark.get(p, ZERO) for p, q in pos.items()), ZERO))
        worst_usd = max(worst_usd, net)
        since = (ts if since is None else since) if net > self.tolerance else None
        return worst_usd, since

    # -- output ---------------------------------------------------------------------------

    def untimed(self) -> int:
        live = sum(1 for o in self._live.values() if o.word is not None and o.word[1] > o.heard)
        return self._untimed_folded + live

    def summary(self) -> tuple[Decimal, Decimal]:
        """(largest |Σ position x price| in USD, longest stretch above tolerance in s),
        both on the venue's clock."""
        items = list(self._pending)
        for o in self._live.values():
            item = self._word_item(o)
            if item is not None:
                items.append(item)
        items.sort()
        pos, mark, worst_usd, worst_ns, since, held = self._run(
            items,
            (
                dict(self._pos),
                dict(self._mark),
                self._worst_usd,
                self._worst_ns,
                self._since,
                self._held,
            ),
        )
        if held is not None:
            worst_usd, since = self._close(pos, mark, worst_usd, since, held)
        return worst_usd, Decimal(worst_ns) / NS_PER_S

    def kept(self) -> int:
        """Fills and orders held beyond the fixed windows (what grows with a run's length
        unless folded; the fill-id and order windows are capped at `FILL_IDS_KEPT`)."""
        return len(self._pending) + len(self._live)


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
