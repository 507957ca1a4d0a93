"""What a picture shows, as plain data: boxes, edges and module clusters, before any DOT.

Model picture (TorchLens's ``show_model_graph``, from the snapshot data): ops labelled
with their output, inputs and outputs marked, parameters listed on the ops that use
them, modules as clusters; ``depth`` collapses deeper modules into one box each, and
``rolled`` draws a module called N times once, marked xN.

Diff picture: the union of both graphs, added green, removed red, changed orange with
``old -> new`` in the label, unchanged grey. On a big graph a whole added or removed
module is one box, the rest is cropped to ``hops`` steps around the changes (not through
hubs, such as the input every step of a loop reads), and modules with nothing kept inside
are collapsed into boxes, runs of numbered siblings (``transformer.h.0..4``, of any
classes) and of back-to-back calls of one module (``cell:1..5000``) into one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from . import ids
from .changes import Change, ChangeKind, Comparison, Effect, count, whole_modules
from .gcpause import gc_paused
from .match import numbered_runs
from .trace import ModuleInfo, Node, NodeKind, TensorSpec, Trace

#: Diff graphs with more nodes than this are cropped to the neighbourhood of the changes.
CROP_ABOVE = 40
#: A vertex with more edges than this is a hub: the crop keeps it but does not spread through it.
HUB_DEGREE = 32
#: Numbered siblings of different classes fold into one box from this many on.
MIXED_RUN = 3
#: Longest line of a label; longer ones are cut with ``...``.
MAX_LINE = 48
#: The file formats a picture can be drawn in (and ``gv`` for the DOT source itself).
PICTURE_FORMATS = ("svg", "png")


class State(str, Enum):
    """What colours a box or an edge: a change in a diff, a role in a model picture."""

    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"
    SAME = "same"
    INPUT = "input"
    OUTPUT = "output"
    OP = "op"
    PARAM = "param"  # an op that uses parameters
    CONDITION = "condition"
    MODULE = "module"

    @classmethod
    def of(cls, effect: Effect) -> State:
        return cls(effect.word)


class Shape(str, Enum):
    """What a box is: a node of one kind, or a collapsed group of nodes."""

    INPUT = "input"
    OP = "op"
    CONDITION = "condition"
    OUTPUT = "output"
    BOX = "box"

    @classmethod
    def of(cls, kind: NodeKind) -> Shape:
        return cls.BOX if kind is NodeKind.MODULE else cls(kind.value)  # a module node is a box


@dataclass(slots=True)
class Vertex:
    """One box of the picture: a node, several rolled into one, or a collapsed module."""

    lines: list[str]
    clusters: tuple[str, ...]  # enclosing module clusters, outermost first
    state: State
    tooltip: str
    kind: Shape = Shape.OP
    count: int = 1  # how many nodes it stands for


@dataclass(slots=True)
class Graph:
    """A whole picture: vertices by key, edges with their state, clusters, title lines."""

    vertices: dict[str, Vertex] = field(default_factory=dict)
    edges: dict[tuple[str, str], State] = field(default_factory=dict)  # (tail, head) -> state
    clusters: dict[str, tuple[str, State]] = field(default_factory=dict)  # key -> (label, state)
    title: list[str] = field(default_factory=list)


class _Box(NamedTuple):
    """What a collapsed box says and where it sits; it counts the nodes inside as ``noun``s."""

    lines: list[str]
    clusters: tuple[str, ...]
    state: State
    noun: str


def clip(text: str) -> str:
    """``text`` cut to :data:`MAX_LINE` characters."""
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


# -- clusters and labels -----------------------------------------------------------------


def _cluster_chain(scope: str, modules: dict[str, ModuleInfo], *, rolled: bool) -> tuple[str, ...]:
    """Cluster keys of a node's scope, outermost first: ``a``, ``a.b:2``, ...

    Containers that never ran (``nn.ModuleList``) get no cluster. A parent that ran as
    often as the scope's module is taken to hold the same call of it.
    """
    if not scope:
        return ()
    path, call = ids.split_scope(scope)
    own = modules.get(path)
    chain = []
    for prefix in ids.ancestors(path):
        info = modules.get(prefix)
        if prefix != path and (info is None or info.calls == 0):
            continue
        same_call = prefix == path or (info is not None and own is not None and info.calls == own.calls)
        chain.append(ids.scope(prefix, call) if same_call and not rolled else prefix)
    return tuple(chain)


def _cluster_label(key: str, modules: dict[str, ModuleInfo], *, rolled: bool) -> str:
    path = ids.scope_path(key)
    info = modules.get(path)
    label = f"{key} ({info.class_name})" if info else key
    if rolled and info is not None and info.calls > 1:
        label += f" x{info.calls}"
    return label


def _node_lines(node: Node, specs: dict[str, TensorSpec]) -> list[str]:
    """A node's label: its name, its outputs, the parameters and constants it takes."""
    lines = [ids.op_part(node.node_id) if node.kind is NodeKind.OP else node.node_id]
    if len(node.outputs) > 2 and len(set(node.outputs)) == 1:
        lines.append(f"{len(node.outputs)} x {node.outputs[0]}")
    elif node.outputs:
        lines.append(", ".join(map(str, node.outputs)))
    for kind in (ids.RefKind.PARAM, ids.RefKind.BUFFER):
        used = [f"{ids.leaf(name)} {specs[ref].shape_text}" for ref in node.inputs
                for ref_kind, name in [ids.split_ref(ref)] if ref_kind is kind and ref in specs]  # fmt: skip
        line = f"{kind.value}s:"
        for item in used:  # wrapped, so a cell with many weights stays narrow
            if len(line) + len(item) > MAX_LINE:
                lines.append(line.rstrip(","))
                line = " "
            line += f" {item},"
        if used:
            lines.append(line.rstrip(","))
    consts = [name for kind, name in map(ids.split_ref, node.inputs) if kind is ids.RefKind.CONST]
    if consts:
        lines.append("const: " + ", ".join(consts))
    if node.kind is NodeKind.CONDITION:  # which way the branch went: `result: true`
        lines += [
            f"{key}: {str(value).lower() if isinstance(value, bool) else value}" for key, value in node.args
        ]
    return lines


