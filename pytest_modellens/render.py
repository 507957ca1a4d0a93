"""Pictures of a trace and of a diff (the only module that imports the graphviz package).

The graph is built as DOT with the ``graphviz`` package, then drawn by the system ``dot``
when there is one, else by ``graphviz-pure`` (a self-contained renderer installed with
this plugin), so ``pip install`` alone draws pictures. With neither, or when drawing
fails or takes longer than ``timeout`` seconds, the DOT source is kept beside the
picture as ``<name>.gv`` and :class:`RenderError` says so; nothing here hangs a run.

Model picture (TorchLens's ``show_model_graph``, from the snapshot data): ops labelled
with their output, inputs and outputs marked, parameters listed on the ops that use
them, modules as clusters; ``depth`` collapses deeper modules into one box each, and
``rolled`` draws a module called N times once, marked xN.

Diff picture: the union of both graphs, added green, removed red, changed orange with
``old -> new`` in the label, unchanged grey. On a big graph a whole added or removed
module is one box, the rest is cropped to ``hops`` steps around the changes, and modules
with nothing kept inside are collapsed into boxes, runs of numbered siblings
(``transformer.h.0..4``) into one.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import graphviz

from .differ import Change, ChangeKind, Comparison, compare
from .errors import RenderError
from .trace import ModuleInfo, Node, NodeKind, TensorSpec, Trace

#: Seconds a renderer may take before the picture is given up.
DEFAULT_TIMEOUT = 60.0
#: Diff graphs with more nodes than this are cropped to the neighbourhood of the changes.
CROP_ABOVE = 40
FORMATS = ("svg", "png")
#: (border, fill) of each kind of box.
COLORS = {
    "added": ("#2e7d32", "#c8e6c9"), "removed": ("#c62828", "#ffcdd2"),
    "changed": ("#ef6c00", "#ffe0b2"), "same": ("#9e9e9e", "#f5f5f5"),
    "input": ("#000000", "#98fb98"), "output": ("#000000", "#ff9999"),
    "param": ("#000000", "#e6e6e6"), "op": ("#000000", "#ffffff"),
    "condition": ("#000000", "#fff59d"), "module": ("#1565c0", "#e3f2fd"),
}  # fmt: skip
_MAX_LINE = 48


@dataclass(slots=True)
class _Vertex:
    """One box of the picture: a node, several rolled into one, or a collapsed module."""

    lines: list[str]
    clusters: tuple[str, ...]  # enclosing module clusters, outermost first
    state: str
    tooltip: str
    kind: str = "op"  # NodeKind value, or "box" for a collapsed group
    count: int = 1  # how many nodes it stands for


@dataclass(slots=True)
class _Graph:
    vertices: dict[str, _Vertex] = field(default_factory=dict)
    edges: dict[tuple[str, str], str] = field(default_factory=dict)
    clusters: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (label, state)
    title: list[str] = field(default_factory=list)


_Box = tuple[list[str], tuple[str, ...], str, str]  # label lines, clusters, state, what it counts


# -- clusters and labels -----------------------------------------------------------------


def _chain(scope: str, modules: dict[str, ModuleInfo], *, rolled: bool) -> tuple[str, ...]:
    """Cluster keys of a node's scope, outermost first: ``a``, ``a.b:2``, ...

    Containers that never ran (``nn.ModuleList``) get no cluster. A parent that ran as
    often as the scope's module is taken to hold the same call of it.
    """
    if not scope:
        return ()
    path, _, call = scope.partition(":")
    own = modules.get(path)
    parts = path.split(".")
    chain = []
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        info = modules.get(prefix)
        if prefix != path and (info is None or info.calls == 0):
            continue
        same_call = prefix == path or (info is not None and own is not None and info.calls == own.calls)
        chain.append(f"{prefix}:{call}" if call and same_call and not rolled else prefix)
    return tuple(chain)


def _cluster_label(key: str, modules: dict[str, ModuleInfo], *, rolled: bool) -> str:
    path = key.partition(":")[0]
    info = modules.get(path)
    label = f"{key} ({info.class_name})" if info else key
    if rolled and info is not None and info.calls > 1:
        label += f" x{info.calls}"
    return label


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_LINE else text[: _MAX_LINE - 3] + "..."


def _node_lines(node: Node, specs: dict[str, TensorSpec]) -> list[str]:
    lines = [node.node_id.rpartition("/")[2] if node.kind is NodeKind.OP else node.node_id]
    if len(node.outputs) > 2 and len(set(node.outputs)) == 1:
        lines.append(f"{len(node.outputs)} x {node.outputs[0]}")
    elif node.outputs:
        lines.append(", ".join(map(str, node.outputs)))
    for kind in ("param", "buffer"):
        used = [f"{ref.rpartition('.')[2]} {list(specs[ref].shape)}" for ref in node.inputs
                if ref.startswith(f"{kind}:") and ref in specs]  # fmt: skip
        line = f"{kind}s:"
        for item in used:  # wrapped, so a cell with many weights stays narrow
            if len(line) + len(item) > _MAX_LINE:
                lines.append(line.rstrip(","))
                line = " "
            line += f" {item},"
        if used:
            lines.append(line.rstrip(","))
    consts = [ref[len("const:") :] for ref in node.inputs if ref.startswith("const:")]
    if consts:
        lines.append("const: " + ", ".join(consts))
    return lines


def _node_state(node: Node) -> str:
    if node.kind is NodeKind.OP:
        return "param" if any(r.startswith("param:") for r in node.inputs) else "op"
    return node.kind.value


def _edge_source(ref: str) -> str | None:
    return None if ref.startswith(("param:", "buffer:", "const:")) else ref.partition("#")[0]


# -- collapsing ----------------------------------------------------------------------------


def _collapse(graph: _Graph, target: dict[str, str], labels: dict[str, _Box]) -> _Graph:
    """Replace vertices by the boxes ``target`` sends them to, described by ``labels``."""
    out = _Graph(clusters=graph.clusters, title=graph.title)
    for key, vertex in graph.vertices.items():
        box = target.get(key)
        if box is None:
            out.vertices[key] = vertex
            continue
        lines, clusters, state, _ = labels[box]
        entry = out.vertices.setdefault(box, _Vertex(list(lines), clusters, state, box, "box", count=0))
        entry.count += vertex.count
    for box, vertex in out.vertices.items():
        if box in labels:
            vertex.lines.append(_count(vertex.count, labels[box][3][:-1]))
    for (tail, head), state in graph.edges.items():
        tail, head = target.get(tail, tail), target.get(head, head)
        if tail == head and tail in labels:
            continue  # an edge inside a collapsed box
        if out.edges.get((tail, head)) in (None, "same"):
            out.edges[tail, head] = state
    used = {c for v in out.vertices.values() for c in v.clusters}
    out.clusters = {k: v for k, v in graph.clusters.items() if k in used}
    return out


def _module_box(key: str, chain: tuple[str, ...], modules: dict[str, ModuleInfo], state: str) -> _Box:
    return [_cluster_label(key, modules, rolled=False)], chain[: chain.index(key)], state, "ops"


# -- model picture ---------------------------------------------------------------------------


def trace_graph(trace: Trace, *, depth: int | None = None, rolled: bool = False) -> _Graph:
    """The picture of one trace as vertices, edges and clusters (before DOT)."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"'depth' must be an int of at least 1 or None (got {depth!r})")
    modules = {m.path: m for m in trace.modules}
    specs = {p.ref: p.spec for p in trace.params}
    graph = _Graph(title=[f"{trace.model}: {len(trace.op_nodes)} ops, {trace.param_count:,} params"])
    key_of: dict[str, str] = {}
    for node in trace.nodes:
        key = node.node_id
        if rolled and ":" in node.scope:
            key = f"{node.module_path}/{node.node_id.rpartition('/')[2]}"
        key_of[node.node_id] = key
        chain = _chain(node.scope, modules, rolled=rolled)
        if key in graph.vertices:
            graph.vertices[key].count += 1
        else:
            graph.vertices[key] = _Vertex(
                _node_lines(node, specs), chain, _node_state(node), node.node_id, node.kind.value
            )
        for cluster in chain:
            graph.clusters.setdefault(cluster, (_cluster_label(cluster, modules, rolled=rolled), "module"))
        for ref in node.inputs:
            source = _edge_source(ref)
            if source is not None and source in key_of:
                graph.edges[key_of[source], key] = "op"
    for vertex in graph.vertices.values():
        if vertex.count > 1:
            vertex.lines[0] += f" x{vertex.count}"
    if depth is None:
        return graph
    target, labels = {}, {}
    for key, vertex in graph.vertices.items():
        if len(vertex.clusters) >= depth:
            box = vertex.clusters[depth - 1]
            target[key] = f"module {box}"
            labels[f"module {box}"] = _module_box(box, vertex.clusters, modules, "module")
    return _collapse(graph, target, labels)


