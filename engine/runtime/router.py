"""Where each committed intent goes once the journal holds it: a HALT sticks to the
account and is logged; an alert goes to the Alerter; everything else to the venue (each
order counted, past the `placing` crash point)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.intents import Halt
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import SendAlert
from engine.ops.alerts import Alert
from engine.runtime.account import write_halt

if TYPE_CHECKING:
    from engine.runtime.run_session import Session

__all__ = ["route"]


def route(s: Session, intent: Intent) -> None:
    monitor = s.monitor
    assert monitor is not None
    if isinstance(intent, Halt):
        monitor.halt = intent
        if s.account is not None and s.engine.journal.path != ":memory:":
            try:
                write_halt(s.account, str(Path(s.engine.journal.path).resolve()), intent.reason)
            except OSError as exc:
                s.info(f"[CIRCUIT] cannot record the halt for the account: {exc}")
        s.info(
            f"[CIRCUIT] HALT: {intent.reason} (open exposure {intent.exposure_usd} USD)",
            logging.ERROR,
            reason=intent.reason,
            exposure_usd=str(intent.exposure_usd),
        )
        return
    if isinstance(intent, SendAlert):
        monitor.alerts.append(intent)
        s.alerter.raise_alert(
            Alert(
                event=intent.event,
                severity=intent.severity,
                message=intent.message,
                pair=s.pair_name,
                exposure_usd=intent.exposure_usd,
                state=intent.state,
                action=intent.action,
                engine_ns=s.engine.now_ns,
                source="machines",
            )
        )
        return
    if isinstance(intent, PlaceOrder):
        monitor.orders_sent += 1
        if s.crash is not None:  # only under DNPAIR_CRASH_AT
            s.crash.placing(intent.order_id)
    s.venue.submit(intent)
