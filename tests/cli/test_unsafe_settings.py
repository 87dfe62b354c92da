"""Issue 12 item 5 (RELIABILITY C1): settings that cannot be safe are exit 2 with the
reason before anything is sent, not a halt later."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.journal import read_records
from tests.cli.support import one_line_error
from tests.cli.support import virtual_run


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"DN_DUST_USD": "100"}, "DN_DUST_USD=100 (env) must be below DN_SIZE_USD=100"),
        ({"DN_SIZE_USD": "50", "DN_DUST_USD": "99"}, "a whole naked leg would count as flat"),
        (
            {"DN_EXIT_ATTEMPT_TIMEOUT_S": "40"},
            "DN_EXIT_ATTEMPT_TIMEOUT_S=40 (env) is longer than DN_EXIT_BUDGET_S=30",
        ),
        (
            {"DN_FILL_TIMEOUT_S": "20", "DN_EXIT_BUDGET_S": "10"},
            "DN_FILL_TIMEOUT_S=20 (env) is longer than DN_EXIT_BUDGET_S=10",
        ),
        (
            {"DN_MAX_POSITION_USD": "50"},
            "DN_MAX_POSITION_USD=50 (env) is below DN_SIZE_USD=100",
        ),
        ({"DN_SIZE_USD": "5"}, "below ETH-PERP's minimum order value on the venue (10 USD)"),
    ],
    ids=["dust=size", "dust>size", "exit-attempt", "fill-timeout", "max-position", "min-notional"],
)
def test_unsafe_settings_exit_2_with_the_reason(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    journal = tmp_path / "j.db"
    proc = virtual_run(journal, "--cycles", "1", **env)
    line = one_line_error(proc)
    assert says in line
    assert "[SUMMARY]" not in proc.stdout
    sent = [r for r in read_records(journal) if r.kind == "intent"] if journal.exists() else []
    assert sent == []


def test_a_safe_small_size_still_trades(tmp_path: Path) -> None:
    proc = virtual_run(tmp_path / "j.db", "--cycles", "1", DN_SIZE_USD="20", DN_DUST_USD="1")
    assert proc.returncode == 0, proc.stderr
