"""Render every machine class to Mermaid (committed, byte-stable) and, if Graphviz is
installed, SVG (not committed: Graphviz stamps its version into the file).

The diagrams are drawn from the declared transitions themselves, one edge per declared
transition: python-statemachine's own Mermaid renderer draws once the transitions that share
source, target and event but differ by guard, which hid safety paths (`stop_loss_hit`,
`hedge_deadline_passed`, ...) from review. Edge labels read `event [guards] / actions`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import shutil
import subprocess
from collections.abc import Iterable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

import machines
from machines import order
from machines.base import PureMachine

__all__ = [
    "Edge",
    "declared_edges",
    "machine_classes",
    "render_all",
    "render_dot",
    "render_mermaid",
    "render_order_dot",
    "render_order_mermaid",
    "write_diagrams",
    "write_svgs",
]


def _slug(name: str) -> str:
    name = name.removesuffix("Machine")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def machine_classes() -> dict[str, type[PureMachine]]:
    """Every concrete PureMachine defined in a machines.* module, keyed by file slug."""
    found: dict[str, type[PureMachine]] = {}
    for info in sorted(pkgutil.iter_modules(machines.__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"machines.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            own = cls.__module__ == module.__name__
            if own and issubclass(cls, PureMachine) and cls is not PureMachine:
                found[_slug(cls.__name__)] = cls
    return dict(sorted(found.items()))


@attrs.frozen
class Edge:
    """One declared transition to one target (a targetless transition loops on its source)."""

    source: str
    target: str
    events: tuple[str, ...]
    guards: tuple[str, ...]
    actions: tuple[str, ...]

    @property
    def label(self) -> str:
        parts = [" ".join(self.events)] if self.events else []
        if self.guards:
            parts.append(f"[{', '.join(self.guards)}]")
        if self.actions:
            parts.append(f"/ {', '.join(self.actions)}")
        return " ".join(parts)


def _walk(states: Iterable[Any]) -> Iterator[Any]:
    for state in states:
        yield state
        yield from _walk(state.states)


# PureMachine's generic hooks that tell the engine of every entry and exit: plumbing, not
# a machine's own actions, so not drawn.
ENGINE_HOOKS = frozenset({"on_enter_state", "on_exit_state", "before_transition"})


def _callbacks(cls: type, specs: Iterable[Any]) -> tuple[str, ...]:
    """Callback names that run: explicit ones, and naming conventions the class defines."""
    names = set(dir(cls)) - ENGINE_HOOKS
    return tuple(str(c) for c in specs if not c.is_convention or c.func in names)


def _event_ids(transition: Any) -> tuple[str, ...]:
    ids = [str(e) for e in transition.events]
    # The library registers `done_state_x` also as `done.state.x`: keep one spelling.
    return tuple(dict.fromkeys(i for i in ids if not ("." in i and i.replace(".", "_") in ids)))


def declared_edges(cls: type[PureMachine]) -> list[Edge]:
    """Every declared transition of the class, in declaration order, one edge per target."""
    return [
        Edge(
            source=t.source.id,
            target=target.id,
            events=_event_ids(t),
            guards=tuple(str(c) for c in t.cond),
            actions=_callbacks(cls, t.on),
        )
        for state in _walk(cls.states)
        for t in state.transitions
        for target in t.targets or [t.source]
    ]


def _descendants(state: Any) -> set[str]:
    return {s.id for s in _walk(state.states)}


def render_mermaid(cls: type[PureMachine]) -> str:
    """A Mermaid stateDiagram-v2 of the class: every state, entry/exit action and edge."""
    edges = declared_edges(cls)
    lines = ["stateDiagram-v2", "    direction LR"]
    placed: set[int] = set()

    def scope(states: list[Any], indent: int) -> None:
        pad = "    " * indent
        initial = next((s for s in states if s.initial), None)
        if initial is not None:
            lines.append(f"{pad}[*] --> {initial.id}")
        for state in states:
            if state.states:
                lines.append(f'{pad}state "{state.name}" as {state.id} {{')
                scope(list(state.states), indent + 1)
                lines.append(f"{pad}}}")
            elif state.name != state.id:
                lines.append(f'{pad}state "{state.name}" as {state.id}')
            for kind, specs in (("entry", state.enter), ("exit", state.exit)):
                names = _callbacks(cls, specs)
                if names:
                    lines.append(f"{pad}{state.id} : {kind} / {', '.join(names)}")
        lines.extend(f"{pad}{s.id} --> [*]" for s in states if s.final)
        # Edges whose ends both lie inside one compound state are drawn inside it.
        inner = {s.id: _descendants(s) for s in states if s.states}
        here = {s.id for s in states} | set().union(*inner.values())
        for n, e in enumerate(edges):
            if n in placed or e.source not in here or e.target not in here:
                continue
            if any(e.source in d and e.target in d for d in inner.values()):
                continue
            placed.add(n)
            label = f" : {e.label}" if e.label else ""
            lines.append(f"{pad}{e.source} --> {e.target}{label}")

    scope(list(cls.states), 1)
    return "\n".join(lines) + "\n"


def render_dot(cls: type[PureMachine]) -> str:
    """The same edges as Graphviz DOT (for SVG); byte-stable, no object ids."""
    edges = declared_edges(cls)
    out = [f'digraph "{cls.__name__}" {{', "  rankdir=LR;", "  node [shape=box, style=rounded];"]

    def cluster(states: list[Any], indent: int) -> None:
        pad = "  " * indent
        for state in states:
            if state.states:
                out.append(f'{pad}subgraph "cluster_{state.id}" {{ label="{state.name}";')
                cluster(list(state.states), indent + 1)
                out.append(f"{pad}}}")
            else:
                shape = ", peripheries=2" if state.final else ""
                out.append(f'{pad}"{state.id}" [label="{state.name}"{shape}];')

    cluster(list(cls.states), 1)
    for e in edges:
        label = e.label.replace('"', r"\"")
        out.append(f'  "{e.source}" -> "{e.target}" [label="{label}"];')
    out.append("}")
    return "\n".join(out) + "\n"


def render_order_mermaid() -> str:
    """The order lifecycle table (`machines.order`): one edge per declared (state, event)."""
    lines = ["stateDiagram-v2", "    direction LR", f"    [*] --> {order.PENDING}"]
    lines.extend(f"    {s} --> [*]" for s in order.STATES if s in order.TERMINAL)
    lines.extend(f"    {source} --> {target} : {event}" for source, event, target in order.edges())
    return "\n".join(lines) + "\n"


def render_order_dot() -> str:
    out = ['digraph "order" {', "  rankdir=LR;", "  node [shape=box, style=rounded];"]
    for s in order.STATES:
        shape = ", peripheries=2" if s in order.TERMINAL else ""
        out.append(f'  "{s}" [label="{s}"{shape}];')
    out.extend(f'  "{s}" -> "{t}" [label="{e}"];' for s, e, t in order.edges())
    out.append("}")
    return "\n".join(out) + "\n"


def render_all() -> dict[str, str]:
    """File name → content for every committed diagram file, README included."""
    files: dict[str, str] = {}
    sections = [
        "# State diagrams\n",
        "Generated by `make diagrams` (`dnpair diagrams`) from the machine classes in",
        "`machines/`. Do not edit: CI fails when these differ from the code. Every declared",
        "transition is one edge, labelled `event [guards] / actions` (a transition with no",
        "event fires as soon as its guards hold; a targetless one loops on its source).",
        "With Graphviz's `dot` on the PATH (`apt-get install graphviz`), `make diagrams` also",
        "writes an SVG per machine beside these files (not committed).\n",
    ]
    for slug, cls in machine_classes().items():
        text = render_mermaid(cls)
        files[f"{slug}.mmd"] = text
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0]
        sections.append(f"## {slug} (`{cls.__module__}.{cls.__name__}`)\n\n{doc}\n")
        sections.append(f"```mermaid\n{text}```\n")
    text = render_order_mermaid()
    files["order.mmd"] = text
    doc = (order.__doc__ or "").split("\n\n")[0]
    sections.append(f"## order (`machines.order.TRANSITIONS`, a plain table)\n\n{doc}\n")
    sections.append(f"```mermaid\n{text}```\n")
    files["README.md"] = "\n".join(sections)
    return files


def write_diagrams(out: Path, *, check: bool) -> list[str]:
    """Write (or with check=True, compare) the diagrams. Returns the files that differ."""
    files = render_all()
    differing = []
    for name, text in files.items():
        path = out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            differing.append(name)
            if not check:
                out.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    stale = {p.name for p in out.glob("*.mmd")} - set(files) if out.exists() else set()
    for name in sorted(stale):
        differing.append(name)
        if not check:
            (out / name).unlink()
    return differing


def write_svgs(out: Path, dot: str | None = None) -> list[Path]:
    """SVG per machine through Graphviz. Raises FileNotFoundError when `dot` is absent and
    subprocess.CalledProcessError when it fails: the caller says so instead of hiding it."""
    binary = dot or shutil.which("dot")
    if binary is None:
        raise FileNotFoundError("Graphviz 'dot' not found")
    sources = {slug: render_dot(cls) for slug, cls in machine_classes().items()}
    sources["order"] = render_order_dot()
    written = []
    for slug, text in sources.items():
        path = out / f"{slug}.svg"
        subprocess.run(
            [binary, "-Tsvg", "-o", str(path)],
            input=text.encode(),
            check=True,
            capture_output=True,
            timeout=60,
        )
        written.append(path)
    return written
