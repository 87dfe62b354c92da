"""Invariants a simulated session must keep, checked against the sim venue's ground truth.

`InvariantChecker` watches every journal record (an engine observer) and the state after
every engine step, then checks the session at rest. Each check is named after the
promise it guards (chaos runs report violations by these names):

- `exposure`   (a) |Σ position x mid| at the venue above the tolerance (5 % of the
                   notional) for longer than the exit budget plus slack while nothing is
                   flagged (no emergency exit running, no HALT);
- `fills`      (b) every delivered fill exists at the venue and matches it; the ledger
                   applied each fill id once (per order: filled = the venue's cumulative
                   amount of the fills it heard of), never more than the order's size, never
                   more than the venue filled; a fill for an order the engine never
                   placed is alerted (`unknown_order_fill`) and no BUILD follows it;
- `at_rest`    (c) after the session and a settle period: the ledger's fill-derived
                   positions equal the venue's, except for fills the venue pushed and the
                   stream lost (counted separately as drift); the venue is flat with no
                   open order, unless the session halted and its HALT stated the exposure;
- `duration`   (d) every child machine ends within its own deadlines plus escalation
                   budget (bounds derived from the run's CycleParams, see `MachineBounds`),
                   and while alive always has a deadline armed;
- `verified`   (e) no machine ends `built`/`flat` except on a position answer to a query
                   it sent after its last order (for `flat`: the answer shows dust only);
- `replay`     (f) the journal replays identically through fresh machines;
- `order_ids`  (g) no PlaceOrder reuses an order id; exits are reduce-only; no order after
                   a HALT;
- `flat_claims`  (h) nothing claims flat against the fills the venue reported: no machine
                   ends `flat` and the summary never says `flat: true` while the fills the
                   engine was told of (pushes and the venue's cumulative words) add up to more
                   than dust on a leg (issue 11: a lagging position read is not "flat");
- `terminated`     the session finished (no machine error, no stall past the time limit).

Nothing here reads a wall clock: times are the engine's (virtual) nanoseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any
from typing import Protocol

import attrs

from engine.core.clock import NS_PER_S
from engine.core.events import FillReceived
from engine.core.flatness import is_dust
from engine.core.flatness import unhedged_usd
from engine.core.journal import Record
from engine.core.loop import Engine
from engine.core.replay import replay_records
from engine.harness.machine_bounds import MachineBounds
from engine.runtime.app import cycle_template

__all__ = [
    "INVARIANTS",
    "InvariantChecker",
    "MachineBounds",
    "RunFacts",
    "TruthVenue",
    "Violation",
]

ZERO = Decimal(0)
INVARIANTS = (
    "exposure",
    "fills",
    "at_rest",
    "duration",
    "verified",
    "replay",
    "order_ids",
    "flat_claims",
    "terminated",
)
EXIT_PURPOSES = ("unwind", "unwind market", "emergency")
BOUNDED = ("build", "unwind", "exit", "flatten", "restore")  # machines that must never idle
WORK_KINDS = ("build", "unwind", "exit", "flatten")  # position-work machines (ids)


class TruthVenue(Protocol):
    """The ground-truth accessors of the sim venue (adapters/sim/venue.py)."""

    def position(self, product: str | int) -> Decimal: ...

    def mid(self, product: str | int) -> Decimal: ...

    def fills(self) -> list[FillReceived]: ...

    def open_orders(self) -> list[Any]: ...


@attrs.frozen
class Violation:
    invariant: str
    message: str
    t_ns: int
    record: Record | None = None

    def describe(self) -> str:
        where = f"t={Decimal(self.t_ns) / NS_PER_S:.3f}s"
        text = f"[{self.invariant}] {where}: {self.message}"
        if self.record is not None:
            r = self.record
            text += f"\n    first bad record: seq={r.seq} {r.kind} [{r.machine}] {r.payload}"
        return text


@attrs.define
class _Machine:
    spawned_ns: int
    cls: str
    finished_ns: int | None = None
    outcome: str | None = None
    last_order_seq: int = 0
    queries: dict[str, int] = attrs.field(factory=dict)  # request id → intent seq


@attrs.define
class RunFacts:
    """What a run did, for the report (not pass/fail)."""

    cycle_s: list[Decimal] = attrs.field(factory=list)
    max_unflagged_s: Decimal = ZERO
    max_unhedged_usd: Decimal = ZERO
    lost_fills: int = 0
    drift: dict[str, str] = attrs.field(factory=dict)  # product → venue - ledger, at rest
    halted: bool = False
    halt_reason: str = ""
    halt_exposure_usd: Decimal = ZERO
    flat_at_rest: bool = False


class InvariantChecker:
    """Observe an engine run against the venue's ground truth; collect violations."""

    def __init__(
        self,
        engine: Engine,
        truth: TruthVenue,
        *,
        retry_after_s: Decimal = ZERO,
        session_id: str = "session",
    ) -> None:
        """Tolerances, products and bounds come from the run's journal header, as the
        app builds its machines from it."""
        self.engine = engine
        self.truth = truth
        self.retry_after_s = retry_after_s
        self.session_id = session_id
        self.products: list[int] = []
        self.tolerance = ZERO
        self.dust = ZERO
        self.bounds: MachineBounds | None = None
        self.violations: list[Violation] = []
        self.facts = RunFacts()
        self.last: Record | None = None
        self._last_event: Record | None = None
        self._order_ids: set[str] = set()
        self._machines: dict[str, _Machine] = {}
        self._truth_fills: dict[str, FillReceived] = {}
        self._delivered: dict[str, dict[str, tuple[Decimal, Decimal]]] = {}
        self._word: dict[str, Decimal] = {}  # order → the venue's largest cumulative word
        self._meta: dict[str, tuple[str, int, Decimal | None]] = {}  # order → side, product, size
        self._unknown_fill: Record | None = None  # the first fill for an order never placed
        self._unknown_alerted = False
        self._touched: set[str] = set()
        self._halt_seq: int | None = None
        self._exposed_since: int | None = None
        self._reported_episode: int | None = None
        self._cycle_start: int | None = None
        self._seen_violation: set[str] = set()

    # -- reporting ----------------------------------------------------------------------
    def fail(self, invariant: str, message: str, record: Record | None = None) -> None:
        # Keep the first few of each kind: the first bad record is what matters.
        key = f"{invariant}:{message[:40]}"
        if key in self._seen_violation:
            return
        self._seen_violation.add(key)
        # Without a better one, the latest record: where the run stood when it was seen.
        record = record if record is not None else self.last
        self.violations.append(Violation(invariant, message, self.engine.now_ns, record))

    @property
    def ok(self) -> bool:
        return not self.violations

    # -- every record -------------------------------------------------------------------
    def observe(self, rec: Record) -> None:
        self.last = rec
        kind = rec.kind
        if kind == "event":
            if '"bbo_updated"' in rec.payload:
                return
            self._last_event = rec
            if '"fill_received"' in rec.payload:
                self._on_fill(rec, rec.data)
            elif '"filled_qty"' in rec.payload:
                self._on_word(rec.data)
            elif rec.machine == "engine" and '"machine_finished"' in rec.payload:
                self._on_finished(rec, rec.data)
            return
        if kind == "intent":
            self._on_intent(rec, rec.data)
        elif kind == "transition":
            self._on_transition(rec, rec.data)
        elif kind == "note" and rec.machine == "engine":
            data = rec.data
            note = data.get("note")
            if note == "run_started":
                self._configure(data.get("config") or {})
            elif note == "spawn":
                self._machines[str(data["machine"])] = _Machine(rec.ts, str(data.get("cls")))
                params = data.get("params") or {}
                building = isinstance(params, dict) and params.get("purpose") == "build"
                if building and self._unknown_fill is not None:
                    self.fail("fills", "a BUILD started after a fill for an unknown order", rec)
            elif note == "finished":  # a root machine (a child's is its machine_finished)
                self._on_finished(rec, data)
        elif kind == "note" and rec.machine == "ledger":
            text = str(rec.data.get("note", ""))
            if text.startswith("overfill"):
                self.fail("fills", f"ledger: {text}", rec)
            elif "unknown order" in text and self._unknown_fill is None:
                self._unknown_fill = rec  # must be alerted, and no BUILD may follow

    def _configure(self, config: dict[str, Any]) -> None:
        p = cycle_template(config)
        self.products = list(p.product_ids)
        self.tolerance = p.exposure_tolerance_usd
        self.dust = p.dust_usd
        self.bounds = MachineBounds(p, retry_after_s=self.retry_after_s)

    def _on_intent(self, rec: Record, data: dict[str, Any]) -> None:
        kind = data.get("kind")
        if kind == "place_order":
            oid = str(data["order_id"])
            if oid in self._order_ids:
                self.fail("order_ids", f"order id {oid} sent twice", rec)
            self._meta[oid] = (
                str(data["side"]),
                int(data["product_id"]),
                Decimal(str(data["qty"])),
            )
            self._order_ids.add(oid)
            if data.get("purpose") in EXIT_PURPOSES and not data.get("reduce_only"):
                self.fail("order_ids", f"exit order {oid} is not reduce-only", rec)
            if self._halt_seq is not None:
                self.fail("order_ids", f"order {oid} placed after the HALT", rec)
            m = self._machines.get(rec.machine)
            if m is not None:
                m.last_order_seq = rec.seq
        elif kind == "query_positions":
            m = self._machines.get(rec.machine)
            if m is not None:
                m.queries[str(data["request_id"])] = rec.seq
        elif kind == "send_alert" and data.get("event") == "unknown_order_fill":
            self._unknown_alerted = True
        elif kind == "halt" and self._halt_seq is None:
            self._halt_seq = rec.seq
            self.facts.halted = True
            self.facts.halt_reason = str(data.get("reason", ""))
            self.facts.halt_exposure_usd = Decimal(str(data.get("exposure_usd", "0")))

    def _on_transition(self, rec: Record, data: dict[str, Any]) -> None:
        to = data.get("to")
        if rec.machine == self.session_id:
            if to == "building":
                self._cycle_start = rec.ts
            elif to in ("idle", "halted", "finishing", "done") and self._cycle_start is not None:
                self.facts.cycle_s.append(Decimal(rec.ts - self._cycle_start) / NS_PER_S)
                self._cycle_start = None
            return
        kind = rec.machine.split(":", 1)[0]
        if to == "done" and kind in WORK_KINDS:
            # BUILD ends done at target; UNWIND and the exits end done flat.
            self._check_verified(rec, "built" if kind == "build" else "flat")

    def _check_verified(self, rec: Record, outcome: str) -> None:
        m = self._machines.get(rec.machine)
        ev = self._last_event
        if m is None:
            return
        if ev is None or '"position_snapshot"' not in ev.payload:
            self.fail("verified", f"{rec.machine} ended {outcome} without a position answer", rec)
            return
        data = ev.data
        rid = str(data.get("request_id") or "")
        sent = m.queries.get(rid)
        if sent is None:
            self.fail("verified", f"{rec.machine} ended {outcome} on someone else's answer", rec)
        elif sent < m.last_order_seq:
            self.fail(
                "verified",
                f"{rec.machine} ended {outcome} on a query sent before its last order",
                rec,
            )
        if outcome == "flat":
            self.check_flat_claim(f"{rec.machine} ended flat", rec)
            for pos in data.get("positions", ()):
                said = Decimal(str(pos["qty"]))
                if not is_dust(said, self.truth.mid(int(pos["product_id"])), self.dust):
                    self.fail(
                        "verified", f"{rec.machine} ended flat on an answer showing {pos}", ev
                    )

    def _on_finished(self, rec: Record, data: dict[str, Any]) -> None:
        mid = str(data["machine"])
        m = self._machines.get(mid)
        if m is None:
            return
        m.finished_ns, m.outcome = rec.ts, str(data.get("outcome"))
        limit = self.bounds.for_machine(mid) if self.bounds is not None else None
        took = Decimal(rec.ts - m.spawned_ns) / NS_PER_S
        if limit is not None and took > limit:
            self.fail("duration", f"{mid} took {took}s (bound {limit}s)", rec)

    def _on_fill(self, rec: Record, data: dict[str, Any]) -> None:
        fid, oid = str(data["fill_id"]), str(data["order_id"])
        truth = self._truth_fill(fid)
        if truth is None:
            self.fail("fills", f"fill {fid} is not a fill the venue made", rec)
            return
        same = (
            truth.order_id == oid
            and truth.qty == Decimal(str(data["qty"]))
            and truth.side == data["side"]
            and truth.product_id == int(data["product_id"])
        )
        if not same:
            self.fail("fills", f"fill {fid} differs from the venue's record {truth}", rec)
        qty = Decimal(str(data["qty"]))
        self._meta.setdefault(oid, (str(data["side"]), int(data["product_id"]), None))
        cumulative = data.get("cumulative_qty")
        total = Decimal(str(cumulative)) if cumulative is not None else ZERO
        self._delivered.setdefault(oid, {}).setdefault(fid, (qty, total))
        self._touched.add(oid)

    def _heard_total(self, order_id: str) -> Decimal:
        """The most the engine was told about an order's fill: unique fills or a total."""
        seen = self._delivered.get(order_id, {})
        heard = sum((q for q, _ in seen.values()), ZERO)
        said = max([c for _, c in seen.values()] + [self._word.get(order_id, ZERO)])
        return max(heard, said)

    def _on_word(self, data: dict[str, Any]) -> None:
        """A cancel/expiry ack or an order status: the venue's word on the total filled."""
        oid, filled = data.get("order_id"), data.get("filled_qty")
        if oid is None or filled is None:
            return
        word = Decimal(str(filled))
        if word > self._word.get(str(oid), ZERO):
            self._word[str(oid)] = word
            self._touched.add(str(oid))

    def _truth_fill(self, fill_id: str) -> FillReceived | None:
        if fill_id not in self._truth_fills:
            self._truth_fills = {f.fill_id: f for f in self.truth.fills()}
        return self._truth_fills.get(fill_id)

    def reported_position(self, product_id: int) -> Decimal:
        """The position the fills the venue reported add up to (pushes heard and the
        venue's cumulative words on its orders), from zero at the start of the run."""
        total = ZERO
        for oid, (side, pid, size) in self._meta.items():
            if pid != product_id:
                continue
            filled = self._heard_total(oid)
            if size is not None:
                filled = min(filled, size)
            total += filled if side == "buy" else -filled
        return total

    def check_flat_claim(self, who: str, record: Record | None = None) -> None:
        """(h) a flat claim must not contradict the fills the venue reported."""
        for pid in self.products:
            qty = self.reported_position(pid)
            usd = abs(qty) * self.truth.mid(pid)
            if not is_dust(qty, self.truth.mid(pid), self.dust):
                self.fail(
                    "flat_claims",
                    f"{who} while the reported fills hold {qty} on product {pid} ({usd:.2f} USD)",
                    record,
                )

    # -- every step ---------------------------------------------------------------------
    def after_step(self) -> None:
        if self._touched:
            self._check_orders(self._touched)
            self._touched = set()
        self._check_exposure()
        self._check_waits()

    def _check_waits(self) -> None:
        """Every live cycle machine waits under an armed deadline (no unbounded wait)."""
        engine = self.engine
        for mid, machine in engine.machines.items():
            if mid.split(":", 1)[0] in BOUNDED and not engine.deadlines.armed_for(mid):
                self.fail("duration", f"{mid} waits in {machine.state_ids} with no deadline")

    def _check_orders(self, order_ids: Iterable[str]) -> None:
        ledger = self.engine.ledger
        for oid in order_ids:
            order = ledger.order(oid)
            if order is None:
                continue  # reported by the ledger note (unknown order)
            seen = self._delivered.get(oid, {})
            # Exactly once: the unique fills heard or the venue's cumulative word, the larger.
            expected = min(self._heard_total(oid), order.qty)
            truth_filled = sum((f.qty for f in self._fills_of(oid)), ZERO)
            if order.filled > truth_filled:  # the index may be behind the venue: refresh
                self._truth_fills = {f.fill_id: f for f in self.truth.fills()}
                truth_filled = sum((f.qty for f in self._fills_of(oid)), ZERO)
            if order.filled != expected:
                self.fail(
                    "fills",
                    f"order {oid}: ledger filled {order.filled}, fills heard and the venue's "
                    f"word say {expected}",
                    self.last,
                )
            if order.filled > order.qty or order.filled > truth_filled:
                self.fail(
                    "fills",
                    f"order {oid}: ledger filled {order.filled} > size {order.qty} "
                    f"or venue filled {truth_filled}",
                    self.last,
                )
            if order.fill_ids != set(seen):
                self.fail("fills", f"order {oid}: ledger fill ids differ from those heard")

    def _fills_of(self, order_id: str) -> list[FillReceived]:
        return [f for f in self._truth_fills.values() if f.order_id == order_id]

    def unhedged_usd(self) -> Decimal:
        return unhedged_usd(
            {pid: self.truth.position(pid) for pid in self.products},
            {pid: self.truth.mid(pid) for pid in self.products},
        )

    def flagged(self) -> bool:
        if self._halt_seq is not None:
            return True
        states = self.engine.ledger.state_of(self.session_id)
        return "recovering" in states or "halted" in states

    def _check_exposure(self) -> None:
        now = self.engine.now_ns
        usd = self.unhedged_usd()
        self.facts.max_unhedged_usd = max(self.facts.max_unhedged_usd, usd)
        if usd <= self.tolerance or self.flagged():
            self._exposed_since = None
            return
        if self._exposed_since is None:
            self._exposed_since = now
            return
        took = Decimal(now - self._exposed_since) / NS_PER_S
        self.facts.max_unflagged_s = max(self.facts.max_unflagged_s, took)
        limit = self.bounds.exposure_limit() if self.bounds is not None else None
        if limit is not None and took > limit and self._reported_episode != self._exposed_since:
            self._reported_episode = self._exposed_since  # once per episode
            self.fail(
                "exposure",
                f"unhedged {usd:.2f} USD (> {self.tolerance}) for {took}s unflagged "
                f"(limit {limit}s)",
                self.last,
            )

    # -- at rest ------------------------------------------------------------------------
    def check_at_rest(self) -> None:
        """After the session ended and everything in flight was delivered."""
        self._truth_fills = {f.fill_id: f for f in self.truth.fills()}
        self._check_orders(self.engine.ledger.orders)
        self._check_positions()
        self._check_flat()
        self._check_unfinished()
        if self._unknown_fill is not None and not self._unknown_alerted:
            self.fail("fills", "a fill for an unknown order was never alerted", self._unknown_fill)

    def _check_positions(self) -> None:
        ledger = self.engine.ledger
        missing: dict[int, Decimal] = {}
        gaps: dict[int, list[str]] = {}
        lost = 0
        for f in self._truth_fills.values():
            order = ledger.order(f.order_id)
            heard = order is not None and f.fill_id in order.fill_ids
            if not heard:
                lost += 1
        unheard: dict[int, Decimal] = {}
        for oid, order in ledger.orders.items():
            truth_filled = sum((f.qty for f in self._fills_of(oid)), ZERO)
            gap = truth_filled - order.filled
            if gap:
                signed = gap if order.side == "buy" else -gap
                pid = order.product_id
                missing[pid] = missing.get(pid, ZERO) + signed
                gaps.setdefault(pid, []).append(f"{oid} {signed:+} ({order.state})")
            never = truth_filled - min(self._heard_total(oid), truth_filled)
            if never:
                pid = order.product_id
                unheard[pid] = unheard.get(pid, ZERO) + (never if order.side == "buy" else -never)
        self.facts.lost_fills = lost
        for pid in self.products:
            venue, book = self.truth.position(pid), ledger.position(pid)
            total = (
                sum(
                    (o.filled if o.side == "buy" else -o.filled)
                    for o in ledger.orders.values()
                    if o.product_id == pid
                )
                + sum(
                    (f.qty if f.side == "buy" else -f.qty)
                    for f in ledger.unknown_fills
                    if f.product_id == pid
                )
                + ledger.book(pid).adopted
            )  # restore adopts the venue's word
            if total != book:
                self.fail("fills", f"product {pid}: ledger position {book} != its orders' {total}")
            if venue == book:
                continue
            self.facts.drift[str(pid)] = str(venue - book)
            if venue - book == unheard.get(pid, ZERO):
                # Only fills the engine never heard of, by push or by the venue's word on an
                # order's total (pushes lost, every query refused): reported as drift.
                continue
            self.fail(
                "at_rest",
                f"product {pid}: venue {venue}, ledger {book} "
                f"({missing.get(pid, ZERO)} filled at the venue, never known to the ledger: "
                f"{', '.join(gaps.get(pid, [])[:4]) or 'no order'})",
            )

    def _check_flat(self) -> None:
        gross = ZERO
        open_legs = []
        for pid in self.products:
            usd = abs(self.truth.position(pid)) * self.truth.mid(pid)
            gross += usd
            if not is_dust(self.truth.position(pid), self.truth.mid(pid), self.dust):
                open_legs.append(f"{pid}: {self.truth.position(pid)}")
        orders = [o for o in self.truth.open_orders() if o.product_id in self.products]
        self.facts.flat_at_rest = not open_legs and not orders
        if self.facts.halted:
            stated = self.facts.halt_exposure_usd
            if open_legs and gross > max(self.tolerance, 2 * self.dust) and stated < gross / 2:
                self.fail(
                    "at_rest",
                    f"halted stating {stated} USD open, the venue holds {gross:.2f} USD "
                    f"({', '.join(open_legs)})",
                )
            return
        if open_legs:
            self.fail("at_rest", f"not halted, venue not flat: {', '.join(open_legs)}")
        if orders:
            self.fail("at_rest", f"not halted, {len(orders)} order(s) still open at the venue")

    def _check_unfinished(self) -> None:
        for mid, m in self._machines.items():
            limit = self.bounds.for_machine(mid) if self.bounds is not None else None
            if m.finished_ns is None and limit is not None:
                took = Decimal(self.engine.now_ns - m.spawned_ns) / NS_PER_S
                if took > limit:
                    self.fail("duration", f"{mid} never finished ({took}s, bound {limit}s)")

    def check_replay(self, records: list[Record]) -> None:
        result = replay_records(records)
        if not result.ok:
            assert result.divergence is not None
            d = result.divergence
            lines = d.describe().splitlines()
            text = f"{lines[0]} replayed as {lines[-1].split(':', 1)[-1].strip()[:300]}"
            self.fail("replay", text, d.expected or d.actual)