# -- diff picture ------------------------------------------------------------------------------


def _change_line(change: Change) -> str:
    _, _, detail, value = change.columns()
    return _clip(f"{detail}: {value}" if detail != "inputs" else "inputs rewired")


def diff_graph(comparison: Comparison, *, hops: int = 2, crop_above: int = CROP_ABOVE) -> _Graph:
    """The union of the old and new graphs, coloured by change, cropped when big."""
    old, new, matching = comparison.old, comparison.new, comparison.matching
    modules = {matching.module_path(m.path): m for m in old.modules} | {m.path: m for m in new.modules}
    per_node: defaultdict[str, list[Change]] = defaultdict(list)
    for change in comparison.changes:
        # A removed node's id may be taken by a new node; removed ones are keyed apart.
        if change.node_id is not None and change.kind is not ChangeKind.NODE_REMOVED:
            per_node[change.node_id].append(change)
    module_state, notes = {}, defaultdict(list)
    for change in comparison.changes:
        if change.kind.name.startswith("MODULE") or change.detail == "params":
            module_state[change.subject] = {"+": "added", "-": "removed"}.get(change.sign, "changed")
            if change.sign == "~" and change.kind is not ChangeKind.MODULE_RENAMED:
                notes[change.subject].append(_change_line(change))
    removed = {n.node_id for n in old.nodes if n.node_id not in matching.nodes}
    added = sum(1 for changes in per_node.values() if changes[0].kind is ChangeKind.NODE_ADDED)
    name = new.model if new.model == old.model else f"{old.model} -> {new.model}"
    graph = _Graph(title=[
        f"{name}: {_count(added, 'node')} added, {len(removed)} removed, {len(per_node) - added} changed",
        "green: added   red: removed   orange: changed   grey: unchanged",
    ])  # fmt: skip
    renamed_from = {target: path for path, target in matching.modules.items()}
    specs = {is_old: {p.ref: p.spec for p in t.params} for is_old, t in ((False, new), (True, old))}

    def add(node: Node, key: str, trace: Trace, scope: str) -> None:
        changes = [] if trace is old else per_node.get(node.node_id, [])
        if trace is old:
            state = "removed"
        else:
            state = "same" if not changes else "added" if changes[0].sign == "+" else "changed"
        lines = _node_lines(node, specs[trace is old])
        if state == "changed":
            shape_changed = any(c.kind is ChangeKind.OUTPUT_CHANGED for c in changes)
            lines = lines[: 1 if shape_changed else 2] + [_change_line(c) for c in changes[:4]]
        chain = _chain(scope, modules, rolled=False)
        graph.vertices[key] = _Vertex(lines, chain, state, node.node_id, node.kind.value)
        for cluster in chain:
            path = cluster.partition(":")[0]
            label = _cluster_label(cluster, modules, rolled=False)
            if path in renamed_from:
                label += f", was {renamed_from[path]}"
            label = "\n".join([label, *notes.get(path, [])])  # extra_repr old -> new, under the name
            graph.clusters.setdefault(cluster, (label, module_state.get(path, "same")))

    for node in new.nodes:
        add(node, node.node_id, new, node.scope)
    for node in old.nodes:
        if node.node_id in removed:
            path, _, call = node.scope.partition(":")
            scope = matching.module_path(path) + (f":{call}" if call else "") if node.scope else ""
            add(node, f"{node.node_id} (removed)", old, scope)
    # Dicts, not sets, keep the edges in graph order: the same DOT text on every run.
    new_edges = {
        (s, n.node_id): "added" for n in new.nodes for s in filter(None, map(_edge_source, n.inputs))
    }
    old_edges = {}
    for node in old.nodes:
        head = matching.nodes.get(node.node_id, f"{node.node_id} (removed)")
        for source in filter(None, map(_edge_source, node.inputs)):
            old_edges[matching.nodes.get(source, f"{source} (removed)"), head] = "removed"
    for edge, state in (new_edges | old_edges).items():
        if edge[0] in graph.vertices and edge[1] in graph.vertices:
            graph.edges[edge] = "same" if edge in new_edges and edge in old_edges else state
    if len(graph.vertices) <= crop_above:
        return graph
    return _crop(_fold_whole_modules(graph, modules), modules, hops=hops)


