"""The fault plan: what the `[rest]`, `[ws]`, `[venue]` and `[market]` faults of a profile
do to each request, push, quote and connection, decided in one place for both transports.

`FaultPlan` is pure apart from its seeded random streams: no clock, no I/O, no scheduling.
Times come in as arguments (ns since the venue started); answers are plain values. The
in-process sim (rest.py, feed.py) and `venue serve` (server/app.py) ask it the same
questions and only differ in how they carry the answer out (scheduler callbacks vs. held
HTTP connections and closed sockets). Each stream of decisions has its own generator,
seeded from the run's seed and the stream's name, so a decision in one never shifts
another:

- `{seed}/rest`: per request, in arrival order: the extra latency in and out
  (`rest.latency_ms`), whether its answer is lost (`rest.timeout`), and for an effectful
  request (placement, cancel) whether it takes effect before the answer dies (one half);
- `{seed}/bbo`: per pushed quote: stale (`market.stale_bbo`, the previous quote again)
  or crossed (`market.crossed_bbo`, sides swapped), else fresh;
- `{seed}/connection`: the wait to each forced disconnect (`ws.disconnect_mean_s`,
  exponential);
- `{seed}/{stream}` (`ws`; `ws/N` per server connection): per push, drop, duplicate,
  hold-for-reorder and extra delay (`[ws]`), for the push channel (channel.py).

Windows (`rest.rate_limit`, `venue.down`) are looked up, not drawn.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

import attrs

from adapters.sim.faults import NS_PER_S
from adapters.sim.faults import FaultProfile
from adapters.sim.faults import Window
from adapters.sim.faults import WsFaults

__all__ = ["FaultPlan", "PushPlan", "QuoteFault", "RequestFate", "window_at"]

QuoteFault = Literal["fresh", "stale", "crossed"]


@attrs.frozen
class RequestFate:
    """What happens to one request on the wire."""

    in_ns: int = 0  # extra latency before it reaches the venue
    out_ns: int = 0  # extra latency before its answer reaches the client
    lost: bool = False  # its answer never comes (the client times out)
    applied: bool = False  # lost, yet it takes effect at the venue first


ON_TIME = RequestFate()  # no `[rest]` fault: what every request gets without one


def window_at(windows: Sequence[Window], t_ns: int) -> Window | None:
    """The first window containing `t_ns` (ns since the venue started), if any."""
    if not windows:
        return None
    return next((w for w in windows if w.contains(t_ns)), None)


class PushPlan:
    """The `[ws]` decisions for one push stream (one socket, or the in-process feed)."""

    def __init__(self, faults: WsFaults, rng: random.Random) -> None:
        self.faults = faults
        self.rng = rng
        # No push fault at all: every push goes out once, on time, and nothing is drawn.
        self.clean = not (faults.drop or faults.duplicate or faults.reorder) and (
            faults.delay_ms.is_zero
        )

    def drops(self) -> bool:
        p = self.faults.drop
        return bool(p) and self.rng.random() < p

    def copies(self) -> int:
        p = self.faults.duplicate
        return 2 if p and self.rng.random() < p else 1

    def holds(self) -> bool:
        """Hold this push back to swap it with the next one (`ws.reorder`)."""
        p = self.faults.reorder
        return bool(p) and self.rng.random() < p

    def delay_ns(self) -> int:
        extra = self.faults.delay_ms
        return 0 if extra.is_zero else extra.draw_ns(self.rng)


class FaultPlan:
    def __init__(self, profile: FaultProfile, seed: int | str) -> None:
        self.profile = profile
        self.seed = seed
        self.rest_rng = random.Random(f"{seed}/rest")
        self.bbo_rng = random.Random(f"{seed}/bbo")
        self.conn_rng = random.Random(f"{seed}/connection")
        self.windows = bool(profile.rest.rate_limit or profile.venue.down)
        # No quote fault at all: every quote is fresh and `quote` draws nothing.
        self.fresh_quotes = not (profile.market.stale_bbo or profile.market.crossed_bbo)

    # -- requests ---------------------------------------------------------------------------
    def request(self, *, effectful: bool) -> RequestFate:
        """The fate of the next request (every draw made now, in arrival order, whatever
        the request turns out to be)."""
        rest, rng = self.profile.rest, self.rest_rng
        latency = rest.latency_ms
        if latency.is_zero and not rest.timeout:
            return ON_TIME  # nothing to draw
        d_in = 0 if latency.is_zero else latency.draw_ns(rng)
        d_out = 0 if latency.is_zero else latency.draw_ns(rng)
        p = rest.timeout
        lost = bool(p) and rng.random() < p
        applied = lost and effectful and rng.random() < 0.5
        return RequestFate(in_ns=d_in, out_ns=d_out, lost=lost, applied=applied)

    def rate_limited(self, t_ns: int) -> Window | None:
        """The `rest.rate_limit` window in force at `t_ns`: answer 429 until its end."""
        return window_at(self.profile.rest.rate_limit, t_ns)

    def down(self, t_ns: int) -> Window | None:
        """The `venue.down` window in force at `t_ns`."""
        return window_at(self.profile.venue.down, t_ns)

    @property
    def down_windows(self) -> tuple[Window, ...]:
        return self.profile.venue.down

    def goes_down_between(self, t0_ns: int, t1_ns: int) -> bool:
        """A `venue.down` window starts in (t0, t1]: an answer in flight then dies."""
        down = self.profile.venue.down
        return bool(down) and any(t0_ns < w.start_ns <= t1_ns for w in down)

    # -- pushes -----------------------------------------------------------------------------
    def quote(self, *, has_last: bool) -> QuoteFault:
        """What the next pushed quote shows (`market.stale_bbo`, `market.crossed_bbo`)."""
        market, rng = self.profile.market, self.bbo_rng
        if market.stale_bbo and has_last and rng.random() < market.stale_bbo:
            return "stale"
        if market.crossed_bbo and rng.random() < market.crossed_bbo:
            return "crossed"
        return "fresh"

    def next_disconnect_ns(self) -> int | None:
        """The wait to the next forced disconnect, or None without `ws.disconnect_mean_s`."""
        mean = self.profile.ws.disconnect_mean_s
        if mean <= 0:
            return None
        wait_s = self.conn_rng.expovariate(1.0 / float(mean))
        return max(1, int(wait_s * NS_PER_S))

    def pushes(self, stream: str = "ws") -> PushPlan:
        """The `[ws]` plan of one push stream, seeded by its name."""
        return PushPlan(self.profile.ws, random.Random(f"{self.seed}/{stream}"))
