"""Issue 12 items 1-2: one engine per journal and per account (flock, taken before any
network), and a HALT that sticks to the account until `dnpair resume`."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from adapters.nado.factory import account_key
from adapters.nado.factory import make_nado_venue
from engine.core.clock import WallClock
from engine.runtime.account import Account
from engine.runtime.account import ProcessLock
from engine.runtime.account import global_state_dir
from tests.cli.support import DNPAIR
from tests.cli.support import HALTING_FAULTS
from tests.cli.support import HALTING_SEED
from tests.cli.support import dnpair
from tests.cli.support import env
from tests.cli.support import one_line_error
from tests.cli.support import virtual_run

KEY = "0x" + "11" * 32


def test_a_second_engine_on_the_same_journal_exits_2_naming_the_first(tmp_path: Path) -> None:
    journal = tmp_path / "x.db"
    first = subprocess.Popen(
        [DNPAIR, "run", "--pair", "ETH-SOL", "--journal", str(journal), "--status", "plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(DN_HOLD_S="60"),
    )
    try:
        assert first.stdout is not None
        for line in first.stdout:
            if line.startswith("[START]"):
                break
        second = virtual_run(journal, "--cycles", "2")
        line = one_line_error(second)
        assert f"pid {first.pid}" in line
        assert f"journal {journal}" in line
        assert "started 20" in line
        first.send_signal(signal.SIGINT)
        rest, _ = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, rest
    assert "Traceback" not in rest
    # the first engine's journal is whole and replays
    assert dnpair("replay", str(journal)).returncode == 0


def test_two_journals_cannot_trade_one_nado_subaccount(tmp_path: Path) -> None:
    """The account lock is taken before any network: the gateway here is a closed port."""
    gateway = "http://127.0.0.1:9/v1"
    venue = make_nado_venue(
        clock=WallClock(),
        network="local",
        gateway=gateway,
        pair=["ETH-PERP", "SOL-PERP"],
        env={"NADO_PRIVATE_KEY": KEY},
    )
    account = Account(key=account_key(venue, "local"), state=global_state_dir())
    held = ProcessLock(account.lock_path, "test")
    held.acquire(str(tmp_path / "first.db"))
    try:
        proc = dnpair(
            "run",
            "--pair",
            "ETH-SOL",
            "--venue",
            "nado",
            "--gateway",
            gateway,
            "--journal",
            str(tmp_path / "second.db"),
            NADO_PRIVATE_KEY=KEY,
        )
        line = one_line_error(proc)
        assert "another engine holds the account nado:local:" in line
        assert f"journal {tmp_path / 'first.db'}" in line
        assert KEY[2:] not in proc.stderr + proc.stdout
        assert not (tmp_path / "second.db").exists()  # nothing written, nothing sent
    finally:
        held.release()


def test_a_halt_sticks_to_the_account_until_dnpair_resume(tmp_path: Path) -> None:
    faults = tmp_path / "reject.toml"
    faults.write_text(HALTING_FAULTS)
    halted = tmp_path / "h.db"
    first = virtual_run(halted, "--cycles", "2", "--seed", HALTING_SEED, "--faults", str(faults))
    assert first.returncode == 3, first.stdout[-3000:]
    # A plain run on a NEW journal of the same account is refused, naming the halted one.
    fresh = tmp_path / "fresh.db"
    line = one_line_error(virtual_run(fresh, "--cycles", "1"))
    assert "HALTED" in line
    assert str(halted) in line
    assert f"dnpair resume --journal {halted}" in line
    assert not fresh.exists()
    # Flattening is always allowed.
    assert virtual_run(fresh, "--cycles", "0").returncode == 0
    # `dnpair resume` with no engine running lifts it for the account and the journal.
    resumed = dnpair("resume", "--journal", str(halted))
    assert resumed.returncode == 0, resumed.stderr
    assert "halt lifted" in resumed.stdout
    assert virtual_run(tmp_path / "after.db", "--cycles", "1").returncode == 0
    again = virtual_run(halted, "--cycles", "1", "--summary-json", str(tmp_path / "s.json"))
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "s.json").read_text())["halted"] is False


def test_a_plain_run_after_a_halt_refuses_like_make_run(tmp_path: Path) -> None:
    """`make run` picks the next runs/PAIR-N.db; the halt of runs/ETH-SOL-1.db still holds."""
    faults = tmp_path / "reject.toml"
    faults.write_text(HALTING_FAULTS)
    base = ("run", "--pair", "ETH-SOL", "--clock", "virtual", "--quiet")
    first = dnpair(
        *base, "--cycles", "2", "--seed", HALTING_SEED, "--faults", str(faults), cwd=tmp_path
    )
    assert first.returncode == 3
    line = one_line_error(dnpair(*base, "--cycles", "1", cwd=tmp_path))
    assert "runs/ETH-SOL-1.db" in line
    assert not (tmp_path / "runs" / "ETH-SOL-2.db").exists()


def test_truncate_refuses_a_journal_an_engine_holds(tmp_path: Path) -> None:
    journal = tmp_path / "t.db"
    assert virtual_run(journal, "--cycles", "1").returncode == 0
    whole = journal.read_bytes()
    journal.write_bytes(whole[: len(whole) - 100])  # a torn tail
    held = ProcessLock(Path(str(journal) + ".lock"), "test")
    held.acquire(str(journal))
    try:
        proc = dnpair("journal", "verify", "--truncate", str(journal))
        assert proc.returncode == 2
        assert "another engine holds the journal" in proc.stderr
    finally:
        held.release()
    assert dnpair("journal", "verify", "--truncate", str(journal)).returncode == 0
