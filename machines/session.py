"""SESSION: the supervisor. restore → idle → building → holding → unwinding → idle …

It never trades itself: it spawns one child machine at a time (RESTORE, or the
position-work machine for BUILD, UNWIND and the emergency exit) and moves on its
outcome. Directions alternate every cycle. Pauses happen only while flat. A failed
cycle gets one graceful recovery (the emergency exit, verified flat), then trading
continues; a second consecutive failure halts. HALT is sticky until an operator
resumes. A stop request (SIGINT/SIGTERM) flattens and verifies; a second one does
not skip the verification.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from engine.core import flatness
from engine.core.events import FillReceived
from engine.core.events import MachineFinished
from engine.core.events import OperatorCommand
from engine.core.events import PositionSnapshot
from engine.core.intents import Halt
from engine.core.intents import QueryPositions
from engine.core.intents import SendAlert
from machines.base import PureMachine
from machines.base import State
from machines.params import PER_CYCLE
from machines.params import CycleParams
from machines.position_work import PositionWork
from machines.pricing import fills_agree
from machines.pricing import read_lags_fills
from machines.restore import RestoreMachine


class SessionMachine(PureMachine):
    """Supervisor: syncing → idle → checking → building → holding → unwinding → idle …

    Past MAX_DAILY_LOSS (UTC day) checking goes to parked: flat, one deadline at the
    next UTC midnight, one alert; then checking again. A failed child goes to recovering
    (emergency exit); two failures in a row, an exhausted exit or a failed sync go to
    halted (sticky); a stop goes to finishing
    (flatten and verify) → done.
    """

    syncing = State(initial=True)
    idle = State()
    checking = State()
    parked = State()  # MAX_DAILY_LOSS: flat, one deadline at the next UTC midnight
    building = State()
    holding = State()
    unwinding = State()
    recovering = State()
    finishing = State()
    halted = State()
    done = State(final=True)

    machine_finished = (
        syncing.to(finishing, cond=["outcome_is_synced", "stop_requested"])
        | syncing.to(idle, cond="outcome_is_synced")
        | syncing.to(recovering, cond="outcome_is_exposed")
        | syncing.to(halted)
        | building.to(holding, cond=["outcome_is_done"], unless="stop_requested")
        | building.to(finishing, cond="stop_requested")
        | building.to(idle, cond="outcome_is_aborted", unless="too_many_aborts")
        | building.to(halted, cond="outcome_is_aborted")
        | building.to(recovering)
        | unwinding.to(finishing, cond=["outcome_is_done", "no_more_cycles"], on="count_cycle")
        | unwinding.to(idle, cond="outcome_is_done", on="count_cycle")
        | unwinding.to(recovering)
        # The exit failed: it has already emitted HALT and its critical alert.
        | recovering.to(halted, cond="outcome_is_failed")
        | recovering.to(halted, cond="second_failure")
        | recovering.to(finishing, cond="stop_requested")
        | recovering.to(idle)
        | finishing.to(halted, cond="foreign_seen")
        | finishing.to(done, cond="outcome_is_done")
        | finishing.to(halted)
    )
    # Each deadline is its own event (armed on entry, disarmed when its state is left).
    pause_over = idle.to(checking)
    answer_timeout = checking.to(recovering)
    recheck_due = checking.to(None, on="ask_positions")
    midnight_passed = parked.to(checking)
    hold_over = holding.to(unwinding)
    # While exposed, the exposure guard asks the venue on a short period.
    audit_due = holding.to(None, on="audit_exposure")
    # `answers_me`: the session outlives its requests and re-asks (a lagging read, every
    # audit), so only the answer to its latest question decides.
    position_snapshot = (
        checking.to(finishing, cond=["answers_me", "stop_requested"])
        | checking.to(idle, cond=["answers_me", "entries_blocked"], on="note_blocked")
        | checking.to(parked, cond=["answers_me", "daily_loss_exceeded"], on="note_daily_loss")
        | holding.to(recovering, cond=["answers_me", "unhedged"], on="alert_unhedged")
        | holding.to(recovering, cond=["answers_me", "stop_loss_hit"], on="alert_stop_loss")
        # The audit's answer within tolerance: keep holding (the ledger has it already).
        | holding.to(None, cond="answers_me")
        # A read that lacks reported fills lags: no BUILD on it; asked again, backing
        # off, within the lag budget (issue 11).
        | checking.to(None, cond=["answers_me", "read_lags"], on="ask_later")
        | checking.to(building, cond=["answers_me", "venue_flat", "read_agrees"])
        | checking.to(recovering, cond="answers_me")
    )
    # A fill for an order the engine never placed (RELIABILITY D6, V9): a critical alert,
    # no new cycles; at the next safe point the book is re-read from the venue, flattened
    # and verified, then HALT (an operator looks at the account before resuming).
    fill_received = (
        idle.to(finishing, cond="foreign_fill", on="alert_foreign_fill")
        | checking.to(finishing, cond="foreign_fill", on="alert_foreign_fill")
        | holding.to(finishing, cond="foreign_fill", on="alert_foreign_fill")
        | syncing.to(None, cond="foreign_fill", on="alert_foreign_fill")
        | building.to(None, cond="foreign_fill", on="alert_foreign_fill")
        | unwinding.to(None, cond="foreign_fill", on="alert_foreign_fill")
        | recovering.to(None, cond="foreign_fill", on="alert_foreign_fill")
        | finishing.to(None, cond="foreign_fill", on="alert_foreign_fill")
        | halted.to(None, cond="foreign_fill", on="alert_foreign_fill")
    )
    operator_command = (
        idle.to(finishing, cond="is_stop")
        | checking.to(finishing, cond="is_stop")
        | parked.to(finishing, cond="is_stop")
        | holding.to(finishing, cond="is_stop")
        | halted.to(syncing, cond="is_resume", on="clear_halt")
        # Elsewhere a stop is remembered and honoured at the next safe point; a second
        # stop changes nothing (it must not skip verification).
        | syncing.to(None, cond="is_stop", on="remember_stop")
        | building.to(None, cond="is_stop", on="remember_stop")
        | unwinding.to(None, cond="is_stop", on="remember_stop")
        | recovering.to(None, cond="is_stop", on="remember_stop")
    )

    def setup(self, **params: Any) -> None:
        self.template: CycleParams = params["params"]
        # The template's fields that every cycle shares, read once: `_params` builds each
        # cycle's parameters from them (attrs.evolve would read all ~40 on every spawn).
        self.shared_fields: dict[str, Any] = {
            f.name: getattr(self.template, f.name)
            for f in attrs.fields(CycleParams)
            if f.name not in PER_CYCLE
        }
        self.cycles: int | None = params.get("cycles")
        self.hold_s = Decimal(params.get("hold_s", "2"))
        self.pause_s = Decimal(params.get("pause_s", "0.5"))
        self.pause_jitter_s = Decimal(params.get("pause_jitter_s", "0"))
        self.max_aborts = int(params.get("max_aborts", 5))
        self.audit_s = Decimal(params.get("audit_s", "1"))
        self.max_daily_loss_usd = Decimal(params.get("max_daily_loss_usd", "500"))
        self.stop_loss_pct = Decimal(params.get("stop_loss_pct", "5"))
        # UTC seconds at engine time zero, from the run header: the day boundary for
        # MAX_DAILY_LOSS without reading a clock here.
        self.epoch_utc_s = Decimal(params.get("epoch_utc_s", "0"))
        self.day = -1
        self.day_start_pnl = Decimal(0)
        self.loss_alerted_day = -1
        self.cycle = 0
        self.cycles_completed = 0
        self.failures = 0  # consecutive failed cycles
        self.aborts = 0
        self.emergency_exits = 0
        self.stop = False
        self.halt_reason = ""
        self.carry_usd = Decimal(0)
        self.request_id = ""
        self.child: PureMachine | None = None
        # build outcomes counted by kind (done / aborted / failed): bounded over any run
        self.outcomes: dict[str, int] = {}
        self.cycle_failed = False
        self.lag_since: int | None = None  # engine ns the entry check's read began to lag
        self.foreign_fills: list[str] = []  # fill ids for orders the engine never placed
        self.lag_asks = 0
        # Engine ns this cycle's BUILD ended verified at target (its final read): UNWIND
        # may place from that belief alongside its read (`PositionWork.belief_gap`).
        self.build_verified_ns: int | None = None

    # -- guards -------------------------------------------------------------------------
    def _outcome(self, ev: MachineFinished, want: str) -> bool:
        return ev.outcome == want

    def outcome_is_synced(self, ev: MachineFinished) -> bool:
        return self._outcome(ev, "synced")

    def outcome_is_exposed(self, ev: MachineFinished) -> bool:
        return self._outcome(ev, "exposed")

    def outcome_is_done(self, ev: MachineFinished) -> bool:
        return self._outcome(ev, "done")

    def outcome_is_aborted(self, ev: MachineFinished) -> bool:
        return self._outcome(ev, "aborted")

    def outcome_is_failed(self, ev: MachineFinished) -> bool:
        return self._outcome(ev, "failed")

    def too_many_aborts(self, ev: MachineFinished) -> bool:
        return self.aborts + 1 >= self.max_aborts

    def second_failure(self, ev: MachineFinished) -> bool:
        return self.cycle_failed and self.failures + 1 >= 2

    def stop_requested(self) -> bool:
        return self.stop

    def no_more_cycles(self) -> bool:
        return self.stop or (self.cycles is not None and self.cycles_completed + 1 >= self.cycles)

    def answers_me(self, ev: PositionSnapshot) -> bool:
        return ev.request_id == self.request_id

    def venue_flat(self, ev: PositionSnapshot) -> bool:
        return all(self._flat(leg.product_id) for leg in self.template.legs)

    def foreign_fill(self, ev: FillReceived) -> bool:
        """A fill for an order this engine never placed: the ledger booked it as such
        (not a late duplicate of a fill of an order it has since forgotten)."""
        if self.ledger.order(ev.order_id) is not None:
            return False
        return any(f.fill_id == ev.fill_id for f in self.ledger.unknown_fills)

    def foreign_seen(self) -> bool:
        return bool(self.foreign_fills)

    def read_agrees(self, ev: PositionSnapshot) -> bool:
        return fills_agree(self.ledger, self.template.legs, ev)

    def read_lags(self, ev: PositionSnapshot) -> bool:
        budget = self.template.position_lag_budget_s
        waited = Decimal(self.ledger.now_ns - (self.lag_since or self.ledger.now_ns)) / 10**9
        if waited >= budget:
            return False
        return read_lags_fills(self.ledger, self.template.legs, ev, budget)

    def entries_blocked(self) -> bool:
        # New entries obey the breaker and health machines; exits never do.
        return self.ledger.state_of("breaker") == ("open",) or self.ledger.state_of(
            "health"
        ) not in ((), ("normal",))

    def unhedged(self, ev: PositionSnapshot) -> bool:
        return self.unhedged_usd() > self.tolerance_usd()

    def stop_loss_hit(self, ev: PositionSnapshot) -> bool:
        return self.open_pnl_usd() < -self.stop_loss_usd()

    def daily_loss_exceeded(self, ev: PositionSnapshot) -> bool:
        return self.loss_today() > self.max_daily_loss_usd

    def is_stop(self, ev: OperatorCommand) -> bool:
        return ev.command in ("stop", "flatten")

    def is_resume(self, ev: OperatorCommand) -> bool:
        return ev.command == "resume"

    # -- actions ------------------------------------------------------------------------
    def on_enter_syncing(self) -> None:
        self.child = self.spawn(
            RestoreMachine, self._child_id("restore"), params=self._params(self.cycle)
        )

    def on_enter_idle(self) -> None:
        if self.cycles is not None and self.cycles_completed >= self.cycles:
            # Nothing left to do: wait for the pause, then finish via checking → stop.
            self.stop = True
        self.arm("pause_over", self._pause())

    def on_enter_checking(self) -> None:
        self.roll_day()
        self.lag_since = None
        self.lag_asks = 0
        self.ask_positions()

    def ask_positions(self) -> None:
        self.request_id = self.next_id("q")
        self.emit(QueryPositions(request_id=self.request_id, product_ids=self.template.product_ids))
        self.arm("answer_timeout", self.template.verify_timeout_s)

    def on_enter_parked(self) -> None:
        # One deadline, not a poll: the venue is not asked again until the new UTC day.
        self.arm("midnight_passed", self.seconds_to_midnight())

    def on_enter_building(self) -> None:
        self.cycle += 1
        self.child = self.spawn(
            PositionWork, self._child_id("build"), params=self._params(self.cycle), purpose="build"
        )

    def on_exit_building(self, ev: Any = None) -> None:
        if isinstance(ev, MachineFinished):
            self.outcomes[ev.outcome] = self.outcomes.get(ev.outcome, 0) + 1
            self.aborts = self.aborts + 1 if ev.outcome == "aborted" else 0
            residual = getattr(self.child, "residual_usd", None)
            verified = getattr(self.child, "done_ns", None)
            self.build_verified_ns = verified if ev.outcome == "done" else None
            if ev.outcome == "done" and isinstance(residual, Decimal):
                self.carry_usd = residual

    def on_enter_holding(self) -> None:
        self.arm("hold_over", self.hold_s)
        self.arm("audit_due", self.audit_s)

    def audit_exposure(self) -> None:
        self.request_id = self.next_id("q")
        self.emit(QueryPositions(request_id=self.request_id, product_ids=self.template.product_ids))
        self.arm("audit_due", self.audit_s)

    def alert_unhedged(self) -> None:
        exposure = self.unhedged_usd()
        self.emit(
            SendAlert(
                event="exposure_above_tolerance",
                severity="critical",
                message=f"[EMERGENCY] unhedged {exposure} USD > {self.tolerance_usd()} USD",
                exposure_usd=exposure,
                state="holding",
                action="emergency exit: flatten both legs and verify",
            )
        )

    def alert_stop_loss(self) -> None:
        pnl = self.open_pnl_usd()
        self.emit(
            SendAlert(
                event="stop_loss",
                severity="critical",
                message=f"[EMERGENCY] open PnL {pnl} USD below stop -{self.stop_loss_usd()} USD",
                exposure_usd=self._exposure_usd(),
                state="holding",
                action="emergency exit: flatten both legs and verify",
            )
        )

    def alert_foreign_fill(self, ev: FillReceived) -> None:
        if ev.fill_id in self.foreign_fills:
            return
        self.foreign_fills.append(ev.fill_id)
        self.stop = True  # no new cycles; flatten and verify at the next safe point
        self.emit(
            SendAlert(
                event="unknown_order_fill",
                severity="critical",
                message=(
                    f"[EMERGENCY] fill {ev.fill_id} of {ev.side} {ev.qty} on product "
                    f"{ev.product_id} at {ev.price} for order {ev.order_id}, which this engine "
                    "never placed"
                ),
                exposure_usd=self._exposure_usd(),
                state="/".join(self.state_ids),
                action="no new cycles: re-read positions from the venue, flatten, verify, HALT",
            )
        )

    def ask_later(self) -> None:
        if self.lag_since is None:
            self.lag_since = self.ledger.now_ns
            self.note("position read lags the reported fills: no BUILD, asking again")
        self.lag_asks += 1
        p = self.template
        delay = min(p.verify_retry_s * 2 ** min(self.lag_asks - 1, 16), p.verify_timeout_s)
        self.disarm("answer_timeout")
        self.arm("recheck_due", delay)

    def note_daily_loss(self) -> None:
        self.roll_day()
        loss = self.loss_today()
        self.note("entry refused: MAX_DAILY_LOSS", loss_usd=str(loss))
        if self.loss_alerted_day != self.day:
            self.loss_alerted_day = self.day
            self.emit(
                SendAlert(
                    event="daily_loss_limit",
                    severity="warning",
                    message=f"[CIRCUIT] daily loss {loss} USD > {self.max_daily_loss_usd} USD",
                    state="parked",
                    action="flat and parked: no new cycles until UTC midnight "
                    f"(in {self.seconds_to_midnight():.0f} s)",
                )
            )

    def on_enter_unwinding(self) -> None:
        self.child = self.spawn(
            PositionWork,
            self._child_id("unwind"),
            params=self._params(self.cycle),
            purpose="unwind",
            verified_ns=self.build_verified_ns,
        )
        self.build_verified_ns = None  # one UNWIND per BUILD

    def count_cycle(self) -> None:
        self.cycles_completed += 1
        self.failures = 0

    def on_enter_recovering(self, ev: Any = None, source: Any = None) -> None:
        # A residual found by restore is not a failed cycle; a failed child or exposure is.
        self.cycle_failed = getattr(source, "id", "") != "syncing"
        self.emergency_exits += 1
        reason = f"recovery after {getattr(ev, 'outcome', getattr(ev, 'kind', 'failure'))}"
        self.child = self.spawn(
            PositionWork,
            self._child_id("exit"),
            params=self._params(self.cycle),
            purpose="exit",
            reason=reason,
        )

    def on_exit_recovering(self, ev: Any = None) -> None:
        if isinstance(ev, MachineFinished) and ev.outcome == "done" and self.cycle_failed:
            self.failures += 1

    def on_enter_finishing(self) -> None:
        self.spawn_finishing_exit()

    def spawn_finishing_exit(self) -> None:
        self.child = self.spawn(
            PositionWork,
            self._child_id("flatten"),
            params=self._params(self.cycle),
            purpose="exit",
            reason="stop: flatten and verify",
            announce=False,
        )

    def on_enter_halted(self, ev: Any = None, source: Any = None) -> None:
        outcome, came_from = getattr(ev, "outcome", ""), getattr(source, "id", "")
        # An emergency exit (recovering, or the stop's flatten) that failed is exhausted.
        exhausted = outcome == "failed" and came_from in ("recovering", "finishing")
        self.halt_reason = (
            f"fills for orders this engine never placed ({', '.join(self.foreign_fills[:3])})"
            if self.foreign_fills and outcome == "done"
            else "emergency exit budget exhausted"
            if exhausted
            else "two consecutive failed cycles"
            if outcome == "done"
            else self._halt_cause(came_from, getattr(ev, "machine", "?"), outcome)
        )
        exposure = self._exposure_usd()
        if exhausted:
            return  # the emergency exit already emitted Halt and its critical alert
        self.emit(Halt(reason=self.halt_reason, exposure_usd=exposure))
        self.emit(
            SendAlert(
                event="halt",
                severity="critical",
                message=f"[CIRCUIT] HALT: {self.halt_reason}",
                exposure_usd=exposure,
                state="halted",
                action="no new entries until an operator resumes",
            )
        )

    def _halt_cause(self, source: str, child: str, outcome: str) -> str:
        """Which machine ended how, and what that means, for an operator."""
        ended = f"{child} ended '{outcome or 'unknown'}'"
        if source == "syncing":
            return f"session: start-up sync failed ({ended}): positions and orders unknown"
        if source == "building":
            return (
                f"session: {self.aborts + 1} BUILDs in a row refused ({ended}); "
                f"max_aborts is {self.max_aborts}"
            )
        if source == "finishing":
            return f"session: the stop's flatten did not verify flat ({ended})"
        return f"session: {source or 'unknown state'}: {ended}"

    def clear_halt(self) -> None:
        self.failures = 0
        self.aborts = 0
        self.halt_reason = ""
        self.note("operator resumed after halt")

    def note_blocked(self) -> None:
        self.note(
            "entry blocked",
            breaker=list(self.ledger.state_of("breaker")),
            health=list(self.ledger.state_of("health")),
        )

    def remember_stop(self) -> None:
        self.stop = True
        self.note("stop requested: will flatten at the next safe point")

    # -- helpers ------------------------------------------------------------------------
    def _child_id(self, kind: str) -> str:
        return f"{kind}:{self.next_id()}"

    def _params(self, cycle: int) -> CycleParams:
        legs = self.template.legs
        # Odd cycles: long the first symbol, short the second; even cycles: the reverse.
        long, short = legs if cycle % 2 == 1 or cycle == 0 else (legs[1], legs[0])
        return CycleParams(
            **self.shared_fields, cycle=cycle, long=long, short=short, carry_usd=self.carry_usd
        )

    def _pause(self) -> Decimal:
        # Deterministic jitter (no randomness in machines): a fraction from the cycle number.
        if not self.pause_jitter_s:
            return self.pause_s
        frac = Decimal((self.cycle * 7919) % 1000) / 1000
        return self.pause_s + self.pause_jitter_s * frac

    def _flat(self, product_id: int) -> bool:
        pos = self.ledger.venue_position(product_id)
        if pos is None:
            return False
        leg = next((g for g in self.template.legs if g.product_id == product_id), None)
        step = leg.size_increment if leg is not None else Decimal(0)
        return flatness.is_dust(
            pos, flatness.mid_of(self.ledger.quote(product_id)), self.template.dust_usd, step
        )

    def _utc_day(self) -> int:
        return int((self.epoch_utc_s + Decimal(self.ledger.now_ns) / 10**9) // 86400)

    def roll_day(self) -> None:
        """Action: a new UTC day starts its loss count from the realised PnL now."""
        day = self._utc_day()
        if day != self.day:
            self.day, self.day_start_pnl = day, self.ledger.realized_pnl

    def loss_today(self) -> Decimal:
        """Realised loss (fees included) since the last UTC midnight of engine time. Pure
        (guards read it): a day not rolled yet has lost nothing so far."""
        if self._utc_day() != self.day:
            return Decimal(0)
        return self.day_start_pnl - self.ledger.realized_pnl

    def seconds_to_midnight(self) -> Decimal:
        """Engine seconds until the next UTC midnight (the day boundary of loss_today)."""
        now_s = self.epoch_utc_s + Decimal(self.ledger.now_ns) / 10**9
        return (now_s // 86400 + 1) * 86400 - now_s

    def stop_loss_usd(self) -> Decimal:
        return self.template.notional_usd * self.stop_loss_pct / 100

    def open_pnl_usd(self) -> Decimal:
        """Mark-to-mid PnL of the open pair: venue positions against our fills' entries."""
        pnl = Decimal(0)
        for leg in self.template.legs:
            pos = self.ledger.venue_position(leg.product_id) or Decimal(0)
            quote = self.ledger.quote(leg.product_id)
            entry = self.ledger.book(leg.product_id).entry_price
            if quote is not None and pos and entry:
                pnl += pos * (quote.mid - entry)
        return pnl

    def tolerance_usd(self) -> Decimal:
        return self.template.exposure_tolerance_usd

    def unhedged_usd(self) -> Decimal:
        """|net USD delta| of the two legs from the venue's last answer."""
        legs = [leg.product_id for leg in self.template.legs]
        return flatness.unhedged_usd(
            {pid: self.ledger.venue_position(pid) or Decimal(0) for pid in legs},
            {pid: flatness.mid_of(self.ledger.quote(pid)) for pid in legs},
        )

    def _exposure_usd(self) -> Decimal:
        """Open notional to state (HALT, alerts): per leg the larger of the venue's last
        answer and our own fills, so a lagging answer never understates it."""
        total = Decimal(0)
        for leg in self.template.legs:
            venue = self.ledger.venue_position(leg.product_id)
            said = abs(venue) if venue is not None else Decimal(0)
            pos = max(said, abs(self.ledger.position(leg.product_id)))
            quote = self.ledger.quote(leg.product_id)
            if quote is not None:
                total += abs(pos) * quote.mid
        return total
