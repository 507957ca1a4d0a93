"""Causes and their consequences: a change list grouped into the rows a reviewer reads.

Each Change of a :class:`~pytest_modellens.changes.Comparison` is one of three things:

- a **cause**, what a person edits: a module's class or configuration, an input's dtype or
  shape, a parameter, a node added or removed, inputs rewired, an op or argument changed;
- a **consequence** of a cause: a shape or dtype downstream of it, the parameters its
  configuration reshaped, the consumers rewired around a node it added, the ops inside a
  module whose class it swapped. A consequence is counted under its cause ("4 shapes
  follow"), not listed; a change seen twice (a module's ``eps`` and its op's ``eps``
  argument) is listed once;
- a **total** of the summary (``ops``, ``params``...): derived, so one closing line.

Causes that say the same thing at several places are one :class:`Row` with the places
compressed (``blocks.{0..3}.norm``); a dtype that changed on many tensors at once is one row
(``all 33 tensors  float32 -> bfloat16``). Rows come most important first, each kind in
graph order. Everything here is ordered by the change list and the graphs, never by a set,
so the same comparison always reads the same.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from . import ids
from .changes import Change, ChangeKind, Comparison, count, settings_moved, whole_modules
from .trace import Node, NodeKind, TensorSpec

#: Summary keys in the order the closing line gives them.
TOTALS = ("ops", "tensors", "tensor_bytes", "params", "param_bytes", "param_ops", "modules",
          "recurrent", "passes", "branching", "conditional")  # fmt: skip
#: Consequence nouns in the order a row counts them.
_NOUNS = ("shape", "dtype", "layout", "output", "parameter", "rewiring", "statistic")


class _Rank(IntEnum):
    """How soon a kind of cause is read: what a person edits before what it set off."""

    MODULE = 0  # class, configuration, added, removed, renamed
    INPUT = 1  # an input's dtype or shape
    PARAM = 2  # a parameter's dtype or shape
    NODE = 3  # an op added or removed
    WIRING = 4  # inputs rewired, op changed
    ARGS = 5
    OUTPUT = 6  # a shape or dtype nothing above explains
    COUNT = 7  # a module's parameter count nothing above explains
    STAT = 8
    SUMMARY = 9


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a change list: what changed, where, and what follows from it.

    ``subject`` may stand for several places (``blocks.{0..3}.norm (LayerNorm)``);
    ``note`` counts the consequences (``4 shapes follow``); ``changes`` are every Change
    the row stands for, its consequences included.
    """

    sign: str
    subject: str
    detail: str
    value: str
    note: str = ""
    changes: tuple[Change, ...] = ()

    def columns(self) -> tuple[str, str, str, str, str]:
        return self.sign, self.subject, self.detail, self.value, self.note


@dataclass(frozen=True, slots=True)
class Findings:
    """A comparison read for a person: the rows, causes first, and the closing totals."""

    rows: tuple[Row, ...]
    totals: tuple[str, ...]  # ``ops 49 -> 50``
    tolerance: str = ""  # said once, when statistics are listed or counted

    @property
    def totals_line(self) -> str:
        if not self.totals and not self.tolerance:
            return ""
        parts = [f"totals: {', '.join(self.totals)}"] if self.totals else []
        return "; ".join([*parts, *([self.tolerance] if self.tolerance else [])])


@dataclass(slots=True)
class _Cause:
    """A cause being collected: its change(s), where it ranks, what follows from it."""

    changes: list[Change]
    rank: _Rank
    order: int
    follows: Counter[str] = field(default_factory=Counter)
    members: list[Change] = field(default_factory=list)  # consequences, counted or not
    ops_of: str | None = None  # set on the ops added and removed in one module, read as one cause

    @property
    def key(self) -> tuple[int, int]:
        return self.rank, self.order

    @property
    def change(self) -> Change:
        return self.changes[0]


def _first(causes: Iterable[_Cause | None]) -> _Cause | None:
    """The most important of several candidate causes."""
    found = [c for c in causes if c is not None]
    return min(found, key=lambda c: c.key) if found else None


