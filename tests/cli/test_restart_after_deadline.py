"""Issue 12 item 8 (RELIABILITY P7): the engine dies holding both legs; while it is
down the hold deadline passes. The restart sees the deadline passed (journal + run
epoch), says so, syncs with the venue and goes straight to the emergency exit: no BUILD
before it is flat. Against a `dnpair venue serve` (positions outlive the engine)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from engine.core.journal import read_records
from tests.cli.support import DNPAIR
from tests.cli.support import env
from tests.crash.harness import KEY
from tests.crash.harness import venue_serve
from tests.support import deadlines_armed

HOLD_S = 3.0


def _until_committed(journal: Path, deadline: str) -> None:
    """Wait (bounded) until the hold deadline's arming is durable in the journal."""
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        armed = deadlines_armed(read_records(journal))
        if any(m == "session" and a["name"] == deadline for m, a in armed):
            return
        time.sleep(0.05)
    raise AssertionError(f"deadline {deadline!r} never committed to {journal}")


@pytest.mark.slow
def test_restart_after_a_passed_deadline_exits_first_and_builds_nothing(tmp_path: Path) -> None:
    journal, summary = tmp_path / "p7.db", tmp_path / "p7.json"
    with venue_serve(tmp_path) as url:
        base = [DNPAIR, "run", "--pair", "ETH-SOL", "--venue", "nado", "--gateway", url,
                "--journal", str(journal), "--status", "plain"]  # fmt: skip
        run_env = env(NADO_PRIVATE_KEY=KEY, DN_HOLD_S=str(HOLD_S), DN_PAUSE_S="0.1")
        first = subprocess.Popen(
            base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=run_env
        )
        try:
            assert first.stdout is not None
            for line in first.stdout:
                if "[session] building → holding" in line:
                    break
            _until_committed(journal, "hold_over")
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
        killed_at = len(list(read_records(journal)))
        # Down for longer than the hold deadline (this is the fault: time passing).
        time.sleep(HOLD_S + 0.5)
        # The restart's own cycle holds briefly: the passed deadline is the journal's
        # (armed with HOLD_S above), not this run's setting.
        again = subprocess.run(
            [*base, "--cycles", "1", "--summary-json", str(summary)],
            capture_output=True, text=True, env={**run_env, "DN_HOLD_S": "0.2"}, timeout=120,
            check=False,
        )  # fmt: skip
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-2000:]
    assert "deadline 'hold_over' passed" in again.stdout
    restart = list(read_records(journal))[killed_at:]
    session = [r.data["to"] for r in restart if r.kind == "transition" and r.machine == "session"]
    assert session[:2] == ["idle", "recovering"] or session[0] == "recovering", session
    first_build = session.index("building") if "building" in session else len(session)
    assert "recovering" in session[:first_build]
    # the first order after the restart is the emergency exit's, not a BUILD leg
    orders = [r for r in restart if r.kind == "intent" and '"place_order"' in r.payload]
    assert orders
    assert orders[0].machine.startswith("exit:"), orders[0]
    assert json.loads(summary.read_text())["flat"] is True
