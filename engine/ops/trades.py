"""Trade records: the journal read back as runs, cycles, orders, machines and alerts.

`RunFold` consumes journal records one at a time, in order, either live (an engine
observer, reading the engine's own ledger) or offline from a file (keeping its own
ledger replica, fed exactly as the engine fed its ledger). One code path serves the
metrics, the status view, `dnpair status` and `dnpair report`.

Definitions (they are also the report's column meanings):
- a cycle starts at the session's position check that led to its BUILD (else at the
  BUILD's spawn) and ends when its UNWIND (or the emergency exit that replaced it) ends;
- entry orders are the BUILD machine's, exit orders those of UNWIND / emergency exit;
- decision time of an order is its `PlaceOrder` intent's record; the decision mid is the
  mid ((bid + ask) / 2) of the last quote the ledger held for the product then (the
  quote the machine priced the order from);
- volume is the filled notional (quantity x price) of the orders, a fill known only by
  the venue's word on an order's total counted at the order's limit price (the ledger's);
- slippage of an order is its average fill price against the decision mid times the
  filled quantity, positive = paid worse than the mid (a taker pays half the spread and
  more; a maker filled at the touch earns half the spread, negative);
- cost per million is (fees + slippage) per 1 000 000 USD of volume (`cost_per_million`);
- maker share is the volume filled as maker (`FillReceived.is_maker`) over the volume; a
  fill known only by the venue's word has no maker flag and counts as taker;
- one leg alone: after each engine instant with a record that moves a position (a fill,
  a venue word on an order's total), the unhedged USD of the fills' positions at the
  current mids (`engine.core.flatness`) against its tolerance; an episode starts at the
  instant that takes it above and ends at the instant that brings it back, on the
  engine's clock (when the engine learned of the fills; both legs heard at one instant
  open none). `one_leg_s` is the episodes' total, and each
  episode is one fill's hedge latency (the fill that opened it until it was hedged),
  counted in the cycle of that fill's order; an episode still open when the journal ends
  is counted up to its last record;
- a cycle's numbers are its orders' as they stood when the cycle closed (its UNWIND or
  exit verified flat); the run totals add every cycle, the trimmed ones of a live fold
  included;
- gross PnL is the cycle's cash flow (sells minus buys) plus any residual position marked
  at the last mid; net = gross - fees; bps are of the cycle's traded volume;
- fill latency of an order is from the intent leaving the engine to the engine learning
  of its first fill, by the stream (`FillReceived`) or by a REST answer (`OrderStatus`).
"""

from __future__ import annotations

import functools
import math
import re
import statistics
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import attrs

from engine.core.clock import NS_PER_S
from engine.core.flatness import exposure_tolerance_usd
from engine.core.flatness import mid_of
from engine.core.flatness import unhedged_usd
from engine.core.journal import Record
from engine.core.ledger import Ledger
from engine.core.ledger import OrderRecord
from engine.core.messages import Message
from engine.core.messages import from_dict
from engine.core.observed import Observed
from engine.core.timers import journaled_deadlines

__all__ = [
    "AlertSeen",
    "CostTotals",
    "CycleRecord",
    "OrderFacts",
    "RunFold",
    "cost_per_million",
    "fold_records",
    "machine_kind",
]

ZERO = Decimal(0)
BPS = Decimal(10_000)
MILLION = Decimal(1_000_000)
MS = 1_000_000  # ns
# Position-moving events: after one of these is applied, one-leg exposure is looked at.
_MOVES = ("fill_received", "order_cancelled", "order_expired", "order_status")


def cost_per_million(fees: Decimal, slippage: Decimal, volume: Decimal) -> Decimal | None:
    """Fees plus slippage against the decision mid, per 1 000 000 USD of volume."""
    return (fees + slippage) / volume * MILLION if volume else None


ENTRY_KINDS = ("build",)
EXIT_KINDS = ("unwind", "exit", "flatten")
# Journals written before spawn notes carried structured params held `repr(CycleParams)`.
_OLD_CYCLE_RE = re.compile(r"CycleParams\(cycle=(\d+)")


def _spawn_cycle(params: Any) -> int | None:
    """The cycle number a spawn note's params carry (None: not a cycle's machine)."""
    inner = params.get("params") if isinstance(params, dict) else None
    if isinstance(inner, dict):
        cycle = inner.get("cycle")
        return cycle if isinstance(cycle, int) else None
    if isinstance(inner, str):  # an older journal, read back from its file
        m = _OLD_CYCLE_RE.search(inner)
        return int(m.group(1)) if m else None
    return None


