"""UNWIND: close both legs from the venue's verified position; done only when it says flat.

First a position query (rule 5: size exits from the verified position, never from the
original order). Then a bounded ladder of reduce-only rounds, each with its deadline:
POST_ONLY at the touch (when the order style is post_only, at most
`post_only_attempts`), then IOC through the touch by `cross_bps`, escalating by
`repair_step_bps` (at most `unwind_ioc_attempts`), then one aggressive IOC ("market":
through the book by `market_max_slippage_bps`, by default the first exit-ladder step,
and never less than the last IOC rung; sliced by `max_slice_usd`). What is
still open is the verified start position plus this machine's verified fills. Once one
leg is closed the other skips any remaining post-only rung (no passive waiting while
unhedged). Ends `flat` after a position query shows |pos| within dust on both legs, or
`failed` (the session then runs the emergency exit).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.core import flatness
from engine.core.events import PositionSnapshot
from machines.base import PureMachine
from machines.base import State
from machines.params import CycleParams
from machines.params import LegSpec
from machines.policy import WorkPolicy
from machines.pricing import OrderRounds

ZERO = Decimal(0)


class UnwindMachine(OrderRounds, PureMachine):
    """UNWIND: read the verified position → reduce-only ladder → verify flat by position query.

    Ends `flat` (venue-verified) or `failed` (the session runs the emergency exit).
    """

    reading = State(initial=True)

    # placing: one rung of the ladder at a time
    working = State(initial=True)
    cancelling = State()
    deciding = State()
    backing_off = State()
    placing = State(states=[working, cancelling, deciding, backing_off])

    verifying = State()
    flat = State(final=True)
    failed = State(final=True)

    # A rung ends when all its orders are settled; the decision is taken at once. A rung
    # the venue refused outright (429) is retried after a back-off, a bounded number of
    # times; refused for longer than the exit budget, UNWIND fails and the session's
    # emergency exit takes over, flagged (N7), instead of backing off in silence.
    working.to(failed, cond=["round_refused", "refused_too_long"])
    working.to(backing_off, cond=["round_refused", "refusals_left"])
    working.to(deciding, cond="round_settled")
    cancelling.to(deciding, cond="round_settled")
    deciding.to(verifying, cond="nothing_open")
    # The hedge deadline: one leg open without the other for so long that another rung
    # could end past the exit budget; the session's emergency exit takes over, flagged.
    deciding.to(failed, cond="hedge_deadline_passed", on="stop_for_hedge")
    deciding.to(working, cond="rungs_left")
    deciding.to(verifying)  # ladder spent: the venue has the last word

    # Events a state does not take are consumed (noted): no catch-all transitions.
    # `is_mine`: an order id this engine never owned is broadcast (e.g. a foreign fill).
    fill_received = placing.to(None, cond="is_mine", on="record_fill")
    order_expired = placing.to(None, cond="is_mine", on="record_end")
    order_cancelled = placing.to(None, cond="is_mine", on="record_end")
    order_rejected = placing.to(None, cond="is_mine", on="record_reject")
    order_status = cancelling.to(None, cond=["is_mine", "says_open"], on="cancel_again") | (
        placing.to(None, cond="is_mine", on="record_status")
    )
    # `answers_me`: the answer to the latest position query, not an earlier one.
    venue_error = (
        placing.to(None, cond="is_mine", on="record_error")
        | reading.to(None, cond=["answers_me", "verify_left"], on="recheck_later")
        | reading.to(failed, cond="answers_me")
        | verifying.to(failed, cond=["answers_me", "refused_too_long"])
        | verifying.to(None, cond=["answers_me", "verify_left"], on="recheck_later")
        | verifying.to(failed, cond="answers_me")
    )
    position_snapshot = (
        # A read that lacks reported fills lags: asked again within the lag budget.
        reading.to(None, cond=["answers_me", "read_lags"], on="wait_for_lag")
        # Less exposure than our own fills imply: a lagging feed; ask again, bounded.
        | reading.to(
            None, cond=["answers_me", "venue_shows_less", "verify_left"], on="recheck_later"
        )
        | reading.to(flat, cond=["answers_me", "venue_flat", "read_agrees"])
        # A flat read the reported fills contradict is never "flat" (issue 11).
        | reading.to(failed, cond=["answers_me", "venue_flat"])
        | reading.to(placing, cond="answers_me", on="take_start")
        | verifying.to(None, cond=["answers_me", "read_lags"], on="wait_for_lag")
        | verifying.to(
            None, cond=["answers_me", "venue_shows_less", "verify_left"], on="recheck_later"
        )
        | verifying.to(flat, cond=["answers_me", "venue_flat", "read_agrees"])
        | verifying.to(
            None, cond=["answers_me", "lag_suspected", "verify_left"], on="recheck_later"
        )
        | verifying.to(failed, cond="answers_me")
    )
    # Named deadlines. Legs apart for the whole exit budget: whatever was being waited
    # for, the wait ends in `failed` (the session's emergency exit takes over, flagged).
    fills_timeout = working.to(failed, cond="hedge_budget_spent") | working.to(cancelling)
    backoff_timeout = backing_off.to(failed, cond="hedge_budget_spent") | (
        backing_off.to(working, on="retry_rung")
    )
    settle_timeout = (
        cancelling.to(failed, cond="hedge_budget_spent")
        | cancelling.to(None, cond="queries_left", on="chase_unsettled")
        | cancelling.to(failed)
    )
    requery_timeout = (
        working.to(failed, cond="hedge_budget_spent")
        | cancelling.to(failed, cond="hedge_budget_spent")
        | backing_off.to(failed, cond="hedge_budget_spent")
        | placing.to(None, on="requery_unknown")
    )
    recheck_timeout = (
        verifying.to(failed, cond="hedge_budget_spent")
        | reading.to(None, on="query_positions")
        | verifying.to(None, on="query_positions")
    )
    verify_timeout = (
        verifying.to(failed, cond="hedge_budget_spent")
        | reading.to(None, cond="verify_left", on="query_positions")
        | reading.to(failed)
        | verifying.to(None, cond="verify_left", on="query_positions")
        | verifying.to(failed)
    )

    def setup(self, **params: Any) -> None:
        self.p: CycleParams = params["params"]
        self.setup_rounds(params.get("policy") or WorkPolicy.unwind(self.p))
        self.same_rung = False
        self.start: dict[int, Decimal] = {}  # verified venue position when the unwind began
        self.reason = ""
        self.refused_since: int | None = None  # engine ns of the first 429 in a row

    # -- guards -------------------------------------------------------------------------------
    def nothing_open(self) -> bool:
        return all(self._dust(leg, self.open_qty(leg)) for leg in self.p.legs)

    def lag_suspected(self, ev: PositionSnapshot) -> bool:
        """Our verified fills closed everything while the venue does not say so (yet)."""
        return self.nothing_open()

    def rungs_left(self) -> bool:
        return self._next_rung() < len(self.rungs)

    def refusals_left(self) -> bool:
        return self.refusals < self.policy.max_refusals

    def refused_too_long(self) -> bool:
        """The venue has refused us (429) for at least the exit budget."""
        return self.refused_since is not None and self._refused_for() >= self._budget_ns()

    # -- actions --------------------------------------------------------------------------------
    def on_enter_reading(self) -> None:
        self.reset_lag()
        self.query_positions()

    def take_start(self, ev: PositionSnapshot) -> None:
        self.start = self._seen(ev)
        self.watch_hedge()
        self.note("unwinding from the verified position", positions=_strs(self.start))

    def on_enter_working(self) -> None:
        self.rung = self.rung if self.same_rung else self._next_rung()
        self.same_rung = False
        self.round += 1
        self.watch_hedge()
        rung = self.rungs[self.rung]
        # Close what is still open (verified start plus verified fills), reduce-only.
        wants = [(leg, -q) for leg in self.p.legs if not self._dust(leg, q := self.open_qty(leg))]
        self.place_round(rung, wants, rung.label)
        self.arm(self.policy.round_deadline, self.round_wait_s())

    def on_enter_backing_off(self) -> None:
        self.watch_hedge()
        self._refused()
        delay = min(self.backoff_delay(), self._budget_left())  # Retry-After, within budget
        self.note("rung refused by the venue; backing off", seconds=str(delay))
        self.arm("backoff_timeout", delay)

    def on_exit_working(self) -> None:
        if not self.orders.round_refused(self.round):
            self.refused_since = None  # the venue took this rung: no longer refused

    def recheck_later(self, ev: Any = None) -> None:
        if getattr(ev, "error_class", None) == "rate_limited":
            self._refused()
        super().recheck_later(ev)

    def recheck_cap(self) -> Decimal | None:
        # Refused (429): a re-ask waits for Retry-After, but never past the exit budget.
        return self._budget_left() if self.refused_since is not None else None

    def retry_rung(self) -> None:
        self.same_rung = True

    def on_enter_failed(self) -> None:
        self.cancel_unsettled()
        opened = {leg.symbol: str(self.open_qty(leg)) for leg in self.p.legs}
        self.note("unwind failed", open=opened, venue=self.venue_positions())

    # -- helpers --------------------------------------------------------------------------------
    def open_qty(self, leg: LegSpec) -> Decimal:
        """Signed amount still open: verified start position plus our verified fills."""
        pid = leg.product_id
        return self.start.get(pid, ZERO) + self.orders.signed_filled(pid)

    def net_usd(self) -> Decimal:
        """Signed notional still open on both legs together (apart when not near zero)."""
        return flatness.net_usd(
            {leg.product_id: self.open_qty(leg) for leg in self.p.legs},
            {
                leg.product_id: flatness.mid_of(self.ledger.quote(leg.product_id))
                for leg in self.p.legs
            },
        )

    def _refused(self) -> None:
        if self.refused_since is None:
            self.refused_since = self.ledger.now_ns

    def _refused_for(self) -> int:
        return 0 if self.refused_since is None else self.ledger.now_ns - self.refused_since

    def _budget_left(self) -> Decimal:
        return max(Decimal(self._budget_ns() - self._refused_for()) / 1_000_000_000, ZERO)

    def _budget_ns(self) -> int:
        return int(self.p.exit_budget_s * 1_000_000_000)

    def _next_rung(self) -> int:
        one_closed = any(self._dust(leg, self.open_qty(leg)) for leg in self.p.legs)
        return self.next_rung(skip_passive=one_closed)


def _strs(values: dict[int, Decimal]) -> dict[str, str]:
    return {str(k): str(v) for k, v in values.items()}
