"""`dnpair run --venue nado`: the whole run against a `dnpair venue serve` subprocess
(exit 0, flat, replayable, the key nowhere), and the refusals that exit 2 before trading:
missing or malformed key, no gateway, wrong chain, unknown symbols, product id mismatch."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.nado.discovery import DiscoveryError
from adapters.nado.discovery import Expectations
from adapters.nado.factory import nado_settings
from engine.runtime.cli import main
from tests.adapter.memory import rig
from tests.adapter.memory import serving
from tests.adapter.support import KEY

START_S = 30.0
BIN = Path(sys.executable).with_name("dnpair")


def _cmd(*args: str) -> list[str]:
    head = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "engine.runtime.cli"]
    return [*head, *args]


@pytest.fixture(scope="module")
def venue_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real `dnpair venue serve` process; yields (gateway URL, its stderr file)."""
    err_path = tmp_path_factory.mktemp("serve") / "stderr.txt"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            _cmd("venue", "serve", "--port", "0", "--seed", "5"),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_S)
        assert ready, "no output from dnpair venue serve"
        line = proc.stdout.readline()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+/v1)\n", line)
        assert match, line
        yield match.group(1), err_path
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DN_", "NADO_"))}
    env.update(extra)
    return env


def _venue_stats(err_path: Path) -> dict[str, int]:
    lines = [ln for ln in err_path.read_text().splitlines() if "venue stopped:" in ln]
    return json.loads(lines[-1].split("venue stopped:", 1)[1]) if lines else {}


@pytest.mark.slow
@pytest.mark.loopback
def test_full_run_is_flat_replayable_and_never_shows_the_key(
    venue_serve: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = venue_serve
    journal = tmp_path / "run.db"
    summary = tmp_path / "summary.json"
    env = _env(NADO_PRIVATE_KEY=KEY, DN_HOLD_S="0.5", DN_PAUSE_S="0.2")
    args = ["run", "--pair", "ETH-SOL", "--venue", "nado", "--gateway", url, "--cycles", "2"]
    args += ["--journal", str(journal), "--summary-json", str(summary), "--status", "plain"]
    done = subprocess.run(_cmd(*args), env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    result = json.loads(summary.read_text())
    assert result["venue"] == "nado"
    assert result["cycles_completed"] == 2
    assert result["flat"] is True
    assert result["halted"] is False
    assert set(result["final_positions"].values()) == {"0"}

    # journaled and replayable, connection machine included
    replay = subprocess.run(_cmd("replay", str(journal)), capture_output=True, text=True)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    export = tmp_path / "run.jsonl"
    assert main(["journal", "export", str(journal), "--jsonl", str(export)]) == 0
    records = [json.loads(line) for line in export.read_text().splitlines()]
    kinds = [r["payload"].get("kind") for r in records if r["kind"] == "intent"]
    assert "stream_connect" in kinds

    # the key, with or without 0x, in any case, appears nowhere
    log_json = Path(result["log_json"])
    texts = {
        "stdout": done.stdout,
        "stderr": done.stderr,
        "summary": summary.read_text(),
        "journal export": export.read_text(),
        "json log": log_json.read_text(),
    }
    blobs = {"journal db": journal.read_bytes()}
    for extra in tmp_path.glob("run.db*"):
        blobs[extra.name] = extra.read_bytes()
    bare = KEY[2:]
    for name, text in texts.items():
        assert bare.lower() not in text.lower(), f"key found in {name}"
    for name, blob in blobs.items():
        assert bare.encode() not in blob.lower(), f"key found in {name}"
    placed = kinds.count("place_order")
    print(f"2 cycles: {placed} placements, {len(records)} journal records")


def _run(*args: str, monkeypatch: pytest.MonkeyPatch, key: str | None = KEY) -> int:
    for name in list(os.environ):
        if name.startswith(("DN_", "NADO_")):
            monkeypatch.delenv(name)
    if key is not None:
        monkeypatch.setenv("NADO_PRIVATE_KEY", key)
    return main(["run", "--pair", "ETH-SOL", "--venue", "nado", "--status", "plain", *args])


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (None, "NADO_PRIVATE_KEY is not set"),
        ("0x" + "ab" * 31 + "zz", "NADO_PRIVATE_KEY is malformed"),
        ("0x" + "00" * 32, "not a valid secp256k1 private key"),
        ("ab" * 32, "NADO_PRIVATE_KEY is malformed"),
    ],
    ids=["missing", "not-hex", "zero", "no-0x"],
)
def test_bad_key_exits_2_without_showing_it(
    key: str | None, says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run("--gateway", "http://127.0.0.1:9/v1", monkeypatch=monkeypatch, key=key)
    assert code == 2
    captured = capsys.readouterr()
    assert says in captured.err
    if key is not None:
        assert key not in captured.err + captured.out
        assert key[2:] not in captured.err + captured.out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--network", "local"], "--network local has no default gateway"),
        (["--gateway", "ftp://x/v1"], "--gateway: expected http(s)"),
        (["--gateway", "http://127.0.0.1:9/v1", "--clock", "virtual"], "wall clock only"),
        # An unreachable venue is no configuration problem: it is retried inside the
        # start-up budget, then exit 3 (tests/cli/test_exit_paths.py).
    ],
    ids=["no-gateway", "bad-url", "virtual-clock"],
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


