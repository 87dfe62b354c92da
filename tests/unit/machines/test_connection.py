"""The connection machine on virtual time: backoff with deterministic jitter, REST polling
at a bounded rate while the stream is down, down → degraded → connected with an audit,
audits after reconnects and silence, and nothing ever deferred."""

from __future__ import annotations

import itertools
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from engine.core.clock import VirtualClock
from engine.core.events import ConnectionChanged
from engine.core.events import OpenOrdersSnapshot
from engine.core.events import OrderStatus
from engine.core.events import Position
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryMarketPrices
from engine.core.intents import QueryOpenOrders
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from engine.core.intents import SendAlert
from engine.core.intents import StreamConnect
from engine.core.loop import Engine
from machines.base import PureMachine
from machines.base import State
from machines.connection import ConnectionMachine
from machines.connection import backoff_s
from machines.connection import jitter
from tests.unit.machines.fakes import catch_alls

S = 1_000_000_000
MS = 1_000_000
D = Decimal
PIDS = (4, 8)


class Venue:
    """Answers the machine's intents on virtual time: the stream and REST each up or down."""

    def __init__(self, engine: Engine, clock: VirtualClock) -> None:
        self.engine, self.clock = engine, clock
        self.ws_ok = True
        self.rest_ok = True
        self.sent: list[tuple[int, Intent]] = []

    def send(self, intent: Intent) -> None:
        self.sent.append((self.clock.now_ns(), intent))
        later = self.clock.call_later
        if isinstance(intent, StreamConnect):
            state = "connected" if self.ws_ok else "failed"
            later(10 * MS, lambda: self.engine.submit(ConnectionChanged(channel="ws", state=state)))
            return
        rid = getattr(intent, "request_id", None)
        if not self.rest_ok:
            ev: Any = VenueError(
                error_class="retryable", request=intent.kind, request_id=rid, message="refused"
            )
        elif isinstance(intent, QueryPositions):
            ev = PositionSnapshot(
                positions=[Position(product_id=p, qty=0) for p in intent.product_ids],
                request_id=rid,
            )
        elif isinstance(intent, QueryOpenOrders):
            ev = OpenOrdersSnapshot(orders=[], product_ids=intent.product_ids, request_id=rid)
        elif isinstance(intent, QueryOrder):
            ev = OrderStatus(order_id=intent.order_id, state="open", request_id=rid)
        else:
            return  # prices and alerts need no answer here
        later(5 * MS, lambda: self.engine.submit(ev))

    def of(self, cls: type[Intent], since_ns: int = 0) -> list[Any]:
        return [i for t, i in self.sent if isinstance(i, cls) and t >= since_ns]


def run(engine: Engine, clock: VirtualClock, venue: Venue, until_ns: int) -> None:
    while True:
        while engine.inbox:
            origin, ev = engine.inbox.popleft()
            for intent in engine.process(ev, origin):
                venue.send(intent)
        due = clock.next_due_ns()
        if due is None or due > until_ns:
            clock.advance_to(max(until_ns, clock.now_ns()))
            return
        clock.fire_next()


def start(**params: Any) -> tuple[Engine, VirtualClock, Venue, ConnectionMachine]:
    clock = VirtualClock()
    engine = Engine(clock)
    venue = Venue(engine, clock)
    base = {"product_ids": PIDS, "seed": 7, "base_backoff_s": "0.5", "max_backoff_s": "8"}
    machine = engine.spawn(ConnectionMachine, "connection", **{**base, **params})
    for intent in engine._finish_step():
        venue.send(intent)
    run(engine, clock, venue, clock.now_ns() + S)
    assert isinstance(machine, ConnectionMachine)
    return engine, clock, venue, machine


def state(engine: Engine) -> str:
    return engine.ledger.state_of("connection")[0]


def drop(engine: Engine, venue: Venue) -> None:
    venue.ws_ok = False
    engine.submit(ConnectionChanged(channel="ws", state="disconnected", detail="closed"))


def test_nothing_is_ever_deferred() -> None:
    # (Was: every waiting state declared a catch-all for every event, because deferring
    # was the engine's default until issue 13. Now the engine consumes what a state does
    # not take, and a state postpones only what it declares: connection declares nothing.)
    assert ConnectionMachine.unhandled == "consume"
    assert not ConnectionMachine.postpone
    assert catch_alls(ConnectionMachine) == []


