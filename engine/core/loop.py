"""The engine loop: one event at a time, run to completion.

For every event: journal it → update the ledger → dispatch to the live machines →
journal every transition, note and intent as it happens → commit → only then hand
the step's intents out. An exception in a machine is journaled, committed and re-raised.

Dispatch follows the machine contract (machines/base.py, gen_statem-style):

- a current deadline is sent to its machine as the event named like the deadline
  (`fills_timeout`); a name the machine does not declare arrives as `deadline_expired`,
  which no machine takes: consumed like any other unhandled event;
- an event the machine's state does not take is consumed: counted in `unhandled` and
  noted (market data only counted);
- an event kind the state declares in `postpone` is queued and re-delivered, in arrival
  order, after the machine's next state change;
- when a machine finishes, its order and request ids are retired (bounded): an answer
  for one is journaled and applied to the ledger, and reaches no machine.

Deadlines are journaled in the record of the step that armed or disarmed them (journal
schema 4): a transition's payload gains `"armed": [{"name", "due_ns", "generation"}]` (in
arming order) and `"disarmed": [names]` when the transition armed or disarmed any (a
reader applies `disarmed`, then `armed`); the deadlines a machine arms on its initial
entry are in the engine's `spawn` note, the same way. The records a step writes while a
transition (or a spawn) is open are held and journaled right after it, so the transition
still comes first. A machine that finishes is journaled by its `machine_finished` event
(to its parent); only a root machine, which has no parent to tell, gets an engine
`finished` note.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections import OrderedDict
from collections import deque
from collections.abc import Callable
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from engine.core.clock import Clock
from engine.core.clock import seconds_to_ns
from engine.core.events import BboUpdated
from engine.core.events import DeadlineExpired
from engine.core.events import Event
from engine.core.events import MachineFinished
from engine.core.intents import ENGINE_ONLY
from engine.core.intents import Intent
from engine.core.journal import JOURNAL_SCHEMA
from engine.core.journal import Journal
from engine.core.ledger import Ledger
from engine.core.messages import Message
from engine.core.messages import NotPlain
from engine.core.messages import json_fields
from engine.core.messages import to_dict
from engine.core.observed import Observed
from engine.core.timers import Deadlines
from machines.base import PureMachine

__all__ = ["Engine", "MachineError", "load_app"]

MAX_DEFERRED = 10_000
RUNNER = "runner"  # journal source of annotations made outside the machines
MAX_FINISHED = 1_000  # outcomes of finished machines kept for inspection
MAX_RETIRED = 4_096  # correlation ids of finished machines remembered (LRU)
MAX_OWNED = 256  # correlation ids a live machine owns (its newest; older ones retire)
# Steps that send nothing may share a commit; a step that sends always commits first.
COMMIT_EVERY_RECORDS = 256
COMMIT_EVERY_NS = 1_000_000_000
App = Callable[["Engine", Mapping[str, Any]], None]


class MachineError(RuntimeError):
    """A machine raised while handling an event. Already journaled when raised."""


# Journals written before engine/ had layers name their app by the old module path.
LEGACY_APP_MODULES = {"engine.app": "engine.runtime.app", "engine.demo": "engine.harness.demo"}


def load_app(ref: str) -> App:
    """`module:function` → the function that spawns a run's root machines."""
    module, _, name = ref.partition(":")
    module = LEGACY_APP_MODULES.get(module, module)
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"no app factory {ref!r}")
    return fn  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    kind = type(value)
    if kind in _SCALARS:  # the common cases first, by exact type, answered as below
        return value
    if kind is dict:
        return {str(k): _jsonable(v) for k, v in value.items()}
    if kind is Decimal:
        return str(value)
    if kind is list or kind is tuple:
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if attrs.has(type(value)):
        # structured, not repr: observers read a spawn's `cycle` as a field
        try:
            return json_fields(value)  # `_jsonable(plain_fields(value))`, in one pass
        except NotPlain:
            return _jsonable(attrs.asdict(value, recurse=True))
    return repr(value)


