"""The two drivers of a session: simulated time (synchronous, `engine.runtime.runner`) and the
wall clock (asyncio, woken by the inbox). Both start the venue, start the app, run until
the session is over, then ask the venue for its last word on positions through one
shared loop (`final_positions`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

from engine.core.clock import NS_PER_S
from engine.core.clock import VirtualClock
from engine.core.events import OperatorCommand
from engine.runtime.app import SESSION_ID
from engine.runtime.options import Interrupted
from engine.runtime.options import StartupFailed
from engine.runtime.runner import run_virtual
from engine.runtime.services import Services

if TYPE_CHECKING:
    from engine.runtime.run_session import Session

__all__ = ["FINAL_TRIES", "FINAL_WAIT_S", "drive_virtual", "drive_wall", "final_positions"]

FINAL_TRIES, FINAL_WAIT_S = 5, 6  # the venue's last word on positions: bounded re-asks
STARTUP_FIRST_DELAY_S, STARTUP_MAX_DELAY_S = 1.0, 10.0  # venue start-up retry backoff


async def final_positions(s: Session, wait: Callable[[], Awaitable[bool]]) -> None:
    """Ask for the final positions up to FINAL_TRIES times; `wait()` runs the engine
    for FINAL_WAIT_S and says whether the answer arrived."""
    for attempt in range(1, FINAL_TRIES + 1):
        s.send(s.final_query(attempt))
        if await wait():
            return
        s.info(f"[EXIT] no answer to final position query {attempt}")


def _start_app(s: Session, products: list[Any]) -> list[Any]:
    first = s.engine.start("engine.runtime.app:start_pair", s.app_config(products))
    s.session_machine = s.engine.machines.get(SESSION_ID)
    return first


async def drive_virtual(s: Session) -> None:
    """Synchronous on simulated time: SIGINT/SIGTERM set a flag the step callback turns
    into a stop (flatten, verify, exit), like the wall clock's handlers."""
    signals = {"n": 0}

    def on_signal(_sig: int, _frame: Any) -> None:
        signals["n"] += 1

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        await _drive_virtual(s, signals)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _drive_virtual(s: Session, signals: dict[str, int]) -> None:
    clock = s.clock
    assert isinstance(clock, VirtualClock)
    await s.venue.start(s.engine.submit)
    if signals["n"]:
        raise Interrupted("interrupted during start-up")
    products = s.products()
    s.arm_monitor(products)
    if s.opts.metrics_port is not None:
        s.attach_metrics()  # scraped after the run only: the loop is busy until then
    first = _start_app(s, products)
    handled = 0
    # (events the engine had processed, the answer then). Asked again after a timer that
    # gave the engine nothing to process (one inside the venue), everything after_step and
    # session_over read is as it was: the answer is the same, unless a harness hook (the
    # chaos checker reads the venue's truth) wants every call.
    last: tuple[int, bool] | None = None

    def until() -> bool:
        nonlocal handled, last
        if signals["n"] > handled:
            handled = signals["n"]
            last = None
            if not s.stopping:
                s.stopping = True
                s.info("[EXIT] signal: cancelling, flattening and verifying")
                s.engine.submit(OperatorCommand(command="stop", reason="signal"), "operator")
            else:
                s.info("[EXIT] already stopping: still flattening and verifying")
        processed = s.engine.events_processed
        if last is not None and last[0] == processed and not s.after_step_hooks:
            return last[1]
        s.after_step()
        over = s.session_over
        last = (processed, over)
        return over

    why = run_virtual(
        s.engine, clock, s.send, until=until, deadline_ns=virtual_limit_ns(s), initial=first
    )
    if why != "until":
        raise RuntimeError(f"session did not finish ({why} at {clock.now_ns()} ns)")

    async def wait() -> bool:
        run_virtual(
            s.engine,
            clock,
            s.send,
            until=lambda: s.final is not None,
            deadline_ns=clock.now_ns() + FINAL_WAIT_S * NS_PER_S,
        )
        return s.final is not None

    await final_positions(s, wait)
    await s.venue.close()


