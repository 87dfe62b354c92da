"""What a piece of position work is for, as data: BUILD, UNWIND or the emergency exit.

The three order-working machines differ only in what they aim at and how hard they
push; those differences are one frozen `WorkPolicy` each, derived from the cycle's
`CycleParams` by `WorkPolicy.build`, `.unwind` and `.exit`:

- `ladder`: the rungs the rounds walk (time in force, bps through the book, slicing);
- `reduce_only` and `purpose`: opening both legs at equal notional, or closing what the
  venue verifiably holds;
- the round budget (`max_rounds`), the round deadline's name and length, how long a
  verification waits, and the refused rounds retried after a back-off;
- the hedge deadline (V1) for BUILD and UNWIND, or one total budget timer for the exit;
- under `execution = "maker_first"` (BUILD and UNWIND only), hedged maker rungs first:
  one leg rests post-only at the touch and each of its fills is hedged at once by an
  IOC on the other leg (`machines.pricing.OrderRounds`), repriced every
  `maker_reprice_s`, for at most `maker_budget_s` in all; then today's IOC rungs;
- the pre-trade checks run before anything is sent (BUILD only), in order;
- whether a venue reject of an IOC ends the attempt (BUILD) or only the round (exits);
- whether each round is an attempt judged by its own fresh read (the exit), and how long
  the venue may refuse rounds outright (429) before the work fails (UNWIND, N7);
- whether UNWIND may place its first round from the position this cycle's BUILD verified
  while its opening read is in flight (`overlap_read`: only when that round is IOCs, one
  round trip less a cycle; `machines.position_work` says when the ledger's belief qualifies).

`machines.position_work.PositionWork` is the one machine that reads these.

Pure: no I/O, no clock; a policy is computed once when the machine is spawned.
"""

from __future__ import annotations

from decimal import ROUND_CEILING
from decimal import Decimal
from operator import attrgetter
from operator import is_
from typing import Literal

import attrs

from machines.params import PER_CYCLE
from machines.params import CycleParams

__all__ = [
    "ATTEMPT_CAP",
    "MAKER_RUNG_CAP",
    "MAX_REFUSALS",
    "PRETRADE_CHECKS",
    "ROUND_CAP",
    "Rung",
    "WorkPolicy",
]

ZERO = Decimal(0)
ROUND_CAP = 3  # rounds per machine at most ROUND_CAP x the ladder's length
MAX_REFUSALS = 4  # refused rungs retried after a back-off before the ladder moves on
ATTEMPT_CAP = 3  # exit attempts that do make progress: at most this many x exit_attempts
MAKER_RUNG_CAP = 100  # hedged maker rungs (reprices) per ladder at most
# BUILD's pre-trade checks, each a guard of the machine, taken in this order.
PRETRADE_CHECKS = (
    "entries_allowed",
    "venue_verified_flat",
    "bbo_fresh",
    "within_price_band",
    "within_max_position",
    "sizes_tradable",
)

Purpose = Literal["build", "unwind", "exit"]


@attrs.frozen
class Rung:
    """One step of an execution ladder: time in force and how far through the book.

    A `hedged` rung (maker_first) places only one leg, post-only at the touch; each of
    its fills is hedged on the other leg by an IOC through the touch by `bps`."""

    tif: str  # "post_only" | "ioc"
    bps: Decimal = ZERO
    label: str = ""
    sliced: bool = False
    hedged: bool = False


def resting_rungs(p: CycleParams, maker_label: str, post_only_label: str) -> list[Rung]:
    """The ladder's resting start, shared by BUILD and UNWIND.

    maker_first: one hedged rung per reprice that fits in the budget (at least one, at
    most MAKER_RUNG_CAP; the machine also stops them once the budget is spent). Else,
    with the post_only order style, `post_only_attempts` plain post-only rungs; else none.
    """
    if p.execution == "maker_first":
        count = (p.maker_budget_s / p.maker_reprice_s).to_integral_value(ROUND_CEILING)
        n = max(1, min(int(count), MAKER_RUNG_CAP))
        return [Rung("post_only", p.cross_bps, maker_label, hedged=True) for _ in range(n)]
    if p.order_style == "post_only":
        return [Rung("post_only", label=post_only_label) for _ in range(p.post_only_attempts)]
    return []


