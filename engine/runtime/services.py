"""What a wall-clock run adds around the loop: metrics endpoint, control socket, live
status view and the alert sender."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING
from typing import Any

from engine.runtime.options import RunOptions

if TYPE_CHECKING:
    from engine.runtime.run_session import Session

__all__ = ["Services", "wants_live_view"]


class Services:
    """What a wall-clock run adds around the loop: metrics endpoint, control socket,
    live status view and the alert sender. Each failure to start one is logged, and
    trading goes on without it (the metrics port excepted: asked for, it must work)."""

    def __init__(self, session: Session) -> None:
        self.s = session
        self.metrics_server: Any = None
        self.control: Any = None

    async def start(self) -> None:
        s = self.s
        s.alerter.start()
        if s.opts.metrics_port is not None:
            from engine.ops.metrics import MetricsServer

            self.metrics_server = MetricsServer(
                s.attach_metrics(), s.opts.metrics_host, s.opts.metrics_port
            )
            port = await self.metrics_server.start()
            s.info(f"[METRICS] serving http://{s.opts.metrics_host}:{port}/metrics", port=port)
        journal = s.engine.journal.path
        if s.opts.control and journal != ":memory:":
            from engine.runtime.control import ControlServer

            server = ControlServer(journal, s.control)
            try:
                path = await server.start()
            except (OSError, RuntimeError) as exc:
                s.info(f"[CONTROL] no control socket: {exc}", logging.WARNING)
            else:
                self.control = server
                s.info(f"[CONTROL] operator commands on {path} (dnpair status --journal ...)")
        if wants_live_view(s.opts):
            from engine.ops.status import LiveView

            s.view = LiveView(s.snapshot)
            s.console_sink = s.view.add_event
            s.view.start()

    async def close(self) -> None:
        s = self.s
        if s.view is not None:
            await s.view.stop()
            s.console_sink = s.out
        if self.control is not None:
            await self.control.close()
        if self.metrics_server is not None:
            await self.metrics_server.close()


def wants_live_view(opts: RunOptions) -> bool:
    if opts.status == "live":
        return True
    if opts.status == "plain" or opts.quiet or opts.clock != "wall":
        return False
    return sys.stdout.isatty()
