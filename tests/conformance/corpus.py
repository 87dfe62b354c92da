"""The Nado conformance corpus: each venue behaviour this project relies on, as data.

A scenario (one JSON file in `scenarios/`) holds the requests, the replies and the exact
sequence of stream events a venue sends for them, with the public source of each fact
(or `unverified`). `tests/conformance/test_corpus.py` drives every scenario through
`venue serve` and compares; another test can feed a scenario's events to the Nado
adapter with `wire_frames` (the frames as a venue would send them) and check the engine
events it makes of them.

Placeholders keep a scenario independent of keys, clocks and hashes:

| placeholder | stands for |
|---|---|
| `$o:<label>` | the digest of the order placed under `label` |
| `$id:<label>` | the client `id` that order was sent with |
| `$sub:<account>` | the bytes32 subaccount of an account (`accounts` in the scenario) |
| `$ts` | an event timestamp (unix ns, string) |
| `$idx` | a `submission_idx` (string) |
| `$sig` | the request's signature, echoed |
| `$s`, `$nonce`, `$exp` | `placed_at`, `nonce`, `expiration` of an order object |

Numbers are on the wire as the venue sends them: x18 integers in decimal strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "BASE_PROFILE",
    "CORPUS_DIR",
    "Labels",
    "Scenario",
    "default_labels",
    "load_corpus",
    "load_scenario",
    "normalize",
    "profile_dict",
    "wire_frames",
]

CORPUS_DIR = Path(__file__).parent / "scenarios"

# Every scenario starts from a still, quiet market so that nothing but the scenario's own
# orders moves the book: ETH-PERP's crowd quotes 2997.0 / 3003.0 (20 bps spread around
# the 3000 start), 6.666 ETH at the touch, no maker flow, and the market held still for a
# day (`[market] quiet`). Liquidity a scenario trades against is a resting order of a
# second account ("maker"), so every size and price in it is exact. Fees are pinned at
# taker 2 bps / maker 0, the rates the corpus's `fee` values were recorded with (the
# sim's defaults now follow Nado's published entry tier, 3.5 / 1 bps): the corpus checks
# the frames' shape and arithmetic, not the rate.
BASE_PROFILE: dict[str, dict[str, Any]] = {
    "market": {"volatility_bps_per_sqrt_s": 0, "quiet": [{"at_s": 0, "for_s": 86_400}]},
    "sim": {
        "maker_fill_rate_per_s": 0,
        "spread_bps": 20,
        "taker_fee_bps": 2,
        "maker_fee_bps": 0,
    },
}

EVENT_TYPES = ("fill", "order_update", "position_change", "best_bid_offer")


@attrs.frozen(kw_only=True)
class Scenario:
    name: str
    path: Path
    description: str
    sources: tuple[str, ...]  # public sources of the facts, or ("unverified",)
    unverified: tuple[str, ...]  # which parts no public source settles
    profile: Mapping[str, Any]  # merged over BASE_PROFILE
    accounts: Mapping[str, Mapping[str, Any]]  # name -> {"key": hex, "subaccount": name}
    bbo_products: tuple[int, ...]  # best_bid_offer subscriptions
    steps: tuple[Mapping[str, Any], ...]
    events: tuple[Mapping[str, Any], ...]  # the exact sequence, normalized

    def event_types(self) -> list[str]:
        return [str(e["type"]) for e in self.events]


def _as_tuple(value: Any, what: str, path: Path) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{path.name}: {what} must be a list")
    return tuple(value)


def load_scenario(path: Path) -> Scenario:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: a scenario is a JSON object")
    sources = _as_tuple(data.get("sources"), "sources", path)
    if not sources or not all(isinstance(s, str) and s for s in sources):
        raise ValueError(f"{path.name}: every scenario names its sources (or 'unverified')")
    events = _as_tuple(data.get("events", []), "events", path)
    for e in events:
        if not isinstance(e, dict) or e.get("type") not in EVENT_TYPES:
            raise ValueError(f"{path.name}: unknown event {e!r}")
    return Scenario(
        name=str(data["name"]),
        path=path,
        description=str(data.get("description", "")),
        sources=sources,
        unverified=_as_tuple(data.get("unverified", []), "unverified", path),
        profile=dict(data.get("profile", {})),
        accounts=dict(data.get("accounts", {})),
        bbo_products=_as_tuple(data.get("bbo_products", []), "bbo_products", path),
        steps=_as_tuple(data["steps"], "steps", path),
        events=events,
    )


def load_corpus(directory: Path = CORPUS_DIR) -> list[Scenario]:
    """Every scenario, in file-name order."""
    return [load_scenario(p) for p in sorted(directory.glob("*.json"))]


def profile_dict(scenario: Scenario) -> dict[str, Any]:
    """BASE_PROFILE with the scenario's sections merged over it (for `profile_from_dict`)."""
    out = {name: dict(section) for name, section in BASE_PROFILE.items()}
    for name, section in scenario.profile.items():
        out.setdefault(name, {}).update(section)
    return out


