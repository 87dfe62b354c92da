"""Issue 12 item 4: exit paths. Bad input is exit 2 before anything is sent, one line,
no traceback; a venue that never becomes usable is exit 3 with the reason; signals
flatten and stop; damaged or foreign journals are refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from engine.core.journal import read_records
from tests.cli.support import DNPAIR
from tests.cli.support import dnpair
from tests.cli.support import env
from tests.cli.support import one_line_error
from tests.cli.support import virtual_run

KEY = "0x" + "22" * 32
# Ctrl-C's own subaccount: the account lock (engine/runtime/account.py) is per gateway and
# key, so this run and the venue-down run (same dead gateway) must not share a key when
# the two workers run them at once.
CTRL_C_KEY = "0x" + "23" * 32
DEAD_GATEWAY = "http://127.0.0.1:9/v1"  # the discard port: nothing listens on loopback


def _wait_for(proc: subprocess.Popen[str], text: str) -> list[str]:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never printed: {''.join(seen)[-3000:]}")


def test_webhook_run_ends_clean_without_cancelled_error(tmp_path: Path) -> None:
    proc = dnpair(
        "run", "--pair", "ETH-SOL", "--cycles", "1", "--quiet", "--status", "plain",
        "--journal", str(tmp_path / "w.db"), "--alert-webhook", "http://127.0.0.1:9/hook",
        DN_HOLD_S="0", DN_PAUSE_S="0",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "CancelledError" not in proc.stderr


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--summary-json", "missing/s.json", "does not exist"),
        ("--summary-json", ".", "is a directory"),
        ("--journal", "missing/j.db", "does not exist"),
        ("--journal", ".", "is a directory"),
        ("--log-json", "missing/l.jsonl", "does not exist"),
    ],
)
def test_unusable_output_paths_exit_2_before_anything(
    tmp_path: Path, flag: str, value: str, says: str
) -> None:
    args = ["run", "--pair", "ETH-SOL", "--clock", "virtual", "--cycles", "1", flag, value]
    if flag != "--journal":
        args += ["--journal", str(tmp_path / "j.db")]
    line = one_line_error(dnpair(*args, cwd=tmp_path))
    assert says in line
    assert not (tmp_path / "j.db").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: no unreadable journal")
def test_unreadable_journal_exits_2(tmp_path: Path) -> None:
    journal = tmp_path / "r.db"
    assert virtual_run(journal, "--cycles", "1").returncode == 0
    journal.chmod(0o000)
    try:
        assert "not readable" in one_line_error(virtual_run(journal, "--cycles", "1"))
    finally:
        journal.chmod(0o600)


def test_config_with_non_utf8_bytes_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_bytes(b"[engine]\nsize_usd = 100 # \xff\xfe\n")
    line = one_line_error(virtual_run(tmp_path / "j.db", "--config", str(config)))
    assert "not UTF-8" in line


def test_metrics_port_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(virtual_run(tmp_path / "j.db", "--metrics-port", str(port)))
    assert f"--metrics-port {port}" in line
    assert not (tmp_path / "j.db").exists()


def test_gateway_credentials_are_never_echoed(tmp_path: Path) -> None:
    proc = dnpair(
        "run", "--pair", "ETH-SOL", "--venue", "nado", "--gateway",
        "http://alice:s3cret@127.0.0.1:9/v1", "--journal", str(tmp_path / "j.db"),
        NADO_PRIVATE_KEY=KEY,
    )  # fmt: skip
    line = one_line_error(proc)
    assert "credentials in the URL" in line
    assert "s3cret" not in proc.stderr + proc.stdout
    assert "alice" not in proc.stderr + proc.stdout


def test_venue_down_at_start_up_retries_then_exits_3_and_replay_says_so(tmp_path: Path) -> None:
    journal, summary = tmp_path / "n.db", tmp_path / "n.json"
    proc = dnpair(
        "run", "--pair", "ETH-SOL", "--venue", "nado", "--gateway", DEAD_GATEWAY,
        "--journal", str(journal), "--summary-json", str(summary), "--quiet",
        NADO_PRIVATE_KEY=KEY, DN_STARTUP_BUDGET_S="2",
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "start-up budget (2 s" in proc.stderr
    assert "connect_failed" in proc.stderr
    assert "nothing was sent" in proc.stderr
    data = json.loads(summary.read_text())
    assert data["orders_sent"] == 0
    assert "start-up budget" in data["halt_reason"]
    replay = dnpair("replay", str(journal))
    assert replay.returncode == 0
    assert "no run started in this journal" in replay.stdout
    assert "first divergence" not in replay.stdout


def test_ctrl_c_during_start_up_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [DNPAIR, "run", "--pair", "ETH-SOL", "--venue", "nado", "--gateway", DEAD_GATEWAY,
         "--journal", str(tmp_path / "s.db"), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env(NADO_PRIVATE_KEY=CTRL_C_KEY, DN_STARTUP_BUDGET_S="120"),
    )  # fmt: skip
    try:
        _wait_for(proc, "venue not usable (attempt 1)")
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest
    assert "interrupted during start-up; nothing was sent" in rest


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_virtual_clock_without_cycles_first_signal_flattens_and_stops(
    tmp_path: Path, sig: signal.Signals
) -> None:
    journal, summary = tmp_path / "v.db", tmp_path / "v.json"
    proc = subprocess.Popen(
        [DNPAIR, "run", "--pair", "ETH-SOL", "--clock", "virtual", "--journal", str(journal),
         "--summary-json", str(summary)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
    )  # fmt: skip
    try:
        _wait_for(proc, "building → holding")
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, rest[-3000:]
    assert "Traceback" not in rest
    data = json.loads(summary.read_text())
    assert data["flat"] is True
    assert data["halted"] is False
    assert dnpair("replay", str(journal)).returncode == 0


def test_sigterm_on_the_wall_clock_flattens_like_sigint(tmp_path: Path) -> None:
    summary = tmp_path / "t.json"
    proc = subprocess.Popen(
        [DNPAIR, "run", "--pair", "ETH-SOL", "--journal", str(tmp_path / "t.db"),
         "--summary-json", str(summary), "--status", "plain"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(DN_HOLD_S="60"),
    )  # fmt: skip
    try:
        _wait_for(proc, "holding")
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, rest[-3000:]
    assert "Traceback" not in rest
    data = json.loads(summary.read_text())
    assert data["flat"] is True
    assert data["cycles_completed"] == 0


def test_journal_cut_to_half_is_refused_and_a_crash_tail_is_repaired(tmp_path: Path) -> None:
    journal = tmp_path / "c.db"
    assert virtual_run(journal, "--cycles", "3").returncode == 0
    whole = journal.read_bytes()
    before = len(list(read_records(journal)))
    journal.write_bytes(whole[: len(whole) // 2])
    line = one_line_error(virtual_run(journal, "--cycles", "1"))
    assert "refusing to repair it automatically" in line
    assert "journal verify --truncate" in line
    # A crash-shaped tail (the last page torn) is repaired on start, as before.
    journal.write_bytes(whole[: len(whole) - 100])
    proc = virtual_run(journal, "--cycles", "1")
    assert proc.returncode == 0, proc.stderr
    assert "torn tail truncated" in proc.stdout
    assert len(list(read_records(journal))) > before - 50


def test_journal_of_another_pair_is_refused(tmp_path: Path) -> None:
    journal = tmp_path / "p.db"
    assert virtual_run(journal, "--cycles", "1").returncode == 0
    proc = dnpair(
        "run", "--pair", "BTC-ETH", "--clock", "virtual", "--cycles", "1", "--journal",
        str(journal),
    )  # fmt: skip
    line = one_line_error(proc)
    assert "journal of ETH-PERP/SOL-PERP, not BTC-PERP/ETH-PERP" in line


class _Stubborn:
    """A loopback gateway that never becomes usable: every request gets `answer`."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        import http.server
        import threading

        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (
            429,
            b'{"status":"failure","error_code":1000,"error":"rate limited"}',
            {"Retry-After": "1"},
        ),
        (200, b"<html>not the gateway</html>", {"Content-Type": "text/html"}),
        (200, b'{"status":"success","data":{"unexpected":true}}', {}),
    ],
    ids=["rate_limited", "garbage", "wrong_shape"],
)
def test_venue_unusable_at_start_up_is_retried_then_exit_3_with_the_reason(
    tmp_path: Path, status: int, body: bytes, headers: dict[str, str]
) -> None:
    # Issue 12 item 4: rate limiting or garbage at start-up is not "bad configuration"
    # (exit 2): discovery retries with backoff inside the start-up budget, then exit 3.
    gateway = _Stubborn(status, body, headers)
    try:
        journal, summary = tmp_path / "u.db", tmp_path / "u.json"
        proc = dnpair(
            "run", "--pair", "ETH-SOL", "--venue", "nado", "--gateway", gateway.url,
            "--journal", str(journal), "--summary-json", str(summary), "--quiet",
            NADO_PRIVATE_KEY=KEY, DN_STARTUP_BUDGET_S="2",
        )  # fmt: skip
    finally:
        gateway.close()
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "start-up budget (2 s" in proc.stderr
    assert "nothing was sent" in proc.stderr
    assert gateway.requests >= 2  # retried, not given up at the first answer
    data = json.loads(summary.read_text())
    assert data["orders_sent"] == 0
