"""`dnpair run`'s options, its exit codes and the errors that decide them."""

from __future__ import annotations

import re

import attrs

__all__ = [
    "EXIT_ERROR",
    "EXIT_HALTED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Interrupted",
    "RunOptions",
    "StartupFailed",
    "UsageError",
    "pair_name",
    "parse_pair",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_HALTED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # a signal during start-up, before anything was sent


class UsageError(Exception):
    """Bad arguments or configuration: exit 2, nothing sent."""


class StartupFailed(Exception):
    """The venue never became usable inside the start-up budget: exit 3, nothing sent."""


class Interrupted(Exception):
    """A signal arrived before trading started: nothing was sent."""


@attrs.frozen(kw_only=True)
class RunOptions:
    pair: tuple[str, str]
    venue: str = "sim"
    network: str = "local"
    gateway: str | None = None
    cycles: int | None = None
    clock: str = "wall"
    seed: int = 0
    faults: str | None = None
    journal: str | None = None
    summary_json: str | None = None
    metrics_port: int | None = None
    quiet: bool = False
    # operations (issue 7); every default keeps the earlier behaviour
    metrics_host: str = "127.0.0.1"
    log_json: str | None = None  # None: beside the journal (JOURNAL.log.jsonl); "off": none
    log_format: str = "human"  # console lines: human | json
    status: str = "auto"  # auto (live view in a terminal on the wall clock) | live | plain
    alert_webhook: str | None = None  # else $DNPAIR_ALERT_WEBHOOK
    stay_on_halt: bool = False  # wall clock: keep running after HALT, wait for resume/stop
    resume: bool = False  # start on a journal whose last run halted
    control: bool = True  # wall clock: listen on the journal's control socket


def parse_pair(text: str) -> tuple[str, str]:
    m = re.fullmatch(r"([A-Z0-9]{2,12})-([A-Z0-9]{2,12})", text.strip().upper())
    if not m or m.group(1) == m.group(2):
        raise UsageError(f"--pair: expected two different symbols like ETH-SOL, got {text!r}")
    return (f"{m.group(1)}-PERP", f"{m.group(2)}-PERP")


def pair_name(pair: tuple[str, str]) -> str:
    """`("ETH-PERP", "SOL-PERP")` → `ETH-SOL`."""
    return "-".join(s.removesuffix("-PERP") for s in pair)
