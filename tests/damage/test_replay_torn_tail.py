"""Replay of a journal that ends mid-step (what a torn tail, once truncated, leaves)."""

from __future__ import annotations

from engine.core.replay import replay_records


def test_replay_accepts_a_journal_ending_mid_step_and_nothing_else(original):
    _, records = original

    # Cut inside a step of the journal (its event kept, the rest of its records lost):
    # what a torn, then truncated, tail leaves.
    def external(i: int) -> bool:
        return records[i].kind == "event" and records[i].machine not in ("engine", "runner")

    def step_length(i: int) -> int:
        j = i + 1
        while j < len(records) and not external(j):
            j += 1
        return j - i

    start = next(
        i for i in range(len(records) // 2, len(records)) if external(i) and step_length(i) >= 5
    )
    result = replay_records(records[: start + 2])
    assert result.ok, result.divergence and result.divergence.describe()
    assert result.tail_missing == step_length(start) - 2
    # A machine's record missing from the middle is a divergence, torn tail or not. (An
    # input missing can replay the same, e.g. a quote no step read before the next one
    # replaced it: the hash chain, `journal verify`, is what catches that.)
    middle = next(
        i for i in range(len(records) // 2, len(records)) if records[i].kind == "transition"
    )
    assert not replay_records(records[:middle] + records[middle + 1 :]).ok
