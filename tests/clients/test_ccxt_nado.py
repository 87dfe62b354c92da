"""ccxt's `nado` and `pro.nado`, unchanged but for their URLs, against `dnpair venue serve`.

One server for the module (still prices, no crowd flow, a 20 bps spread); each test owns
a fresh key, hence its own subaccount. A partial fill is made deterministic by resting
a maker order strictly inside the spread and sending a larger IOC at that price: it
fills exactly the maker's size. ccxt's own orders carry its default builder-fee appendix
bits, which the sim accepts (and charges); `watch_orders` reads an order's filled amount
from `filled_qty` on `order_update`, which the sim sends as in ccxt's real sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import ccxt
import ccxt.pro
import pytest

from tests.clients.support import ETH
from tests.clients.support import TICK
from tests.clients.support import WAIT_S
from tests.clients.support import Maker
from tests.clients.support import address
from tests.clients.support import ccxt_urls
from tests.clients.support import inside
from tests.clients.support import key
from tests.clients.support import venue_serve

ETH_SYM = "ETH/USDT0:USDT0"
SOL_SYM = "SOL/USDT0:USDT0"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with venue_serve(tmp_path_factory.mktemp("ccxt")) as url:
        yield url


def rest(base: str, n: int) -> Any:
    pk = key(n)
    ex = ccxt.nado({"walletAddress": address(pk), "privateKey": pk, "timeout": 10_000})
    ex.urls["api"] = ccxt_urls(base)
    return ex


@asynccontextmanager
async def pro(base: str, n: int) -> AsyncIterator[Any]:
    pk = key(n)
    ex = ccxt.pro.nado({"walletAddress": address(pk), "privateKey": pk, "timeout": 10_000})
    ex.urls["api"] = ccxt_urls(base)
    try:
        yield ex
    finally:
        await ex.close()


def partial_setup(base: str, maker_n: int, qty: str = "0.005") -> tuple[Maker, Decimal]:
    """A maker sell of `qty` ETH resting strictly inside the spread; returns its price."""
    maker = Maker(base, key(maker_n))
    bid, ask = maker.bbo(ETH)
    price = inside(bid, ask, TICK[ETH])
    maker.place(ETH, "sell", qty, price, "post_only")
    return maker, price


async def until(watch: Callable[[], Any], done: Callable[[Any], bool], first: Any = None) -> Any:
    """`first` (a result already in hand), then a ccxt watcher's results, until one
    satisfies `done` (bounded)."""

    async def loop() -> Any:
        result = first
        while result is None or not done(result):
            result = await watch()
        return result

    return await asyncio.wait_for(loop(), WAIT_S)


async def subscribed(ex: Any, hashes: list[str]) -> None:
    """Wait (bounded) until ccxt holds these subscriptions and has no subscribe or
    authenticate request still unacknowledged. ccxt keeps no event for an ack, so this
    polls its bookkeeping."""
    client = ex.client(ex.urls["api"]["ws"]["subscriptions"])
    pending = ("subscription:", "authentication:")

    def ready() -> bool:
        keys = [k for k in client.subscriptions if isinstance(k, str)]
        return all(h in keys for h in hashes) and not any(k.startswith(pending) for k in keys)

    async def loop() -> None:
        while not ready():  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), WAIT_S)


# -- public REST --------------------------------------------------------------------------


def test_load_markets(base: str) -> None:
    markets = rest(base, 1).load_markets()
    assert set(markets) == {ETH_SYM, SOL_SYM}
    eth = markets[ETH_SYM]
    assert (eth["id"], eth["type"], eth["swap"], eth["linear"]) == ("4", "swap", True, True)
    assert (eth["base"], eth["quote"], eth["settle"]) == ("ETH", "USDT0", "USDT0")
    assert eth["precision"] == {"amount": 0.001, "price": 0.1}
    assert eth["limits"]["cost"]["min"] == 10.0
    assert (eth["maker"], eth["taker"]) == (0.0001, 0.00035)  # as in ccxt's own nado.json
    assert eth["active"] is True
    assert eth["info"]["ticker_id"] == "ETH-PERP_USDT0"


def test_fetch_order_book_matches_the_engine_bbo(base: str) -> None:
    ex = rest(base, 2)
    book = ex.fetch_order_book(ETH_SYM, 5)
    bids, asks = book["bids"], book["asks"]
    assert 0 < len(bids) <= 5
    assert 0 < len(asks) <= 5
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
    assert [p for p, _ in asks] == sorted(p for p, _ in asks)
    bid, ask = Maker(base, key(2)).bbo(ETH)
    assert (Decimal(str(bids[0][0])), Decimal(str(asks[0][0]))) == (bid, ask)
    assert abs(book["timestamp"] - time.time() * 1000) < 60_000


def test_time_status_tickers_and_funding(base: str) -> None:
    ex = rest(base, 3)
    assert abs(ex.fetch_time() - time.time() * 1000) < 60_000
    assert ex.fetch_status()["status"] == "ok"
    tickers = ex.fetch_tickers()
    assert set(tickers) == {ETH_SYM, SOL_SYM}
    assert tickers[ETH_SYM]["last"] > 0
    assert ex.fetch_funding_rate(ETH_SYM)["fundingRate"] == 0.0
    assert ex.fetch_funding_history(ETH_SYM) == []  # the sim charges no funding


def test_bad_orderbook_requests_are_refused(base: str) -> None:
    ex = rest(base, 4)
    ex.load_markets()
    with pytest.raises(ccxt.InvalidOrder):  # code 2000; nothing is computed
        ex.fetch_order_book(ETH_SYM, 10_000)


# -- private REST reads after trades made by another client ---------------------------------


def test_positions_trades_open_and_closed_orders(base: str) -> None:
    _, price = partial_setup(base, 10)
    taker = Maker(base, key(11))
    partial = taker.place(ETH, "buy", "0.008", price, "ioc")["data"]["digest"]
    partial_setup(base, 10, "0.004")
    full = taker.place(ETH, "buy", "0.004", price, "ioc")["data"]["digest"]
    resting = taker.place(ETH, "buy", "0.01", price - 50 * TICK[ETH], "post_only")
    resting_digest = resting["data"]["digest"]

    ex = rest(base, 11)
    positions = ex.fetch_positions()
    assert [(p["symbol"], p["side"], p["contracts"]) for p in positions] == [
        (ETH_SYM, "long", 0.009)
    ]
    assert Decimal(str(positions[0]["entryPrice"])) == price

    trades = ex.fetch_my_trades(ETH_SYM)
    got = sorted((t["order"], t["amount"], t["side"], t["takerOrMaker"]) for t in trades)
    assert got == sorted([(partial, 0.005, "buy", "taker"), (full, 0.004, "buy", "taker")])
    assert all(Decimal(str(t["price"])) == price for t in trades)

    closed = ex.fetch_closed_orders(ETH_SYM)
    assert [(o["id"], o["status"], o["filled"]) for o in closed] == [(full, "closed", 0.004)]

    open_orders = ex.fetch_open_orders(ETH_SYM)
    assert [(o["id"], o["remaining"], o["postOnly"]) for o in open_orders] == [
        (resting_digest, 0.01, True)
    ]


# -- streams ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_watch_my_trades_and_positions_report_a_partial_ioc(base: str) -> None:
    async with pro(base, 12) as ex:
        await ex.load_markets()
        await ex.authenticate()  # once, before the watchers (each would start its own)
        trades_task = asyncio.ensure_future(ex.watch_my_trades(ETH_SYM))
        positions_task = asyncio.ensure_future(ex.watch_positions([ETH_SYM]))
        await subscribed(ex, [f"myTrades:{ETH_SYM}", f"positions:{ETH_SYM}"])
        _, price = partial_setup(base, 13)
        digest = Maker(base, key(12)).place(ETH, "buy", "0.008", price, "ioc")["data"]["digest"]
        trades = await until(
            lambda: ex.watch_my_trades(ETH_SYM),
            lambda ts: any(t["order"] == digest for t in ts),
            await asyncio.wait_for(trades_task, WAIT_S),
        )
        mine = [t for t in trades if t["order"] == digest]
        assert [(t["amount"], t["side"], t["takerOrMaker"]) for t in mine] == [
            (0.005, "buy", "taker")
        ]
        assert Decimal(str(mine[0]["price"])) == price
        positions = await until(
            lambda: ex.watch_positions([ETH_SYM]),
            lambda ps: any(p["side"] == "long" for p in ps),
            await asyncio.wait_for(positions_task, WAIT_S),
        )
        assert [(p["side"], p["contracts"]) for p in positions if p["side"] == "long"] == [
            ("long", 0.005)
        ]


@pytest.mark.asyncio
async def test_watch_orders_reports_a_partial_ioc_with_its_true_filled_amount(base: str) -> None:
    async with pro(base, 14) as ex:
        await ex.load_markets()
        await ex.authenticate()
        first = asyncio.ensure_future(ex.watch_orders(ETH_SYM))
        await subscribed(ex, [f"orders:{ETH_SYM}"])
        _, price = partial_setup(base, 15)
        digest = Maker(base, key(14)).place(ETH, "buy", "0.008", price, "ioc")["data"]["digest"]
        await asyncio.wait_for(first, WAIT_S)

        def final() -> dict[str, Any] | None:
            """ccxt merges every update of an order into one cached dict, in place."""
            for o in ex.orders or []:
                if o["id"] == digest and o["status"] != "open":
                    return dict(o)
            return None

        async def ended() -> dict[str, Any]:
            while (order := final()) is None:
                # A message may land between two calls and resolve nothing; the cache
                # still has it, so each wait is short and the loop re-reads the cache.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ex.watch_orders(ETH_SYM), 0.5)
            return order

        order = await asyncio.wait_for(ended(), WAIT_S)
        assert order["status"] == "canceled"  # the IOC's unfilled rest was cancelled
        assert order["remaining"] == 0.0
        assert order["filled"] == 0.005


@pytest.mark.asyncio
async def test_watch_order_book_follows_the_book_depth_chain(base: str) -> None:
    async with pro(base, 16) as ex:
        await ex.load_markets()
        book = await asyncio.wait_for(ex.watch_order_book(ETH_SYM), WAIT_S)
        bid, ask = book["bids"][0][0], book["asks"][0][0]
        assert bid < ask
        maker = Maker(base, key(17))
        price = inside(Decimal(str(bid)), Decimal(str(ask)), TICK[ETH])
        maker.place(ETH, "buy", "0.007", price, "post_only")
        # The next events must chain (ccxt drops the book and raises on a gap) and carry
        # the new level.
        book = await until(
            lambda: ex.watch_order_book(ETH_SYM),
            lambda b: b["bids"] and Decimal(str(b["bids"][0][0])) == price,
        )
        assert book["bids"][0][1] == 0.007


@pytest.mark.asyncio
async def test_watch_trades_and_all_bbo(base: str) -> None:
    async with pro(base, 18) as ex:
        await ex.load_markets()
        first = asyncio.ensure_future(ex.watch_trades(ETH_SYM))
        await subscribed(ex, ["subscribe:" + ex.json({"type": "trade", "product_id": ETH})])
        _, price = partial_setup(base, 19)
        Maker(base, key(18)).place(ETH, "buy", "0.008", price, "ioc")
        trades = await asyncio.wait_for(first, WAIT_S)
        assert [(t["side"], t["amount"]) for t in trades] == [("buy", 0.005)]
        assert Decimal(str(trades[0]["price"])) == price

        tickers = await until(lambda: ex.watch_bids_asks(), lambda ts: len(ts) == 2)
        assert set(tickers) == {ETH_SYM, SOL_SYM}
        assert all(0 < t["bid"] < t["ask"] for t in tickers.values())


# -- ccxt's own orders (its default appendix carries builder-fee bits) ----------------------


def test_create_order_ioc_fills_partly(base: str) -> None:
    _, price = partial_setup(base, 20)
    ex = rest(base, 21)
    ex.load_markets()
    order = ex.create_order(ETH_SYM, "limit", "buy", 0.008, float(price), {"timeInForce": "IOC"})
    assert order["id"].startswith("0x")
    trades = ex.fetch_my_trades(ETH_SYM)
    assert [(t["order"], t["amount"]) for t in trades] == [(order["id"], 0.005)]
    positions = ex.fetch_positions([ETH_SYM])
    assert [(p["side"], p["contracts"]) for p in positions] == [("long", 0.005)]


def test_create_order_post_only_rests_then_cancels(base: str) -> None:
    ex = rest(base, 22)
    ex.load_markets()
    bid, ask = Maker(base, key(22)).bbo(ETH)
    with pytest.raises(ccxt.OrderImmediatelyFillable):  # crosses: 2008
        ex.create_order(ETH_SYM, "limit", "buy", 0.01, float(ask), {"postOnly": True})
    price = float(bid - 20 * TICK[ETH])
    order = ex.create_order(ETH_SYM, "limit", "buy", 0.01, price, {"postOnly": True})
    opened = ex.fetch_open_orders(ETH_SYM)
    assert [(o["id"], o["remaining"], o["postOnly"]) for o in opened] == [(order["id"], 0.01, True)]
    cancelled = ex.cancel_order(order["id"], ETH_SYM)
    assert (cancelled["id"], cancelled["status"]) == (order["id"], "canceled")
    assert ex.fetch_open_orders(ETH_SYM) == []


@pytest.mark.asyncio
async def test_create_order_ws_over_the_v2_gateway_socket(base: str) -> None:
    bid, _ = Maker(base, key(25)).bbo(ETH)
    async with pro(base, 25) as ex:
        await ex.load_markets()
        price = float(bid - 25 * TICK[ETH])
        order = await asyncio.wait_for(
            ex.create_order_ws(ETH_SYM, "limit", "buy", 0.01, price, {"postOnly": True}), WAIT_S
        )
        assert order["id"].startswith("0x")
        opened = await ex.fetch_open_orders(ETH_SYM)
        assert [o["id"] for o in opened] == [order["id"]]


def test_create_order_reduce_only_rejects_when_flat_and_clamps_when_long(base: str) -> None:
    ex = rest(base, 23)
    ex.load_markets()
    bid, _ = Maker(base, key(23)).bbo(ETH)
    with pytest.raises(ccxt.InvalidOrder):  # a deterministic reject, not a network error
        ex.create_order(
            ETH_SYM, "limit", "sell", 0.01, float(bid), {"timeInForce": "IOC", "reduceOnly": True}
        )
    _, price = partial_setup(base, 24)
    ex.create_order(ETH_SYM, "limit", "buy", 0.005, float(price), {"timeInForce": "IOC"})
    assert [p["contracts"] for p in ex.fetch_positions([ETH_SYM])] == [0.005]
    low = float(bid - 10 * TICK[ETH])
    ex.create_order(ETH_SYM, "limit", "sell", 0.01, low, {"timeInForce": "IOC", "reduceOnly": True})
    assert ex.fetch_positions([ETH_SYM]) == []
