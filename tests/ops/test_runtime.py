"""The runtime around the engine (engine/runtime/compose.py, engine/runtime/drivers.py):
one composition root, one final-position loop shared by both drivers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from engine.core.intents import Intent
from engine.core.intents import QueryPositions
from engine.ops.trades import RunFold
from engine.runtime.drivers import FINAL_TRIES
from engine.runtime.drivers import final_positions
from tests.ops.support import run_session
from tests.ops.support import session


def test_the_final_position_loop_asks_again_until_the_venue_answers():
    sent: list[str] = []
    said: list[str] = []
    answers = iter([False, False, True])

    async def wait() -> bool:
        return next(answers)

    fake: Any = SimpleNamespace(
        send=lambda intent: sent.append(intent),
        final_query=lambda attempt: f"query {attempt}",
        info=lambda line, *_a, **_k: said.append(line),
    )
    asyncio.run(final_positions(fake, wait))
    assert sent == ["query 1", "query 2", "query 3"]
    assert said == [
        "[EXIT] no answer to final position query 1",
        "[EXIT] no answer to final position query 2",
    ]


def test_a_venue_that_never_answers_the_final_query_is_asked_a_bounded_number_of_times():
    lines: list[str] = []
    s = session(cycles=1, seed=1, lines=lines)
    submit = s.venue.submit

    def drop_final(intent: Intent) -> None:
        if isinstance(intent, QueryPositions) and intent.request_id.startswith("final-"):
            return  # the venue never answers the last word on positions
        submit(intent)

    s.venue.submit = drop_final  # type: ignore[method-assign]
    run_session(s)
    summary = s.summary()
    assert summary["cycles_completed"] == 1
    assert summary["flat"] is False
    assert "never answered the final position query" in summary["halt_reason"]
    asked = [
        r
        for r in s.engine.journal.records()
        if r.kind == "note" and r.data.get("note") == "final position query"
    ]
    assert len(asked) == FINAL_TRIES
    assert sum("[EXIT] no answer to final position query" in line for line in lines) == FINAL_TRIES


def test_the_composition_root_wires_the_fold_the_session_and_the_logger():
    s = session(cycles=1, seed=1, lines=[])
    kinds = [getattr(o, "__self__", o) for o in s.engine.observers]
    assert isinstance(kinds[0], RunFold)
    assert kinds[0] is s.fold
    assert kinds[1] is s
    assert type(kinds[-1]).__name__ == "JournalLogger"
    assert s.fold.ledger is s.engine.ledger  # the live fold reads the engine's ledger
