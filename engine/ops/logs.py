"""Logs: structured JSON lines for machines, a human line for people, no secrets in either.

Everything goes through the stdlib logger `dnpair`. Each record may carry context as
`extra=`: `tag` (the grep tags the seeds use: [UNWIND], [EMERGENCY], [RECOVERY],
[CIRCUIT], [RATE_LIMIT], [BBO], plus [BUILD], [SESSION], [ALERT] …), `cycle`, `machine`,
`order_id`, `seq` (journal sequence number), `engine_ns` (engine clock) and `fields`
(a dict of anything else). The JSON formatter writes one object per line; the console
formatter writes the message only (the message already reads as a sentence that starts
with its tag, so `grep '\\[UNWIND\\]'` works on both).

Routine lines (`routine=True`: a cycle's ordinary transitions, its order placements and
cancels, all in the journal anyway) are DEBUG in the JSON file: written there only when
the file's level is DEBUG. Warnings, halts and the other non-routine transitions, fills,
and each cycle's end (`session` back to `idle`) stay INFO. The console shows routine lines
as before (transitions unless `--quiet`). This keeps journal plus log within 10 KB per
cycle at default settings (issue 12 item 6).

`JournalLogger` turns journal records into log lines (an engine observer). The private
key never appears: every handler redacts registered secrets (the value of
`NADO_PRIVATE_KEY`, any `Secret` passed to `register_secret`, with or without `0x`) from
the fully formatted text, whatever path the text took to get there.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from typing import Protocol
from typing import TextIO

from engine.core.clock import NS_PER_S
from engine.core.journal import Record
from engine.core.observed import Observed
from engine.ops.trades import machine_kind

__all__ = [
    "LOGGER",
    "ConsoleFormatter",
    "JournalLogger",
    "JsonFormatter",
    "LogSetup",
    "configure",
    "redact",
    "register_secret",
    "run_logger",
    "tag_for_machine",
]

LOGGER = logging.getLogger("dnpair")
CONTEXT_KEYS = ("tag", "cycle", "machine", "order_id", "seq", "engine_ns")
# Machines whose ordinary transitions are routine (DEBUG in the JSON file), and the
# states whose entry is never routine: a halt, a recovery, a failed or aborted cycle,
# and `idle` (the session's cycle ended: one INFO line per cycle).
ROUTINE_MACHINES = frozenset({"session", "build", "unwind"})
NOTABLE_STATES = frozenset({"halted", "recovering", "failed", "aborted", "idle"})
# Machine notes every ordinary cycle writes (their outcome shows in the fills and the
# transitions); any other note stays INFO.
ROUTINE_NOTES = (
    "sized at equal notional",
    "built: venue position at target",
    "unwinding from the verified position",
    "unwinding from the position BUILD verified",
    "flat: verified by the venue",
)
# Notes routine only for the reason an ordinary cycle gives: with resting first rounds
# (maker_first, post_only) every UNWIND reads before it places; any other reason stays INFO.
ROUTINE_NOTE_REASONS = {"unwind reads first": "the policy reads first"}
MASK = "********"
_SECRETS: set[str] = set()
KEY_ENV = "NADO_PRIVATE_KEY"

# Machine kinds → the tag their lines carry.
MACHINE_TAGS = {
    "unwind": "UNWIND",
    "exit": "EMERGENCY",
    "flatten": "FLATTEN",
    "restore": "RECOVERY",
    "breaker": "CIRCUIT",
    "health": "HEALTH",
    "build": "BUILD",
    "session": "SESSION",
}


class _Revealable(Protocol):
    def reveal(self) -> str: ...


def register_secret(secret: str | _Revealable) -> None:
    """Never print this value (nor its bare-hex form) in any log line."""
    value = secret if isinstance(secret, str) else secret.reveal()
    value = value.strip()
    if len(value) >= 8:
        _SECRETS.add(value)
        if value.lower().startswith("0x"):
            _SECRETS.add(value[2:])


def _env_secrets() -> None:
    raw = os.environ.get(KEY_ENV)
    if raw:
        register_secret(raw)


_PATTERN: list[tuple[frozenset[str], re.Pattern[str] | None]] = [(frozenset(), None)]


def redact(text: str) -> str:
    if not _SECRETS:
        return text
    known, pattern = _PATTERN[0]
    if known != _SECRETS or pattern is None:
        alternatives = sorted(_SECRETS, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(a) for a in alternatives), re.IGNORECASE)
        _PATTERN[0] = (frozenset(_SECRETS), pattern)
    return pattern.sub(MASK, text)


def tag_for_machine(machine: str) -> str:
    return MACHINE_TAGS.get(machine_kind(machine), "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC), level, logger, msg, context keys, fields."""

    def format(self, record: logging.LogRecord) -> str:
        routine = getattr(record, "routine", False) is True
        obj: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": "debug" if routine else record.levelname.lower(),
            "logger": record.name,
            # the console's column padding is for eyes; engine_ns carries the time here
            "msg": record.getMessage().lstrip(" "),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None and value != "":
                obj[key] = _jsonable(value)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            # a field already given as a context key is not repeated
            rest = {k: v for k, v in fields.items() if k not in obj or obj[k] != _jsonable(v)}
            if rest:
                obj["fields"] = _jsonable(rest)
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        # compact separators: the log is read by programs (jq) and grep, not aligned by eye
        return redact(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


class ConsoleFormatter(logging.Formatter):
    """The message as written (it carries its own tag and engine time)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


class _ConsoleOnly(logging.Filter):
    """Records marked `console=False` go to the JSON file only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "console", True) is not False


