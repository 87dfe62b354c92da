"""UNWIND placing from the position BUILD verified, its opening read in flight (issue 14).

Against the scripted fake venue on the virtual clock. The ledger starts from `belief`
(as a BUILD's final read leaves it: a venue read that agrees with the fills); the venue
may hold something else (`actual`: changed at the venue, unheard)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.core.clock import VirtualClock
from engine.core.events import ConnectionChanged
from engine.core.events import FillReceived
from engine.core.events import Position
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import AdoptVenuePositions
from engine.core.intents import Intent
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryPositions
from engine.core.loop import Engine
from machines.position_work import PositionWork
from tests.unit.machines.fakes import MS
from tests.unit.machines.fakes import FakeVenue
from tests.unit.machines.fakes import assert_ledger_tracks_venue
from tests.unit.machines.fakes import notes
from tests.unit.machines.fakes import outcome
from tests.unit.machines.fakes import params
from tests.unit.machines.fakes import run_to_finish

D = Decimal
ETH, SOL = 4, 8
BUILT = {ETH: D("0.333"), SOL: D("-6.66")}
OVERLAP = "unwinding from the position BUILD verified, reading the venue alongside"
REFUTED = "the opening read refutes the verified belief: reading again"
RTT_MS = 20


def unwind(
    belief: dict[int, Decimal] | None = None,
    actual: dict[int, Decimal] | None = None,
    *,
    verified_ns: int | None = 0,
    p: Any = None,
    prepare: Any = None,
    setup: Any = None,
) -> tuple[Engine, FakeVenue]:
    """UNWIND spawned after a BUILD verified `belief` at engine time 0 (`verified_ns`),
    the venue holding `actual` (default: the belief). `prepare(engine, clock)` runs after
    the ledger holds the belief, before the spawn."""
    p = p or params()
    belief = BUILT if belief is None else belief
    clock = VirtualClock()
    engine = Engine(clock)
    fake = FakeVenue(engine, clock, positions=belief, rtt_ms=RTT_MS)
    fake.push_bbo()
    snap = [Position(product_id=pid, qty=belief.get(pid, D(0))) for pid in p.product_ids]
    engine.process(PositionSnapshot(positions=snap, request_id="build:q"))
    engine.ledger.apply_intent(AdoptVenuePositions(product_ids=p.product_ids))
    if actual is not None:
        fake.positions = dict(actual)
        fake.history = [(0, dict(actual))]
    if setup is not None:
        setup(fake)
    if prepare is not None:
        prepare(engine, clock)
    extra = {} if verified_ns is None else {"verified_ns": verified_ns}
    engine.spawn(PositionWork, "m", params=p, purpose="unwind", **extra)
    run_to_finish(engine, clock, fake)
    return engine, fake


def sent_at(engine: Engine) -> list[tuple[int, str]]:
    """(engine ns, kind) of every intent the machine sent, in order."""
    return [
        (r.ts, r.data["kind"])
        for r in engine.journal.records()
        if r.kind == "intent" and r.machine == "m"
    ]


def first_step(engine: Engine) -> list[str]:
    sent = sent_at(engine)
    return [kind for ts, kind in sent if ts == sent[0][0]]


# -- the normal case ----------------------------------------------------------------------
def test_overlap_places_both_reduce_only_legs_with_the_read_in_the_same_step():
    engine, fake = unwind()
    assert outcome(engine) == "done"
    assert first_step(engine) == ["query_positions", "place_order", "place_order"]
    sell, buy = fake.of(PlaceOrder)
    assert (sell.product_id, sell.side, sell.qty, sell.reduce_only) == (
        ETH,
        "sell",
        BUILT[ETH],
        True,
    )
    assert (buy.product_id, buy.side, buy.qty, buy.reduce_only) == (SOL, "buy", D("6.66"), True)
    assert notes(engine, OVERLAP)
    assert not notes(engine, REFUTED)
    assert notes(engine, "flat: verified by the venue")
    assert fake.positions == {ETH: 0, SOL: 0}
    # The final read went out after the orders settled, and decided.
    assert isinstance(fake.sent[-1], QueryPositions)


def test_overlap_saves_one_round_trip_against_reading_first():
    overlapped, _ = unwind()
    read_first, _ = unwind(verified_ns=None)
    assert first_step(read_first) == ["query_positions"]
    assert outcome(overlapped) == outcome(read_first) == "done"
    done_ns = [e.journal.records()[-1].ts for e in (overlapped, read_first)]
    assert done_ns[1] - done_ns[0] == RTT_MS * MS


def test_a_lagging_opening_read_is_not_news():
    # The read shows the belief (taken before the fills): what the fills held, not a refutation.
    def setup(fake):
        fake.lag_ms = 15

    engine, fake = unwind(setup=setup)
    assert outcome(engine) == "done"
    assert not notes(engine, REFUTED)
    assert len(fake.of(PlaceOrder)) == 2


def test_opening_read_refused_leaves_the_final_read_to_decide():
    def setup(fake):
        send = fake.send

        def refuse_first_read(intent: Intent) -> None:
            if isinstance(intent, QueryPositions) and len(fake.of(QueryPositions)) == 0:
                fake.sent.append(intent)
                err = VenueError(
                    error_class="retryable", request=intent.kind, request_id=intent.request_id
                )
                fake._later(fake.rtt_ms, err)
                return
            send(intent)

        fake.send = refuse_first_read  # type: ignore[method-assign]

    engine, fake = unwind(setup=setup)
    assert outcome(engine) == "done"
    assert notes(engine, "opening read not answered: the final read decides")
    assert fake.positions == {ETH: 0, SOL: 0}


# -- the venue disagrees with the belief: never reported flat against its word -------------
@pytest.mark.parametrize(
    "actual",
    [
        pytest.param({ETH: D("0.5"), SOL: D("-6.66")}, id="larger"),
        pytest.param({ETH: D("0.2"), SOL: D("-6.66")}, id="smaller"),
        pytest.param({ETH: D("-0.2"), SOL: D("-6.66")}, id="opposite"),
        pytest.param({ETH: D("0.333"), SOL: D(0)}, id="one-leg-already-flat"),
    ],
)
def test_opening_read_refuting_the_belief_reads_again_and_never_reports_flat_wrongly(actual):
    engine, fake = unwind(actual=actual)
    assert notes(engine, OVERLAP)
    assert notes(engine, REFUTED)
    # After the refutation UNWIND worked from a fresh read: the venue ends flat...
    assert fake.positions == {ETH: 0, SOL: 0}
    # ...but the fills it was told (the belief and its own) contradict that read, so it
    # is not "flat: verified": the flagged failure path (the session's exit takes over).
    assert outcome(engine) == "failed"
    assert notes(engine, "unwind failed")
    assert not notes(engine, "flat: verified by the venue")
    # Every order it sent was reduce-only, and after the refutation none went out before
    # a fresh read (sent once every order before it had settled) came back.
    assert all(o.reduce_only for o in fake.of(PlaceOrder))
    records = engine.journal.records()
    refuted_at = next(
        n for n, r in enumerate(records) if r.kind == "note" and r.data.get("note") == REFUTED
    )
    later = records[refuted_at:]
    places = [
        n for n, r in enumerate(later) if r.kind == "intent" and r.data["kind"] == "place_order"
    ]
    reads = [
        n
        for n, r in enumerate(later)
        if r.kind == "event"
        and r.data["kind"] == "position_snapshot"
        and r.data["request_id"].startswith("m:")
    ]
    assert reads
    assert not places or reads[0] < places[0]


def test_refuted_belief_with_the_venue_flat_already_is_not_reported_flat():
    # Both legs gone at the venue, unheard: the reduce-only orders find nothing to reduce.
    engine, _ = unwind(actual={})
    assert notes(engine, REFUTED)
    assert outcome(engine) == "failed"
    assert not notes(engine, "flat: verified by the venue")
    assert engine.ledger.position(ETH) == BUILT[ETH]  # what the fills say stays stated


def test_a_refutation_arriving_after_the_round_makes_the_final_read_a_start_read():
    # The opening read arrives after the IOCs settled, while the final read is in flight:
    # that read is then the opening one (rounds follow a residual, never "failed" at once).
    def setup(fake):
        fake.lag_ms = 0
        send = fake.send

        def slow_first_read(intent: Intent) -> None:
            if isinstance(intent, QueryPositions) and len(fake.of(QueryPositions)) == 0:
                fake.sent.append(intent)
                fake._later(3 * fake.rtt_ms, lambda: fake._snapshot(intent))
                return
            send(intent)

        fake.send = slow_first_read  # type: ignore[method-assign]

    engine, fake = unwind(actual={ETH: D("0.5"), SOL: D("-6.66")}, setup=setup)
    assert notes(engine, REFUTED)
    # The residual 0.167 the larger venue position left was closed from a fresh read.
    eth = fake.placed(product_id=ETH)
    assert [o.qty for o in eth] == [D("0.333"), D("0.167")]
    assert fake.positions == {ETH: 0, SOL: 0}
    assert outcome(engine) == "failed"  # the fills still contradict the flat read


# -- no overlap unless the belief is the venue's verified word from this BUILD --------------
def _fills_since(engine, clock):
    clock.advance_to(5 * MS)
    for n, side in enumerate(("buy", "sell")):
        oid = f"x:o{n}"
        intent = PlaceOrder(
            order_id=oid, product_id=ETH, side=side, qty=D("0.001"), price=D("3000"), tif="ioc"
        )
        engine.ledger.apply_intent(intent)
        engine.process(
            FillReceived(
                order_id=oid,
                fill_id=f"{oid}/f",
                product_id=ETH,
                side=side,
                price=D("3000"),
                qty=D("0.001"),
                cumulative_qty=D("0.001"),
                remaining_qty=D(0),
            )
        )


def _read_disagrees(engine, clock):
    snap = [Position(product_id=ETH, qty=D("0.3")), Position(product_id=SOL, qty=D("-6.66"))]
    engine.process(PositionSnapshot(positions=snap, request_id="audit:q"))


def _order_in_flight(engine, clock):
    engine.ledger.apply_intent(
        PlaceOrder(
            order_id="x:o1", product_id=SOL, side="buy", qty=D("1"), price=D("150"), tif="ioc"
        )
    )


def _stream_lost(engine, clock):
    engine.process(ConnectionChanged(channel="ws", state="disconnected"))


def _stream_lost_and_back(engine, clock):
    engine.process(ConnectionChanged(channel="ws", state="degraded"))
    clock.advance_to(1 * MS)
    engine.process(ConnectionChanged(channel="ws", state="connected"))


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        pytest.param({"verified_ns": None}, "no BUILD verified this cycle", id="no-build"),
        pytest.param({"verified_ns": 1}, "not read since BUILD verified", id="read-before"),
        pytest.param({"prepare": _fills_since}, "filled since its last read", id="fills-since"),
        pytest.param({"prepare": _read_disagrees}, "read 0.3, fills 0.333", id="disagrees"),
        pytest.param({"prepare": _order_in_flight}, "in flight", id="order-in-flight"),
        pytest.param({"prepare": _stream_lost}, "stream was lost", id="stream-lost"),
        pytest.param({"prepare": _stream_lost_and_back}, "stream was lost", id="stream-back"),
        pytest.param(
            {"p": params(execution="maker_first")}, "the policy reads first", id="maker-first"
        ),
        pytest.param(
            {"p": params(order_style="post_only")}, "the policy reads first", id="post-only"
        ),
    ],
)
def test_no_overlap_when_a_precondition_is_missing(kw, reason):
    engine, _ = unwind(**kw)
    assert first_step(engine) == ["query_positions"]
    assert not notes(engine, OVERLAP)
    (why,) = notes(engine, "unwind reads first")
    assert reason in why["reason"]


def test_no_overlap_in_the_exit_or_build():
    from machines.policy import WorkPolicy

    p = params()
    assert WorkPolicy.unwind(p).overlap_read
    assert not WorkPolicy.exit(p).overlap_read
    assert not WorkPolicy.build(p).overlap_read
    assert not WorkPolicy.unwind(params(execution="maker_first")).overlap_read
    assert not WorkPolicy.unwind(params(order_style="post_only")).overlap_read


def test_ledger_tracks_the_venue_after_an_overlapped_unwind():
    engine, fake = unwind()
    assert_ledger_tracks_venue(engine, fake)


# -- through the session --------------------------------------------------------------------
def test_the_session_lets_each_unwind_place_from_its_cycles_verified_build():
    from tests.unit.machines.test_session import session

    engine, fake = session(cycles=2)
    assert engine.finished["session"] == "done"
    unwinds = [m for m in engine.finished if m.startswith("unwind:")]
    assert len(unwinds) == 2
    for machine in unwinds:
        steps: dict[int, list[str]] = {}
        for r in engine.journal.records():
            if r.kind == "intent" and r.machine == machine:
                steps.setdefault(r.ts, []).append(r.data["kind"])
        first = next(iter(steps.values()))
        assert first == ["query_positions", "place_order", "place_order"], machine
    assert fake.positions.get(ETH, D(0)) == 0
    assert fake.positions.get(SOL, D(0)) == 0
