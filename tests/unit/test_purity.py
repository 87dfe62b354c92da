"""Machines stay pure: no clock, no I/O, no randomness, no adapters."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import machines

BANNED = {
    "time",
    "datetime",
    "asyncio",
    "random",
    "threading",
    "nado_protocol",
    "httpx",
    "websockets",
    "adapters",
    "socket",
    "subprocess",
    "os",
    "secrets",
    "uuid",
    "sqlite3",
}
MODULES = sorted(Path(machines.__file__).parent.glob("*.py"))


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            roots.add("__import__")
    return roots


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_machine_module_imports_nothing_impure(path):
    bad = imported_roots(path) & (BANNED | {"__import__"})
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_check_can_fail(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("from time import monotonic\nimport adapters.sim\n")
    assert imported_roots(sneaky) & BANNED == {"time", "adapters"}
