"""`dnpair run --venue paper` as a real process against a loopback `venue serve` (the
"live" market): 3 cycles, flat, replay exact, the venue's stream cut mid-cycle and the
books re-seeded from the REST snapshot, `paper` wherever a venue is named, fills marked
simulated in the report, and zero requests to the execute endpoint. Plus the refusals
that exit 2 before anything starts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.runtime.cli import main
from tests.paper.support import serving

BIN = Path(sys.executable).with_name("dnpair")
RUN_S = 120.0


def _cmd(*args: str) -> list[str]:
    head = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "engine.runtime.cli"]
    return [*head, *args]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DN_", "NADO_"))}
    env.update(extra)
    return env


def _records(journal: Path, tmp_path: Path) -> list[dict]:
    export = tmp_path / "run.jsonl"
    assert main(["journal", "export", str(journal), "--jsonl", str(export)]) == 0
    return [json.loads(line) for line in export.read_text().splitlines()]


async def _run_against_serve(journal: Path, summary: Path) -> tuple[list[str], int, int]:
    """`dnpair run --venue paper` against an in-loop venue serve, the stream cut while the
    second cycle holds; returns (stdout lines, execute requests seen, forced cuts)."""
    async with serving(seed=5) as server:
        args = ["run", "--pair", "ETH-SOL", "--venue", "paper", "--gateway", server.url]
        args += ["--cycles", "3", "--journal", str(journal), "--summary-json", str(summary)]
        args += ["--status", "plain"]
        # Popen + a pipe reader on the loop (no child-watcher thread to outlive the test)
        proc = subprocess.Popen(  # noqa: ASYNC220
            _cmd(*args),
            env=_env(DN_HOLD_S="1.5", DN_PAUSE_S="0.2"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), proc.stdout
        )
        lines: list[str] = []
        holds = 0

        async def read() -> None:
            nonlocal holds
            while raw := await reader.readline():
                line = raw.decode(errors="replace").rstrip("\n")
                lines.append(line)
                if "[session] building → holding" in line:
                    holds += 1
                    if holds == 2:  # mid-cycle: both legs open, holding
                        server._forced_disconnect()

        try:
            await asyncio.wait_for(read(), RUN_S)
        finally:
            transport.close()
            if proc.poll() is None:
                try:
                    proc.wait(timeout=10)  # stdout closed: it is exiting
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        cuts = server.stats["ws_forced_disconnects"]
        assert proc.returncode == 0, "\n".join(lines)[-3000:]
    return lines, server.executes, cuts


@pytest.mark.slow
def test_three_paper_cycles_on_live_data_with_a_stream_cut(tmp_path: Path) -> None:
    journal, summary = tmp_path / "run.db", tmp_path / "summary.json"
    lines, executes, cuts = asyncio.run(_run_against_serve(journal, summary))
    out = "\n".join(lines)
    assert cuts == 1
    assert executes == 0, "paper trading sent a request to the execute endpoint"

    result = json.loads(summary.read_text())
    assert result["venue"] == "paper"
    assert (result["cycles_completed"], result["flat"], result["halted"]) == (3, True, False)
    assert set(result["final_positions"].values()) <= {"0", "0.0", "0.00", "0.000"}
    assert result["orders_sent"] >= 12
    assert "venue paper" in lines[0]

    # the cut: while the second cycle held its legs; reconnected; books re-seeded from REST
    records = _records(journal, tmp_path)
    session_state = ""
    cut_in = None
    for r in records:
        p = r["payload"]
        if r["kind"] == "transition" and r["machine"] == "session":
            session_state = p["to"] or session_state
        if p.get("kind") == "connection_changed" and p.get("state") == "disconnected":
            cut_in = cut_in or session_state
    assert cut_in == "holding"
    conns = [
        r["payload"]["state"] for r in records if r["payload"].get("kind") == "connection_changed"
    ]
    assert conns.count("connected") >= 2
    assert conns[-1] == "connected"
    reconnects = [r for r in records if r["payload"].get("kind") == "stream_connect"]
    assert len(reconnects) >= 2
    reseeded = "book re-seeded from the REST snapshot (reconnect)"
    cut_at = next(i for i, line in enumerate(lines) if "ws disconnected" in line)
    after = [line for line in lines[cut_at:] if reseeded in line]
    assert {line.split()[1] for line in after} == {"ETH-PERP", "SOL-PERP"}, out[-3000:]
    config = next(r["payload"] for r in records if r["payload"].get("config"))
    assert config["config"]["venue"] == "paper"

    # replay exact; the report marks the fills as simulated
    replay = subprocess.run(_cmd("replay", str(journal)), capture_output=True, timeout=RUN_S)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    report = subprocess.run(_cmd("report", str(journal)), capture_output=True, timeout=RUN_S)
    assert report.returncode == 0
    text = report.stdout
    assert b"PAPER: every fill here is SIMULATED" in text
    status = subprocess.run(
        _cmd("status", "--journal", str(journal)), capture_output=True, timeout=RUN_S
    )
    # The 80-column header names the pair, then the venue.
    assert status.stdout.split()[:2] == [b"ETH-SOL", b"paper"], status.stdout + status.stderr
    assert b"completed" in text


def _run(*args: str, monkeypatch: pytest.MonkeyPatch) -> int:
    for name in list(os.environ):
        if name.startswith(("DN_", "NADO_")):
            monkeypatch.delenv(name)
    return main(["run", "--pair", "ETH-SOL", "--venue", "paper", "--status", "plain", *args])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--network", "local"], "--network local has no default gateway"),
        (["--gateway", "ftp://x/v1"], "--gateway: expected http(s)"),
        (["--gateway", "http://127.0.0.1:9/v1", "--clock", "virtual"], "wall clock only"),
        (["--gateway", "http://127.0.0.1:9/v1", "--faults", __file__], "--faults: only"),
        (["--gateway", "http://127.0.0.1:9/v1"], "venue discovery failed"),
    ],
    ids=["no-gateway", "bad-url", "virtual-clock", "faults", "unreachable"],
)
def test_configuration_problems_exit_2(
    args: list[str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    code = _run(*args, "--journal", str(tmp_path / "j.db"), monkeypatch=monkeypatch)
    assert code == 2
    assert says in capsys.readouterr().err


def test_paper_needs_no_key_and_defaults_to_mainnet_data() -> None:
    from engine.runtime.cli import build_parser

    args = build_parser().parse_args(["run", "--pair", "ETH-SOL", "--venue", "paper"])
    assert args.network is None  # resolved to mainnet in _cmd_run (no --gateway)
    from adapters.paper import paper_settings

    s = paper_settings(network="mainnet", gateway=None, pair=("ETH-PERP", "SOL-PERP"))
    assert s.gateway_url == "https://gateway.prod.nado.xyz/v1"
    assert s.expect.chain_id == 57073