class _Reader:
    """Sorts one comparison's changes into causes, consequences and totals."""

    def __init__(self, comparison: Comparison) -> None:
        self.comparison = comparison
        self.position = {id(change): k for k, change in enumerate(comparison.changes)}
        self.causes: list[_Cause] = []
        self.modules: dict[str, _Cause] = {}  # module path -> the cause that explains what is in it
        self.params: dict[str, _Cause] = {}  # param ref -> its cause
        self.added: dict[str, _Cause] = {}  # new node id -> cause
        self.removed: dict[str, _Cause] = {}  # old node id -> cause
        self.explained: dict[str, _Cause] = {}  # new node id -> the cause of its change
        self.totals: dict[str, str] = {}

    def cause(self, change: Change, rank: _Rank) -> _Cause:
        found = _Cause([change], rank, self.position[id(change)])
        self.causes.append(found)
        return found

    @staticmethod
    def follow(cause: _Cause, change: Change, noun: str | None = None) -> _Cause:
        cause.members.append(change)
        if noun is not None:
            cause.follows[noun] += 1
        return cause

    def module_cause(self, path: str, *, of_ops: bool = False) -> _Cause | None:
        """The change of ``path`` or a module around it that explains what happens inside (never the root's).

        A new configuration explains new shapes, parameters and arguments; which ops run
        (``of_ops``) only a new class, or a module added or removed as a whole, explains.
        """
        for prefix in reversed(ids.ancestors(path)):
            found = self.modules.get(prefix) if prefix else None
            if found is not None and (not of_ops or found.change.detail != "config"):
                return found
        return None

    # -- the passes, in an order where every cause exists before what it explains --------

    def read(self) -> None:
        changes = self.comparison.changes
        whole = whole_modules(changes)
        in_whole = {id(m): path for path, module in whole.items() for m in module.members}
        per_node: defaultdict[str, list[Change]] = defaultdict(list)
        for change in changes:
            kind = change.kind
            if kind.on_module:
                self.read_module(change)
            elif kind is ChangeKind.SUMMARY_CHANGED and change.detail == "model":
                self.cause(change, _Rank.MODULE)
            elif change.node_id is not None and kind not in (ChangeKind.NODE_ADDED, ChangeKind.NODE_REMOVED):
                per_node[change.node_id].append(change)
        for change in changes:
            if change.kind is ChangeKind.PARAMS_CHANGED and change.detail == "tensor":
                self.read_param(change)
        for change in changes:
            if change.kind in (ChangeKind.NODE_ADDED, ChangeKind.NODE_REMOVED):
                self.read_node_added_or_removed(change, whole.get(in_whole.get(id(change), "")))
        for node in self.comparison.new.nodes:
            if node.node_id in per_node:
                self.read_node(node, per_node[node.node_id])
            elif node.node_id in self.added:  # what comes through a new op comes from upstream too
                added = self.added[node.node_id]
                self.explained[node.node_id] = _first([added, *self.upstream(node)]) or added
        for change in changes:
            if change.kind is ChangeKind.PARAMS_CHANGED and change.detail in ("params", "trainable params"):
                self.read_param_count(change)
            elif change.kind in (ChangeKind.SUMMARY_CHANGED, ChangeKind.STRUCTURE_CHANGED):
                self.read_summary(change)

    def read_module(self, change: Change) -> None:
        path = change.subject
        if change.kind in (ChangeKind.MODULE_ADDED, ChangeKind.MODULE_REMOVED):
            outer = next((self.modules[p] for p in ids.ancestors(ids.parent(path))
                          if p in self.modules and self.modules[p].change.kind is change.kind), None)  # fmt: skip
            if outer is not None:  # a module inside an added module is part of it
                self.follow(outer, change)
                self.modules[path] = outer
                return
        found = self.cause(change, _Rank.MODULE)
        if change.kind is not ChangeKind.MODULE_RENAMED and path:
            self.modules.setdefault(path, found)

    def read_param(self, change: Change) -> None:
        _, name = ids.split_ref(change.subject)
        explained = self.module_cause(ids.parent(name))
        if explained is not None:
            self.params[change.subject] = self.follow(explained, change, "parameter")
        else:
            self.params[change.subject] = self.cause(change, _Rank.PARAM)

    def read_node_added_or_removed(self, change: Change, whole: Any) -> None:
        node_id = change.subject
        if whole is not None:
            found = self.follow(self.modules[whole.change.subject], change)
        else:
            explained = self.module_cause(ids.node_path(node_id), of_ops=True)
            found = self.follow(explained, change) if explained else self.cause(change, _Rank.NODE)
        if change.kind is ChangeKind.NODE_ADDED:
            self.added[node_id] = self.explained[node_id] = found
        else:
            self.removed[node_id] = found

    def upstream(self, node: Node) -> list[_Cause | None]:
        """The causes of what changed in a node's inputs: producers' and parameters'."""
        return [self.explained.get(ids.ref_node(ref)) if ids.is_node_ref(ref) else self.params.get(ref)
                for ref in node.inputs]  # fmt: skip

    def read_node(self, node: Node, changes: list[Change]) -> None:
        own = self.module_cause(node.module_path) if node.kind.in_forward else None
        upstream = self.upstream(node)
        structural: _Cause | None = None
        for change in changes:
            if change.kind is ChangeKind.INPUTS_REWIRED:
                around = [self.added.get(ids.ref_node(r)) for r in change.new or () if ids.is_node_ref(r)]
                around += [self.removed.get(ids.ref_node(r)) for r in change.old or () if ids.is_node_ref(r)]
                explained = _first([own, *around])
                found = (
                    self.follow(explained, change, "rewiring")
                    if explained
                    else self.cause(change, _Rank.WIRING)
                )
            elif change.kind is ChangeKind.OP_CHANGED:
                replaced = self.module_cause(node.module_path, of_ops=True) if node.kind.in_forward else None
                found = self.follow(replaced, change) if replaced else self.cause(change, _Rank.WIRING)
            elif change.kind is ChangeKind.ARGS_CHANGED:
                found = self.follow(own, change) if own else self.cause(change, _Rank.ARGS)  # an echo
            else:
                continue
            structural = _first([structural, found])
        outputs: _Cause | None = None
        for change in changes:
            if change.kind is not ChangeKind.OUTPUT_CHANGED:
                continue
            if node.kind is NodeKind.INPUT:
                found = self.cause(change, _Rank.INPUT)
            else:
                explained = _first([own, structural, *upstream])
                noun = change.detail if change.detail in _NOUNS else "output"
                found = (
                    self.follow(explained, change, noun) if explained else self.cause(change, _Rank.OUTPUT)
                )
            outputs = _first([outputs, found])
        stats = [c for c in changes if c.kind is ChangeKind.STAT_CHANGED]
        explained = _first([outputs, structural, own, *upstream])
        if stats and explained is not None:
            for change in stats:
                self.follow(explained, change, "statistic")
        elif stats:
            explained = self.cause(stats[0], _Rank.STAT)
            explained.changes.extend(stats[1:])  # one row per node, all its statistics
        if explained is not None and (stats or outputs or structural):
            self.explained[node.node_id] = explained

    def read_param_count(self, change: Change) -> None:
        path = change.subject
        inside = [c for p, c in self.modules.items() if ids.is_within(p, path)]
        inside += [c for ref, c in self.params.items() if ids.is_within(ids.split_ref(ref)[1], path)]
        explained = _first([self.module_cause(path), *inside])
        if explained is not None:
            self.follow(explained, change)
        else:
            self.cause(change, _Rank.COUNT)

    def read_summary(self, change: Change) -> None:
        key = change.detail
        if key == "stats":
            self.cause(change, _Rank.SUMMARY)
        elif key == "model":
            return  # a cause, read with the modules
        elif key in ("inputs", "outputs") and self._ends_changed(
            NodeKind.INPUT if key == "inputs" else NodeKind.OUTPUT
        ):
            return  # the input or output node's own change says it
        else:
            self.totals[key] = f"{key} {_short(change.old)} -> {_short(change.new)}"

    def _ends_changed(self, kind: NodeKind) -> bool:
        nodes = {n.node_id for n in self.comparison.new.nodes if n.kind is kind}
        return any(c.node_id in nodes for c in self.comparison.changes)


