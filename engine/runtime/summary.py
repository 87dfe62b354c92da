"""The run's result: the final positions against the fills, and the summary JSON
(DESIGN.md §4) `dnpair run --summary-json` writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import attrs

from adapters.base import ProductInfo
from engine.core.clock import NS_PER_S
from engine.core.events import PositionSnapshot
from engine.core.flatness import is_flat
from engine.core.flatness import mid_of
from engine.core.ledger import Ledger

if TYPE_CHECKING:
    from engine.runtime.run_session import Session

__all__ = [
    "FinalBook",
    "cost_keys",
    "startup_summary",
    "summary",
    "summary_line",
    "write_summary",
]


@attrs.frozen
class FinalBook:
    """The venue's last word on positions (`final`, None if it never answered) beside the
    book the reported fills make (the ledger)."""

    final: PositionSnapshot | None
    products: Sequence[ProductInfo]
    ledger: Ledger
    dust_usd: Decimal

    def _symbol(self) -> dict[int, str]:
        return {p.product_id: p.symbol for p in self.products}

    def fill_positions(self) -> dict[str, str]:
        return {p.symbol: str(self.ledger.position(p.product_id)) for p in self.products}

    def final_read(self) -> dict[str, str]:
        if self.final is None:
            return {}
        by_id = self._symbol()
        return {
            by_id.get(p.product_id, str(p.product_id)): str(p.qty) for p in self.final.positions
        }

    def read_agrees_fills(self) -> bool:
        """The final read matches the fill-derived position within one increment."""
        if self.final is None:
            return False
        read = {p.product_id: p.qty for p in self.final.positions}
        for prod in self.products:
            fills = self.ledger.position(prod.product_id)
            if abs(read.get(prod.product_id, Decimal(0)) - fills) >= prod.size_increment:
                return False
        return True

    def is_flat(self) -> bool:
        if self.final is None:
            return False
        if not self.read_agrees_fills():
            return False  # a flat read the reported fills contradict is not flat
        return is_flat(
            {p.product_id: p.qty for p in self.final.positions},
            {p.product_id: mid_of(self.ledger.quote(p.product_id)) for p in self.final.positions},
            self.dust_usd,
            {p.product_id: p.size_increment for p in self.products},
        )

    def unverified_reason(self) -> str | None:
        """Why a run that did not halt still exits 3 (not verified flat at the end)."""
        if self.is_flat():
            return None
        if self.final is None:
            return "the venue never answered the final position query: flat not verified"
        if not self.read_agrees_fills():
            return (
                f"the final position read {self.final_read()} contradicts the reported fills "
                f"{self.fill_positions()}: trusting the fills, not flat"
            )
        return "the final position query shows open positions"


def summary(s: Session) -> dict[str, Any]:
    """The summary JSON of a run that started trading (DESIGN.md §4)."""
    monitor = s.monitor
    assert monitor is not None
    info = s.session_machine
    book = s.final_book()
    halt = monitor.halt
    usd, seconds = monitor.timeline.summary()
    return {
        "pair": s.pair_name,
        "venue": s.opts.venue,
        "seed": s.opts.seed,
        "cycles_requested": s.opts.cycles,
        "cycles_completed": getattr(info, "cycles_completed", 0),
        "halted": halt is not None,
        "halt_reason": halt.reason
        if halt is not None
        else (book.unverified_reason() or s.disk_stop),
        "final_positions": book.final_read(),
        # The same book from the fills the venue reported; when the two disagree the
        # fills are trusted and `flat` is false (issue 11: a read can lag the fills).
        "fill_positions": book.fill_positions(),
        "positions_trusted": "venue read" if book.read_agrees_fills() else "fills",
        "flat": book.is_flat(),
        "max_unhedged_notional_usd": str(monitor.max_unhedged),
        "max_unhedged_seconds": str(Decimal(monitor.max_unhedged_ns) / NS_PER_S),
        # The two above are exposure as the engine believed it; these, as the venue's
        # fill timestamps show it (fills known only by a total: at their order's ack).
        "max_unhedged_notional_usd_as_filled": str(usd.quantize(Decimal("0.01"))),
        "max_unhedged_seconds_as_filled": str(seconds),
        "fills_without_venue_time": monitor.timeline.untimed(),
        "emergency_exits": getattr(info, "emergency_exits", 0),
        "orders_sent": monitor.orders_sent,
        "rate_limited": monitor.rate_limited,
        "realized_pnl_usd": str(s.engine.ledger.realized_pnl),
        "fees_usd": str(s.engine.ledger.fees),
        # What the volume cost (engine/ops/trades.py defines each): volume, slippage
        # against the decision mid, (fees + slippage) per million USD of volume, the
        # volume filled as maker, and one leg alone as the engine learned of the fills.
        **cost_keys(s),
        "alerts": [a.event for a in monitor.alerts],
        "journal": s.engine.journal.path,
        "alerts_raised": [a.event for a in s.alerter.history],
        "alert_webhook": {
            "sent": s.alerter.stats.sent,
            "failed": s.alerter.stats.failed,
            "deduped": s.alerter.stats.deduped,
        },
    }


def cost_keys(s: Session) -> dict[str, Any]:
    """volume_usd, slippage_usd, cost_per_million_usd, maker_share, one_leg_exposure_s,
    one_leg_episodes, hedge_latency_p99_s, hedge_latency_max_s: the run fold's totals,
    the cost per million taken with the ledger's fees (the `fees_usd` key)."""
    costs = s.fold.cost_totals()
    costs.fees = s.engine.ledger.fees
    return costs.as_json()


def startup_summary(s: Session, reason: str) -> dict[str, Any]:
    """The summary of a run whose venue never became usable: nothing was sent."""
    return {
        "pair": s.pair_name,
        "venue": s.opts.venue,
        "seed": s.opts.seed,
        "cycles_requested": s.opts.cycles,
        "cycles_completed": 0,
        "halted": False,
        "halt_reason": reason,
        "final_positions": {},
        "flat": None,
        "orders_sent": 0,
        "journal": s.engine.journal.path,
    }


def write_summary(path: str | None, data: dict[str, Any]) -> None:
    if path:
        text = json.dumps(data, indent=2, sort_keys=True)
        Path(path).write_text(text + "\n", encoding="utf-8")


def summary_line(data: dict[str, Any], say: Callable[[str], None]) -> None:
    req = data["cycles_requested"]
    say(
        f"[SUMMARY] cycles {data['cycles_completed']}/{'∞' if req is None else req}"
        f" {'HALTED' if data['halted'] else 'not halted'}"
        f" {'verified flat' if data['flat'] else 'NOT verified flat'}"
        f" pnl {data['realized_pnl_usd']} USD fees {data['fees_usd']} USD"
        f" max unhedged {data['max_unhedged_notional_usd']} USD"
        + (f" reason: {data['halt_reason']}" if data["halt_reason"] else "")
    )
