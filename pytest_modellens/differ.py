"""What changed between two snapshots, as a list of Changes (the only deepdiff import).

Two steps:

1. **Match** old nodes with new ones (:mod:`pytest_modellens.match`).
2. **Compare** the matched parts: the old canonical data is re-keyed into the new names,
   deepdiff finds every difference, and each becomes a :class:`Change`. What has no
   partner is added or removed.

Changes come most important first (the order of :class:`ChangeKind`), each kind in
graph order, so a reviewer reads the cause before its echoes in totals and statistics.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from deepdiff import DeepDiff

from . import ids
from .canonical import FROZEN, STAT_FIELDS, loads_with_data, to_data
from .changes import Change, ChangeKind, Comparison, Matching
from .gcpause import gc_paused
from .match import match, rename_runs
from .trace import Node, TensorSpec, Tolerance, Trace

_STRUCTURE_KEYS = ("recurrent", "passes", "branching", "conditional")
#: Module fields that add up the tree (a change moves every ancestor), and how a change reads.
_ROLLED_UP = {"params": "params", "trainable": "trainable params", "flops": "flops"}


# -- comparing -------------------------------------------------------------------------


def _as_trace(value: Trace | str, source: str) -> tuple[Trace, dict[str, Any]]:
    """The Trace and its canonical data (the text's check makes the data once, not twice)."""
    if isinstance(value, Trace):
        return value, to_data(value)
    if isinstance(value, str):
        return loads_with_data(value, source=source)
    raise TypeError(f"diff compares Traces or snapshot texts (got {type(value).__name__!r})")


def _output_text(node: Node) -> str:
    return ", ".join(map(str, node.outputs))


def _out_detail(old: Any, new: Any) -> str:
    """``shape``, ``dtype`` or ``layout`` when one output's spec changed in that part only, else ``out``."""
    if isinstance(old, str) and isinstance(new, str):
        try:
            before, after = TensorSpec.parse(old), TensorSpec.parse(new)
        except ValueError:
            return "out"
        moved = [
            part for part in ("dtype", "shape", "layout") if getattr(before, part) != getattr(after, part)
        ]
        if len(moved) == 1:
            return moved[0]
    return "out"


def _node_change(node_id: str, field: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    before, after = old.get(field), new.get(field)
    if field in ("op", "kind"):
        return [Change(ChangeKind.OP_CHANGED, node_id, field, before, after)]
    if field == "out":
        return [Change(ChangeKind.OUTPUT_CHANGED, node_id, _out_detail(before, after), before, after)]
    if field == "in":
        return [Change(ChangeKind.INPUTS_REWIRED, node_id, "inputs", before or [], after or [])]
    if field == "flops":
        return [Change(ChangeKind.ARGS_CHANGED, node_id, "flops", before or 0, after or 0)]
    before, after = before or {}, after or {}
    return [
        Change(ChangeKind.ARGS_CHANGED, node_id, f"arg {key}", before.get(key), after.get(key))
        for key in sorted(set(before) | set(after), key=lambda k: (not k.isdigit(), k.zfill(4)))
        if before.get(key) != after.get(key)
    ]


def _module_change(path: str, field: str, old: dict[str, Any], new: dict[str, Any]) -> Change | None:
    before, after = old.get(field), new.get(field)
    if field == "trainable" and all(entry.get("trainable") == entry.get("params") for entry in (old, new)):
        return None  # all trainable before and after: the params change says it all
    if field in ("params", "trainable"):
        return Change(ChangeKind.PARAMS_CHANGED, path, _ROLLED_UP[field], before, after)
    if field == "flops":
        return Change(ChangeKind.MODULE_RECONFIGURED, path, "flops", before or 0, after or 0)
    return Change(ChangeKind.MODULE_RECONFIGURED, path, field, before, after)


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
    renamed = bool(matching.modules)
    moved = {old_id for old_id, new_id in matching.nodes.items() if old_id != new_id}
    nodes = {}
    for old_id, new_id in matching.nodes.items():
        entry = old["nodes"][old_id]
        refs = entry.get("in")
        # Most entries read nothing renamed or moved: those are their own view (none is changed here).
        if refs and (renamed or (moved and not moved.isdisjoint(map(ids.ref_node, refs)))):
            entry = {**entry, "in": [matching.ref(ref) for ref in refs]}
        nodes[new_id] = entry
    modules, params = old["modules"], old["params"]
    if renamed:
        modules = {matching.module_path(path): entry for path, entry in modules.items()}
        params = {matching.ref(ref): spec for ref, spec in params.items()}
    old_view: dict[str, Any] = {
        "modules": modules,
        "params": params,
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


@gc_paused
def compare(old: Trace | str, new: Trace | str, *, tolerance: Tolerance | None = None) -> Comparison:
    """Match ``old`` with ``new`` and list the changes; the renderer draws from the result."""
    (old_trace, old_data), (new_trace, new_data) = (
        _as_trace(old, "old snapshot"),
        _as_trace(new, "new snapshot"),
    )
    if tolerance is None:
        tolerance = new_trace.tolerance
    matching = match(old_trace, new_trace)
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
    changes += [
        Change(ChangeKind.MODULE_RENAMED, new_name, "renamed", old_name, new_name)
        for old_name, new_name in rename_runs(matching.modules)
    ]
    module_order = {path: k for k, path in enumerate(new_data["modules"])}
    module_changes = [
        change
        for key, field in in_order("modules", module_order)
        if (change := _module_change(key, field, before["modules"][key], after["modules"][key]))
    ]
    # A parameter or FLOP count moves up the whole module tree; name the deepest modules only.
    counted = {(c.detail, c.subject) for c in module_changes if c.detail in _ROLLED_UP.values()}
    changes += [
        c for c in module_changes
        if c.detail not in _ROLLED_UP.values()
        or not any(other != c.subject and ids.is_within(other, c.subject)
                   for detail, other in counted if detail == c.detail)
    ]  # fmt: skip
    # Parameters come and go with their modules (counted above), and are frozen with them
    # (their trainable count); a changed shape is news.
    for ref, _ in in_order("params", {}):
        if before["params"][ref].removesuffix(FROZEN) == after["params"][ref].removesuffix(FROZEN):
            continue
        changes.append(
            Change(ChangeKind.PARAMS_CHANGED, ref, "tensor", before["params"][ref], after["params"][ref])
        )
    root_class_changed = any(c.subject == "" and c.detail == "class" for c in module_changes)
    for key in sorted({key for key, _ in touched["summary"]}):
        if key == "model" and root_class_changed:
            continue  # the summary's model is the root module's class, listed already
        kind = ChangeKind.STRUCTURE_CHANGED if key in _STRUCTURE_KEYS else ChangeKind.SUMMARY_CHANGED
        changes.append(Change(kind, ids.ROOT, key, before["summary"].get(key), after["summary"].get(key)))
    for ref, field in in_order("stats", {ref: k for k, ref in enumerate(new_data.get("stats", {}))}):
        change = _stat_change(ref, field, before["stats"][ref], after["stats"][ref], tolerance)
        if change is not None:
            changes.append(change)
    had_stats, has_stats = "stats" in old_data, "stats" in new_data
    if had_stats != has_stats:
        recorded = {True: "recorded", False: "not recorded"}
        changes.append(
            Change(ChangeKind.SUMMARY_CHANGED, ids.ROOT, "stats", recorded[had_stats], recorded[has_stats])
        )
    changes.sort(key=lambda c: c.kind.rank)  # stable: graph order within a kind
    return Comparison(old_trace, new_trace, matching, changes)


def diff(old: Trace | str, new: Trace | str, *, tolerance: Tolerance | None = None) -> list[Change]:
    """The changes from ``old`` to ``new`` (two Traces or two snapshot texts), most important first.

    Statistics are compared with ``tolerance``, by default the new trace's.
    """
    return compare(old, new, tolerance=tolerance).changes
