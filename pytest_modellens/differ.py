"""What changed between two snapshots, as a list of Changes (the only deepdiff import).

Two steps:

1. **Match** old nodes with new ones. A node id names the place of an op, but inserting a
   child into an ``nn.Sequential`` renumbers every later sibling (``blocks.6`` becomes
   ``blocks.7``). So nodes are first aligned in execution order with
   :class:`difflib.SequenceMatcher` over signatures that ignore numbering (kind, op,
   module path with numbers blanked, module class); module renames are read off the
   aligned pairs, and the rest is paired by id and by place.
2. **Compare** the matched parts: the old canonical data is re-keyed into the new names,
   deepdiff finds every difference, and each becomes a :class:`Change`. What has no
   partner is added or removed.

Changes come most important first (the order of :class:`ChangeKind`), each kind in
graph order, so a reviewer reads the cause before its echoes in totals and statistics.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from deepdiff import DeepDiff

from .canonical import STAT_FIELDS, loads, to_data
from .changes import Change, ChangeKind  # public here too: pytest_modellens.Change comes from here
from .trace import Node, NodeKind, Tolerance, Trace

_NUMBER = re.compile(r"(?<![^.])\d+(?![^.])")
_STRUCTURE_KEYS = ("recurrent", "passes", "branching", "conditional")
_Key = Callable[[Node], Any]  # what nodes are grouped by when paired in order


@dataclass(frozen=True, slots=True)
class Matching:
    """Which old node is which new node, and which old module is which new module."""

    nodes: dict[str, str]  # old node id -> new node id
    modules: dict[str, str]  # old module path -> new module path, renamed ones only

    def module_path(self, path: str) -> str:
        """The new path of an old module (or of a parameter under it)."""
        parts = path.split(".")
        for end in range(len(parts), 0, -1):
            renamed = self.modules.get(".".join(parts[:end]))
            if renamed is not None:
                return ".".join([renamed, *parts[end:]])
        return path

    def scope(self, scope: str) -> str:
        """The new name of an old node's scope (``module path[:call]``)."""
        if not scope:
            return ""
        path, _, call = scope.partition(":")
        return self.module_path(path) + (f":{call}" if call else "")

    def ref(self, ref: str) -> str:
        """The new name of an old input reference (node output, param, buffer)."""
        kind, colon, name = ref.partition(":")
        if colon and kind in ("param", "buffer"):
            return f"{kind}:{self.module_path(name)}"
        node_id, hash_, k = ref.partition("#")
        return self.nodes.get(node_id, node_id) + hash_ + k


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two traces, how their parts match, and the changes between them."""

    old: Trace
    new: Trace
    matching: Matching
    changes: list[Change]


# -- matching --------------------------------------------------------------------------


def _signature(node: Node, classes: dict[str, str]) -> tuple[str, ...]:
    if node.kind in (NodeKind.INPUT, NodeKind.OUTPUT):
        return (node.kind.value, node.node_id)
    path = node.module_path
    return (node.kind.value, node.op, _NUMBER.sub("#", path), classes.get(path, ""))


def _module_renames(pairs: dict[str, str], old: dict[str, Node], new: dict[str, Node]) -> dict[str, str]:
    """Old module path -> new one, by majority of the matched nodes in and under it."""
    votes: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for old_id, new_id in pairs.items():
        a, b = old[old_id].module_path.split("."), new[new_id].module_path.split(".")
        if len(a) != len(b):  # wrapped into a new container: a move, not a rename
            continue
        for end in range(1, len(a) + 1):
            votes[".".join(a[:end])][".".join(b[:end])] += 1
    best = {path: counts.most_common(1)[0] for path, counts in votes.items() if path}
    # Two old modules cannot become one new module: the better supported claim wins.
    claims: dict[str, tuple[int, str]] = {}
    for path, (target, count) in best.items():
        if target not in claims or count > claims[target][0]:
            claims[target] = (count, path)
    return {path: target for target, (_, path) in claims.items() if path != target}


def match(old: Trace, new: Trace) -> Matching:
    """Pair the nodes of ``old`` with those of ``new``, and the modules renamed between them."""
    old_nodes = {node.node_id: node for node in old.nodes}
    new_nodes = {node.node_id: node for node in new.nodes}
    old_classes = {m.path: m.class_name for m in old.modules}
    new_classes = {m.path: m.class_name for m in new.modules}
    old_sigs = [_signature(n, old_classes) for n in old.nodes]
    new_sigs = [_signature(n, new_classes) for n in new.nodes]
    # The common head and tail are aligned as they are; the matcher, quadratic at worst,
    # only sees the middle where the change is.
    head, tail, limit = 0, 0, min(len(old_sigs), len(new_sigs))
    while head < limit and old_sigs[head] == new_sigs[head]:
        head += 1
    while tail < limit - head and old_sigs[-1 - tail] == new_sigs[-1 - tail]:
        tail += 1
    matcher = difflib.SequenceMatcher(
        None, old_sigs[head : len(old_sigs) - tail], new_sigs[head : len(new_sigs) - tail],
        autojunk=False,  # repeated ops (view, add) are the substance here, not junk
    )  # fmt: skip
    ends = [
        *zip(old.nodes[:head], new.nodes[:head]),
        *zip(old.nodes[len(old.nodes) - tail :], new.nodes[len(new.nodes) - tail :]),
    ]
    pairs = {o.node_id: n.node_id for o, n in ends}
    regions = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        old_part, new_part = old.nodes[head + i1 : head + i2], new.nodes[head + j1 : head + j2]
        if tag == "equal":
            pairs.update(zip((n.node_id for n in old_part), (n.node_id for n in new_part)))
        else:
            regions.append((old_part, new_part))
    aligned = Matching(dict(pairs), _module_renames(pairs, old_nodes, new_nodes))
    taken = set(pairs.values())

    def renamed_id(node: Node) -> str:
        """The id an old node has in the new names, by the renames the aligned runs show."""
        if not node.scope:
            return node.node_id
        return f"{aligned.scope(node.scope)}/{node.node_id.rpartition('/')[2]}"

    def pair(old_node: Node, new_node: Node) -> None:
        pairs[old_node.node_id] = new_node.node_id
        taken.add(new_node.node_id)

    def pair_in_order(
        olds: Sequence[Node], news: Sequence[Node], old_key: _Key, new_key: _Key, *, equal: bool
    ) -> None:
        """Pair nodes of equal keys in order (only where both sides have as many, if ``equal``)."""
        groups: defaultdict[Any, tuple[list[Node], list[Node]]] = defaultdict(lambda: ([], []))
        for node in olds:
            if node.node_id not in pairs:
                groups[old_key(node)][0].append(node)
        for node in news:
            if node.node_id not in taken:
                groups[new_key(node)][1].append(node)
        for group_olds, group_news in groups.values():
            if len(group_olds) == len(group_news) or not equal:
                for old_node, new_node in zip(group_olds, group_news):
                    pair(old_node, new_node)

    # Inside an unaligned region: the same (renamed) id; else the same place, in order (an
    # op changed in place keeps its module and position, not its id); else the same op,
    # in order (a layer wrapped into a new container keeps its op).
    def old_place(node: Node) -> tuple[str, NodeKind]:
        return renamed_id(node).rpartition("/")[0], node.kind

    def op(node: Node) -> tuple[NodeKind, str]:
        return node.kind, node.op

    for old_part, new_part in regions:
        pair_in_order(old_part, new_part, renamed_id, lambda node: node.node_id, equal=False)
        pair_in_order(old_part, new_part, old_place, lambda node: (node.scope, node.kind), equal=True)
        pair_in_order(old_part, new_part, op, op, equal=False)
    # A node that moved (two ops swapped) is still itself when its id is free on both sides.
    for node in old.nodes:
        target = renamed_id(node)
        if node.node_id not in pairs and target in new_nodes and target not in taken:
            pair(node, new_nodes[target])
    # Pairs found inside regions tell of renames the aligned runs could not (fc -> proj).
    return Matching(pairs, _module_renames(pairs, old_nodes, new_nodes))


def _rename_lines(renames: dict[str, str]) -> list[Change]:
    """Module renames as few lines: ``blocks.6..11 -> blocks.7..12`` for a renumbering."""
    top = {}
    for path, target in renames.items():
        parent, _, name = path.rpartition(".")
        if parent in renames and renames[parent] + "." + name == target:
            continue  # follows from its parent's rename
        top[path] = target
    runs: list[list[tuple[str, str]]] = []
    for path, target in top.items():
        last = runs[-1][-1] if runs else None
        if last is not None and _next_in_run(last, (path, target)):
            runs[-1].append((path, target))
        else:
            runs.append([(path, target)])
    changes = []
    for run in runs:
        (first_old, first_new), (last_old, last_new) = run[0], run[-1]
        if len(run) > 1:
            first_old += ".." + last_old.rpartition(".")[2]
            first_new += ".." + last_new.rpartition(".")[2]
        changes.append(Change(ChangeKind.MODULE_RENAMED, first_new, "renamed", first_old, first_new))
    return changes


def _next_in_run(last: tuple[str, str], this: tuple[str, str]) -> bool:
    """Whether ``this`` rename continues a numbered run: same parents, index +1, same shift."""
    (old_a, new_a), (old_b, new_b) = last, this
    parts = [p.rpartition(".") for p in (old_a, new_a, old_b, new_b)]
    if parts[0][0] != parts[2][0] or parts[1][0] != parts[3][0]:
        return False
    if not all(p[2].isdigit() for p in parts):
        return False
    a, b, c, d = (int(p[2]) for p in parts)
    return c == a + 1 and d - c == b - a


# -- comparing -------------------------------------------------------------------------


def _as_trace(value: Trace | str, source: str) -> Trace:
    if isinstance(value, Trace):
        return value
    if isinstance(value, str):
        return loads(value, source=source)
    raise TypeError(f"diff compares Traces or snapshot texts (got {type(value).__name__!r})")


def _output_text(node: Node) -> str:
    return ", ".join(map(str, node.outputs))


def _out_detail(old: Any, new: Any) -> str:
    if isinstance(old, str) and isinstance(new, str):
        (old_dtype, _, old_shape), (new_dtype, _, new_shape) = old.partition("["), new.partition("[")
        if old_dtype == new_dtype:
            return "shape"
        if old_shape == new_shape:
            return "dtype"
    return "out"


def _node_change(node_id: str, field: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    before, after = old.get(field), new.get(field)
    if field in ("op", "kind"):
        return [Change(ChangeKind.OP_CHANGED, node_id, field, before, after)]
    if field == "out":
        return [Change(ChangeKind.OUTPUT_CHANGED, node_id, _out_detail(before, after), before, after)]
    if field == "in":
        return [Change(ChangeKind.INPUTS_REWIRED, node_id, "inputs", before or [], after or [])]
    before, after = before or {}, after or {}
    return [
        Change(ChangeKind.ARGS_CHANGED, node_id, f"arg {key}", before.get(key), after.get(key))
        for key in sorted(set(before) | set(after), key=lambda k: (not k.isdigit(), k.zfill(4)))
        if before.get(key) != after.get(key)
    ]


def _module_change(path: str, field: str, old: dict[str, Any], new: dict[str, Any]) -> Change:
    before, after = old.get(field), new.get(field)
    if field == "params":
        return Change(ChangeKind.PARAMS_CHANGED, path, "params", before, after)
    detail = "extra_repr" if field == "config" else field
    return Change(ChangeKind.MODULE_RECONFIGURED, path, detail, before, after)


def _stat_change(
    ref: str, field: str, old: dict[str, Any], new: dict[str, Any], tolerance: Tolerance
) -> Change | None:
    before, after = old.get(field), new.get(field)
    if field not in STAT_FIELDS:  # nan and inf counts compare exactly
        return Change(ChangeKind.STAT_CHANGED, ref, field, before, after)
    if tolerance.close(before, after):
        return None
    return Change(ChangeKind.STAT_CHANGED, ref, field, before, after, tolerance)


def _views(old: dict[str, Any], new: dict[str, Any], matching: Matching) -> tuple[dict, dict]:
    """The matched entries that differ, the old ones under their new names, section by section.

    Renamed nodes, modules and parameters are then the same keys on both sides, and
    equal entries are left out: they cannot differ, and a big model stays fast.
    """
    nodes = {}
    for old_id, new_id in matching.nodes.items():
        entry = dict(old["nodes"][old_id])
        if "in" in entry:
            entry["in"] = [matching.ref(ref) for ref in entry["in"]]
        nodes[new_id] = entry
    old_view: dict[str, Any] = {
        "modules": {matching.module_path(path): entry for path, entry in old["modules"].items()},
        "params": {matching.ref(ref): spec for ref, spec in old["params"].items()},
        "nodes": nodes,
        "stats": {matching.ref(ref): entry for ref, entry in old.get("stats", {}).items()},
    }
    new_view: dict[str, Any] = {}
    for section, entries in old_view.items():
        theirs = new.get(section, {})
        new_view[section] = {k: v for k, v in theirs.items() if k in entries and entries[k] != v}
        old_view[section] = {k: entries[k] for k in new_view[section]}
    old_view["summary"], new_view["summary"] = old["summary"], new["summary"]
    return old_view, new_view


def compare(old: Trace | str, new: Trace | str, *, tolerance: Tolerance | None = None) -> Comparison:
    """Match ``old`` with ``new`` and list the changes; the renderer draws from the result."""
    old_trace, new_trace = _as_trace(old, "old snapshot"), _as_trace(new, "new snapshot")
    if tolerance is None:
        tolerance = new_trace.tolerance
    matching = match(old_trace, new_trace)
    old_data, new_data = to_data(old_trace), to_data(new_trace)
    before, after = _views(old_data, new_data, matching)
    touched: defaultdict[str, set[tuple[str, str]]] = defaultdict(set)
    for levels in DeepDiff(before, after, view="tree").values():
        for level in levels:
            section, key, field, *_ = [*map(str, level.path(output_format="list")), "", ""]
            touched[section].add((key, field))

    def in_order(section: str, order: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted(touched[section], key=lambda t: (order.get(t[0], -1), t))

    matched = set(matching.nodes.values())
    changes = [
        Change(ChangeKind.NODE_ADDED, n.node_id, n.op, None, _output_text(n))
        for n in new_trace.nodes
        if n.node_id not in matched
    ]
    changes += [
        Change(ChangeKind.NODE_REMOVED, n.node_id, n.op, _output_text(n))
        for n in old_trace.nodes
        if n.node_id not in matching.nodes
    ]
    for key, field in in_order("nodes", {node_id: k for k, node_id in enumerate(new_data["nodes"])}):
        changes += _node_change(key, field, before["nodes"][key], after["nodes"][key])
    old_paths = {matching.module_path(path) for path in old_data["modules"]}  # in the new names
    changes += [
        Change(ChangeKind.MODULE_ADDED, path, entry["class"], None, entry.get("config", ""))
        for path, entry in new_data["modules"].items() if path not in old_paths
    ]  # fmt: skip
    changes += [
        Change(ChangeKind.MODULE_REMOVED, path, entry["class"], entry.get("config", ""))
        for path, entry in old_data["modules"].items()
        if matching.module_path(path) not in new_data["modules"]
    ]  # fmt: skip
    changes += _rename_lines(matching.modules)
    module_order = {path: k for k, path in enumerate(new_data["modules"])}
    module_changes = [
        _module_change(key, field, before["modules"][key], after["modules"][key])
        for key, field in in_order("modules", module_order)
    ]
    # A parameter count moves up the whole module tree; name the deepest modules only.
    counted = {c.subject for c in module_changes if c.kind is ChangeKind.PARAMS_CHANGED}
    changes += [
        c for c in module_changes
        if c.kind is not ChangeKind.PARAMS_CHANGED
        or not any(other.startswith(c.subject + ".") or (c.subject == "" and other) for other in counted)
    ]  # fmt: skip
    # Parameters come and go with their modules (counted above); a changed shape is news.
    for ref, _ in in_order("params", {}):
        changes.append(
            Change(ChangeKind.PARAMS_CHANGED, ref, "tensor", before["params"][ref], after["params"][ref])
        )
    for key in sorted({key for key, _ in touched["summary"]}):
        kind = ChangeKind.STRUCTURE_CHANGED if key in _STRUCTURE_KEYS else ChangeKind.SUMMARY_CHANGED
        changes.append(Change(kind, "model", key, before["summary"].get(key), after["summary"].get(key)))
    for ref, field in in_order("stats", {ref: k for k, ref in enumerate(new_data.get("stats", {}))}):
        change = _stat_change(ref, field, before["stats"][ref], after["stats"][ref], tolerance)
        if change is not None:
            changes.append(change)
    had_stats, has_stats = "stats" in old_data, "stats" in new_data
    if had_stats != has_stats:
        recorded = {True: "recorded", False: "not recorded"}
        changes.append(
            Change(ChangeKind.SUMMARY_CHANGED, "model", "stats", recorded[had_stats], recorded[has_stats])
        )
    changes.sort(key=lambda c: c.kind.rank)  # stable: graph order within a kind
    return Comparison(old_trace, new_trace, matching, changes)


def diff(old: Trace | str, new: Trace | str, *, tolerance: Tolerance | None = None) -> list[Change]:
    """The changes from ``old`` to ``new`` (two Traces or two snapshot texts), most important first.

    Statistics are compared with ``tolerance``, by default the new trace's.
    """
    return compare(old, new, tolerance=tolerance).changes
