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
