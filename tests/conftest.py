from __future__ import annotations

import os
import tempfile
import threading

import pytest

# Account state (locks, halt markers of real-venue accounts: engine/runtime/account.py) goes to a
# scratch folder for the whole test session, never the user's ~/.dnpair; subprocesses
# inherit it.
os.environ.setdefault("DNPAIR_STATE_DIR", tempfile.mkdtemp(prefix="dnpair-state-"))


@pytest.fixture(autouse=True)
def _no_leaked_threads():
    """Machines and the engine must not start threads; a test that leaks one fails."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"leaked threads: {leaked}"


# Scheduling only (what runs is unchanged): `make test` hands tests to its two xdist
# workers one at a time in collection order (--maxschedchunk 1), so the long ones go
# first and no long test starts last while the other worker sits idle. First the `slow`
# tests (subprocess runs on the wall clock, 5-15 s each), then these modules, heaviest
# first (measured CPU plus wall-clock waits); every other test keeps its place after them.
HEAVY_MODULES = (
    "tests/cli/test_exit_paths.py",
    "tests/chaos/test_chaos_tiers.py",
    "tests/paper/test_paper_chaos.py",
    "tests/damage/test_journal_damage.py",
    "tests/cli/test_journal_versions.py",
    "tests/chaos/test_scenarios.py",
    "tests/cli/test_one_engine_per_account.py",
    "tests/clients/test_ccxt_nado.py",
    "tests/scenarios/test_run_cli.py",
)


def _weight(item: pytest.Item) -> int:
    if item.get_closest_marker("slow") is not None:
        return 0
    path = item.nodeid.split("::", 1)[0]
    return 1 + HEAVY_MODULES.index(path) if path in HEAVY_MODULES else len(HEAVY_MODULES) + 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_weight)  # stable: collection order within each weight
