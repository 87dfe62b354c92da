"""Shared plumbing for events and intents: strict field converters and the kind registry.

Every message is a frozen attrs class with a `kind` ClassVar. `to_dict`/`from_dict`
give an exact JSON round trip: Decimals travel as strings, never as floats.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from decimal import Decimal
from decimal import InvalidOperation
from json.encoder import c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring_ascii
from typing import Any
from typing import ClassVar
from typing import TypeVar

import attrs

__all__ = [
    "REGISTRY",
    "Message",
    "dec",
    "dumps",
    "from_dict",
    "from_own_dict",
    "json_fields",
    "loads",
    "message",
    "opt_dec",
    "to_dict",
    "tuple_of",
]


class Message:
    """Marker base: concrete messages set `kind` and are registered with `@message`."""

    kind: ClassVar[str]


REGISTRY: dict[str, type[Message]] = {}

M = TypeVar("M", bound=type[Message])


def message(cls: M) -> M:
    """Register a message class under its `kind`; kinds are unique across events and intents."""
    kind = cls.__dict__.get("kind")
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__} needs a non-empty `kind`")
    if kind in REGISTRY and REGISTRY[kind] is not cls:
        raise TypeError(f"duplicate message kind {kind!r}")
    REGISTRY[kind] = cls
    return cls


def dec(value: object) -> Decimal:
    """Strict Decimal converter: finite only; floats are refused (they are not exact)."""
    if type(value) is Decimal:  # the common case: already exact
        if not value.is_finite():
            raise ValueError(f"non-finite number: {value!r}")
        return value
    if type(value) is str:  # the other common one: JSON text (a journaled event)
        try:
            d = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
        if not d.is_finite():
            raise ValueError(f"non-finite number: {value!r}")
        return d
    if isinstance(value, (bool, float)):
        raise TypeError(f"expected Decimal, int or str, got {type(value).__name__} {value!r}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int | str):
        try:
            d = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    else:
        raise TypeError(f"expected Decimal, int or str, got {type(value).__name__}")
    if not d.is_finite():
        raise ValueError(f"non-finite number: {value!r}")
    return d


def opt_dec(value: object) -> Decimal | None:
    return None if value is None else dec(value)


T = TypeVar("T")


def tuple_of(item: Callable[..., T]) -> Callable[[Iterable[Any]], tuple[T, ...]]:
    """Converter for a tuple of nested attrs items that also accepts their JSON dicts."""

    def convert(values: Iterable[Any]) -> tuple[T, ...]:
        return tuple(item(**v) if isinstance(v, Mapping) else v for v in values)

    return convert


def _serialize(_inst: object, _field: object, value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    return value


# Field values `to_dict` copies as they are (exact types; anything else, a Decimal
# aside, goes through attrs.asdict).
_PLAIN: frozenset[type] = frozenset({str, int, bool, type(None)})
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def to_dict(msg: Message) -> dict[str, Any]:
    """`{"kind": ..., **attrs.asdict(msg)}` with Decimals as text. Every message is
    journaled through this: a message whose fields are all plain values (most events
    and intents) is copied field by field, the same dict attrs.asdict would build."""
    cls = type(msg)
    names = _FIELD_NAMES.get(cls, ())
    if names == ():
        found = tuple(f.name for f in attrs.fields(cls))  # type: ignore[arg-type]
        names = _FIELD_NAMES[cls] = None if "kind" in found else found
    if names is not None:
        out: dict[str, Any] = {"kind": msg.kind}
        for name in names:
            value = getattr(msg, name)
            kind = type(value)
            if kind is Decimal:
                value = str(value)
            elif kind not in _PLAIN and (
                kind is not tuple or any(type(v) not in _PLAIN for v in value)
            ):
                break  # (a tuple of plain values stays that tuple, as asdict keeps it)
            out[name] = value
        else:
            return out
    try:
        body = plain_fields(msg)
    except NotPlain:
        body = attrs.asdict(msg, value_serializer=_serialize)  # type: ignore[arg-type]
    return {"kind": msg.kind, **body}


class NotPlain(Exception):
    """A value `plain_fields` leaves to attrs.asdict (dicts, sets, floats, subclasses)."""


_ATTRS_NAMES: dict[type, tuple[str, ...]] = {}


def plain_fields(inst: Any) -> dict[str, Any]:
    """What `attrs.asdict(inst)` gives, Decimals as text, for attrs instances whose fields
    hold plain values, Decimals, attrs instances and tuples or lists of these (positions,
    open orders, cycle parameters), tuples and lists kept as such (`attrs.asdict` retains
    collection types). Anything else raises NotPlain (the caller then asks attrs.asdict)."""
    cls = type(inst)
    names = _ATTRS_NAMES.get(cls)
    if names is None:
        names = _ATTRS_NAMES[cls] = tuple(f.name for f in attrs.fields(cls))
    return {name: _plain(getattr(inst, name)) for name in names}


def json_fields(inst: Any) -> dict[str, Any]:
    """What `plain_fields(inst)` gives, with its tuples as lists: the JSON form, in one
    pass (the engine journals a spawn's parameters this way). Raises NotPlain likewise."""
    cls = type(inst)
    names = _ATTRS_NAMES.get(cls)
    if names is None:
        names = _ATTRS_NAMES[cls] = tuple(f.name for f in attrs.fields(cls))
    return {name: _json(getattr(inst, name)) for name in names}


def _json(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is Decimal:
        return str(value)
    if kind is tuple or kind is list:
        return [_json(v) for v in value]
    if attrs.has(kind):
        return json_fields(value)
    raise NotPlain(kind.__name__)


def _plain(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is Decimal:
        return str(value)
    if kind is tuple:
        return tuple(_plain(v) for v in value)
    if kind is list:
        return [_plain(v) for v in value]
    if attrs.has(kind):
        return plain_fields(value)
    raise NotPlain(kind.__name__)


def from_dict(data: Mapping[str, Any]) -> Message:
    return from_own_dict(dict(data))


def from_own_dict(fields: dict[str, Any]) -> Message:
    """`from_dict` of a dict the caller hands over (just decoded): its `kind` is popped."""
    kind = fields.pop("kind", None)
    cls = REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown message kind {kind!r}")
    return cls(**fields)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite JSON constant {name}")


# What json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False) builds
# on every call (its keyword arguments rule out json's cached default encoder), built once.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


# Its C encoder made once (JSONEncoder.encode makes one per call): the same text, without
# the per-call set-up (about half the cost of encoding a journal record). No circularity
# check: journaled values are trees (a cycle would raise RecursionError, not ValueError).
_C_CANONICAL = (
    c_make_encoder(
        None,
        _CANONICAL.default,
        encode_basestring_ascii,
        None,
        ":",
        ",",
        True,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
    if c_make_encoder is not None
    else None
)


def dumps(obj: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, no NaN; the journal hashes exactly this text."""
    if _C_CANONICAL is None:
        return _CANONICAL.encode(obj)
    return "".join(_C_CANONICAL(obj, 0))


def loads(text: str) -> Any:
    if type(text) is str and not text.startswith("\ufeff"):  # json.loads: this decoder
        # A journal's payload is one JSON value with nothing around it: its C scanner
        # reads it without `decode`'s two Python calls and whitespace match; anything
        # else (whitespace, extra data, not JSON) takes `decode`, which says what.
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:
            return _DECODER.decode(text)
        return value if end == len(text) else _DECODER.decode(text)
    return json.loads(text, parse_constant=_reject_constant)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
