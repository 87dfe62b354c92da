"""Live status: what the engine is doing, as one snapshot and as a terminal view.

`snapshot_live(...)` reads a running engine (machines, their states and the deadlines
they have armed, positions, unhedged notional, PnL, the last log lines and alerts);
`snapshot_fold(fold)` gives the same shape from a journal alone (`dnpair status`). Both
are plain JSON-able dicts, so the control socket can hand one to another process.
`render(snapshot)` draws it with rich; `LiveView` refreshes it a few times a second
in a terminal from an asyncio task (no thread). When stdout is not a terminal, `dnpair
run` prints plain log lines instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine.core.clock import NS_PER_S
from engine.core.flatness import mid_of
from engine.core.flatness import unhedged_usd
from engine.core.ledger import Ledger
from engine.core.loop import Engine
from engine.ops.trades import RunFold

__all__ = ["LiveView", "render", "render_text", "snapshot_fold", "snapshot_live"]

ZERO = Decimal(0)


def _s(ns: int) -> str:
    return f"{Decimal(ns) / NS_PER_S:.3f}"


def _positions(ledger: Ledger, symbols: dict[int, str]) -> tuple[list[dict[str, Any]], Decimal]:
    rows = []
    positions: dict[int, Decimal] = {}
    mids: dict[int, Decimal | None] = {}
    for pid, symbol in symbols.items():
        qty = positions[pid] = ledger.best_position(pid)
        mid = mids[pid] = mid_of(ledger.quote(pid))
        value = qty * mid if mid is not None else None
        venue = ledger.venue_position(pid)
        rows.append(
            {
                "symbol": symbol,
                "qty": str(qty),
                "venue_qty": None if venue is None else str(venue),
                "mid": None if mid is None else str(mid),
                "notional_usd": None if value is None else str(value.quantize(Decimal("0.01"))),
            }
        )
    return rows, unhedged_usd(positions, mids)


def _alerts(fold: RunFold, n: int = 5) -> list[dict[str, Any]]:
    return [
        {
            "t": _s(a.ts_ns),
            "severity": a.severity,
            "event": a.event,
            "message": a.message,
            "exposure_usd": None if a.exposure_usd is None else str(a.exposure_usd),
            "action": a.action,
        }
        for a in list(fold.alerts)[-n:]
    ]


def _header(fold: RunFold, now_ns: int) -> dict[str, Any]:
    cfg = fold.config
    pair = "-".join(str(s).removesuffix("-PERP") for s in cfg.get("pair", []))
    completed = fold.outcomes.get("completed", 0) + fold.outcomes.get("recovered", 0)
    return {
        "pair": pair,
        "venue": cfg.get("venue", ""),
        "run": fold.run,
        "engine_s": _s(now_ns),
        "cycles_requested": cfg.get("cycles"),
        "cycles_closed": completed,
        "halted": fold.halted,
        "halt_reason": fold.halt_reason,
        "ws_connected": fold.ws_connected,
        "journal_seq": fold.last_seq,
        "counters": {
            "orders": fold.counters.orders,
            "fills": fold.counters.fills,
            "rejects": fold.counters.rejects,
            "rate_limited": fold.counters.rate_limited,
            "reconnects": fold.counters.reconnects,
            "emergency_exits": fold.counters.emergency_exits,
        },
    }


def snapshot_live(
    engine: Engine,
    fold: RunFold,
    *,
    symbols: dict[int, str],
    events: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    now = engine.clock.now_ns()
    machines = []
    for mid in engine.machines:
        armed = engine.deadlines.armed_for(mid)
        machines.append(
            {
                "machine": mid,
                "state": "/".join(engine.ledger.machine_states.get(mid, ())),
                "deadlines": [
                    {"name": a.name, "remaining_s": _s(max(a.due_ns - now, 0))} for a in armed
                ],
            }
        )
    positions, unhedged = _positions(engine.ledger, symbols)
    snap = _header(fold, now)
    snap.update(
        live=True,
        machines=machines,
        positions=positions,
        unhedged_usd=str(unhedged.quantize(Decimal("0.01"))),
        realized_pnl_usd=str(engine.ledger.realized_pnl.quantize(Decimal("0.0001"))),
        fees_usd=str(engine.ledger.fees.quantize(Decimal("0.0001"))),
        events=list(events or [])[-8:],
        alerts=_alerts(fold),
        **(extra or {}),
    )
    return snap


def snapshot_fold(fold: RunFold) -> dict[str, Any]:
    """The same view from a journal alone: as of its last record."""
    now = fold.last_ts
    machines = [
        {
            "machine": mid,
            "state": state,
            "deadlines": [
                {"name": name, "remaining_s": _s(max(due - now, 0))}
                for name, due in fold.deadlines.get(mid, {}).items()
            ],
        }
        for mid, state in fold.states.items()
    ]
    positions, unhedged = _positions(fold.ledger, fold.symbols)
    snap = _header(fold, now)
    snap["ws_connected"] = None  # no engine, no stream: the last known state would lie
    snap.update(
        live=False,
        machines=machines,
        positions=positions,
        unhedged_usd=str(unhedged.quantize(Decimal("0.01"))),
        realized_pnl_usd=str(fold.ledger.realized_pnl.quantize(Decimal("0.0001"))),
        fees_usd=str(fold.ledger.fees.quantize(Decimal("0.0001"))),
        events=[],
        alerts=_alerts(fold),
    )
    return snap


# -- rendering --------------------------------------------------------------------------------
WIDTH, HEIGHT = 80, 24  # the live view fits a plain terminal
MAX_MACHINES, MAX_EVENTS, MAX_ALERTS = 5, 4, 3  # worst case: 23 lines


def _line(text: str | Text, style: str = "") -> Text:
    out = text if isinstance(text, Text) else Text(text, style=style)
    out.no_wrap = True
    out.overflow = "ellipsis"
    return out


def _fixed_table(columns: list[tuple[str, int, str]]) -> Table:
    """A borderless table with fixed column widths: no reflow from one frame to the next."""
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 1), expand=False)
    for name, width, justify in columns:
        table.add_column(
            name,
            width=width,
            no_wrap=True,
            overflow="ellipsis",
            justify=justify,  # type: ignore[arg-type]
        )
    return table


def render(snap: dict[str, Any]) -> Group:
    """At most 24 lines of at most 80 columns; alerts always shown."""
    live = bool(snap.get("live"))
    ws = snap.get("ws_connected")
    if not live:
        ws_text, ws_style = "", ""  # no engine, no stream: said on its own line below
    else:
        ws_text = "ws up" if ws else ("ws down" if ws is False else "ws ?")
        ws_style = "green" if ws else "red"
    req = snap.get("cycles_requested")
    head = Text.assemble(
        (f"{snap.get('pair', '')} ", "bold"),
        f"{snap.get('venue', '')} t={snap.get('engine_s')}s ",
        f"cycles {snap.get('cycles_closed')}/{req if req is not None else '∞'} ",
        ("PnL ", "dim"),
        (f"{snap.get('realized_pnl_usd')} USD ", "green"),
        ("fees ", "dim"),
        f"{snap.get('fees_usd')} USD ",
        (ws_text, ws_style),
    )
    parts: list[Any] = [_line(head)]
    if not live:
        parts.append(_line("engine not running: as of the journal's last record", "yellow"))
    if snap.get("halted"):
        parts.append(_line("HALTED: " + str(snap.get("halt_reason")), "bold red"))
    unhedged = Decimal(str(snap.get("unhedged_usd", "0")))
    tolerance = Decimal(str(snap.get("tolerance_usd", "5")))
    counters = snap.get("counters", {})
    parts.append(
        _line(
            Text.assemble(
                (
                    f"unhedged notional {unhedged} USD  ",
                    "bold red" if unhedged > tolerance else "green",
                ),
                (
                    " ".join(f"{k.replace('_', ' ')} {v}" for k, v in counters.items()),
                    "dim",
                ),
            )
        )
    )
    machines = _fixed_table(
        [("machine", 22, "left"), ("state", 18, "left"), ("deadlines s", 36, "left")]
    )
    listed = snap.get("machines", [])
    for m in listed[:MAX_MACHINES]:
        dl = ", ".join(f"{d['name']} {d['remaining_s']}" for d in m["deadlines"])
        style = "red" if m["state"] in ("halted", "open", "minimal") else ""
        machines.add_row(m["machine"], Text(m["state"] or "-", style=style), dl or "-")
    if len(listed) > MAX_MACHINES:
        machines.add_row(f"+{len(listed) - MAX_MACHINES} more", "", "")
    parts.append(machines)
    positions = _fixed_table(
        [("product", 10, "left"), ("qty", 12, "right"), ("venue qty", 12, "right"),
         ("mid", 14, "right"), ("notional USD", 14, "right")]
    )  # fmt: skip
    parts.append(_line("positions", "bold"))
    for p in snap.get("positions", []):
        positions.add_row(
            p["symbol"], p["qty"], p["venue_qty"] or "-", p["mid"] or "-", p["notional_usd"] or "-"
        )
    parts.append(positions)
    parts.append(_line("last events", "bold"))
    events = list(snap.get("events", []))[-MAX_EVENTS:]
    parts += [_line(e) for e in events] or [_line("-", "dim")]
    parts.append(_line("alerts", "bold"))
    alerts = list(snap.get("alerts", []))[-MAX_ALERTS:]
    for a in alerts:
        style = "bold red" if a["severity"] == "critical" else "yellow"
        parts.append(_line(f"{a['t']}s {a['severity']} {a['event']}: {a['message']}", style))
    if not alerts:
        parts.append(_line("none", "dim"))
    return Group(*parts)


def render_text(snap: dict[str, Any], width: int = WIDTH) -> str:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    with console.capture() as cap:
        console.print(render(snap))
    return cap.get()


class LiveView:
    """A rich Live view refreshed from an asyncio task every `period_s` (no thread)."""

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        *,
        console: Console | None = None,
        period_s: float = 0.25,
    ) -> None:
        self.snapshot = snapshot
        self.console = console or Console()
        self.period_s = period_s
        self.events: deque[str] = deque(maxlen=8)
        self._live: Live | None = None
        self._task: asyncio.Task[None] | None = None

    def add_event(self, line: str) -> None:
        self.events.append(line.strip())

    def start(self) -> None:
        self._live = Live(
            render(self.snapshot()),
            console=self.console,
            auto_refresh=False,  # rich would start a refresh thread
            transient=True,  # cleared on exit: no stale header above the summary
        )
        self._live.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dnpair-status")

    async def _run(self) -> None:
        while True:
            self.refresh()
            await asyncio.sleep(self.period_s)

    def refresh(self) -> None:
        if self._live is not None:
            with contextlib.suppress(Exception):  # the view must never stop the engine
                self._live.update(render(self.snapshot()), refresh=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._live is not None:
            self.refresh()
            self._live.stop()
            self._live = None
