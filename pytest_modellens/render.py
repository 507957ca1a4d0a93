"""Pictures of a trace and of a diff, drawn as DOT (the only module that imports graphviz).

:mod:`pytest_modellens.picture` says what a picture shows; here it becomes DOT with the
``graphviz`` package, coloured by the state of each box, and is drawn by the system ``dot``
when there is one, else by ``graphviz-pure`` (a self-contained renderer installed with
this plugin), so ``pip install`` alone draws pictures. With neither, or when drawing
fails or takes longer than ``timeout`` seconds, the DOT source is kept beside the
picture as ``<name>.gv`` and :class:`RenderError` says so; nothing here hangs a run.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import graphviz

from .changes import Comparison
from .errors import RenderError
from .picture import CROP_ABOVE, PICTURE_FORMATS, Graph, Shape, State, clip, diff_graph, trace_graph
from .trace import Trace

#: Seconds a renderer may take before the picture is given up.
DEFAULT_TIMEOUT = 60.0
#: (border, fill) of each state of a box (and border of each state of an edge).
COLORS = {
    State.ADDED: ("#2e7d32", "#c8e6c9"), State.REMOVED: ("#c62828", "#ffcdd2"),
    State.CHANGED: ("#ef6c00", "#ffe0b2"), State.SAME: ("#9e9e9e", "#f5f5f5"),
    State.INPUT: ("#000000", "#98fb98"), State.OUTPUT: ("#000000", "#ff9999"),
    State.PARAM: ("#000000", "#e6e6e6"), State.OP: ("#000000", "#ffffff"),
    State.CONDITION: ("#000000", "#fff59d"), State.MODULE: ("#1565c0", "#e3f2fd"),
}  # fmt: skip
#: Graphviz shape of each kind of box.
SHAPES = {Shape.INPUT: "ellipse", Shape.OUTPUT: "ellipse", Shape.CONDITION: "hexagon", Shape.BOX: "box3d",
          Shape.OP: "box"}  # fmt: skip


def _text(lines: list[str], *, clipped: bool = True) -> str:
    """A DOT label of ``lines``, each cut to the longest line a box shows unless not ``clipped``."""
    # Backslashes are DOT escapes; only our own line breaks may be.
    return graphviz.nohtml("\\n".join((clip(s) if clipped else s).replace("\\", "\\\\") for s in lines))


def to_dot(graph: Graph) -> str:
    """DOT source of a picture graph."""
    dot = graphviz.Digraph(
        "lens",
        graph_attr={"rankdir": "TB", "fontname": "Helvetica", "fontsize": "11", "labelloc": "t",
                    "label": _text(graph.title, clipped=False), "nodesep": "0.25", "ranksep": "0.3"},
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica", "fontsize": "10"},
        edge_attr={"arrowsize": "0.6"},
    )  # fmt: skip
    names = {key: f"n{k}" for k, key in enumerate(graph.vertices)}
    members: defaultdict[str, list[str]] = defaultdict(list)
    children: defaultdict[str, list[str]] = defaultdict(list)
    for key, vertex in graph.vertices.items():
        members[vertex.clusters[-1] if vertex.clusters else ""].append(key)
        for parent, child in zip(("", *vertex.clusters), vertex.clusters):
            if child not in children[parent]:
                children[parent].append(child)

    numbers = itertools.count()  # cluster names, in the order they are written

    def add_contents(body: graphviz.Digraph, cluster: str) -> None:
        """Write the vertices of ``cluster`` and, nested, its child clusters into ``body``."""
        for key in members[cluster]:
            vertex = graph.vertices[key]
            color, fillcolor = COLORS[vertex.state]
            body.node(names[key], _text(vertex.lines), color=color, fillcolor=fillcolor,
                      shape=SHAPES[vertex.kind],
                      tooltip=_text([vertex.tooltip], clipped=False), id=f"lens:{key}",
                      fontcolor="#757575" if vertex.state is State.SAME else "black")  # fmt: skip
        for child in children[cluster]:
            label, state = graph.clusters.get(child, (child, State.SAME))
            sub = graphviz.Digraph(name=f"cluster_{next(numbers)}")
            sub.attr(label=_text(label.split("\n")), color=COLORS[state][0], style="rounded", fontsize="10",
                     fontcolor=COLORS[state][0])  # fmt: skip
            add_contents(sub, child)
            body.subgraph(sub)

    add_contents(dot, "")
    for (tail, head), state in graph.edges.items():
        dot.edge(names[tail], names[head], color=COLORS[state][0],
                 style="dashed" if state is State.REMOVED else "solid",
                 penwidth="2" if state in (State.ADDED, State.REMOVED) else "1")  # fmt: skip
    return dot.source


def find_renderer() -> list[str] | None:
    """The command that draws DOT: system ``dot``, else ``graphviz-pure`` beside Python or on PATH."""
    dot = shutil.which("dot")
    if dot:
        return [dot]
    exe = "graphviz-pure.exe" if os.name == "nt" else "graphviz-pure"
    beside = Path(sys.executable).parent / exe
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    pure = shutil.which("graphviz-pure")
    return [pure] if pure else None


def draw(source: str, path: str | os.PathLike[str], *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Draw DOT ``source`` to ``path`` (``.svg``, ``.png``, or ``.gv`` for the source itself)."""
    target = Path(path)
    fmt = target.suffix.lower().lstrip(".")
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("gv", "dot"):
        target.write_text(source, encoding="utf-8")
        return str(target)
    if fmt not in PICTURE_FORMATS:
        raise RenderError(f"picture file must end in .svg, .png or .gv (got {target.name!r})")
    kept = target.with_suffix(".gv")
    renderer = find_renderer()
    if renderer is None:
        kept.write_text(source, encoding="utf-8")
        raise RenderError(
            f"no Graphviz renderer found (no `dot` on PATH, no `graphviz-pure` beside {sys.executable} "
            f"or on PATH); the graph is kept as DOT in {kept}; `pip install graphviz-pure` draws it"
        )
    try:
        done = subprocess.run([*renderer, f"-T{fmt}", f"-o{target}"], input=source.encode("utf-8"),
                              capture_output=True, timeout=timeout, check=False)  # fmt: skip
        problem = f"exit status {done.returncode}: {done.stderr.decode(errors='replace').strip()[-300:]}"
        failed = done.returncode != 0 or not target.is_file()
    except subprocess.TimeoutExpired:
        problem, failed = f"it took longer than {timeout:g} s", True
    except OSError as error:
        problem, failed = str(error), True
    if failed:
        target.unlink(missing_ok=True)
        kept.write_text(source, encoding="utf-8")
        raise RenderError(
            f"{renderer[0]} could not draw {target.name} ({problem}); the graph is kept as DOT in {kept}"
        )
    return str(target)


def render_trace(trace: Trace, path: str | os.PathLike[str], *, depth: int | None = None,
                 rolled: bool = False, timeout: float = DEFAULT_TIMEOUT) -> str:  # fmt: skip
    """Draw ``trace`` to ``path``; :mod:`pytest_modellens.picture` says what ``depth`` and ``rolled`` do."""
    return draw(to_dot(trace_graph(trace, depth=depth, rolled=rolled)), path, timeout=timeout)


def render_diff(old: Trace | str, new: Trace | str, path: str | os.PathLike[str], *,
                comparison: Comparison | None = None, hops: int = 2, crop_above: int = CROP_ABOVE,
                timeout: float = DEFAULT_TIMEOUT) -> str:  # fmt: skip
    """Draw the difference of two traces (or snapshot texts) to ``path``.

    Pass the ``comparison`` already made by :func:`pytest_modellens.differ.compare` to
    skip making it again (the differ, and so deepdiff, is imported only without one).
    """
    if comparison is None:
        from .differ import compare  # here, so that a model picture never loads deepdiff

        comparison = compare(old, new)
    return draw(to_dot(diff_graph(comparison, hops=hops, crop_above=crop_above)), path, timeout=timeout)
