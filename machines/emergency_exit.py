"""EMERGENCY EXIT: flatten any exposure on the pair's two products, fast and bounded.

Every attempt first re-reads the venue position, then sends reduce-only IOCs for the
open amount priced through the book by the ladder step `exit_ladder_bps[k]` (k is the
attempt index, capped at the last step), sliced by `max_slice_usd`, under
`exit_attempt_timeout_s`; unfilled orders are cancelled on that deadline. A placement
with an unknown outcome is resolved by QueryOrder before anything is resent. An attempt
the venue refused outright (rate limited, retryable) does not count: the machine backs
off (the venue's Retry-After, else exponentially from `exit_backoff_s`) and reads again,
a bounded number of times. The whole exit lives under one budget timer, armed once on
entry to the parent state `exiting`, so attempts never reset it (seed 004, BUG-003).

An answer that contradicts the engine's own verified fills (a lagging position feed)
is asked again, a bounded number of times, before it is believed: a stale "flat" must
never end the exit. The attempt limit (`exit_attempts`) counts attempts after which the
venue showed no less exposure; attempts that did reduce it go on up the ladder (capped at
its last step) within the budget, up to a hard cap of 3 x `exit_attempts`.

Ends `flat` only on a venue position answer within dust on both legs. Budget or attempts
exhausted → Halt and a critical alert, both stating the open exposure → `exhausted`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.core.events import DeadlineExpired
from engine.core.events import PositionSnapshot
from engine.core.intents import Halt
from engine.core.intents import QueryMarketPrices
from engine.core.intents import SendAlert
from machines.base import PureMachine
from machines.base import State
from machines.params import CycleParams
from machines.policy import WorkPolicy
from machines.pricing import OrderRounds
from machines.pricing import absurd_legs
from machines.pricing import notional

ZERO = Decimal(0)
USD = Decimal("0.01")
STALE_READS = 2  # re-asks per read when the position answer contradicts our fills


class EmergencyExitMachine(OrderRounds, PureMachine):
    """EMERGENCY EXIT: (read → reduce-only IOC up the slippage ladder)* under one total budget.

    Ends `flat` (venue-verified) or `exhausted` (Halt + critical alert with the exposure).
    """

    reading = State(initial=True)
    working = State()
    cancelling = State()
    backing_off = State()
    exiting = State(states=[reading, working, cancelling, backing_off], initial=True)
    flat = State(final=True)
    exhausted = State(final=True)

    # An attempt ends when its orders are settled; refused outright, it does not count.
    # Nothing to price an exit with (no quote yet, e.g. right after a restart): ask the
    # venue for one and back off; not an attempt (crash test: after_send_before_ack).
    working.to(backing_off, cond="waiting_for_quote")
    working.to(backing_off, cond="round_refused")
    working.to(reading, cond="round_settled")
    cancelling.to(reading, cond="round_settled")

    position_snapshot = (
        # Far beyond anything the engine could have opened (e.g. 1e6 ETH): not traded
        # slice by slice; HALT with the exposure stated (issue 11 item 6).
        reading.to(exhausted, cond=["answers_me", "absurd_position"], on="take_absurd")
        # An answer that lacks fills the venue reported lags (issue 11): ask again,
        # backing off, within the lag budget; the session stays flagged meanwhile.
        # Legs whose read agrees with the fills are flattened meanwhile (not the lagging
        # ones), within the budget.
        | reading.to(
            working, cond=["answers_me", "read_lags", "agreeing_leg_open"], on="take_agreeing"
        )
        | reading.to(None, cond=["answers_me", "read_lags"], on="wait_for_lag")
        # Past the lag budget, an answer that still contradicts our fills: a bounded
        # re-ask (the old "stale feed" rule) before it is judged.
        | reading.to(None, cond=["answers_me", "stale_suspected"], on="recheck_stale")
        | reading.to(flat, cond=["answers_me", "venue_flat", "read_agrees"], on="take_positions")
        # Flat by the read, open by the reported fills: never "flat"; HALT stating both.
        | reading.to(exhausted, cond=["answers_me", "venue_flat"], on="take_contradiction")
        | reading.to(exhausted, cond=["answers_me", "attempts_spent"], on="take_positions")
        | reading.to(working, cond="answers_me", on="take_positions")
    )
    # `is_mine`: an order id this engine never owned is broadcast (e.g. a foreign fill).
    fill_received = exiting.to(None, cond="is_mine", on="record_fill")
    order_expired = exiting.to(None, cond="is_mine", on="record_end")
    order_cancelled = exiting.to(None, cond="is_mine", on="record_end")
    order_rejected = exiting.to(None, cond="is_mine", on="record_reject")
    order_status = cancelling.to(None, cond=["is_mine", "says_open"], on="cancel_again") | (
        exiting.to(None, cond="is_mine", on="record_status")
    )
    venue_error = reading.to(backing_off, cond="answers_me", on="remember_retry_after") | (
        exiting.to(None, cond="is_mine", on="record_error")
    )
    # Named deadlines.
    recheck_timeout = reading.to(None, on="read_positions")
    verify_timeout = reading.to(backing_off)
    attempt_timeout = working.to(cancelling)
    settle_timeout = cancelling.to(None, cond="queries_left", on="chase_unsettled") | (
        cancelling.to(exhausted)
    )
    backoff_timeout = backing_off.to(reading, cond="reads_left") | backing_off.to(exhausted)
    # The total budget, armed once by `exiting`: wins from whichever attempt is running.
    # Orders all settled and the fills flat, only the read lagging: the budget waits
    # for the read (within the lag budget), exposure still flagged.
    budget_timeout = reading.to(None, cond="only_lag_left", on="note_budget_spent") | (
        exiting.to(exhausted)
    )
    requery_timeout = exiting.to(None, on="requery_unknown")

    def setup(self, **params: Any) -> None:
        self.p: CycleParams = params["params"]
        self.reason = str(params.get("reason", "emergency exit"))
        # A planned flatten (operator stop) verifies the same way but is not an alert.
        self.announce = bool(params.get("announce", True))
        self.setup_rounds(params.get("policy") or WorkPolicy.exit(self.p))
        self.attempt: int = 0  # attempts that reached the venue (the ladder index)
        self.strikes: int = 0  # attempts after which the venue showed no less exposure
        self.judging = False  # an attempt went out and the next answer judges it
        self.max_attempts: int = self.policy.max_rounds
        self.reads: int = 0
        self.max_reads: int = self.policy.max_refusals
        self.seen: dict[int, Decimal] = {}  # the last verified venue positions
        self.stale_reads: int = 0  # re-asks in this attempt because the feed looked stale
        self.no_quote: bool = False  # this attempt found a leg with no quote to price it
        self.budget_spent = False  # the budget ran out while only a lagging read was left
        self.absurd: dict[str, str] = {}  # legs too large to trade (symbol → qty)
        self.contradiction: dict[str, str] = {}  # leg → "read R, fills F" at a HALT

    # -- guards ---------------------------------------------------------------------------------
    def stale_suspected(self, ev: PositionSnapshot) -> bool:
        """The answer shows less exposure than the engine's fills imply, or more than the
        last answer minus our fills since: the position feed lags the fills. A bounded
        number of re-asks, then the venue is believed."""
        if self.stale_reads >= STALE_READS:
            return False
        if self.venue_shows_less(ev):
            return True
        seen = self._seen(ev)
        for leg in self.p.legs:
            pid, step = leg.product_id, leg.size_increment
            if self.round >= 0:
                expected = self.seen.get(pid, ZERO) + self.orders.signed_filled(pid, self.round)
                if abs(seen[pid]) - abs(expected) >= step:
                    return True
        return False

    def agreeing_leg_open(self, ev: PositionSnapshot) -> bool:
        if self.budget_spent or self.attempt >= self.max_attempts:
            return False
        seen = self._seen(ev)
        return any(
            abs(seen[leg.product_id] - self.ledger.position(leg.product_id)) < leg.size_increment
            and not self._dust(leg, seen[leg.product_id])
            for leg in self.p.legs
        )

    def absurd_position(self, ev: PositionSnapshot) -> bool:
        seen = self._seen(ev)
        return bool(absurd_legs(self.p, self.ledger, seen))

    def only_lag_left(self, ev: DeadlineExpired) -> bool:
        if self.lag_since is None or self.orders.unsettled():
            return False
        waited = Decimal(self.ledger.now_ns - self.lag_since) / 1_000_000_000
        return waited < self.p.position_lag_budget_s and all(
            self._dust(leg, self.ledger.position(leg.product_id)) for leg in self.p.legs
        )

    def attempts_spent(self, ev: PositionSnapshot) -> bool:
        if self.budget_spent:
            return True
        return self._strikes_after(ev) >= self.p.exit_attempts or self.attempt >= self.max_attempts

    def waiting_for_quote(self) -> bool:
        return self.no_quote

    def reads_left(self) -> bool:
        return self.reads < self.max_reads

    # -- actions --------------------------------------------------------------------------------
    def on_enter_exiting(self) -> None:
        assert self.policy.budget_s is not None
        self.arm("budget_timeout", self.policy.budget_s)  # once: child states never re-arm it
        if not self.announce:
            self.note(f"flatten: {self.reason}", exposure_usd=str(self.exposure_usd()))
            return
        self.emit(
            SendAlert(
                event="emergency_exit",
                severity="warning",
                message=f"emergency exit: {self.reason}",
                exposure_usd=self.exposure_usd(),
                state="exiting",
                action="flattening both legs with reduce-only IOCs",
            )
        )

    def on_enter_reading(self) -> None:
        self.reset_lag()
        self.cancel_strays()  # a resting order a failed machine left must not fill later
        self.read_positions()

    def note_budget_spent(self) -> None:
        self.budget_spent = True
        self.note("exit budget spent: waiting only for the position read to catch up")

    def take_contradiction(self, ev: PositionSnapshot) -> None:
        """The read says flat, the fills the venue reported say open: the fills are
        trusted; the HALT states the larger exposure and both numbers."""
        self.take_positions(ev)
        for leg in self.p.legs:
            pid, fills = leg.product_id, self.ledger.position(leg.product_id)
            read = self.seen[pid]
            if abs(fills - read) >= leg.size_increment:
                self.contradiction[leg.symbol] = f"read {read}, fills {fills}"
            if abs(fills) > abs(read):
                self.seen[pid] = fills

    def read_positions(self) -> None:
        self.reads += 1
        self.query_positions()

    def take_positions(self, ev: PositionSnapshot) -> None:
        self.strikes = self._strikes_after(ev)
        self.judging = False
        self.seen = self._seen(ev)
        self.stale_reads = 0

    def take_agreeing(self, ev: PositionSnapshot) -> None:
        """Work the legs the read proves (it agrees with their fills); a lagging leg is
        left for a later read and noted. A partial read judges nothing (no strike)."""
        self.judging = False
        self.seen = self._seen(ev)
        self.stale_reads = 0
        for leg in self.p.legs:
            pid, fills = leg.product_id, self.ledger.position(leg.product_id)
            if abs(self.seen[pid] - fills) >= leg.size_increment:
                self.contradiction[leg.symbol] = f"read {self.seen[pid]}, fills {fills}"
                self.seen[pid] = ZERO  # not traded on a lagging read
            else:
                self.contradiction.pop(leg.symbol, None)

    def take_absurd(self, ev: PositionSnapshot) -> None:
        self.take_positions(ev)
        self.absurd = absurd_legs(self.p, self.ledger, self.seen)

    def wait_for_lag(self, ev: PositionSnapshot) -> None:
        super().wait_for_lag(ev)
        seen = self._seen(ev)
        for leg in self.p.legs:
            pid, fills = leg.product_id, self.ledger.position(leg.product_id)
            if abs(seen[pid] - fills) >= leg.size_increment:
                self.contradiction[leg.symbol] = f"read {seen[pid]}, fills {fills}"
            else:
                self.contradiction.pop(leg.symbol, None)

    def recheck_stale(self) -> None:
        self.stale_reads += 1
        self.recheck_later()

    def on_enter_working(self) -> None:
        self.attempt += 1
        self.judging = True
        self.round += 1
        rung = self.policy.rung(self.attempt - 1)
        bps = rung.bps
        self.note(
            "exit attempt",
            attempt=self.attempt,
            strikes=self.strikes,
            bps=str(bps),
            positions=self._strs(),
        )
        unpriced = tuple(
            leg.product_id
            for leg in self.p.legs
            if self.ledger.quote(leg.product_id) is None
            and not self._dust(leg, self.seen.get(leg.product_id, ZERO))
        )
        self.no_quote = bool(unpriced)
        if unpriced:
            self.note("no quote to price the exit: asking the venue", product_ids=unpriced)
            self.emit(QueryMarketPrices(request_id=self.next_id("m"), product_ids=unpriced))
            return
        # Close what the last verified read shows open, reduce-only, sliced.
        wants = [
            (leg, -pos)
            for leg in self.p.legs
            if not self._dust(leg, pos := self.seen.get(leg.product_id, ZERO))
        ]
        self.place_round(rung, wants, rung.label)
        self.arm(self.policy.round_deadline, self.policy.round_timeout_s)

    def on_exit_working(self) -> None:
        if self.no_quote or self.orders.round_refused(self.round):
            self.attempt -= 1  # it never reached the venue: not an attempt, a refusal
            self.judging = False

    def remember_retry_after(self, ev: Any) -> None:
        self.retry_after_s = getattr(ev, "retry_after_s", None) or self.retry_after_s

    def on_enter_backing_off(self) -> None:
        delay = self.backoff_delay()
        self.note("venue refused or silent; backing off", seconds=str(delay), reads=self.reads)
        self.arm("backoff_timeout", delay)

    def on_enter_exhausted(self, ev: Any = None) -> None:
        self.cancel_unsettled()
        exposure = self.exposure_usd(worst_case=True)
        if self.absurd:
            why = (
                f"position {self.absurd} is far beyond what this engine could have opened "
                f"(more than {self.p.max_slices_per_step} slices of {self.p.max_slice_usd} USD):"
                " not traded"
            )
        elif self.contradiction:
            why = (
                "the venue's position read contradicts its reported fills, trusting the "
                f"fills: {self.contradiction}"
            )
        elif isinstance(ev, DeadlineExpired) and ev.name == "budget_timeout":
            why = "budget spent"
        elif self.strikes >= self.p.exit_attempts:
            why = f"{self.strikes} attempts without progress"
        elif self.attempt >= self.max_attempts:
            why = f"attempt cap {self.max_attempts} reached"
        elif self.budget_spent:
            why = "budget spent waiting for the position read"
        else:
            why = "venue unresponsive"
        reason = f"emergency exit exhausted ({why}): {self.reason}"
        self.emit(Halt(reason=reason, exposure_usd=exposure))
        self.emit(
            SendAlert(
                event="emergency_exit_exhausted",
                severity="critical",
                message=reason,
                exposure_usd=exposure,
                state="exhausted",
                action="halted: an operator must flatten and resume",
            )
        )
        self.note("emergency exit exhausted", why=why, exposure_usd=str(exposure))

    # -- helpers ----------------------------------------------------------------------------------
    def exposure_usd(self, worst_case: bool = False) -> Decimal:
        """Open notional at mid: the last venue answer, else the fill-derived position.

        `worst_case` (for a HALT): a leg the venue never answered for during this exit is
        stated as the larger of the last snapshot and the fill-derived position, plus the
        remainders of orders placed since that snapshot whose outcome is unknown: a venue
        that went silent after accepting them must not read as 0 USD open."""
        total = ZERO
        for leg in self.p.legs:
            pid = leg.product_id
            pos = self.seen.get(pid)
            if pos is None and worst_case:
                pos = self._worst_case(pid)
            if pos is None:
                pos = self.ledger.venue_position(pid)
            if pos is None:
                pos = self.ledger.position(pid)
            fills = self.ledger.position(pid)
            if worst_case and leg.symbol in self.contradiction and abs(fills) > abs(pos):
                pos = fills  # a read that contradicts the reported fills never lowers it
            total += notional(pos, self.ledger.quote(pid))
        return total.quantize(USD)

    def _worst_case(self, pid: int) -> Decimal:
        book = self.ledger.book(pid)
        since = book.venue_position_ts or 0
        unresolved = sum(
            (
                o.remaining
                for o in self.ledger.open_orders()
                if o.product_id == pid and o.placed_ns >= since
            ),
            ZERO,
        )
        return max(abs(book.position), abs(book.venue_position or ZERO)) + unresolved

    def _strikes_after(self, ev: PositionSnapshot) -> int:
        """Strikes once this answer judges the last attempt: it counts unless some leg's
        exposure fell by at least one increment since the answer before it."""
        if not self.judging:
            return self.strikes
        seen = self._seen(ev)
        progress = any(
            abs(seen[leg.product_id]) + leg.size_increment
            <= abs(self.seen.get(leg.product_id, ZERO))
            for leg in self.p.legs
        )
        return self.strikes if progress else self.strikes + 1

    def _strs(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.seen.items()}