_SCALARS = frozenset({str, int, bool, type(None)})


def _correlation(msg: object) -> str | None:
    """The id that ties an answer to the intent that asked for it."""
    request_id = getattr(msg, "request_id", None)
    if request_id:
        return str(request_id)
    order_id = getattr(msg, "order_id", None)
    return str(order_id) if order_id else None


class _Open:
    """A record being written: a transition (or a spawn note) whose payload takes the
    deadlines its step arms and disarms, and the records the step writes meanwhile (held,
    journaled right after it)."""

    __slots__ = ("armed", "disarmed", "held", "kind", "machine", "payload", "source")

    def __init__(self, kind: str, source: str, payload: dict[str, Any], machine: str) -> None:
        self.kind = kind
        self.source = source  # the record's machine field
        self.payload = payload
        self.machine = machine  # whose deadlines it takes
        self.armed: list[dict[str, Any]] = []
        self.disarmed: list[str] = []
        self.held: list[tuple[str, str, Any, Message | None]] = []


class _Context:
    """The engine as one machine sees it (implements machines.base.MachineContext)."""

    def __init__(self, engine: Engine, machine_id: str) -> None:
        self.engine = engine
        self.machine_id = machine_id
        self.ledger = engine.ledger
        self.current_state: str | None = None
        self.transitions = 0

    def emit(self, intent: Intent) -> None:
        self.engine._emit(self.machine_id, intent)

    def arm(self, name: str, seconds: Decimal | int | str) -> None:
        self.engine._arm(self.machine_id, name, seconds, self.current_state)

    def disarm(self, name: str) -> None:
        armed = self.engine.deadlines.disarm(self.machine_id, name)
        if armed is not None:
            self.engine._disarmed(self.machine_id, name, None)

    def spawn(self, cls: type[PureMachine], machine_id: str, **params: Any) -> PureMachine:
        return self.engine.spawn(cls, machine_id, parent=self.machine_id, **params)

    def note(self, text: str, **data: Any) -> None:
        self.engine._note(self.machine_id, text, **data)

    def entering(self, state_id: str) -> None:
        self.current_state = state_id

    def exiting(self, state_id: str) -> None:
        # The engine, not the machine, disarms a state's deadlines when it is left.
        for armed in self.engine.deadlines.disarm_owned(self.machine_id, state_id):
            self.engine._disarmed(self.machine_id, armed.name, state_id)

    def transitioned(self, event: str, source: str, target: str | None) -> None:
        self.transitions += 1
        engine, mid = self.engine, self.machine_id
        stack = engine._open
        if stack and stack[-1].machine == mid and stack[-1].kind == "transition":
            engine._close_to(len(stack) - 1)  # this machine's previous microstep
        stack.append(_Open("transition", mid, {"event": event, "from": source, "to": target}, mid))


