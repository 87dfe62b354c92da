"""`dnpair chaos`: many seeded sessions on the virtual clock under fault profiles, each
checked against the sim venue's ground truth after every engine step and at rest
(engine/harness/invariants.py). A violation prints the seed, the profile and the first bad
record; the exit code is then 1.

    dnpair chaos --seeds 1-200 [--faults FILE.toml ...] [--only] [--cycles N] [--jobs J]
                 [--execution taker|maker_first]

Profiles: the shipped ones (tests/chaos/profiles/*.toml), `random` (a fresh profile
drawn from the whole DESIGN.md §4 knob space for every seed; printed as TOML with any
violation), plus every `--faults FILE`; `--only` keeps just the given files. Every seed
runs under every profile unless `--spread`, which gives each seed one profile (round
robin). A run reproduces from its seed and profile alone (and the execution mode: `--execution`,
else DN_EXECUTION, else maker_first).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from adapters.base import EventSink
from adapters.base import ProductInfo
from adapters.sim import SimVenue
from adapters.sim.faults import FaultProfile
from engine.core.clock import NS_PER_S
from engine.core.clock import VirtualClock
from engine.core.intents import Intent
from engine.core.journal import Journal
from engine.core.loop import Engine
from engine.core.loop import MachineError
from engine.harness.chaos_profiles import PAIR
from engine.harness.chaos_profiles import PROFILES_DIR
from engine.harness.chaos_profiles import ChaosProfile
from engine.harness.chaos_profiles import jittered
from engine.harness.chaos_profiles import load_chaos_profile
from engine.harness.chaos_profiles import random_profile
from engine.harness.chaos_profiles import shipped_profiles
from engine.harness.invariants import InvariantChecker
from engine.runtime.compose import build_session
from engine.runtime.config import ConfigError
from engine.runtime.config import Settings
from engine.runtime.config import load_settings
from engine.runtime.options import RunOptions
from engine.runtime.run_session import Session
from engine.runtime.runner import run_virtual

__all__ = [
    "PROFILES_DIR",
    "ChaosProfile",
    "RunResult",
    "add_chaos_parser",
    "main",
    "random_profile",
    "run_many",
    "run_one",
    "shipped_profiles",
]

SETTLE_S = 15  # after the session: deliver everything in flight before checking at rest
EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2


# -- one run ------------------------------------------------------------------------------
@attrs.frozen
class RunResult:
    seed: int
    profile: str
    outcome: str  # "flat" | "halted" | "exposed" | "error"
    violations: tuple[str, ...]
    reproduce: str
    cycles_completed: int = 0
    cycle_s: tuple[float, ...] = ()
    max_unflagged_s: float = 0.0
    lost_fills: int = 0
    drift: bool = False
    halt_reason: str = ""
    records: int = 0
    virtual_s: float = 0.0


class _HeldVenue:
    """The sim venue with `close()` held back, so the harness can let everything in
    flight arrive after the session ends before checking the venue at rest."""

    def __init__(self, venue: SimVenue) -> None:
        self.venue = venue

    @property
    def products(self) -> dict[str, ProductInfo]:
        return self.venue.products

    async def start(self, sink: EventSink) -> None:
        await self.venue.start(sink)

    def submit(self, intent: Intent) -> None:
        self.venue.submit(intent)

    async def close(self) -> None:
        return None


def _retry_after_s(profile: FaultProfile) -> Decimal:
    """The longest Retry-After the venue may send (the longest rate-limit window)."""
    return max((w.for_s for w in profile.rest.rate_limit), default=Decimal(0))


def run_one(
    seed: int,
    profile: ChaosProfile,
    *,
    cycles: int,
    settings: Settings,
    jitter_s: float = 0,
    replay: bool = True,
    attach: Callable[[Engine, SimVenue], None] | None = None,
    venue_kind: str = "sim",
) -> RunResult:
    """One session under `profile`, checked after every step, at rest and by replay.
    `attach(engine, venue)` runs before the session starts (scenario tests add their
    own observers there). `venue_kind` "paper": paper trading fed by the simulator's
    market data (adapters/paper/simsource.py), checked against the local matcher."""
    faults = jittered(profile.parse(), seed, jitter_s)
    clock = VirtualClock()
    venue: Any
    if venue_kind == "paper":
        from adapters.paper import sim_paper_venue

        venue = sim_paper_venue(clock, seed, faults, PAIR)
    else:
        venue = SimVenue(clock, seed, faults, PAIR)
    opts = RunOptions(
        pair=PAIR, venue=venue_kind, cycles=cycles, clock="virtual", seed=seed, quiet=True
    )
    journal = Journal(":memory:", durable=False)
    session = build_session(
        opts,
        settings,
        venue=_HeldVenue(venue),  # type: ignore[arg-type]
        clock=clock,
        journal=journal,
        out=_silent,
    )
    checker = InvariantChecker(session.engine, venue, retry_after_s=_retry_after_s(faults))
    session.after_step_hooks.append(checker.after_step)
    session.engine.observers.append(lambda seen: checker.observe(seen.rec))
    if attach is not None:
        attach(session.engine, venue)
    repro = profile.reproduce(seed, cycles, jitter_s)
    if venue_kind != "sim":
        repro += f" --venue {venue_kind}"
    # Always named (a default may change): before a random profile's TOML comment.
    repro = repro.replace("dnpair chaos ", f"dnpair chaos --execution {settings.execution} ", 1)
    error = ""
    try:
        asyncio.run(session.run_virtual())
    except MachineError as exc:
        error = f"machine error: {exc}"
    except RuntimeError as exc:
        error = str(exc)
    except Exception as exc:  # the harness reports, it never hides a crash
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if error:
        checker.fail("terminated", error, checker.last)
    else:
        run_virtual(
            session.engine,
            clock,
            session.send,
            deadline_ns=clock.now_ns() + SETTLE_S * NS_PER_S,
        )
        checker.check_at_rest()
        _check_summary(session, checker)
    asyncio.run(venue.close())
    records = session.engine.journal.records()
    if replay:
        checker.check_replay(records)
    facts = checker.facts
    if error:
        outcome = "error"
    elif facts.halted:
        outcome = "halted"
    elif facts.flat_at_rest:
        outcome = "flat"
    else:
        outcome = "exposed"
    return RunResult(
        seed=seed,
        profile=profile.name if profile.path else "random",
        outcome=outcome,
        violations=tuple(v.describe() for v in checker.violations),
        reproduce=repro,
        cycles_completed=int(getattr(session.session_machine, "cycles_completed", 0)),
        cycle_s=tuple(float(c) for c in facts.cycle_s),
        max_unflagged_s=float(facts.max_unflagged_s),
        lost_fills=facts.lost_fills,
        drift=bool(facts.drift),
        halt_reason=facts.halt_reason,
        records=len(records),
        virtual_s=clock.now_ns() / NS_PER_S,
    )


def _check_summary(session: Session, checker: InvariantChecker) -> None:
    """`dnpair run` exits 3 only with a summary that says why (DESIGN.md §4); a summary
    that says flat agrees with the fills the venue reported (issue 11)."""
    if session.summary().get("flat"):
        checker.check_flat_claim("the summary says flat")
    if checker.facts.halted or session.is_flat():
        return
    if not session.summary().get("halt_reason"):
        checker.fail(
            "at_rest",
            "not halted and not verified flat at the end, and the summary does not say why "
            "(dnpair run would exit 3 without a reason)",
        )


def _silent(_text: str) -> None:
    return None


# -- many runs ----------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(
    profiles: list[ChaosProfile],
    cycles: int,
    settings: Settings,
    jitter_s: float,
    venue_kind: str = "sim",
) -> None:
    _WORKER.update(
        profiles=profiles,
        cycles=cycles,
        settings=settings,
        jitter_s=jitter_s,
        venue_kind=venue_kind,
    )


def _profile_for(index: int, seed: int) -> ChaosProfile:
    profiles: list[ChaosProfile] = _WORKER["profiles"]
    if index < 0:
        return random_profile(seed)
    return profiles[index]


def _work(task: tuple[int, int]) -> RunResult:
    seed, index = task
    profile = _profile_for(index, seed)
    return run_one(
        seed,
        profile,
        cycles=_WORKER["cycles"],
        settings=_WORKER["settings"],
        jitter_s=_WORKER["jitter_s"],
        venue_kind=_WORKER.get("venue_kind", "sim"),
    )


def tasks_for(
    seeds: Sequence[int], n_profiles: int, *, with_random: bool, spread: bool
) -> list[tuple[int, int]]:
    """(seed, profile index); index -1 is the generated `random` profile."""
    indices = list(range(n_profiles)) + ([-1] if with_random else [])
    if not indices:
        return []
    if spread:
        return [(s, indices[n % len(indices)]) for n, s in enumerate(seeds)]
    return [(s, i) for s in seeds for i in indices]


def run_many(
    tasks: Sequence[tuple[int, int]],
    profiles: list[ChaosProfile],
    *,
    cycles: int,
    settings: Settings,
    jobs: int = 1,
    jitter_s: float = 0,
    venue_kind: str = "sim",
) -> Iterator[RunResult]:
    """Results in completion order (jobs > 1 runs them in worker processes)."""
    init = (profiles, cycles, settings, jitter_s, venue_kind)
    if jobs <= 1:
        _init_worker(*init)
        for task in tasks:
            yield _work(task)
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs, initializer=_init_worker, initargs=init) as pool:
        yield from pool.imap_unordered(_work, tasks, chunksize=4)


# -- the report ---------------------------------------------------------------------------
@attrs.define
class Tally:
    runs: int = 0
    flat: int = 0
    halted: int = 0
    exposed: int = 0
    errors: int = 0
    violating: int = 0
    drift: int = 0
    cycle_s: list[float] = attrs.field(factory=list)
    max_unflagged_s: float = 0.0

    def add(self, r: RunResult) -> None:
        self.runs += 1
        if r.outcome == "flat":
            self.flat += 1
        elif r.outcome == "halted":
            self.halted += 1
        elif r.outcome == "exposed":
            self.exposed += 1
        else:
            self.errors += 1
        self.violating += bool(r.violations)
        self.drift += r.drift
        self.cycle_s.extend(r.cycle_s)
        self.max_unflagged_s = max(self.max_unflagged_s, r.max_unflagged_s)

    def row(self, name: str) -> str:
        p50 = statistics.median(self.cycle_s) if self.cycle_s else 0.0
        top = max(self.cycle_s, default=0.0)
        return (
            f"{name:38s} {self.runs:6d} {self.flat:6d} {self.halted:6d} {self.violating:6d}"
            f" {self.drift:6d} {p50:8.2f} {top:8.2f} {self.max_unflagged_s:9.2f}"
        )


HEADER = (
    f"{'profile':38s} {'runs':>6s} {'flat':>6s} {'halted':>6s} {'viol':>6s}"
    f" {'drift':>6s} {'p50 cyc':>8s} {'max cyc':>8s} {'unflag s':>9s}"
)


def report_table(tallies: dict[str, Tally]) -> list[str]:
    lines = [HEADER, "-" * len(HEADER)]
    total = Tally()
    for name in sorted(tallies):
        t = tallies[name]
        lines.append(t.row(name))
        total.runs += t.runs
        total.flat += t.flat
        total.halted += t.halted
        total.violating += t.violating
        total.drift += t.drift
        total.cycle_s += t.cycle_s
        total.max_unflagged_s = max(total.max_unflagged_s, t.max_unflagged_s)
    lines += ["-" * len(HEADER), total.row("TOTAL")]
    return lines


@attrs.frozen
class ChaosSummary:
    results: tuple[RunResult, ...]
    tallies: dict[str, Tally]
    wall_s: float

    @property
    def violations(self) -> list[RunResult]:
        return sorted((r for r in self.results if r.violations), key=lambda r: (r.profile, r.seed))


def chaos(
    seeds: Sequence[int],
    profiles: list[ChaosProfile],
    *,
    with_random: bool,
    spread: bool,
    cycles: int,
    settings: Settings,
    jobs: int,
    jitter_s: float = 0,
    progress_every: int = 0,
    out: Callable[[str], None] = print,
    max_shown: int = 10,
    venue_kind: str = "sim",
) -> ChaosSummary:
    tasks = tasks_for(seeds, len(profiles), with_random=with_random, spread=spread)
    started = time.perf_counter()
    results: list[RunResult] = []
    tallies: dict[str, Tally] = {}
    shown = 0
    runs = run_many(
        tasks,
        profiles,
        cycles=cycles,
        settings=settings,
        jobs=jobs,
        jitter_s=jitter_s,
        venue_kind=venue_kind,
    )
    for r in runs:
        results.append(r)
        tallies.setdefault(r.profile, Tally()).add(r)
        if r.violations and shown < max_shown:
            shown += 1
            out(_describe_violation(r))
        n = len(results)
        if progress_every and (n % progress_every == 0 or n == len(tasks)):
            rate = n / max(time.perf_counter() - started, 1e-9)
            flat = sum(t.flat for t in tallies.values())
            halted = sum(t.halted for t in tallies.values())
            bad = sum(t.violating for t in tallies.values())
            out(
                f"[chaos] {n}/{len(tasks)} runs: {flat} flat, {halted} halted, "
                f"{bad} with violations ({rate:.1f} runs/s)"
            )
    return ChaosSummary(tuple(results), tallies, time.perf_counter() - started)


def _describe_violation(r: RunResult) -> str:
    lines = [f"VIOLATION seed={r.seed} profile={r.profile} outcome={r.outcome}"]
    lines += [f"  {v}" for v in r.violations]
    lines.append(f"  reproduce: {r.reproduce}")
    return "\n".join(lines)


# -- the command --------------------------------------------------------------------------
def parse_seeds(text: str) -> list[int]:
    """`A-B` (inclusive), `N`, or a comma-separated mix: `1-10,42`."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"--seeds: expected A-B, got {text!r}") from None
        if a < 0 or b < a:
            raise ValueError(f"--seeds: expected 0 <= A <= B, got {part!r}")
        seeds.extend(range(a, b + 1))
    return seeds


