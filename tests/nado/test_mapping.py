"""x18 conversion and the §7.5 stream frames (nado-protocol.md)."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.nado.mapping import MAX_X18
from adapters.nado.mapping import NadoFill
from adapters.nado.mapping import NadoOrderUpdate
from adapters.nado.mapping import NadoPositionChange
from adapters.nado.mapping import NotRepresentable
from adapters.nado.mapping import StreamError
from adapters.nado.mapping import StreamReply
from adapters.nado.mapping import decode_stream
from adapters.nado.mapping import from_x18
from adapters.nado.mapping import meets_min_size
from adapters.nado.mapping import order_amount_x18
from adapters.nado.mapping import order_price_x18
from adapters.nado.mapping import to_x18
from adapters.nado.mapping import to_x18_multiple
from adapters.nado.wire import MalformedFrame
from engine.core.events import BboUpdated
from engine.core.events import FillReceived
from engine.core.events import OrderAccepted
from engine.core.events import OrderCancelled
from engine.core.events import OrderExpired

E18 = 10**18
DIGEST = "0x" + "ef86" * 16
SUB = "0x19e7e376e7c213b7e7e7e46cc70a5dd086daff2a64656661756c740000000000"

# --- x18 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "x18"),
    [
        ("3500.25", 3500250000000000000000),
        ("0", 0),
        ("-0.1", -(10**17)),
        ("0.000000000000000001", 1),
        ("1E+2", 100 * E18),
        ("-37", -37 * E18),
        ("0.100000000000000000000", 10**17),  # trailing zeros past 18 places are exact
    ],
)
def test_to_x18_exact(text, x18):
    assert to_x18(Decimal(text)) == x18
    assert from_x18(x18) == Decimal(text)


@pytest.mark.parametrize("bad", ["0.0000000000000000001", "1.0000000000000000001", "1E-30"])
def test_to_x18_refuses_more_than_18_places(bad):
    with pytest.raises(NotRepresentable, match="18 decimal places"):
        to_x18(Decimal(bad))


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), 1.5, True])
def test_to_x18_refuses_non_finite_and_floats(bad):
    with pytest.raises((ValueError, TypeError)):
        to_x18(bad)


def test_to_x18_refuses_beyond_int128():
    with pytest.raises(NotRepresentable, match="too large"):
        to_x18(Decimal(2**127))
    with pytest.raises(NotRepresentable, match="too large"):
        to_x18(Decimal("1E+100000"))
    assert to_x18(from_x18(MAX_X18)) == MAX_X18


def test_from_x18_is_canonical_and_plain():
    assert str(from_x18(3500 * E18)) == "3500"
    assert str(from_x18(10**20)) == "100"
    assert str(from_x18(10**17)) == "0.1"
    assert str(from_x18(-1)) == "-1E-18"  # Decimal's own notation; value exact
    with pytest.raises(TypeError):
        from_x18(True)  # type: ignore[arg-type]


@given(st.integers(min_value=-MAX_X18, max_value=MAX_X18))
def test_x18_round_trip_from_int(n):
    assert to_x18(from_x18(n)) == n


@given(
    st.decimals(
        allow_nan=False,
        allow_infinity=False,
        places=18,
        min_value=Decimal("-1e20"),
        max_value=Decimal("1e20"),
    )
)
def test_x18_round_trip_from_decimal(d):
    assert from_x18(to_x18(d)) == d


@given(st.integers(min_value=1, max_value=10**6), st.integers(min_value=1, max_value=10**20))
def test_multiples_accepted_and_off_by_one_refused(k, inc):
    value = from_x18(k * inc)
    assert to_x18_multiple(value, inc, what="price") == k * inc
    if inc > 1:
        with pytest.raises(NotRepresentable, match="not a multiple"):
            to_x18_multiple(from_x18(k * inc + 1), inc, what="price")


def test_order_amount_sign_and_increment():
    inc = 10**15  # 0.001
    assert order_amount_x18("buy", Decimal("0.1"), inc) == 10**17
    assert order_amount_x18("sell", Decimal("0.1"), inc) == -(10**17)
    with pytest.raises(NotRepresentable, match="not a multiple"):
        order_amount_x18("sell", Decimal("0.0015"), inc)
    with pytest.raises(NotRepresentable):
        order_amount_x18("buy", Decimal(0), inc)
    with pytest.raises(ValueError, match="side"):
        order_amount_x18("long", Decimal(1), inc)


def test_order_price_increment():
    tick = 10**17  # 0.1
    assert order_price_x18(Decimal("3500.1"), tick) == 35001 * 10**17
    with pytest.raises(NotRepresentable):
        order_price_x18(Decimal("3500.15"), tick)
    with pytest.raises(NotRepresentable):
        order_price_x18(Decimal("-1"), tick)
    with pytest.raises(ValueError, match="increment"):
        to_x18_multiple(Decimal(1), 0, what="price")


def test_min_size_is_quote_notional():
    # 0.01 ETH at 3500 = 35 USDT0
    assert meets_min_size(-(10**16), 3500 * E18, 35 * E18)
    assert not meets_min_size(10**16, 3500 * E18, 36 * E18)


# --- stream frames --------------------------------------------------------------------

BBO = {
    "type": "best_bid_offer",
    "timestamp": "1767200000123456789",
    "product_id": 4,
    "bid_price": "3499900000000000000000",
    "bid_qty": "2500000000000000000",
    "ask_price": "3500000000000000000000",
    "ask_qty": "1200000000000000000",
}
FILL = {
    "type": "fill",
    "timestamp": "1767200000223456789",
    "product_id": 4,
    "subaccount": SUB,
    "order_digest": DIGEST,
    "filled_qty": "60000000000000000",
    "remaining_qty": "40000000000000000",
    "original_qty": "100000000000000000",
    "price": "3500000000000000000000",
    "is_taker": True,
    "is_bid": False,
    "fee": "73500000000000000",
    "submission_idx": "1234567",
    "appendix": "513",
    "id": 42,
}
ORDER_UPDATE = {
    "type": "order_update",
    "timestamp": "1767200000223456790",
    "product_id": 4,
    "digest": DIGEST,
    "amount": "0",
    "reason": "filled",
    "id": 42,
}
POSITION_CHANGE = {
    "type": "position_change",
    "timestamp": "1767200000223456791",
    "product_id": 4,
    "subaccount": SUB,
    "amount": "-100000000000000000",
    "v_quote_amount": "350000000000000000000",
    "reason": "match_orders",
    "isolated": False,
}


def frame(obj, **changes):
    out = {**obj, **changes}
    return json.dumps({k: v for k, v in out.items() if v is not ...})


def test_bbo_frame():
    ev = decode_stream(frame(BBO))
    assert ev == BboUpdated(
        product_id=4,
        bid=Decimal("3499.9"),
        bid_qty=Decimal("2.5"),
        ask=Decimal("3500"),
        ask_qty=Decimal("1.2"),
        ts_venue_ns=1767200000123456789,
    )


def test_fill_frame_maps_to_fill_event():
    fill = decode_stream(frame(FILL))
    assert isinstance(fill, NadoFill)
    assert fill.side == "sell"
    assert fill.qty == Decimal("0.06")
    assert fill.cumulative_qty == Decimal("0.06")
    assert fill.client_id == 42
    assert fill.fill_id == f"{DIGEST}:{6 * 10**16}"
    ev = fill.to_event("c1:build:1")
    assert ev == FillReceived(
        order_id="c1:build:1",
        fill_id=fill.fill_id,
        product_id=4,
        side="sell",
        price=Decimal(3500),
        qty=Decimal("0.06"),
        fee=Decimal("0.0735"),
        cumulative_qty=Decimal("0.06"),
        remaining_qty=Decimal("0.04"),
        is_maker=False,
        ts_venue_ns=1767200000223456789,
    )


def test_fill_id_is_stable_for_duplicates_and_distinct_per_fill():
    a = decode_stream(frame(FILL))
    dup = decode_stream(frame(FILL, timestamp="1767200000999999999"))
    second = decode_stream(
        frame(FILL, filled_qty="40000000000000000", remaining_qty="0", submission_idx="1234999")
    )
    assert isinstance(a, NadoFill)
    assert isinstance(dup, NadoFill)
    assert isinstance(second, NadoFill)
    assert a.fill_id == dup.fill_id
    assert a.fill_id != second.fill_id
    assert second.cumulative_qty == Decimal("0.1")


def test_fill_signed_quantities_and_old_version_fields():
    # A Vertex-era fill: no original_qty / is_bid / fee / appendix; signed quantities.
    old = {k: v for k, v in FILL.items() if k not in ("original_qty", "is_bid", "fee")}
    old["filled_qty"] = "-60000000000000000"
    old["remaining_qty"] = "-40000000000000000"
    fill = decode_stream(json.dumps(old))
    assert isinstance(fill, NadoFill)
    assert fill.side == "sell"
    assert fill.qty == Decimal("0.06")
    assert fill.fee == 0
    assert fill.cumulative_qty is None
    assert fill.fill_id == f"{DIGEST}:s1234567:{6 * 10**16}:{4 * 10**16}"


def test_fill_without_side_uses_the_adapters_record():
    unsigned = {k: v for k, v in FILL.items() if k != "is_bid"}
    fill = decode_stream(json.dumps(unsigned))
    assert isinstance(fill, NadoFill)
    assert fill.side is None
    with pytest.raises(MalformedFrame, match="no side"):
        fill.to_event("o1")
    assert fill.to_event("o1", side="buy").side == "buy"


@pytest.mark.parametrize(
    ("reason", "tif", "expected"),
    [
        ("placed", "default", OrderAccepted),
        ("open", "ioc", OrderAccepted),
        ("cancelled", "default", OrderCancelled),
        ("cancelled", "post_only", OrderCancelled),
        ("cancelled", "ioc", OrderExpired),
        ("cancelled", "fok", OrderExpired),
        ("filled", "ioc", type(None)),
    ],
)
def test_order_update_frame(reason, tif, expected):
    upd = decode_stream(frame(ORDER_UPDATE, reason=reason, amount="-40000000000000000"))
    assert isinstance(upd, NadoOrderUpdate)
    assert upd.remaining_qty == Decimal("0.04")
    assert upd.client_id == 42
    assert isinstance(upd.to_event("o1", tif=tif), expected)
    if reason == "placed":
        assert upd.to_event("o1", tif=tif) == OrderAccepted(order_id="o1", digest=DIGEST)


def test_order_update_nested_order_variant():
    nested = {
        "type": "order_update",
        "timestamp": "1767200000223456790",
        "reason": "cancelled",
        "order": {
            "product_id": 8,
            "digest": DIGEST.upper().replace("0X", "0x"),
            "amount": "1",
            "unfilled_amount": "5",
        },
    }
    upd = decode_stream(json.dumps(nested))
    assert isinstance(upd, NadoOrderUpdate)
    assert (upd.product_id, upd.digest, upd.remaining_qty) == (8, DIGEST, from_x18(5))


def test_position_change_frame():
    pc = decode_stream(frame(POSITION_CHANGE))
    assert pc == NadoPositionChange(
        product_id=4,
        subaccount=SUB,
        amount=Decimal("-0.1"),
        v_quote_amount=Decimal(350),
        reason="match_orders",
        isolated=False,
        ts_venue_ns=1767200000223456791,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"result": null, "id": 2}', StreamReply(id=2, method=None)),
        (
            '{"result": {"method": "pong", "server_time": "1767200000000",'
            ' "client_time": "1"}, "id": 6}',
            StreamReply(id=6, method="pong", server_time_ms=1767200000000),
        ),
        (
            '{"result": {"method": "time", "server_time": 5}, "id": 7}',
            StreamReply(id=7, method="time", server_time_ms=5),
        ),
        ('{"result": [], "id": 5}', StreamReply(id=5, method="list")),
        (
            '{"error": "invalid signature", "error_code": 2028, "id": 1}',
            StreamError(id=1, error="invalid signature", code=2028),
        ),
    ],
)
def test_control_frames(text, expected):
    assert decode_stream(text) == expected


# --- malformed frames -----------------------------------------------------------------

MALFORMED = [
    ("nan literal", '{"type":"best_bid_offer","bid_price":NaN}'),
    ("infinity", frame(BBO).replace('"2500000000000000000"', "Infinity")),
    ("-infinity", frame(BBO).replace('"2500000000000000000"', "-Infinity")),
    ("float price", frame(BBO, bid_price=3499.9)),
    ("decimal string", frame(BBO, bid_price="3499.9")),
    ("bool qty", frame(BBO, bid_qty=True)),
    ("negative bbo qty", frame(BBO, ask_qty="-1")),
    ("negative bbo price", frame(BBO, bid_price="-1")),
    ("negative timestamp", frame(BBO, timestamp="-5")),
    ("missing ask", frame(BBO, ask_price=...)),
    ("null ask", frame(BBO, ask_price=None)),
    ("unknown type", frame(BBO, type="liquidation")),
    ("no type", '{"product_id": 4}'),
    ("not an object", "[1, 2]"),
    ("truncated", frame(BBO)[:-5]),
    ("garbage", "\x00\xff"),
    ("duplicate key", '{"type":"fill","type":"best_bid_offer"}'),
    ("zero fill", frame(FILL, filled_qty="0")),
    ("negative fill price", frame(FILL, price="-3500000000000000000000")),
    ("fill beyond original", frame(FILL, filled_qty="90000000000000000")),
    ("fill no identity", frame(FILL, original_qty=..., submission_idx=...)),
    ("short digest", frame(FILL, order_digest="0xef86")),
    ("missing is_taker", frame(FILL, is_taker=...)),
    ("is_taker as string", frame(FILL, is_taker="true")),
    ("client id beyond u64", frame(FILL, id=2**64)),
    ("negative client id", frame(FILL, id=-1)),
    ("unknown order reason", frame(ORDER_UPDATE, reason="exploded")),
    ("order_update missing digest", frame(ORDER_UPDATE, digest=...)),
    ("position missing amount", frame(POSITION_CHANGE, amount=...)),
    ("leading plus", frame(POSITION_CHANGE, amount="+1")),
    ("reply result scalar", '{"result": 3, "id": 1}'),
    ("huge int", frame(BBO, bid_qty="9" * 100)),
]


@pytest.mark.parametrize(("name", "text"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_frames_raise_only_malformed_frame(name, text):
    with pytest.raises(MalformedFrame):
        decode_stream(text)


def test_reader_counts_and_survives():
    frames = [frame(BBO), "{", frame(BBO, type="nope"), frame(FILL), "NaN"]
    good, bad = [], 0
    for text in frames:
        try:
            good.append(decode_stream(text))
        except MalformedFrame:
            bad += 1
    assert bad == 3
    assert [type(g) for g in good] == [BboUpdated, NadoFill]


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_fuzzed_text_never_raises_anything_but_malformed(text):
    with contextlib.suppress(MalformedFrame):
        decode_stream(text)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**130), max_value=2**130)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


@given(
    st.sampled_from([BBO, FILL, ORDER_UPDATE, POSITION_CHANGE]),
    st.data(),
)
def test_one_field_mutated_parses_or_is_malformed(base, data):
    key = data.draw(st.sampled_from(sorted(base)))
    value = data.draw(json_values)
    text = json.dumps({**base, key: value})
    with contextlib.suppress(MalformedFrame):
        decode_stream(text)
