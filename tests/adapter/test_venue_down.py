"""The venue goes away (listening socket closed, open sockets cut) for a window: the
connection machine goes reconnecting → down (REST fails too) → degraded (REST answers
again) → connected, with an audit on return; while down it only probes, at its rate.

The window is 2.5 s of wall time from 1 s after the server starts (profile times are
seconds since start): what matters is the order of what fails and returns, and the
machine's timers are scaled down to match (polls and probes every 0.3 s, backoff from
0.2 s capped at 1 s). With the issue's 20 s window the same transitions happen, with
more probes in the middle.
"""

from __future__ import annotations

import pytest

from engine.core.events import ConnectionChanged
from engine.core.intents import SendAlert
from tests.adapter.memory import engine_rig
from tests.adapter.memory import serving
from tests.sim_server.helpers import still

pytestmark = pytest.mark.asyncio

CONN = {
    "base_backoff_s": "0.2",
    "max_backoff_s": "1",
    "poll_s": "0.3",
    "probe_s": "0.3",
    "down_after": 2,
    "degrade_after": 3,
    "connect_timeout_s": "2",
}


async def test_down_then_degraded_then_connected_with_an_audit() -> None:
    profile = still(venue="down = [{ at_s = 1.0, for_s = 2.5 }]")
    async with serving(profile, seed=1) as server, engine_rig(server, CONN) as r:
        await r.until(lambda: r.state() == "connected")
        await r.until(lambda: "down" in r.states_seen(), within=4)
        down_at = r.clock.now_ns()
        await r.until(lambda: r.states_seen()[-2:] == ["degraded", "connected"], within=6)
        up_at = r.clock.now_ns()
        await r.until(lambda: "reconnect" in r.machine.completed)

        seen = r.states_seen()
        first_down = seen.index("down")
        assert seen[0] == "connected"
        assert "reconnecting" in seen[:first_down]
        assert seen[first_down:][-2:] == ["degraded", "connected"]
        assert server.stats["down_windows"] == 1
        # the stream's story as the engine heard it: up, down (with refusals), up
        ws = [e.state for e in r.of(ConnectionChanged)]
        assert ws[0] == "connected"
        assert ws[-1] == "connected"
        assert "disconnected" in ws
        alerts = [i for i in r.intents if isinstance(i, SendAlert)]
        assert [a.event for a in alerts] == ["venue_unreachable"]
        # while down: one position probe per probe_s, nothing else
        sent = r.venue.client.sent_log
        while_down = [label for label, t in sent if down_at <= t < up_at]
        span_s = (up_at - down_at) / 1e9
        assert set(while_down) <= {"query.subaccount_info"}
        assert len(while_down) <= span_s / 0.3 + 2
        # the audit on return asked positions and open orders
        assert r.machine.last_audit_reason == "reconnect"
        print(
            f"down for {span_s:.2f}s: {len(while_down)} probes; "
            f"states {' → '.join(seen)}; requests in all {len(sent)}"
        )
