"""HEALTH: how much trading the venue connection allows right now.

normal: everything. degraded: the stream is down and REST carries on, so no new
BUILD. minimal: rate-limited or failing: exits only. Recovery needs the stream back
and a quiet period without 429s. HALT is the session's, not this machine's.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.core.events import ConnectionChanged
from engine.core.events import VenueError
from machines.base import PureMachine
from machines.base import State


class HealthMachine(PureMachine):
    """normal ⇄ degraded (stream down) ⇄ minimal (rate-limited: exits only)."""

    normal = State(initial=True)
    degraded = State()
    minimal = State()

    connection_changed = (
        normal.to(degraded, cond="stream_down")
        | degraded.to(normal, cond="stream_up")
        | minimal.to(None, cond="stream_up", on="mark_stream_up")
        | minimal.to(None, cond="stream_down", on="mark_stream_down")
    )
    venue_error = (
        normal.to(minimal, cond="rate_limited")
        | degraded.to(minimal, cond="rate_limited")
        | minimal.to(None, cond="rate_limited", on="extend_quiet")
    )
    quiet_over = minimal.to(normal, cond="stream_is_up") | minimal.to(degraded)

    def setup(self, **params: Any) -> None:
        self.quiet_s = Decimal(params.get("quiet_s", 10))
        self.stream_ok = True

    def stream_down(self, ev: ConnectionChanged) -> bool:
        return ev.channel == "ws" and ev.state != "connected"

    def stream_up(self, ev: ConnectionChanged) -> bool:
        return ev.channel == "ws" and ev.state == "connected"

    def stream_is_up(self) -> bool:
        return self.stream_ok

    def rate_limited(self, ev: VenueError) -> bool:
        return ev.error_class == "rate_limited"

    def mark_stream_up(self) -> None:
        self.stream_ok = True

    def mark_stream_down(self) -> None:
        self.stream_ok = False

    def on_enter_degraded(self) -> None:
        self.stream_ok = False

    def on_enter_normal(self) -> None:
        self.stream_ok = True

    def on_enter_minimal(self, ev: VenueError | None = None) -> None:
        self.extend_quiet(ev)

    def extend_quiet(self, ev: VenueError | None = None) -> None:
        wait = self.quiet_s
        if ev is not None and ev.retry_after_s is not None:
            wait = max(wait, ev.retry_after_s)
        self.arm("quiet_over", wait)
