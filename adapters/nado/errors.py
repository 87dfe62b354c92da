"""Classify Nado failures into the engine's four error classes (nado-protocol.md §9).

- `permanent`: the venue answered and refused; re-sending the same thing will not help.
- `rate_limited`: back off (honour Retry-After), then retry.
- `retryable`: the request provably did not take effect (never connected, or a read).
- `unknown_outcome`: a place/cancel may have taken effect (timeout, 5xx, lost or garbled
  answer). Resolve by querying the digest before anything else touches that order;
  never re-send under a new nonce meanwhile.

`request` is the intent kind (`place_order`, `cancel_order`, `query_positions`, ...) or a
gateway request type; only writes can have an unknown outcome.
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Mapping
from decimal import Decimal
from decimal import InvalidOperation
from typing import Any
from typing import Literal

import attrs
import httpx
import websockets.exceptions

from adapters.nado.queries import parse_envelope
from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import loads
from engine.core.events import VenueError

__all__ = [
    "CODES",
    "RATE_LIMIT_CODES",
    "WRITES",
    "Classified",
    "ErrorClass",
    "classify_code",
    "classify_exception",
    "classify_http",
    "is_write",
    "parse_retry_after",
]

ErrorClass = Literal["retryable", "rate_limited", "permanent", "unknown_outcome"]

# Intent kinds and execute types that change venue state.
WRITES: frozenset[str] = frozenset(
    {
        "place_order",
        "cancel_order",
        "cancel_orders",
        "cancel_product_orders",
        "cancel_and_place",
        "place_orders",
    }
)

RATE_LIMIT_CODES: frozenset[int] = frozenset({1000, 1015, 2030, 2078})

# code -> (class, reason). "write-dependent" codes (5000, 1006) are handled in classify_code.
CODES: dict[int, tuple[ErrorClass, str]] = {
    **dict.fromkeys(RATE_LIMIT_CODES, ("rate_limited", "rate_limited")),
    1001: ("permanent", "blacklisted"),
    1002: ("permanent", "blocked_location"),
    1003: ("permanent", "blocked_subdivision"),
    1004: ("retryable", "maintenance"),
    2068: ("retryable", "maintenance"),
    2006: ("permanent", "insufficient_margin"),
    2007: ("permanent", "price_outside_oracle_band"),
    2008: ("permanent", "post_only_would_cross"),
    2011: ("permanent", "bad_nonce"),
    2012: ("permanent", "bad_nonce"),
    2022: ("permanent", "bad_nonce"),
    2033: ("permanent", "bad_nonce"),
    2013: ("permanent", "duplicate_digest"),  # evidence the digest already exists
    2020: ("permanent", "not_found"),
    2058: ("permanent", "not_found"),
    2024: ("permanent", "no_subaccount"),
    2028: ("permanent", "bad_signature"),
    2031: ("permanent", "not_fillable"),
    2056: ("permanent", "not_fillable"),
    2118: ("permanent", "invalid_builder"),
    4001: ("permanent", "not_implemented"),
}
# Codes whose request may or may not have been processed: unknown for a write.
_AMBIGUOUS: dict[int, str] = {5000: "internal_error", 1006: "service_unavailable"}


def is_write(request: str) -> bool:
    return request in WRITES


@attrs.frozen(kw_only=True)
class Classified:
    error_class: ErrorClass
    reason: str  # a short tag: "insufficient_margin", "timeout", "http_503", ...
    code: int | None = None
    http_status: int | None = None
    retry_after_s: Decimal | None = None
    message: str = ""  # venue text or exception type, for logs; never contains secrets

    def to_event(
        self,
        request: str,
        *,
        order_id: str | None = None,
        request_id: str | None = None,
        target: str | None = None,
    ) -> VenueError:
        text = f"{self.reason}: {self.message}" if self.message else self.reason
        return VenueError(
            error_class=self.error_class,
            request=request,
            message=text[:300],
            order_id=order_id,
            request_id=request_id,
            code=self.code,
            retry_after_s=self.retry_after_s,
            target=target,
        )


def _unsure(request: str) -> ErrorClass:
    return "unknown_outcome" if is_write(request) else "retryable"


def classify_code(
    code: int | None,
    request: str,
    message: str = "",
    *,
    retry_after_s: Decimal | None = None,
    http_status: int | None = None,
) -> Classified:
    """A `status: failure` reply. Unlisted codes are a definite refusal (`permanent`)."""
    extra: dict[str, Any] = {"code": code, "http_status": http_status, "message": message[:200]}
    if code in _AMBIGUOUS:
        return Classified(error_class=_unsure(request), reason=_AMBIGUOUS[code], **extra)
    if code in CODES:
        cls, reason = CODES[code]
        after = retry_after_s if cls == "rate_limited" else None
        return Classified(error_class=cls, reason=reason, retry_after_s=after, **extra)
    if not is_write(request):
        return Classified(error_class="retryable", reason="unclassified", **extra)
    return Classified(error_class="permanent", reason="unclassified", **extra)


def parse_retry_after(value: str | None, *, now_unix_s: Decimal | None = None) -> Decimal | None:
    """Retry-After as seconds: delta-seconds, or an HTTP date when `now_unix_s` is given."""
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"\d{1,9}(\.\d{1,6})?", text):
        return Decimal(text)
    if now_unix_s is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    try:
        delta = Decimal(int(when.timestamp())) - now_unix_s
    except (InvalidOperation, OverflowError):
        return None
    return max(delta, Decimal(0))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def classify_http(
    status: int,
    headers: Mapping[str, str],
    body: str | bytes,
    request: str,
    *,
    now_unix_s: Decimal | None = None,
) -> Classified | None:
    """Classify one HTTP reply; None means a `status: success` envelope (parse its data).

    The gateway's HTTP status for engine rejections is unsettled (§12.6), so a failure
    envelope is classified by its `error_code` whatever the status, except that a 5xx
    on a write stays an unknown outcome unless the code is a rate limit.
    """
    retry_after = parse_retry_after(_header(headers, "retry-after"), now_unix_s=now_unix_s)
    try:
        obj = loads(body)
    except MalformedFrame:
        obj = None
    if isinstance(obj, Mapping) and obj.get("blocked") is True:
        reason = obj.get("reason")
        tag = reason if isinstance(reason, str) and len(reason) < 40 else "blocked"
        return Classified(
            error_class="rate_limited", reason=tag, http_status=status, retry_after_s=retry_after
        )
    envelope = None
    if obj is not None:
        try:
            envelope = parse_envelope(obj)
        except MalformedFrame:
            envelope = None
    code = None if envelope is None else envelope.error_code
    http = functools.partial(Classified, http_status=status, code=code)
    if status == 429 or code in RATE_LIMIT_CODES:
        return http(
            error_class="rate_limited",
            reason="rate_limited",
            retry_after_s=retry_after,
            message="" if envelope is None else envelope.error,
        )
    if status >= 500:
        return http(error_class=_unsure(request), reason=f"http_{status}")
    if envelope is not None and not envelope.ok:
        return classify_code(code, request, envelope.error, http_status=status)
    if status == 200 and envelope is not None:
        return None
    if status == 403 and (_header(headers, "cf-mitigated") or "").lower() == "challenge":
        return http(error_class="retryable", reason="cloudflare_challenge")
    if status == 408:
        return http(error_class="retryable", reason="http_408")
    if 400 <= status < 500:
        return http(error_class="permanent", reason=f"http_{status}")
    # 200 with an unreadable body, 1xx/3xx: the write may have been processed.
    return http(error_class=_unsure(request), reason=f"bad_reply_{status}")


# Raised before any byte of the request reached the server.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, ConnectionRefusedError)


def classify_exception(exc: BaseException, request: str) -> Classified:
    """A transport failure. Never-connected is retryable; anything later is unknown for
    a write and retryable for a read."""
    name = type(exc).__name__
    if isinstance(exc, _NOT_SENT):
        return Classified(error_class="retryable", reason="connect_failed", message=name)
    if isinstance(exc, websockets.exceptions.InvalidHandshake | websockets.exceptions.InvalidURI):
        return Classified(error_class="retryable", reason="ws_handshake_failed", message=name)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return Classified(error_class="permanent", reason="bad_url", message=name)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return Classified(error_class=_unsure(request), reason="timeout", message=name)
    if isinstance(exc, MalformedFrame):
        return Classified(error_class=_unsure(request), reason="malformed_reply", message=name)
    if isinstance(exc, httpx.TransportError | websockets.exceptions.ConnectionClosed | OSError):
        return Classified(error_class=_unsure(request), reason="transport_error", message=name)
    return Classified(error_class=_unsure(request), reason="unexpected_error", message=name)
