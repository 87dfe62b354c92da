"""`dnpair report JOURNAL [--csv OUT] [--chart OUT.png|.svg|.html]`: what each cycle did and cost.

A per-cycle table and totals from a journal (read-only: works on a running engine's
journal too). Columns are defined in `engine.ops.trades`. Orders outside any cycle (restore
flattening residuals, the stop flatten after the last cycle) are a row of their own so
the totals reconcile with the run's realised PnL. Each cycle and the totals show what the
volume cost: fees, slippage against the decision mid, their sum per million USD of volume,
the share filled as maker, and how long one leg stood alone (total, and per fill that
opened it: p99 and max). The chart draws cumulative gross PnL, fees and net PnL per cycle
(net = gross - fees) and the distribution of cycle times: PNG/SVG/PDF through matplotlib,
HTML as a self-contained page with inline SVG (no scripts, no network).
"""

from __future__ import annotations

import csv
import html
import itertools
import statistics
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.core.clock import NS_PER_S
from engine.core.journal import read_records
from engine.ops.trades import RunFold
from engine.ops.trades import cost_per_million
from engine.ops.trades import fold_records

__all__ = [
    "CSV_FIELDS",
    "chart_data",
    "load",
    "pnl_series",
    "render_table",
    "rows",
    "totals",
    "write_chart",
    "write_csv",
]

ZERO = Decimal(0)
CSV_FIELDS = (
    "run",
    "cycle",
    "outcome",
    "direction",
    "leg1",
    "leg1_entry_side",
    "leg1_entry_qty",
    "leg1_entry_px",
    "leg1_exit_qty",
    "leg1_exit_px",
    "leg2",
    "leg2_entry_side",
    "leg2_entry_qty",
    "leg2_entry_px",
    "leg2_exit_qty",
    "leg2_exit_px",
    "orders",
    "volume_usd",
    "fees_usd",
    "slippage_usd",
    "slippage_bps",
    "cost_per_million_usd",
    "maker_share",
    "one_leg_s",
    "hedge_max_s",
    "gross_pnl_usd",
    "net_pnl_usd",
    "pnl_bps",
    "cycle_s",
    "hold_s",
    "active_s",
    "fill_latency_ms",
)


def load(path: str) -> RunFold:
    """Fold a journal (SQLite or JSONL export). Raises on an unreadable file."""
    return fold_records(read_records(path))


def _q(value: Decimal | None, places: int) -> str:
    if value is None:
        return ""
    return str(value.quantize(Decimal(1).scaleb(-places)))


def rows(fold: RunFold) -> list[dict[str, str]]:
    out = []
    for c in fold.traded_cycles:
        legs = c.legs()
        row: dict[str, str] = {
            "run": str(c.run),
            "cycle": "" if c.cycle is None else str(c.cycle),
            "outcome": c.outcome,
            "direction": c.direction,
        }
        for i in (1, 2):
            leg = legs[i - 1] if len(legs) >= i else None
            row[f"leg{i}"] = leg.symbol if leg else ""
            row[f"leg{i}_entry_side"] = leg.entry_side if leg else ""
            row[f"leg{i}_entry_qty"] = str(leg.entry_qty) if leg else ""
            row[f"leg{i}_entry_px"] = _q(leg.entry_price, 6) if leg else ""
            row[f"leg{i}_exit_qty"] = str(leg.exit_qty) if leg else ""
            row[f"leg{i}_exit_px"] = _q(leg.exit_price, 6) if leg else ""
        row.update(
            orders=str(len(c.orders)),
            volume_usd=_q(c.volume_usd, 6),
            fees_usd=_q(c.fees, 8),
            slippage_usd=_q(c.slippage_usd, 8),
            slippage_bps=_q(c.slippage_bps, 3),
            cost_per_million_usd=_q(c.cost_per_million_usd, 2),
            maker_share=_q(c.maker_share, 4),
            one_leg_s=_q(c.one_leg_s, 3),
            hedge_max_s=_q(c.hedge_max_s, 3),
            gross_pnl_usd=_q(c.gross_pnl, 8),
            net_pnl_usd=_q(c.net_pnl, 8),
            pnl_bps=_q(c.pnl_bps, 3),
            cycle_s=_q(c.cycle_s, 3),
            hold_s=_q(c.hold_s, 3),
            active_s=_q(c.active_s, 3),
            fill_latency_ms=_q(c.fill_latency_ms, 1),
        )
        out.append(row)
    return out