def _node_state(node: Node) -> State:
    if node.kind is NodeKind.OP:
        return State.PARAM if any(map(ids.is_param, node.inputs)) else State.OP
    return State(node.kind.value)


#: The box shape of each node kind.
_SHAPE_OF = {kind: Shape.of(kind) for kind in NodeKind}


def _edge_source(ref: str) -> str | None:
    """The node an input reference comes from; None for parameters, buffers and constants."""
    return ids.ref_node(ref) if ids.is_node_ref(ref) else None


# -- collapsing ----------------------------------------------------------------------------


def _collapse(graph: Graph, target: dict[str, str], boxes: dict[str, _Box]) -> Graph:
    """Replace vertices by the boxes ``target`` sends them to, described by ``boxes``."""
    out = Graph(clusters=graph.clusters, title=graph.title)
    vertices, edges, same = out.vertices, out.edges, State.SAME
    for key, vertex in graph.vertices.items():
        box_key = target.get(key)
        if box_key is None:
            vertices[key] = vertex
            continue
        entry = vertices.get(box_key)
        if entry is None:
            box = boxes[box_key]
            entry = vertices[box_key] = Vertex(
                list(box.lines), box.clusters, box.state, box_key, Shape.BOX, count=0
            )
        entry.count += vertex.count
    for key, vertex in vertices.items():
        if key in boxes:
            vertex.lines.append(count(vertex.count, boxes[key].noun))
    for edge, state in graph.edges.items():
        tail, head = edge
        if tail in target or head in target:
            tail, head = target.get(tail, tail), target.get(head, head)
            edge = (tail, head)
        if tail == head and tail in boxes:
            continue  # an edge inside a collapsed box
        drawn = edges.get(edge)
        if drawn is None or drawn is same:
            edges[edge] = state
    used = {c for v in out.vertices.values() for c in v.clusters}
    out.clusters = {k: v for k, v in graph.clusters.items() if k in used}
    return out


def _module_box(key: str, chain: tuple[str, ...], modules: dict[str, ModuleInfo], state: State) -> _Box:
    """The box of the module cluster ``key`` of a vertex's ``chain``, collapsed."""
    return _Box([_cluster_label(key, modules, rolled=False)], chain[: chain.index(key)], state, "op")


