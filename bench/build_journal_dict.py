"""Rebuild engine/core/journal_dict.py: the preset dictionary new journals deflate each
commit's payloads against (journal.PayloadCodec).

Samples: the payloads of simulated sessions at default settings (hold and pause as
shipped, the virtual clock), `taker` and `maker_first`, two seeds each, and of the golden
journals (tests/replay/golden: the fault scenarios' rarer shapes). Payloads are grouped
by shape (keys and structure; string values and numbers blanked): the latest payload of
each shape, the most common first, then of finer shapes (string values kept) while the
`SIZE` bytes allow, laid out the most common last (deflate's nearest distances are the
cheapest). Prints the samples' stored
bytes with the current dictionary and with the new one; `--write` rewrites the module.

    .venv/bin/python bench/build_journal_dict.py [--write [--force]]

A journal reads its payloads with the dictionary stored in its own file, so a new
dictionary never affects existing journals (raise JOURNAL_SCHEMA only if the records'
content changes)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.sim import SimVenue  # noqa: E402
from engine.core.clock import VirtualClock  # noqa: E402
from engine.core.journal import Journal  # noqa: E402
from engine.core.journal import PayloadCodec  # noqa: E402
from engine.core.journal import read_records  # noqa: E402
from engine.core.journal_dict import PAYLOAD_DICT  # noqa: E402
from engine.runtime.compose import build_session  # noqa: E402
from engine.runtime.config import load_settings  # noqa: E402
from engine.runtime.run import RunOptions  # noqa: E402
from engine.runtime.run import parse_pair  # noqa: E402

SIZE = 16_000  # the codec's window is 16 KB: the dictionary and the record must fit
CYCLES = 30
COMMIT = 8  # records per commit, about (a taker cycle: ~58 records in ~7 commits)
MODULE = ROOT / "engine" / "core" / "journal_dict.py"


def session_payloads(execution: str, seed: int) -> list[str]:
    pair = parse_pair("ETH-SOL")
    clock = VirtualClock()
    journal = Journal(":memory:", durable=False)
    s = build_session(
        RunOptions(pair=pair, cycles=CYCLES, clock="virtual", seed=seed, quiet=True),
        load_settings(env={"DN_EXECUTION": execution}),
        venue=SimVenue(clock, seed, None, pair),
        clock=clock,
        journal=journal,
        out=lambda _line: None,
    )
    asyncio.run(s.run_virtual())
    return [r.payload for r in journal.records()]


def samples() -> list[str]:
    out: list[str] = []
    for execution in ("taker", "maker_first"):
        for seed in (1, 2):
            out.extend(session_payloads(execution, seed))
    for golden in sorted((ROOT / "tests" / "replay" / "golden").glob("*.jsonl")):
        out.extend(r.payload for r in read_records(golden))
    return out


def _shape(text: str) -> str:
    """A payload's shape: its keys and structure (every string value and number blanked)."""
    return re.sub(r':"[^"]*"', ':""', re.sub(r"\d+", "0", text))


def _variant(text: str) -> str:
    """A finer shape: the string values kept (notes, states, events), numbers blanked."""
    return re.sub(r"\d+", "0", text)


def build(payloads: list[str]) -> bytes:
    """One latest payload per shape, the most common shapes first, then more variants of
    the common ones while `SIZE` allows; laid out the most common last."""
    chosen: list[tuple[int, bytes]] = []
    have: set[bytes] = set()
    used = 0
    for key in (_shape, _variant):
        count: Counter[str] = Counter()
        latest: dict[str, str] = {}
        for text in payloads:
            k = key(text)
            count[k] += 1
            latest[k] = text
        for k, n in count.most_common():
            piece = latest[k].encode()
            if piece in have or used + len(piece) > SIZE:
                continue
            chosen.append((n, piece))
            have.add(piece)
            used += len(piece)
    chosen.sort(key=lambda c: c[0])  # stable: ties keep their order
    return b"".join(piece for _n, piece in chosen)


def stored(payloads: list[str], zdict: bytes) -> int:
    """Bytes stored for the samples, `COMMIT` consecutive payloads deflated together."""
    codec = PayloadCodec(zdict)
    groups = (payloads[at : at + COMMIT] for at in range(0, len(payloads), COMMIT))
    return sum(len(p) for group in groups for p in codec.encode_group(group))


def module_text(zdict: bytes) -> str:
    lines = [repr(zdict[i : i + 80]) for i in range(0, len(zdict), 80)]
    body = "\n".join(f"    {line}" for line in lines)
    return (
        '"""The preset dictionary new journals store in their `payload_dict` table and deflate\n'
        "each record's payload against (zlib `zdict`): whole typical payloads, one per shape,\n"
        "the most common last. A journal reads its payloads with the dictionary stored in its\n"
        "own file, so changing this text never affects existing journals. Built by\n"
        "`bench/build_journal_dict.py --write` from simulated sessions (taker and maker_first)\n"
        'and the golden journals (journal schema 4)."""\n'
        "\n"
        "from __future__ import annotations\n"
        "\n"
        '__all__ = ["PAYLOAD_DICT"]\n'
        "\n"
        f"PAYLOAD_DICT = (\n{body}\n)\n"
    )


def main() -> None:
    payloads = samples()
    new = build(payloads)
    raw = sum(len(t.encode()) for t in payloads)
    print(f"{len(payloads)} sample payloads, {raw} bytes of JSON")
    now = stored(payloads, PAYLOAD_DICT)
    print(f"stored with the current dictionary ({len(PAYLOAD_DICT)} B): {now}")
    print(f"stored with the new dictionary ({len(new)} B): {stored(payloads, new)}")
    if "--write" in sys.argv:
        if stored(payloads, new) >= now and "--force" not in sys.argv:
            print("kept the current dictionary: the new one stores no less (--force writes it)")
            return
        MODULE.write_text(module_text(new), encoding="utf-8")
        print(f"wrote {MODULE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
