"""The official `nado-protocol` SDK (2.0.0), unchanged but for its URLs, against
`dnpair venue serve`: engine client (markets, place, cancel, queries), indexer client
(archive orders and matches, v2 tickers/contracts/trades), trigger client, edge query,
and its WebSocket clients (`/v1/subscribe` streams, `/v1/ws` executes and queries).

One server for the module; each test owns a fresh key (its own subaccount).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from nado_protocol.contracts.types import NadoExecuteType
from nado_protocol.contracts.types import NadoTxType
from nado_protocol.engine_client import EngineClient
from nado_protocol.engine_client.edge import EngineEdgeQueryClient
from nado_protocol.engine_client.types import EngineClientOpts
from nado_protocol.engine_client.types.execute import CancelOrdersParams
from nado_protocol.engine_client.types.execute import PlaceOrderParams
from nado_protocol.engine_client.types.models import MaxOrderSizeDirection
from nado_protocol.engine_client.types.query import QueryMaxOrderSizeParams
from nado_protocol.engine_client.types.query import QueryStatusParams
from nado_protocol.indexer_client import IndexerClient
from nado_protocol.indexer_client.types import IndexerClientOpts
from nado_protocol.indexer_client.types.query import IndexerMatchesParams
from nado_protocol.indexer_client.types.query import IndexerSubaccountHistoricalOrdersParams
from nado_protocol.trigger_client import TriggerClient
from nado_protocol.trigger_client.types import TriggerClientOpts
from nado_protocol.trigger_client.types.query import ListTriggerOrdersParams
from nado_protocol.trigger_client.types.query import ListTriggerOrdersRequest
from nado_protocol.trigger_client.types.query import ListTriggerOrdersTx
from nado_protocol.utils.bytes32 import subaccount_to_hex
from nado_protocol.utils.execute import OrderParams
from nado_protocol.utils.expiration import OrderType
from nado_protocol.utils.expiration import get_expiration_timestamp
from nado_protocol.utils.order import build_appendix
from nado_protocol.ws.client import NadoSubscriptionClient
from nado_protocol.ws.client import NadoWebSocketClient
from nado_protocol.ws.messages import query_message
from nado_protocol.ws.streams import AllBboStream
from nado_protocol.ws.streams import BookDepthStream
from nado_protocol.ws.streams import FillStream
from nado_protocol.ws.streams import FundingRateStream
from nado_protocol.ws.streams import TradeStream
from websockets.sync.client import connect

from tests.clients.support import ETH
from tests.clients.support import TICK
from tests.clients.support import WAIT_S
from tests.clients.support import Maker
from tests.clients.support import address
from tests.clients.support import inside
from tests.clients.support import key
from tests.clients.support import venue_serve

E18 = 10**18


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with venue_serve(tmp_path_factory.mktemp("sdk")) as url:
        yield url


def engine(base: str, n: int) -> EngineClient:
    client = EngineClient(EngineClientOpts(url=f"{base}/v1", signer=key(n)))
    contracts = client.get_contracts()
    client.endpoint_addr = contracts.endpoint_addr
    client.chain_id = int(contracts.chain_id)
    return client


def sender(n: int) -> str:
    return subaccount_to_hex(address(key(n)), "default")


def order(
    n: int, price: Decimal, qty: str, order_type: OrderType, *, reduce_only: bool = False
) -> OrderParams:
    return OrderParams(
        sender=sender(n),
        priceX18=int(price * E18),
        amount=int(Decimal(qty) * E18),
        expiration=get_expiration_timestamp(60),
        appendix=build_appendix(order_type, reduce_only=reduce_only),
    )


def resting_maker(base: str, n: int, qty: str = "0.005") -> Decimal:
    maker = Maker(base, key(n))
    bid, ask = maker.bbo(ETH)
    price = inside(bid, ask, TICK[ETH])
    maker.place(ETH, "sell", qty, price, "post_only")
    return price


def recv_until(ws: Any, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "no matching frame in time"
        frame: dict[str, Any] = ws.recv(timeout=left)
        if pred(frame):
            return frame


def test_markets(base: str) -> None:
    client = engine(base, 30)
    symbols = {s.symbol: s.product_id for s in client.get_product_symbols()}
    assert symbols == {"ETH-PERP": 4, "SOL-PERP": 8}
    eth = client.get_symbols(product_type="perp").symbols["ETH-PERP"]
    assert (eth.price_increment_x18, eth.size_increment) == (str(E18 // 10), str(E18 // 1000))
    assets = {a["symbol"]: a for a in client.get_assets()}
    assert assets["ETH-PERP"]["product_id"] == 4
    assert assets["USDT0"]["product_id"] == 0
    pairs = client.get_pairs()
    assert {p["ticker_id"] for p in pairs} == {"ETH-PERP_USDT0", "SOL-PERP_USDT0"}
    book = client.get_orderbook("ETH-PERP_USDT0", 3)
    assert len(book.bids) == len(book.asks) == 3
    assert float(book.bids[0][0]) < float(book.asks[0][0])
    rates = client.get_fee_rates(sender(30))
    assert rates.taker_fee_rates_x18[ETH] == str(35 * E18 // 100_000)  # 3.5 bps
    assert EngineEdgeQueryClient(EngineClientOpts(url=f"{base}/v1")).time()["method"] == "time"


def test_place_partial_ioc_then_query_and_archive(base: str) -> None:
    price = resting_maker(base, 31)
    client = engine(base, 32)
    placed = client.place_order(
        PlaceOrderParams(product_id=ETH, order=order(32, price, "0.008", OrderType.IOC))
    )
    assert placed.status == "success", placed
    digest = placed.data.digest
    info = client.get_subaccount_info(sender(32))
    balances = {b.product_id: int(b.balance.amount) for b in info.perp_balances}
    assert balances[ETH] == 5 * E18 // 1000

    indexer = IndexerClient(IndexerClientOpts(url=f"{base}/archive/v1"))
    [hist] = indexer.get_historical_orders_by_digest([digest]).orders
    assert (hist.digest, hist.product_id, hist.subaccount) == (digest, ETH, sender(32))
    assert (int(hist.amount), int(hist.base_filled)) == (8 * E18 // 1000, 5 * E18 // 1000)
    assert int(hist.quote_filled) == -int(price * 5 * E18 / 1000)
    matches = indexer.get_matches(IndexerMatchesParams(subaccounts=[sender(32)])).matches
    assert [(m.digest, int(m.base_filled)) for m in matches] == [(digest, 5 * E18 // 1000)]
    by_sub = indexer.get_subaccount_historical_orders(
        IndexerSubaccountHistoricalOrdersParams(subaccounts=[sender(32)], product_ids=[ETH])
    )
    assert [o.digest for o in by_sub.orders] == [digest]

    trades = indexer.get_historical_trades("ETH-PERP_USDT0", 10)
    assert trades[0]["price"] == float(price)
    assert trades[0]["trade_type"] == "buy"
    assert "ETH-PERP_USDT0" in indexer.get_tickers()
    assert indexer.get_perp_contracts_info()["ETH-PERP_USDT0"]["funding_rate"] == 0.0


def test_place_post_only_then_cancel(base: str) -> None:
    client = engine(base, 33)
    bid, _ = Maker(base, key(33)).bbo(ETH)
    low = bid - 30 * TICK[ETH]
    placed = client.place_order(
        PlaceOrderParams(product_id=ETH, order=order(33, low, "0.01", OrderType.POST_ONLY))
    )
    assert placed.status == "success", placed
    digest = placed.data.digest
    opened = client.get_subaccount_open_orders(ETH, sender(33)).orders
    assert [o.digest for o in opened] == [digest]
    size = client.get_max_order_size(
        QueryMaxOrderSizeParams(
            sender=sender(33),
            product_id=ETH,
            price_x18=str(int(low * E18)),
            direction=MaxOrderSizeDirection.SHORT,
            reduce_only=True,
        )
    )
    assert size.max_order_size == "0"  # flat: nothing to reduce
    cancelled = client.cancel_orders(
        CancelOrdersParams(sender=sender(33), productIds=[ETH], digests=[digest])
    )
    assert cancelled.status == "success", cancelled
    assert [o.digest for o in cancelled.data.cancelled_orders] == [digest]
    assert client.get_subaccount_open_orders(ETH, sender(33)).orders == []


def test_trigger_client_lists_nothing(base: str) -> None:
    eng = engine(base, 34)
    trigger = TriggerClient(TriggerClientOpts(url=f"{base}/trigger/v1", signer=key(34)))
    trigger.endpoint_addr, trigger.chain_id = eng.endpoint_addr, eng.chain_id
    recv = int(time.time() * 1000) + 5_000
    params = ListTriggerOrdersParams(tx=ListTriggerOrdersTx(sender=sender(34), recvTime=recv))
    # `TriggerClient.list_trigger_orders` itself fails in SDK 2.0.0 before sending
    # (ListTriggerOrdersRequest.model_validate of a Params instance); the same steps:
    params.signature = trigger._sign(NadoTxType.LIST_TRIGGER_ORDERS, params.tx.dict())
    answer = trigger.query(ListTriggerOrdersRequest.model_validate(params.model_dump()).dict())
    assert answer.status == "success"
    assert answer.data.orders == []


def test_subscribe_streams_and_ws_execute(base: str) -> None:
    client = engine(base, 35)
    # A short close timeout: the websockets sync client waits out its close timeout
    # (10 s) when pushed frames are still unread at close.
    sub = NadoSubscriptionClient(f"{base}/v1").connect(close_timeout=0.5)
    try:
        _subscribe_and_trade(base, client, sub)
    finally:
        sub.close()


def _subscribe_and_trade(base: str, client: EngineClient, sub: NadoSubscriptionClient) -> None:
    for stream in (
        TradeStream(product_id=ETH),
        BookDepthStream(product_id=ETH),
        FillStream(subaccount=sender(35), product_id=ETH),
        AllBboStream(),
        FundingRateStream(),
    ):
        ack = sub.subscribe(stream)
        assert ack.get("error") is None, ack
    chain: list[dict[str, Any]] = []

    def depth(f: dict[str, Any]) -> bool:
        if f.get("type") == "book_depth":
            chain.append(f)
            return True
        return False

    book = recv_until(sub, depth)
    assert book["product_id"] == ETH
    assert book["bids"]
    assert book["asks"]
    price = resting_maker(base, 36)
    level = [str(int(price * E18)), str(5 * E18 // 1000)]
    recv_until(sub, lambda f: depth(f) and level in f["asks"])
    for prev, event in itertools.pairwise(chain):  # no gap in the chain
        assert event["last_max_timestamp"] == prev["max_timestamp"]
        assert int(event["max_timestamp"]) > int(prev["max_timestamp"])

    # The taker's IOC goes over the gateway WebSocket (`/v1/ws`), not REST.
    params = PlaceOrderParams(product_id=ETH, order=order(35, price, "0.008", OrderType.IOC))
    params.order = client.prepare_execute_params(params.order, True)
    params.signature = client._sign(NadoExecuteType.PLACE_ORDER, params.order.dict(), ETH)
    with NadoWebSocketClient(f"{base}/v1") as gw:
        assert isinstance(gw, NadoWebSocketClient)
        assert gw.query(QueryStatusParams())["data"] == "active"
        reply = gw.execute(params)
        assert reply["status"] == "success", reply
    # /ws/v2 answers the same messages, echoing the request id.
    with connect(f"{base.replace('http', 'ws', 1)}/ws/v2") as v2:
        v2.send(json.dumps({**query_message(QueryStatusParams()), "id": 7}))
        answer = json.loads(v2.recv(timeout=WAIT_S))
        assert (answer["data"], answer["id"]) == ("active", 7)

    wanted = {"fill", "trade", "all_bbo", "funding_rate"}
    first: dict[str, dict[str, Any]] = {}

    def collect(f: dict[str, Any]) -> bool:
        if f.get("type") in wanted:
            first.setdefault(f["type"], f)
        return set(first) == wanted

    recv_until(sub, collect)  # in whatever order they come
    assert first["fill"]["filled_qty"] == str(5 * E18 // 1000)
    trade = first["trade"]
    assert (trade["price"], trade["is_taker_buyer"]) == (str(int(price * E18)), True)
    assert trade["taker_qty"] == str(5 * E18 // 1000)
    assert set(first["all_bbo"]["bbos"]) == {"4", "8"}
    assert first["funding_rate"]["product_id"] in (4, 8)