async def drive_wall(s: Session) -> None:
    loop = asyncio.get_running_loop()
    stop_signalled = s.stop_signalled = asyncio.Event()
    wake = asyncio.Event()
    s.engine.on_inbox = wake.set
    stops = 0

    def on_signal() -> None:
        nonlocal stops
        stops += 1
        s.stopping = True
        stop_signalled.set()
        if stops > 1:
            s.info("[EXIT] already stopping: still flattening and verifying")
        s.engine.submit(OperatorCommand(command="stop", reason="signal"), "operator")

    def pump() -> None:
        for intent in s.engine.drain():
            s.send(intent)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    services = Services(s)
    try:
        await start_venue(s)
        if s.stopping:
            raise Interrupted("interrupted during start-up")
        products = s.products()
        s.arm_monitor(products)
        await services.start()
        first = _start_app(s, products)
        for intent in first:
            s.send(intent)
        while not s.session_over:
            await wake.wait()
            wake.clear()
            pump()
            s.after_step()

        async def wait() -> bool:
            try:
                async with asyncio.timeout(FINAL_WAIT_S):
                    while s.final is None:
                        await wake.wait()
                        wake.clear()
                        pump()
                return True
            except TimeoutError:
                return False

        await final_positions(s, wait)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await services.close()
        await s.venue.close()
        await s.alerter.aclose(timeout_s=5.0)  # on this loop, while it runs


async def start_venue(s: Session) -> None:
    """Start the venue; a venue that is down, rate limiting or answering garbage is
    retried with backoff inside the start-up budget (DN_STARTUP_BUDGET_S), then
    StartupFailed (exit 3). A venue that is not what the configuration says is a
    ConfigError at once (exit 2). Nothing is sent before this returns."""
    from engine.runtime.compose import make_venue

    unavailable: tuple[type[BaseException], ...] = ()
    if s.opts.venue == "nado":
        from adapters.nado.discovery import VenueUnavailable

        unavailable = (VenueUnavailable,)
    loop = asyncio.get_running_loop()
    budget = float(s.settings.startup_budget_s)
    deadline = loop.time() + budget
    delay, attempt = STARTUP_FIRST_DELAY_S, 0
    while True:
        attempt += 1
        try:
            await s.venue.start(s.engine.submit)
            return
        except unavailable as exc:
            if s.stopping:
                raise Interrupted("interrupted during start-up") from None
            left = deadline - loop.time()
            if left <= 0:
                raise StartupFailed(
                    f"the venue did not become usable within the start-up budget "
                    f"({budget:g} s, {attempt} attempts): {exc}; nothing was sent"
                ) from None
            s.info(
                f"[START] venue not usable (attempt {attempt}): {exc}; "
                f"retrying in {min(delay, left):.1f} s",
                logging.WARNING,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, left)):
                    await (s.stop_signalled or asyncio.Event()).wait()
            if s.stopping:
                raise Interrupted("interrupted during start-up") from None
            delay = min(delay * 2, STARTUP_MAX_DELAY_S)
            s.venue = make_venue(s.opts, s.clock, s.settings.values["bbo_max_age_seconds"])


def virtual_limit_ns(s: Session) -> int:
    """How long a session may take on simulated time before it is called stuck."""
    st = s.settings
    per_cycle = (
        st.hold_s
        + st.pause_s
        + st.pause_jitter_s
        + 4 * st.fill_timeout_s
        + 4 * st.verify_timeout_s
        + 3 * st.exit_budget_s
    )
    cycles = s.opts.cycles if s.opts.cycles is not None else 1000
    # MAX_DAILY_LOSS parks the session until the next UTC midnight, at most once a day
    # per cycle: simulated days cost nothing, so they are part of the bound.
    parked = 86400 * (cycles + 1)
    return int((per_cycle * (cycles + 3) + 300 + parked) * NS_PER_S)