class Engine:
    def __init__(
        self,
        clock: Clock,
        journal: Journal | None = None,
        *,
        replaying: bool = False,
    ) -> None:
        self.clock = clock
        self.journal = journal if journal is not None else Journal(":memory:", durable=False)
        self.ledger = Ledger()
        self.deadlines = Deadlines(clock, self._deadline_fired, schedule=not replaying)
        self.machines: dict[str, PureMachine] = {}
        self.contexts: dict[str, _Context] = {}
        self.parents: dict[str, str | None] = {}
        self.deferred: dict[str, deque[Event]] = {}
        self.finished: dict[str, str] = {}  # machine id → final state id
        # order ids and request ids → the live machine that emitted them, so answers go
        # to their owner instead of being broadcast to every machine.
        self.owners: dict[str, str] = {}
        # per machine, its ids, least recently emitted first; a long-lived machine (the
        # session asks for positions every cycle) keeps its newest MAX_OWNED, older ones
        # retire as a finished machine's do (memory flat over any number of cycles)
        self._owned: dict[str, OrderedDict[str, None]] = {}
        # ids whose owner finished: late answers for them reach no machine (bounded LRU).
        self.retired: OrderedDict[str, str] = OrderedDict()
        # events consumed unhandled: (machine class, state ids, event kind) → count
        self.unhandled: Counter[tuple[str, str, str]] = Counter()
        self.inbox: deque[tuple[str, Event]] = deque()
        self.on_inbox: Callable[[], None] | None = None  # async drivers wake up on this
        # status, logs, monitors: each journal record, typed (engine/core/observed.py)
        self.observers: list[Callable[[Observed], None]] = []
        self._internal: deque[Event] = deque()
        self._step_intents: list[Intent] = []
        self.events_processed = 0
        # Quotes no machine step reads yet: held (latest per product, with its arrival
        # time) and journaled just before the next step, so replay feeds the ledger the
        # same quotes at the same times. Off by default (replay, tests); `dnpair run` on.
        self.coalesce_quotes = False
        self._held_quotes: dict[int, tuple[int, str, BboUpdated]] = {}
        self.quotes_coalesced = 0
        self.now_ns = clock.now_ns()  # frozen for the whole step: every record shares it
        self._last_commit_ns = self.now_ns
        # Records being written (innermost last): each takes its step's deadlines, and
        # holds the records written meanwhile until it is closed and journaled.
        self._open: list[_Open] = []
        # event kind → the live machines that want it (`_interested`; cleared by every
        # spawn and finish)
        self._interest_index: dict[str, tuple[tuple[str, PureMachine], ...]] = {}

    # -- starting ---------------------------------------------------------------------
    def start(self, app_ref: str, config: Mapping[str, Any]) -> list[Intent]:
        """Journal the run header, spawn the app's root machines, commit, return intents."""
        self.now_ns = self.clock.now_ns()
        header = {"note": "run_started", "journal_schema": JOURNAL_SCHEMA, "app": app_ref}
        self._record("note", "engine", {**header, "config": config})
        load_app(app_ref)(self, config)
        return self._finish_step()

    def spawn(
        self, cls: type[PureMachine], machine_id: str, *, parent: str | None = None, **params: Any
    ) -> PureMachine:
        if machine_id in self.machines or machine_id in self.finished:
            raise ValueError(f"machine id {machine_id!r} already used")
        payload = {
            "note": "spawn",
            "machine": machine_id,
            "cls": cls.__name__,
            "parent": parent,
            "params": _jsonable(params),
        }
        depth = len(self._open)
        # the spawn note takes the deadlines the initial entry arms
        self._open.append(_Open("note", "engine", payload, machine_id))
        try:
            ctx = _Context(self, machine_id)
            self.contexts[machine_id] = ctx
            self.parents[machine_id] = parent
            self.deferred[machine_id] = deque()
            machine = cls(ctx, **params)  # entering the initial state may emit and arm
            self.machines[machine_id] = machine
            self._interest_index.clear()
            self.ledger.machine_states[machine_id] = machine.active_ids
            self._check_finished(machine_id, machine)
        finally:
            self._close_to(depth)
        return machine

    # -- input ------------------------------------------------------------------------
    def submit(self, ev: Event, origin: str = "venue") -> None:
        """Queue an event from an adapter, the clock or the operator."""
        self.inbox.append((origin, ev))
        if self.on_inbox is not None:
            self.on_inbox()

    def _deadline_fired(self, ev: DeadlineExpired) -> None:
        self.submit(ev, origin="clock")

    def drain(self) -> list[Intent]:
        out: list[Intent] = []
        while self.inbox:
            origin, ev = self.inbox.popleft()
            out.extend(self.process(ev, origin))
        return out

    def process(self, ev: Event, origin: str = "venue", *, text: str | None = None) -> list[Intent]:
        """Run one event to completion; returns the intents committed for sending.

        `text`: the event's canonical JSON when the caller has it (replay: the recorded
        payload the event was decoded from, which decoding round-trips exactly, as
        tests/unit/test_messages.py checks), journaled as it is instead of encoded again."""
        self.events_processed += 1
        if self.coalesce_quotes and isinstance(ev, BboUpdated) and not self._quote_readers():
            # Nothing reads a quote as an event: it matters only through the ledger at the
            # next step. Keep the newest per product; older ones were never read.
            if ev.product_id in self._held_quotes:
                self.quotes_coalesced += 1
            self._held_quotes[ev.product_id] = (self.clock.now_ns(), origin, ev)
            return []
        self._release_quotes()
        self.now_ns = self.clock.now_ns()
        # observers take the event's structured payload: for them, it is built as usual
        self._ingest(ev, origin, None if self.observers else text)
        while self._internal:
            self._ingest(self._internal.popleft(), "engine")
        return self._finish_step()

    def _quote_readers(self) -> bool:
        return bool(self._interested(BboUpdated.kind))

    def _release_quotes(self) -> None:
        """Journal and apply the held quotes, each at its arrival time, in arrival order."""
        if not self._held_quotes:
            return
        held = sorted(self._held_quotes.values(), key=lambda h: h[0])
        self._held_quotes.clear()
        for arrived_ns, origin, quote in held:
            self.now_ns = arrived_ns
            self._ingest(quote, origin)

    # -- the step -----------------------------------------------------------------------
    def _ingest(self, ev: Event, origin: str, text: str | None = None) -> None:
        if text is None:
            self._record("event", origin, to_dict(ev), ev)
        else:
            self.journal.append_text("event", origin, text, self.now_ns)
        for text in self.ledger.apply_event(ev, self.now_ns):
            self._note("ledger", text)
        if isinstance(ev, DeadlineExpired) and not self.deadlines.take(ev):
            self._note(
                "engine",
                "stale deadline ignored",
                machine=ev.target,
                name=ev.name,
                generation=ev.generation,
            )
            return
        if ev.target is not None:
            machine = self.machines.get(ev.target)
            if machine is None:
                self._note("engine", "event for a machine that is not live", machine=ev.target)
                return
            self._deliver(ev.target, machine, ev)
            return
        key = _correlation(ev)
        if key:
            owner = self.owners.get(key)
            if owner is not None and owner in self.machines:
                machine = self.machines[owner]
                if ev.kind in type(machine).interests():
                    self._deliver(owner, machine, ev)
                return
            if key in self.retired:
                self.retired.move_to_end(key)
                was = self.retired[key]
                if was in self.machines:  # a live machine's id older than its MAX_OWNED
                    self._note("engine", "answer for a retired id", machine=was, id=key)
                else:
                    self._note("engine", "answer for a finished machine", machine=was, id=key)
                return
        for mid, machine in self._interested(ev.kind):
            if mid in self.machines:
                self._deliver(mid, machine, ev)

    def _interested(self, kind: str) -> tuple[tuple[str, PureMachine], ...]:
        """The live machines whose class wants `kind`, in spawn order: worked out once per
        kind until the next spawn or finish."""
        found = self._interest_index.get(kind)
        if found is None:
            found = self._interest_index[kind] = tuple(
                (mid, m) for mid, m in self.machines.items() if kind in type(m).interests()
            )
        return found

    @staticmethod
    def _event_name(machine: PureMachine, ev: Event) -> str:
        """The event a machine is sent: a deadline's own name when it declares it."""
        if isinstance(ev, DeadlineExpired) and ev.name in type(machine).declared_events():
            return ev.name
        return ev.kind

    def _deliver(self, mid: str, machine: PureMachine, ev: Event) -> None:
        if not self._send(mid, machine, ev):
            return
        # Re-deliver what this machine deferred or postponed, in arrival order, until
        # nothing moves.
        for _ in range(MAX_DEFERRED):
            queue = self.deferred.get(mid)
            if not queue or mid not in self.machines:
                break
            pending, self.deferred[mid] = queue, deque()
            progressed = False
            for old in pending:
                if mid not in self.machines:
                    self._note(mid, "undelivered after finish", event=to_dict(old))
                elif self._send(mid, machine, old, redelivery=True):
                    progressed = True
            if not progressed:
                break

    def _send(self, mid: str, machine: PureMachine, ev: Event, *, redelivery: bool = False) -> bool:
        """True if the machine's state changed on the event (its queue is worth another look).

        Otherwise the event was postponed (queued for this machine) or consumed unhandled."""
        cls = type(machine)
        name = self._event_name(machine, ev)
        states = machine.active_ids
        if cls.postpone and any(name in cls.postpone.get(s, ()) for s in states):
            return self._queue(mid, ev, name, states, redelivery=redelivery)
        if machine.takes(name):
            depth = len(self._open)
            try:
                machine.send(name, ev=ev)
            except machine.TransitionNotAllowed:
                self._close_to(depth)  # declared here, but every guard refused: unhandled
            except Exception as exc:
                self._close_to(depth)
                self._note(mid, "machine error", error=f"{type(exc).__name__}: {exc}")
                self.journal.commit()
                raise MachineError(f"{mid} failed on {name}: {exc}") from exc
            else:
                after = machine.active_ids
                self.ledger.machine_states[mid] = after
                if redelivery:
                    self._note(mid, "redelivered", event=name)
                # before closing: a finished machine's last deadlines go to its transition
                self._check_finished(mid, machine)
                self._close_to(depth)
                return after != states  # postponed events wait for a state change (gen_statem)
        self.unhandled[(cls.__name__, "/".join(states), name)] += 1
        if not isinstance(ev, BboUpdated):
            self._note(mid, "unhandled", event=name, state=list(states))
        return False

    def _queue(
        self, mid: str, ev: Event, name: str, states: tuple[str, ...], *, redelivery: bool
    ) -> bool:
        queue = self.deferred[mid]
        if len(queue) >= MAX_DEFERRED:
            self._close_to(0)
            self._note(mid, "deferred queue overflow", event=name)
            self.journal.commit()
            raise MachineError(f"{mid}: more than {MAX_DEFERRED} deferred events")
        queue.append(ev)
        if not redelivery:
            self._note(mid, "deferred", event=name, state=list(states))
        return False

    def _check_finished(self, mid: str, machine: PureMachine) -> None:
        if not machine.is_terminated or mid not in self.machines:
            return
        outcome = machine.state_ids[-1] if machine.state_ids else "terminated"
        del self.machines[mid]
        self._interest_index.clear()
        self.ledger.machine_states.pop(mid, None)
        self.finished[mid] = outcome
        for armed in self.deadlines.disarm_all(mid):
            self._disarmed(mid, armed.name, None)
        for key in self._owned.pop(mid, ()):
            self.owners.pop(key, None)
            self._retire(key, mid)
        for left in self.deferred.pop(mid, deque()):
            self._note(mid, "undelivered after finish", event=to_dict(left))
        parent = self.parents.pop(mid, None)
        self.contexts.pop(mid, None)
        while len(self.finished) > MAX_FINISHED:  # long runs: memory stays flat
            del self.finished[next(iter(self.finished))]
        if parent is None:  # a root machine: no `machine_finished` event says it
            self._note("engine", "finished", machine=mid, outcome=outcome)
        else:
            self._internal.append(MachineFinished(machine=mid, outcome=outcome, target=parent))

    def _finish_step(self) -> list[Intent]:
        self._close_to(0)  # (every step closes what it opened; this is the backstop)
        out, self._step_intents = self._step_intents, []
        # Durable before anything leaves the process. A step that sends nothing (most are
        # market data) may wait for the next commit: any committed prefix is a whole
        # journal, so a crash loses at most a second of events that changed nothing outside.
        if (
            out
            or self.journal.pending >= COMMIT_EVERY_RECORDS
            or self.now_ns - self._last_commit_ns >= COMMIT_EVERY_NS
        ):
            self.journal.commit()
            self._last_commit_ns = self.now_ns
        return out

    def _retire(self, key: str, mid: str) -> None:
        self.retired[key] = mid
        self.retired.move_to_end(key)
        while len(self.retired) > MAX_RETIRED:
            self.retired.popitem(last=False)

    # -- services for machine contexts -------------------------------------------------------
    def _emit(self, mid: str, intent: Intent) -> None:
        self._record("intent", mid, to_dict(intent), intent)
        self.ledger.apply_intent(intent)
        if intent.kind in ENGINE_ONLY:
            return  # handled right here by the ledger; nothing leaves the process
        key = _correlation(intent)
        if key is not None:
            self.owners[key] = mid
            owned = self._owned.get(mid)
            if owned is None:
                owned = self._owned[mid] = OrderedDict()
            owned[key] = None
            owned.move_to_end(key)
            if len(owned) > MAX_OWNED:
                old = owned.popitem(last=False)[0]
                if self.owners.get(old) == mid:
                    del self.owners[old]
                    self._retire(old, mid)
        self._step_intents.append(intent)

    def _arm(self, mid: str, name: str, seconds: Decimal | int | str, owner: str | None) -> None:
        armed = self.deadlines.arm(mid, name, self.now_ns, seconds_to_ns(seconds), owner)
        entry = {"due_ns": armed.due_ns, "generation": armed.generation, "name": name}
        record = self._open_for(mid)
        if record is not None:
            record.armed.append(entry)
        else:  # armed outside any transition or spawn of its machine (none does today)
            self._note(mid, "deadline armed", **entry, state=owner)

    def _disarmed(self, mid: str, name: str, owner: str | None) -> None:
        record = self._open_for(mid)
        if record is not None:
            if any(a["name"] == name for a in record.armed):
                # armed and disarmed by the same step: no expiry of it can ever be current,
                # and a reader applies `disarmed` before `armed`
                record.armed = [a for a in record.armed if a["name"] != name]
            if name not in record.disarmed:
                record.disarmed.append(name)
        else:
            self._note(mid, "deadline disarmed", name=name, state=owner)

    def _open_for(self, mid: str) -> _Open | None:
        """The innermost record being written for `mid`'s step (its transition or spawn)."""
        for record in reversed(self._open):
            if record.machine == mid:
                return record
        return None

    def _close_to(self, depth: int) -> None:
        """Journal the open records above `depth`, innermost first: each with the deadlines
        its step armed and disarmed, followed by the records it held (into the enclosing
        open record, if any, else the journal)."""
        stack = self._open
        while len(stack) > depth:
            top = stack.pop()
            payload = top.payload
            if top.disarmed:
                payload["disarmed"] = top.disarmed
            if top.armed:
                payload["armed"] = top.armed
            if stack:
                held = stack[-1].held
                held.append((top.kind, top.source, payload, None))
                held.extend(top.held)
            else:
                self._write(top.kind, top.source, payload, None)
                for kind, source, data, msg in top.held:
                    self._write(kind, source, data, msg)

    def annotate(self, text: str, **data: Any) -> None:
        """A note from the code driving the engine (not from a machine). Replay skips these:
        they are commentary, not something fresh machines would write again."""
        self._release_quotes()  # keep the journal in time order
        self._note(RUNNER, text, **data)
        self.journal.commit()

    def _note(self, source: str, text: str, **data: Any) -> None:
        payload: dict[str, Any] = {"note": text}
        for key, value in data.items():  # `_jsonable(data)`, the plain values as they are
            payload[key] = value if type(value) in _SCALARS else _jsonable(value)
        self._record("note", source, payload)

    def _record(self, kind: str, machine: str, payload: Any, msg: Message | None = None) -> None:
        if self._open:  # written after the record being written
            self._open[-1].held.append((kind, machine, payload, msg))
        else:
            self._write(kind, machine, payload, msg)

    def _write(self, kind: str, machine: str, payload: Any, msg: Message | None) -> None:
        rec = self.journal.append(kind, machine, payload, self.now_ns)
        if self.observers:
            seen = Observed(rec, payload, msg)
            for observe in self.observers:
                observe(seen)
