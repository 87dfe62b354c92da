from __future__ import annotations

from decimal import Decimal

import attrs
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from engine.core import events
from engine.core import intents
from engine.core.messages import REGISTRY
from engine.core.messages import _serialize
from engine.core.messages import dumps
from engine.core.messages import from_dict
from engine.core.messages import loads
from engine.core.messages import to_dict

dec = st.decimals(allow_nan=False, allow_infinity=False, min_value=0, max_value=10**9, places=8)
pos = st.decimals(
    allow_nan=False, allow_infinity=False, min_value=Decimal("1e-8"), max_value=10**9, places=8
)
signed = st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**9), max_value=10**9)
text = st.text(min_size=1, max_size=12)
opt_text = st.none() | text
side = st.sampled_from(["buy", "sell"])
pid = st.integers(min_value=0, max_value=1000)

STRATEGIES = {
    events.BboUpdated: st.builds(
        events.BboUpdated, product_id=pid, bid=dec, bid_qty=dec, ask=dec, ask_qty=dec
    ),
    events.FillReceived: st.builds(
        events.FillReceived,
        order_id=text,
        fill_id=text,
        product_id=pid,
        side=side,
        price=pos,
        qty=dec,
        fee=signed,
        cumulative_qty=st.none() | dec,
        remaining_qty=st.none() | dec,
        is_maker=st.booleans(),
        ts_venue_ns=st.none() | st.integers(min_value=0),
        target=opt_text,
    ),
    events.PositionSnapshot: st.builds(
        events.PositionSnapshot,
        positions=st.lists(
            st.builds(events.Position, product_id=pid, qty=signed, entry_price=st.none() | pos)
        ),
        request_id=opt_text,
    ),
    events.OpenOrdersSnapshot: st.builds(
        events.OpenOrdersSnapshot,
        orders=st.lists(
            st.builds(
                events.OpenOrder,
                order_id=text,
                product_id=pid,
                side=side,
                price=pos,
                qty=pos,
                remaining_qty=dec,
                digest=opt_text,
            )
        ),
        product_ids=st.lists(pid),
    ),
    events.VenueError: st.builds(
        events.VenueError,
        error_class=st.sampled_from(["retryable", "rate_limited", "permanent", "unknown_outcome"]),
        request=text,
        retry_after_s=st.none() | dec,
        code=st.none() | st.integers(),
    ),
    intents.PlaceOrder: st.builds(
        intents.PlaceOrder,
        order_id=text,
        product_id=pid,
        side=side,
        qty=pos,
        price=pos,
        tif=st.sampled_from(["ioc", "fok", "post_only", "default"]),
        reduce_only=st.booleans(),
    ),
    intents.SendAlert: st.builds(
        intents.SendAlert,
        event=text,
        severity=st.sampled_from(["info", "warning", "critical"]),
        message=text,
        exposure_usd=st.none() | signed,
    ),
}


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.kind)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_json_round_trip_is_exact(cls, data):
    msg = data.draw(STRATEGIES[cls])
    # to_dict's field-by-field path builds exactly what attrs.asdict builds
    assert to_dict(msg) == {"kind": msg.kind, **attrs.asdict(msg, value_serializer=_serialize)}
    text = dumps(to_dict(msg))
    back = from_dict(loads(text))
    assert back == msg
    assert dumps(to_dict(back)) == text


def test_every_registered_kind_round_trips_with_defaults():
    samples = [
        events.OrderAccepted(order_id="a", digest="0x1"),
        events.OrderRejected(order_id="a", reason="margin", code=2006),
        events.OrderCancelled(order_id="a", filled_qty="0.5"),
        events.OrderExpired(order_id="a"),
        events.OrderStatus(order_id="a", state="open"),
        events.ConnectionChanged(channel="ws", state="disconnected"),
        events.DeadlineExpired(name="fills", generation=3, target="build:1"),
        events.OperatorCommand(command="stop"),
        events.MachineFinished(machine="b", outcome="built", target="s"),
        intents.CancelOrder(order_id="a", product_id=4),
        intents.CancelProductOrders(request_id="r", product_ids=[4, 8]),
        intents.QueryPositions(request_id="r", product_ids=[4, 8]),
        intents.QueryOrder(request_id="r", order_id="a", product_id=4),
        intents.QueryOpenOrders(request_id="r", product_ids=[4]),
        intents.Halt(reason="budget", exposure_usd="12.5"),
        intents.AdoptVenuePositions(product_ids=[4, 8]),
        intents.QueryMarketPrices(request_id="r", product_ids=[4, 8]),
        intents.StreamConnect(attempt=2, reason="outage 1"),
    ]
    for msg in samples:
        assert from_dict(loads(dumps(to_dict(msg)))) == msg
        assert to_dict(msg) == {"kind": msg.kind, **attrs.asdict(msg, value_serializer=_serialize)}
    covered = {type(m) for m in samples} | set(STRATEGIES)
    assert covered == set(REGISTRY.values())


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-inf", "abc", 1.5, True])
def test_numbers_are_validated_at_construction(bad):
    with pytest.raises((ValueError, TypeError)):
        events.BboUpdated(product_id=4, bid=bad, bid_qty=1, ask=1, ask_qty=1)


def test_negative_where_impossible_is_rejected():
    with pytest.raises(ValueError, match="qty"):
        intents.PlaceOrder(order_id="o", product_id=4, side="buy", qty="-1", price="1", tif="ioc")
    with pytest.raises(ValueError, match="side"):
        events.FillReceived(
            order_id="o", fill_id="f", product_id=4, side="long", price="1", qty="1"
        )


def test_json_refuses_nan_constants():
    with pytest.raises(ValueError, match="non-finite"):
        loads('{"x": NaN}')


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown message kind"):
        from_dict({"kind": "teleport"})


def test_plain_fields_is_what_attrs_asdict_gives_or_refuses():
    from engine.core.loop import _jsonable
    from engine.core.messages import NotPlain
    from engine.core.messages import json_fields
    from engine.core.messages import plain_fields

    @attrs.frozen
    class Leg:
        qty: Decimal
        tags: tuple[str, ...] = ()

    @attrs.frozen
    class Params:
        cycle: int
        legs: tuple[Leg, ...]
        notes: list[object]
        extra: object = None

    sample = Params(1, (Leg(Decimal("1.50"), ("a",)),), [Decimal("2"), None, (1, 2)])
    assert plain_fields(sample) == attrs.asdict(sample, value_serializer=_serialize)
    # what the engine journals for a structured note value: the same either way
    assert _jsonable(sample) == _jsonable(attrs.asdict(sample))
    assert _jsonable(sample)["legs"] == [{"qty": "1.50", "tags": ["a"]}]
    assert json_fields(sample) == _jsonable(plain_fields(sample))  # in one pass
    for odd in ({"k": 1}, {1, 2}, 1.5):  # left to attrs.asdict, then _jsonable
        with pytest.raises(NotPlain):
            plain_fields(Params(1, (), [], odd))
        with pytest.raises(NotPlain):
            json_fields(Params(1, (), [], odd))
        assert _jsonable(Params(1, (), [], odd)) == _jsonable(attrs.asdict(Params(1, (), [], odd)))
