"""The differ's results as plain data: Changes, how they rank and read, and the Matching.

The differ makes them and the failure message and the diff picture show them. A
:class:`ChangeKind` ranks a change (the order of the enum, most important first) and a
:class:`Change` writes itself as the columns of one line of a change list: its
:class:`Effect` (``+`` added, ``-`` removed, ``~`` changed), subject, detail and
``old -> new`` value. :class:`Matching` says which old node and module is which new one;
:class:`Comparison` holds both traces, their matching and the changes. Nothing here
imports a third-party package.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from . import ids
from .trace import Tolerance, Trace

#: A whole added or removed module of at least this many nodes is one row of a change
#: list and one box of a picture, not one per node.
WHOLE_MODULE_NODES = 2


def count(number: int, noun: str) -> str:
    """``1 node``, ``3 nodes``: a number with its noun, in the plural where it needs one."""
    return f"{number} {noun}{'s' if number != 1 else ''}"


class Effect(str, Enum):
    """What a change does to its subject; the value is the sign a change list shows."""

    ADDED = "+"
    REMOVED = "-"
    CHANGED = "~"

    @property
    def word(self) -> str:
        """``added``, ``removed`` or ``changed``."""
        return self.name.lower()


class ChangeKind(Enum):
    """The closed set of change kinds, most important first."""

    NODE_ADDED = "node added"
    NODE_REMOVED = "node removed"
    OP_CHANGED = "op changed"
    OUTPUT_CHANGED = "output changed"
    INPUTS_REWIRED = "inputs rewired"
    MODULE_ADDED = "module added"
    MODULE_REMOVED = "module removed"
    MODULE_RENAMED = "module renamed"
    MODULE_RECONFIGURED = "module reconfigured"
    PARAMS_CHANGED = "parameters changed"
    ARGS_CHANGED = "argument changed"
    STRUCTURE_CHANGED = "structure changed"
    STAT_CHANGED = "statistic out of tolerance"
    SUMMARY_CHANGED = "summary changed"

    @property
    def rank(self) -> int:
        """Place in the order of importance; 0 is the most important."""
        return _RANKS[self]

    @property
    def on_node(self) -> bool:
        """Whether the subject of this kind of change is one node (or one output of it)."""
        return self in _NODE_KINDS

    @property
    def on_module(self) -> bool:
        """Whether the subject of this kind of change is a module path."""
        return self in _MODULE_KINDS


_RANKS = {kind: rank for rank, kind in enumerate(ChangeKind)}
_NODE_KINDS = {ChangeKind.NODE_ADDED, ChangeKind.NODE_REMOVED, ChangeKind.OP_CHANGED,
               ChangeKind.OUTPUT_CHANGED, ChangeKind.INPUTS_REWIRED, ChangeKind.ARGS_CHANGED,
               ChangeKind.STAT_CHANGED}  # fmt: skip
_MODULE_KINDS = {ChangeKind.MODULE_ADDED, ChangeKind.MODULE_REMOVED, ChangeKind.MODULE_RENAMED,
                 ChangeKind.MODULE_RECONFIGURED}  # fmt: skip
_ADDED = {ChangeKind.NODE_ADDED, ChangeKind.MODULE_ADDED}
_REMOVED = {ChangeKind.NODE_REMOVED, ChangeKind.MODULE_REMOVED}


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the old and the new model.

    ``subject`` is what changed, in the new model's names (the old one's for removals):
    a node id (``id#k`` for one output of several), a module path (``""`` for the root,
    shown as ``<root>``), a parameter ref, or ``<root>`` for the model's summary. ``detail`` says which part of it (``inputs``,
    ``config``, ``mean``...); ``old``/``new`` are the values before and after, None
    where there was none; ``tolerance`` is set on statistics only.
    """

    kind: ChangeKind
    subject: str
    detail: str = ""
    old: Any = None
    new: Any = None
    tolerance: Tolerance | None = None

    @property
    def effect(self) -> Effect:
        if self.kind in _ADDED:
            return Effect.ADDED
        if self.kind in _REMOVED:
            return Effect.REMOVED
        return Effect.CHANGED

    @property
    def sign(self) -> str:
        """``+`` for an addition, ``-`` for a removal, ``~`` for any other change."""
        return self.effect.value

    @property
    def node_id(self) -> str | None:
        """The node this change is on (without a ``#k`` output suffix), if it is on one."""
        return ids.ref_node(self.subject) if self.kind.on_node else None

    @property
    def module_path(self) -> str | None:
        """The module this change is about: the subject of a module change, a node's module."""
        if self.kind.on_node:
            return ids.node_path(ids.ref_node(self.subject))
        if self.kind.on_module:
            return self.subject
        return None

    def columns(self) -> tuple[str, str, str, str]:
        """``(sign, subject, detail, value)``: the columns of one line of a change list."""
        subject = ids.shown(self.subject) if self.kind.on_module else self.subject
        if self.kind in _ADDED:
            return self.sign, subject, self.detail, _show(self.new)
        if self.kind in _REMOVED:
            return self.sign, subject, self.detail, _show(self.old)
        if self.kind is ChangeKind.MODULE_RENAMED:
            return self.sign, f"{self.old} -> {self.new}", "renamed", ""
        if self.detail == "config" and isinstance(self.old, str) and isinstance(self.new, str):
            # `in_features=4, out_features=1, bias=True`: name the settings that moved
            value = ", ".join(
                f"{key} {moved}" if key else moved for key, moved in settings_moved(self.old, self.new)
            )
        else:
            value = _arrow(self.old, self.new)
        return self.sign, subject, self.detail, value

    def __str__(self) -> str:
        return "  ".join(part for part in self.columns() if part)


