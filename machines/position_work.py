"""POSITION WORK: BUILD, UNWIND and the emergency exit as one machine, driven by a policy.

read → place rounds → cancel/settle → verify → done | aborted | failed. What differs
between the three purposes is data (`machines.policy.WorkPolicy`): the ladder, reduce-only,
the round budget and deadlines, the pre-trade checks, the hedge deadline or the exit's
one total budget, and whether each round is an attempt judged by its own read.

- BUILD (`WorkPolicy.build`): the pre-trade checks run at once on entry (a refusal ends in
  `aborted`, nothing sent); rounds open both legs at equal notional (the first places both
  at once, later rounds repair what is missing with escalating aggression); `done` only
  after a position query, answered after the last order, shows both legs at target.
- UNWIND (`WorkPolicy.unwind`): first a position read (rule 5: exits are sized from the
  verified position, never from the original order) — or, when the policy overlaps it
  (`overlap_read`) and the ledger's belief is the venue's verified word from this cycle's
  BUILD (`belief_gap` is empty: a read since BUILD verified agreeing with the fills, no
  fill since, no order in flight or of unknown outcome on the pair, the stream not lost
  since), the first round is placed from that belief with the read sent in the same
  step. Its orders are reduce-only: a wrong belief can close too little, never open. The
  read is judged once the orders placed before it are settled (all their fills known):
  each leg must show what the fills say now or held within the lag budget (a lagging read
  is not news); else the belief is refuted and, after the round, the position is read
  again and worked from that read as if it were the opening one. `done` needs the final
  read as always. Then reduce-only rounds up the
  ladder, once one leg is closed skipping any post-only rung; a rung the venue refused
  outright (429) is retried after a back-off, a bounded number of times and never past
  the exit budget (N7); `done` when a position query shows both legs within dust.
- EXIT (`WorkPolicy.exit`): every attempt re-reads the venue position and places
  reduce-only IOCs for what it shows, through the book by the attempt's ladder step,
  sliced; all of it under one budget timer armed once on entry to `work` (attempts never
  reset it: seed 004, BUG-003). Attempts without progress count against `exit_attempts`;
  refused or silent reads are backed off. A read that contradicts the reported fills, a
  position far beyond anything the engine could have opened, or the budget spent: HALT
  and a critical alert, both stating the exposure, in `failed`.

Every remainder is sized from verified fills (the ledger, or the venue's own word on a
cancel or expiry), never from the original request. A placement with an unknown outcome
is resolved by QueryOrder before anything else is sent for that leg (`OrderRounds`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.core import flatness
from engine.core.events import DeadlineExpired
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import Halt
from engine.core.intents import QueryMarketPrices
from engine.core.intents import QueryPositions
from engine.core.intents import SendAlert
from machines.base import PureMachine
from machines.base import State
from machines.params import CycleParams
from machines.params import LegSpec
from machines.policy import PRETRADE_CHECKS
from machines.policy import WorkPolicy
from machines.pricing import OrderRounds
from machines.pricing import absurd_legs
from machines.pricing import notional
from machines.pricing import outside_band
from machines.pricing import size_for_notional

ZERO = Decimal(0)
USD = Decimal("0.01")
RESIDUAL_QUANTUM = Decimal("0.000001")
STALE_READS = 2  # exit: re-asks per read when the position answer contradicts our fills
BREAKER_ID, HEALTH_ID = "breaker", "health"  # machine ids the app spawns them under
# Each pre-trade check (a guard) and the method that says why it refuses.
REFUSALS = {
    "entries_allowed": "_entries_refusal",
    "venue_verified_flat": "_flat_refusal",
    "bbo_fresh": "_bbo_refusal",
    "within_price_band": "_band_refusal",
    "within_max_position": "_max_position_refusal",
    "sizes_tradable": "_size_refusal",
}


class PositionWork(OrderRounds, PureMachine):
    """Work a position to the policy's target: open it (BUILD), close it (UNWIND, exit).

    Spawned with `params=` (the cycle's CycleParams) and `purpose=` ("build", "unwind",
    "exit"; or `policy=` a WorkPolicy); the exit also takes `reason=` and `announce=`.
    Ends `done` (venue-verified at target), `aborted` (a pre-trade check refused, nothing
    sent) or `failed` (exposure may be open; the exit's failure is a HALT).
    """

    checking = State(initial=True)
    reading = State()  # a position query: the start, each exit attempt, the verification
    working = State(initial=True)
    cancelling = State()
    deciding = State()
    backing_off = State()
    placing = State(states=[working, cancelling, deciding, backing_off])
    work = State(states=[checking, reading, placing], initial=True)  # arms the exit budget
    done = State(final=True)
    aborted = State(final=True)
    failed = State(final=True)

    # Closing work reads the verified position first; opening work runs the pre-trade
    # checks, in the policy's order (pure: a refusal is journaled on entry to aborted).
    checking.to(placing, cond=["closing", "belief_verified"], on="take_belief")
    checking.to(reading, cond="closing")
    checking.to(placing, cond=list(PRETRADE_CHECKS), on="size_legs")
    checking.to(aborted)
    # maker_first: the venue refused (429) an order while one leg was alone (the hedge of
    # a fill, or the round after it): not waited out for a Retry-After unflagged; failed
    # at once with an alert stating the exposure, and the session's emergency exit
    # flattens both legs reduce-only within its budget (flagged).
    working.to(failed, cond="refused_while_apart", on="stop_for_refusal")
    cancelling.to(failed, cond="refused_while_apart", on="stop_for_refusal")
    backing_off.to(failed, cond="refused_while_apart", on="stop_for_refusal")
    # A round ends when its orders are settled. Refused outright (429) or without a quote
    # it is backed off, not counted; refused for longer than the policy allows: failed.
    working.to(backing_off, cond="waiting_for_quote")
    working.to(failed, cond=["round_refused", "refused_too_long"])
    working.to(backing_off, cond=["round_refused", "refusals_left"])
    working.to(cancelling, cond="hard_rejected")
    working.to(deciding, cond="round_settled")
    cancelling.to(deciding, cond="round_settled")
    deciding.to(reading, cond="rereads")  # each exit attempt is judged by a fresh read
    # UNWIND placed from its belief and the opening read refuted it: read again, as the start.
    deciding.to(reading, cond="belief_refuted", on="reread_start")
    deciding.to(reading, cond="work_done", on="start_verifying")
    deciding.to(failed, cond="hard_rejected")
    deciding.to(failed, cond="hedge_deadline_passed", on="stop_for_hedge")  # V1
    deciding.to(working, cond="rounds_left")
    deciding.to(reading, cond="closing", on="start_verifying")  # ladder spent: the venue's word
    deciding.to(failed)
    # Legs apart for the whole exit budget (V1): whatever was being waited for, the wait
    # ends in failed (the session's emergency exit takes over, flagged).
    working.to(failed, event="fills_timeout requery_timeout", cond="hedge_budget_spent")
    cancelling.to(failed, event="settle_timeout requery_timeout", cond="hedge_budget_spent")
    backing_off.to(failed, event="backoff_timeout requery_timeout", cond="hedge_budget_spent")
    reading.to(failed, event="recheck_timeout verify_timeout", cond="hedge_budget_spent")

    # The venue's word on this machine's orders, in any state (`is_mine`: an order id this
    # engine never owned is broadcast, e.g. a foreign fill). Fills are in the ledger already.
    fill_received = work.to(None, cond="is_mine", on="record_fill")
    order_expired = work.to(None, cond="is_mine", on="record_end")
    order_cancelled = work.to(None, cond="is_mine", on="record_end")
    order_rejected = work.to(None, cond="is_mine", on="record_reject")
    order_status = (
        cancelling.to(None, cond=["is_mine", "says_open"], on="cancel_again")
        | work.to(None, cond="is_mine", on="record_status")
        | work.to(None, cond="answers_stray", on="stray_status")
    )
    # `answers_me`: the answer to this machine's latest position query, not an earlier one.
    venue_error = (
        reading.to(backing_off, cond=["answers_me", "rereads"], on="remember_retry_after")
        | reading.to(failed, cond=["answers_me", "refused_too_long"])
        | reading.to(None, cond=["answers_me", "verify_left"], on="recheck_later")
        | reading.to(failed, cond="answers_me")
        | work.to(None, cond="answers_belief", on="lose_belief_read")
        | work.to(None, cond="is_mine", on="record_error")
    )
    position_snapshot = (
        # A stray cancelled on entry may still fill: no read is judged until the venue
        # said how each ended (seed 1261); the exit budget bounds the wait.
        reading.to(None, cond=["answers_me", "strays_open"], on="chase_strays")
        # Far beyond anything the engine could have opened: never traded; HALT (exit).
        | reading.to(failed, cond=["answers_me", "absurd_position"], on="take_absurd")
        # A read lacking reported fills lags (issue 11): asked again within the lag budget;
        # the exit meanwhile works the legs whose read agrees with their fills.
        | reading.to(
            placing, cond=["answers_me", "read_lags", "agreeing_leg_open"], on="take_agreeing"
        )
        | reading.to(None, cond=["answers_me", "read_lags"], on="wait_for_lag")
        # Less exposure than our own fills imply: a lagging feed; a bounded re-ask.
        | reading.to(None, cond=["answers_me", "stale_suspected"], on="recheck_stale")
        | reading.to(done, cond=["answers_me", "at_target", "read_agrees"], on="take_positions")
        | reading.to(None, cond=["answers_me", "lag_suspected", "verify_left"], on="recheck_later")
        # At target by the read, not by the reported fills: never done (issue 11).
        | reading.to(failed, cond=["answers_me", "at_target"], on="take_contradiction")
        | reading.to(placing, cond=["answers_me", "rounds_ahead"], on="take_start")
        | reading.to(failed, cond="answers_me", on="take_positions")
        # The read sent alongside a round placed from the belief: judged once settled.
        | work.to(None, cond="answers_belief", on="take_belief_read")
    )
    # Named deadlines, each armed on entry to the state that waits.
    fills_timeout = working.to(cancelling)
    attempt_timeout = working.to(cancelling)
    settle_timeout = cancelling.to(None, cond="queries_left", on="chase_unsettled") | (
        cancelling.to(failed)
    )
    backoff_timeout = (
        backing_off.to(reading, cond=["rereads", "reads_left"])
        | backing_off.to(failed, cond="rereads")
        | backing_off.to(working, on="retry_rung")
    )
    requery_timeout = work.to(None, on="requery_unknown")
    recheck_timeout = reading.to(None, on="read_positions")
    verify_timeout = (
        reading.to(backing_off, cond="rereads")
        | reading.to(None, cond="verify_left", on="read_positions")
        | reading.to(failed)
    )
    # The exit's total budget, armed once by `work`: wins from whichever attempt is running,
    # except that with orders settled and fills flat it waits for a lagging read.
    budget_timeout = reading.to(None, cond="only_lag_left", on="note_budget_spent") | (
        work.to(failed)
    )

    def setup(self, **params: Any) -> None:
        self.p: CycleParams = params["params"]
        policy = params.get("policy")
        self.setup_rounds(policy or WorkPolicy.of(params["purpose"], self.p))
        self.reason = str(params.get("reason", "emergency exit"))  # why the exit runs
        # A planned flatten (operator stop) verifies the same way but is not an alert.
        self.announce = bool(params.get("announce", True))
        self.final_read = False  # the rounds are over: the read verifies the work
        self.seen: dict[int, Decimal] = {}  # the last verified venue positions (closing)
        self.read_round = 0  # the first round placed after that read
        # BUILD
        self.targets: tuple[Decimal, Decimal] = (ZERO, ZERO)  # long (buy), short (sell)
        self.start_pos: tuple[Decimal, Decimal] = (ZERO, ZERO)
        self.residual_usd = ZERO
        self.refusal_reason = ""
        # UNWIND
        self.same_rung = False
        # Engine ns this cycle's BUILD was verified at (the session's word), None: unknown.
        verified = params.get("verified_ns")
        self.verified_ns: int | None = None if verified is None else int(verified)
        self.belief_query = ""  # the opening read sent alongside the first round
        self.belief_read: dict[int, Decimal] | None = None  # its answer, not judged yet
        self.belief_wrong = ""  # the answer refuted the belief: why
        self.done_ns: int | None = None  # engine ns of the read that verified the work
        self.refused_since: int | None = None  # engine ns of the first 429 in a row
        # EXIT
        self.attempt: int = 0  # attempts that reached the venue (the ladder index)
        self.strikes: int = 0  # attempts after which the venue showed no less exposure
        self.judging = False  # an attempt went out and the next answer judges it
        self.max_attempts: int = self.policy.max_rounds
        self.reads: int = 0
        self.max_reads: int = self.policy.max_refusals
        self.stale_reads: int = 0  # re-asks in this attempt because the feed looked stale
        self.no_quote: bool = False  # this attempt found a leg with no quote to price it
        self.budget_spent = False  # the budget ran out while only a lagging read was left
        self.absurd: dict[str, str] = {}  # legs too large to trade (symbol → qty)
        self.contradiction: dict[str, str] = {}  # leg → "read R, fills F" at a HALT

    # -- guards: what the policy says ------------------------------------------------------
    def closing(self) -> bool:
        """Reduce-only work: it starts from a verified read and verifies whatever happens."""
        return self.policy.reduce_only

    def rereads(self) -> bool:
        return self.policy.reread_each_round

    # -- guards: pre-trade checks (BUILD; each answers, `refusal` says why) -------------------
    def entries_allowed(self) -> bool:
        return not self._refusal_of("entries_allowed")

    def venue_verified_flat(self) -> bool:
        return not self._refusal_of("venue_verified_flat")

    def bbo_fresh(self) -> bool:
        return not self._refusal_of("bbo_fresh")

    def within_price_band(self) -> bool:
        return not self._refusal_of("within_price_band")

    def within_max_position(self) -> bool:
        return not self._refusal_of("within_max_position")

    def sizes_tradable(self) -> bool:
        return not self._refusal_of("sizes_tradable")

    # -- guards: rounds ---------------------------------------------------------------------
    def waiting_for_quote(self) -> bool:
        return self.no_quote

    def refusals_left(self) -> bool:
        """The exit bounds its refusals by its reads (`reads_left`); UNWIND by a count."""
        return self.rereads() or self.refusals < self.policy.max_refusals

    def refused_too_long(self) -> bool:
        """The venue has refused us (429) for at least the policy's refusal budget."""
        return self.refused_since is not None and self._refused_for() >= self._budget_ns()

    def hard_rejected(self) -> bool:
        return self.policy.reject_ends_work and bool(self.hard_reason)

    def hedge_deadline_passed(self) -> bool:
        return self.policy.hedge_deadline and super().hedge_deadline_passed()

    def refused_while_apart(self) -> bool:
        return bool(self.refused_apart)

    def work_done(self) -> bool:
        """Nothing left to trade by the verified fills: every leg at target (or closed)."""
        return all(self._leg_done(i, leg) for i, leg in enumerate(self.p.legs))

    def rounds_left(self) -> bool:
        return self._next_rung() < len(self.rungs)

    def reads_left(self) -> bool:
        return self.reads < self.max_reads

    def only_lag_left(self, ev: DeadlineExpired) -> bool:
        if self.lag_since is None or self.orders.unsettled() or self.strays_unsettled():
            return False
        waited = Decimal(self.ledger.now_ns - self.lag_since) / 1_000_000_000
        return waited < self.p.position_lag_budget_s and all(
            self._dust(leg, self.ledger.position(leg.product_id)) for leg in self.p.legs
        )

    # -- guards: placing from the belief (UNWIND) --------------------------------------------
    def belief_verified(self) -> bool:
        return not self.belief_gap()

    def belief_refuted(self) -> bool:
        return bool(self.belief_wrong)

    def answers_belief(self, ev: PositionSnapshot | VenueError) -> bool:
        return bool(self.belief_query) and ev.request_id == self.belief_query

    # -- guards: judging a position read ----------------------------------------------------
    def absurd_position(self, ev: PositionSnapshot) -> bool:
        return self.rereads() and bool(absurd_legs(self.p, self.ledger, self._seen(ev)))

    def agreeing_leg_open(self, ev: PositionSnapshot) -> bool:
        if not self.rereads() or self.budget_spent or self.attempt >= self.max_attempts:
            return False
        seen = self._seen(ev)
        return any(
            abs(seen[leg.product_id] - self.ledger.position(leg.product_id)) < leg.size_increment
            and not self._dust(leg, seen[leg.product_id])
            for leg in self.p.legs
        )

    def stale_suspected(self, ev: PositionSnapshot) -> bool:
        """Closing: the answer shows less exposure than the engine's fills imply (the exit
        also: more than the last answer minus our fills since): the feed lags the fills.
        A bounded number of re-asks, then the venue is believed."""
        if not self.closing():
            return False
        if not self.rereads():
            return self.venue_shows_less(ev) and self.verify_left()
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

    def at_target(self, ev: PositionSnapshot) -> bool:
        """Closing: both legs within dust. Opening: both legs moved by their targets."""
        if self.closing():
            return self.venue_flat(ev)
        for i, leg in enumerate(self.p.legs):
            pos = self.ledger.venue_position(leg.product_id)
            if pos is None or abs(pos - self.start_pos[i] - self._signed_target(i)) >= (
                leg.size_increment
            ):
                return False
        return True

    def lag_suspected(self, ev: PositionSnapshot) -> bool:
        """Verifying: our verified fills say target while the venue does not (yet)."""
        if not self.final_read or not self.work_done():
            return False
        return self.closing() or all(
            abs(self.orders.signed_filled(leg.product_id) - self._signed_target(i))
            < leg.size_increment
            for i, leg in enumerate(self.p.legs)
        )

    def rounds_ahead(self, ev: PositionSnapshot) -> bool:
        """A start read (or an exit attempt's read with attempts left): rounds follow."""
        return not self.final_read and not (self.rereads() and self.attempts_spent(ev))

    def attempts_spent(self, ev: PositionSnapshot) -> bool:
        if self.budget_spent:
            return True
        return self._strikes_after(ev) >= self.p.exit_attempts or self.attempt >= self.max_attempts

    # -- actions: the whole work ----------------------------------------------------------------
    def on_enter_work(self) -> None:
        if self.policy.budget_s is not None:
            self.arm("budget_timeout", self.policy.budget_s)  # once: never re-armed
        if self.policy.purpose != "exit":
            return
        if not self.announce:
            self.note(f"flatten: {self.reason}", exposure_usd=str(self.exposure_usd()))
            return
        self.emit(
            SendAlert(
                event="emergency_exit",
                severity="warning",
                message=f"emergency exit: {self.reason}",
                # before the exit's first read: the larger of the last venue answer and the
                # fills since (a snapshot older than the fills must not read as 0 USD open)
                exposure_usd=self.exposure_usd(worst_case=True),
                state="work",
                action="flattening both legs with reduce-only IOCs",
            )
        )

    def size_legs(self) -> None:
        self.targets, values, self.residual_usd = self._sizing()
        long, short = (self.ledger.venue_position(leg.product_id) or ZERO for leg in self.p.legs)
        self.start_pos = (long, short)
        self.note(
            "sized at equal notional",
            usd=str(self.p.notional_usd + self.p.carry_usd),
            qty=[str(q) for q in self.targets],
            notional=[str(v) for v in values],
            residual_usd=str(self.residual_usd),
        )

    # -- actions: placing from the belief (UNWIND) ---------------------------------------------
    def take_belief(self) -> None:
        """Work from the position this cycle's BUILD verified; ask the venue alongside.
        (The hedge watch starts from it on entry to `working`, in the same step.)"""
        self.seen = {
            leg.product_id: self.ledger.venue_position(leg.product_id) or ZERO
            for leg in self.p.legs
        }
        self.read_round = self.round + 1
        self.belief_query = self.next_id("q")
        self.emit(QueryPositions(request_id=self.belief_query, product_ids=self.p.product_ids))
        self.note(
            "unwinding from the position BUILD verified, reading the venue alongside",
            positions=_strs(self.seen),
        )

    def take_belief_read(self, ev: PositionSnapshot) -> None:
        self.belief_query = ""
        self.belief_read = self._seen(ev)
        self.judge_belief()
        if self.belief_wrong and "reading" in self.active_ids:
            # Everything is settled and a read is in flight: it is the start read now.
            self.belief_wrong = ""
            self.final_read = False

    def lose_belief_read(self, ev: VenueError) -> None:
        """The opening read failed: nothing refutes the belief; the final read decides."""
        self.belief_query = ""
        self.note("opening read not answered: the final read decides", error=ev.error_class)

    def judge_belief(self) -> None:
        """Judge the opening read once every order placed so far is settled (their fills
        are all known): each leg shows what its fills say now or held within the lag budget."""
        if self.belief_read is None or self.orders.unsettled():
            return
        read, self.belief_read = self.belief_read, None
        since = self.ledger.now_ns - int(self.p.position_lag_budget_s * 1_000_000_000)
        wrong = {}
        for leg in self.p.legs:
            pid, got = leg.product_id, read[leg.product_id]
            fills = self.ledger.position(pid)
            book = self.ledger.book(pid)
            if abs(got - fills) >= leg.size_increment and not book.held_since(
                got, since, leg.size_increment
            ):
                wrong[leg.symbol] = f"read {got}, fills {fills}"
        if wrong:
            self.belief_wrong = str(wrong)
            self.note("the opening read refutes the verified belief: reading again", legs=wrong)

    def reread_start(self) -> None:
        self.belief_wrong = ""
        self.final_read = False

    def on_enter_deciding(self) -> None:
        super().on_enter_deciding()
        self.judge_belief()

    def belief_gap(self) -> str:
        """Why UNWIND may not place from the ledger's belief (empty: it may): the policy
        says no, or the belief is not the venue's verified word from this cycle's BUILD."""
        if not self.policy.overlap_read:
            return "the policy reads first"
        if self.verified_ns is None:
            return "no BUILD verified this cycle"
        read_ns = []
        for leg in self.p.legs:
            book = self.ledger.book(leg.product_id)
            if book.venue_position is None or book.venue_position_ts is None:
                return f"no venue position for {leg.symbol}"
            if book.venue_position_ts < self.verified_ns:
                return f"{leg.symbol} not read since BUILD verified"
            if book.last_fill_ts is not None and book.last_fill_ts > book.venue_position_ts:
                return f"{leg.symbol} filled since its last read"
            if abs(book.venue_position - book.position) >= leg.size_increment:
                return f"{leg.symbol} read {book.venue_position}, fills {book.position}"
            read_ns.append(book.venue_position_ts)
        pids = self.p.product_ids
        if any(o.product_id in pids for o in self.ledger.open_orders()):
            return "an order on the pair is in flight or of unknown outcome"
        lost = self.ledger.stream_lost_ns
        if self.ledger.stream_up is False or (lost is not None and lost >= min(read_ns)):
            return "the venue stream was lost since the read"
        return ""

    # -- actions: reading ---------------------------------------------------------------------
    def on_enter_reading(self) -> None:
        self.verifies = 0
        self.reset_lag()
        if self.closing() and self.round < 0 and not self.rereads():
            self.note("unwind reads first", reason=self.belief_gap())
        if self.rereads():
            self.cancel_strays()  # a resting order a failed machine left must not fill later
        self.read_positions()

    def read_positions(self) -> None:
        self.reads += 1
        self.query_positions()

    def start_verifying(self) -> None:
        self.final_read = True

    def take_positions(self, ev: PositionSnapshot) -> None:
        self.strikes = self._strikes_after(ev)
        self.judging = False
        self.seen = self._seen(ev)
        self.stale_reads = 0
        self.read_round = self.round + 1

    def take_start(self, ev: PositionSnapshot) -> None:
        self.take_positions(ev)
        if not self.rereads():  # (the hedge watch starts on entry to `working`, next)
            self.note("unwinding from the verified position", positions=_strs(self.seen))

    def take_agreeing(self, ev: PositionSnapshot) -> None:
        """Work the legs the read proves (it agrees with their fills); a lagging leg is
        left for a later read and noted. A partial read judges nothing (no strike)."""
        self.judging = False
        self.seen = self._seen(ev)
        self.stale_reads = 0
        self.read_round = self.round + 1
        for leg in self.p.legs:
            pid, fills = leg.product_id, self.ledger.position(leg.product_id)
            if abs(self.seen[pid] - fills) >= leg.size_increment:
                self.contradiction[leg.symbol] = f"read {self.seen[pid]}, fills {fills}"
                self.seen[pid] = ZERO  # not traded on a lagging read
            else:
                self.contradiction.pop(leg.symbol, None)

    def take_contradiction(self, ev: PositionSnapshot) -> None:
        """The read says at target, the fills the venue reported say otherwise: the fills
        are trusted; a HALT states the larger exposure and both numbers."""
        self.take_positions(ev)
        for leg in self.p.legs:
            pid, fills = leg.product_id, self.ledger.position(leg.product_id)
            read = self.seen[pid]
            if abs(fills - read) >= leg.size_increment:
                self.contradiction[leg.symbol] = f"read {read}, fills {fills}"
            if abs(fills) > abs(read):
                self.seen[pid] = fills

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

    def recheck_stale(self, ev: PositionSnapshot) -> None:
        self.stale_reads += 1
        # UNWIND's re-asks grow with each read; the exit's stay one retry apart.
        self.recheck_later(None if self.rereads() else ev)

    def recheck_later(self, ev: Any = None) -> None:
        if getattr(ev, "error_class", None) == "rate_limited" and self._refusal_budgeted():
            self._refused()
        super().recheck_later(ev)

    def recheck_cap(self) -> Decimal | None:
        # Refused (429): a re-ask waits for Retry-After, but never past the refusal budget.
        return self._budget_left() if self.refused_since is not None else None

    def remember_retry_after(self, ev: Any) -> None:
        self.retry_after_s = getattr(ev, "retry_after_s", None) or self.retry_after_s

    def note_budget_spent(self) -> None:
        self.budget_spent = True
        self.note("exit budget spent: waiting only for the position read to catch up")

    # -- actions: rounds --------------------------------------------------------------------------
    def on_enter_working(self) -> None:
        if self.rereads():
            self.attempt += 1
            self.judging = True
            self.rung = min(self.attempt - 1, len(self.rungs) - 1)
        else:  # the next rung is chosen from the round just ended
            self.rung = self.rung if self.same_rung else self._next_rung()
            self.same_rung = False
        self.round += 1  # (the hedge watch: by `arm_wait` below, once the round is placed)
        rung = self.rungs[self.rung]
        if self.rereads():
            self.note(
                "exit attempt",
                attempt=self.attempt,
                strikes=self.strikes,
                bps=str(rung.bps),
                positions=_strs(self.seen),
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
        purpose = "build" if self.round == 0 and not self.closing() else rung.label
        self.place_round(rung, self._wants(), purpose)
        self.arm_wait(self.policy.round_deadline, self.round_wait_s())

    def on_exit_working(self) -> None:
        refused = self.orders.round_refused(self.round)
        if self.rereads() and (self.no_quote or refused):
            self.attempt -= 1  # it never reached the venue: not an attempt, a refusal
            self.judging = False
        if not refused:
            self.refused_since = None  # the venue took this round: no longer refused

    def on_enter_backing_off(self) -> None:
        self.watch_hedge()
        if self._refusal_budgeted():
            self._refused()
        delay = self.backoff_delay()
        if self._refusal_budgeted():
            delay = min(delay, self._budget_left())  # Retry-After, within the budget
        if self.rereads():
            self.note("venue refused or silent; backing off", seconds=str(delay), reads=self.reads)
        else:
            self.note("rung refused by the venue; backing off", seconds=str(delay))
        self.arm_wait("backoff_timeout", delay)

    def retry_rung(self) -> None:
        self.same_rung = True

    def stop_for_refusal(self) -> None:
        oid = self.refused_apart
        apart = abs(self.net_usd()).quantize(USD)
        if oid in self.makers:  # its cancel refused: it may still fill, unhedged
            resting = self._maker_open_usd(oid).quantize(USD)
            usd = apart + resting
            self.hard_reason = (
                f"cancel of resting order {oid} refused by the venue: legs {apart} USD apart,"
                f" {resting} USD more may fill unhedged"
            )
        else:
            usd = apart
            self.hard_reason = f"order {oid} refused by the venue with the legs {usd} USD apart"
        self.emit(
            SendAlert(
                event="hedge_refused",
                severity="warning",
                message=f"[HEDGE] {self.policy.purpose}: {self.hard_reason}",
                exposure_usd=usd,
                state="failed",
                action="resting order cancelled; the emergency exit flattens both legs",
            )
        )

    # -- actions: the ends ------------------------------------------------------------------------
    def on_enter_done(self) -> None:
        self.done_ns = self.ledger.now_ns  # the engine time of the read that verified it
        if self.closing():
            self.note("flat: verified by the venue", positions=self.venue_positions())
        else:
            self.note("built: venue position at target", positions=self.venue_positions())

    def on_enter_aborted(self) -> None:
        check, self.refusal_reason = self.refusal()
        self.note("pre-trade check refused", reason=self.refusal_reason)
        self.note("build aborted", reason=self.refusal_reason)
        if check == "within_price_band":
            self.emit(
                SendAlert(
                    event="price_band",
                    severity="warning",
                    message=f"[BAND] entry refused: {self.refusal_reason}",
                    state="aborted",
                    action="no entries while a quote is beyond the band; exits price from "
                    "the oracle",
                )
            )

    def on_enter_failed(self, ev: Any = None) -> None:
        self.cancel_unsettled()
        if self.policy.purpose == "build":
            reason = self.hard_reason or (
                "legs incomplete after every repair attempt"
                if not self.work_done()
                else "venue position not verified at target"
            )
            self.note(
                "build failed",
                reason=reason,
                remainders=[str(self.remainder(i)) for i in range(2)],
                venue=self.venue_positions(),
            )
        elif self.policy.purpose == "unwind":
            opened = {leg.symbol: str(self.open_qty(leg)) for leg in self.p.legs}
            self.note("unwind failed", open=opened, venue=self.venue_positions())
        else:
            self._halt(ev)

    def _halt(self, ev: Any) -> None:
        """The exit could not flatten: HALT and a critical alert, both stating the exposure."""
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
                state="failed",
                action="halted: an operator must flatten and resume",
            )
        )
        self.note("emergency exit exhausted", why=why, exposure_usd=str(exposure))

    # -- helpers: what is left to trade ------------------------------------------------------------
    def _wants(self) -> list[tuple[LegSpec, Decimal]]:
        """Per leg the signed quantity still to trade (buy > 0), from verified numbers only:
        opening, the long leg buys and the short sells what their fills still miss;
        closing, what the last verified read shows open plus our fills since."""
        if self.closing():
            return [
                (leg, -q) for leg in self.p.legs if not self._dust(leg, q := self.open_qty(leg))
            ]
        return [
            (leg, self.remainder(i) if i == 0 else -self.remainder(i))
            for i, leg in enumerate(self.p.legs)
            if leg.round_size_down(self.remainder(i)) >= leg.size_increment
        ]

    def open_qty(self, leg: LegSpec) -> Decimal:
        """Closing: signed amount still open, the last verified read plus our fills since."""
        pid = leg.product_id
        since = self.orders.signed_filled_in(pid, self.read_round, self.round)
        return self.seen.get(pid, ZERO) + since

    def remainder(self, i: int) -> Decimal:
        """Opening: what leg i still needs, from verified fills only."""
        filled = self.orders.signed_filled(self.p.legs[i].product_id)
        return self.targets[i] - (filled if i == 0 else -filled)

    def _leg_done(self, i: int, leg: LegSpec) -> bool:
        if self.closing():
            return self._dust(leg, self.open_qty(leg))
        return self.remainder(i) < leg.size_increment

    def _signed_target(self, i: int) -> Decimal:
        return self.targets[i] if i == 0 else -self.targets[i]

    def _next_rung(self) -> int:
        # A leg is done: no more passive repricing, work the other at once.
        one_done = any(self._leg_done(i, leg) for i, leg in enumerate(self.p.legs))
        return self.next_rung(skip_passive=one_done)

    def _held(self) -> dict[int, Decimal]:
        """Per leg the signed amount this work holds: closing, what is still open; opening,
        what its fills bought (long) and sold (short), i.e. the target less the remainder."""
        if self.closing():
            return {leg.product_id: self.open_qty(leg) for leg in self.p.legs}
        return {pid: self.orders.signed_filled(pid) for pid in self.p.product_ids}

    def hedge_known(self) -> bool:
        """Every leg held is priced from a quote no older than `bbo_max_age_s`."""
        return self._known(self._held())

    def _known(self, held: dict[int, Decimal]) -> bool:
        max_age_ns = self.max_quote_age_ns
        ledger = self.ledger
        for pid, qty in held.items():
            quote = ledger.quote(pid)
            if qty and (quote is None or ledger.now_ns - quote.ts_ns > max_age_ns):
                return False
        return True

    def net_usd(self) -> Decimal:
        """Signed notional the legs are apart by, from verified fills (the hedge deadline)."""
        return self._net_usd(self._held())

    def within_hedge_tolerance(self) -> bool:
        held = self._held()  # (the legs looked at once for both)
        return self._known(held) and abs(self._net_usd(held)) <= self.tolerance_usd

    def _net_usd(self, qty: dict[int, Decimal]) -> Decimal:
        ledger = self.ledger
        mids = {
            leg.product_id: flatness.mid_of(ledger.quote(leg.product_id)) for leg in self.p.legs
        }
        return flatness.net_usd(qty, mids)

    # -- helpers: refusals ---------------------------------------------------------------------
    def _refusal_budgeted(self) -> bool:
        return self.policy.refusal_budget_s is not None

    def _refused(self) -> None:
        if self.refused_since is None:
            self.refused_since = self.ledger.now_ns

    def _refused_for(self) -> int:
        return 0 if self.refused_since is None else self.ledger.now_ns - self.refused_since

    def _budget_left(self) -> Decimal:
        return max(Decimal(self._budget_ns() - self._refused_for()) / 1_000_000_000, ZERO)

    def _budget_ns(self) -> int:
        return int((self.policy.refusal_budget_s or ZERO) * 1_000_000_000)

    # -- helpers: pre-trade checks -------------------------------------------------------------
    def _refusal_of(self, check: str) -> str:
        if check not in self.policy.pretrade_checks:
            return ""
        reason: str = getattr(self, REFUSALS[check])()
        return reason

    def refusal(self) -> tuple[str, str]:
        """(check, reason) of the first pre-trade check that refuses, in the policy's order."""
        for name in self.policy.pretrade_checks:
            reason = self._refusal_of(name)
            if reason:
                return name, reason
        return "", ""

    def _entries_refusal(self) -> str:
        """The breaker is closed and health is normal (when those machines run)."""
        breaker = self.ledger.state_of(BREAKER_ID)
        if breaker and "closed" not in breaker:
            return f"circuit breaker {breaker[-1]}"
        health = self.ledger.state_of(HEALTH_ID)
        if health and "normal" not in health:
            return f"venue health {health[-1]}: no new entries"
        return ""

    def _flat_refusal(self) -> str:
        for leg in self.p.legs:
            pos = self.ledger.venue_position(leg.product_id)
            quote = self.ledger.quote(leg.product_id)
            if pos is None:
                return f"no venue position known for {leg.symbol}"
            flat = flatness.is_dust(
                pos, flatness.mid_of(quote), self.p.dust_usd, leg.size_increment
            )
            if not flat:
                return f"residual venue position {pos} on {leg.symbol}"
            fills = self.ledger.position(leg.product_id)
            if abs(pos - fills) >= leg.size_increment:
                # A flat read the reported fills contradict is a lagging read (issue 11).
                return f"venue reads {pos} on {leg.symbol}, its fills say {fills}"
        return ""

    def _bbo_refusal(self) -> str:
        for leg in self.p.legs:
            quote = self.ledger.quote(leg.product_id)
            if quote is None or quote.bid <= 0 or quote.ask < quote.bid:
                return f"no valid BBO for {leg.symbol}"
            age_ns = self.ledger.now_ns - quote.ts_ns
            if age_ns > self.max_quote_age_ns:
                return f"stale BBO for {leg.symbol}: {Decimal(age_ns) / 10**9} s"
        return ""

    def _band_refusal(self) -> str:
        """Both quotes within `price_band_bps` of the venue's oracle price (D5). A quote
        whose product had an oracle price and has none now cannot be band-checked: no
        entry on it either."""
        for leg in self.p.legs:
            if self.p.price_band_bps and self.ledger.oracle_lost(leg.product_id):
                return (
                    f"no current oracle price for {leg.symbol}: its quote cannot be checked "
                    f"against the band ({self.p.price_band_bps} bps)"
                )
            off = outside_band(self.p, self.ledger, leg.product_id)
            if off is not None:
                return (
                    f"{leg.symbol} quote {off.quantize(Decimal(1))} bps from the oracle price "
                    f"{self.ledger.oracle(leg.product_id)} (band {self.p.price_band_bps} bps)"
                )
        return ""

    def _max_position_refusal(self) -> str:
        usd = self.p.notional_usd + self.p.carry_usd
        if usd <= 0:
            return f"notional {usd} is not positive"
        if usd > self.p.max_position_usd:
            return f"notional {usd} above max_position_usd {self.p.max_position_usd}"
        return ""

    def _size_refusal(self) -> str:
        sizes, _, _ = self._sizing()
        for leg, qty in zip(self.p.legs, sizes, strict=True):
            quote = self.ledger.quote(leg.product_id)
            value = qty * quote.mid if quote is not None else ZERO
            if qty <= 0 or value < leg.min_order_value_usd:
                return f"{leg.symbol} size {qty} (${value}) below the venue minimum"
        return ""

    def _sizing(self) -> tuple[tuple[Decimal, Decimal], tuple[Decimal, Decimal], Decimal]:
        """Both legs' sizes at equal notional (rounded down), their values, the residual."""
        usd = self.p.notional_usd + self.p.carry_usd
        sizes, values = [], []
        for leg in self.p.legs:
            quote = self.ledger.quote(leg.product_id)
            mid = quote.mid if quote is not None else ZERO
            qty = size_for_notional(leg, usd, mid)
            sizes.append(qty)
            values.append(qty * mid)
        residual = (usd - (values[0] + values[1]) / 2).quantize(RESIDUAL_QUANTUM)
        return (sizes[0], sizes[1]), (values[0], values[1]), residual

    # -- helpers: the exit's exposure and progress ---------------------------------------------
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
            if worst_case:
                pos = abs(pos) + self.stray_exposure(pid)  # a stray that may still fill
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


def _strs(values: dict[int, Decimal]) -> dict[str, str]:
    return {str(k): str(v) for k, v in values.items()}
