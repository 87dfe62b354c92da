"""The deterministic exchange core: books, matching, positions. No I/O, no clock.

Every call takes the venue time in integer nanoseconds; the market moves on a fixed
grid (`[sim] market_step_ms`) whatever the callers do, and all randomness comes from
`random.Random` streams derived from the seed (market, taker flow, order faults), so a
seed and the same calls give the same results. Resting orders fill by the maker model of
`flow.py`: queue position behind the crowd, seeded taker flow, and trade-through. What
happened is queued as records (fills, order updates, position changes) for a face to
`drain()`.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN
from decimal import Decimal
from itertools import islice

from adapters.sim.accounts import Account
from adapters.sim.accounts import PositionState
from adapters.sim.book import BookSide
from adapters.sim.book import CrowdBook
from adapters.sim.book import Level
from adapters.sim.faults import NS_PER_MS
from adapters.sim.faults import FaultProfile
from adapters.sim.flow import FlowStream
from adapters.sim.flow import sweep
from adapters.sim.market import PriceProcess
from adapters.sim.matching import Bbo
from adapters.sim.matching import Candidate
from adapters.sim.matching import Top
from adapters.sim.matching import candidates
from adapters.sim.matching import reach
from adapters.sim.matching import top_of_book
from adapters.sim.products import ProductSpec
from adapters.sim.products import floor_to
from adapters.sim.products import tidy
from adapters.sim.products import to_decimal
from adapters.sim.records import ERRORS
from adapters.sim.records import Cause
from adapters.sim.records import OrderRequest
from adapters.sim.records import OrderState
from adapters.sim.records import PlaceResult
from adapters.sim.records import Reason
from adapters.sim.records import Record
from adapters.sim.records import SimOrder
from adapters.sim.records import fill_record
from adapters.sim.records import position_record
from adapters.sim.records import update_record

__all__ = ["Exchange"]

ZERO = Decimal(0)
FEE_PLACES = Decimal("1e-8")


class Exchange:
    def __init__(
        self,
        specs: Sequence[ProductSpec],
        *,
        seed: int,
        profile: FaultProfile | None = None,
        start_ns: int = 0,
        history_limit: int = 5_000,
    ) -> None:
        self.profile = profile = profile or FaultProfile()
        sim = profile.sim
        self.specs: dict[int, ProductSpec] = {s.product_id: s for s in specs}
        self.by_symbol: dict[str, ProductSpec] = {s.symbol: s for s in specs}
        self.start_ns = self.now_ns = start_ns
        self.step_ns = int(sim.market_step_ms * NS_PER_MS)
        self._next_step_ns = start_ns + self.step_ns
        self._due_ns = start_ns  # the next step, jump or arrival (`advance_to` sets it)
        self.prices = PriceProcess(
            specs,
            random.Random(f"{seed}/market"),
            volatility_bps_per_sqrt_s=profile.market.volatility_bps_per_sqrt_s,
            correlation=sim.correlation,
            step_ns=self.step_ns,
        )
        self.books = {s.product_id: CrowdBook(s, sim, start_ns) for s in specs}
        self._fault_rng = random.Random(f"{seed}/orders")
        # Taker flow (model, not venue behaviour): one seeded stream per product and side.
        self._flows: list[tuple[int, BookSide, FlowStream]] = []
        if sim.maker_fill_rate_per_s > 0:
            self._flows = [
                (
                    s.product_id,
                    side,
                    FlowStream(
                        random.Random(f"{seed}/flow/{s.product_id}/{side}"),
                        start_ns=start_ns,
                        rate_per_s=sim.maker_fill_rate_per_s,
                        mean_usd=sim.taker_flow_mean_usd,
                        max_usd=sim.taker_flow_max_usd,
                    ),
                )
                for s in specs
                for side in _SIDES
            ]
        self._quiet = tuple(
            (start_ns + w.start_ns, start_ns + w.end_ns) for w in profile.market.quiet
        )
        self._jumps = sorted(
            (start_ns + j.at_ns, i, self.by_symbol[j.product].product_id, j.bps)
            for i, j in enumerate(profile.market.jumps)
            if j.product in self.by_symbol
        )
        self.maker_rate = sim.maker_fee_bps / 10_000
        self.taker_rate = sim.taker_fee_bps / 10_000
        self.lag_ns = int(profile.venue.position_lag_ms * NS_PER_MS)
        self.accounts: dict[str, Account] = {}
        self._orders: OrderedDict[str, SimOrder] = OrderedDict()
        self._by_client: dict[tuple[str, str], str] = {}
        self._open: dict[int, list[SimOrder]] = {s.product_id: [] for s in specs}
        self._records: list[Record] = []
        # A face that pushes only fills and venue-side cancels (the in-process SimVenue's
        # feed) sets this: position changes and placed/filled order updates are then not
        # built for `drain()` (their submission indexes are still taken).
        self.pushed_only = False
        self._history_limit = history_limit
        self._seq = 0
        self._idx = 0

    # -- time -----------------------------------------------------------------------------
    def advance_to(self, now_ns: int) -> None:
        """Run market steps, jumps and taker-flow arrivals up to `now_ns`; earlier times
        are a no-op. At one instant: a jump, then a step, then arrivals."""
        if now_ns < self._due_ns:  # nothing is due before then
            self.now_ns = max(self.now_ns, now_ns)
            return
        while True:
            t = self._next_step_ns
            is_jump = bool(self._jumps) and self._jumps[0][0] <= t
            if is_jump:
                t = self._jumps[0][0]
            flow = min(self._flows, key=_next_arrival) if self._flows else None
            if flow is not None and flow[2].next_ns < t:
                if flow[2].next_ns > now_ns:
                    self._due_ns = flow[2].next_ns
                    break
                self.now_ns = max(self.now_ns, flow[2].next_ns)
                self._arrival(*flow)
                continue
            if t > now_ns:
                self._due_ns = t
                break
            self.now_ns = max(self.now_ns, t)
            if is_jump:
                _, _, pid, bps = self._jumps.pop(0)
                self.prices.jump(pid, bps)
            else:
                self._next_step_ns += self.step_ns
                if self._quiet and self.quiet(t):
                    continue  # a quiet stretch: nothing moves, nobody trades
                self.prices.step()
            for pid, book in self.books.items():
                book.set_market(self.prices.mids[pid], self.prices.depth[pid])
            self._maker_pass(self.now_ns)
        self.now_ns = max(self.now_ns, now_ns)

    def next_arrival_ns(self) -> int | None:
        """When the next taker-flow market order arrives (any product and side), or None
        without taker flow: the feed runs the exchange to that instant so the fills it
        makes are pushed when they match, not at the next market step."""
        return min(f[2].next_ns for f in self._flows) if self._flows else None

    def moment(self) -> tuple[int, int]:
        """(venue time, records made so far). The books and the orders change only as
        time moves on (market steps, jumps, refills) or with a record (a match, an order
        placed, cancelled or expired), so while this stays the same the top of book does."""
        return self.now_ns, self._idx

    def has_records(self) -> bool:
        """Records are waiting for `drain()`."""
        return bool(self._records)

    def quiet(self, t_ns: int) -> bool:
        """Inside a `[market] quiet` stretch: the market does not move."""
        return any(a <= t_ns < b for a, b in self._quiet)

    # -- accounts -------------------------------------------------------------------------
    def funded(self, subaccount: str) -> bool:
        """Has deposits (`[sim] funded`): every owner's "default" subaccount, or all."""
        if self.profile.sim.funded == "all":
            return True
        return subaccount.lower().endswith(_DEFAULT_NAME)

    def equity(self, subaccount: str) -> Decimal:
        """Collateral + realised PnL - fees + unrealised PnL at the mids (0 if never funded)."""
        if not self.funded(subaccount):
            return ZERO
        total = self.profile.sim.collateral
        acct = self.accounts.get(subaccount)
        if acct is not None:
            for pid, pos in acct.positions.items():
                total += pos.realized_pnl - pos.fees
                if pos.qty:
                    total += (self.prices.mids[pid] - pos.entry) * pos.qty
        return total

    def initial_health(self, subaccount: str, extra: tuple[int, Decimal] | None = None) -> Decimal:
        """Equity minus the initial margin of the positions (plus `extra` = (product,
        signed size) as if it were already held): `IM_FRACTION` of each notional at the mid."""
        sizes: dict[int, Decimal] = {}
        acct = self.accounts.get(subaccount)
        if acct is not None:
            sizes = {pid: pos.qty for pid, pos in acct.positions.items()}
        if extra is not None:
            sizes[extra[0]] = sizes.get(extra[0], ZERO) + extra[1]
        margin = sum((abs(q) * self.prices.mids[p] * IM_FRACTION for p, q in sizes.items()), ZERO)
        return self.equity(subaccount) - margin

    # -- orders ---------------------------------------------------------------------------
    def place(self, now_ns: int, req: OrderRequest) -> PlaceResult:
        self.advance_to(now_ns)
        now = self.now_ns
        spec = self.specs.get(req.product_id)
        if spec is None:
            return _reject("bad_product")
        if not self.funded(req.subaccount):
            return _reject("no_subaccount")
        problem = self._validate(req, spec)
        if problem:
            return _reject(problem)
        digest = req.digest()
        if digest in self._orders:
            return _reject("duplicate")
        faults = self.profile.orders
        if faults.reject and self._fault_rng.random() < faults.reject:
            return _reject("unhealthy")
        cap = self._reduce_cap(req)
        if cap is not None and cap <= 0:
            return _reject("reduce_only")
        if cap is None and self._over_margin(req):
            return _reject("unhealthy")
        book = self.books[req.product_id]
        want = req.qty if cap is None else min(req.qty, cap)
        crowd = book.available(_opposite(req), now)
        found = reach(candidates(req, crowd, self._open[req.product_id]), want)
        fillable = min(want, sum((c.qty for c in found), ZERO))
        if req.order_type == "post_only" and found:
            return _reject("post_only_crosses")
        cause: Cause = "ioc_remainder"
        marketable = req.order_type in ("ioc", "fok") and bool(found)
        if marketable and faults.ioc_no_fill and self._fault_rng.random() < faults.ioc_no_fill:
            cause, fillable = "no_fill_fault", ZERO
        if req.order_type == "fok" and cause != "no_fill_fault" and fillable < req.qty:
            if self.profile.sim.fok_unfillable == "reject":
                return _reject("fok_unfillable")
            cause, fillable = "fok_unfilled", ZERO
        if req.order_type in ("default", "post_only") and req.qty * req.price < spec.min_notional:
            return _reject("too_small")
        order = SimOrder(digest=digest, request=req, placed_ns=now, seq=self._next_seq())
        self._remember(order)
        if req.order_type != "fok":
            fillable = self._partial(fillable, spec.size_increment)
        # Nado's lifecycle (nado-protocol.md §13): one `filled` update per match carrying
        # the size still unfilled; `placed` only for a remainder that rests, after the
        # matches; an IOC/FOK remainder ends `(0, cancelled)`.
        self._take(order, found, fillable, now)
        if order.state == "open":
            if req.order_type in ("ioc", "fok"):
                self._close(order, "expired", cause, now)
            elif cap is not None and order.filled >= cap:
                self._close(order, "cancelled", "reduce_only", now)
            else:
                # It joins the back of its price level (price-time priority, flow.py).
                order.queue_ahead = _shown(book, _own_side(req), req.price, now)
                self._open[req.product_id].append(order)
                self._update(order, "placed", now)
        return PlaceResult(digest=digest)

    def cancel(self, now_ns: int, subaccount: str, digests: Sequence[str]) -> list[SimOrder]:
        """Cancel open orders by digest; returns those it cancelled (others are omitted)."""
        self.advance_to(now_ns)
        out = []
        for digest in digests:
            order = self._orders.get(digest)
            if order and order.state == "open" and order.request.subaccount == subaccount:
                self._close(order, "cancelled", "user", self.now_ns)
                out.append(order)
        return out

    def cancel_products(
        self, now_ns: int, subaccount: str, product_ids: Sequence[int] = ()
    ) -> list[SimOrder]:
        """Cancel every open order of the subaccount on these products (empty = all)."""
        self.advance_to(now_ns)
        pids = [p for p in self._open if not product_ids or p in product_ids]
        out = []
        for pid in pids:
            for order in list(self._open[pid]):
                if order.request.subaccount == subaccount:
                    self._close(order, "cancelled", "user", self.now_ns)
                    out.append(order)
        return out

    def cancel_delay_ns(self) -> int:
        """How long a cancel takes to take effect (`orders.cancel_delay_ms`)."""
        delay = self.profile.orders.cancel_delay_ms
        return 0 if delay.is_zero else delay.draw_ns(self._fault_rng)

    # -- reads ----------------------------------------------------------------------------
    def order(self, digest: str) -> SimOrder | None:
        return self._orders.get(digest)

    def find(self, subaccount: str, client_id: str) -> SimOrder | None:
        """The latest order placed with this client id (the engine's order id)."""
        digest = self._by_client.get((subaccount, client_id))
        return None if digest is None else self._orders.get(digest)

    def open_orders(self, subaccount: str, product_ids: Sequence[int] = ()) -> list[SimOrder]:
        return [
            o
            for pid, orders in self._open.items()
            if not product_ids or pid in product_ids
            for o in orders
            if o.request.subaccount == subaccount
        ]

    def resting(self, product_id: int) -> list[SimOrder]:
        """Every account's open orders on one product (a public book view)."""
        return list(self._open.get(product_id, ()))

    def account(self, subaccount: str) -> Account:
        acct = self.accounts.get(subaccount)
        if acct is None:
            acct = self.accounts[subaccount] = Account(subaccount)
        return acct

    def position(self, subaccount: str, product_id: int) -> PositionState:
        """Ground truth, never lagged."""
        return self.account(subaccount).position(product_id)

    def position_view(self, subaccount: str, product_id: int) -> tuple[Decimal, Decimal]:
        """(qty, entry) as a position query sees it now (`venue.position_lag_ms`)."""
        return self.account(subaccount).view(product_id, self.now_ns, self.lag_ns)

    def mid(self, product_id: int) -> Decimal:
        return self.prices.mids[product_id]

    def bbo(self, product_id: int) -> Bbo:
        bid, bid_qty, ask, ask_qty = self.top(product_id)
        return Bbo(
            product_id=product_id,
            bid=bid,
            bid_qty=bid_qty,
            ask=ask,
            ask_qty=ask_qty,
            ts_ns=self.now_ns,
        )

    def top(self, product_id: int) -> Top:
        """`bbo` without the object: (bid, bid qty, ask, ask qty) now, 0 on an empty side."""
        book, now, resting = self.books[product_id], self.now_ns, self._open[product_id]
        bid = book.best("bid", now)
        ask = book.best("ask", now)
        if resting:
            bid = top_of_book(bid, resting, "buy")
            ask = top_of_book(ask, resting, "sell")
        return (bid or _NO_LEVEL) + (ask or _NO_LEVEL)

    def depth(self, product_id: int, levels: int = 10) -> tuple[list[Level], list[Level]]:
        """The crowd's book, best first (resting user orders not merged in)."""
        book = self.books[product_id]
        return (
            list(islice(book.available("bid", self.now_ns), levels)),
            list(islice(book.available("ask", self.now_ns), levels)),
        )

    def drain(self) -> list[Record]:
        out, self._records = self._records, []
        return out

    # -- internals ------------------------------------------------------------------------
    def _validate(self, req: OrderRequest, spec: ProductSpec) -> str:
        if req.qty == 0:
            return "zero_amount"
        if req.price <= 0 or req.price % spec.tick:
            return "bad_price"
        if req.qty < 0 or req.qty % spec.size_increment:
            return "bad_amount"
        if abs(req.price / self.prices.mids[req.product_id] - 1) > self.profile.sim.oracle_band:
            return "oracle_band"
        return ""

    def _over_margin(self, req: OrderRequest) -> bool:
        """The order, filled in full, would leave initial health below zero while growing
        the account's margin need (an order that only shrinks a position always passes)."""
        pos = self.position(req.subaccount, req.product_id).qty
        after = pos + req.amount
        if abs(after) <= abs(pos) and (after == 0 or (after > 0) == (pos > 0)):
            return False
        return self.initial_health(req.subaccount, (req.product_id, req.amount)) < 0

    def _reduce_cap(self, req: OrderRequest) -> Decimal | None:
        """None when not reduce-only, else how much this order may still trade."""
        if not req.reduce_only:
            return None
        pos = self.position(req.subaccount, req.product_id).qty
        if req.side == "buy":
            return -pos if pos < 0 else ZERO
        return pos if pos > 0 else ZERO

    def _partial(self, fillable: Decimal, inc: Decimal) -> Decimal:
        p = self.profile.orders.partial_fill
        if not p or fillable <= inc or self._fault_rng.random() >= p:
            return fillable
        u = to_decimal(self._fault_rng.random(), 6)
        return min(fillable - inc, max(inc, floor_to(u * fillable, inc)))

    def _take(self, order: SimOrder, found: list[Candidate], qty: Decimal, now: int) -> None:
        left = qty
        eaten: dict[Decimal, Decimal] = {}  # crowd taken per price
        for c in found:
            if left <= 0:
                break
            q = min(c.qty, left)
            self._fill(order, q, c.price, True, now)
            if c.maker is None:
                self.books[order.product_id].consume(_opposite(order.request), q, now)
                eaten[c.price] = eaten.get(c.price, ZERO) + q
            else:
                self._fill(c.maker, q, c.price, False, now)
            left -= q
        if eaten:
            self._eat_queues(order.product_id, "sell" if order.side == "buy" else "buy", eaten)

    def _eat_queues(self, pid: int, side: str, eaten: dict[Decimal, Decimal]) -> None:
        """Crowd traded at a price was ahead of the resting orders there (time priority)."""
        for o in self._open[pid]:
            if o.side == side and o.price in eaten:
                o.queue_ahead = max(ZERO, o.queue_ahead - eaten[o.price])

    def _arrival(self, pid: int, side: BookSide, stream: FlowStream) -> None:
        """A taker-flow market order arrives on `side` of `pid` (flow.py) and fills the
        resting user orders it reaches, as makers at their own prices."""
        now, usd = stream.next_ns, stream.next_usd
        stream.draw()
        maker_side = "buy" if side == "bid" else "sell"
        resting = [o for o in self._open[pid] if o.side == maker_side and o.state == "open"]
        if not resting or self.quiet(now):
            return
        book = self.books[pid]
        crowd = list(book.available(side, now))
        best = crowd[0][0] if crowd else resting[0].price
        qty = floor_to(usd / best, self.specs[pid].size_increment)  # USD at the side's best
        eaten: dict[Decimal, Decimal] = {}
        for price, q, maker in sweep(side, crowd, resting, qty):
            if maker is None:
                eaten[price] = eaten.get(price, ZERO) + q
                continue
            if maker.state != "open":
                continue
            cap = self._reduce_cap(maker.request)
            if cap is not None and cap <= 0:
                self._close(maker, "cancelled", "reduce_only", now)
                continue
            fill = min(q, maker.remaining) if cap is None else min(q, maker.remaining, cap)
            if fill > 0:
                self._fill(maker, fill, maker.price, False, now)
        if eaten:
            self._eat_queues(pid, maker_side, eaten)

    def _maker_pass(self, now: int) -> None:
        for pid, orders in self._open.items():
            if not orders:
                continue
            book = self.books[pid]
            for order in list(orders):
                if order.state == "open":
                    # Cancels ahead: never more ahead than the level shows now.
                    shown = _shown(book, _own_side(order.request), order.price, now)
                    order.queue_ahead = min(order.queue_ahead, shown)
                    self._maker_check(order, book, now, False)

    def _maker_check(self, order: SimOrder, book: CrowdBook, now: int, flow: bool) -> None:
        """A resting order fills in full at its own price, as maker, when the market
        trades through it: the crowd's opposite side reaches its price (the mid moved
        through). Taker flow is `_arrival`'s; `flow` is kept for subclasses' calls."""
        cap = self._reduce_cap(order.request)
        if cap is not None and cap <= 0:
            self._close(order, "cancelled", "reduce_only", now)
            return
        buy = order.side == "buy"
        inc = self.specs[order.product_id].size_increment
        opp = book.best("ask" if buy else "bid", now)
        crossed = opp is not None and (opp[0] <= order.price if buy else opp[0] >= order.price)
        qty = self._partial(order.remaining, inc) if crossed else ZERO
        if cap is not None:
            qty = min(qty, cap)
        if qty > 0:
            self._fill(order, qty, order.price, False, now)

    def _fill(self, order: SimOrder, qty: Decimal, price: Decimal, taker: bool, now: int) -> None:
        req = order.request
        spec = self.specs[req.product_id]
        base = qty * price
        if taker and not order.took:
            # Nado charges a taker's first match on at least `min_size` notional.
            base, order.took = max(base, spec.min_notional), True
        rate = self.taker_rate if taker else self.maker_rate
        # A builder's fee (appendix bits 38..47) is charged on top, on the fill's notional.
        # Explicit rounding: a host that changed the decimal context (ccxt sets
        # ROUND_HALF_UP process-wide) must not change the fees a seed gives.
        fee = base * rate + qty * price * req.builder_fee_rate
        fee = tidy(fee.quantize(FEE_PLACES, ROUND_HALF_EVEN))
        order.filled += qty
        order.filled_value += qty * price
        order.fees += fee
        pos = self.account(req.subaccount).apply_fill(
            now, req.product_id, req.side, qty, price, fee, self.lag_ns
        )
        idx = self._next_idx()
        self._records.append(fill_record(order, idx, now, price, qty, taker, fee))
        idx = self._next_idx()
        if not self.pushed_only:
            self._records.append(position_record(order, idx, now, pos.qty, pos.entry))
        if order.remaining <= 0:
            order.state = "filled"
            self._unlist(order)
        self._update(order, "filled", now)  # one per match: the size still unfilled

    def _close(self, order: SimOrder, state: OrderState, cause: Cause, now: int) -> None:
        order.state = state
        self._unlist(order)
        self._update(order, "cancelled", now, cause)

    def _unlist(self, order: SimOrder) -> None:
        orders = self._open[order.product_id]
        if order in orders:
            orders.remove(order)

    def _update(self, order: SimOrder, reason: Reason, now: int, cause: Cause = "") -> None:
        idx = self._next_idx()
        if reason == "cancelled" or not self.pushed_only:
            self._records.append(update_record(order, idx, now, reason, cause))

    def _remember(self, order: SimOrder) -> None:
        self._orders[order.digest] = order
        if order.request.client_id is not None:
            self._by_client[order.request.subaccount, order.request.client_id] = order.digest
        budget = len(self._orders)
        while len(self._orders) > self._history_limit and budget > 0:
            budget -= 1
            digest, oldest = next(iter(self._orders.items()))
            if oldest.state == "open":
                self._orders.move_to_end(digest)
            else:
                del self._orders[digest]
                key = (oldest.request.subaccount, oldest.request.client_id or "")
                if self._by_client.get(key) == digest:
                    del self._by_client[key]

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _next_idx(self) -> int:
        self._idx += 1
        return self._idx


# Initial margin per unit of notional: the SDK-shaped risk weights the server publishes
# (long 0.9 / short 1.1 initial) mean 10 % of the notional (unverified for live markets).
IM_FRACTION = Decimal("0.1")
_DEFAULT_NAME = b"default".hex().ljust(24, "0")


def _reject(key: str) -> PlaceResult:
    code, text = ERRORS[key]
    return PlaceResult(code=code, error=text)


def _opposite(req: OrderRequest) -> BookSide:
    return "ask" if req.side == "buy" else "bid"


def _own_side(req: OrderRequest) -> BookSide:
    return "bid" if req.side == "buy" else "ask"


_SIDES: tuple[BookSide, BookSide] = ("bid", "ask")
_NO_LEVEL: Level = (ZERO, ZERO)


def _next_arrival(flow: tuple[int, BookSide, FlowStream]) -> int:
    return flow[2].next_ns


def _shown(book: CrowdBook, side: BookSide, price: Decimal, now: int) -> Decimal:
    """The crowd's displayed size at `price` on `side` (0 where it shows nothing)."""
    for p, q in book.available(side, now):
        if p == price:
            return q
        if (p < price) if side == "bid" else (p > price):
            break
    return ZERO
