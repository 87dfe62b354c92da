"""The paper matcher: the simulator's exchange core over a live book. Takers walk the
book's levels at the venue's published fee rates; resting orders fill on trade-through
or when public trades work off the queue ahead of them; nothing moves without the
venue's market data."""

from __future__ import annotations

from decimal import Decimal

from adapters.paper.book import LiveBook
from adapters.paper.book import Snapshot
from adapters.paper.exchange import PaperExchange
from adapters.sim.products import CATALOGUE
from adapters.sim.records import FillRecord
from adapters.sim.records import OrderRequest

D = Decimal
ETH = 4
SUB = "0x" + "ab" * 32
MAKER, TAKER = D("-0.0001"), D("0.0003")  # a rebate and a taker rate unlike the sim's


def rig() -> tuple[PaperExchange, LiveBook]:
    spec = CATALOGUE["ETH-PERP"]
    book = LiveBook(spec)
    book.seed(
        Snapshot(
            bids=[(D("2999.9"), D("1")), (D("2999.8"), D("2"))],
            asks=[(D("3000.0"), D("0.5")), (D("3000.1"), D("3"))],
            ts_ns=0,
        ),
        now_ns=0,
    )
    return PaperExchange([spec], {ETH: book}, {ETH: (MAKER, TAKER)}, seed=1), book


def order(side: str, qty: str, price: str, kind: str = "ioc", n: int = 1) -> OrderRequest:
    return OrderRequest(
        subaccount=SUB,
        product_id=ETH,
        side=side,  # type: ignore[arg-type]
        qty=D(qty),
        price=D(price),
        order_type=kind,  # type: ignore[arg-type]
        nonce=n,
        client_id=f"o{n}",
    )


def fills(ex: PaperExchange) -> list[tuple[Decimal, Decimal, bool, Decimal]]:
    return [(r.price, r.qty, r.is_taker, r.fee) for r in ex.drain() if isinstance(r, FillRecord)]


def test_a_taker_walks_the_live_book_at_the_published_taker_rate():
    ex, book = rig()
    assert ex.place(1, order("buy", "2", "3000.1")).ok
    # 0.5 at 3000.0 (first match: fee on at least min_size notional), then 1.5 at 3000.1
    assert fills(ex) == [
        (D("3000.0"), D("0.5"), True, D("1500.0") * TAKER),
        (D("3000.1"), D("1.5"), True, D("4500.15") * TAKER),
    ]
    assert ex.position(SUB, ETH).qty == D(2)
    # what it ate stays eaten until the venue restates the level
    assert book.available("ask", 2) == [(D("3000.1"), D("1.5"))]
    assert ex.place(2, order("buy", "2", "3000.1", n=2)).ok
    assert [f[1] for f in fills(ex)] == [D("1.5")]


def test_an_ioc_beyond_the_book_expires_with_what_it_got():
    ex, _ = rig()
    ex.place(1, order("sell", "5", "2999.8"))
    assert [f[:2] for f in fills(ex)] == [(D("2999.9"), D(1)), (D("2999.8"), D(2))]
    assert ex.position(SUB, ETH).qty == D(-3)
    assert ex.open_orders(SUB) == []


def test_post_only_that_would_cross_is_refused():
    ex, _ = rig()
    result = ex.place(1, order("buy", "1", "3000.0", kind="post_only"))
    assert result.code == 2008


def test_a_resting_order_waits_for_its_queue_then_fills_at_its_price():
    ex, _ = rig()
    assert ex.place(1, order("buy", "1", "2999.9", kind="post_only")).ok
    digest = ex.open_orders(SUB)[0].digest
    assert ex.queue_ahead[digest] == D(1)  # the venue showed 1 at our price
    ex.trade(ETH, D("2999.9"), D("0.6"), taker_buy=False, now_ns=2)
    assert fills(ex) == []  # ahead of us
    ex.trade(ETH, D("2999.9"), D("0.6"), taker_buy=True, now_ns=3)
    assert fills(ex) == []  # a buyer does not trade with a resting buy
    ex.trade(ETH, D("2999.9"), D("1.0"), taker_buy=False, now_ns=4)
    assert fills(ex) == [(D("2999.9"), D("0.6"), False, D("0.6") * D("2999.9") * MAKER)]
    ex.trade(ETH, D("2999.7"), D("0.1"), taker_buy=False, now_ns=5)  # traded through
    assert fills(ex) == [(D("2999.9"), D("0.4"), False, D("0.4") * D("2999.9") * MAKER)]
    assert ex.open_orders(SUB) == []
    assert digest not in ex.queue_ahead


def test_cancels_ahead_move_the_queue_up():
    ex, book = rig()
    ex.place(1, order("buy", "1", "2999.9", kind="post_only"))
    digest = ex.open_orders(SUB)[0].digest
    book.confirm_top(D("2999.9"), D("0.2"), D("3000.0"), D("0.5"), ts_ns=10, now_ns=10)
    ex.book_changed(ETH, 10)
    assert ex.queue_ahead[digest] == D("0.2")


def test_a_book_that_crosses_a_resting_order_fills_it():
    ex, book = rig()
    ex.place(1, order("sell", "0.5", "3000.5", kind="post_only"))
    ex.book_changed(ETH, 5)
    assert fills(ex) == []
    book.confirm_top(D("3000.6"), D("2"), D("3000.7"), D("1"), ts_ns=20, now_ns=20)
    ex.book_changed(ETH, 20)
    assert fills(ex) == [(D("3000.5"), D("0.5"), False, D("0.5") * D("3000.5") * MAKER)]
    assert ex.mid(ETH) == D("3000.65")


def test_nothing_moves_without_market_data():
    ex, _ = rig()
    ex.place(1, order("buy", "1", "2999.5", kind="default"))
    ex.advance_to(3_600 * 10**9)  # an hour with no market data
    assert fills(ex) == []
    assert ex.mid(ETH) == D("2999.95")
    assert len(ex.open_orders(SUB)) == 1