@pytest.mark.slow
@pytest.mark.loopback
def test_wrong_chain_exits_2_naming_it(
    venue_serve: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    url, _ = venue_serve
    args = ["--network", "testnet", "--gateway", url, "--journal", str(tmp_path / "j.db")]
    assert _run(*args, monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    assert "chain id 31337 != 763373" in err


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("pair", "expect", "says"),
    [
        (("ETH-PERP", "XRP-PERP"), Expectations(), "does not list XRP-PERP"),
        (
            ("ETH-PERP", "SOL-PERP"),
            Expectations(product_ids={"SOL-PERP": 10}),
            "configuration says 10",
        ),
        (
            ("ETH-PERP", "SOL-PERP"),
            Expectations(endpoint_addr="0x" + "ab" * 20),
            "endpoint contract",
        ),
        (("ETH-PERP", "ETH-PERP"), Expectations(), "same product twice"),
    ],
    ids=["unknown-symbol", "product-id", "endpoint", "same-product"],
)
async def test_discovery_refuses_mismatches(
    pair: tuple[str, str], expect: Expectations, says: str
) -> None:
    async with serving() as server:
        with pytest.raises(DiscoveryError, match=says):
            async with rig(server, pair=pair, expect=expect):
                pass


def test_settings_from_the_environment() -> None:
    s = nado_settings(
        network="testnet",
        gateway=None,
        pair=("ETH-PERP", "SOL-PERP"),
        env={"NADO_SUBACCOUNT": "bot1", "NADO_PRODUCT_IDS": "ETH-PERP=4, SOL-PERP=8"},
    )
    assert s.gateway_url == "https://gateway.test.nado.xyz/v1"
    assert s.ws_url == "wss://gateway.test.nado.xyz/v1/subscribe"
    assert s.expect.chain_id == 763373
    assert s.expect.product_ids == {"ETH-PERP": 4, "SOL-PERP": 8}
    assert s.subaccount_name == "bot1"
    assert s.archive_url == "https://archive.test.nado.xyz/v1"
    local = nado_settings(
        network="local", gateway="http://127.0.0.1:1/v1", pair=("ETH-PERP", "SOL-PERP"), env={}
    )
    assert local.archive_url is None
    off = nado_settings(
        network="mainnet", gateway=None, pair=("ETH-PERP",), env={"NADO_ARCHIVE_URL": "off"}
    )
    assert off.archive_url is None
