from __future__ import annotations

from pathlib import Path

from engine.ops.diagrams import machine_classes
from engine.ops.diagrams import render_all
from engine.runtime.cli import main

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


def _declared(cls):
    """(source, target, events, guards) of every declared transition, read from the class."""
    out = []
    pending = list(cls.states)
    while pending:
        state = pending.pop()
        pending.extend(state.states)
        for t in state.transitions:
            events = [str(e) for e in t.events if "." not in str(e)]
            guards = [str(c) for c in t.cond]
            out.extend((t.source.id, x.id, events, guards) for x in t.targets or [t.source])
    return out


def test_every_declared_transition_is_an_edge_with_its_event_and_guards():
    for slug, cls in machine_classes().items():
        text = (DIAGRAMS / f"{slug}.mmd").read_text(encoding="utf-8")
        edges = [ln.strip() for ln in text.splitlines() if "-->" in ln and "[*]" not in ln]
        declared = _declared(cls)
        assert len(edges) == len(declared), slug
        for source, target, events, guards in declared:
            head = f"{source} --> {target}"
            matching = [
                e
                for e in edges
                if e.startswith(head)
                and all(ev in e for ev in events)
                and (not guards or f"[{', '.join(guards)}]" in e)
            ]
            assert matching, f"{slug}: {head} {events} {guards} is not drawn"


def test_every_order_lifecycle_edge_is_drawn():
    from machines import order

    text = (DIAGRAMS / "order.mmd").read_text(encoding="utf-8")
    edges = [ln.strip() for ln in text.splitlines() if "-->" in ln and "[*]" not in ln]
    declared = [f"{s} --> {t} : {e}" for s, e, t in order.edges()]
    assert sorted(edges) == sorted(declared)
    assert "## order " in render_all()["README.md"]
    for state in order.TERMINAL:
        assert f"{state} --> [*]" in text


def test_the_guards_the_library_renderer_dropped_are_drawn():
    # python-statemachine's Mermaid renderer drew once the transitions sharing source, target
    # and event: these safety paths were missing from the committed diagrams.
    text = {slug: (DIAGRAMS / f"{slug}.mmd").read_text() for slug in ("session", "position_work")}
    assert "stop_loss_hit" in text["session"]
    assert "daily_loss_exceeded" in text["session"]
    assert "hedge_deadline_passed" in text["position_work"]


def test_svg_is_rendered_through_dot_and_its_failure_is_reported(tmp_path, capsys):
    import stat
    import subprocess

    import pytest

    from engine.ops.diagrams import write_svgs

    fake = tmp_path / "dot"
    # A stand-in for Graphviz: copies its DOT input to the -o file.
    fake.write_text('#!/bin/sh\ncat > "$3"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    written = write_svgs(tmp_path, dot=str(fake))
    # One SVG per machine class, and one for the order lifecycle table.
    assert {p.stem for p in written} == set(machine_classes()) | {"order"}
    assert "pending_cancel" in (tmp_path / "order.svg").read_text()
    assert "stop_loss_hit" in (tmp_path / "session.svg").read_text()

    fake.write_text("#!/bin/sh\necho broken >&2\nexit 1\n")
    with pytest.raises(subprocess.CalledProcessError):
        write_svgs(tmp_path, dot=str(fake))