def totals(fold: RunFold) -> dict[str, Any]:
    cycles = fold.traded_cycles
    numbered = [c for c in cycles if c.cycle is not None]
    volume = sum((c.volume_usd for c in cycles), ZERO)
    net = sum((c.net_pnl for c in cycles), ZERO)
    times = [t for c in numbered if (t := c.cycle_s) is not None]
    active = [t for c in numbered if c.outcome == "completed" and (t := c.active_s) is not None]
    lats = [lat for c in cycles for lat in c.fill_latencies_ms()]
    outcomes: dict[str, int] = {}
    for c in numbered:
        outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
    costs = fold.cost_totals()
    p99 = costs.p99_ns()
    return {
        "runs": fold.run,
        "cycles": len(numbered),
        "outcomes": outcomes,
        "orders": sum(len(c.orders) for c in cycles),
        "volume_usd": volume,
        "fees_usd": sum((c.fees for c in cycles), ZERO),
        "slippage_usd": sum((c.slippage_usd for c in cycles), ZERO),
        "cost_per_million_usd": cost_per_million(costs.fees, costs.slippage, costs.volume),
        "maker_share": costs.maker_notional / costs.volume if costs.volume else None,
        "one_leg_s": Decimal(costs.one_leg_ns) / NS_PER_S,
        "one_leg_episodes": costs.episodes,
        "hedge_latency_p99_s": None if p99 is None else Decimal(p99) / NS_PER_S,
        "hedge_latency_max_s": Decimal(costs.max_ns) / NS_PER_S,
        "gross_pnl_usd": sum((c.gross_pnl for c in cycles), ZERO),
        "net_pnl_usd": net,
        "pnl_bps": net / volume * 10_000 if volume else None,
        "cycle_s_median": Decimal(statistics.median(times)) if times else None,
        "cycle_s_max": max(times) if times else None,
        "active_s_median": Decimal(statistics.median(active)) if active else None,
        "fill_latency_ms_median": Decimal(statistics.median(lats)) if lats else None,
        "alerts": fold.alerts_total,
        "halted": fold.halted,
        "halt_reason": fold.halt_reason,
    }


_COLUMNS = (
    ("cycle", "cycle", 7),
    ("outcome", "outcome", 10),
    ("dir", "direction", 5),
    ("{1} in", "leg1_in", 13),
    ("{1} out", "leg1_out", 13),
    ("{2} in", "leg2_in", 13),
    ("{2} out", "leg2_out", 13),
    ("fees", "fees_usd", 9),
    ("slip bps", "slippage_bps", 8),
    ("cost/M", "cost_per_million_usd", 8),
    ("maker", "maker_share", 5),
    ("1leg s", "one_leg_s", 6),
    ("gross", "gross_pnl_usd", 10),
    ("net", "net_pnl_usd", 10),
    ("bps", "pnl_bps", 7),
    ("cycle s", "cycle_s", 8),
    ("fill ms", "fill_latency_ms", 7),
)


def _short(symbol: str) -> str:
    return symbol.removesuffix("-PERP")


def _px(side: str, px: str) -> str:
    if not px:
        return "-"
    mark = {"buy": "B ", "sell": "S "}.get(side, "")
    return mark + _trim(px)


def _trim(text: str) -> str:
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _fixed(text: str, places: int) -> str:
    return f"{Decimal(text):.{places}f}" if text else "-"


