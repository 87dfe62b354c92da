"""The paper book: Nado's `book_depth` / `market_liquidity` / `trade` frames decoded,
the `last_max_timestamp` chain (nado-protocol.md §7.5), and LiveBook's levels, quotes
and paper consumption. Frames are written in the wire shape of §7.5 (x18 strings, ns)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from adapters.nado.mapping import StreamReply
from adapters.nado.wire import MalformedFrame
from adapters.paper.book import DepthChain
from adapters.paper.book import DepthEvent
from adapters.paper.book import LiveBook
from adapters.paper.book import Snapshot
from adapters.paper.book import parse_liquidity
from adapters.paper.source import decode_public
from adapters.paper.source import parse_fee_rates
from adapters.sim.products import CATALOGUE
from engine.core.events import BboUpdated

D = Decimal
E18 = 10**18


def x18(v: str) -> str:
    return str(int(D(v) * E18))


def depth_frame(max_ts: int, last_max: int, bids=(), asks=(), pid: int = 4) -> str:
    return json.dumps(
        {
            "type": "book_depth",
            "product_id": pid,
            "min_timestamp": str(max_ts - 5),
            "max_timestamp": str(max_ts),
            "last_max_timestamp": str(last_max),
            "bids": [[x18(p), x18(q)] for p, q in bids],
            "asks": [[x18(p), x18(q)] for p, q in asks],
        }
    )


def ev(max_ts: int, last_max: int, bids=(), asks=()) -> DepthEvent:
    frame = decode_public(depth_frame(max_ts, last_max, bids, asks))
    assert isinstance(frame, DepthEvent)
    return frame


def test_book_depth_frame_decodes_to_absolute_levels():
    frame = decode_public(
        depth_frame(
            1_767_200_000_000_000_100,
            1_767_200_000_000_000_000,
            [("3000.1", "2.5")],
            [("3000.2", "0")],
        )
    )
    assert frame == DepthEvent(
        product_id=4,
        min_ts=1_767_200_000_000_000_095,
        max_ts=1_767_200_000_000_000_100,
        last_max_ts=1_767_200_000_000_000_000,
        bids=[(D("3000.1"), D("2.5"))],
        asks=[(D("3000.2"), D(0))],
    )


def test_other_frames_still_go_to_the_adapter_decoder():
    assert isinstance(decode_public('{"result": null, "id": 3}'), StreamReply)
    bbo = decode_public(
        json.dumps(
            {
                "type": "best_bid_offer",
                "timestamp": "1767200000123456789",
                "product_id": 4,
                "bid_price": x18("2999.9"),
                "bid_qty": x18("1"),
                "ask_price": x18("3000"),
                "ask_qty": x18("2"),
            }
        )
    )
    assert isinstance(bbo, BboUpdated)
    assert bbo.ask == D(3000)


@pytest.mark.parametrize(
    "bad",
    [
        {"bids": [["1"]]},
        {"bids": [["-1", "1"]]},
        {"asks": [["1", "-1"]]},
        {"max_timestamp": "1", "min_timestamp": "2"},
        {"last_max_timestamp": None},
    ],
    ids=["short-level", "negative-price", "negative-qty", "max-before-min", "no-chain"],
)
def test_malformed_depth_frames_are_refused(bad):
    frame = json.loads(depth_frame(100, 90))
    frame.update(bad)
    with pytest.raises(MalformedFrame):
        decode_public(json.dumps(frame))


def test_trade_frame():
    frame = decode_public(
        json.dumps(
            {
                "type": "trade",
                "timestamp": "1767200000000000001",
                "product_id": 8,
                "price": x18("150.01"),
                "taker_qty": x18("-3"),
                "maker_qty": x18("3"),
                "is_taker_buyer": False,
            }
        )
    )
    assert (frame.product_id, frame.price, frame.qty, frame.taker_buy) == (
        8,
        D("150.01"),
        D(3),
        False,
    )


def test_chain_waits_for_the_snapshot_then_skips_what_it_holds():
    chain = DepthChain()
    assert chain.offer(ev(100, 90)) == "wait"
    assert chain.offer(ev(110, 100)) == "wait"
    assert chain.offer(ev(120, 110)) == "wait"
    # the snapshot is stamped 105: event 100 is in it, 110 and 120 go on top, in order
    applied = chain.seeded(105)
    assert [e.max_ts for e in applied] == [110, 120]
    assert chain.offer(ev(130, 120)) == "apply"
    assert chain.synced


def test_chain_gap_drops_the_book_until_a_new_snapshot():
    chain = DepthChain()
    chain.seeded(50)
    assert chain.offer(ev(60, 40)) == "apply"  # the first after a snapshot cannot be chained
    assert chain.offer(ev(70, 60)) == "apply"
    assert chain.offer(ev(70, 60)) == "skip"  # a duplicate
    assert chain.offer(ev(90, 80)) == "gap"  # the event ending at 80 never came
    assert not chain.synced
    assert chain.gaps == 1
    assert chain.offer(ev(100, 90)) == "wait"
    assert [e.max_ts for e in chain.seeded(95)] == [100]


def test_waiting_events_that_do_not_chain_need_another_snapshot():
    chain = DepthChain()
    chain.offer(ev(110, 100))
    chain.offer(ev(130, 120))  # 120 lost while waiting
    assert chain.seeded(105) == []
    assert not chain.synced


def book() -> LiveBook:
    b = LiveBook(CATALOGUE["ETH-PERP"])
    b.seed(
        Snapshot(
            bids=[(D("2999.9"), D("1")), (D("2999.8"), D("2"))],
            asks=[(D("3000.0"), D("0.5")), (D("3000.1"), D("3"))],
            ts_ns=1000,
        ),
        now_ns=0,
    )
    return b


def test_live_book_levels_updates_and_quotes():
    b = book()
    assert b.best("ask", 0) == (D("3000.0"), D("0.5"))
    assert b.live_mid() == D("2999.95")
    b.apply(ev(1100, 1000, bids=[("2999.9", "0")], asks=[("3000.0", "0.7")]), 1)
    assert b.best("bid", 0) == (D("2999.8"), D(2))
    assert b.level_qty("ask", D("3000.0")) == D("0.7")
    # a quote: nothing rests better than it, its sizes are the top levels'
    b.confirm_top(D("2999.95"), D("4"), D("3000.1"), D("1"), ts_ns=1200, now_ns=2)
    assert b.available("ask", 0) == [(D("3000.1"), D(1))]
    assert b.best("bid", 0) == (D("2999.95"), D(4))
    # an older quote changes nothing
    b.confirm_top(D("1"), D("1"), D("9999"), D("1"), ts_ns=1100, now_ns=3)
    assert b.best("bid", 0) == (D("2999.95"), D(4))


def test_paper_takers_eat_levels_until_the_venue_restates_them():
    b = book()
    b.consume("ask", D("1.5"), 0)  # all of 3000.0 and 1 of 3000.1
    assert b.available("ask", 0) == [(D("3000.1"), D(2))]
    b.apply(ev(1100, 1000, asks=[("3000.1", "3")]), 1)  # the venue restates 3000.1
    assert b.available("ask", 0) == [(D("3000.1"), D(3))]
    b.seed(Snapshot(bids=[], asks=[(D("3000.0"), D("0.5"))], ts_ns=2000), 2)
    assert b.available("ask", 0) == [(D("3000.0"), D("0.5"))]
    assert b.live_mid() is None  # one-sided


def test_liquidity_snapshot_shape():
    snap = parse_liquidity(
        {"bids": [[x18("1"), x18("2")]], "asks": [], "timestamp": "1767200000000000000"}
    )
    assert snap == Snapshot(bids=[(D(1), D(2))], asks=[], ts_ns=1767200000000000000)
    with pytest.raises(MalformedFrame):
        parse_liquidity({"bids": [], "asks": []})


def test_fee_rates_are_read_from_symbols():
    data = {
        "symbols": {
            "ETH-PERP": {"maker_fee_rate_x18": x18("-0.0001"), "taker_fee_rate_x18": x18("0.0002")}
        }
    }
    assert parse_fee_rates(data, {"ETH-PERP": 4}) == {4: (D("-0.0001"), D("0.0002"))}
    with pytest.raises(MalformedFrame, match="no published fee rate"):
        parse_fee_rates({"symbols": {"ETH-PERP": {}}}, {"ETH-PERP": 4})
    with pytest.raises(MalformedFrame, match="not a fee rate"):
        parse_fee_rates(
            {
                "symbols": {
                    "ETH-PERP": {"maker_fee_rate_x18": x18("0.5"), "taker_fee_rate_x18": "0"}
                }
            },
            {"ETH-PERP": 4},
        )