def _short(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# -- rows --------------------------------------------------------------------------------------


def _class_of(comparison: Comparison, path: str) -> str:
    for trace in (comparison.new, comparison.old):
        for module in trace.modules:
            if module.path == path:
                return module.class_name
    return ""


def _describe(cause: _Cause, comparison: Comparison) -> tuple[str, str, str, str]:
    """``(sign, place, detail, value)`` of a cause; causes with the same all but place group."""
    change = cause.change
    sign, subject, detail, value = change.columns()
    if cause.ops_of is not None:
        added = [c for c in cause.changes if c.kind is ChangeKind.NODE_ADDED]
        removed = [c for c in cause.changes if c.kind is ChangeKind.NODE_REMOVED]
        sign = "~" if added and removed else cause.change.sign
        return (
            sign,
            ids.shown(cause.ops_of),
            "ops",
            " -> ".join(filter(None, [_op_names(removed), _op_names(added)])),
        )
    if change.kind is ChangeKind.MODULE_RECONFIGURED and change.detail == "config":
        moved = settings_moved(change.old or "", change.new or "")
        detail = moved[0][0] if len(moved) == 1 else "config"
        value = moved[0][1] if len(moved) == 1 else ", ".join(f"{k} {v}" for k, v in moved)
        subject = f"{subject} ({_class_of(comparison, change.subject)})"
    elif change.kind in (ChangeKind.MODULE_ADDED, ChangeKind.MODULE_REMOVED):
        inside = [c for c in cause.members if c.kind in (ChangeKind.NODE_ADDED, ChangeKind.NODE_REMOVED)]
        if len(inside) == 1:  # a module of one op (an added nn.ReLU): the op says more
            _, op_id, detail, value = inside[0].columns()
            return sign, f"{op_id} ({change.detail})", detail, value
        value = count(len(inside), "op") if inside else value
    elif change.kind is ChangeKind.STAT_CHANGED:
        detail = ", ".join(c.detail for c in cause.changes)
        value = ", ".join(c.columns()[3] for c in cause.changes)
    return sign, subject, detail, value


def _ops_inside(comparison: Comparison, path: str) -> tuple[int, int]:
    """Ops inside module ``path`` (its new name) before and after."""
    matching = comparison.matching
    before = sum(
        1 for n in comparison.old.op_nodes if ids.is_within(matching.module_path(n.module_path), path)
    )
    after = sum(1 for n in comparison.new.op_nodes if ids.is_within(n.module_path, path))
    return before, after


def _note(causes: list[_Cause], comparison: Comparison) -> str:
    parts = []
    change = causes[0].change
    if causes[0].ops_of is not None:
        first = causes[0].changes
        before = sum(1 for c in first if c.kind is ChangeKind.NODE_REMOVED)
        after = sum(1 for c in first if c.kind is ChangeKind.NODE_ADDED)
        each = " each" if len(causes) > 1 else ""
        if before and after:
            parts.append(f"{count(before, 'op')} -> {count(after, 'op')}{each}")
        else:
            parts.append(count(before + after, "op") + each)
    elif change.kind is ChangeKind.MODULE_RECONFIGURED and change.detail == "class" and change.subject:
        inside = {_ops_inside(comparison, c.change.subject) for c in causes}
        if any(before != after for before, after in inside):
            if len(inside) == 1:
                before, after = next(iter(inside))
                each = " each" if len(causes) > 1 else ""
                parts.append(f"{count(before, 'op')} -> {count(after, 'op')}{each}")
            else:
                before, after = map(sum, zip(*(_ops_inside(comparison, c.change.subject) for c in causes)))
                parts.append(f"{count(before, 'op')} -> {count(after, 'op')}")
    follows: Counter[str] = sum((c.follows for c in causes), Counter())
    counted = [count(follows[noun], noun) for noun in _NOUNS if follows[noun]]
    if counted:
        parts.append(", ".join(counted) + " follow" + ("s" if sum(follows.values()) == 1 else ""))
    return "; ".join(parts)


def _dtype_move(change: Change) -> tuple[str, str] | None:
    """``(old dtype, new dtype)`` of a change that moved a tensor's dtype and nothing else."""
    if change.detail not in ("dtype", "tensor") or not isinstance(change.old, str):
        return None
    try:
        before, after = TensorSpec.parse(change.old), TensorSpec.parse(str(change.new))
    except ValueError:
        return None
    if before.shape != after.shape or before.dtype == after.dtype:
        return None
    return before.dtype, after.dtype


def _row(causes: list[_Cause], comparison: Comparison, *, subject: str, detail: str, value: str) -> Row:
    sign = _describe(causes[0], comparison)[0]
    changes = tuple(c for cause in causes for c in (*cause.changes, *cause.members))
    return Row(sign, subject, detail, value, _note(causes, comparison), changes)


def _sweeps(causes: list[_Cause], comparison: Comparison) -> dict[int, tuple[str, str, list[_Cause]]]:
    """Dtype changes on many tensors at once (``.to(torch.bfloat16)``), keyed by their first cause.

    Each is ``(subject, value, causes)`` for one row: ``all 33 tensors``, ``float32 -> bfloat16``.
    """
    moves: defaultdict[tuple[str, str], list[_Cause]] = defaultdict(list)
    for cause in causes:
        move = _dtype_move(cause.change) if cause.rank in (_Rank.INPUT, _Rank.PARAM, _Rank.OUTPUT) else None
        if move is not None:
            moves[move].append(cause)
    out = {}
    tensors = comparison.new.tensor_count + len(comparison.new.params)
    for (before, after), group in moves.items():
        places = [c.change.subject for c in group]
        if len(group) < 3 or ids.compress(places) is not None:
            continue  # a few, or one compressible place: the ordinary rows say it better
        moved = len(group) + sum(c.follows["dtype"] for c in group)
        subject = (
            f"all {count(moved, 'tensor')}"
            if moved == tensors
            else f"{count(moved, 'tensor')} ({places[0]}, ...)"
        )
        for cause in group:
            cause.follows.pop("dtype", None)
        out[id(group[0])] = (subject, f"{before} -> {after}", group)
    return out


def _ops_together(causes: list[_Cause]) -> list[_Cause]:
    """The ops added and removed directly in one module, as one cause (SDPA -> matmul, softmax...)."""
    by_module: dict[str, list[_Cause]] = {}
    for cause in causes:
        if cause.rank is _Rank.NODE:
            by_module.setdefault(ids.node_path(cause.change.subject), []).append(cause)
    merged = {}
    for path, group in by_module.items():
        if len(group) > 1:
            together = _Cause([c for cause in group for c in cause.changes], _Rank.NODE, group[0].order,
                              sum((c.follows for c in group), Counter()),
                              [m for c in group for m in c.members], ops_of=path)  # fmt: skip
            merged.update({id(cause): together for cause in group})
    return list({id(merged.get(id(c), c)): merged.get(id(c), c) for c in causes}.values())


def _op_names(changes: Iterable[Change]) -> str:
    """``matmul x2, softmax``: op names in graph order, repeats counted."""
    counted = Counter(change.detail for change in changes)
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in counted.items())


