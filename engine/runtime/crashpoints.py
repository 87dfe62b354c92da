"""Crash points for the SIGKILL crash test (tests/crash/): `DNPAIR_CRASH_AT=POINT:N`
kills this process with SIGKILL at the N-th time POINT is reached.

Nothing here reads the environment by itself: the composition root
(engine/runtime/compose.py) asks `from_env(os.environ)` and, when a point is armed, injects
the hook's methods where they are called: `placing` in the intent router, `observe` as an
engine observer (both from `build_session`), `sent` as the Nado adapter's `on_sent`
callback (from `make_venue`, which may build a venue before the session exists; the two
hooks count disjoint points, so parsing the variable twice changes nothing). The adapter
imports nothing from here.
Without the variable there is no hook at all. machines/ never import this module.

Points:
- `after_intent_journaled`: a PlaceOrder is committed to the journal, not yet handed
  to the venue adapter (engine/runtime/router.py, `route`);
- `after_send_before_ack`: the venue answered a placement, the adapter has not yet
  reported the ack (the Nado adapter's `on_sent`, after the execute call returns);
- `between_ack_and_fill`: an `order_accepted` event is being journaled (observer);
- `mid_unwind`: like `after_send_before_ack`, for an order of an `unwind:*` machine;
- `mid_emergency`: likewise for an `exit:*` or `flatten:*` machine (emergency exit);
- `during_restore`: the restore machine's position or open-order answer is being
  journaled (observer; the record is not yet committed).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from collections.abc import Mapping

import attrs

from engine.core.journal import Record

__all__ = ["ENV", "POINTS", "CrashPoints", "from_env", "parse"]

ENV = "DNPAIR_CRASH_AT"
POINTS = (
    "after_intent_journaled",
    "after_send_before_ack",
    "between_ack_and_fill",
    "mid_unwind",
    "mid_emergency",
    "during_restore",
)
_EMERGENCY = ("exit", "flatten")
_RESTORE_ANSWERS = ('"position_snapshot"', '"open_orders_snapshot"')


def _sigkill(point: str, n: int) -> None:
    sys.stderr.write(f"[CRASH] SIGKILL at {point}:{n}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


@attrs.define
class CrashPoints:
    """One armed point: `kill` runs at its N-th occurrence (SIGKILL; tests pass a
    recorder). Each caller's points are disjoint, so two hooks parsed from the same
    spec (the runner's and the adapter's) count the same occurrences."""

    point: str
    n: int
    count: int = 0
    kill: Callable[[str, int], None] = _sigkill

    def reached(self, point: str) -> None:
        if point != self.point:
            return
        self.count += 1
        if self.count >= self.n:
            self.kill(point, self.n)

    def placing(self, order_id: str) -> None:
        """A committed PlaceOrder is about to be handed to the venue adapter."""
        self.reached("after_intent_journaled")

    def sent(self, order_id: str) -> None:
        """The venue answered a placement; its ack is not reported yet."""
        self.reached("after_send_before_ack")
        machine = order_id.split(":", 1)[0]
        if machine == "unwind":
            self.reached("mid_unwind")
        elif machine in _EMERGENCY:
            self.reached("mid_emergency")

    def observe(self, rec: Record) -> None:
        """An engine observer: called for every journal record before it is committed."""
        if rec.kind != "event":
            return
        if '"order_accepted"' in rec.payload:
            self.reached("between_ack_and_fill")
        elif (
            '"restore:' in rec.payload
            and any(k in rec.payload for k in _RESTORE_ANSWERS)
            and str(rec.data.get("request_id") or "").startswith("restore:")
        ):
            self.reached("during_restore")


def parse(text: str | None) -> CrashPoints | None:
    """`POINT:N` (N ≥ 1, default 1); None for an empty value. ValueError when malformed."""
    if not text:
        return None
    point, _, n_text = text.strip().partition(":")
    if point not in POINTS:
        raise ValueError(f"{ENV}={text!r}: unknown crash point (known: {', '.join(POINTS)})")
    try:
        n = int(n_text) if n_text else 1
    except ValueError:
        raise ValueError(f"{ENV}={text!r}: N must be an integer") from None
    if n < 1:
        raise ValueError(f"{ENV}={text!r}: N must be >= 1")
    return CrashPoints(point, n)


def from_env(env: Mapping[str, str]) -> CrashPoints | None:
    """The hook `DNPAIR_CRASH_AT` arms in `env`, or None (the usual case)."""
    return parse(env.get(ENV))