def _settings(config: str) -> dict[str, str]:
    """A module's ``extra_repr`` as ``{name: value}``; a setting without a name is keyed by position.

    ``(16,), eps=1e-05, elementwise_affine=True`` gives ``{"0": "(16,)", "eps": "1e-05", ...}``:
    commas inside brackets or quotes do not split.
    """
    items, depth, quote, start = [], 0, "", 0
    for k, char in enumerate(config):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(config[start:k].strip())
            start = k + 1
    items.append(config[start:].strip())
    out = {}
    for position, item in enumerate(filter(None, items)):
        name, equals, value = item.partition("=")
        if equals and name.strip().isidentifier():
            out[name.strip()] = value.strip()
        else:
            out[str(position)] = item
    return out


def settings_moved(old: str, new: str) -> list[tuple[str, str]]:
    """The settings of two ``extra_repr`` texts that differ, as ``(name, "old -> new")``.

    A setting known by position only has the name ``""``; one that came or went shows ``-``.
    """
    before, after = _settings(old), _settings(new)
    return [
        ("" if key.isdigit() else key, f"{before.get(key, '-')} -> {after.get(key, '-')}")
        for key in dict.fromkeys([*before, *after])
        if before.get(key) != after.get(key)
    ]


def _show(value: Any) -> str:
    """A value as a change list shows it: ``-`` for none, lists in brackets, ``true``/``false``."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_show, value)) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    """A nested value as ``{dotted path: leaf}`` (``cache.layers.0.keys``)."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {path: value}
    return {
        k: v for key, item in items for k, v in _leaves(item, f"{path}.{key}" if path else str(key)).items()
    }


def _arrow(old: Any, new: Any) -> str:
    """``old -> new``; of two lists of the same length, only the items that differ."""
    if isinstance(old, dict) or isinstance(new, dict):  # model inputs/outputs: the leaves that moved
        before, after = _leaves(old), _leaves(new)
        moved = [k for k in {**before, **after} if before.get(k) != after.get(k)]
        shown = ", ".join(f"{k}: {_show(before.get(k))} -> {_show(after.get(k))}" for k in moved[:3])
        return shown + (f", ... ({len(moved)} in all)" if len(moved) > 3 else "")
    same_length = isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) == len(new)
    if same_length and len(old) == 1:
        return f"{_show(old[0])} -> {_show(new[0])}"
    if same_length and len(old) > 1:
        pairs = [(a, b) for a, b in zip(old, new) if a != b]
        if len(pairs) < len(old):
            return f"{', '.join(_show(a) for a, _ in pairs)} -> {', '.join(_show(b) for _, b in pairs)}"
    return f"{_show(old)} -> {_show(new)}"


