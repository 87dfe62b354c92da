"""Crash points for the SIGKILL crash test (tests/crash/): `DNPAIR_CRASH_AT=POINT:N`
kills this process with SIGKILL at the N-th time POINT is reached. Without the variable
every function here is a no-op. Only the runner (engine/run.py) and the Nado adapter's
send path call in; machines/ never import this module.

Points:
- `after_intent_journaled`: a PlaceOrder is committed to the journal, not yet handed
  to the venue adapter (engine/run.py, Session.send);
- `after_send_before_ack`: the venue answered a placement, the adapter has not yet
  reported the ack (adapters/nado/venue.py, after the execute call returns);
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

import attrs

from engine.journal import Record

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


@attrs.define
class Armed:
    point: str
    n: int
    count: int = 0


def parse(text: str | None) -> Armed | None:
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
    return Armed(point, n)


_armed: Armed | None = parse(os.environ.get(ENV))


def arm(text: str | None) -> None:
    """Re-read a spec (tests); None disarms."""
    global _armed
    _armed = parse(text)


def reached(point: str) -> None:
    armed = _armed
    if armed is None or armed.point != point:
        return
    armed.count += 1
    if armed.count >= armed.n:
        sys.stderr.write(f"[CRASH] SIGKILL at {point}:{armed.n}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def placing(order_id: str) -> None:
    """A committed PlaceOrder is about to be handed to the venue adapter."""
    if _armed is not None:
        reached("after_intent_journaled")


def sent(order_id: str) -> None:
    """The venue answered a placement; its ack is not reported yet."""
    if _armed is None:
        return
    reached("after_send_before_ack")
    machine = order_id.split(":", 1)[0]
    if machine == "unwind":
        reached("mid_unwind")
    elif machine in _EMERGENCY:
        reached("mid_emergency")


def observe(rec: Record) -> None:
    """An engine observer: called for every journal record before it is committed."""
    if _armed is None or rec.kind != "event":
        return
    if '"order_accepted"' in rec.payload:
        reached("between_ack_and_fill")
    elif (
        '"restore:' in rec.payload
        and any(k in rec.payload for k in _RESTORE_ANSWERS)
        and str(rec.data.get("request_id") or "").startswith("restore:")
    ):
        reached("during_restore")