def _fold_whole_modules(graph: _Graph, modules: dict[str, ModuleInfo]) -> _Graph:
    """An added or removed module of many nodes becomes one green or red box."""
    target, labels = {}, {}
    for key, vertex in graph.vertices.items():
        state = vertex.state
        whole = next((c for c in vertex.clusters if graph.clusters[c][1] == state), None)
        if state in ("added", "removed") and whole is not None:
            target[key] = f"module {whole}"
            labels[f"module {whole}"] = _module_box(whole, vertex.clusters, modules, state)
    sizes = Counter(target.values())
    return _collapse(graph, {k: box for k, box in target.items() if sizes[box] >= 4}, labels)


def _crop(graph: _Graph, modules: dict[str, ModuleInfo], *, hops: int) -> _Graph:
    """Keep ``hops`` steps around the changed vertices; collapse the untouched rest into boxes."""
    neighbours: defaultdict[str, set[str]] = defaultdict(set)
    for tail, head in graph.edges:
        neighbours[tail].add(head)
        neighbours[head].add(tail)
    keep = {key for key, v in graph.vertices.items() if v.state != "same"}
    frontier = set(keep)
    for _ in range(hops):
        frontier = {n for key in frontier for n in neighbours[key]} - keep
        keep |= frontier
    open_clusters = {c for key in keep for c in graph.vertices[key].clusters}
    target: dict[str, str] = {}
    labels: dict[str, _Box] = {}
    last_in: dict[str, str] = {}  # cluster -> box (or vertex) of the latest vertex inside it
    for key, vertex in graph.vertices.items():
        chain = vertex.clusters
        closed = next((c for c in chain if c not in open_clusters), None)
        if key in keep:
            box = key
        elif closed is None:
            # Beside kept nodes in an open module: one "..." box per unbroken run of
            # them, so the boxes keep the order of the graph instead of looping back.
            scope = chain[-1] if chain else ""
            noun = f"{vertex.kind}s" if vertex.kind in ("input", "output") else "ops"
            box = f"... {scope} {noun} {len(labels)}"
            previous = last_in.get(scope, "")
            if previous.startswith(f"... {scope} {noun} "):
                box = previous
            labels.setdefault(box, (["..."], chain, "same", noun))
        else:
            box = f"module {closed}"
            state = graph.clusters.get(closed, ("", "same"))[1]
            labels[box] = _module_box(closed, chain, modules, state)
        if box != key:
            target[key] = box
        for cluster in ("", *chain):
            last_in[cluster] = box
    # Runs of numbered siblings of one class (transformer.h.0 .. h.4) become one box.
    runs: dict[str, str] = {}
    boxes = sorted((b for b in labels if b.startswith("module ")), key=_numbered)
    for previous, box in itertools.pairwise(boxes):
        if _continues(previous, box, modules, labels):
            runs[box] = runs.get(previous, previous)
    for first in set(runs.values()):
        last = max((b for b, f in runs.items() if f == first), key=_numbered)
        _, clusters, state, noun = labels[first]
        cls = modules[first[len("module ") :]].class_name
        label = f"{first[len('module ') :]}..{last.rpartition('.')[2]} ({cls})"
        labels[first] = ([label], clusters, state, noun)
    target = {key: runs.get(box, box) for key, box in target.items()}
    # A "..." standing for one node hides more than it saves: draw the node.
    sizes = Counter(target.values())
    target = {key: box for key, box in target.items() if not (box.startswith("... ") and sizes[box] == 1)}
    return _collapse(graph, target, labels)