@attrs.frozen(kw_only=True)
class WorkPolicy:
    """One purpose's targets, ladder, reduce-only flag, budgets and checks (module doc)."""

    purpose: Purpose
    ladder: tuple[Rung, ...]
    reduce_only: bool
    max_rounds: int  # rounds (exit: attempts that reach the venue) at most
    round_deadline: str  # the named deadline event that ends a round's wait for fills
    round_timeout_s: Decimal
    verify_wait_s: Decimal  # one position query's wait
    hedge_deadline: bool  # V1: legs apart too long ends the work (the exit has a budget)
    budget_s: Decimal | None = None  # one total budget timer (the exit), None: none
    max_refusals: int = 0  # refused rounds retried after a back-off
    pretrade_checks: tuple[str, ...] = ()
    reject_ends_work: bool = False  # an IOC reject ends the attempt (margin, size: V8)
    # Each round an attempt judged by a fresh read: re-read before each round, back off
    # refused or silent reads, count attempts without progress, HALT when spent (the exit).
    reread_each_round: bool = False
    refusal_budget_s: Decimal | None = None  # refused (429) this long in a row: failed
    # UNWIND: place the first round from the venue-verified belief and send the opening
    # read alongside (both reduce-only: a wrong belief can close too little, never open).
    overlap_read: bool = False

    @classmethod
    def of(cls, purpose: str, p: CycleParams) -> WorkPolicy:
        """The policy of `purpose` ("build", "unwind" or "exit") for the cycle `p`.

        A policy reads only the fields every cycle shares (`PER_CYCLE` aside): while they
        hold the very objects they held last time (a session builds each cycle's params
        from one template), the policy worked out then is this one."""
        make = {"build": cls.build, "unwind": cls.unwind, "exit": cls.exit}.get(purpose)
        if make is None:
            raise ValueError(f"unknown purpose {purpose!r}")
        shared = _shared_fields(p)
        last = _LAST.get(purpose)
        if last is not None and all(map(is_, shared, last[0])):
            return last[1]
        policy = make(p)
        _LAST[purpose] = (shared, policy)
        return policy

    # maker_first: a resting maker order's deadline before it is repriced, and the total
    # resting time before the hedged rungs step aside (None: taker, no hedged rungs).
    maker_reprice_s: Decimal | None = None
    maker_budget_s: Decimal | None = None

    @classmethod
    def build(cls, p: CycleParams) -> WorkPolicy:
        """Open both legs at equal notional: hedged maker rungs (maker_first), or
        post-only at the touch (when that is the order style), then IOC through the touch
        by `cross_bps`, then repair rungs escalating by `repair_step_bps`."""
        rungs = resting_rungs(p, "maker", "post_only")
        rungs.append(Rung("ioc", p.cross_bps, "ioc"))
        for k in range(1, p.repair_attempts + 1):
            rungs.append(Rung("ioc", p.cross_bps + k * p.repair_step_bps, "repair"))
        return cls(
            purpose="build",
            ladder=tuple(rungs),
            reduce_only=False,
            max_rounds=ROUND_CAP * len(rungs),
            round_deadline="fills_timeout",
            round_timeout_s=p.fill_timeout_s,
            verify_wait_s=p.verify_timeout_s,
            hedge_deadline=True,
            pretrade_checks=PRETRADE_CHECKS,
            reject_ends_work=True,
            maker_reprice_s=_if_maker(p, p.maker_reprice_s),
            maker_budget_s=_if_maker(p, p.maker_budget_s),
        )

    @classmethod
    def unwind(cls, p: CycleParams) -> WorkPolicy:
        """Close from the verified position: hedged reduce-only maker rungs
        (maker_first), or post-only (when that is the order style), IOC rungs escalating
        by `repair_step_bps`, then one sliced "market" IOC through the book by
        `market_max_slippage_bps` (by default the first exit-ladder step, never less than
        the last IOC rung)."""
        rungs = resting_rungs(p, "unwind maker", "unwind")
        bps = p.cross_bps
        for k in range(p.unwind_ioc_attempts):
            bps = p.cross_bps + k * p.repair_step_bps
            rungs.append(Rung("ioc", bps, "unwind"))
        if p.use_market_fallback:
            cap = p.market_max_slippage_bps
            market = max(p.exit_ladder_bps[0] if cap is None else cap, bps)  # never less
            rungs.append(Rung("ioc", market, "unwind market", sliced=True))
        return cls(
            purpose="unwind",
            ladder=tuple(rungs),
            reduce_only=True,
            max_rounds=ROUND_CAP * len(rungs),
            round_deadline="fills_timeout",
            round_timeout_s=p.fill_timeout_s,
            verify_wait_s=p.verify_timeout_s,
            hedge_deadline=True,
            max_refusals=MAX_REFUSALS,
            refusal_budget_s=p.exit_budget_s,
            # Only a first round of IOCs overlaps its read: it settles in one round trip,
            # so a refuted belief is re-read at once. A resting first round (post-only
            # style, maker_first) reads first: it would work sizes from the belief for
            # seconds before the read could be judged, and maker_first hedges each fill in
            # the ratio of those sizes.
            overlap_read=bool(rungs) and rungs[0].tif == "ioc",
            maker_reprice_s=_if_maker(p, p.maker_reprice_s),
            maker_budget_s=_if_maker(p, p.maker_budget_s),
        )

    @classmethod
    def exit(cls, p: CycleParams) -> WorkPolicy:
        """Flatten fast and bounded: reduce-only IOCs sliced by `max_slice_usd`, attempt k
        through the book by `exit_ladder_bps[k]` (the last step once past it), all under
        one `exit_budget_s` timer; refused or silent reads are retried after back-offs."""
        rungs = tuple(Rung("ioc", bps, "emergency", sliced=True) for bps in p.exit_ladder_bps)
        return cls(
            purpose="exit",
            ladder=rungs,
            reduce_only=True,
            max_rounds=ATTEMPT_CAP * p.exit_attempts,
            round_deadline="attempt_timeout",
            round_timeout_s=p.exit_attempt_timeout_s,
            verify_wait_s=p.exit_attempt_timeout_s,
            hedge_deadline=False,
            budget_s=p.exit_budget_s,
            max_refusals=4 * p.exit_attempts + 4,  # position reads, answered or not
            reread_each_round=True,
        )

    def rung(self, index: int) -> Rung:
        """The ladder's step `index`, the last one once past the end."""
        return self.ladder[min(index, len(self.ladder) - 1)]


def _if_maker(p: CycleParams, value: Decimal) -> Decimal | None:
    return value if p.execution == "maker_first" else None


# What a policy is worked out from: the CycleParams fields every cycle shares.
_shared_fields = attrgetter(*(f.name for f in attrs.fields(CycleParams) if f.name not in PER_CYCLE))
# purpose → (the shared fields it was last worked out from, that policy)
_LAST: dict[str, tuple[tuple[object, ...], WorkPolicy]] = {}
