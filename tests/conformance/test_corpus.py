"""The simulator against the conformance corpus: each scenario through `venue serve`.

For every scenario in `scenarios/` the replies must equal the recorded ones (queries:
contain them) and the stream must deliver exactly the recorded event sequence, no more,
no fewer, in this order.
"""

from __future__ import annotations

import json

import pytest

from adapters.nado.mapping import NadoFill
from adapters.nado.mapping import NadoOrderUpdate
from adapters.nado.mapping import NadoPositionChange
from adapters.nado.mapping import parse_stream_frame
from tests.conformance.corpus import Scenario
from tests.conformance.corpus import default_labels
from tests.conformance.corpus import iter_steps
from tests.conformance.corpus import load_corpus
from tests.conformance.corpus import wire_frames
from tests.conformance.driver import run_scenario
from tests.conformance.driver import subset

CORPUS = load_corpus()


def test_the_corpus_covers_the_behaviours_the_engine_relies_on() -> None:
    names = {sc.name for sc in CORPUS}
    assert {
        "ioc_full_fill",
        "ioc_partial_fill",
        "ioc_no_fill",
        "fok_fill",
        "fok_kill",
        "post_only_rest_partial_cancel",
        "cancel_not_open",
        "reduce_only_clamp",
        "reduce_only_reject",
        "rejects",
        "position_change",
        "bbo_on_change",
        "accounts",
    } <= names
    for sc in CORPUS:
        assert sc.sources, sc.name  # a public source, or "unverified"
        assert sc.name == sc.path.stem


@pytest.mark.asyncio
@pytest.mark.parametrize("sc", CORPUS, ids=lambda sc: sc.name)
async def test_venue_serve_answers_each_scenario_exactly(sc: Scenario) -> None:
    out = await run_scenario(sc)
    for (kind, step), reply in zip(iter_steps(sc), out.replies, strict=True):
        want = step["reply"]
        if kind == "query":
            assert subset(want, reply), f"{kind} {step}: {json.dumps(reply)[:600]}"
        else:
            assert reply == want, f"{kind} {step[kind]}"
    assert out.events == [dict(e) for e in sc.events]


def test_nado_lifecycle_rules_hold_in_every_scenario() -> None:
    """The corpus itself obeys nado-protocol.md §13: per order, `placed` only while
    something rests, every `filled` carries what is still unfilled (the fill's remaining),
    and an order ends exactly once with amount 0."""
    for sc in CORPUS:
        remaining: dict[str, str] = {}
        ended: set[str] = set()
        for e in sc.events:
            if e["type"] == "fill":
                remaining[e["order_digest"]] = e["remaining_qty"]
            if e["type"] != "order_update":
                continue
            digest, amount = e["digest"], e["amount"]
            assert digest not in ended, (sc.name, e)
            if e["reason"] == "filled":
                assert abs(int(amount)) == int(remaining[digest]), (sc.name, e)
            if e["reason"] == "placed":
                assert int(amount) != 0, (sc.name, e)
            if int(amount) == 0:
                ended.add(digest)


def test_wire_frames_give_the_adapter_parseable_venue_frames() -> None:
    """What `corpus.wire_frames` hands an adapter test parses with the adapter's own code."""
    for sc in CORPUS:
        labels = default_labels(sc)
        frames = wire_frames(sc, labels)
        parsed = [parse_stream_frame(f) for f in frames]
        kinds = {"fill": NadoFill, "order_update": NadoOrderUpdate}
        for frame, obj in zip(frames, parsed, strict=True):
            expected = kinds.get(frame["type"])
            if expected is not None:
                assert isinstance(obj, expected), (sc.name, frame)
            elif frame["type"] == "position_change":
                assert isinstance(obj, NadoPositionChange), (sc.name, frame)
        stamps = [int(f["timestamp"]) for f in frames]
        assert stamps == sorted(set(stamps))
