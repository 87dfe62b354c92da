"""tests/adapter: the Nado adapter against `venue serve`. Most tests run in memory on the
virtual clock (memory.py); the few marked `loopback` are smoke tests over real loopback
sockets on the wall clock (support.py): the real httpx and websockets clients, the
round-trip latency, and `dnpair run --venue nado` against a `venue serve` process."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "loopback: smoke test over real loopback sockets on the wall clock"
    )
