"""The adapter reads no clock and no global RNG: time and randomness are injected. The
factory (`dnpair run --venue nado`) is the one place that plugs the real clocks in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MODULES = sorted(
    p
    for p in (Path(__file__).parents[2] / "adapters" / "nado").glob("*.py")
    if p.name != "factory.py"
)
BANNED_IMPORTS = {"time", "datetime"}
BANNED_CALLS = {"time", "monotonic", "monotonic_ns", "time_ns", "perf_counter", "now", "utcnow"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_clock_reads(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & BANNED_IMPORTS, path.name
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in BANNED_IMPORTS, path.name
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id in {"time", "datetime", "random", "loop"}:
                assert node.func.attr not in BANNED_CALLS | {"random", "randint"}, path.name


def test_modules_found():
    assert {p.name for p in MODULES} >= {"mapping.py", "signing.py", "errors.py", "ratelimit.py"}