@functools.cache
def _initial_state(cls_name: str) -> str:
    """The initial state of a machine class known by name ('' if unknown)."""
    from machines.base import PureMachine

    todo: list[type[PureMachine]] = list(PureMachine.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__name__ == cls_name:
            for state in cls.states:
                if state.initial:
                    return str(state.id)
            return ""
        todo.extend(cls.__subclasses__())
    return ""


def machine_kind(machine_id: str) -> str:
    """`build:session:3` → `build`; `session` → `session`."""
    return machine_id.split(":", 1)[0]


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


@attrs.define
class OrderFacts:
    order_id: str
    machine: str
    cycle: int | None
    product_id: int
    side: str
    qty: Decimal
    limit_price: Decimal
    purpose: str
    sent_ns: int
    ref_bid: Decimal | None = None  # touch at decision time
    ref_ask: Decimal | None = None
    ref_mid: Decimal | None = None  # the decision mid
    maker_notional: Decimal = ZERO  # filled as maker (fills heard with is_maker)
    first_fill_ns: int | None = None
    first_fill_source: str | None = None  # "stream" | "rest"
    detect_ns: int | None = None  # stream: engine ingress - venue match time
    ledger: Ledger | None = attrs.field(default=None, repr=False, eq=False)
    # (filled, notional, fees) as they stood when the order's cycle closed: the ledger
    # forgets old orders, a closed cycle's numbers stay.
    frozen: tuple[Decimal, Decimal, Decimal] | None = attrs.field(default=None, repr=False)
    in_cycle: CycleRecord | None = attrs.field(default=None, repr=False, eq=False)

    @property
    def is_entry(self) -> bool:
        return machine_kind(self.machine) in ENTRY_KINDS

    @property
    def record(self) -> OrderRecord | None:
        return self.ledger.order(self.order_id) if self.ledger is not None else None

    def freeze(self) -> None:
        self.frozen = (self.filled, self.notional, self.fees)

    @property
    def filled(self) -> Decimal:
        if self.frozen is not None:
            return self.frozen[0]
        rec = self.record
        return rec.filled if rec is not None else ZERO

    @property
    def avg_price(self) -> Decimal | None:
        filled = self.filled
        return self.notional / filled if filled else None

    @property
    def fees(self) -> Decimal:
        if self.frozen is not None:
            return self.frozen[2]
        rec = self.record
        return rec.fees if rec is not None else ZERO

    @property
    def notional(self) -> Decimal:
        if self.frozen is not None:
            return self.frozen[1]
        rec = self.record
        return rec.notional if rec is not None else ZERO

    @property
    def cash(self) -> Decimal:
        """Quote received (sell) or paid (buy, negative)."""
        return self.notional if self.side == "sell" else -self.notional

    @property
    def ref_price(self) -> Decimal | None:
        """The decision mid (None without a quote then)."""
        ref = self.ref_mid
        return ref if ref is not None and ref > 0 else None

    @property
    def slippage_usd(self) -> Decimal | None:
        """(average fill price - decision mid) x filled, for a sell the other way round:
        USD paid beyond the mid (negative: better than the mid)."""
        ref, filled = self.ref_price, self.filled
        if ref is None or not filled:
            return None
        at_mid = ref * filled
        return self.notional - at_mid if self.side == "buy" else at_mid - self.notional

    @property
    def slippage_bps(self) -> Decimal | None:
        ref, usd = self.ref_price, self.slippage_usd
        if ref is None or usd is None or not self.filled:
            return None
        return usd / (ref * self.filled) * BPS

    @property
    def fill_latency_ns(self) -> int | None:
        return None if self.first_fill_ns is None else self.first_fill_ns - self.sent_ns


@attrs.define
class LegSummary:
    symbol: str
    product_id: int
    entry_side: str = ""
    entry_qty: Decimal = ZERO
    entry_notional: Decimal = ZERO
    exit_qty: Decimal = ZERO
    exit_notional: Decimal = ZERO

    @property
    def entry_price(self) -> Decimal | None:
        return self.entry_notional / self.entry_qty if self.entry_qty else None

    @property
    def exit_price(self) -> Decimal | None:
        return self.exit_notional / self.exit_qty if self.exit_qty else None


@attrs.define
class CycleRecord:
    run: int
    cycle: int | None  # None: orders outside any cycle (restore-time or stop flattening)
    started_ns: int
    symbols: dict[int, str] = attrs.field(factory=dict)
    machines: list[str] = attrs.field(factory=list)
    orders: list[OrderFacts] = attrs.field(factory=list)
    built_ns: int | None = None
    unwind_ns: int | None = None
    ended_ns: int | None = None
    outcome: str = "open"
    last_mid: dict[int, Decimal] = attrs.field(factory=dict)
    hedge_ns: list[int] = attrs.field(factory=list)  # one-leg episodes its fills opened

    @property
    def label(self) -> str:
        return f"{self.run}.{self.cycle}" if self.cycle is not None else f"{self.run}.-"

    @property
    def closed(self) -> bool:
        return self.ended_ns is not None

    @property
    def direction(self) -> str:
        for o in self.orders:
            if o.is_entry:
                long = o.product_id if o.side == "buy" else None
                if long is not None:
                    return f"+{self._short(long)}"
                return f"-{self._short(o.product_id)}"
        return ""

    def _short(self, pid: int) -> str:
        return self.symbols.get(pid, str(pid)).removesuffix("-PERP")

    def legs(self) -> list[LegSummary]:
        legs: dict[int, LegSummary] = {
            pid: LegSummary(symbol=sym, product_id=pid) for pid, sym in self.symbols.items()
        }
        for o in self.orders:
            leg = legs.setdefault(
                o.product_id, LegSummary(symbol=str(o.product_id), product_id=o.product_id)
            )
            if o.is_entry:
                leg.entry_side = leg.entry_side or o.side
                leg.entry_qty += o.filled
                leg.entry_notional += o.notional
            else:
                leg.exit_qty += o.filled
                leg.exit_notional += o.notional
        return list(legs.values())

    @property
    def fees(self) -> Decimal:
        return sum((o.fees for o in self.orders), ZERO)

    @property
    def volume_usd(self) -> Decimal:
        return sum((o.notional for o in self.orders), ZERO)

    def residual(self) -> dict[int, Decimal]:
        out: dict[int, Decimal] = {}
        for o in self.orders:
            signed = o.filled if o.side == "buy" else -o.filled
            out[o.product_id] = out.get(o.product_id, ZERO) + signed
        return {pid: q for pid, q in out.items() if q}

    @property
    def gross_pnl(self) -> Decimal:
        cash = sum((o.cash for o in self.orders), ZERO)
        for pid, qty in self.residual().items():
            cash += qty * self.last_mid.get(pid, ZERO)
        return cash

    @property
    def net_pnl(self) -> Decimal:
        return self.gross_pnl - self.fees

    @property
    def pnl_bps(self) -> Decimal | None:
        vol = self.volume_usd
        return self.net_pnl / vol * BPS if vol else None

    @property
    def slippage_usd(self) -> Decimal:
        return sum((s for o in self.orders if (s := o.slippage_usd) is not None), ZERO)

    @property
    def maker_notional(self) -> Decimal:
        return sum((o.maker_notional for o in self.orders), ZERO)

    @property
    def maker_share(self) -> Decimal | None:
        vol = self.volume_usd
        return min(self.maker_notional / vol, Decimal(1)) if vol else None

    @property
    def cost_per_million_usd(self) -> Decimal | None:
        return cost_per_million(self.fees, self.slippage_usd, self.volume_usd)

    @property
    def one_leg_s(self) -> Decimal:
        return Decimal(sum(self.hedge_ns)) / NS_PER_S

    @property
    def hedge_max_s(self) -> Decimal | None:
        return Decimal(max(self.hedge_ns)) / NS_PER_S if self.hedge_ns else None

    @property
    def slippage_bps(self) -> Decimal | None:
        base = sum(
            ((o.ref_price or ZERO) * o.filled for o in self.orders if o.ref_price is not None),
            ZERO,
        )
        return self.slippage_usd / base * BPS if base else None

    @property
    def cycle_s(self) -> Decimal | None:
        if self.ended_ns is None:
            return None
        return Decimal(self.ended_ns - self.started_ns) / NS_PER_S

    @property
    def hold_s(self) -> Decimal:
        if self.built_ns is None or self.unwind_ns is None:
            return ZERO
        return Decimal(self.unwind_ns - self.built_ns) / NS_PER_S

    @property
    def active_s(self) -> Decimal | None:
        total = self.cycle_s
        return None if total is None else total - self.hold_s

    def fill_latencies_ms(self) -> list[Decimal]:
        return [
            Decimal(lat) / 1_000_000 for o in self.orders if (lat := o.fill_latency_ns) is not None
        ]

    @property
    def fill_latency_ms(self) -> Decimal | None:
        lats = self.fill_latencies_ms()
        return Decimal(statistics.median(lats)) if lats else None


@attrs.frozen
class AlertSeen:
    run: int
    ts_ns: int
    seq: int
    machine: str
    event: str
    severity: str
    message: str
    exposure_usd: Decimal | None
    state: str
    action: str


def p99_rank(n: int) -> int:
    """The nearest rank (1-based, ascending) of the 99th percentile of n values."""
    return math.ceil(Decimal(99) * n / 100) if n else 0


@attrs.define
class CostTotals:
    """The run's cost and one-leg numbers, added cycle by cycle (a live fold trims its
    cycles, these stay) and episode by episode. The hedge latencies are kept as a count
    per millisecond (memory stays flat over any number of episodes): their p99 is the
    nearest-rank p99 rounded up to the millisecond; total and max are exact."""

    volume: Decimal = ZERO
    fees: Decimal = ZERO
    slippage: Decimal = ZERO
    maker_notional: Decimal = ZERO
    one_leg_ns: int = 0
    episodes: int = 0
    max_ns: int = 0
    per_ms: dict[int, int] = attrs.field(factory=dict)  # ms (rounded up) → episodes

    def add_cycle(self, c: CycleRecord) -> None:
        self.volume += c.volume_usd
        self.fees += c.fees
        self.slippage += c.slippage_usd
        self.maker_notional += c.maker_notional

    def add_episode(self, ns: int) -> None:
        self.one_leg_ns += ns
        self.episodes += 1
        self.max_ns = max(self.max_ns, ns)
        ms = -(-ns // MS)
        self.per_ms[ms] = self.per_ms.get(ms, 0) + 1

    def p99_ns(self) -> int | None:
        if not self.episodes:
            return None
        rank, seen = p99_rank(self.episodes), 0
        for ms in sorted(self.per_ms):
            seen += self.per_ms[ms]
            if seen >= rank:
                return ms * MS
        raise AssertionError("unreachable: the counts add up to the episodes")

    def merged(self, cycles: Iterable[CycleRecord], open_ns: int | None) -> CostTotals:
        """These totals plus cycles not yet added and an episode still open."""
        out = CostTotals(
            self.volume,
            self.fees,
            self.slippage,
            self.maker_notional,
            self.one_leg_ns,
            self.episodes,
            self.max_ns,
            dict(self.per_ms),
        )
        for c in cycles:
            out.add_cycle(c)
        if open_ns is not None:
            out.add_episode(open_ns)
        return out

    def as_json(self) -> dict[str, Any]:
        """The summary JSON's cost keys (DESIGN.md §4), USD to the cent, seconds exact."""
        cpm = cost_per_million(self.fees, self.slippage, self.volume)
        p99 = self.p99_ns()
        cent = Decimal("0.01")
        return {
            "volume_usd": str(self.volume.quantize(cent)),
            "slippage_usd": str(self.slippage.quantize(Decimal("0.0001"))),
            "cost_per_million_usd": None if cpm is None else str(cpm.quantize(cent)),
            "maker_share": None
            if not self.volume
            else str(
                min(self.maker_notional / self.volume, Decimal(1)).quantize(Decimal("0.0001"))
            ),
            "one_leg_exposure_s": str(Decimal(self.one_leg_ns) / NS_PER_S),
            "one_leg_episodes": self.episodes,
            "hedge_latency_p99_s": None if p99 is None else str(Decimal(p99) / NS_PER_S),
            "hedge_latency_max_s": str(Decimal(self.max_ns) / NS_PER_S),
        }


@attrs.define
class Counters:
    orders: int = 0
    fills: int = 0
    duplicate_fills: int = 0
    rejects: int = 0
    rate_limited: int = 0
    venue_errors: int = 0
    reconnects: int = 0
    disconnects: int = 0
    emergency_exits: int = 0
    halts: int = 0
    bbo_rejected: int = 0


class RunFold:
    """The journal, folded. Feed records in order with `feed`; read the attributes.

    `ledger=None` keeps a replica ledger fed from the records (offline); pass the engine's
    ledger when folding live (the engine updates it itself, right after each record).
    A live fold leaves the armed deadlines to the engine (`deadlines` stays empty).
    """

    def __init__(
        self, ledger: Ledger | None = None, *, recent: int = 20, keep_cycles: int | None = None
    ) -> None:
        self._live_ledger = ledger
        self.replica = ledger is None
        self.ledger: Ledger = ledger if ledger is not None else Ledger()
        self.run = 0
        self.config: dict[str, Any] = {}
        self.symbols: dict[int, str] = {}
        self.states: dict[str, str] = {}  # live machines → last state entered
        self.finished: dict[str, str] = {}  # machine → outcome
        # machine → name → due ns (a fold of a file only: live, the engine has them)
        self.deadlines: dict[str, dict[str, int]] = {}
        self._generations: dict[tuple[str, str], int] = {}  # of the armed ones
        self.machine_cycle: dict[str, int | None] = {}
        # Offline (report) keeps every cycle; a live fold keeps the last `keep_cycles`
        # closed ones (memory stays flat over a long run) and counts outcomes.
        self.keep_cycles = keep_cycles
        self.cycles: list[CycleRecord] = []
        self.outcomes: dict[str, int] = {}
        self._open: dict[int, CycleRecord] = {}  # cycle number → open record (this run)
        self._outside: CycleRecord | None = None
        self.orders: dict[str, OrderFacts] = {}
        self.alerts: deque[AlertSeen] = deque(maxlen=recent)
        self.alerts_total = 0
        self.halt_reason: str | None = None
        self.halted = False
        self.resumed = False
        # Across runs: a HALT stays until an operator resumes (a session resume, or a
        # `dnpair run --resume` annotation); a restart alone does not clear it.
        self.sticky_halt: str | None = None
        self.ws_connected: bool | None = None
        self.counters = Counters()
        self.costs = CostTotals()  # closed cycles' costs, every one-leg episode
        self.tolerance_usd = ZERO
        self._moved: tuple[int, str] | None = None  # (ts, order) of a position move
        self._episode: tuple[int, CycleRecord | None] | None = None  # one leg alone since
        self.last_seq = 0
        self.last_ts = 0
        self.run_started_seq = 0
        self._check_ns: int | None = None
        # hooks for live consumers (metrics)
        self.on_cycle_closed: list[Callable[[CycleRecord], None]] = []
        self.on_order_filled: list[Callable[[OrderFacts], None]] = []
        self.on_alert: list[Callable[[AlertSeen], None]] = []

    # -- input ----------------------------------------------------------------------------
    def observe(self, seen: Observed) -> None:
        """A record as the engine journaled it (live: an engine observer)."""
        rec = seen.rec
        if self._moved is not None and rec.ts != self._moved[0]:
            self._one_leg()  # the earlier instant's moves are applied by now
        self.last_seq, self.last_ts = rec.seq, rec.ts
        data: Any = seen.data
        if rec.kind == "event":
            if data.get("kind") == "bbo_updated":
                if self.replica:
                    self._apply_to_replica(rec, data, seen.msg)
                return
            self._event(rec, data)
        elif rec.kind == "note":
            self._note(rec, data)
        elif rec.kind == "transition":
            self._transition(rec, data)
        elif rec.kind == "intent":
            self._intent(rec, data)
        if self.replica and rec.kind in ("event", "intent"):
            self._apply_to_replica(rec, data, seen.msg)

    def feed(self, rec: Record) -> None:
        """A record read back from a journal file: decoded once, then observed."""
        self.observe(Observed.of(rec))

    def feed_all(self, records: Iterable[Record]) -> RunFold:
        for rec in records:
            self.feed(rec)
        return self

    def _apply_to_replica(self, rec: Record, data: Any, msg: Message | None) -> None:
        if msg is None:
            try:
                msg = from_dict(data)
            except (ValueError, TypeError):
                return
        if rec.kind == "event":
            self.ledger.apply_event(msg, rec.ts)  # type: ignore[arg-type]
        else:
            self.ledger.apply_intent(msg)  # type: ignore[arg-type]

    # -- records ----------------------------------------------------------------------------
    def _note(self, rec: Record, data: dict[str, Any]) -> None:
        text = data.get("note")
        if rec.machine == "engine" and text == "run_started":
            self._new_run(rec, data)
        elif rec.machine == "engine" and text == "spawn":
            self._spawn(rec, data)
            self._deadlines(rec, data)
        elif rec.machine == "engine" and text == "finished":
            # a root machine (journal schema 4), or any machine in older journals (whose
            # `machine_finished` event then says it again: `_finished` is idempotent)
            self._finished(rec, str(data.get("machine")), str(data.get("outcome")))
        elif text in ("deadline armed", "deadline disarmed"):
            self._deadlines(rec, data)
        elif text == "operator resumed after halt":
            self.halted, self.halt_reason, self.resumed = False, None, True
            self.sticky_halt = None
        elif rec.machine == "ledger" and isinstance(text, str):
            if text.startswith("bbo rejected"):
                self.counters.bbo_rejected += 1
            elif text.startswith("duplicate fill"):
                self.counters.duplicate_fills += 1

    def _deadlines(self, rec: Record, data: dict[str, Any]) -> None:
        """Deadlines armed and disarmed: by a transition or a spawn (journal schema 4), or
        one per note (older journals). Only a fold of a file keeps them: live, the engine's
        own (`engine.deadlines`) are what the status reads."""
        if not self.replica:
            return
        changed = journaled_deadlines(rec.kind, rec.machine, data)
        if changed is None:
            return
        mid = changed.machine
        armed = self.deadlines.setdefault(mid, {})
        for name in changed.disarmed:
            armed.pop(name, None)
            self._generations.pop((mid, name), None)
        for entry in changed.armed:
            due, name = entry.get("due_ns"), str(entry.get("name"))
            if isinstance(due, int):
                armed[name] = due
                self._generations[(mid, name)] = int(entry.get("generation") or 0)
        if not armed:
            del self.deadlines[mid]

    def _expired(self, data: dict[str, Any]) -> None:
        """A current expiry consumes its deadline (as the engine's `Deadlines.take`); a
        stale one, of a deadline re-armed or disarmed since, changes nothing."""
        if not self.replica:
            return  # (live: not kept, as `_deadlines`)
        mid, name = str(data.get("target")), str(data.get("name"))
        if self._generations.get((mid, name)) != data.get("generation"):
            return
        del self._generations[(mid, name)]
        armed = self.deadlines.get(mid, {})
        armed.pop(name, None)
        if not armed:
            self.deadlines.pop(mid, None)

    def _new_run(self, rec: Record, data: dict[str, Any]) -> None:
        self._close_run()
        self.run += 1
        self.run_started_seq = rec.seq
        self.config = dict(data.get("config") or {})
        self.symbols = {
            int(leg["product_id"]): str(leg["symbol"]) for leg in self.config.get("legs", [])
        }
        settings = self.config.get("settings")
        size = settings.get("size_usd") if isinstance(settings, dict) else None
        self.tolerance_usd = exposure_tolerance_usd(Decimal(str(size))) if size else ZERO
        self._episode = None
        self.states.clear()
        self.deadlines.clear()
        self._generations.clear()
        self.machine_cycle.clear()
        self.halted, self.halt_reason, self.resumed = False, None, False
        self.ws_connected = None
        self._check_ns = None
        if self.replica:
            self.ledger = Ledger()
        elif self._live_ledger is not None:
            self.ledger = self._live_ledger

    def _close_run(self) -> None:
        for record in self._open.values():
            self._mark(record)
        self._open.clear()
        self._outside = None

    def _spawn(self, rec: Record, data: dict[str, Any]) -> None:
        mid = str(data.get("machine"))
        kind = machine_kind(mid)
        self.states[mid] = _initial_state(str(data.get("cls", "")))
        cycle = _spawn_cycle(data.get("params"))
        if kind == "build" and cycle is not None:
            start = self._check_ns if self._check_ns is not None else rec.ts
            record = CycleRecord(
                run=self.run, cycle=cycle, started_ns=start, symbols=dict(self.symbols)
            )
            self.cycles.append(record)
            self._open[cycle] = record
            self.machine_cycle[mid] = cycle
            record.machines.append(mid)
        elif kind in EXIT_KINDS and cycle is not None and cycle in self._open:
            self.machine_cycle[mid] = cycle
            record = self._open[cycle]
            record.machines.append(mid)
            if kind == "unwind":
                record.unwind_ns = rec.ts
        else:
            self.machine_cycle[mid] = None
        if kind == "exit":
            self.counters.emergency_exits += 1

    def _finished(self, rec: Record, mid: str, outcome: str) -> None:
        self.states.pop(mid, None)
        for name in self.deadlines.pop(mid, {}):
            self._generations.pop((mid, name), None)
        self.finished[mid] = outcome
        cycle = self.machine_cycle.get(mid)
        record = self._open.get(cycle) if cycle is not None else None
        if record is None:
            return
        kind = machine_kind(mid)
        if kind == "build":
            if outcome == "done":
                record.built_ns = rec.ts
                return
            if outcome == "aborted":
                self._close(record, rec.ts, "aborted")
            else:
                record.outcome = "failed"
            return
        final = {
            ("unwind", "done"): "completed",
            ("exit", "done"): "recovered",
            ("flatten", "done"): "flattened",
            ("exit", "failed"): "halted",  # an exhausted emergency exit HALTs
            ("flatten", "failed"): "halted",
        }.get((kind, outcome))
        if final is not None:
            self._close(record, rec.ts, final)
        else:
            record.outcome = "failed"

    def _close(self, record: CycleRecord, ts: int, outcome: str) -> None:
        record.ended_ns, record.outcome = ts, outcome
        self._mark(record)
        for o in record.orders:
            o.freeze()
        self.costs.add_cycle(record)
        if record.cycle is not None:
            self._open.pop(record.cycle, None)
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        for hook in self.on_cycle_closed:
            hook(record)
        if self.keep_cycles is not None:
            self._trim()

    def _trim(self) -> None:
        assert self.keep_cycles is not None
        if len(self.cycles) <= self.keep_cycles:
            return  # no more closed ones than that (the check below, without the scan)
        closed = [c for c in self.cycles if c.closed]
        if len(closed) <= self.keep_cycles:
            return
        drop = {id(c) for c in closed[: len(closed) - self.keep_cycles]}
        for c in self.cycles:
            if id(c) in drop:
                for o in c.orders:
                    self.orders.pop(o.order_id, None)
        self.cycles = [c for c in self.cycles if id(c) not in drop]
        if len(self.finished) > 4 * self.keep_cycles:
            for mid in list(self.finished)[: len(self.finished) - 2 * self.keep_cycles]:
                del self.finished[mid]
        for mid in [m for m in self.machine_cycle if m not in self.states][:-16]:
            del self.machine_cycle[mid]

    def _mark(self, record: CycleRecord) -> None:
        for pid in record.symbols:
            quote = self.ledger.quote(pid)
            if quote is not None:
                record.last_mid[pid] = quote.mid

    def _transition(self, rec: Record, data: dict[str, Any]) -> None:
        if "armed" in data or "disarmed" in data:
            self._deadlines(rec, data)
        to = data.get("to")
        if to is None:
            return
        self.states[rec.machine] = str(to)
        if rec.machine == "session":
            if to == "checking":
                self._check_ns = rec.ts
            elif to == "halted":
                self.halted = True
                self.sticky_halt = self.halt_reason or "halted"
            elif data.get("from") == "halted":
                self.halted, self.halt_reason = False, None

    def _intent(self, rec: Record, data: dict[str, Any]) -> None:
        kind = data.get("kind")
        if kind == "place_order":
            self.counters.orders += 1
            pid = int(data["product_id"])
            quote = self.ledger.quote(pid)  # the ledger's quote at decision time
            cycle = self.machine_cycle.get(rec.machine)
            facts = OrderFacts(
                order_id=str(data["order_id"]),
                machine=rec.machine,
                cycle=cycle,
                product_id=pid,
                side=str(data["side"]),
                qty=Decimal(str(data["qty"])),
                limit_price=Decimal(str(data["price"])),
                purpose=str(data.get("purpose", "")),
                sent_ns=rec.ts,
                ref_bid=quote.bid if quote is not None else None,
                ref_ask=quote.ask if quote is not None else None,
                ref_mid=mid_of(quote),
                ledger=self.ledger,
            )
            self.orders[facts.order_id] = facts
            facts.in_cycle = self._cycle_for(cycle, rec.ts)
            facts.in_cycle.orders.append(facts)
        elif kind == "halt":
            self.halted = True
            self.halt_reason = str(data.get("reason", ""))
            self.sticky_halt = self.halt_reason or "halted"
            self.counters.halts += 1
        elif kind == "send_alert":
            alert = AlertSeen(
                run=self.run,
                ts_ns=rec.ts,
                seq=rec.seq,
                machine=rec.machine,
                event=str(data.get("event", "")),
                severity=str(data.get("severity", "")),
                message=str(data.get("message", "")),
                exposure_usd=_dec(data.get("exposure_usd")),
                state=str(data.get("state", "")),
                action=str(data.get("action", "")),
            )
            self.alerts.append(alert)
            self.alerts_total += 1
            for hook in self.on_alert:
                hook(alert)

    def _cycle_for(self, cycle: int | None, ts: int) -> CycleRecord:
        if cycle is not None and cycle in self._open:
            return self._open[cycle]
        if self._outside is None or self._outside.run != self.run:
            self._outside = CycleRecord(
                run=self.run, cycle=None, started_ns=ts, symbols=dict(self.symbols)
            )
            self._outside.outcome = "outside"
            self.cycles.append(self._outside)
        return self._outside

    def _event(self, rec: Record, data: dict[str, Any]) -> None:
        kind = data.get("kind")
        if kind == "machine_finished":  # the engine's: a machine ended (to its parent)
            self._finished(rec, str(data.get("machine")), str(data.get("outcome")))
            return
        if kind == "deadline_expired":
            self._expired(data)
            return
        if kind in _MOVES and (kind == "fill_received" or data.get("filled_qty")):
            self._moved = (rec.ts, str(data.get("order_id")))
        if kind == "fill_received":
            self.counters.fills += 1
            facts = self.orders.get(str(data.get("order_id")))
            if facts is not None and data.get("is_maker") and self._new_fill(data):
                qty, px = Decimal(str(data["qty"])), Decimal(str(data["price"]))
                facts.maker_notional += qty * px
            if facts is not None and facts.first_fill_ns is None:
                facts.first_fill_ns, facts.first_fill_source = rec.ts, "stream"
                venue_ts = data.get("ts_venue_ns")
                if isinstance(venue_ts, int):
                    facts.detect_ns = rec.ts - venue_ts
                for hook in self.on_order_filled:
                    hook(facts)
        elif kind == "order_status":
            facts = self.orders.get(str(data.get("order_id")))
            filled = _dec(data.get("filled_qty")) or ZERO
            if facts is not None and facts.first_fill_ns is None and filled > 0:
                facts.first_fill_ns, facts.first_fill_source = rec.ts, "rest"
                for hook in self.on_order_filled:
                    hook(facts)
        elif kind == "order_rejected":
            self.counters.rejects += 1
        elif kind == "venue_error":
            self.counters.venue_errors += 1
            if data.get("error_class") == "rate_limited":
                self.counters.rate_limited += 1
        elif kind == "connection_changed" and data.get("channel") == "ws":
            up = data.get("state") == "connected"
            if up and self.ws_connected is False:
                self.counters.reconnects += 1
            if not up and self.ws_connected is not False:
                self.counters.disconnects += 1
            self.ws_connected = up

    def _new_fill(self, data: dict[str, Any]) -> bool:
        """Not a duplicate (the ledger applies the record after its observers)."""
        order = self.ledger.order(str(data.get("order_id")))
        return order is None or str(data.get("fill_id")) not in order.fill_ids

    def _one_leg(self) -> None:
        """After a position move: one leg alone starts or ends (engine time)."""
        assert self._moved is not None
        ts, oid = self._moved
        self._moved = None
        pids = list(self.symbols)
        exposure = unhedged_usd(
            {pid: self.ledger.position(pid) for pid in pids},
            {pid: mid_of(self.ledger.quote(pid)) for pid in pids},
        )
        alone = exposure > self.tolerance_usd
        if alone and self._episode is None:
            facts = self.orders.get(oid)
            self._episode = (ts, facts.in_cycle if facts is not None else None)
        elif not alone and self._episode is not None:
            since, record = self._episode
            self._episode = None
            self.costs.add_episode(ts - since)
            if record is not None:
                record.hedge_ns.append(ts - since)

    def cost_totals(self) -> CostTotals:
        """The run's costs: closed cycles, plus the cycles still open (and orders outside
        any cycle) as they stand, plus a one-leg episode still open up to the last record."""
        if self._moved is not None:
            self._one_leg()
        open_ns = None if self._episode is None else self.last_ts - self._episode[0]
        return self.costs.merged([c for c in self.cycles if not c.closed], open_ns)

    # -- reading ------------------------------------------------------------------------------
    def finish(self) -> RunFold:
        """Mark still-open cycles with the last known mids (offline reports)."""
        if self._moved is not None:
            self._one_leg()
        for record in self.cycles:
            if not record.closed or not record.last_mid:
                self._mark(record)
        return self

    @property
    def traded_cycles(self) -> list[CycleRecord]:
        return [c for c in self.cycles if c.orders or c.cycle is not None]


def fold_records(records: Iterable[Record]) -> RunFold:
    return RunFold().feed_all(records).finish()
