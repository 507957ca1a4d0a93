"""The Change records: what differs between two models, how important it is, how it reads.

The differ makes them and the failure message and the diff picture show them. A
:class:`ChangeKind` ranks a change (the order of the enum, most important first) and a
:class:`Change` writes itself as the columns of one line of a change list: its sign
(``+`` added, ``-`` removed, ``~`` changed), subject, detail and ``old -> new`` value.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from .trace import Tolerance


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


_RANKS = {kind: rank for rank, kind in enumerate(ChangeKind)}
_NODE_KINDS = {ChangeKind.NODE_ADDED, ChangeKind.NODE_REMOVED, ChangeKind.OP_CHANGED,
               ChangeKind.OUTPUT_CHANGED, ChangeKind.INPUTS_REWIRED, ChangeKind.ARGS_CHANGED,
               ChangeKind.STAT_CHANGED}  # fmt: skip
_ADDED = {ChangeKind.NODE_ADDED, ChangeKind.MODULE_ADDED}
_REMOVED = {ChangeKind.NODE_REMOVED, ChangeKind.MODULE_REMOVED}


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between the old and the new model.

    ``subject`` is what changed, in the new model's names (the old one's for removals):
    a node id (``id#k`` for one output of several), a module path, a parameter ref, or
    ``model`` for the summary. ``detail`` says which part of it (``inputs``,
    ``extra_repr``, ``mean``...); ``old``/``new`` are the values before and after, None
    where there was none; ``tolerance`` is set on statistics only.
    """

    kind: ChangeKind
    subject: str
    detail: str = ""
    old: Any = None
    new: Any = None
    tolerance: Tolerance | None = None

    @property
    def sign(self) -> str:
        """``+`` for an addition, ``-`` for a removal, ``~`` for any other change."""
        if self.kind in _ADDED:
            return "+"
        if self.kind in _REMOVED:
            return "-"
        return "~"

    @property
    def node_id(self) -> str | None:
        """The node this change is on (without a ``#k`` output suffix), if it is on one."""
        return self.subject.partition("#")[0] if self.kind.on_node else None

    def columns(self) -> tuple[str, str, str, str]:
        """``(sign, subject, detail, value)``: the columns of one line of a change list."""
        subject = self.subject or "<root>"
        if self.kind in _ADDED:
            return self.sign, subject, self.detail, _show(self.new)
        if self.kind in _REMOVED:
            return self.sign, subject, self.detail, _show(self.old)
        if self.kind is ChangeKind.MODULE_RENAMED:
            return self.sign, f"{self.old} -> {self.new}", "renamed", ""
        if self.detail == "extra_repr" and isinstance(self.old, str) and isinstance(self.new, str):
            # `in_features=4, out_features=1, bias=True`: name the settings that moved
            value = _arrow(self.old.split(", "), self.new.split(", "))
        else:
            value = _arrow(self.old, self.new)
        if self.tolerance is not None:
            value += f"  (rtol {self.tolerance.rtol:g}, atol {self.tolerance.atol:g})"
        return self.sign, subject, self.detail, value

    def __str__(self) -> str:
        return "  ".join(part for part in self.columns() if part)


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
