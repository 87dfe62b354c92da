"""SIGKILL crash test tier (RELIABILITY.md P1, P2): each enumerated crash point once plus
one random instant, against one `dnpair venue serve` (a second random instant is in the
deep tier). The full run is `make crash`.

`after_send_before_ack` is also the regression test for the emergency exit that burned
all its attempts with no quote to price them right after a restart (it now asks the
venue for a quote and backs off)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.runtime import crashpoints
from tests.crash.harness import Point
from tests.crash.harness import plan
from tests.crash.harness import run_point
from tests.crash.harness import venue_serve
from tests.tiers import deep


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    work = tmp_path_factory.mktemp("crash")
    with venue_serve(work) as url:
        yield url, work


SAMPLE = plan(range(1, 2), range(1, 2), 2, random_seed=7)
# `make test`: every enumerated point and the first random instant; the second random
# instant runs in the deep tier (`make deep`; `make crash` kills at 24 random instants).
FAST, DEEP = SAMPLE[:-1], SAMPLE[-1:]


def _crash_point(point: Point, gateway: tuple[str, Path]) -> None:
    url, work = gateway
    out = run_point(url, work, point)
    if point.name != "random":
        assert out.died == "sigkill", f"{point.label}: the crash point was never reached"
    assert out.ok, f"{point.label}: {out.problems}"


@pytest.mark.slow
@pytest.mark.parametrize("point", FAST, ids=[p.label for p in FAST])
def test_crash_point_restart_is_flat_and_clean(point: Point, gateway: tuple[str, Path]) -> None:
    _crash_point(point, gateway)


@deep
@pytest.mark.slow
@pytest.mark.parametrize("point", DEEP, ids=[p.label for p in DEEP])
def test_crash_point_restart_is_flat_and_clean_deep(
    point: Point, gateway: tuple[str, Path]
) -> None:
    _crash_point(point, gateway)


def test_no_hook_without_the_variable() -> None:
    assert crashpoints.from_env({}) is None
    assert crashpoints.from_env({crashpoints.ENV: ""}) is None


def test_the_hook_kills_at_the_nth_occurrence_of_its_point_only() -> None:
    killed: list[tuple[str, int]] = []
    hook = crashpoints.from_env({crashpoints.ENV: "mid_unwind:2"})
    assert hook is not None
    hook.kill = lambda point, n: killed.append((point, n))
    hook.sent("build:session:3:o1")  # another machine's order: not the point
    hook.placing("unwind:session:4:o1")  # another point
    hook.sent("unwind:session:4:o1")
    assert killed == []
    hook.sent("unwind:session:4:o2")
    assert killed == [("mid_unwind", 2)]


def test_the_nado_adapter_calls_the_injected_hook_after_the_answer_before_the_ack() -> None:
    """The adapter reaches the crash points only through `on_sent` (engine/runtime/run.py injects
    `CrashPoints.sent` there); it imports nothing of engine/runtime/crashpoints.py."""
    import asyncio

    from engine.core.intents import PlaceOrder
    from tests.nado.offline import ETH
    from tests.nado.offline import OfflineVenue

    calls: list[tuple[str, int]] = []  # (order id, events emitted before the hook ran)

    async def scenario() -> OfflineVenue:
        off = OfflineVenue(on_sent=lambda oid: calls.append((oid, len(off.events))))
        await off.start()
        before = len(off.events)
        order = PlaceOrder(
            order_id="unwind:session:4:o1",
            product_id=ETH,
            side="buy",
            qty="1",
            price="3000",
            tif="default",
        )
        await off.place(order)
        calls[:] = [(oid, n - before) for oid, n in calls]
        await off.close()
        return off

    off = asyncio.run(scenario())
    assert calls == [("unwind:session:4:o1", 0)]  # once, before the ack was reported
    assert [e.kind for _, e in off.events if e.kind == "order_accepted"] == ["order_accepted"]
    root = Path(__file__).resolve().parents[2] / "adapters"
    for path in root.rglob("*.py"):
        assert "crashpoints" not in path.read_text(), path


@pytest.mark.parametrize("spec", ["nowhere:1", "mid_unwind:0", "mid_unwind:x"])
def test_bad_spec_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match=crashpoints.ENV):
        crashpoints.parse(spec)


def test_machines_never_import_the_hook() -> None:
    root = Path(__file__).resolve().parents[2] / "machines"
    for path in root.glob("*.py"):
        assert "crashpoints" not in path.read_text(), path