def _numbered(box: str) -> tuple[str, int]:
    parent, _, last = box.rpartition(".")
    return (parent, int(last)) if last.isdigit() else (box, -1)


def _continues(previous: str, box: str, modules: dict[str, ModuleInfo], labels: dict[str, _Box]) -> bool:
    (p_parent, p_index), (parent, index) = _numbered(previous), _numbered(box)
    if p_parent != parent or p_index < 0 or index != p_index + 1:
        return False
    a, b = modules.get(previous[len("module ") :]), modules.get(box[len("module ") :])
    same_place = labels[previous][1:] == labels[box][1:]
    return a is not None and b is not None and a.class_name == b.class_name and same_place


# -- DOT and drawing -------------------------------------------------------------------------


def _text(lines: list[str], *, clip: bool = True) -> str:
    # Backslashes are DOT escapes; only our own line breaks may be.
    return graphviz.nohtml("\\n".join((_clip(s) if clip else s).replace("\\", "\\\\") for s in lines))


def to_dot(graph: _Graph) -> str:
    """DOT source of a picture graph."""
    dot = graphviz.Digraph(
        "lens",
        graph_attr={"rankdir": "TB", "fontname": "Helvetica", "fontsize": "11", "labelloc": "t",
                    "label": _text(graph.title, clip=False), "nodesep": "0.25", "ranksep": "0.3"},
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

    def fill(body: graphviz.Digraph, cluster: str) -> None:
        for key in members[cluster]:
            vertex = graph.vertices[key]
            color, fillcolor = COLORS[vertex.state]
            shape = {"input": "ellipse", "output": "ellipse", "condition": "hexagon", "box": "box3d"}.get(
                vertex.kind, "box"
            )
            body.node(names[key], _text(vertex.lines), color=color, fillcolor=fillcolor, shape=shape,
                      tooltip=_text([vertex.tooltip], clip=False), id=f"lens:{key}",
                      fontcolor="#757575" if vertex.state == "same" else "black")  # fmt: skip
        for child in children[cluster]:
            label, state = graph.clusters.get(child, (child, "same"))
            sub = graphviz.Digraph(name=f"cluster_{next(numbers)}")
            sub.attr(label=_text(label.split("\n")), color=COLORS[state][0], style="rounded", fontsize="10",
                     fontcolor=COLORS[state][0])  # fmt: skip
            fill(sub, child)
            body.subgraph(sub)

    numbers = itertools.count()
    fill(dot, "")
    for (tail, head), state in graph.edges.items():
        color = {"op": "#000000", "same": "#9e9e9e"}.get(state, COLORS.get(state, ("#000000",))[0])
        dot.edge(names[tail], names[head], color=color, style="dashed" if state == "removed" else "solid",
                 penwidth="2" if state in ("added", "removed") else "1")  # fmt: skip
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
    if fmt not in FORMATS:
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
    """Draw ``trace`` to ``path``; see the module docstring for ``depth`` and ``rolled``."""
    return draw(to_dot(trace_graph(trace, depth=depth, rolled=rolled)), path, timeout=timeout)


def render_diff(old: Trace | str, new: Trace | str, path: str | os.PathLike[str], *,
                comparison: Comparison | None = None, hops: int = 2, crop_above: int = CROP_ABOVE,
                timeout: float = DEFAULT_TIMEOUT) -> str:  # fmt: skip
    """Draw the difference of two traces (or snapshot texts) to ``path``.

    Pass the ``comparison`` already made by :func:`pytest_modellens.differ.compare` to
    skip making it again.
    """
    if comparison is None:
        comparison = compare(old, new)
    return draw(to_dot(diff_graph(comparison, hops=hops, crop_above=crop_above)), path, timeout=timeout)
