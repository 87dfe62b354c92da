from __future__ import annotations

from pathlib import Path

from engine.cli import main
from engine.diagrams import machine_classes
from engine.diagrams import render_all

DIAGRAMS = Path(__file__).resolve().parents[2] / "diagrams"


def test_committed_diagrams_match_the_code():
    for name, text in render_all().items():
        path = DIAGRAMS / name
        assert path.exists(), f"missing diagrams/{name}: run `make diagrams`"
        assert path.read_text(encoding="utf-8") == text, f"diagrams/{name} is stale"


def test_rendering_is_byte_stable():
    assert render_all() == render_all()


def test_check_flags_a_stale_diagram(tmp_path, capsys):
    assert main(["diagrams", "--out", str(tmp_path)]) == 0
    assert main(["diagrams", "--out", str(tmp_path), "--check"]) == 0
    victim = tmp_path / f"{next(iter(machine_classes()))}.mmd"
    victim.write_text(victim.read_text() + "%% edited by hand\n")
    assert main(["diagrams", "--out", str(tmp_path), "--check"]) == 1
    assert victim.name in capsys.readouterr().err


def test_every_machine_has_a_diagram_section():
    readme = render_all()["README.md"]
    for slug in machine_classes():
        assert f"## {slug} " in readme
