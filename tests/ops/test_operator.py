"""Operator commands end to end: status, flatten and metrics against a running engine
(wall clock, a subprocess), and HALT that stays until an operator resumes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from engine.core.journal import Journal
from engine.core.journal import read_records
from engine.runtime.cli import main

DNPAIR = str(Path(sys.executable).with_name("dnpair"))
GOLDEN_HALT = "tests/replay/golden/one_leg_reject.jsonl"


def _dnpair(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DNPAIR, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_status_metrics_and_flatten_against_a_running_engine(tmp_path):
    journal, summary = tmp_path / "w.db", tmp_path / "w.json"
    proc = subprocess.Popen(
        [
            DNPAIR,
            "run",
            "--pair",
            "ETH-SOL",
            "--journal",
            str(journal),
            "--summary-json",
            str(summary),
            "--metrics-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "DN_HOLD_S": "60"},
    )
    port = None
    try:
        deadline = time.monotonic() + 30
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            m = re.search(r"\[METRICS\] serving http://127\.0\.0\.1:(\d+)/metrics", line)
            if m:
                port = int(m.group(1))
            if "building → holding" in line or time.monotonic() > deadline:
                break
        assert port is not None, "".join(seen)

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'dnpair_machine_state{machine="session",state="holding"} 1.0' in text
        assert "dnpair_ws_connected 1.0" in text

        status = _dnpair("status", "--journal", str(journal), "--json")
        assert status.returncode == 0, status.stderr
        snap = json.loads(status.stdout)
        assert snap["live"] is True
        session = next(m for m in snap["machines"] if m["machine"] == "session")
        assert session["state"] == "holding"
        assert any(d["name"] == "hold_over" for d in session["deadlines"])

        flat = _dnpair("flatten", "--journal", str(journal), "--wait", "30")
        assert flat.returncode == 0, flat.stdout + flat.stderr
        assert "verified flat" in flat.stdout
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, rest
    data = json.loads(summary.read_text())
    assert data["final_positions"] == {"ETH-PERP": "0.000", "SOL-PERP": "0.00"}
    assert "[OPERATOR] flatten requested" in rest
    # not running any more: status falls back to the journal
    after = _dnpair("status", str(journal))
    assert after.returncode == 0
    assert "engine not running" in after.stdout


def _halted_journal(path: Path) -> None:
    journal = Journal(str(path), durable=False)
    for rec in read_records(GOLDEN_HALT):
        journal.append(rec.kind, rec.machine, rec.data, rec.ts)
    journal.close()


def test_halt_is_sticky_until_an_operator_resumes(tmp_path, capsys):
    path = tmp_path / "h.db"
    _halted_journal(path)
    base = ["run", "--pair", "ETH-SOL", "--clock", "virtual", "--quiet", "--journal", str(path)]
    assert main([*base, "--cycles", "1"]) == 2
    err = capsys.readouterr().err
    assert "HALTED (two consecutive failed cycles)" in err
    assert "--resume" in err
    # Flattening is always allowed (a run of 0 cycles)...
    assert main([*base, "--cycles", "0"]) == 0
    # ...but does not clear the halt; --resume does, once.
    assert main([*base, "--cycles", "1"]) == 2
    assert main([*base, "--cycles", "1", "--resume"]) == 0
    assert main([*base, "--cycles", "1"]) == 0


def test_resume_and_flatten_without_an_engine_say_what_to_do(tmp_path, capsys):
    journal = str(tmp_path / "none.db")
    assert main(["resume", "--journal", journal]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["flatten", "--journal", journal]) == 1
    assert "pass --pair" in capsys.readouterr().err
    code = main(["flatten", "--pair", "ETH-SOL", "--clock", "virtual", "--journal", journal])
    assert code == 0
    assert " verified flat " in capsys.readouterr().out  # summary wording (issue 12 item 7)
