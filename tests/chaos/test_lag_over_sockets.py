"""Issue 11 done-when: over `dnpair venue serve` (a loopback subprocess speaking Nado's
gateway protocol, real signing) with position reads 20 s behind the fills, three cycles
complete and the run exits 0, flat by a read that agrees with the fills.

`venue serve` runs on the wall clock (it has no virtual clock), so each cycle waits out
the lag for real (~45 s): deep tier only (`make deep`)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.adapter.support import KEY
from tests.tiers import deep

BIN = Path(sys.executable).with_name("dnpair")


def _cmd(*args: str) -> list[str]:
    head = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "engine.runtime.cli"]
    return [*head, *args]


@deep
@pytest.mark.slow
def test_three_cycles_complete_over_sockets_with_a_20s_position_lag(tmp_path: Path) -> None:
    faults = tmp_path / "lag.toml"
    faults.write_text("[venue]\nposition_lag_ms = 20000\n")
    err = (tmp_path / "serve.err").open("w")
    serve = subprocess.Popen(
        _cmd("venue", "serve", "--port", "0", "--seed", "7", "--faults", str(faults)),
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    try:
        assert serve.stdout is not None
        ready, _, _ = select.select([serve.stdout], [], [], 30)
        assert ready, "no output from dnpair venue serve"
        match = re.fullmatch(
            r"listening on (http://127\.0\.0\.1:\d+/v1)\n", serve.stdout.readline()
        )
        assert match
        url = match.group(1)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DN_", "NADO_"))}
        env.update(NADO_PRIVATE_KEY=KEY, DN_HOLD_S="0.5", DN_PAUSE_S="0.2")
        journal, summary = tmp_path / "run.db", tmp_path / "summary.json"
        args = ["run", "--pair", "ETH-SOL", "--venue", "nado", "--gateway", url, "--cycles", "3"]
        args += ["--journal", str(journal), "--summary-json", str(summary), "--status", "plain"]
        done = subprocess.run(_cmd(*args), env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
        result = json.loads(summary.read_text())
        assert result["cycles_completed"] == 3
        assert result["halted"] is False
        assert result["flat"] is True
        assert result["positions_trusted"] == "venue read"
        assert {float(v) for v in result["fill_positions"].values()} == {0.0}
        assert {float(v) for v in result["final_positions"].values()} == {0.0}
        assert "position read lags the reported fills" in journal_notes(journal)
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=10)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
            if serve.stdout is not None:
                serve.stdout.close()
            err.close()


def journal_notes(journal: Path) -> str:
    out = journal.with_suffix(".jsonl")
    done = subprocess.run(
        _cmd("journal", "export", str(journal), "--jsonl", str(out)), capture_output=True
    )
    assert done.returncode == 0
    return out.read_text()
