"""How long each machine may live: its own deadlines, bounded retries and escalation
budget, derived from the run's CycleParams (used by the chaos invariants)."""

from __future__ import annotations

from decimal import Decimal

import attrs

from machines.params import CycleParams
from machines.policy import WorkPolicy
from machines.pricing import MAX_ORDER_QUERIES

__all__ = ["MachineBounds"]

ZERO = Decimal(0)
RESTORE_QUERIES = 6  # RestoreMachine's default max_queries


@attrs.frozen
class MachineBounds:
    """Longest a machine may live, from its own deadlines and bounded retries (seconds).

    `retry_after_s` is the longest Retry-After the venue may send (a rate-limit window):
    machines honour it when they re-ask, so it stretches their bounds."""

    p: CycleParams
    retry_after_s: Decimal = ZERO
    slack_s: Decimal = Decimal(2)  # latencies, answers in flight when a deadline fires

    def _verify(self) -> Decimal:
        p = self.p
        per = p.verify_timeout_s + max(p.verify_retry_s, self.retry_after_s)
        return p.verify_attempts * per

    def _round(self) -> Decimal:
        p = self.p
        return p.fill_timeout_s + (MAX_ORDER_QUERIES + 1) * p.cancel_timeout_s

    def build(self) -> Decimal:
        # The round budget of the same policy the machine reads (machines.policy).
        rounds = WorkPolicy.build(self.p).max_rounds
        lag = self.p.position_lag_budget_s  # a verification waits out a lagging read
        return rounds * self._round() + self._verify() + lag + self.slack_s

    def unwind(self) -> Decimal:
        p, policy = self.p, WorkPolicy.unwind(self.p)
        backoff = policy.max_refusals * max(p.exit_attempt_timeout_s, self.retry_after_s)
        lag = 2 * p.position_lag_budget_s  # the start read and the final verification
        rounds = policy.max_rounds * self._round()
        return rounds + 2 * self._verify() + backoff + lag + self.slack_s

    def exit(self) -> Decimal:
        # The budget, then (orders settled, fills flat) the last read's lag budget.
        p, budget = self.p, WorkPolicy.exit(self.p).budget_s
        assert budget is not None
        return budget + p.position_lag_budget_s + p.verify_timeout_s + self.slack_s

    def restore(self) -> Decimal:
        lag = self.p.position_lag_budget_s  # a read lagging fills heard before a resume
        return RESTORE_QUERIES * (self.p.verify_timeout_s + self.retry_after_s) + lag + self.slack_s

    def for_machine(self, machine_id: str) -> Decimal | None:
        kind = machine_id.split(":", 1)[0]
        table = {
            "build": self.build,
            "unwind": self.unwind,
            "exit": self.exit,
            "flatten": self.exit,
            "restore": self.restore,
        }
        fn = table.get(kind)
        return fn() if fn is not None else None

    def exposure_limit(self) -> Decimal:
        """Unflagged exposure may last at most this long: a BUILD or UNWIND that cannot
        close an imbalance must fail (and the session flag it) within the exit budget,
        plus one verification's worth of slack."""
        p = self.p
        return p.exit_budget_s + p.verify_timeout_s + self.slack_s