def explain(comparison: Comparison) -> Findings:
    """The rows a person reads for ``comparison``: causes first, repeats grouped, totals apart."""
    reader = _Reader(comparison)
    reader.read()
    causes = _ops_together(sorted(reader.causes, key=lambda c: c.key))
    sweeps = _sweeps(causes, comparison)
    swept = {id(c) for *_, group in sweeps.values() for c in group}
    groups: dict[tuple[str, ...], list[_Cause]] = {}
    order: list[tuple[str, ...] | int] = []
    for cause in causes:
        if id(cause) in sweeps:
            order.append(id(cause))
            continue
        if id(cause) in swept:
            continue
        sign, subject, detail, value = _describe(cause, comparison)
        place, _, suffix = subject.partition(" (")
        key = (sign, str(cause.change.kind.value), ids.numbers_blind(place), suffix, detail, value)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(cause)
    rows: list[Row] = []
    for entry in order:
        if isinstance(entry, int):
            subject, value, group = sweeps[entry]
            rows.append(_row(group, comparison, subject=subject, detail="dtype", value=value))
            continue
        group = groups[entry]
        sign, _, _, suffix, detail, value = entry
        described = [_describe(c, comparison)[1].partition(" (")[0] for c in group]
        together = ids.compress(described)
        if together is None:  # the same change at places that do not compress: a row each
            for cause, place in zip(group, described):
                subject = f"{place} ({suffix}" if suffix else place
                rows.append(_row([cause], comparison, subject=subject, detail=detail, value=value))
            continue
        subject = f"{together} ({suffix}" if suffix else together
        rows.append(_row(group, comparison, subject=subject, detail=detail, value=value))
    listed = {id(c) for row in rows for c in row.changes}
    tolerance = comparison.new.tolerance
    has_stats = any(c.kind is ChangeKind.STAT_CHANGED and id(c) in listed for c in comparison.changes)
    note = (
        f"statistics within rtol {tolerance.rtol:g}, atol {tolerance.atol:g} count as equal"
        if has_stats
        else ""
    )
    totals = tuple(reader.totals[key] for key in (*TOTALS, *sorted(reader.totals)) if key in reader.totals)
    return Findings(tuple(rows), tuple(dict.fromkeys(totals)), note)
