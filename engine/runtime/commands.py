"""What an operator (the control socket) and the journal's disk can ask of a running
session: status, flatten/stop, resume; and the free-space guard that stops like an
operator would."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from engine.core.clock import NS_PER_S
from engine.core.events import OperatorCommand
from engine.ops.alerts import Alert
from engine.runtime.app import SESSION_ID

if TYPE_CHECKING:
    from engine.runtime.run_session import Session

__all__ = ["DISK_CHECK_S", "DiskGuard", "command"]

DISK_CHECK_S = 5  # engine seconds between free-space checks beside the journal


def command(s: Session, cmd: str) -> dict[str, Any]:
    """A command from the control socket (wall clock)."""
    halted = s.monitor is not None and s.monitor.halt is not None
    if cmd == "status":
        return {"ok": True, "message": "running", "status": s.snapshot()}
    if cmd in ("flatten", "stop"):
        s.stopping = True
        if halted:
            # Halted ignores stops: resume into a sync, which flattens when stopping.
            s.engine.submit(
                OperatorCommand(command="resume", reason=f"operator {cmd} while halted"),
                "operator",
            )
        s.engine.submit(OperatorCommand(command=cmd, reason="operator"), "operator")
        s.info(f"[OPERATOR] {cmd} requested over the control socket", logging.WARNING)
        return {
            "ok": True,
            "message": f"{cmd} accepted: cancelling, closing both legs and verifying flat",
        }
    if cmd == "resume":
        if not halted:
            return {"ok": False, "message": "not halted: nothing to resume"}
        s.engine.submit(OperatorCommand(command="resume", reason="operator"), "operator")
        s.info("[RECOVERY] operator resume requested: re-syncing with the venue")
        return {"ok": True, "message": "resume accepted: re-syncing with the venue first"}
    return {"ok": False, "message": f"unknown command {cmd!r}"}


class DiskGuard:
    """Journal space (RELIABILITY P5): below DN_MIN_FREE_DISK_MB free beside the journal,
    no new entries: alert once, then stop like an operator would (the session flattens
    and verifies; exits still have the reserve to journal into). Checked every
    DISK_CHECK_S of engine time."""

    def __init__(self) -> None:
        self.stop: str | None = None  # why the run stopped for journal space
        self._next_ns = 0

    def check(self, s: Session) -> None:
        path = s.engine.journal.path
        now = s.engine.now_ns
        if path == ":memory:" or self.stop or now < self._next_ns:
            return
        self._next_ns = now + DISK_CHECK_S * NS_PER_S
        try:
            free = shutil.disk_usage(Path(path).resolve().parent).free
        except OSError:
            return
        floor = int(s.settings.min_free_disk_mb) * 1024 * 1024
        if free >= floor:
            return
        self.stop = (
            f"free disk space beside the journal {free // (1024 * 1024)} MB < "
            f"DN_MIN_FREE_DISK_MB={s.settings.min_free_disk_mb}: no new cycles; flattened "
            "and stopped"
        )
        s.raise_alert(
            Alert(
                event="disk_low",
                severity="critical",
                message=self.stop,
                exposure_usd=s.monitor.unhedged_usd() if s.monitor else None,
                state="/".join(s.engine.ledger.state_of(SESSION_ID)) or "?",
                action="no new entries: cancelling, closing both legs, verifying flat, "
                "stopping; free space, then start again",
                engine_ns=now,
                source="engine",
            )
        )
        if not s.stopping:
            s.stopping = True
            s.engine.submit(OperatorCommand(command="stop", reason="disk low"), "operator")