def render_table(fold: RunFold) -> str:
    data = rows(fold)
    legs = [_short(s) for s in fold.symbols.values()] or ["leg1", "leg2"]
    while len(legs) < 2:
        legs.append(f"leg{len(legs) + 1}")
    header = [title.format("", *legs) for title, _, _ in _COLUMNS]
    widths = [max(w, len(h)) for (_, _, w), h in zip(_COLUMNS, header, strict=True)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r in data:
        exit_side = {"buy": "sell", "sell": "buy"}
        cells = {
            "cycle": f"{r['run']}.{r['cycle'] or '-'}",
            "outcome": r["outcome"],
            "direction": r["direction"],
            "leg1_in": _px(r["leg1_entry_side"], r["leg1_entry_px"]),
            "leg1_out": _px(exit_side.get(r["leg1_entry_side"], ""), r["leg1_exit_px"]),
            "leg2_in": _px(r["leg2_entry_side"], r["leg2_entry_px"]),
            "leg2_out": _px(exit_side.get(r["leg2_entry_side"], ""), r["leg2_exit_px"]),
            "fees_usd": _fixed(r["fees_usd"], 4),
            "slippage_bps": _fixed(r["slippage_bps"], 2),
            "cost_per_million_usd": _fixed(r["cost_per_million_usd"], 1),
            "maker_share": _fixed(r["maker_share"], 2),
            "one_leg_s": _fixed(r["one_leg_s"], 3),
            "gross_pnl_usd": _fixed(r["gross_pnl_usd"], 4),
            "net_pnl_usd": _fixed(r["net_pnl_usd"], 4),
            "pnl_bps": _fixed(r["pnl_bps"], 2),
            "cycle_s": _fixed(r["cycle_s"], 3),
            "fill_latency_ms": _fixed(r["fill_latency_ms"], 1),
        }
        lines.append(
            "  ".join(cells[key].rjust(w) for (_, key, _), w in zip(_COLUMNS, widths, strict=True))
        )
    t = totals(fold)
    lines.append("")
    lines.extend(describe_totals(t))
    if is_paper(fold):
        lines.insert(0, PAPER_BANNER)
        lines.append(PAPER_BANNER)
    return "\n".join(lines)


PAPER_BANNER = (
    "PAPER: every fill here is SIMULATED (matched locally against live market data; "
    "no order reached the venue)"
)


def is_paper(fold: RunFold) -> bool:
    """A `--venue paper` journal: its fills were made by the local matcher."""
    return fold.config.get("venue") == "paper"


def _num(value: Decimal | None, places: int) -> str:
    return "-" if value is None else f"{value:.{places}f}"


def describe_totals(t: dict[str, Any]) -> list[str]:
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(t["outcomes"].items())) or "none"
    halted = f"HALTED: {t['halt_reason']}" if t["halted"] else "not halted"
    return [
        f"totals: {t['cycles']} cycles ({outcomes}) in {t['runs']} run(s); "
        f"{t['orders']} orders; {halted}",
        f"  volume {_num(t['volume_usd'], 2)} USD   fees {_num(t['fees_usd'], 4)}   "
        f"slippage {_num(t['slippage_usd'], 4)} USD (against the decision mid)",
        f"  cost {_num(t['cost_per_million_usd'], 2)} USD per million of volume   "
        f"maker share {_num(t['maker_share'], 4)}",
        f"  one leg alone {_num(t['one_leg_s'], 3)} s in {t['one_leg_episodes']} episode(s); "
        f"per fill p99 {_num(t['hedge_latency_p99_s'], 3)} s, "
        f"max {_num(t['hedge_latency_max_s'], 3)} s",
        f"  gross {_num(t['gross_pnl_usd'], 4)}   net {_num(t['net_pnl_usd'], 4)} USD "
        f"({_num(t['pnl_bps'], 2)} bps of volume)",
        f"  cycle time median {_num(t['cycle_s_median'], 3)} s, max {_num(t['cycle_s_max'], 3)} s"
        f"; active (excl. hold) median {_num(t['active_s_median'], 3)} s"
        f"; fill latency median {_num(t['fill_latency_ms_median'], 1)} ms; "
        f"alerts {t['alerts']}",
    ]