def add_chaos_parser(sub: Any) -> None:
    c = sub.add_parser(
        "chaos",
        help="seeded fault-injected sim sessions, invariants checked after every event",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--seeds", required=True, help="A-B inclusive (or N, or a,b-c)")
    c.add_argument("--faults", nargs="*", default=[], metavar="FILE.toml", help="extra profiles")
    c.add_argument("--only", action="store_true", help="only the --faults files")
    c.add_argument("--random-only", action="store_true", help="only the generated profile")
    c.add_argument("--no-random", action="store_true", help="skip the generated profile")
    c.add_argument("--spread", action="store_true", help="one profile per seed, round robin")
    c.add_argument("--cycles", type=int, default=4, help="cycles per session (default 4)")
    c.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    c.add_argument(
        "--jitter-s",
        type=float,
        default=0.0,
        metavar="S",
        help="move each window and jump later by a per-seed draw in [0, S] s",
    )
    c.add_argument("--progress", type=int, default=0, metavar="N", help="a line every N runs")
    c.add_argument("--config", metavar="FILE.toml", help="[engine] settings; DN_* env wins")
    c.add_argument(
        "--execution",
        choices=("taker", "maker_first"),
        default=None,
        help="execution mode of every session (default: DN_EXECUTION, else maker_first)",
    )
    c.add_argument(
        "--venue",
        choices=("sim", "paper"),
        default="sim",
        help="sim, or paper trading fed by the sim's market data (default sim)",
    )
    c.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        seeds = parse_seeds(args.seeds)
        if args.cycles < 1:
            raise ValueError(f"--cycles: must be >= 1, got {args.cycles}")
        if not 0 <= args.jitter_s <= 3600:
            raise ValueError(f"--jitter-s: must be in [0, 3600], got {args.jitter_s}")
        if args.jobs < 1:
            raise ValueError(f"--jobs: must be >= 1, got {args.jobs}")
        if args.config is not None and not Path(args.config).is_file():
            raise ValueError(f"--config: no such file {args.config}")
        settings = load_settings(
            config_file=args.config, cli={"execution": getattr(args, "execution", None)}
        )
        given = [load_chaos_profile(f) for f in args.faults]
        if args.only and not given:
            raise ValueError("--only needs at least one --faults FILE")
        shipped = [] if (args.only or args.random_only) else shipped_profiles()
        profiles = shipped + ([] if args.random_only else given)
        with_random = args.random_only or not (args.only or args.no_random)
    except (ValueError, ConfigError) as exc:  # FaultProfileError is a ValueError
        print(f"dnpair chaos: {exc}", file=sys.stderr)
        return EXIT_USAGE
    names = [p.name for p in profiles] + (["random"] if with_random else [])
    print(
        f"[chaos] seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}), cycles {args.cycles}, "
        f"jobs {args.jobs}, jitter {args.jitter_s:g}s, venue {args.venue}, "
        f"execution {settings.execution}, "
        f"profiles: {', '.join(names)}"
    )
    summary = chaos(
        seeds,
        profiles,
        with_random=with_random,
        spread=args.spread,
        cycles=args.cycles,
        settings=settings,
        jobs=args.jobs,
        jitter_s=args.jitter_s,
        progress_every=args.progress,
        venue_kind=args.venue,
    )
    for line in report_table(summary.tallies):
        print(line)
    n = len(summary.results)
    bad = summary.violations
    print(
        f"[chaos] {n} runs in {summary.wall_s:.1f}s ({n / max(summary.wall_s, 1e-9):.1f} runs/s); "
        f"{len(bad)} with violations"
    )
    if bad:
        first = bad[0]
        print(f"[chaos] FAILED: first violation at seed {first.seed}, profile {first.profile}")
        return EXIT_VIOLATION
    return EXIT_OK