@dataclass(frozen=True, slots=True)
class Matching:
    """Which old node is which new node, and which old module is which new module."""

    nodes: dict[str, str]  # old node id -> new node id
    modules: dict[str, str]  # old module path -> new module path, renamed ones only

    def module_path(self, path: str) -> str:
        """The new path of an old module (or of a parameter under it)."""
        if not self.modules:  # nothing renamed, the usual case: asked of every module and node
            return path
        prefixes = ids.ancestors(path)
        for prefix in reversed(prefixes):
            renamed = self.modules.get(prefix)
            if renamed is not None:
                return renamed + path[len(prefix) :]
        return path

    def scope(self, scope: str) -> str:
        """The new name of an old node's scope (``module path[:call]``)."""
        if not scope or not self.modules:
            return scope
        return ids.with_path(scope, self.module_path(ids.scope_path(scope)))

    def ref(self, ref: str) -> str:
        """The new name of an old input reference (node output, param, buffer)."""
        if ids.is_node_ref(ref):  # most references, told apart without parsing their kind
            node_id, k = ids.split_output_ref(ref)
            node_id = self.nodes.get(node_id, node_id)
            return node_id if k is None else ids.output_ref(node_id, k)
        kind, name = ids.split_ref(ref)
        if kind is ids.RefKind.PARAM or kind is ids.RefKind.BUFFER:
            return ids.tensor_ref(self.module_path(name), is_buffer=kind is ids.RefKind.BUFFER)
        return ref  # a constant


@dataclass(frozen=True, slots=True)
class Comparison:
    """Two traces, how their parts match, and the changes between them."""

    old: Trace
    new: Trace
    matching: Matching
    changes: list[Change]


@dataclass(frozen=True, slots=True)
class WholeModule:
    """An added or removed module and the node changes it stands for in a list or picture."""

    change: Change
    members: tuple[Change, ...]


def whole_modules(changes: list[Change]) -> dict[str, WholeModule]:
    """The outermost added or removed modules of at least :data:`WHOLE_MODULE_NODES` nodes.

    Keyed by module path. A module added inside another added module is part of the outer one.
    """
    tops: dict[tuple[ChangeKind, str], Change] = {}
    for change in changes:
        if change.kind in (ChangeKind.MODULE_ADDED, ChangeKind.MODULE_REMOVED) and change.subject:
            outer = [p for p in ids.ancestors(ids.parent(change.subject)) if (change.kind, p) in tops]
            if not outer:
                tops[change.kind, change.subject] = change
    members: dict[str, list[Change]] = {}
    node_kind = {
        ChangeKind.NODE_ADDED: ChangeKind.MODULE_ADDED,
        ChangeKind.NODE_REMOVED: ChangeKind.MODULE_REMOVED,
    }
    for change in changes:
        kind = node_kind.get(change.kind)
        path = change.module_path
        if kind is None or path is None:
            continue
        top = next((p for p in ids.ancestors(path) if (kind, p) in tops), None)
        if top is not None:
            members.setdefault(top, []).append(change)
    return {
        path: WholeModule(change, tuple(members[path]))
        for (_, path), change in tops.items()
        if len(members.get(path, ())) >= WHOLE_MODULE_NODES
    }


def only_reordered(old: Trace, new: Trace) -> bool:
    """Whether ``new`` is ``old``'s work in another order: the same operations on the same data.

    Each node is reduced to what it is without its id: its kind, op, module (without the
    call number), arguments, outputs and statistics, and, for what it reads, the same of the
    nodes that made it (or the parameter, buffer or constant). Equal multisets of those
    under different node lists mean only the order changed, which a forward does that runs
    independent work in a process-dependent order (a loop over a set follows the hash seed).
    """
    if old.nodes == new.nodes or len(old.nodes) != len(new.nodes):
        return False
    if (old.modules, old.params, old.inputs, old.outputs) != (
        new.modules,
        new.params,
        new.inputs,
        new.outputs,
    ):
        return False
    return _shapes(old) == _shapes(new)


def _shapes(trace: Trace) -> dict[int, int]:
    """How many nodes of each shape (node without its id, see :func:`only_reordered`) the trace has."""
    shapes: dict[str, int] = {}
    counts: dict[int, int] = {}
    for node in trace.nodes:
        reads = []
        for ref in node.inputs:
            node_id, k = ids.split_output_ref(ref)
            reads.append((shapes[node_id], k) if node_id in shapes else ref)
        own = node.node_id if not node.kind.in_forward else node.module_path
        # repr: arguments may hold lists; hash: a shape stays one int however deep its readers go.
        shape = hash(repr((node.kind.value, own, node.op, node.args, node.outputs, node.stats, reads)))
        shapes[node.node_id] = shape
        counts[shape] = counts.get(shape, 0) + 1
    return counts
