"""Gateway replies of nado-protocol.md §4.2, §5, §6 and §9.2 mapped to records and events."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from adapters.base import ProductInfo
from adapters.nado import queries as q
from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import loads
from engine.core.events import BboUpdated
from engine.core.events import OpenOrder
from engine.core.events import OrderStatus
from engine.core.events import Position

E18 = 10**18
DIGEST = "0x" + "ab" * 32
DIGEST2 = "0x" + "cd" * 32
SUB = "0x19e7e376e7c213b7e7e7e46cc70a5dd086daff2a64656661756c740000000000"


def ok(data, request_type="query_x"):
    return {"status": "success", "data": data, "request_type": request_type}


def test_success_and_failure_envelopes():
    env = q.parse_envelope(
        {
            "status": "success",
            "signature": "0x00",
            "data": {"digest": DIGEST},
            "request_type": "execute_place_order",
            "id": 42,
        }
    )
    assert env == q.Envelope(
        ok=True, data={"digest": DIGEST}, request_type="execute_place_order", id=42
    )
    assert q.parse_place_result(env.data) == DIGEST
    fail = q.parse_envelope(
        {
            "status": "failure",
            "signature": "0x00",
            "error_code": 2008,
            "error": "order is post only, but it crosses book",
            "request_type": "execute_place_order",
        }
    )
    assert not fail.ok
    assert fail.error_code == 2008
    assert "post only" in fail.error


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"status": "maybe"},
        {"data": {}},
        {"status": "success"},
        {"status": "failure", "error_code": "x"},
        {"blocked": True, "reason": "ip_query_only"},
    ],
)
def test_bad_envelopes(bad):
    with pytest.raises(MalformedFrame):
        q.parse_envelope(bad)


def test_contracts():
    data = {"chain_id": "763373", "endpoint_addr": "0x698D87105274292B5673367DEC81874Ce3633Ac2"}
    assert q.parse_contracts(data) == q.Contracts(
        chain_id=763373, endpoint_addr="0x698d87105274292b5673367dec81874ce3633ac2"
    )
    with pytest.raises(MalformedFrame):
        q.parse_contracts({"chain_id": 1, "endpoint_addr": "0x1234"})
    with pytest.raises(MalformedFrame):
        q.parse_contracts({"chain_id": 0, "endpoint_addr": "0x" + "00" * 20})


def symbol(name, pid, **over):
    base = {
        "type": "perp",
        "product_id": pid,
        "symbol": name,
        "price_increment_x18": str(10**17),
        "size_increment": str(10**15),
        "min_size": str(10 * E18),
        "maker_fee_rate_x18": "0",
        "taker_fee_rate_x18": str(2 * 10**14),
        "long_weight_initial_x18": str(95 * 10**16),
        "long_weight_maintenance_x18": str(97 * 10**16),
        "max_open_interest_x18": None,
        "trading_status": "live",
        "isolated_only": False,
    }
    return {**base, **over}


def test_symbols_to_product_info():
    data = {
        "symbols": {
            "ETH-PERP": symbol("ETH-PERP", 4),
            "SOL-PERP": symbol(
                "SOL-PERP",
                "8",
                price_increment_x18=str(10**16),
                size_increment=str(10**16),
                trading_status="reduce_only",
            ),
        }
    }
    out = q.parse_symbols(data)
    assert out["ETH-PERP"].product_info() == ProductInfo(
        symbol="ETH-PERP",
        product_id=4,
        tick_size=Decimal("0.1"),
        size_increment=Decimal("0.001"),
        min_order_value_usd=Decimal(10),
    )
    assert out["ETH-PERP"].tradable
    sol = out["SOL-PERP"]
    assert (sol.product_id, sol.price_increment_x18) == (8, 10**16)
    assert not sol.tradable
    # missing trading_status (older gateways) reads as live
    legacy = symbol("BTC-PERP", 2)
    del legacy["trading_status"], legacy["isolated_only"]
    assert q.parse_symbols({"symbols": {"BTC-PERP": legacy}})["BTC-PERP"].tradable


@pytest.mark.parametrize(
    "over",
    [
        {"price_increment_x18": "0"},
        {"size_increment": "-1"},
        {"min_size": "-5"},
        {"trading_status": "frozen"},
        {"symbol": "SOL-PERP"},
        {"product_id": None},
        {"price_increment_x18": 0.1},
    ],
)
def test_symbols_malformed(over):
    with pytest.raises(MalformedFrame):
        q.parse_symbols({"symbols": {"ETH-PERP": symbol("ETH-PERP", 4, **over)}})


def test_product_symbols_list():
    data = [{"product_id": 4, "symbol": "ETH-PERP"}, {"product_id": 8, "symbol": "SOL-PERP"}]
    assert q.parse_product_symbols(data) == {"ETH-PERP": 4, "SOL-PERP": 8}
    with pytest.raises(MalformedFrame):
        q.parse_product_symbols({"symbols": data})


def test_all_products():
    book = {
        "size_increment": str(10**15),
        "price_increment_x18": str(10**17),
        "min_size": str(10 * E18),
        "collected_fees": "0",
    }
    data = {
        "spot_products": [
            {
                "product_id": 0,
                "oracle_price_x18": str(E18),
                "risk": {},
                "book_info": {**book, "size_increment": "1"},
            }
        ],
        "perp_products": [
            {
                "product_id": 4,
                "oracle_price_x18": str(3500 * E18),
                "index_price_x18": str(3500 * E18),
                "risk": {},
                "state": {},
                "book_info": book,
            }
        ],
    }
    out = q.parse_all_products(data)
    assert out[4] == q.ProductBook(
        product_id=4,
        is_perp=True,
        oracle_price=Decimal(3500),
        price_increment_x18=10**17,
        size_increment_x18=10**15,
        min_size_x18=10 * E18,
    )
    assert not out[0].is_perp
    with pytest.raises(MalformedFrame):
        q.parse_all_products({"spot_products": []})


def test_market_price_and_prices():
    one = {"product_id": 4, "bid_x18": str(3499 * E18), "ask_x18": str(3500 * E18)}
    assert q.parse_market_price(one) == BboUpdated(
        product_id=4, bid=Decimal(3499), bid_qty=0, ask=Decimal(3500), ask_qty=0
    )
    assert len(q.parse_market_prices({"market_prices": [one, {**one, "product_id": 8}]})) == 2
    with pytest.raises(MalformedFrame):
        q.parse_market_price({**one, "bid_x18": "-1"})


SUBACCOUNT_INFO = {
    "subaccount": SUB,
    "exists": True,
    "healths": [{"assets": "1", "liabilities": "0", "health": "1"}] * 3,
    "health_contributions": [],
    "spot_count": 1,
    "perp_count": 1,
    "spot_balances": [{"product_id": 0, "balance": {"amount": "456895621098158389211471"}}],
    "perp_balances": [
        {
            "product_id": 4,
            "balance": {
                "amount": "-100000000000000000",
                "v_quote_balance": "350000000000000000000",
                "last_cumulative_funding_x18": "0",
            },
        }
    ],
    "spot_products": [],
    "perp_products": [],
}


def test_subaccount_info_positions():
    info = q.parse_subaccount_info(json.loads(json.dumps(SUBACCOUNT_INFO)))
    assert info.spot_amounts[0] == Decimal("456895.621098158389211471")
    snap = info.position_snapshot([4, 8], request_id="r1")
    assert snap.positions == (
        Position(product_id=4, qty=Decimal("-0.1")),
        Position(product_id=8, qty=Decimal(0)),  # absent from perp_balances: flat
    )
    assert snap.request_id == "r1"


def test_missing_subaccount_is_never_flat():
    info = q.parse_subaccount_info({**SUBACCOUNT_INFO, "exists": False, "perp_balances": []})
    with pytest.raises(MalformedFrame, match="does not exist"):
        info.position_snapshot([4])


@pytest.mark.parametrize(
    "over",
    [
        {"perp_balances": None},
        {"perp_balances": [{"product_id": 4, "balance": {"amount": "NaN"}}]},
        {"perp_balances": [{"product_id": 4}]},
        {"exists": "yes"},
        {"perp_balances": SUBACCOUNT_INFO["perp_balances"] * 2},
    ],
)
def test_subaccount_info_malformed(over):
    with pytest.raises(MalformedFrame):
        q.parse_subaccount_info({**SUBACCOUNT_INFO, **over})


def test_subaccount_info_rejects_nan_text():
    text = json.dumps(SUBACCOUNT_INFO).replace('"-100000000000000000"', "NaN")
    with pytest.raises(MalformedFrame):
        q.parse_subaccount_info(loads(text))


ORDER = {
    "product_id": 4,
    "sender": SUB,
    "price_x18": "3500000000000000000000",
    "amount": "-100000000000000000",
    "expiration": "1767225600",
    "nonce": "1782579200000000007",
    "unfilled_amount": "-40000000000000000",
    "digest": DIGEST,
    "placed_at": 1767200000,
    "order_type": "default",
    "appendix": "1",
}


def test_order_query():
    order = q.parse_order(ORDER)
    assert (order.side, order.qty, order.remaining_qty, order.filled_qty) == (
        "sell",
        Decimal("0.1"),
        Decimal("0.04"),
        Decimal("0.06"),
    )
    assert order.to_status("o1", request_id="r2") == OrderStatus(
        order_id="o1",
        state="open",
        filled_qty=Decimal("0.06"),
        remaining_qty=Decimal("0.04"),
        request_id="r2",
    )
    assert order.to_open_order("o1") == OpenOrder(
        order_id="o1",
        product_id=4,
        side="sell",
        price=Decimal(3500),
        qty=Decimal("0.1"),
        remaining_qty=Decimal("0.04"),
        digest=DIGEST,
    )
    # the SDK model declares placed_at a string
    assert q.parse_order({**ORDER, "placed_at": "1767200000"}).placed_at_s == 1767200000


@pytest.mark.parametrize(
    "over",
    [
        {"amount": "0"},
        {"unfilled_amount": "-200000000000000000"},
        {"unfilled_amount": "40000000000000000"},
        {"price_x18": "0"},
        {"digest": "0x12"},
        {"nonce": "-1"},
    ],
)
def test_order_malformed(over):
    with pytest.raises(MalformedFrame):
        q.parse_order({**ORDER, **over})


def test_subaccount_orders_and_snapshot():
    other = {
        **ORDER,
        "digest": DIGEST2,
        "amount": "20000000000000000",
        "unfilled_amount": "20000000000000000",
    }
    orders = q.parse_subaccount_orders({"sender": SUB, "product_id": 4, "orders": [ORDER, other]})
    known = {DIGEST: "c1:build:1"}
    snap = q.open_orders_snapshot(orders, [4], known.get, request_id="r3")
    assert [o.order_id for o in snap.orders] == ["c1:build:1", DIGEST2]  # orphan keeps digest
    assert snap.orders[1].side == "buy"
    assert snap.product_ids == (4,)


def test_multi_product_orders():
    data = {
        "sender": SUB,
        "product_orders": [{"product_id": 4, "orders": [ORDER]}, {"product_id": 8, "orders": []}],
    }
    out = q.parse_multi_orders(data)
    assert [o.digest for o in out[4]] == [DIGEST]
    assert out[8] == []


def test_cancel_result():
    out = q.parse_cancel_result({"cancelled_orders": [ORDER]})
    assert out[0].remaining_qty == Decimal("0.04")
    with pytest.raises(MalformedFrame):
        q.parse_cancel_result({})
