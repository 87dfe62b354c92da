"""An order's lifecycle, declared once: a plain state table, NautilusTrader-style.

One holder steps an order's state through this table: the ledger
(`engine.core.ledger.OrderRecord.state`), with the venue's facts (accepted, fills,
cancel/expiry acks with or without the filled amount, rejects, order statuses, a place
request's error) and the engine's cancel requests, and nothing else holds it. Working
machines read it there, once they have taken each word about the order
(`machines.pricing`). A plain dict, not a StateChart: one
lookup per event, nothing built per order.

A word the table does not declare for the current state changes nothing (a late or
repeated ack, a cancel ack for a filled order): the venue's words arrive late, twice and
out of order, and the ledger keeps the amounts as data beside the state.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "EVENTS",
    "OPEN",
    "STATES",
    "TERMINAL",
    "TRANSITIONS",
    "edges",
    "step",
]

# -- states ---------------------------------------------------------------------------------
PENDING = "pending"  # sent, no word from the venue yet (NautilusTrader: SUBMITTED)
UNKNOWN = "unknown"  # the placement's outcome is unknown: ask before anything is resent
ACCEPTED = "accepted"  # resting / working on the venue
PARTIALLY_FILLED = "partially_filled"
PENDING_CANCEL = "pending_cancel"  # a cancel was requested; fills may still come
UNCOUNTED = "uncounted"  # the venue said it stopped working, not how much filled: ask
FILLED = "filled"
CANCELLED = "cancelled"
EXPIRED = "expired"
REJECTED = "rejected"
DENIED = "denied"  # provably never took effect (refused before the book, or never found)

TERMINAL = frozenset({FILLED, CANCELLED, EXPIRED, REJECTED, DENIED})

# -- events (facts) -------------------------------------------------------------------------
EVENTS = (
    "accepted",
    "reported_open",  # a status query says it is open
    "outcome_unknown",  # the placement request failed with an unknown outcome
    "partially_filled",
    "filled",
    "cancel_requested",
    "cancelled",
    "expired",
    "rejected",
    "denied",
    "ended_uncounted",  # a cancel/expiry ack without the filled amount
)

_ENDS = {
    "filled": FILLED,
    "cancelled": CANCELLED,
    "expired": EXPIRED,
    "rejected": REJECTED,
    "denied": DENIED,
    "ended_uncounted": UNCOUNTED,
}
_WORKING = {"partially_filled": PARTIALLY_FILLED, "cancel_requested": PENDING_CANCEL, **_ENDS}

_TABLE: dict[str, dict[str, str]] = {
    PENDING: {
        "accepted": ACCEPTED,
        "reported_open": ACCEPTED,
        "outcome_unknown": UNKNOWN,
        **_WORKING,
    },
    # Cancelling an order of unknown outcome leaves it unknown: it is asked about first.
    UNKNOWN: {
        "accepted": ACCEPTED,
        "reported_open": ACCEPTED,
        **{k: v for k, v in _WORKING.items() if k != "cancel_requested"},
    },
    ACCEPTED: dict(_WORKING),
    PARTIALLY_FILLED: dict(_WORKING),
    PENDING_CANCEL: {
        **_ENDS,
        # The cancel is still requested: a partial fill or an "open" status (the cancel
        # has not landed yet) leaves the order pending its cancel.
        "partially_filled": PENDING_CANCEL,
        "reported_open": PENDING_CANCEL,
        # The placement's failure arrives after the cancel request: the outcome is unknown.
        "outcome_unknown": UNKNOWN,
    },
    # A later word with the amount settles it; an "open" status does not reopen it.
    UNCOUNTED: {k: v for k, v in _ENDS.items() if k != "ended_uncounted"},
    # Real-world edges: a fill that crossed the cancel or expiry on the wire, or that proves
    # a "refused" order reached the book, completes the order after its end.
    CANCELLED: {"filled": FILLED},
    EXPIRED: {"filled": FILLED},
    REJECTED: {"filled": FILLED},
    DENIED: {"filled": FILLED},
    FILLED: {},
}

TRANSITIONS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {state: MappingProxyType(row) for state, row in _TABLE.items()}
)
STATES = tuple(TRANSITIONS)
OPEN = frozenset(STATES) - TERMINAL


def step(state: str, event: str) -> str:
    """The state after `event`; an event the table does not declare changes nothing."""
    return TRANSITIONS[state].get(event, state)


def edges() -> list[tuple[str, str, str]]:
    """Every declared (source, event, target), in declaration order (for the diagram)."""
    return [(s, e, t) for s, row in TRANSITIONS.items() for e, t in row.items()]
