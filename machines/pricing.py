"""Pure helpers shared by the cycle machines: prices, sizes, slices, and the per-order
bookkeeping that sizes every remainder from verified numbers.

Nothing here does I/O or reads a clock. Prices cross the book by basis points and
round to the tick in the aggressive direction; sizes round DOWN to the increment; a
"market" order is an IOC priced through the book, sliced when large.

`OrderTracker` keeps a machine's orders by id with the round's bookkeeping only (round,
side, tif, bounded query count). An order's lifecycle state and how much it filled live
in one place, the ledger (`OrderRecord`, stepped through `machines.order` by every venue
fact and cancel request). The ledger already raises the filled amount to the venue's
cumulative word when a cancel/expiry ack or a status says more than the fills heard
(fills still in flight: the remainder must not be sold twice, seed 002), so an inferred
fill is applied once, there.

The ledger applies an event before any machine takes it, and python-statemachine runs
the eventless transitions *before* it takes the event. A guard reading the ledger's
fresh state would move the eventless `working -> deciding` ahead of the event's own
action: a margin reject decided on before `record_reject` sets `hard_reason` (the BUILD
retried, not failed), a maker fill decided on before `hedge_fills` runs (the next round
repairs the unhedged leg and the hedge is sent as well: the leg traded twice; 13 tests
in tests/unit/machines fail that way). So each tracked order carries `seen`, the
ledger's count of the words about it (`OrderRecord.words`) when the machine last took
one: a guard reads an order's state only while `seen` equals that count, and counts it
as unsettled until the machine's own action has taken the latest word. A word the
machine never takes (an answer to another machine's query, e.g. the Connection audit's
QueryOrder) keeps the order unsettled for the round until it takes its next word about
it (its own query, at the latest when its settle deadline chases it).

`OrderRounds` holds the round machinery of the position-work machine
(`machines.position_work`): the guards and actions that record what the venue says about
its orders, chase what it does not say (cancel, then QueryOrder, each bounded), walk a
ladder of rungs, and verify by position query. Its actions emit through the host machine;
it declares no states (the host's `cancelling` and `deciding` states call its entry
actions).

Maker-hedged rounds (`execution = "maker_first"`, a `Rung` with `hedged`): the round
places one leg only, post-only at the touch for that leg's whole remaining size, the leg
chosen from the book by `choose_maker_leg`. Every fill of it (partial ones included,
and fills the venue states only on a cancel ack or a status) is hedged at once on the
other leg by an IOC through the touch by the rung's bps, sized by that fill: the hedge
leg's round size x the maker's cumulative fill / the maker's round size, rounded to the
NEAREST increment (a half down), capped at the hedge leg's round size, less what was
already sent. So after each hedge the legs are apart by at most half a hedge increment
either way (rounding down left up to a whole increment unhedged until a later fill, a
round trip or more), never over-hedged by more than half an increment, a remainder
under half an increment carries to the next hedge, and the last fill hedges exactly the
rest. Hedges join the round's orders, so the
round ends when they settle too. The round's deadline is `maker_reprice_s` (the order is
then cancelled and the next hedged rung re-places it at the new touch) within
`maker_budget_s` in all; a hedge that does not fill in full (or cannot be priced, or is
rejected) ends the maker rounds at once: the resting order is cancelled and the taker
rungs repair whatever the verified fills say is missing. So does any order the venue
refuses outright (a 429 storm): while the venue refuses requests a resting leg's fills
could not be hedged (`dnpair chaos`, rate_limit_storm: legs apart for a whole
Retry-After, about 12 s), so the rounds after the backoff place both legs as IOCs. A
refusal while the legs are apart beyond the exposure tolerance (`refused_apart`: the
hedge of a fill, or the round after a short one), or a refused cancel of a resting order
whose remainder is worth more than the tolerance (it may fill unseen: venue down, 429),
is not waited out: the host fails the work at once with an alert stating the exposure,
and the session's emergency exit takes over, flagged (the same storm, after: the longest
unflagged stretch about 1.1 s). A
remaining size worth less than the leg's minimum order value cannot rest: that round is
placed as IOCs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from decimal import ROUND_DOWN
from decimal import ROUND_HALF_DOWN
from decimal import ROUND_UP
from decimal import Decimal
from typing import TYPE_CHECKING
from typing import Any

import attrs

from engine.core import flatness
from engine.core.events import FillReceived
from engine.core.events import OrderCancelled
from engine.core.events import OrderExpired
from engine.core.events import OrderRejected
from engine.core.events import OrderStatus
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import CancelOrder
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from engine.core.ledger import Ledger
from engine.core.ledger import OrderRecord
from engine.core.ledger import Quote
from machines import order as lifecycle
from machines.params import CycleParams
from machines.params import LegSpec
from machines.policy import ROUND_CAP
from machines.policy import Rung
from machines.policy import WorkPolicy

__all__ = [
    "BPS",
    "MAX_ORDER_QUERIES",
    "ROUND_CAP",
    "SPREAD_TIE_BPS",
    "MakerLeg",
    "OrderRounds",
    "OrderTracker",
    "Rung",
    "Tracked",
    "absurd_legs",
    "band_checked",
    "choose_maker_leg",
    "closing_side",
    "cross_price",
    "fills_agree",
    "is_dust",
    "notional",
    "outside_band",
    "read_lags_fills",
    "size_for_notional",
    "slices",
    "touch_price",
]

BPS = Decimal(10_000)
ZERO = Decimal(0)
_EVERY_ROUND = (-sys.maxsize - 1, sys.maxsize)  # (first, last): rounds of every order
MAX_ORDER_QUERIES = 3  # QueryOrder per order before the machine gives up on it
RESTING_TIF = frozenset({"post_only", "default"})  # orders that can rest on the book
SPREAD_TIE_BPS = Decimal("0.1")  # spreads this close count as equal (choose_maker_leg)
MIN_WAIT_S = Decimal("0.01")  # shortest round deadline a spent-down maker budget leaves


def _round(value: Decimal, step: Decimal, mode: str) -> Decimal:
    return (value / step).to_integral_value(mode) * step


def cross_price(leg: LegSpec, side: str, quote: Quote, bps: Decimal) -> Decimal:
    """Through the touch by `bps`: buy at askx(1+bps), sell at bidx(1-bps), tick-rounded
    aggressively (buy up, sell down). Never below one tick."""
    raw = quote.ask * (1 + bps / BPS) if side == "buy" else quote.bid * (1 - bps / BPS)
    return max(leg.round_price(raw, side), leg.tick_size)


def touch_price(leg: LegSpec, side: str, quote: Quote) -> Decimal:
    """Join our own side of the book (maker): buy at the bid, sell at the ask, rounded
    passively so a post-only order never crosses because of rounding."""
    if side == "buy":
        return max(_round(quote.bid, leg.tick_size, ROUND_DOWN), leg.tick_size)
    return _round(quote.ask, leg.tick_size, ROUND_UP)


def spread_bps(quote: Quote) -> Decimal:
    return (quote.ask - quote.bid) / quote.mid * BPS if quote.mid > 0 else ZERO


def choose_maker_leg(
    legs: Sequence[tuple[LegSpec, Decimal, Quote]],
) -> int:
    """Which of two legs rests in a maker-hedged round (maker_first): its index.

    Each leg is (spec, signed quantity wanted: buy > 0, quote). Against the mids, a
    hedged pair costs: minus the resting leg's half spread (it joins the touch), plus the
    hedge leg's half spread, the taker fee (the same on both legs here, so it does not
    decide) and any depth its IOC walks past the touch. So, in order:

    1. a hedge whose size the hedge leg's touch (the side the IOC takes: the ask for a
       buy) holds fills at the touch; if only one choice has that, take it;
    2. rest the leg with the wider spread in bps (it earns more as maker, and the
       tighter leg is the cheaper one to cross) — spreads within `SPREAD_TIE_BPS` are
       equal;
    3. rest the leg whose own touch (its bid for a buy) holds less USD: a thinner queue
       ahead of it fills sooner;
    4. the first leg.
    """
    assert len(legs) == 2

    def touch_usd(quote: Quote, side: str, taking: bool) -> Decimal:
        use_ask = (side == "buy") == taking
        return (quote.ask_qty * quote.ask) if use_ask else (quote.bid_qty * quote.bid)

    def hedge_fits(hedge: int) -> bool:
        _, want, quote = legs[hedge]
        side = "buy" if want > 0 else "sell"
        held = quote.ask_qty if side == "buy" else quote.bid_qty
        return held >= abs(want)

    fits = [hedge_fits(1), hedge_fits(0)]  # fits[i]: resting leg i, its hedge fits
    if fits[0] != fits[1]:
        return 0 if fits[0] else 1
    spreads = [spread_bps(q) for _, _, q in legs]
    if abs(spreads[0] - spreads[1]) > SPREAD_TIE_BPS:
        return 0 if spreads[0] > spreads[1] else 1
    queues = [touch_usd(q, "buy" if w > 0 else "sell", taking=False) for _, w, q in legs]
    if queues[0] != queues[1]:
        return 0 if queues[0] < queues[1] else 1
    return 0


def size_for_notional(leg: LegSpec, usd: Decimal, mid: Decimal) -> Decimal:
    """Base quantity worth `usd` at `mid`, rounded DOWN to the size increment."""
    if mid <= 0 or usd <= 0:
        return ZERO
    return leg.round_size_down(usd / mid)


def notional(qty: Decimal, quote: Quote | None) -> Decimal:
    return abs(qty) * quote.mid if quote is not None else ZERO


def is_dust(leg: LegSpec, qty: Decimal, quote: Quote | None, dust_usd: Decimal) -> bool:
    """Nothing worth (or possible) to trade: below one increment, or worth ≤ dust at mid.
    Without a quote only a zero position is dust."""
    return flatness.is_dust(qty, flatness.mid_of(quote), dust_usd, leg.size_increment)


def closing_side(position: Decimal) -> str:
    return "sell" if position > 0 else "buy"


def outside_band(p: CycleParams, ledger: Ledger, product_id: int) -> Decimal | None:
    """How far (bps) the quote's mid is from the venue's oracle price when that is beyond
    `price_band_bps` (RELIABILITY D5); None when inside, unknown, or the band is off."""
    quote, oracle = ledger.quote(product_id), ledger.oracle(product_id)
    if quote is None or oracle is None or not p.price_band_bps:
        return None
    off = (quote.mid / oracle - 1) * BPS
    return off if abs(off) > p.price_band_bps else None


def band_checked(p: CycleParams, ledger: Ledger, product_id: int) -> Quote | None:
    """The quote exits price from: as shown when within the band, else the oracle's
    price on both sides (never the skewed quote). With the oracle unknown (never given,
    or lost) the quote as shown is the only price there is: an exit still goes."""
    quote = ledger.quote(product_id)
    if quote is None or outside_band(p, ledger, product_id) is None:
        return quote
    oracle = ledger.oracle(product_id)
    assert oracle is not None
    return attrs.evolve(quote, bid=oracle, ask=oracle)


def absurd_legs(p: CycleParams, ledger: Ledger, positions: dict[int, Decimal]) -> dict[str, str]:
    """Legs holding more than one step may trade (`max_slices_per_step` slices of
    `max_slice_usd`) and more than ten times `max_position_usd`: far beyond anything the
    engine could have opened; they are stated, never traded slice by slice."""
    cap = max(p.max_slices_per_step * p.max_slice_usd, 10 * p.max_position_usd)
    out = {}
    for leg in p.legs:
        qty = positions.get(leg.product_id, ZERO)
        quote = ledger.quote(leg.product_id)
        if quote is not None and abs(qty) * quote.mid > cap:
            out[leg.symbol] = str(qty)
    return out


def slices(leg: LegSpec, qty: Decimal, price: Decimal, max_slice_usd: Decimal) -> list[Decimal]:
    """Split `qty` into chunks worth at most `max_slice_usd` each (at least one increment)."""
    qty = leg.round_size_down(abs(qty))
    if qty <= 0:
        return []
    per = leg.round_size_down(max_slice_usd / price) if price > 0 else qty
    per = max(per, leg.size_increment)
    out: list[Decimal] = []
    left = qty
    while left > 0:
        take = min(per, left)
        out.append(take)
        left -= take
    return out


def _read(ev: PositionSnapshot, product_id: int) -> Decimal:
    for pos in ev.positions:
        if pos.product_id == product_id:
            return pos.qty
    return ZERO  # a product the venue left out holds nothing


def fills_agree(ledger: Ledger, legs: Sequence[LegSpec], ev: PositionSnapshot) -> bool:
    """The read agrees with the fills the venue has reported (the ledger's position from
    fills) within one size increment on every leg: only such a read is evidence."""
    return all(
        abs(_read(ev, leg.product_id) - ledger.position(leg.product_id)) < leg.size_increment
        for leg in legs
    )


def read_lags_fills(
    ledger: Ledger, legs: Sequence[LegSpec], ev: PositionSnapshot, window_s: Decimal
) -> bool:
    """Some leg reads a position the fills held within the last `window_s` (before the
    latest fills moved it): the read lacks reported fills; it lags, it is not news."""
    since = ledger.now_ns - int(window_s * 1_000_000_000)
    for leg in legs:
        pid, read = leg.product_id, _read(ev, leg.product_id)
        book = ledger.book(pid)
        if abs(read - book.position) >= leg.size_increment and book.held_since(
            read, since, leg.size_increment
        ):
            return True
    return False


@attrs.define
class Tracked:
    """One of the machine's orders: the round's bookkeeping only. Its lifecycle state and
    how much it filled are the ledger's (`record`, the one holder); `seen` is the ledger's
    count of the words about it (`OrderRecord.words`) when the machine last recorded one."""

    order_id: str
    product_id: int
    side: str
    round: int
    queries: int = 0
    tif: str = ""
    seen: int = 0
    # The ledger's record, once it holds it (kept: the ledger may forget a finished order
    # while the machine still sums its fills).
    record: OrderRecord | None = None


class OrderTracker:
    """A machine's own orders, with remainders computed from verified numbers only."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.orders: dict[str, Tracked] = {}

    # -- recording ------------------------------------------------------------------------
    def add(self, intent: PlaceOrder, round_: int) -> None:
        """Track an order the machine has just placed (the ledger holds its record)."""
        self.orders[intent.order_id] = Tracked(
            intent.order_id,
            intent.product_id,
            intent.side,
            round_,
            tif=intent.tif,
            record=self._ledger.order(intent.order_id),
        )

    def mine(self, order_id: str | None) -> bool:
        return order_id is not None and order_id in self.orders

    def _record(self, t: Tracked) -> OrderRecord | None:
        return t.record if t.record is not None else self._ledger.order(t.order_id)

    def took(self, order_id: str) -> None:
        """The machine has recorded the ledger's latest word about one of its orders."""
        t = self.orders.get(order_id)
        if t is not None:
            t.record = rec = self._record(t)
            t.seen = rec.words if rec is not None else 0

    def record_end(self, order_id: str) -> bool:
        """A cancel or expiry ack. With its filled amount (the ledger has applied it) the
        order is settled; without one it is `uncounted`: returns True, ask with
        QueryOrder (fills may still be in flight and must not be re-traded)."""
        self.took(order_id)
        return self.state(order_id) == lifecycle.UNCOUNTED

    # -- reading --------------------------------------------------------------------------
    def state(self, order_id: str) -> str:
        """The order's lifecycle state: the ledger's (an order it does not hold yet is
        pending)."""
        rec = self._record(self.orders[order_id])
        return rec.state if rec is not None else lifecycle.PENDING

    def filled(self, order_id: str) -> Decimal:
        """Verified fills, inferred ones included (the ledger applies the venue's word)."""
        t = self.orders.get(order_id)
        rec = self._record(t) if t is not None else self._ledger.order(order_id)
        return rec.filled if rec is not None else ZERO

    def _recorded(self, t: Tracked) -> str | None:
        """The ledger's state once the machine has recorded every word the ledger applied
        about the order; None while one is not recorded yet (an eventless guard runs
        before the event's own action: module doc)."""
        rec = self._record(t)
        if rec is None:
            return lifecycle.PENDING
        return rec.state if rec.words == t.seen else None

    def settled(self, order_id: str) -> bool:
        """No longer working, as recorded from the venue's acks, fills and answers."""
        return self._recorded(self.orders[order_id]) in lifecycle.TERMINAL

    def needs_query(self, order_id: str) -> bool:
        """Ask rather than cancel: placed with an unknown outcome and not heard of since,
        or ended without the venue saying how much filled."""
        return self.state(order_id) in (lifecycle.UNCOUNTED, lifecycle.UNKNOWN)

    def in_round(self, round_: int) -> list[str]:
        return [o for o, t in self.orders.items() if t.round == round_]

    def unsettled(self, round_: int | None = None) -> list[str]:
        terminal = lifecycle.TERMINAL
        return [
            o
            for o, t in self.orders.items()
            if (round_ is None or t.round == round_) and self._recorded(t) not in terminal
        ]

    def round_settled(self, round_: int) -> bool:
        """`not self.unsettled(round_)`, without the list (an eventless guard's question)."""
        terminal = lifecycle.TERMINAL
        return all(t.round != round_ or self._recorded(t) in terminal for t in self.orders.values())

    def round_refused(self, round_: int) -> bool:
        """Every order of the round was refused before reaching the venue (and it has one);
        one pass over the orders (an eventless guard's question, asked on every event)."""
        placed = False
        for t in self.orders.values():
            if t.round == round_:
                if self._recorded(t) != lifecycle.DENIED:
                    return False
                placed = True
        return placed

    def signed_filled(self, product_id: int, round_: int | None = None) -> Decimal:
        """The product's fills, signed (buy > 0): of round `round_`, or of every round."""
        first, last = _EVERY_ROUND if round_ is None else (round_, round_)
        return self.signed_filled_in(product_id, first, last)

    def signed_filled_in(self, product_id: int, first: int, last: int) -> Decimal:
        """`signed_filled` summed over rounds `first`..`last`, in one pass over the orders
        (the same exact sum: every term and partial sum is a short exact Decimal)."""
        total = ZERO
        for oid, t in self.orders.items():
            if t.product_id == product_id and first <= t.round <= last:
                qty = self.filled(oid)
                total += qty if t.side == "buy" else -qty
        return total


