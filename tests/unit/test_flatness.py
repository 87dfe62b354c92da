"""One definition each of dust, flat and unhedged exposure (engine/core/flatness.py), and an
architecture check that no module grows a second one."""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import pytest

import engine
import machines
from engine.core.flatness import is_dust
from engine.core.flatness import is_flat
from engine.core.flatness import net_usd
from engine.core.flatness import unhedged_usd

D = Decimal
HOME = "flatness.py"
SOURCES = sorted(
    [*Path(engine.__file__).parent.glob("*.py"), *Path(machines.__file__).parent.glob("*.py")]
)


def test_dust_is_below_one_increment_or_worth_at_most_dust_usd_at_mid():
    assert is_dust(D(0), None, D(1))
    assert is_dust(D("0.0004"), None, D(1), D("0.001"))  # cannot be traded
    assert not is_dust(D("0.001"), None, D(1), D("0.001"))  # no price: not dust
    assert is_dust(D("0.01"), D(100), D(1))  # exactly dust_usd
    assert not is_dust(D("-0.011"), D(100), D(1))  # sign does not matter
    assert is_dust(D("-0.01"), D(100), D(1))


def test_flat_is_every_leg_dust():
    mids = {4: D(3000), 8: D(150)}
    assert is_flat({4: D(0), 8: D("0.001")}, mids, D(1))
    assert not is_flat({4: D("0.001"), 8: D(0)}, mids, D(1))  # 3 USD of ETH
    assert is_flat({4: D("0.0001")}, {}, D(1), {4: D("0.001")})
    assert not is_flat({4: D("0.001")}, {}, D(1), {4: D("0.001")})


def test_unhedged_is_the_absolute_net_delta_of_the_legs_with_a_mid():
    mids = {4: D(3000), 8: D(150), 9: None}
    assert net_usd({4: D("0.1"), 8: D(-2)}, mids) == D(0)
    assert net_usd({4: D("0.1"), 8: D(-1)}, mids) == D(150)
    assert unhedged_usd({4: D("-0.1"), 8: D(1)}, mids) == D(150)
    assert unhedged_usd({4: D("0.1"), 9: D(5)}, mids) == D(300)  # no mid: not counted


def _names(node: ast.AST) -> set[str]:
    out = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            out.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            out.add(sub.attr)
    return out


def second_definitions(path: Path) -> list[str]:
    """Comparisons against a dust threshold (a definition of dust / flat) and sums of
    position x mid into a net (a definition of unhedged exposure), outside HOME; each
    named by its file and the function it is in."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    owner: dict[int, str] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for sub in ast.walk(fn):
                owner[id(sub)] = fn.name  # innermost wins: walked after its parent
    for node in ast.walk(tree):
        where = f"{path.name}:{owner.get(id(node), '<module>')}"
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any("dust" in n.lower() for side in sides for n in _names(side)):
                found.append(f"{where}: compares with a dust threshold")
        elif (
            isinstance(node, ast.AugAssign)
            and isinstance(node.op, ast.Add)
            and isinstance(node.value, ast.BinOp)
            and isinstance(node.value.op, ast.Mult)
            and "mid" in _names(node.value)
            and isinstance(node.target, ast.Name)
            and "net" in node.target.id
        ):
            found.append(f"{where}: sums position x mid into a net")
    return found


ALLOWED = {
    # A what-if, not a definition: the net once every working order filled its remainder.
    "exposure.py:in_flight_hedge_usd: sums position x mid into a net",
    # A significance floor for a HALT's stated exposure (2 x dust), not a flat test.
    "invariants.py:_check_flat: compares with a dust threshold",
}


@pytest.mark.parametrize("path", [p for p in SOURCES if p.name != HOME], ids=lambda p: p.name)
def test_no_second_definition_of_dust_flat_or_unhedged(path):
    assert [f for f in second_definitions(path) if f not in ALLOWED] == []


def test_the_check_can_fail(tmp_path):
    rogue = tmp_path / "rogue.py"
    rogue.write_text(
        "def flat(qty, quote, p):\n"
        "    return abs(qty) * quote.mid <= p.dust_usd\n"
        "def unhedged(legs):\n"
        "    net = 0\n"
        "    for qty, quote in legs:\n"
        "        net += qty * quote.mid\n"
        "    return abs(net)\n",
        encoding="utf-8",
    )
    assert second_definitions(rogue) == [
        "rogue.py:flat: compares with a dust threshold",
        "rogue.py:unhedged: sums position x mid into a net",
    ]
