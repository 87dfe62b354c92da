"""BREAKER: stop opening risk while the venue keeps failing.

closed → open after N consecutive venue failures → half_open after a cool-down →
closed on the next success (or open again on the next failure). It blocks new
entries only: exits and cancels never wait for it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.core.events import VenueError
from engine.core.intents import SendAlert
from machines.base import PureMachine
from machines.base import State

# Answers that prove the venue is working again.
SUCCESS_KINDS = ("order_accepted", "position_snapshot", "open_orders_snapshot", "order_status")


class BreakerMachine(PureMachine):
    """closed → open (N consecutive failures) → half_open (cool-down) → closed | open."""

    closed = State(initial=True)
    open = State()
    half_open = State()

    venue_error = (
        closed.to(open, cond=["counts_as_failure", "threshold_reached"])
        | closed.to(None, cond="counts_as_failure", on="count_failure")
        | half_open.to(open, cond="counts_as_failure")
    )
    cooled_down = open.to(half_open)
    order_accepted = closed.to(None, on="reset") | half_open.to(closed)
    position_snapshot = closed.to(None, on="reset") | half_open.to(closed)
    open_orders_snapshot = closed.to(None, on="reset") | half_open.to(closed)
    order_status = closed.to(None, on="reset") | half_open.to(closed)

    def setup(self, **params: Any) -> None:
        self.threshold = int(params.get("threshold", 5))
        self.cooldown_s = Decimal(params.get("cooldown_s", 60))
        self.failures = 0

    def counts_as_failure(self, ev: VenueError) -> bool:
        # A 429 is backpressure, not a broken venue; health handles it.
        return ev.error_class in ("retryable", "unknown_outcome")

    def threshold_reached(self, ev: VenueError) -> bool:
        return self.failures + 1 >= self.threshold

    def count_failure(self) -> None:
        self.failures += 1

    def reset(self) -> None:
        self.failures = 0

    def on_enter_open(self) -> None:
        self.failures = 0
        self.arm("cooled_down", self.cooldown_s)
        self.emit(
            SendAlert(
                event="breaker_open",
                severity="warning",
                message=f"[CIRCUIT] breaker open after {self.threshold} venue failures",
                state="open",
                action=f"no new entries for {self.cooldown_s}s; exits still allowed",
            )
        )