def test_backoff_is_exponential_capped_and_jitter_is_deterministic() -> None:
    kw = {"base_s": D("0.5"), "max_s": D(8), "seed": 3}
    waits = [backoff_s(n, **kw) for n in range(1, 9)]
    for n, wait in enumerate(waits, start=1):
        step = min(D(8), D("0.5") * 2 ** (n - 1))
        assert step / 2 <= wait < step + D("0.001")
    assert waits == [backoff_s(n, **kw) for n in range(1, 9)]  # same seed, same waits
    assert waits != [backoff_s(n, base_s=D("0.5"), max_s=D(8), seed=4) for n in range(1, 9)]
    fractions = [jitter(1, o, a) for o in range(20) for a in range(1, 20)]
    assert all(D(0) <= f < 1 for f in fractions)
    assert len(set(fractions)) == len(fractions)


def test_first_connect_has_no_audit() -> None:
    engine, _, venue, machine = start()
    assert state(engine) == "connected"
    assert [i.attempt for i in venue.of(StreamConnect)] == [1]
    assert venue.of(QueryPositions) == []
    assert machine.audits == 0


def test_failed_first_connect_backs_off_then_connects() -> None:
    clock = VirtualClock()
    engine = Engine(clock)
    venue = Venue(engine, clock)
    venue.ws_ok = False
    engine.spawn(ConnectionMachine, "connection", product_ids=PIDS, seed=1)
    for intent in engine._finish_step():
        venue.send(intent)
    run(engine, clock, venue, 50 * MS)
    assert state(engine) == "reconnecting"
    venue.ws_ok = True
    run(engine, clock, venue, 10 * S)
    assert state(engine) == "connected"
    assert [i.attempt for i in venue.of(StreamConnect)] == [1, 2]


def test_reconnect_waits_follow_the_backoff_and_degrade_after_n_attempts() -> None:
    engine, clock, venue, machine = start(degrade_after=3, poll_s="100")
    lost_at = clock.now_ns()
    drop(engine, venue)
    run(engine, clock, venue, lost_at + 60 * S)
    attempts = [(t, i) for t, i in venue.sent if isinstance(i, StreamConnect)][1:]
    expected = []
    t = lost_at
    for n in range(1, len(attempts) + 1):
        t += int(backoff_s(n, base_s=D("0.5"), max_s=D(8), seed=7, outage=1) * S)
        expected.append(t)
        t += 10 * MS  # the venue's answer: refused
    assert [a for a, _ in attempts] == expected
    assert [i.attempt for _, i in attempts] == list(range(1, len(attempts) + 1))
    assert state(engine) == "degraded"
    # capped: no two attempts more than max_backoff apart (plus the answer's 10 ms)
    gaps = [b - a for a, b in itertools.pairwise(expected)]
    assert max(gaps) <= 8 * S + 10 * MS
    assert machine.outages == 1


def test_reconnect_audits_positions_open_orders_and_in_flight_orders() -> None:
    engine, clock, venue, machine = start()
    # an order the ledger still has in flight
    engine.ledger.apply_intent(
        PlaceOrder(order_id="build:o1", product_id=4, side="buy", qty="1", price="3000", tif="ioc")
    )
    drop(engine, venue)
    run(engine, clock, venue, clock.now_ns() + 100 * MS)
    assert state(engine) == "reconnecting"
    venue.ws_ok = True
    since = clock.now_ns()
    run(engine, clock, venue, clock.now_ns() + 5 * S)
    assert state(engine) == "connected"
    assert len(venue.of(QueryPositions, since)) == 1
    assert len(venue.of(QueryOpenOrders, since)) == 1
    assert [q.order_id for q in venue.of(QueryOrder, since)] == ["build:o1"]
    assert machine.completed == ["reconnect"]
    assert machine.pending == {}


def test_polls_at_a_bounded_rate_while_the_stream_is_down() -> None:
    engine, clock, venue, machine = start(poll_s="2", max_backoff_s="8")
    for n in range(15):  # fifteen orders in flight: at most 10 are asked per poll
        engine.ledger.apply_intent(
            PlaceOrder(order_id=f"o{n}", product_id=8, side="sell", qty="1", price="150", tif="ioc")
        )
    since = clock.now_ns()
    drop(engine, venue)
    run(engine, clock, venue, since + 60 * S)
    assert state(engine) == "degraded"
    polls = venue.of(QueryMarketPrices, since)
    assert 28 <= len(polls) <= 30  # every 2 s (re-armed on entering degraded)
    queries = [i for t, i in venue.sent if t >= since and not isinstance(i, StreamConnect)]
    per_poll = 1 + 2 + 10  # prices, positions, open orders, 10 orders
    assert len(queries) <= len(polls) * per_poll
    attempts = venue.of(StreamConnect, since)
    assert len(attempts) <= 60 / 4 + 4  # exponential backoff capped at 8 s (≥ 4 s apart)
    assert machine.polls == len(polls)