# -- model picture ---------------------------------------------------------------------------


@gc_paused
def trace_graph(trace: Trace, *, depth: int | None = None, rolled: bool = False) -> Graph:
    """The picture of one trace as vertices, edges and clusters (before DOT)."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"'depth' must be an int of at least 1 or None (got {depth!r})")
    modules = {m.path: m for m in trace.modules}
    specs = {p.ref: p.spec for p in trace.params}
    graph = Graph(title=[
        f"{trace.model}: {len(trace.op_nodes)} ops, {trace.param_count:,} params",
        "green: input   red: output   grey: uses parameters   yellow: condition   blue: module",
    ])  # fmt: skip
    key_of: dict[str, str] = {}
    for node in trace.nodes:
        key = node.node_id
        if rolled and ids.split_scope(node.scope)[1] > 1:
            key = ids.op_id(node.module_path, ids.op_part(node.node_id), 1)
        key_of[node.node_id] = key
        chain = _cluster_chain(node.scope, modules, rolled=rolled)
        if key in graph.vertices:
            graph.vertices[key].count += 1
        else:
            graph.vertices[key] = Vertex(
                _node_lines(node, specs), chain, _node_state(node), node.node_id, Shape.of(node.kind)
            )
        for cluster in chain:
            graph.clusters.setdefault(
                cluster, (_cluster_label(cluster, modules, rolled=rolled), State.MODULE)
            )
        for ref in node.inputs:
            source = _edge_source(ref)
            if source is not None and source in key_of:
                graph.edges[key_of[source], key] = State.OP
    for vertex in graph.vertices.values():
        if vertex.count > 1:
            vertex.lines[0] += f" x{vertex.count}"
    if depth is None:
        return graph
    target, boxes = {}, {}
    for key, vertex in graph.vertices.items():
        if len(vertex.clusters) >= depth:
            module = vertex.clusters[depth - 1]
            target[key] = f"module {module}"
            boxes[f"module {module}"] = _module_box(module, vertex.clusters, modules, State.MODULE)
    return _collapse(graph, target, boxes)


# -- diff picture ------------------------------------------------------------------------------


def _moved(change: Change) -> tuple[str, str, str] | None:
    """The one part of a tensor spec that moved and its two values: ``("dtype", "float32", "bfloat16")``."""
    if change.kind is not ChangeKind.OUTPUT_CHANGED and change.detail != "tensor":
        return None
    try:
        old, new = TensorSpec.parse(str(change.old)), TensorSpec.parse(str(change.new))
    except ValueError:
        return None
    parts = {
        "dtype": (old.dtype, new.dtype),
        "shape": (old.shape_text, new.shape_text),
        "layout": (old.layout.value, new.layout.value),
    }
    moved = [(part, *values) for part, values in parts.items() if values[0] != values[1]]
    return moved[0] if len(moved) == 1 else None


def _change_lines(change: Change) -> list[str]:
    """A change as a label shows it: ``dtype: float32 -> bfloat16``, never losing the new value.

    A tensor's change names the part that moved; a change too long for one line puts the
    new value on a line of its own, so that cutting the old one leaves the new one whole.
    """
    _, _, detail, value = change.columns()
    if detail == "inputs":
        return ["inputs rewired"]
    moved = _moved(change)
    if len(f"{detail}: {value}") > MAX_LINE and moved is not None:
        detail, value = moved[0], f"{moved[1]} -> {moved[2]}"
    line = f"{detail}: {value}"
    if len(line) <= MAX_LINE or " -> " not in value:
        return [clip(line)]
    old, new = value.split(" -> ", 1)
    return [clip(f"{detail}: {old}"), clip(f"-> {new}")]


def _tooltip(node_id: str, changes: list[Change]) -> str:
    """What hovering over a box shows: its id and, whole, every change on it."""
    return "\n".join([node_id, *(str(change) for change in changes)])


@gc_paused  # one vertex and a few strings per node, all kept: nothing for the collector to find
def diff_graph(comparison: Comparison, *, hops: int = 2, crop_above: int = CROP_ABOVE) -> Graph:
    """The union of the old and new graphs, coloured by change, cropped when big."""
    old, new, matching = comparison.old, comparison.new, comparison.matching
    modules = {matching.module_path(m.path): m for m in old.modules} | {m.path: m for m in new.modules}
    per_node: defaultdict[str, list[Change]] = defaultdict(list)
    for change in comparison.changes:
        # A removed node's id may be taken by a new node; removed ones are keyed apart.
        if change.node_id is not None and change.kind is not ChangeKind.NODE_REMOVED:
            per_node[change.node_id].append(change)
    module_state: dict[str, State] = {}
    notes: defaultdict[str, list[str]] = defaultdict(list)
    for change in comparison.changes:
        if change.kind.on_module or change.detail == "params":
            module_state[change.subject] = State.of(change.effect)
            if change.effect is Effect.CHANGED and change.kind is not ChangeKind.MODULE_RENAMED:
                notes[change.subject].extend(_change_lines(change))
    removed = {n.node_id for n in old.nodes if n.node_id not in matching.nodes}
    added = sum(1 for changes in per_node.values() if changes[0].kind is ChangeKind.NODE_ADDED)
    name = new.model if new.model == old.model else f"{old.model} -> {new.model}"
    graph = Graph(title=[
        f"{name}: {count(added, 'node')} added, {len(removed)} removed, {len(per_node) - added} changed",
        "green: added   red: removed   orange: changed   grey: unchanged",
    ])  # fmt: skip
    if any(c.kind is ChangeKind.STAT_CHANGED and c.tolerance for c in comparison.changes):
        tolerance = new.tolerance  # said once here, not on every statistic's line
        graph.title.append(f"statistics beyond rtol {tolerance.rtol:g}, atol {tolerance.atol:g}")
    removals = {c.subject: c for c in comparison.changes if c.kind is ChangeKind.NODE_REMOVED}
    renamed_from = {target: path for path, target in matching.modules.items()}
    old_specs = {p.ref: p.spec for p in old.params}
    new_specs = {p.ref: p.spec for p in new.params}

    def add(node: Node, key: str, scope: str, *, was_removed: bool) -> None:
        changes = [] if was_removed else per_node.get(node.node_id, [])
        if was_removed:
            state = State.REMOVED
        else:
            state = State.of(changes[0].effect) if changes else State.SAME
        if cropped and state is State.SAME:  # most of these are folded away: labelled at the end
            lines: list[str] = []
            unlabelled[key] = node
        else:
            lines = _node_lines(node, old_specs if was_removed else new_specs)
        if state is State.CHANGED:
            shape_changed = any(c.kind is ChangeKind.OUTPUT_CHANGED for c in changes)
            lines = lines[: 1 if shape_changed else 2] + [
                line for c in changes[:4] for line in _change_lines(c)
            ]
        chain = chains.get(scope)
        if chain is None:  # the steps of a loop share a few scopes: each chain and its clusters made once
            chain = chains[scope] = _cluster_chain(scope, modules, rolled=False)
            add_clusters(chain)
        shown = [removals[node.node_id]] if was_removed and node.node_id in removals else changes
        tooltip = _tooltip(node.node_id, shown) if shown else node.node_id
        graph.vertices[key] = Vertex(lines, chain, state, tooltip, _SHAPE_OF[node.kind])

    def add_clusters(chain: tuple[str, ...]) -> None:
        for cluster in chain:
            if cluster not in graph.clusters:  # cropped, most are collapsed: labelled at the end
                label = "" if cropped else cluster_label(cluster)
                graph.clusters[cluster] = (label, module_state.get(ids.scope_path(cluster), State.SAME))

    def cluster_label(cluster: str) -> str:
        path = ids.scope_path(cluster)
        label = _cluster_label(cluster, modules, rolled=False)
        if path in renamed_from:
            label += f", was {renamed_from[path]}"
        return "\n".join([label, *notes.get(path, [])])  # config old -> new, under the name

    cropped = len(new.nodes) + len(removed) > crop_above
    chains: dict[str, tuple[str, ...]] = {}
    unlabelled: dict[str, Node] = {}
    for node in new.nodes:
        add(node, node.node_id, node.scope, was_removed=False)
    for node in old.nodes:
        if node.node_id in removed:
            add(node, f"{node.node_id} (removed)", matching.scope(node.scope), was_removed=True)
    # Dicts, not sets, keep the edges in graph order: the same DOT text on every run.
    is_node_ref, ref_node = ids.is_node_ref, ids.ref_node
    new_edges = {
        (ref_node(ref), n.node_id): State.ADDED for n in new.nodes for ref in n.inputs if is_node_ref(ref)
    }
    old_edges = {}
    new_id = matching.nodes.get
    for node in old.nodes:
        head = new_id(node.node_id) or f"{node.node_id} (removed)"
        for ref in node.inputs:
            if is_node_ref(ref):
                source = ref_node(ref)
                old_edges[new_id(source) or f"{source} (removed)", head] = State.REMOVED
    vertices, edges = graph.vertices, graph.edges
    for edge in new_edges:  # the new graph's edges, then the old one's that are gone
        if edge[0] in vertices and edge[1] in vertices:
            edges[edge] = State.SAME if edge in old_edges else State.ADDED
    for edge in old_edges:
        if edge not in new_edges and edge[0] in vertices and edge[1] in vertices:
            edges[edge] = State.REMOVED
    if not cropped:
        return graph
    drawn = _crop(_fold_whole_modules(graph, modules, comparison), modules, hops=hops)
    for key, node in unlabelled.items():
        if key in drawn.vertices:
            drawn.vertices[key].lines = _node_lines(node, new_specs)
    drawn.clusters = {
        cluster: (cluster_label(cluster), state) for cluster, (_, state) in drawn.clusters.items()
    }
    return drawn


def _fold_whole_modules(graph: Graph, modules: dict[str, ModuleInfo], comparison: Comparison) -> Graph:
    """An added or removed module of many nodes becomes one green or red box."""
    whole = whole_modules(comparison.changes)
    target, boxes = {}, {}
    for key, vertex in graph.vertices.items():
        if vertex.state not in (State.ADDED, State.REMOVED):
            continue
        cluster = next((c for c in vertex.clusters if ids.scope_path(c) in whole
                        and graph.clusters[c][1] is vertex.state), None)  # fmt: skip
        if cluster is not None:
            target[key] = f"module {cluster}"
            boxes[f"module {cluster}"] = _module_box(cluster, vertex.clusters, modules, vertex.state)
    return _collapse(graph, target, boxes) if target else graph


def _crop(graph: Graph, modules: dict[str, ModuleInfo], *, hops: int) -> Graph:
    """Keep ``hops`` steps around the changed vertices; collapse the untouched rest into boxes."""
    neighbours: defaultdict[str, set[str]] = defaultdict(set)
    for tail, head in graph.edges:
        neighbours[tail].add(head)
        neighbours[head].add(tail)
    keep = {key for key, v in graph.vertices.items() if v.state is not State.SAME}
    frontier = set(keep)
    for _ in range(hops):
        # A hub (the input every step of a loop reads) is kept, but the crop goes no further
        # through it: its neighbours are the whole graph, not the change's neighbourhood.
        frontier = {n for key in frontier if len(neighbours[key]) <= HUB_DEGREE for n in neighbours[key]}
        frontier -= keep
        keep |= frontier
    open_clusters = {c for key in keep for c in graph.vertices[key].clusters}
    target: dict[str, str] = {}
    boxes: dict[str, _Box] = {}
    last_in: dict[str, str] = {}  # cluster -> box (or vertex) of the latest vertex inside it
    order: list[str] = []  # boxes and kept vertices in graph order
    closed_of: dict[tuple[str, ...], str | None] = {}  # chain -> its outermost closed cluster
    for key, vertex in graph.vertices.items():
        chain = vertex.clusters
        if chain in closed_of:
            closed = closed_of[chain]
        else:
            closed = closed_of[chain] = next((c for c in chain if c not in open_clusters), None)
        if key in keep:
            box = key
        elif closed is None:
            # Beside kept nodes in an open module: one "..." box per unbroken run of
            # them, so the boxes keep the order of the graph instead of looping back.
            scope = chain[-1] if chain else ""
            noun = vertex.kind.value if vertex.kind in (Shape.INPUT, Shape.OUTPUT) else "op"
            box = f"... {scope} {noun}s {len(boxes)}"
            previous = last_in.get(scope, "")
            if previous.startswith(f"... {scope} {noun}s "):
                box = previous
            boxes.setdefault(box, _Box(["..."], chain, State.SAME, noun))
        else:
            box = f"module {closed}"
            if box not in boxes:  # the same box for every vertex inside the closed cluster
                state = graph.clusters.get(closed, ("", State.SAME))[1]
                boxes[box] = _module_box(closed, chain, modules, state)
        if box != key:
            target[key] = box
        last_in[""] = box
        for cluster in chain:
            last_in[cluster] = box
        if not order or order[-1] != box:
            order.append(box)
    runs = _fold_runs(boxes, modules, order)
    target = {key: runs.get(box, box) for key, box in target.items()}
    # A "..." standing for one node hides more than it saves: draw the node.
    sizes = Counter(target.values())
    target = {key: box for key, box in target.items() if not (box.startswith("... ") and sizes[box] == 1)}
    return _collapse(graph, target, boxes)


def _fold_runs(boxes: dict[str, _Box], modules: dict[str, ModuleInfo], order: list[str]) -> dict[str, str]:
    """Runs of collapsed modules in a row become one box; returns box -> the first box of its run.

    A run is numbered siblings (``transformer.h.0..4``) or calls of one module, one right
    after the other in graph ``order`` (``cell:2..5000``), in the same cluster and state.
    Siblings of different classes (a Sequential of ReLU, Tanh, ...) fold when there are
    at least :data:`MIXED_RUN` of them; two of different classes stay two boxes.
    """
    keys = {b.removeprefix("module "): b for b in boxes if b.startswith("module ")}
    position = {box: k for k, box in enumerate(order)}

    def where(key: str) -> tuple[tuple[int, str], int | None]:
        path, call = ids.split_scope(key)
        info = modules.get(path)
        if info is not None and info.calls > 1:  # the calls of one module, numbered by call
            return (1, path), call
        parent, index = ids.split_numbered(key)
        return (0, parent), index

    places = {key: where(key) for key in keys}
    place = places.__getitem__
    class_names = {}
    for key in keys:
        info = modules.get(ids.scope_path(key))
        class_names[key] = info.class_name if info is not None else ""
    class_of = class_names.__getitem__

    def same_place(previous: str, this: str) -> bool:
        if not (class_names[previous] and class_names[this]):
            return False
        before, box = boxes[keys[previous]], boxes[keys[this]]
        if before.clusters != box.clusters or before.state is not box.state or before.noun != box.noun:
            return False
        # Calls fold only back to back: a ReLU used twice in a block has other boxes between its calls.
        return place(this)[0][0] == 0 or position.get(keys[this], -1) == position.get(keys[previous], -2) + 1

    def same_class(previous: str, this: str) -> bool:
        return same_place(previous, this) and class_of(previous) == class_of(this)

    ordered = sorted(keys, key=lambda key: (places[key][0], places[key][1] or -1))
    runs: dict[str, str] = {}
    for run in numbered_runs(ordered, place, same_place):
        classes = list(dict.fromkeys(map(class_of, run)))
        pieces = (
            [run] if len(classes) == 1 or len(run) >= MIXED_RUN else numbered_runs(run, place, same_class)
        )
        for piece in pieces:
            if len(piece) < 2:
                continue
            first = keys[piece[0]]
            runs.update((keys[key], first) for key in piece[1:])
            shown = ", ".join(classes[:3]) + (", ..." if len(classes) > 3 else "")
            if len(pieces) > 1:
                shown = class_of(piece[0])
            boxes[first] = boxes[first]._replace(lines=[f"{_run_name(piece, place)} ({shown})"])
    return runs


def _run_name(run: list[str], place: Callable[[str], tuple[tuple[int, str], int | None]]) -> str:
    (kind, path), first = place(run[0])
    if kind == 1:
        return ids.call_run(path, first or 1, place(run[-1])[1] or 1)
    return ids.run(run[0], run[-1])