def write_csv(fold: RunFold, path: str) -> int:
    data = rows(fold)
    with Path(path).open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(data)
    return len(data)


# -- chart ----------------------------------------------------------------------------------
def chart_data(fold: RunFold) -> tuple[list[str], list[float], list[float]]:
    """(cycle labels, cumulative net PnL after each, cycle times in s of closed cycles)."""
    labels, pnl, times = pnl_series(fold)
    return labels, pnl["net"], times


def pnl_series(fold: RunFold) -> tuple[list[str], dict[str, list[float]], list[float]]:
    """(cycle labels, cumulative gross PnL / fees / net PnL after each, cycle times in s
    of closed cycles). Fees are drawn below zero: net = gross + (-fees)."""
    labels, times = [], []
    series: dict[str, list[float]] = {"gross": [], "fees": [], "net": []}
    gross = fees = ZERO
    for c in fold.traded_cycles:
        gross += c.gross_pnl
        fees += c.fees
        labels.append(c.label)
        series["gross"].append(float(gross))
        series["fees"].append(float(-fees))
        series["net"].append(float(gross - fees))
        if c.cycle is not None and c.cycle_s is not None:
            times.append(float(c.cycle_s))
    return labels, series, times


_SERIES_STYLE = {"gross": "#2ca02c", "fees": "#d62728", "net": "#1f77b4"}
_SERIES_LABEL = {"gross": "gross PnL", "fees": "fees (paid, below 0)", "net": "net PnL"}


def write_chart(fold: RunFold, path: str, title: str = "") -> None:
    suffix = Path(path).suffix.lower()
    if suffix in (".html", ".htm"):
        Path(path).write_text(_html_chart(fold, title), encoding="utf-8")
    elif suffix in (".png", ".svg", ".pdf"):
        _mpl_chart(fold, path, title)
    else:
        raise ValueError(f"--chart: unsupported format {suffix or '(none)'}; use .png/.svg/.html")


def _bins(values: Sequence[float], n: int = 20) -> tuple[list[float], list[int]]:
    if not values:
        return [], []
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        return [lo - 0.5, lo + 0.5], [len(values)]
    step = (hi - lo) / n
    edges = [lo + i * step for i in range(n + 1)]
    counts = [0] * n
    for v in values:
        counts[min(int((v - lo) / step), n - 1)] += 1
    return edges, counts


