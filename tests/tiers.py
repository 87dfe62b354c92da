"""Test tiers: the deep tiers (thousands of runs or examples) run with `make deep`
(DNPAIR_DEEP_TESTS=1, marked slow), never in `make test`."""

from __future__ import annotations

import os

import pytest

DEEP = os.environ.get("DNPAIR_DEEP_TESTS") == "1"
deep = pytest.mark.skipif(not DEEP, reason="deep tier: DNPAIR_DEEP_TESTS=1 (make deep)")
