from __future__ import annotations

import os

import pytest

from engine.config import load_settings

# The deep tiers (thousands of runs / examples) run with `make deep`, not `make test`.
DEEP = os.environ.get("DNPAIR_DEEP_TESTS") == "1"
deep = pytest.mark.skipif(not DEEP, reason="deep tier: DNPAIR_DEEP_TESTS=1 (make deep)")


@pytest.fixture(scope="session")
def settings():
    """Default settings, whatever DN_* flags the developer's shell has."""
    return load_settings(env={})