class _RoutineAsDebug(logging.Filter):
    """In a file: records marked `routine=True` count as DEBUG whatever level they were
    logged at (INFO when the console shows them), so an INFO file leaves them out."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "routine", False) is True:
            return self.handler.level <= logging.DEBUG
        return True


class _CallbackHandler(logging.Handler):
    def __init__(self, sink: Callable[[str], None]) -> None:
        super().__init__()
        self.sink = sink
        self.broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.broken:
            return
        try:
            self.sink(self.format(record))
        except Exception:  # a closed pipe or a broken console must never stop trading
            self.broken = True


class LogSetup:
    """The handlers of one run; `close()` removes them (tests run many in one process)."""

    def __init__(self, logger: logging.Logger, handlers: list[logging.Handler]) -> None:
        self.logger = logger
        self.handlers = handlers

    def close(self) -> None:
        for h in self.handlers:
            self.logger.removeHandler(h)
            h.close()
        self.handlers = []


def configure(
    logger: logging.Logger = LOGGER,
    *,
    console: Callable[[str], None] | TextIO | None = None,
    console_format: str = "human",
    json_path: str | None = None,
    level: int = logging.INFO,
    console_level: int = logging.INFO,
) -> LogSetup:
    """Attach a console handler (a callable or a stream) and optionally a JSON-lines file."""
    _env_secrets()
    logger.setLevel(min(level, console_level))
    logger.propagate = False
    handlers: list[logging.Handler] = []
    if console is not None:
        if callable(console):
            ch: logging.Handler = _CallbackHandler(console)
        else:
            ch = logging.StreamHandler(console)
        ch.setLevel(console_level)
        ch.setFormatter(JsonFormatter() if console_format == "json" else ConsoleFormatter())
        ch.addFilter(_ConsoleOnly())
        handlers.append(ch)
    if json_path:
        fh = logging.FileHandler(json_path, encoding="utf-8")
        fh.setLevel(level)
        fh.setFormatter(JsonFormatter())
        fh.addFilter(_RoutineAsDebug(fh))
        handlers.append(fh)
    for h in handlers:
        logger.addHandler(h)
    return LogSetup(logger, handlers)


def run_logger() -> logging.Logger:
    """A logger for one run, outside the logging registry (so thousands of simulated runs
    do not pile up loggers) and not propagating to the root logger."""
    logger = logging.Logger("dnpair")
    logger.propagate = False
    return logger


def stderr_console() -> Callable[[str], None]:
    return lambda line: print(line, file=sys.stderr)


# -- the journal as log lines ------------------------------------------------------------------
def _secs(ts: int) -> str:
    return f"{Decimal(ts) / NS_PER_S:10.3f}s"


class JournalLogger:
    """Engine observer: transitions, orders, fills, venue errors, alerts → log lines.

    `cycle_of(machine)` maps a machine id to its cycle number (from the run's fold).
    """

    def __init__(
        self,
        logger: logging.Logger = LOGGER,
        cycle_of: Callable[[str], int | None] = lambda _m: None,
        *,
        transitions_to_console: bool = True,
        cycle_of_order: Callable[[str], int | None] = lambda _o: None,
    ) -> None:
        self.cycle_of = cycle_of
        self.cycle_of_order = cycle_of_order
        self.transitions_to_console = transitions_to_console
        self.log = logger

    def _emit(
        self,
        level: int,
        msg: str,
        rec: Record,
        *,
        tag: str = "",
        console: bool = True,
        order_id: str | None = None,
        fields: dict[str, Any] | None = None,
        routine: bool = False,
    ) -> None:
        if routine and not console:
            level = logging.DEBUG  # for the file only: DEBUG there (see `_RoutineAsDebug`)
        if not self.log.isEnabledFor(level):
            return
        machine = rec.machine
        self.log.log(
            level,
            msg,
            extra={
                "tag": tag or None,
                "machine": machine,
                "cycle": self.cycle_of(machine)
                if order_id is None
                else self.cycle_of_order(order_id),
                "order_id": order_id,
                "seq": rec.seq,
                "engine_ns": rec.ts,
                "fields": fields or {},
                "console": console,
                "routine": routine,
            },
        )

    def __call__(self, seen: Observed) -> None:
        rec, data = seen.rec, seen.data
        if rec.kind == "event" and data.get("kind") == "bbo_updated":
            return  # market data: counted by metrics, never logged line by line
        if rec.kind == "note" and str(data.get("note", "")).startswith("deadline "):
            return
        if rec.kind == "transition":
            self._transition(rec, data)
        elif rec.kind == "intent":
            self._intent(rec, data)
        elif rec.kind == "event":
            self._event(rec, data)
        elif rec.kind == "note":
            self._note(rec, data)

    def _transition(self, rec: Record, d: dict[str, Any]) -> None:
        if d.get("to") is None:
            return  # consumed without a state change: journal only
        why = d["event"] if d.get("event") not in (None, "None") else "auto"
        tag = tag_for_machine(rec.machine)
        if rec.machine == "session" and d["to"] == "recovering":
            tag = "RECOVERY"
        elif rec.machine == "session" and d["to"] == "halted":
            tag = "CIRCUIT"
        elif rec.machine == "health" and d["to"] == "minimal":
            tag = "RATE_LIMIT"
        shown = f"[{tag}] " if tag and tag not in ("SESSION", "BUILD") else ""
        routine = machine_kind(rec.machine) in ROUTINE_MACHINES and d["to"] not in NOTABLE_STATES
        self._emit(
            logging.INFO,
            f"{_secs(rec.ts)} {shown}[{rec.machine}] {d['from']} → {d['to']} ({why})",
            rec,
            tag=tag,
            console=self.transitions_to_console,
            fields={"from": d["from"], "to": d["to"], "event": why},
            routine=routine,
        )

    def _intent(self, rec: Record, d: dict[str, Any]) -> None:
        kind = d.get("kind")
        tag = tag_for_machine(rec.machine)
        if kind == "place_order":
            ro = " reduce-only" if d.get("reduce_only") else ""
            self._emit(
                logging.INFO,
                f"{_secs(rec.ts)} [{tag or 'ORDER'}] {d['purpose'] or 'order'}: {d['side']} "
                f"{d['qty']} of product {d['product_id']} @ {d['price']} {d['tif']}{ro} "
                f"({d['order_id']})",
                rec,
                tag=tag,
                console=False,
                order_id=str(d["order_id"]),
                fields={k: v for k, v in d.items() if k != "kind"},
                routine=True,
            )
        elif kind in ("cancel_order", "cancel_product_orders"):
            self._emit(
                logging.INFO,
                f"{_secs(rec.ts)} [{tag or 'ORDER'}] cancel "
                f"{d.get('order_id') or d.get('product_ids')}",
                rec,
                tag=tag,
                console=False,
                order_id=d.get("order_id"),
                routine=True,
            )

    def _event(self, rec: Record, d: dict[str, Any]) -> None:
        kind = d.get("kind")
        if kind == "fill_received":
            self._emit(
                logging.INFO,
                f"{_secs(rec.ts)} [FILL] {d['side']} {d['qty']} of product {d['product_id']} "
                f"@ {d['price']} fee {d.get('fee')} ({d['order_id']})",
                rec,
                tag="FILL",
                console=False,
                order_id=str(d["order_id"]),
                fields={k: v for k, v in d.items() if k not in ("kind", "target")},
            )
        elif kind == "order_rejected":
            self._emit(
                logging.WARNING,
                f"{_secs(rec.ts)} [REJECT] {d['order_id']}: {d.get('reason')} "
                f"(code {d.get('code')})",
                rec,
                tag="REJECT",
                order_id=str(d["order_id"]),
                console=False,
            )
        elif kind == "venue_error":
            cls = d.get("error_class")
            if cls == "rate_limited":
                after = d.get("retry_after_s")
                self._emit(
                    logging.WARNING,
                    f"{_secs(rec.ts)} [RATE_LIMIT] {d.get('request')} refused by the venue (429)"
                    + (f", retry after {after}s" if after is not None else ""),
                    rec,
                    tag="RATE_LIMIT",
                    order_id=d.get("order_id"),
                    fields={"request": d.get("request"), "retry_after_s": after},
                )
            else:
                self._emit(
                    logging.WARNING,
                    f"{_secs(rec.ts)} [VENUE] {cls}: {d.get('request')} {d.get('message', '')}",
                    rec,
                    tag="VENUE",
                    order_id=d.get("order_id"),
                    console=cls != "retryable",
                )
        elif kind == "connection_changed":
            self._emit(
                logging.WARNING if d.get("state") != "connected" else logging.INFO,
                f"{_secs(rec.ts)} [CONN] {d.get('channel')} {d.get('state')} {d.get('detail', '')}",
                rec,
                tag="CONN",
            )

    def _note(self, rec: Record, d: dict[str, Any]) -> None:
        text = str(d.get("note", ""))
        if rec.machine == "ledger":
            if text.startswith("bbo rejected"):
                self._emit(
                    logging.WARNING, f"{_secs(rec.ts)} [BBO] Invalid BBO: {text}", rec, tag="BBO"
                )
            else:
                self._emit(logging.WARNING, f"{_secs(rec.ts)} [LEDGER] {text}", rec, tag="LEDGER")
            return
        if text == "pre-trade check refused":
            reason = str(d.get("reason", ""))
            tag = "BBO" if "BBO" in reason else "BUILD"
            self._emit(
                logging.WARNING, f"{_secs(rec.ts)} [{tag}] entry refused: {reason}", rec, tag=tag
            )
        elif text in ("machine error", "deferred queue overflow"):
            self._emit(logging.ERROR, f"{_secs(rec.ts)} [ENGINE] {text}: {d}", rec, tag="ENGINE")
        elif rec.machine not in ("engine", "runner") and text not in (
            "deferred",
            "redelivered",
        ):
            tag = tag_for_machine(rec.machine)
            fields = {k: v for k, v in d.items() if k != "note"}
            self._emit(
                logging.INFO,
                f"{_secs(rec.ts)} [{tag or 'NOTE'}] [{rec.machine}] {text}",
                rec,
                tag=tag,
                console=False,
                fields=fields,
                routine=text.startswith(ROUTINE_NOTES)
                or (text in ROUTINE_NOTE_REASONS and d.get("reason") == ROUTINE_NOTE_REASONS[text]),
            )