def test_venue_down_goes_down_then_degraded_then_connected_with_an_audit() -> None:
    engine, clock, venue, machine = start(poll_s="1", down_after=3)
    venue.rest_ok = False
    down_at = clock.now_ns()
    drop(engine, venue)
    run(engine, clock, venue, down_at + 5 * S)
    assert state(engine) == "down"
    alerts = [i for _, i in venue.sent if isinstance(i, SendAlert)]
    assert [a.event for a in alerts] == ["venue_unreachable"]
    # while down: only a position probe per probe_s, no stream attempts
    mark = clock.now_ns()
    run(engine, clock, venue, mark + 10 * S)
    window = [i for t, i in venue.sent if t >= mark]
    kinds = Counter(type(i).__name__ for i in window)
    assert kinds == {"QueryPositions": 10}
    # the venue returns: REST first (degraded), then the stream, then the audit
    venue.rest_ok = venue.ws_ok = True
    back = clock.now_ns()
    run(engine, clock, venue, back + 5 * S)
    states = [
        r.data["to"]
        for r in engine.journal.records()
        if r.kind == "transition" and r.machine == "connection" and r.ts >= back
    ]
    assert [s for s in states if s is not None][:2] == ["degraded", "connected"]
    assert state(engine) == "connected"
    assert machine.completed[-1] == "reconnect"
    assert venue.of(StreamConnect, back)[0].attempt == 1


def test_silence_report_audits_at_once_and_reconnects() -> None:
    engine, clock, venue, machine = start()
    mark = clock.now_ns()
    engine.submit(ConnectionChanged(channel="ws", state="degraded", detail="silent 10s"))
    run(engine, clock, venue, mark + 50 * MS)
    assert state(engine) == "reconnecting"
    assert machine.audits == 1
    assert machine.last_audit_reason == "silence"
    run(engine, clock, venue, mark + 5 * S)
    assert state(engine) == "connected"
    assert machine.completed == ["silence", "reconnect"]
    assert len(venue.of(StreamConnect, mark)) == 1


def test_an_order_the_venue_cannot_place_is_no_sign_of_a_down_venue() -> None:
    engine, clock, venue, machine = start(down_after=2, poll_s="1")
    drop(engine, venue)
    run(engine, clock, venue, clock.now_ns() + 50 * MS)
    for n in range(5):
        engine.process(
            VenueError(
                error_class="retryable",
                request="query_order",
                request_id=f"connection:x{n}",
                message="cannot tell how it ended",
            )
        )
    assert state(engine) == "reconnecting"
    assert machine.failures == 0


def test_answers_for_others_are_taken_and_ignored() -> None:
    engine, _clock, _venue, machine = start()
    for ev in (
        PositionSnapshot(positions=[], request_id="session:q1"),
        PositionSnapshot(positions=[]),
        VenueError(error_class="retryable", request="query_positions", request_id="build:q2"),
        VenueError(error_class="rate_limited", request="place_order"),
        OrderStatus(order_id="x", state="open", request_id="other:s1"),
        ConnectionChanged(channel="rest", state="disconnected"),
    ):
        engine.process(ev)
    assert state(engine) == "connected"
    assert not engine.deferred["connection"]
    assert machine.failures == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_same_inputs_same_intents_and_times(seed: int) -> None:
    def trace() -> list[tuple[int, str]]:
        engine, clock, venue, _ = start(seed=seed, poll_s="1")
        venue.rest_ok = False
        drop(engine, venue)
        run(engine, clock, venue, clock.now_ns() + 20 * S)
        venue.rest_ok = venue.ws_ok = True
        run(engine, clock, venue, clock.now_ns() + 10 * S)
        return [(t, i.kind) for t, i in venue.sent]

    assert trace() == trace()


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="base_backoff_s"):
        start(base_backoff_s="0")
    with pytest.raises(ValueError, match="poll_s"):
        start(poll_s="0")


def test_catch_alls_are_found_where_they_exist() -> None:
    # The check above can fail: a machine declaring one is caught. (Its own class: a
    # subclass would add the transition to ConnectionMachine's shared State objects.)
    class Swallowing(PureMachine):
        waiting = State(initial=True)
        done = State(final=True)
        fill_received = waiting.to(done, cond="ready") | waiting.to(None)

        def ready(self) -> bool:
            return True

    assert catch_alls(Swallowing) == [("waiting", "fill_received")]