@attrs.define
class MakerLeg:
    """A resting maker order of a hedged round and what hedging its fills needs."""

    order_id: str
    qty: Decimal  # the maker order's size
    hedge: LegSpec
    side: str  # the hedge's side
    hedge_qty: Decimal  # the hedge leg's size for the whole maker order
    bps: Decimal  # how far the hedge IOC goes through the touch
    sent: Decimal = ZERO  # hedge quantity sent so far


class OrderRounds:
    """Shared guards and actions for machines that work orders in rounds (see module doc).

    The host machine (`PositionWork`) declares states named `cancelling` and `deciding`
    and calls `setup_rounds(policy)` from its `setup`; the policy (`machines.policy`)
    carries what differs between BUILD, UNWIND and the exit: the ladder, reduce-only, the
    round budget, deadlines, the hedge deadline and whether a venue reject ends the attempt."""

    if TYPE_CHECKING:
        p: CycleParams
        policy: WorkPolicy

        @property
        def ledger(self) -> Ledger: ...

        def emit(self, *intents: Intent) -> None: ...

        def note(self, text: str, **data: Any) -> None: ...

        def next_id(self, tag: str = "") -> str: ...

        def arm(self, name: str, seconds: Decimal | int | str) -> None: ...

        def disarm(self, name: str) -> None: ...

    def setup_rounds(self, policy: WorkPolicy) -> None:
        self.policy = policy
        # The cycle's hedge tolerance and oldest usable quote, worked out once (every hedge
        # watch and every round's pricing read them).
        self.tolerance_usd = self.p.exposure_tolerance_usd
        self.max_quote_age_ns = self.p.bbo_max_age_s * 1_000_000_000
        self.orders = OrderTracker(self.ledger)
        self.round = -1
        self.hard_reason = ""
        self.query_id = ""
        self.order_queries: dict[str, str] = {}  # QueryOrder request id -> order id
        self.verifies = 0
        self.retry_after_s: Decimal | None = None  # the venue's hint on a refusal
        self.refusals: int = 0  # rounds the venue refused outright (429, retryable)
        self.rungs: list[Rung] = list(policy.ladder)
        self.rung = -1  # index into the ladder; `round` numbers every set of orders
        self.lag_since: int | None = None  # engine ns of this read's first lagging answer
        self.lag_asks = 0
        self.unhedged_since: int | None = None  # engine ns the legs went apart (tolerance)
        self.together_ns: int | None = None  # engine ns the legs were last seen together
        # maker_first: resting maker orders, hedge IOCs (id -> size), budget and state.
        self.makers: dict[str, MakerLeg] = {}
        self.hedges: dict[str, Decimal] = {}
        self.maker_since: int | None = None  # engine ns the first maker order was placed
        self.maker_off = False  # a hedge fell short: no more hedged rungs
        self.round_hedged = False  # the current round rests a maker order
        self.refused_apart = ""  # an order the venue refused (429) while the legs were apart
        # Resting orders of finished machines this machine cancelled (True: the venue
        # said they are not open, no cancel again).
        self.strays_gone: dict[str, bool] = {}
        self.stray_queries: dict[str, str] = {}  # request id -> stray order id

    def reject_is_final(self, order_id: str) -> bool:
        """A reject of an IOC ends the attempt when the policy says so (BUILD: margin,
        size, seed V8); a post-only may just have crossed."""
        return self.policy.reject_ends_work and self.orders.orders[order_id].tif != "post_only"

    def next_rung(self, skip_passive: bool) -> int:
        """The ladder's next step (past any post-only step once `skip_passive`, past the
        hedged maker rungs once they stepped aside). Past the last step, the last one
        again while each round still fills something (partial fills are progress, not
        failure), up to the policy's round budget."""
        nxt = self.rung + 1
        if self.rung >= 0 and skip_passive:
            while nxt < len(self.rungs) and self.rungs[nxt].tif == "post_only":
                nxt += 1
        if not self.maker_allowed():
            while nxt < len(self.rungs) and self.rungs[nxt].hedged:
                nxt += 1
        last = len(self.rungs) - 1
        more = self.round + 1 < self.policy.max_rounds
        last_is_ioc = last >= 0 and self.rungs[last].tif != "post_only"
        if nxt > last and last_is_ioc and more and self.round_progressed():
            return last
        return nxt

    def round_progressed(self) -> bool:
        return any(self.orders.signed_filled(pid, self.round) != 0 for pid in self.p.product_ids)

    # -- maker_first: the resting leg and its hedges ---------------------------------------------
    def maker_budget_left(self) -> Decimal:
        """Resting time left of `maker_budget_s` (0 without a maker budget)."""
        budget = self.policy.maker_budget_s
        if budget is None:
            return ZERO
        if self.maker_since is None:
            return budget
        return budget - Decimal(self.ledger.now_ns - self.maker_since) / 1_000_000_000

    def maker_allowed(self) -> bool:
        """Hedged rungs may still be placed: neither stepped aside nor out of budget."""
        return not self.maker_off and self.maker_budget_left() > 0

    def round_wait_s(self) -> Decimal:
        """The current round's deadline: a resting maker order's reprice interval (within
        the budget left), else the policy's round timeout."""
        reprice = self.policy.maker_reprice_s
        if self.round_hedged and reprice is not None:
            return max(min(reprice, self.maker_budget_left()), MIN_WAIT_S)
        return self.policy.round_timeout_s

    def place_maker(self, rung: Rung, wants: Sequence[tuple[LegSpec, Decimal]]) -> bool:
        """A hedged round: rest one leg (`choose_maker_leg`) post-only at the touch for
        its whole remaining size. False (nothing placed) when it cannot: not both legs
        wanted and priced, budget spent, or too small to rest."""
        if not self.maker_allowed():
            return False
        legs = []
        for leg, want in wants:
            qty = leg.round_size_down(abs(want))
            quote = self.round_quote(leg) if qty >= leg.size_increment else None
            if quote is None:
                return False
            legs.append((leg, qty if want > 0 else -qty, quote))
        if len(legs) != 2:
            return False
        i = choose_maker_leg(legs)
        (leg, want, quote), (hedge, hedge_want, _) = legs[i], legs[1 - i]
        side = "buy" if want > 0 else "sell"
        price = touch_price(leg, side, quote)
        if abs(want) * price < leg.min_order_value_usd:
            self.note("maker_first: too small to rest, taker round", leg=leg.symbol)
            return False
        if self.maker_since is None:
            self.maker_since = self.ledger.now_ns
        oid = self.place(leg, side, abs(want), price, tif="post_only", purpose=rung.label)
        self.makers[oid] = MakerLeg(
            oid, abs(want), hedge, "buy" if hedge_want > 0 else "sell", abs(hedge_want), rung.bps
        )
        self.round_hedged = True
        return True

    def _maker_open_usd(self, order_id: str) -> Decimal:
        """What a resting maker order may still fill, in USD at the leg's mid."""
        rec = self.ledger.order(order_id)
        if rec is None:
            return ZERO
        return notional(rec.remaining, self.ledger.quote(rec.product_id))

    def hedge_fills(self, order_id: str) -> None:
        """Hedge what the maker order filled and no hedge has covered yet (module doc)."""
        m = self.makers[order_id]
        inc = m.hedge.size_increment
        exact = self.orders.filled(order_id) * m.hedge_qty / m.qty
        need = min(_round(exact, inc, ROUND_HALF_DOWN), m.hedge_qty) - m.sent
        if need < inc:
            return  # under half an increment apart: carried to the next fill
        quote = self.round_quote(m.hedge)
        if quote is None:
            self.step_aside(f"no quote to hedge {m.hedge.symbol} with")
            return
        m.sent += need
        price = cross_price(m.hedge, m.side, quote, m.bps)
        hid = self.place(m.hedge, m.side, need, price, tif="ioc", purpose="hedge")
        self.hedges[hid] = need

    def step_aside(self, reason: str) -> None:
        """No more hedged rungs: cancel every resting maker order still working; the
        taker rungs size what is missing from the verified fills."""
        if not self.maker_off:
            self.note("maker_first: stepping aside", reason=reason)
        self.maker_off = True
        for oid in self.makers:
            if self.orders.settled(oid) or self.orders.state(oid) == lifecycle.PENDING_CANCEL:
                continue
            if not self.orders.needs_query(oid):
                self._cancel(oid)

    def maker_word(self, order_id: str) -> None:
        """After any word about one of our orders: hedge a maker order's new fills; a
        hedge that ended short (or whose outcome is unknown) ends the maker rounds."""
        if order_id in self.makers:
            self.hedge_fills(order_id)
        elif order_id in self.hedges:
            state = self.orders.state(order_id)
            short = self.orders.settled(order_id) and (
                self.orders.filled(order_id) < self.hedges[order_id]
            )
            if short or state == lifecycle.UNKNOWN:
                self.step_aside(f"hedge {order_id} did not fill in full")

    # -- the hedge deadline (V1), one implementation for every order-working machine ------------
    def net_usd(self) -> Decimal:
        """The signed notional the host's legs are apart by, from verified fills. The
        emergency exit keeps the default: its total budget bounds it, not this deadline."""
        return ZERO

    def hedge_known(self) -> bool:
        """`net_usd` is priced from fresh quotes (the default's zero always is)."""
        return True

    def within_hedge_tolerance(self) -> bool:
        """`hedge_known()` and `net_usd()` within the tolerance (a host may answer both
        from one look at its legs)."""
        return self.hedge_known() and abs(self.net_usd()) <= self.tolerance_usd

    def watch_hedge(self) -> None:
        """Action: note when the legs went apart beyond the tolerance, or came back.

        Apart (or not known to be together: a leg's quote is stale) counts from the last
        time they were seen together, not from when it is first seen: the venue's
        imbalance began in between (chaos maker_first seed 952: a price move during a
        25 s backoff with no quotes was seen only after it, and UNWIND failed 37 s after
        the imbalance began)."""
        if not self.policy.hedge_deadline:
            return  # the exit: its total budget bounds it
        now = self.ledger.now_ns
        if self.within_hedge_tolerance():
            self.unhedged_since = None
            self.together_ns = now
        elif self.unhedged_since is None:
            self.unhedged_since = now if self.together_ns is None else self.together_ns

    def apart_s(self) -> Decimal:
        """Seconds the legs have been apart beyond the tolerance, as last watched (0 if not)."""
        if self.unhedged_since is None:
            return ZERO
        return Decimal(self.ledger.now_ns - self.unhedged_since) / 1_000_000_000

    def hedge_deadline_passed(self) -> bool:
        """Apart so long that one more round (its fill timeout and bounded cancel chase)
        would end past the exit budget: no further round; the session's emergency exit
        takes over, flagged."""
        p = self.p
        worst_round = p.fill_timeout_s + (MAX_ORDER_QUERIES + 1) * p.cancel_timeout_s
        return self.apart_s() + worst_round > p.exit_budget_s

    def hedge_budget_spent(self, ev: Any = None) -> bool:
        return self.apart_s() >= self.p.exit_budget_s

    def arm_wait(self, name: str, seconds: Decimal | int | str) -> None:
        """Arm a wait that ends no later than the hedge budget: legs apart, every wait's
        deadline comes when the budget is spent at the latest, and its guard
        (`hedge_budget_spent`) then fails the work. The bound holds by construction, not
        at whichever deadline happens to come next."""
        wait = Decimal(seconds)
        if self.policy.hedge_deadline:
            # Looked at afresh (a wait is armed in any state, not only on deciding), and no
            # wait outlasts the budget even with the legs together now: prices move while
            # nothing is looked at (chaos maker_first random seed 1174: BUILD's verifying
            # read honoured a 41 s Retry-After with the legs together; a price jump left
            # them 14.80 USD apart, unflagged for 37.6 s against a 37 s bound).
            self.watch_hedge()
            wait = max(min(wait, self.p.exit_budget_s - self.apart_s()), ZERO)
        self.arm(name, wait)

    def on_enter_deciding(self) -> None:
        self.watch_hedge()

    def stop_for_hedge(self) -> None:
        self.hard_reason = (
            f"hedge deadline: legs apart for {self.apart_s()}s, no time for another round"
        )

    # -- guards ---------------------------------------------------------------------------
    def round_settled(self) -> bool:
        return self.orders.round_settled(self.round)

    def round_refused(self) -> bool:
        return self.orders.round_refused(self.round)

    def hard_rejected(self) -> bool:
        return bool(self.hard_reason)

    def queries_left(self) -> bool:
        unsettled = self.orders.unsettled()
        return all(self.orders.orders[o].queries < MAX_ORDER_QUERIES for o in unsettled)

    def is_mine(self, ev: Any) -> bool:
        rid = getattr(ev, "request_id", None)
        return self.orders.mine(ev.order_id) or (rid is not None and rid in self.order_queries)

    def says_open(self, ev: OrderStatus) -> bool:
        return ev.state == "open"

    def answers_me(self, ev: PositionSnapshot | VenueError) -> bool:
        return ev.request_id is not None and ev.request_id == self.query_id

    def venue_shows_less(self, ev: PositionSnapshot) -> bool:
        """The answer shows less exposure than the engine's own verified fills imply on
        some leg: most likely a position feed lagging behind them (never take it as flat
        at once)."""
        got = {p.product_id: p.qty for p in ev.positions}
        return any(
            abs(got.get(leg.product_id, ZERO)) + leg.size_increment
            <= abs(self.ledger.position(leg.product_id))
            for leg in self.p.legs
        )

    def read_agrees(self, ev: PositionSnapshot) -> bool:
        return fills_agree(self.ledger, self.p.legs, ev)

    def read_lags(self, ev: PositionSnapshot) -> bool:
        """The answer lacks fills the venue reported, and this read has waited less than
        the lag budget: ask again (backing off) rather than believe it."""
        if self.lag_since is not None:
            waited = Decimal(self.ledger.now_ns - self.lag_since) / 1_000_000_000
            if waited >= self.p.position_lag_budget_s:
                return False
        return read_lags_fills(self.ledger, self.p.legs, ev, self.p.position_lag_budget_s)

    def verify_left(self) -> bool:
        return self.verifies < self.p.verify_attempts

    # -- recording what the venue says ------------------------------------------------------
    def record_fill(self, ev: FillReceived) -> None:
        self.orders.took(ev.order_id)
        if self.makers or self.hedges:
            self.maker_word(ev.order_id)  # maker_first: hedge this fill at once
        self.watch_hedge()

    def record_end(self, ev: OrderExpired | OrderCancelled) -> None:
        if self.orders.record_end(ev.order_id):
            self._query_order(ev.order_id)  # how much filled? never guess (seed 002)
        if self.makers or self.hedges:
            self.maker_word(ev.order_id)

    def record_reject(self, ev: OrderRejected) -> None:
        self.orders.took(ev.order_id)
        if self.reject_is_final(ev.order_id):
            self.hard_reason = f"order {ev.order_id} rejected: {ev.reason}"
        if self.makers or self.hedges:
            self.maker_word(ev.order_id)

    def record_status(self, ev: OrderStatus) -> None:
        self.orders.took(ev.order_id)
        if ev.state == "not_found" and not self.orders.settled(ev.order_id):
            # Maybe not visible yet (V7): ask once more shortly, not at the round deadline.
            self.arm_wait("requery_timeout", self.p.verify_retry_s)
        if self.makers or self.hedges:
            self.maker_word(ev.order_id)

    def requery_unknown(self) -> None:
        for oid in self.orders.unsettled():
            t = self.orders.orders[oid]
            if self.orders.needs_query(oid) and t.queries < MAX_ORDER_QUERIES:
                self._query_order(oid)

    def record_error(self, ev: VenueError) -> None:
        oid = ev.order_id or self.order_queries.get(ev.request_id or "", "")
        self.note("venue error", request=ev.request, error_class=ev.error_class, order_id=oid)
        if oid in self.strays_gone and ev.error_class == "permanent":
            self.strays_gone[oid] = True  # not open at the venue: no cancel again
        if not self.orders.mine(oid):
            return
        self.orders.took(oid)
        if ev.request == "cancel_order":
            # e.g. "order not open": it ended and the news is lost or late; ask now.
            if not self.orders.settled(oid) and self.orders.orders[oid].queries < 1:
                self._query_order(oid)
            refused = ev.error_class in ("rate_limited", "retryable")  # provably not done
            if refused and oid in self.makers and not self.refused_apart:
                # A resting order the venue will not cancel may fill unseen, unhedged.
                self.watch_hedge()
                if self.unhedged_since is not None or self._maker_open_usd(oid) > (
                    self.tolerance_usd
                ):
                    self.refused_apart = oid
            return
        if ev.request != "place_order":
            return  # a failed query: the settle deadline chases it
        # The ledger has stepped the order: unknown outcome, rejected or denied.
        if ev.error_class == "unknown_outcome":
            self._query_order(oid)  # resolved before anything is resent
        elif ev.error_class == "permanent":
            self.hard_reason = f"order {oid} refused: {ev.message or ev.error_class}"
        else:  # provably not placed: a new id may follow
            if ev.retry_after_s is not None:
                self.retry_after_s = ev.retry_after_s
            if any(r.hedged for r in self.rungs):
                # A venue that refuses orders (429) may refuse the hedge of a fill: no
                # leg rests again in this work (the rounds after the backoff send both).
                self.step_aside(f"the venue refused order {oid} ({ev.error_class})")
                self.watch_hedge()
                if self.unhedged_since is not None and not self.refused_apart:
                    # One leg alone and the order that would close it refused: not
                    # waited out unflagged (`refused_while_apart` ends the work).
                    self.refused_apart = oid
        if self.makers or self.hedges:
            self.maker_word(oid)

    def backoff_delay(self) -> Decimal:
        """After a refusal: the venue's Retry-After, else exponential from exit_backoff_s,
        capped at one exit attempt."""
        self.refusals += 1
        exponential = self.p.exit_backoff_s * 2 ** (self.refusals - 1)
        delay = self.retry_after_s or min(exponential, self.p.exit_attempt_timeout_s)
        self.retry_after_s = None
        return delay

    # -- chasing what it does not say ---------------------------------------------------------
    def on_enter_cancelling(self) -> None:
        for oid in self.orders.unsettled():
            if self.orders.needs_query(oid):
                self._query_order(oid)
            elif oid not in self.hedges:  # a hedge IOC ends by itself (else: chased)
                self._cancel(oid)
        self.arm_wait("settle_timeout", self.p.cancel_timeout_s)

    def chase_unsettled(self) -> None:
        """The cancel acks did not all come: ask the venue about each unsettled order."""
        for oid in self.orders.unsettled():
            self._query_order(oid)
        self.arm_wait("settle_timeout", self.p.cancel_timeout_s)

    def cancel_again(self, ev: OrderStatus) -> None:
        self.orders.took(ev.order_id)
        self._cancel(ev.order_id)

    def cancel_unsettled(self) -> None:
        for oid in self.orders.unsettled():
            self._cancel(oid)

    def cancel_strays(self) -> None:
        """Cancel every order on the pair's products the ledger holds open whose machine
        is no longer live: a resting order (post-only, maker_first) left by a BUILD or
        UNWIND that ended without its cancel acknowledged (rate limited, venue down) could
        otherwise fill later, unseen by anything. Their answers now come to this machine,
        which does not count them as its own; the ledger applies them."""
        for rec in self.ledger.open_orders():
            oid = rec.order_id
            if rec.tif not in RESTING_TIF or rec.product_id not in self.p.product_ids:
                continue  # an IOC/FOK never rests: unheard, it has ended all the same
            if self.orders.mine(oid) or self.strays_gone.get(oid):
                continue
            owner = oid.rpartition(":")[0]
            if owner and self.ledger.state_of(owner):
                continue  # its machine is live and chases it itself
            self.note("cancelling an order its machine left open", order_id=oid)
            self.emit(CancelOrder(order_id=oid, product_id=rec.product_id))
            self.strays_gone[oid] = False

    def strays_unsettled(self) -> list[str]:
        """Strays this machine cancelled that the ledger still holds open: neither a cancel
        ack nor a status saying how they ended has come (seed 1261: a rate-limited cancel,
        the order filled unheard, and the exit read flat before the venue said so)."""
        open_ids = {rec.order_id for rec in self.ledger.open_orders()}
        return [oid for oid in self.strays_gone if oid in open_ids]

    def strays_open(self, ev: Any = None) -> bool:
        return bool(self.strays_unsettled())

    def answers_stray(self, ev: OrderStatus) -> bool:
        return self.stray_queries.get(ev.request_id or "") == ev.order_id

    def chase_strays(self, ev: PositionSnapshot) -> None:
        """A read taken while a stray may still fill judges nothing: ask the venue how
        each unsettled stray stands (the ledger applies what filled) and read again."""
        open_recs = {rec.order_id: rec for rec in self.ledger.open_orders()}
        for oid in self.strays_unsettled():
            rec = open_recs[oid]
            rid = self.next_id("s")
            self.stray_queries[rid] = oid
            self.emit(QueryOrder(request_id=rid, order_id=oid, product_id=rec.product_id))
        self.note(
            "orders left open by a finished machine not settled yet", orders=self.strays_unsettled()
        )
        self.recheck_later()

    def stray_status(self, ev: OrderStatus) -> None:
        """The ledger has applied the status: how the stray ended (and any fill it states),
        or "not found" twice with nothing filled (it never reached the venue: its place
        was refused, e.g. 429), settles it there. Still open: cancel it again."""
        rec = self.ledger.order(ev.order_id)
        if ev.state == "open" and rec is not None and not rec.is_done:
            self.emit(CancelOrder(order_id=ev.order_id, product_id=rec.product_id))

    def stray_exposure(self, pid: int) -> Decimal:
        """What unsettled strays on `pid` may still fill (their unfilled remainders)."""
        unsettled = set(self.strays_unsettled())
        return sum(
            (
                o.remaining
                for o in self.ledger.open_orders()
                if o.order_id in unsettled and o.product_id == pid
            ),
            ZERO,
        )

    # -- verifying by position query ------------------------------------------------------------
    def venue_flat(self, ev: PositionSnapshot) -> bool:
        seen = self._seen(ev)
        return all(self._dust(leg, seen[leg.product_id]) for leg in self.p.legs)

    def _dust(self, leg: LegSpec, qty: Decimal) -> bool:
        return is_dust(leg, qty, self.ledger.quote(leg.product_id), self.p.dust_usd)

    def _seen(self, ev: PositionSnapshot) -> dict[int, Decimal]:
        """The answer's positions; a product the venue left out holds nothing."""
        got = {p.product_id: p.qty for p in ev.positions}
        return {pid: got.get(pid, ZERO) for pid in self.p.product_ids}

    def query_positions(self) -> None:
        self.verifies += 1
        self.query_id = self.next_id("q")
        self.emit(QueryPositions(request_id=self.query_id, product_ids=self.p.product_ids))
        self.arm_wait("verify_timeout", self.verify_wait_s())

    def verify_wait_s(self) -> Decimal:
        return self.policy.verify_wait_s

    def recheck_later(self, ev: Any = None) -> None:
        delay = max(self.p.verify_retry_s, getattr(ev, "retry_after_s", None) or ZERO)
        if isinstance(ev, PositionSnapshot):
            # An answer that lags our own fills: each re-ask waits twice as long as the
            # last (0.5, 1, 2 s ...), capped at one verify timeout, so the bounded re-asks
            # span a position feed that lags by seconds (seed 003), not just one retry.
            grown = self.p.verify_retry_s * 2 ** max(self.verifies - 1, 0)
            delay = min(max(delay, grown), max(self.p.verify_timeout_s, delay))
        cap = self.recheck_cap()
        if cap is not None:
            delay = min(delay, cap)
        self.note("venue position not as expected yet; asking again", attempt=self.verifies)
        self.disarm("verify_timeout")
        self.arm_wait("recheck_timeout", delay)

    def wait_for_lag(self, ev: PositionSnapshot) -> None:
        """A read lagging the fills: ask again, each wait twice the last (from
        verify_retry_s, capped at one verify timeout), within the lag budget. A lagging
        answer is an answer: it does not use up a verification attempt."""
        now = self.ledger.now_ns
        if self.lag_since is None:
            self.lag_since = now
            self.note(
                "position read lags the reported fills: asking again",
                read={str(p.product_id): str(p.qty) for p in ev.positions},
                fills={str(pid): str(self.ledger.position(pid)) for pid in self.p.product_ids},
            )
        self.lag_asks += 1
        self.verifies = max(self.verifies - 1, 0)
        left = self.p.position_lag_budget_s - Decimal(now - self.lag_since) / 1_000_000_000
        grown = self.p.verify_retry_s * 2 ** min(self.lag_asks - 1, 16)
        delay = max(min(grown, self.p.verify_timeout_s, left), self.p.verify_retry_s)
        self.disarm("verify_timeout")
        self.arm_wait("recheck_timeout", delay)

    def reset_lag(self) -> None:
        self.lag_since, self.lag_asks = None, 0

    def recheck_cap(self) -> Decimal | None:
        """Longest a re-ask may wait, whatever the venue's Retry-After (None: no cap)."""
        return None

    def venue_positions(self) -> dict[str, str]:
        return {leg.symbol: str(self.ledger.venue_position(leg.product_id)) for leg in self.p.legs}

    # -- one round of orders ----------------------------------------------------------------------
    def place_round(
        self, rung: Rung, wants: Sequence[tuple[LegSpec, Decimal]], purpose: str
    ) -> None:
        """Place one round: for each leg the signed quantity it still wants (buy > 0),
        priced on the rung (post-only at the touch, else through it by the rung's bps),
        sliced by `max_slice_usd` on a sliced rung, at most `max_slices_per_step` orders
        per leg (the rest: a later round). A leg without a usable quote places nothing.
        A hedged rung rests one leg only (`place_maker`), else is placed as IOCs."""
        self.round_hedged = False
        if rung.hedged:
            if self.place_maker(rung, wants):
                return
            rung = Rung("ioc", rung.bps, rung.label)
        for leg, want in wants:
            qty = leg.round_size_down(abs(want))
            if qty < leg.size_increment:
                continue
            quote = self.round_quote(leg)
            if quote is None:
                continue
            side = "buy" if want > 0 else "sell"
            if rung.tif == "post_only":
                price = touch_price(leg, side, quote)
            else:
                price = cross_price(leg, side, quote, rung.bps)
            parts = slices(leg, qty, price, self.p.max_slice_usd) if rung.sliced else [qty]
            for part in parts[: self.p.max_slices_per_step]:  # bounded work per step
                self.place(leg, side, part, price, tif=rung.tif, purpose=purpose)

    def round_quote(self, leg: LegSpec) -> Quote | None:
        """The quote a round prices `leg` from, or None (noted) when there is none to use.

        Closing (reduce-only): beyond the price band the oracle prices the exit, never the
        skewed quote. Opening: never from a stale book (D2: repair rounds come seconds
        after the entry check) nor from a quote beyond the band (D5)."""
        if self.policy.reduce_only:
            quote = band_checked(self.p, self.ledger, leg.product_id)
            if quote is None:
                self.note("no quote to price the leg", leg=leg.symbol)
            return quote
        quote = self.ledger.quote(leg.product_id)
        if quote is None:
            self.note("no quote to price the leg", leg=leg.symbol)
            return None
        age_ns = self.ledger.now_ns - quote.ts_ns
        if age_ns > self.max_quote_age_ns:
            self.note("stale BBO: leg not priced", leg=leg.symbol, age_ns=age_ns)
            return None
        if outside_band(self.p, self.ledger, leg.product_id) is not None:
            self.note("quote outside the price band: leg not priced", leg=leg.symbol)
            return None
        return quote

    # -- intents ----------------------------------------------------------------------------------
    def place(self, leg: LegSpec, side: str, qty: Decimal, price: Decimal, **kw: Any) -> str:
        intent = PlaceOrder(
            order_id=self.next_id("o"),
            product_id=leg.product_id,
            side=side,
            qty=qty,
            price=price,
            reduce_only=self.policy.reduce_only,
            **kw,
        )
        self.emit(intent)  # the ledger records it, then the round tracks it
        self.orders.add(intent, self.round)
        return intent.order_id

    def _cancel(self, oid: str) -> None:
        self.emit(CancelOrder(order_id=oid, product_id=self.orders.orders[oid].product_id))

    def _query_order(self, oid: str) -> None:
        t = self.orders.orders[oid]
        t.queries += 1
        rid = self.next_id("s")
        self.order_queries[rid] = oid
        self.emit(QueryOrder(request_id=rid, order_id=oid, product_id=t.product_id))
