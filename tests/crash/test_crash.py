"""SIGKILL crash test tier (RELIABILITY.md P1, P2): each enumerated crash point once plus
two random instants, against one `dnpair venue serve`. The full run is `make crash`.

`after_send_before_ack` is also the regression test for the emergency exit that burned
all its attempts with no quote to price them right after a restart (it now asks the
venue for a quote and backs off)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import crashpoints
from tests.crash.harness import Point
from tests.crash.harness import plan
from tests.crash.harness import run_point
from tests.crash.harness import venue_serve


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    work = tmp_path_factory.mktemp("crash")
    with venue_serve(work) as url:
        yield url, work


SAMPLE = plan(range(1, 2), range(1, 2), 2, random_seed=7)


@pytest.mark.slow
@pytest.mark.parametrize("point", SAMPLE, ids=[p.label for p in SAMPLE])
def test_crash_point_restart_is_flat_and_clean(point: Point, gateway: tuple[str, Path]) -> None:
    url, work = gateway
    out = run_point(url, work, point)
    if point.name != "random":
        assert out.died == "sigkill", f"{point.label}: the crash point was never reached"
    assert out.ok, f"{point.label}: {out.problems}"


def test_hook_is_a_noop_without_the_variable() -> None:
    crashpoints.arm(None)
    for point in crashpoints.POINTS:
        crashpoints.reached(point)  # would SIGKILL this process if armed
    crashpoints.sent("unwind:session:4:o1")
    crashpoints.placing("build:session:3:o1")


@pytest.mark.parametrize("spec", ["nowhere:1", "mid_unwind:0", "mid_unwind:x"])
def test_bad_spec_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match=crashpoints.ENV):
        crashpoints.parse(spec)


def test_machines_never_import_the_hook() -> None:
    root = Path(__file__).resolve().parents[2] / "machines"
    for path in root.glob("*.py"):
        assert "crashpoints" not in path.read_text(), path
