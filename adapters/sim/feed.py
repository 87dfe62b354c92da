"""What the venue pushes: BBO when the top of book changes (or on a timer, `[market]
bbo_push = "periodic"`), fills and venue-side cancels from the exchange's records, and
the WebSocket's connection state (forced disconnects, downtime).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from collections.abc import Sequence

from adapters.sim.channel import PushChannel
from adapters.sim.exchange import Exchange
from adapters.sim.faultplan import FaultPlan
from adapters.sim.faults import NS_PER_MS
from adapters.sim.faults import FaultProfile
from adapters.sim.mapping import crossed
from adapters.sim.mapping import push_event
from adapters.sim.mapping import skewed
from adapters.sim.mapping import top_event
from adapters.sim.matching import Top
from adapters.sim.scheduler import Scheduler
from engine.core.events import BboUpdated
from engine.core.events import ConnectionChanged
from engine.core.events import Event
from engine.core.events import FillReceived

__all__ = ["Feed"]


class Feed:
    def __init__(
        self,
        *,
        exchange: Exchange,
        profile: FaultProfile,
        plan: FaultPlan,
        subaccount: str,
        product_ids: Sequence[int],
        origin_ns: int,
        sched: Scheduler,
        emit: Callable[[Event], None],
        history_limit: int,
    ) -> None:
        self.exchange, self.profile, self.sched, self.emit = exchange, profile, sched, emit
        exchange.pushed_only = True  # `push_event` reads fills and venue-side cancels only
        self.subaccount = subaccount
        self._pids = list(product_ids)
        self._origin = origin_ns
        sim = profile.sim
        self._bbo_ns = int(sim.bbo_interval_ms * NS_PER_MS)
        self._reconnect_ns = int(sim.ws_reconnect_ms * NS_PER_MS)
        self.plan = plan
        self.channel: PushChannel[Event] = PushChannel(
            plan=plan.pushes("ws"),
            latency_ns=int(sim.push_latency_ms * NS_PER_MS),
            flush_ns=int(sim.reorder_flush_ms * NS_PER_MS),
            now=sched.now,
            schedule=sched.later,
            deliver=emit,
        )
        self.fills: deque[FillReceived] = deque(maxlen=history_limit)
        self._down, self._gap, self._up = 0, False, True
        self._next_step = self._next_bbo = origin_ns
        self._last_bbo: dict[int, BboUpdated] = {}
        self._on_change = profile.market.bbo_push == "on_change"
        self._top: dict[int, tuple[object, ...]] = {}  # the top of book last pushed
        self._looked: tuple[int, int] | None = None  # the exchange's moment last compared
        symbols = {s.product for s in profile.market.skew}
        self._skewed = {p for p in self._pids if exchange.specs[p].symbol in symbols}
        self.stats = dict.fromkeys(("disconnects", "stale_bbo", "crossed_bbo"), 0)

    def start(self) -> None:
        self.emit(ConnectionChanged(channel="ws", state="connected", detail="subscribed"))
        for w in self.plan.down_windows:
            self.sched.at(self._origin + w.start_ns, lambda: self._set_down(+1))
            self.sched.at(self._origin + w.end_ns, lambda: self._set_down(-1))
        self._schedule_disconnect()
        self.sched.later(0, self._tick)
        self._schedule_arrival()

    def _schedule_arrival(self) -> None:
        due = self.exchange.next_arrival_ns()
        if due is not None:
            self.sched.at(due, self._arrival)

    def _arrival(self) -> None:
        """A taker-flow arrival is due: run the exchange to it and push what it filled at
        once (one `fill` event per match, nado-protocol.md §9.2; the market steps
        and BBO pushes keep their own timer (`_tick`), and an arrival that filled nothing
        pushes nothing."""
        self.exchange.advance_to(self.sched.now())
        if self.exchange.has_records():
            self.flush()
        self._schedule_arrival()

    def flush(self) -> None:
        """Push what the exchange recorded for our subaccount since the last flush."""
        for rec in self.exchange.drain() if self.exchange.has_records() else ():
            if rec.subaccount != self.subaccount:
                continue
            ev = push_event(rec)
            if ev is None:
                continue
            if isinstance(ev, FillReceived):
                self.fills.append(ev)
            self.channel.push(ev)
        if self._on_change:
            self._push_changed()

    def _tick(self) -> None:
        now = self.sched.now()
        self.exchange.advance_to(now)
        self.flush()  # on_change: pushes the quotes that moved
        if not self._on_change and now >= self._next_bbo:
            for pid in self._pids:
                self._push_bbo(pid)
            while self._next_bbo <= now:
                self._next_bbo += self._bbo_ns
        while self._next_step <= now:
            self._next_step += self.exchange.step_ns
        nxt = self._next_step if self._on_change else min(self._next_step, self._next_bbo)
        self.sched.at(nxt, self._tick)

    def _shown(self, pid: int) -> Top:
        """The top of book as shown now: (bid, bid qty, ask, ask qty), `market.skew`
        applied to the products it names."""
        exchange = self.exchange
        shown = exchange.top(pid)
        if pid in self._skewed:
            spec = exchange.specs[pid]
            skew = self.profile.market.skew_factor(spec.symbol, exchange.now_ns - self._origin)
            shown = skewed(shown, skew, spec.tick)
        return shown

    def _event(self, pid: int, shown: Top) -> BboUpdated:
        """The quote pushed for `shown`, with the oracle price."""
        return top_event(pid, shown, self.exchange.now_ns, self.exchange.mid(pid))

    def _push_changed(self) -> None:
        # The shown top is compared first; the event is built only when it moved.
        moment = self.exchange.moment()
        if moment == self._looked:
            return  # nothing moved since the last look
        self._looked = moment
        for pid in self._pids:
            shown = self._shown(pid)
            if self._top.get(pid) != shown:
                self._push_bbo(pid, self._event(pid, shown))

    def _push_bbo(self, pid: int, fresh: BboUpdated | None = None) -> None:
        if fresh is None:
            fresh = self._event(pid, self._shown(pid))
        self._top[pid] = (fresh.bid, fresh.bid_qty, fresh.ask, fresh.ask_qty)
        ev = fresh
        last = self._last_bbo.get(pid)
        fault = "fresh" if self.plan.fresh_quotes else self.plan.quote(has_last=last is not None)
        if fault == "stale" and last is not None:
            self.stats["stale_bbo"] += 1
            ev = last  # an old quote with its old timestamp
        elif fault == "crossed":
            self.stats["crossed_bbo"] += 1
            ev = crossed(fresh)
        self._last_bbo[pid] = fresh
        self.channel.push(ev)

    # -- connection -----------------------------------------------------------------------
    def _set_down(self, delta: int) -> None:
        self._down += delta
        self._update("venue down" if delta > 0 else "venue back up")

    def _schedule_disconnect(self) -> None:
        wait_ns = self.plan.next_disconnect_ns()
        if wait_ns is not None:
            self.sched.later(wait_ns, self._disconnect)

    def _disconnect(self) -> None:
        self._gap = True
        self.stats["disconnects"] += 1
        self._update("forced disconnect")
        self.sched.later(self._reconnect_ns, self._reconnect)

    def _reconnect(self) -> None:
        self._gap = False
        self._update("reconnected")
        self._schedule_disconnect()

    def _update(self, detail: str) -> None:
        up = self._down == 0 and not self._gap
        if up == self._up:
            return
        self._up = up
        if up:
            self.channel.connect()
        else:
            self.channel.disconnect()
        state = "connected" if up else "disconnected"
        self.emit(ConnectionChanged(channel="ws", state=state, detail=detail))
