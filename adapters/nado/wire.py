"""The JSON boundary: strict decoding of gateway text and typed field readers.

Everything that arrives from Nado passes through `loads` and the `req_*`/`opt_*`
readers below. A value that is missing, of the wrong type, non-finite, fractional
where an integer is required, or negative where that is impossible raises
`MalformedFrame`; the reader counts and skips such frames and never crashes.
Readers return plain ints and strings: turning x18 integers into Decimals is
`adapters.nado.mapping`'s job, and no other module's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = [
    "MalformedFrame",
    "as_int",
    "loads",
    "opt_int",
    "opt_str",
    "req_bool",
    "req_hex",
    "req_int",
    "req_list",
    "req_obj",
    "req_str",
]

_INT_RE = re.compile(r"-?(0|[1-9][0-9]{0,77})")
_MAX_SHOWN = 40


class MalformedFrame(ValueError):
    """A gateway message that cannot be trusted. `where` names the frame type or query."""

    def __init__(self, reason: str, *, where: str = "") -> None:
        self.reason = reason
        self.where = where
        super().__init__(f"{where}: {reason}" if where else reason)


def subscribe_url(gateway_url: str) -> str:
    """The gateway's WebSocket `/subscribe` address: http(s) becomes ws(s)."""
    base = gateway_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + "/subscribe"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _reject_constant(name: str) -> Any:
    raise MalformedFrame(f"non-finite JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedFrame(f"duplicate key {_shown(key)}")
        out[key] = value
    return out


def loads(text: str | bytes) -> Any:
    """Decode JSON text: NaN/Infinity and duplicate keys are refused; floats become Decimal."""
    try:
        return json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=Decimal,
            object_pairs_hook=_no_duplicates,
        )
    except MalformedFrame:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedFrame(f"not valid JSON: {type(exc).__name__}") from None


def req_obj(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = _get(obj, key, where)
    if not isinstance(value, Mapping):
        raise MalformedFrame(f"{key} must be an object, got {_shown(value)}", where=where)
    return value


def req_list(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = _get(obj, key, where)
    if not isinstance(value, list):
        raise MalformedFrame(f"{key} must be a list, got {_shown(value)}", where=where)
    return value


def req_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _get(obj, key, where)
    if not isinstance(value, str):
        raise MalformedFrame(f"{key} must be a string, got {_shown(value)}", where=where)
    return value


def opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    return None if obj.get(key) is None else req_str(obj, key, where)


def req_bool(obj: Mapping[str, Any], key: str, where: str) -> bool:
    value = _get(obj, key, where)
    if not isinstance(value, bool):
        raise MalformedFrame(f"{key} must be true/false, got {_shown(value)}", where=where)
    return value


def req_int(obj: Mapping[str, Any], key: str, where: str, *, min_value: int | None = None) -> int:
    """An integer sent as a JSON integer or a decimal string (x18 values, ns stamps, ids)."""
    value = _get(obj, key, where)
    return as_int(value, key, where, min_value=min_value)


def opt_int(
    obj: Mapping[str, Any], key: str, where: str, *, min_value: int | None = None
) -> int | None:
    return None if obj.get(key) is None else req_int(obj, key, where, min_value=min_value)


def as_int(value: object, key: str, where: str, *, min_value: int | None = None) -> int:
    if isinstance(value, bool):
        raise MalformedFrame(f"{key} must be an integer, got {_shown(value)}", where=where)
    if isinstance(value, int):
        out = value
    elif isinstance(value, str) and _INT_RE.fullmatch(value):
        out = int(value)
    else:
        raise MalformedFrame(f"{key} must be an integer, got {_shown(value)}", where=where)
    if min_value is not None and out < min_value:
        raise MalformedFrame(f"{key} must be >= {min_value}, got {out}", where=where)
    return out


def req_hex(obj: Mapping[str, Any], key: str, where: str, *, nbytes: int) -> str:
    """A 0x-prefixed hex string of exactly `nbytes` bytes, returned lower-case."""
    value = req_str(obj, key, where)
    if not re.fullmatch(rf"0x[0-9a-fA-F]{{{2 * nbytes}}}", value):
        raise MalformedFrame(f"{key} must be 0x + {2 * nbytes} hex digits", where=where)
    return value.lower()


def _get(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(obj, Mapping):
        raise MalformedFrame(f"expected an object, got {_shown(obj)}", where=where)
    if key not in obj or obj[key] is None:
        raise MalformedFrame(f"missing field {key!r}", where=where)
    return obj[key]