def _mpl_chart(fold: RunFold, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    _labels, series, times = pnl_series(fold)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, values in series.items():
        ax1.plot(
            range(1, len(values) + 1),
            values,
            color=_SERIES_STYLE[name],
            linewidth=1.5,
            label=_SERIES_LABEL[name],
        )
    ax1.axhline(0, color="#999999", linewidth=0.8)
    ax1.legend(loc="best", fontsize="small")
    ax1.set_title("cumulative PnL (USD): gross, fees, net = gross - fees")
    ax1.set_xlabel("cycle")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_ylabel("USD")
    ax1.grid(alpha=0.3)
    edges, counts = _bins(times)
    if counts:
        widths = [b - a for a, b in itertools.pairwise(edges)]
        ax2.bar(edges[:-1], counts, width=widths, align="edge", color="#ff7f0e", edgecolor="white")
        ax2.axvline(statistics.median(times), color="#333333", linestyle="--", linewidth=1)
    ax2.set_title(f"cycle time distribution ({len(times)} cycles, hold included)")
    ax2.set_xlabel("seconds")
    ax2.set_ylabel("cycles")
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _svg_line(series: dict[str, list[float]], w: int, h: int, pad: int) -> str:
    everything = [v for values in series.values() for v in values]
    if not everything:
        return f'<text x="{w // 2}" y="{h // 2}" text-anchor="middle">no cycles</text>'
    lo, hi = min([*everything, 0.0]), max([*everything, 0.0])
    span = (hi - lo) or 1.0
    n = max(len(values) for values in series.values())

    def x(i: int) -> float:
        return pad + (w - 2 * pad) * (i / max(n - 1, 1))

    def y(v: float) -> float:
        return pad + (h - 2 * pad) * (1 - (v - lo) / span)

    lines = []
    for k, (name, values) in enumerate(series.items()):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        lines.append(
            f'<polyline points="{points}" class="{name}"><title>{_SERIES_LABEL[name]}'
            f"</title></polyline>"
            f'<text x="{w - pad}" y="{pad + 12 * k}" text-anchor="end" class="lbl" '
            f'fill="{_SERIES_STYLE[name]}">{_SERIES_LABEL[name]}</text>'
        )
    zero = y(0.0)
    return (
        f'<line x1="{pad}" y1="{zero:.1f}" x2="{w - pad}" y2="{zero:.1f}" class="axis"/>'
        + "".join(lines)
        + f'<text x="{pad}" y="{pad - 6}" class="lbl">{hi:.4f}</text>'
        f'<text x="{pad}" y="{h - pad + 14}" class="lbl">{lo:.4f}</text>'
        f'<text x="{w - pad}" y="{h - pad + 14}" text-anchor="end" class="lbl">cycle {n}</text>'
    )


def _svg_hist(values: Sequence[float], w: int, h: int, pad: int) -> str:
    edges, counts = _bins(values)
    if not counts:
        return f'<text x="{w // 2}" y="{h // 2}" text-anchor="middle">no closed cycles</text>'
    top = max(counts)
    bw = (w - 2 * pad) / len(counts)
    bars = []
    for i, c in enumerate(counts):
        bh = (h - 2 * pad) * c / top
        bars.append(
            f'<rect x="{pad + i * bw:.1f}" y="{h - pad - bh:.1f}" width="{max(bw - 1, 1):.1f}" '
            f'height="{bh:.1f}" class="bar"><title>{edges[i]:.3f}-{edges[i + 1]:.3f} s: '
            f"{c}</title></rect>"
        )
    return (
        "".join(bars)
        + f'<text x="{pad}" y="{h - pad + 14}" class="lbl">{edges[0]:.3f} s</text>'
        + f'<text x="{w - pad}" y="{h - pad + 14}" text-anchor="end" class="lbl">'
        f"{edges[-1]:.3f} s</text>"
        + f'<text x="{pad}" y="{pad - 6}" class="lbl">{top} cycles</text>'
    )


def _html_chart(fold: RunFold, title: str) -> str:
    _labels, series, times = pnl_series(fold)
    t = totals(fold)
    w, h, pad = 560, 300, 36
    summary = "<br>".join(html.escape(line) for line in describe_totals(t))
    line_svg = _svg_line(series, w, h, pad)
    hist_svg = _svg_hist(times, w, h, pad)
    box = f'width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"'
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title or "dnpair report")}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
.row {{ display: flex; gap: 24px; flex-wrap: wrap; }}
svg {{ background: #fafafa; border: 1px solid #ddd; }}
.axis {{ stroke: #999; stroke-width: 1; }}
.gross {{ fill: none; stroke: #2ca02c; stroke-width: 1.5; }}
.fees {{ fill: none; stroke: #d62728; stroke-width: 1.5; }}
.net {{ fill: none; stroke: #1f77b4; stroke-width: 1.8; }}
.bar {{ fill: #ff7f0e; }}
.lbl {{ font-size: 11px; fill: #555; }}
p.sum {{ font-family: ui-monospace, monospace; font-size: 13px; }}
</style></head><body>
<h2>{html.escape(title or "dnpair report")}</h2>
<div class="row">
<div><h3>cumulative PnL (USD): gross, fees, net = gross - fees</h3>
<svg {box}>{line_svg}</svg></div>
<div><h3>cycle time distribution ({len(times)} cycles, hold included)</h3>
<svg {box}>{hist_svg}</svg></div>
</div>
<p class="sum">{summary}</p>
</body></html>
"""