# -- placeholders -------------------------------------------------------------------------


@attrs.define
class Labels:
    """What the placeholders stand for in one run: digests, client ids, subaccounts."""

    digests: dict[str, str] = attrs.field(factory=dict)  # label -> digest (lower-case hex)
    client_ids: dict[str, int] = attrs.field(factory=dict)  # label -> client id
    subaccounts: dict[str, str] = attrs.field(factory=dict)  # account -> bytes32 hex

    def _reverse(self) -> tuple[dict[str, str], dict[int, str], dict[str, str]]:
        return (
            {d.lower(): f"$o:{label}" for label, d in self.digests.items()},
            {i: f"$id:{label}" for label, i in self.client_ids.items()},
            {s.lower(): f"$sub:{name}" for name, s in self.subaccounts.items()},
        )


_DIGEST_KEYS = ("digest", "order_digest")
_BLANKS = {
    "timestamp": "$ts",
    "submission_idx": "$idx",
    "signature": "$sig",
    "placed_at": "$s",
    "nonce": "$nonce",
    "expiration": "$exp",
}


def normalize(obj: Any, labels: Labels) -> Any:
    """A venue frame or reply with run-specific values replaced by placeholders.

    Free-text `error` strings become `$text` (clients branch on `error_code`)."""
    digests, ids, subs = labels._reverse()

    def walk(value: Any, key: str | None) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if key in _BLANKS:
            return _BLANKS[key]
        if key == "error":
            return "$text"
        if key in _DIGEST_KEYS and isinstance(value, str):
            return digests.get(value.lower(), value)
        if key in ("subaccount", "sender") and isinstance(value, str):
            return subs.get(value.lower(), value)
        if key == "id" and isinstance(value, int) and not isinstance(value, bool):
            return ids.get(value, value)
        return value

    return walk(obj, None)


def default_labels(scenario: Scenario) -> Labels:
    """Made-up but well-formed values for every placeholder a scenario's events use:
    digest n is `0x` + n in 64 hex digits, client id n, account subaccounts distinct
    bytes32 values. Enough to feed `wire_frames(scenario, default_labels(scenario))` to
    an adapter that knows those digests and ids."""
    found: dict[str, set[str]] = {"o": set(), "id": set(), "sub": set()}

    def scan(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                scan(v)
        elif isinstance(value, list):
            for v in value:
                scan(v)
        elif isinstance(value, str) and value.startswith("$") and ":" in value:
            kind, _, name = value[1:].partition(":")
            if kind in found:
                found[kind].add(name)

    for e in scenario.events:
        scan(e)
    labels = Labels()
    for n, label in enumerate(sorted(found["o"] | found["id"]), start=1):
        labels.digests[label] = "0x" + f"{n:064x}"
        labels.client_ids[label] = n
    for n, name in enumerate(sorted(found["sub"]), start=1):
        labels.subaccounts[name] = "0x" + f"{n:02x}" * 20 + b"default".hex().ljust(24, "0")
    return labels


def wire_frames(
    scenario: Scenario, labels: Labels, *, start_ns: int = 1_767_225_600_000_000_000
) -> list[dict[str, Any]]:
    """The scenario's events as a venue would send them, placeholders filled in:
    digests, ids and subaccounts from `labels`, timestamps 1 ms apart from `start_ns`,
    submission indices counting up from 1. For feeding to `adapters.nado.mapping`."""
    counter = {"ts": start_ns, "idx": 0}

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        if not isinstance(value, str) or not value.startswith("$"):
            return value
        if value == "$ts":
            counter["ts"] += 1_000_000
            return str(counter["ts"])
        if value == "$idx":
            counter["idx"] += 1
            return str(counter["idx"])
        kind, _, name = value[1:].partition(":")
        if kind == "o":
            return labels.digests[name]
        if kind == "id":
            return labels.client_ids[name]
        if kind == "sub":
            return labels.subaccounts[name]
        raise ValueError(f"{scenario.name}: no value for placeholder {value!r}")

    return [fill(dict(e)) for e in scenario.events]


def iter_steps(scenario: Scenario) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(kind, step) for each step: kind is place, cancel or query."""
    for step in scenario.steps:
        kinds = [k for k in ("place", "cancel", "query") if k in step]
        if len(kinds) != 1:
            raise ValueError(f"{scenario.name}: a step is one of place/cancel/query: {step!r}")
        yield kinds[0], step
