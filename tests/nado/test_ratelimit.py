"""Rate limiter on virtual time: window limits, priority lane, read shedding, 429 backoff."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from adapters.nado.ratelimit import LimiterConfig
from adapters.nado.ratelimit import Priority
from adapters.nado.ratelimit import RateLimiter
from adapters.nado.ratelimit import Shed
from adapters.nado.ratelimit import Window
from adapters.nado.ratelimit import execute_weight
from adapters.nado.ratelimit import priority_for
from adapters.nado.ratelimit import query_weight
from engine.core.clock import VirtualClock
from engine.core.intents import CancelOrder
from engine.core.intents import CancelProductOrders
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOpenOrders
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions

S = 1_000_000_000
MS = 1_000_000
RISK, NORMAL, READ = Priority.RISK, Priority.NORMAL, Priority.READ


def limiter(clock=None, seed=1, **cfg):
    clock = clock or VirtualClock()
    return RateLimiter(clock, random.Random(seed), LimiterConfig(**cfg)), clock


def test_defaults_are_nado_limits_at_90_percent():
    rl, _ = limiter()
    assert rl.available("execute") == 90  # 100/10 s x 0.9
    assert rl.available("query") == 360  # 400/10 s x 0.9


def test_execute_short_window_blocks_then_refills_exactly():
    rl, clock = limiter()
    tickets = [rl.request("execute", 1, RISK) for _ in range(91)]
    assert [t.state for t in tickets[:90]] == ["granted"] * 90
    assert tickets[90].state == "waiting"
    assert rl.pump() == 10 * S  # the first token comes back one window after it was spent
    clock.advance(10 * S - 1)
    rl.pump()
    assert tickets[90].state == "waiting"
    clock.advance(1)
    assert rl.pump() is None
    assert tickets[90].granted_ns == 10 * S


def test_long_window_caps_sustained_rate():
    rl, clock = limiter()
    granted = 0
    for _ in range(60):  # one request offered every 100 ms for... many minutes of demand
        for _ in range(20):
            t = rl.request("execute", 1, RISK)
            granted += t.granted
            if not t.granted:
                rl.cancel(t)
        clock.advance(S)
    assert granted <= 540 + 90  # 600/min x 0.9, plus what the last window can see


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3 * S), st.integers(1, 20), st.sampled_from([0, 1])),
        min_size=1,
        max_size=150,
    )
)
def test_no_sliding_window_ever_exceeds_its_limit(arrivals):
    rl, clock = limiter()
    log: list[tuple[int, int]] = []
    pending = []
    for gap, weight, prio in arrivals:
        clock.advance(gap)
        pending.append(rl.request("execute", weight, Priority(prio)))
        rl.pump()
    while (wake := rl.pump()) is not None:
        clock.advance_to(wake)
    for t in pending:
        assert t.state == "granted"
        log.append((t.granted_ns, t.weight))
    for limit, window in ((90, 10 * S), (540, 60 * S)):
        for start, _ in log:
            used = sum(w for ts, w in log if start <= ts < start + window)
            assert used <= limit


def test_risk_lane_goes_first_and_order_is_fifo_within_a_lane():
    rl, clock = limiter()
    for _ in range(81):  # NORMAL may fill up to its floor: 90 - 9
        assert rl.request("execute", 1, NORMAL).granted
    a = rl.request("execute", 1, NORMAL)
    assert a.state == "waiting"  # the last 10 % is reserved
    b = rl.request("execute", 5, RISK)
    assert b.granted  # the risk lane may use the reserve
    for _ in range(4):
        assert rl.request("execute", 1, RISK).granted
    c = rl.request("execute", 1, NORMAL)
    d = rl.request("execute", 1, RISK)  # budget exhausted: waits, but ahead of a and c
    assert (a.state, c.state, d.state) == ("waiting", "waiting", "waiting")
    assert rl.waiting("execute") == [d, a, c]
    clock.advance_to(rl.pump())
    rl.pump()
    assert sorted((a, c, d), key=lambda t: t.grant_no) == [d, a, c]


def test_strict_priority_a_blocked_risk_head_holds_back_normal():
    rl, clock = limiter()
    for _ in range(80):
        rl.request("execute", 1, NORMAL)
    big = rl.request("execute", 11, RISK)  # 10 left: must wait for the window
    small = rl.request("execute", 1, NORMAL)  # would fit, but may not overtake the risk head
    assert (big.state, small.state) == ("waiting", "waiting")
    clock.advance_to(rl.pump())
    rl.pump()
    assert big.granted
    assert small.granted_ns is None or small.granted_ns >= big.granted_ns


def test_reads_are_shed_first():
    rl, _ = limiter()
    assert rl.request("query", 1, READ).granted
    for _ in range(251):  # 360 budget; reads need 30 % (108) left after the grant
        rl.request("query", 1, NORMAL)
    assert rl.request("query", 1, READ).state == "shed"
    assert rl.request("query", 1, NORMAL).granted
    assert rl.stats["shed.query"] == 1
    # executes are a separate (wallet) budget
    assert rl.request("execute", 1, READ).granted


def test_reads_shed_while_others_wait_or_budget_paused():
    rl, _ = limiter()
    rl.note_rate_limited("query", Decimal(2))
    assert rl.request("query", 1, READ).state == "shed"
    waiting = rl.request("query", 1, NORMAL)
    assert waiting.state == "waiting"
    rl2, _ = limiter()
    rl2.request("query", 300, RISK)
    rl2.request("query", 60, NORMAL)  # waits for the reserve
    assert rl2.request("query", 1, READ).state == "shed"


def test_429_pauses_with_retry_after_and_growing_jittered_backoff():
    rl, clock = limiter(seed=7)
    first = rl.note_rate_limited("execute", Decimal(5))
    assert first == 5 * S  # Retry-After beats the 0.5 s first backoff
    clock.advance_to(first)
    pauses = []
    for _ in range(8):
        start = clock.now_ns()
        pauses.append(rl.note_rate_limited("execute") - start)
        clock.advance_to(rl.paused_until("execute"))
    # equal jitter: each pause is in [backoff/2, backoff), backoff doubling up to 30 s
    for n, pause in enumerate(pauses, start=2):
        backoff = min(30 * S, (S // 2) << (n - 1))
        assert backoff // 2 <= pause < backoff
    rl.note_success("execute")
    start = clock.now_ns()
    assert rl.note_rate_limited("execute") - start < S // 2
    # same seed, same schedule
    rl_b, clock_b = limiter(seed=7)
    clock_b.advance_to(rl_b.note_rate_limited("execute", Decimal(5)))
    start_b = clock_b.now_ns()
    assert rl_b.note_rate_limited("execute") - start_b == pauses[0]


def test_a_30s_429_window_causes_no_storm_and_risk_goes_first_after():
    rl, clock = limiter(seed=3)
    # one NORMAL and one RISK caller re-request as soon as their previous one was sent
    live = {RISK: rl.request("execute", 1, RISK), NORMAL: rl.request("execute", 1, NORMAL)}
    sent = []  # (grant_no, time, priority)
    while clock.now_ns() < 120 * S:
        for prio, ticket in sorted(live.items(), key=lambda kv: kv[1].grant_no or 1 << 62):
            if ticket.granted:
                sent.append((ticket.grant_no, clock.now_ns(), prio))
                if clock.now_ns() < 30 * S:  # the venue answers 429 for 30 s
                    rl.note_rate_limited("execute", Decimal(1))
                else:
                    rl.note_success("execute")
                live[prio] = rl.request("execute", 1, prio)
        wake = rl.pump()
        if wake is not None:
            clock.advance_to(max(wake, clock.now_ns()))
            rl.pump()
    during = [s for s in sent if s[1] < 30 * S]
    assert 3 <= len(during) <= 20  # a request per backoff step, not a storm
    assert rl.stats["rate_limited.execute"] == len(during)
    after = sorted(s for s in sent if s[1] >= 30 * S)
    assert after[0][2] is RISK  # when tokens return, the risk lane is served first
    times = [t for _, t, _ in sent]
    for limit, window in ((90, 10 * S), (540, 60 * S)):  # then the budget itself holds
        assert max(sum(1 for u in times if t <= u < t + window) for t in times) <= limit


def test_impossible_requests_are_refused_up_front():
    rl, _ = limiter()
    with pytest.raises(ValueError, match="never fit"):
        rl.request("execute", 91, RISK)
    with pytest.raises(ValueError, match="never fit"):
        rl.request("execute", 82, NORMAL)
    with pytest.raises(ValueError, match="never fit"):
        rl.request("execute", 0, RISK)
    with pytest.raises(ValueError, match="unknown budget"):
        rl.request("archive", 1, RISK)


def test_custom_windows():
    rl, _ = limiter(windows={"execute": (Window(2, S),)}, safety=Decimal(1))
    assert rl.request("execute", 2, RISK).granted
    assert rl.request("execute", 1, RISK).state == "waiting"


@pytest.mark.parametrize(
    ("args", "kwargs", "weight"),
    [
        (("market_price",), {}, 1),
        (("order",), {}, 1),
        (("contracts",), {}, 1),
        (("symbols",), {}, 2),
        (("subaccount_info",), {}, 2),
        (("subaccount_info",), {"txns": True}, 10),
        (("subaccount_info",), {"pre_state": True}, 15),
        (("subaccount_orders",), {}, 2),
        (("orders",), {"n_products": 2}, 4),
        (("market_prices",), {"n_products": 2}, 2),
        (("all_products",), {}, 5),
        (("isolated_positions",), {}, 10),
        (("something_new",), {}, 10),
    ],
)
def test_query_weights(args, kwargs, weight):
    assert query_weight(*args, **kwargs) == weight


def test_execute_weights():
    assert execute_weight("place_order") == 1
    assert execute_weight("place_order", spot_leverage=False) == 20
    assert execute_weight("cancel_orders", n_digests=3) == 3
    assert execute_weight("cancel_orders") == 1
    assert execute_weight("cancel_product_orders", n_products=2) == 10
    assert execute_weight("cancel_product_orders") == 50
    assert execute_weight("cancel_and_place", n_digests=1) == 2
    with pytest.raises(ValueError, match="unknown"):
        execute_weight("withdraw")


def test_priority_for_intents():
    place = {"order_id": "o", "product_id": 4, "side": "buy", "qty": 1, "price": 1, "tif": "ioc"}
    assert priority_for(PlaceOrder(**place)) is NORMAL
    assert priority_for(PlaceOrder(**place, reduce_only=True)) is RISK
    assert priority_for(CancelOrder(order_id="o", product_id=4)) is RISK
    assert priority_for(CancelProductOrders(request_id="r", product_ids=[4])) is RISK
    assert priority_for(QueryPositions(request_id="r", product_ids=[4])) is RISK
    assert priority_for(QueryOrder(request_id="r", order_id="o", product_id=4)) is RISK
    assert priority_for(QueryOpenOrders(request_id="r", product_ids=[4])) is NORMAL


# --- asyncio face (virtual time: the injected sleep advances the clock) ---------------


def virtual(seed=1):
    clock = VirtualClock()
    sleeps = []

    async def sleep(ns):
        sleeps.append(ns)
        clock.advance(ns)
        await asyncio.sleep(0)

    return RateLimiter(clock, random.Random(seed), sleep=sleep), clock, sleeps


@pytest.mark.asyncio
async def test_acquire_waits_on_virtual_time_in_priority_order():
    rl, _clock, sleeps = virtual()
    for _ in range(90):
        await rl.acquire("execute", 1, RISK)
    order = []

    async def worker(name, prio):
        t = await rl.acquire("execute", 1, prio)
        order.append((name, t.granted_ns))

    tasks = [
        asyncio.create_task(worker(n, p)) for n, p in (("n1", NORMAL), ("n2", NORMAL), ("r1", RISK))
    ]
    await asyncio.gather(*tasks)
    assert [n for n, _ in order] == ["r1", "n1", "n2"]
    assert order[0][1] == 10 * S
    assert sleeps
    assert sum(sleeps) <= 10 * S + S
    await rl.close()


@pytest.mark.asyncio
async def test_acquire_read_is_shed_not_queued():
    rl, _, _ = virtual()
    rl.note_rate_limited("query")
    with pytest.raises(Shed):
        await rl.acquire("query", 1, READ)
    await rl.close()


@pytest.mark.asyncio
async def test_cancelling_a_waiter_withdraws_it():
    rl, _clock, _ = virtual()
    for _ in range(90):
        rl.request("execute", 1, RISK)

    async def never_granted():
        await rl.acquire("execute", 1, NORMAL)

    task = asyncio.create_task(never_granted())
    await asyncio.sleep(0)
    assert len(rl.waiting("execute")) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rl.waiting("execute") == []
    await rl.close()


@pytest.mark.asyncio
async def test_close_refuses_waiters_and_leaves_no_task():
    clock = VirtualClock()
    gate = asyncio.Event()

    async def blocked_sleep(ns):
        await gate.wait()  # time never moves: the waiter can only end by close()

    rl = RateLimiter(clock, random.Random(1), sleep=blocked_sleep)
    for _ in range(90):
        rl.request("execute", 1, RISK)
    task = asyncio.create_task(rl.acquire("execute", 1, RISK))
    await asyncio.sleep(0)
    await rl.close()
    with pytest.raises(Shed, match="cancelled"):
        await task
    assert rl._pumper is None
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == []


@pytest.mark.asyncio
async def test_pause_after_429_then_risk_first_async():
    rl, clock, _ = virtual(seed=5)
    rl.note_rate_limited("execute", Decimal(30))
    order = []

    async def worker(name, prio):
        await rl.acquire("execute", 1, prio)
        order.append((name, clock.now_ns()))

    tasks = [asyncio.create_task(worker("normal", NORMAL))]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(worker("risk", RISK)))
    await asyncio.gather(*tasks)
    assert [n for n, _ in order] == ["risk", "normal"]
    assert order[0][1] == 30 * S
    await rl.close()
