"""The archive (indexer) service of `venue serve`: `POST /archive/v1` with `orders` and
`matches`, fed by the exchange core's records, seen `[archive] lag_ms` late.

Shapes follow the official SDK's indexer types (`nado_protocol/indexer_client/types`:
`IndexerHistoricalOrder`, `IndexerMatch`, `IndexerTx`) and the real payloads in ccxt's
`nado.py` comments (`fetch_closed_orders`, `fetch_my_trades`): no `status` envelope,
x18 integers as decimal strings, timestamps as unix seconds in strings. Which orders the
indexer lists (here: any order with a fill or that has ended) and the order of results
(newest first) are `unverified`.

Everything is bounded: the store keeps the newest `max_orders` orders and `max_matches`
matches; a request names at most `MAX_LIST` subaccounts, products or digests and gets at
most `MAX_LIMIT` rows. Nothing here blocks or sleeps: the HTTP layer calls `answer`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections import deque
from collections.abc import Callable
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import as_int
from adapters.nado.wire import req_hex
from adapters.sim.records import FillRecord
from adapters.sim.records import OrderUpdateRecord
from adapters.sim.records import Record
from adapters.sim.records import SimOrder
from adapters.sim.server.codec import WireTime
from adapters.sim.server.codec import x18s

__all__ = ["MAX_LIMIT", "MAX_LIST", "Archive", "ArchiveError"]

ZERO = Decimal(0)
MAX_LIST = 100  # subaccounts / product ids / digests named in one request (sim bound)
MAX_LIMIT = 500  # rows per answer: ccxt caps its `limit` at 500 (nado.py)
DEFAULT_LIMIT = 100  # unverified
_ORDER_KEYS = frozenset(
    {"digests", "subaccounts", "product_ids", "max_time", "limit", "submission_idx", "idx"}
)
_ORDER_KEYS_OPTIONAL_UNUSED = frozenset({"trigger_types", "isolated"})
_MATCH_KEYS = frozenset(
    {"subaccounts", "product_ids", "max_time", "limit", "submission_idx", "idx", "isolated"}
)


class ArchiveError(Exception):
    """A request the archive refuses (HTTP 400)."""


@attrs.define(kw_only=True)
class _Fill:
    idx: int
    ts_ns: int
    qty: Decimal
    price: Decimal
    fee: Decimal
    is_taker: bool


@attrs.define(kw_only=True)
class _Order:
    digest: str
    subaccount: str
    product_id: int
    side: str
    qty: Decimal
    price: Decimal
    expiration: int
    nonce: int
    appendix: int
    first_idx: int
    placed_ns: int
    fills: list[_Fill] = attrs.field(factory=list)
    ended_ns: int | None = None

    @property
    def sign(self) -> int:
        return 1 if self.side == "buy" else -1


@attrs.frozen(kw_only=True)
class _Match:
    idx: int
    ts_ns: int
    digest: str
    fill_no: int  # 1-based: which fill of its order


class Archive:
    def __init__(
        self,
        *,
        wire: WireTime,
        order_of: Callable[[str], SimOrder | None],
        lag_ns: int = 0,
        max_orders: int = 20_000,
        max_matches: int = 50_000,
    ) -> None:
        self.wire = wire
        self.order_of = order_of
        self.lag_ns = lag_ns
        self.max_orders = max_orders
        self._orders: OrderedDict[str, _Order] = OrderedDict()
        self._matches: deque[_Match] = deque(maxlen=max_matches)

    # -- feeding --------------------------------------------------------------------------
    def record(self, rec: Record) -> None:
        if isinstance(rec, FillRecord):
            order = self._order(rec.digest, rec.submission_idx, rec.ts_ns)
            if order is None:
                return
            order.fills.append(
                _Fill(
                    idx=rec.submission_idx,
                    ts_ns=rec.ts_ns,
                    qty=rec.qty,
                    price=rec.price,
                    fee=rec.fee,
                    is_taker=rec.is_taker,
                )
            )
            self._matches.append(
                _Match(
                    idx=rec.submission_idx,
                    ts_ns=rec.ts_ns,
                    digest=rec.digest,
                    fill_no=len(order.fills),
                )
            )
        elif isinstance(rec, OrderUpdateRecord):
            order = self._order(rec.digest, rec.submission_idx, rec.ts_ns)
            done = rec.remaining == 0 or rec.reason == "cancelled"
            if order is not None and done and order.ended_ns is None:
                order.ended_ns = rec.ts_ns

    def _order(self, digest: str, idx: int, ts_ns: int) -> _Order | None:
        known = self._orders.get(digest)
        if known is not None:
            return known
        sim = self.order_of(digest)
        if sim is None:  # already forgotten by the core: nothing to describe it with
            return None
        req = sim.request
        order = _Order(
            digest=digest,
            subaccount=req.subaccount,
            product_id=req.product_id,
            side=req.side,
            qty=req.qty,
            price=req.price,
            expiration=req.expiration,
            nonce=req.nonce,
            appendix=req.appendix,
            first_idx=idx,
            placed_ns=min(ts_ns, sim.placed_ns),
        )
        self._orders[digest] = order
        while len(self._orders) > self.max_orders:
            self._orders.popitem(last=False)
        return order

    # -- answering ------------------------------------------------------------------------
    def answer(self, body: object, now_ns: int) -> dict[str, Any]:
        """One `POST /archive/v1` body; raises ArchiveError for what it refuses."""
        if not isinstance(body, Mapping) or len(body) != 1:
            raise ArchiveError("body must be an object with one query type")
        kind, params = next(iter(body.items()))
        if not isinstance(params, Mapping):
            raise ArchiveError(f"{kind}: parameters must be an object")
        cutoff = now_ns - self.lag_ns
        try:
            if kind == "orders":
                return self._orders_answer(params, cutoff)
            if kind == "matches":
                return self._matches_answer(params, cutoff)
        except MalformedFrame as exc:
            raise ArchiveError(str(exc)) from None
        raise ArchiveError(f"query type {str(kind)[:40]!r} is not served by the sim archive")

    def _common(
        self, params: Mapping[str, Any], allowed: frozenset[str]
    ) -> tuple[frozenset[str] | None, set[int] | None, int | None, int | None, int]:
        unknown = set(params) - allowed - _ORDER_KEYS_OPTIONAL_UNUSED
        if unknown:
            raise ArchiveError(f"unknown field {sorted(unknown)[0][:40]!r}")
        sub_list = _hex_list(params, "subaccounts")
        subs = None if sub_list is None else frozenset(sub_list)
        pids = _int_set(params, "product_ids")
        max_time = _opt_int(params, "max_time")
        idx = _opt_int(params, "submission_idx")
        if idx is None:
            idx = _opt_int(params, "idx")
        limit = _opt_int(params, "limit")
        if limit is None:
            limit = DEFAULT_LIMIT
        if not 1 <= limit <= MAX_LIMIT:
            raise ArchiveError(f"limit must be within 1..{MAX_LIMIT}")
        return subs, pids, max_time, idx, limit

    def _orders_answer(self, params: Mapping[str, Any], cutoff: int) -> dict[str, Any]:
        digests = _hex_list(params, "digests")
        if digests is not None:
            if set(params) != {"digests"}:
                raise ArchiveError("orders by digests takes no other field")
            found = [self._orders.get(d) for d in digests]
            rows = [self._order_row(o, cutoff) for o in found if o is not None]
            return {"orders": [r for r in rows if r is not None]}
        subs, pids, max_time, idx, limit = self._common(params, _ORDER_KEYS)
        out: list[dict[str, Any]] = []
        for order in reversed(self._orders.values()):
            if len(out) >= limit:
                break
            if subs is not None and order.subaccount not in subs:
                continue
            if pids is not None and order.product_id not in pids:
                continue
            if idx is not None and order.first_idx > idx:
                continue
            if max_time is not None and self.wire.unix_s(order.placed_ns) > max_time:
                continue
            row = self._order_row(order, cutoff)
            if row is not None:
                out.append(row)
        return {"orders": out}

    def _order_row(self, order: _Order, cutoff: int) -> dict[str, Any] | None:
        fills = [f for f in order.fills if f.ts_ns <= cutoff]
        ended = order.ended_ns is not None and order.ended_ns <= cutoff
        if not fills and not ended:
            return None  # not indexed yet (or still resting untouched)
        base = sum((f.qty for f in fills), ZERO)
        quote = sum((f.qty * f.price for f in fills), ZERO)
        fee = sum((f.fee for f in fills), ZERO)
        first = fills[0].ts_ns if fills else order.placed_ns
        last = fills[-1].ts_ns if fills else order.placed_ns
        s = order.sign
        return {
            "digest": order.digest,
            "subaccount": order.subaccount,
            "product_id": order.product_id,
            "submission_idx": str(order.first_idx),
            "amount": x18s(s * order.qty),
            "price_x18": x18s(order.price),
            "expiration": str(order.expiration),
            "nonce": str(order.nonce),
            "appendix": str(order.appendix),
            "isolated": False,
            "base_filled": x18s(s * base),
            "quote_filled": x18s(-s * quote),
            "fee": x18s(fee),
            "builder_fee": "0",
            "first_fill_timestamp": str(self.wire.unix_s(first)),
            "last_fill_timestamp": str(self.wire.unix_s(last)),
        }

    def _matches_answer(self, params: Mapping[str, Any], cutoff: int) -> dict[str, Any]:
        subs, pids, max_time, idx, limit = self._common(params, _MATCH_KEYS)
        matches: list[dict[str, Any]] = []
        txs: list[dict[str, Any]] = []
        for m in reversed(self._matches):
            if len(matches) >= limit:
                break
            if m.ts_ns > cutoff:
                continue
            order = self._orders.get(m.digest)
            if order is None:
                continue
            if subs is not None and order.subaccount not in subs:
                continue
            if pids is not None and order.product_id not in pids:
                continue
            if idx is not None and m.idx > idx:
                continue
            ts_s = self.wire.unix_s(m.ts_ns)
            if max_time is not None and ts_s > max_time:
                continue
            matches.append(self._match_row(order, m))
            txs.append(
                {
                    "tx": {"match_orders": {"product_id": order.product_id}},
                    "submission_idx": str(m.idx),
                    "product_id": order.product_id,
                    "timestamp": str(ts_s),
                }
            )
        return {"matches": matches, "txs": txs}

    def _match_row(self, order: _Order, m: _Match) -> dict[str, Any]:
        fills = order.fills[: m.fill_no]
        f = fills[-1]
        s = order.sign
        cum_base = sum((x.qty for x in fills), ZERO)
        cum_quote = sum((x.qty * x.price for x in fills), ZERO)
        cum_fee = sum((x.fee for x in fills), ZERO)
        return {
            "digest": order.digest,
            "order": {
                "sender": order.subaccount,
                "priceX18": x18s(order.price),
                "amount": x18s(s * order.qty),
                "expiration": str(order.expiration),
                "nonce": str(order.nonce),
                "appendix": str(order.appendix),
            },
            "base_filled": x18s(s * f.qty),
            "quote_filled": x18s(-s * f.qty * f.price),
            "fee": x18s(f.fee),
            "builder_fee": "0",
            "sequencer_fee": "0",
            "cumulative_fee": x18s(cum_fee),
            "cumulative_base_filled": x18s(s * cum_base),
            "cumulative_quote_filled": x18s(-s * cum_quote),
            "isolated": False,
            "is_taker": f.is_taker,
            "submission_idx": str(m.idx),
            "timestamp": str(self.wire.unix_s(m.ts_ns)),
        }


def _opt_int(params: Mapping[str, Any], key: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    return as_int(value, key, "archive", min_value=0)


def _items(params: Mapping[str, Any], key: str) -> list[Any] | None:
    raw = params.get(key)
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ArchiveError(f"{key} must be a list")
    if len(raw) > MAX_LIST:
        raise ArchiveError(f"{key}: at most {MAX_LIST} entries")
    return raw


def _hex_list(params: Mapping[str, Any], key: str) -> list[str] | None:
    """Lower-cased, duplicates dropped, in the order given."""
    raw = _items(params, key)
    if raw is None:
        return None
    return list(dict.fromkeys(req_hex({key: item}, key, "archive", nbytes=32) for item in raw))


def _int_set(params: Mapping[str, Any], key: str) -> set[int] | None:
    raw = _items(params, key)
    if raw is None:
        return None
    return {as_int(item, key, "archive", min_value=0) for item in raw}
