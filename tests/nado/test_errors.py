"""Error classification table (nado-protocol.md §9) and transport failures."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
import websockets.exceptions

from adapters.nado.errors import CODES
from adapters.nado.errors import classify_code
from adapters.nado.errors import classify_exception
from adapters.nado.errors import classify_http
from adapters.nado.errors import parse_retry_after
from adapters.nado.wire import MalformedFrame
from engine.core.events import VenueError

PLACE, CANCEL, CANCEL_ALL = "place_order", "cancel_order", "cancel_product_orders"
READS = ("query_positions", "query_order", "query_open_orders", "market_price")


def failure(code, text="x"):
    return json.dumps(
        {
            "status": "failure",
            "signature": "0x00",
            "error_code": code,
            "error": text,
            "request_type": "execute_place_order",
        }
    )


SUCCESS = json.dumps({"status": "success", "data": {"digest": "0x" + "ab" * 32}})


@pytest.mark.parametrize(
    ("code", "request_kind", "error_class", "reason"),
    [
        (2006, PLACE, "permanent", "insufficient_margin"),
        (2007, PLACE, "permanent", "price_outside_oracle_band"),
        (2008, PLACE, "permanent", "post_only_would_cross"),
        (2028, PLACE, "permanent", "bad_signature"),
        (2028, CANCEL, "permanent", "bad_signature"),
        (1000, PLACE, "rate_limited", "rate_limited"),
        (1000, "query_positions", "rate_limited", "rate_limited"),
        (1015, PLACE, "rate_limited", "rate_limited"),
        (2030, CANCEL, "rate_limited", "rate_limited"),
        (2078, PLACE, "rate_limited", "rate_limited"),
        (1001, PLACE, "permanent", "blacklisted"),
        (1002, PLACE, "permanent", "blocked_location"),
        (1003, PLACE, "permanent", "blocked_subdivision"),
        (1004, PLACE, "retryable", "maintenance"),
        (2068, CANCEL, "retryable", "maintenance"),
        (1006, PLACE, "unknown_outcome", "service_unavailable"),
        (1006, "query_order", "retryable", "service_unavailable"),
        (5000, PLACE, "unknown_outcome", "internal_error"),
        (5000, CANCEL_ALL, "unknown_outcome", "internal_error"),
        (5000, "query_positions", "retryable", "internal_error"),
        (2011, PLACE, "permanent", "bad_nonce"),
        (2012, PLACE, "permanent", "bad_nonce"),
        (2022, CANCEL, "permanent", "bad_nonce"),
        (2033, PLACE, "permanent", "bad_nonce"),
        (2013, PLACE, "permanent", "duplicate_digest"),
        (2020, CANCEL, "permanent", "not_found"),
        (2020, "query_order", "permanent", "not_found"),
        (2058, CANCEL, "permanent", "not_found"),
        (2024, PLACE, "permanent", "no_subaccount"),
        (2031, PLACE, "permanent", "not_fillable"),
        (2056, PLACE, "permanent", "not_fillable"),
        (2118, PLACE, "permanent", "invalid_builder"),
        (4001, PLACE, "permanent", "not_implemented"),
        (9999, PLACE, "permanent", "unclassified"),
        (9999, "query_positions", "retryable", "unclassified"),
        (None, PLACE, "permanent", "unclassified"),
    ],
)
def test_code_table(code, request_kind, error_class, reason):
    c = classify_code(code, request_kind, "venue text")
    assert (c.error_class, c.reason, c.code) == (error_class, reason, code)
    # the same code inside an HTTP 200 failure envelope classifies the same way
    h = classify_http(200, {}, failure(code), request_kind)
    assert h is not None
    assert (h.error_class, h.reason) == (error_class, reason)


def test_every_listed_code_is_classified():
    assert {2006, 2007, 2008, 2028, 1000} <= set(CODES)
    for code in CODES:
        assert classify_code(code, PLACE).reason != "unclassified"


def test_success_is_not_an_error():
    assert classify_http(200, {}, SUCCESS, PLACE) is None


@pytest.mark.parametrize(
    ("status", "headers", "body", "request_kind", "error_class", "reason", "after"),
    [
        (
            429,
            {"Retry-After": "7"},
            "Too Many Requests",
            PLACE,
            "rate_limited",
            "rate_limited",
            Decimal(7),
        ),
        (429, {}, "", "query_positions", "rate_limited", "rate_limited", None),
        (
            429,
            {"retry-after": "1.5"},
            failure(1000),
            CANCEL,
            "rate_limited",
            "rate_limited",
            Decimal("1.5"),
        ),
        (
            200,
            {"Retry-After": "3"},
            failure(1000),
            PLACE,
            "rate_limited",
            "rate_limited",
            Decimal(3),
        ),
        (503, {}, failure(1000), PLACE, "rate_limited", "rate_limited", None),
        (500, {}, "oops", PLACE, "unknown_outcome", "http_500", None),
        (502, {}, "", CANCEL, "unknown_outcome", "http_502", None),
        (503, {}, failure(2008), PLACE, "unknown_outcome", "http_503", None),
        (504, {}, "", CANCEL_ALL, "unknown_outcome", "http_504", None),
        (500, {}, "", "query_positions", "retryable", "http_500", None),
        (400, {}, failure(2008), PLACE, "permanent", "post_only_would_cross", None),
        (400, {}, "bad request", PLACE, "permanent", "http_400", None),
        (404, {}, "", "query_order", "permanent", "http_404", None),
        (408, {}, "", PLACE, "retryable", "http_408", None),
        (
            403,
            {"cf-mitigated": "challenge"},
            "<html>",
            PLACE,
            "retryable",
            "cloudflare_challenge",
            None,
        ),
        (
            403,
            {"Retry-After": "60"},
            json.dumps({"blocked": True, "reason": "ip_query_only"}),
            PLACE,
            "rate_limited",
            "ip_query_only",
            Decimal(60),
        ),
        (200, {}, "{not json", PLACE, "unknown_outcome", "bad_reply_200", None),
        (200, {}, '{"status": "success"}', PLACE, "unknown_outcome", "bad_reply_200", None),
        (200, {}, "{not json", "query_order", "retryable", "bad_reply_200", None),
        (
            200,
            {},
            '{"status": "failure", "error_code": NaN}',
            CANCEL,
            "unknown_outcome",
            "bad_reply_200",
            None,
        ),
        (302, {}, "", PLACE, "unknown_outcome", "bad_reply_302", None),
    ],
)
def test_http_table(status, headers, body, request_kind, error_class, reason, after):
    c = classify_http(status, headers, body, request_kind)
    assert c is not None
    assert (c.error_class, c.reason, c.retry_after_s) == (error_class, reason, after)
    assert c.http_status == status


class _Req:
    request = httpx.Request("POST", "http://127.0.0.1/v1/execute")


@pytest.mark.parametrize(
    ("exc", "write_class", "read_class"),
    [
        (httpx.ConnectError("refused", request=_Req.request), "retryable", "retryable"),
        (httpx.ConnectTimeout("t", request=_Req.request), "retryable", "retryable"),
        (httpx.PoolTimeout("t", request=_Req.request), "retryable", "retryable"),
        (ConnectionRefusedError(), "retryable", "retryable"),
        (httpx.ReadTimeout("t", request=_Req.request), "unknown_outcome", "retryable"),
        (httpx.WriteTimeout("t", request=_Req.request), "unknown_outcome", "retryable"),
        (TimeoutError(), "unknown_outcome", "retryable"),
        (httpx.ReadError("r", request=_Req.request), "unknown_outcome", "retryable"),
        (httpx.RemoteProtocolError("closed", request=_Req.request), "unknown_outcome", "retryable"),
        (ConnectionResetError(), "unknown_outcome", "retryable"),
        (websockets.exceptions.ConnectionClosedError(None, None), "unknown_outcome", "retryable"),
        (websockets.exceptions.InvalidStatus(None), "retryable", "retryable"),  # type: ignore[arg-type]
        (MalformedFrame("bad"), "unknown_outcome", "retryable"),
        (httpx.UnsupportedProtocol("ftp"), "permanent", "permanent"),
        (RuntimeError("?"), "unknown_outcome", "retryable"),
    ],
)
def test_transport_failures(exc, write_class, read_class):
    assert classify_exception(exc, PLACE).error_class == write_class
    assert classify_exception(exc, CANCEL).error_class == write_class
    for read in READS:
        assert classify_exception(exc, read).error_class == read_class


@pytest.mark.parametrize(
    ("value", "now", "expected"),
    [
        (None, None, None),
        ("5", None, Decimal(5)),
        (" 120 ", None, Decimal(120)),
        ("0.25", None, Decimal("0.25")),
        ("-1", None, None),
        ("NaN", None, None),
        ("1e9", None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None, None),  # a date needs the caller's clock
        ("Wed, 21 Oct 2015 07:28:00 GMT", Decimal(1445412470), Decimal(10)),
        ("Wed, 21 Oct 2015 07:28:00 GMT", Decimal(1445412490), Decimal(0)),
        ("soon", Decimal(0), None),
    ],
)
def test_retry_after(value, now, expected):
    assert parse_retry_after(value, now_unix_s=now) == expected


def test_to_event():
    c = classify_http(429, {"Retry-After": "2"}, failure(1000, "Too Many Requests"), PLACE)
    assert c is not None
    ev = c.to_event(PLACE, order_id="c1:build:1")
    assert ev == VenueError(
        error_class="rate_limited",
        request=PLACE,
        message="rate_limited: Too Many Requests",
        order_id="c1:build:1",
        code=1000,
        retry_after_s=Decimal(2),
    )
    timeout = classify_exception(httpx.ReadTimeout("t"), CANCEL).to_event(CANCEL, order_id="o")
    assert timeout.error_class == "unknown_outcome"
    assert timeout.message == "timeout: ReadTimeout"
