"""The words of a failing model assertion: headline, change list, and the next step.

Text only: the plugin hands in what syrupy found, the differ's Comparison and the line
naming the picture, and gets the lines of the assertion message back. Changes come
grouped most important first and capped; a whole added or removed module is one row.
"""

from __future__ import annotations

from collections import Counter

from . import ids
from .changes import Change, ChangeKind, Comparison, count, whole_modules
from .errors import ModelLensError

#: Most changes listed in a failure message; the rest are counted.
MAX_CHANGES = 12
#: Widest subject column before lines stop being aligned.
MAX_SUBJECT = 40
ACCEPT = "accept with: pytest --lens-update"


def headline(changes: list[Change]) -> str:
    """``1 node added, 2 nodes changed``: what the change list holds, in a few words."""
    nodes: dict[str, set[str]] = {"added": set(), "removed": set(), "changed": set()}
    modules: Counter[str] = Counter()
    whole = whole_modules(changes)
    for change in changes:
        if change.node_id is not None:
            nodes[change.effect.word].add(change.node_id)
        elif change.kind is ChangeKind.MODULE_RENAMED:
            modules["renamed"] += 1
        elif change.kind in (ChangeKind.MODULE_ADDED, ChangeKind.MODULE_REMOVED):
            inside = [p for p in ids.ancestors(ids.parent(change.subject)) if p in whole]
            if not inside:  # a module inside a whole added one is part of it, as in the list
                modules[change.effect.word] += 1
    nodes["changed"] -= nodes["added"]
    parts = [f"{count(len(node_ids), 'node')} {which}" for which, node_ids in nodes.items() if node_ids]
    parts += [f"{count(n, 'module')} {which}" for which, n in modules.items()]
    if not parts and changes:
        parts = ["the summary changed"]
    return ", ".join(parts) or "no difference found in the parsed data"


def _rows(changes: list[Change]) -> list[tuple[str, str, str, str]]:
    """The columns of each change; a whole module added or removed is one row, not one per node."""
    whole = whole_modules(changes)
    folded = {id(member): path for path, module in whole.items() for member in module.members}
    rows, shown = [], set()
    for change in changes:
        path = folded.get(id(change))
        if path is None and change.kind.on_module:
            path = next((p for p in ids.ancestors(change.subject) if p in whole), None)
            if path is not None and whole[path].change.kind is not change.kind:
                path = None
        if path is None:
            rows.append(change.columns())
        elif path not in shown:
            shown.add(path)
            top = whole[path].change
            nodes = count(len(whole[path].members), "node")
            rows.append((top.sign, top.subject, top.detail, f"{nodes} {top.effect.word}"))
    return rows


def change_lines(changes: list[Change], *, limit: int = MAX_CHANGES) -> list[str]:
    """One aligned line per change, most important first, then ``... and K more``."""
    all_rows = _rows(changes)
    rows = all_rows[:limit]
    subject_width = min(max((len(row[1]) for row in rows), default=0), MAX_SUBJECT)
    detail_width = max((len(row[2]) for row in rows), default=0)
    lines = [
        f"  {sign} {subject.ljust(subject_width)}  {detail.ljust(detail_width)}  {value}".rstrip()
        for sign, subject, detail, value in rows
    ]
    if len(all_rows) > limit:
        lines.append(f"  ... and {len(all_rows) - limit} more")
    return lines


def missing(name: str, location: str) -> list[str]:
    return [
        f"model snapshot {name} does not exist",
        f"snapshot: {location}",
        "write it with: pytest --lens-update",
    ]


def not_compared(name: str, location: str, error: BaseException) -> list[str]:
    if isinstance(error, ModelLensError):  # says what happened and what to do in its own words
        return [f"model snapshot {name}: {error}", f"snapshot: {location}"]
    return [
        f"model snapshot {name} could not be compared: {type(error).__name__}: {error}",
        f"snapshot: {location}",
    ]


def unreadable(name: str, location: str, problem: str) -> list[str]:
    """A snapshot file that is there but is no model snapshot: say why, and how to repair it."""
    return [f"model snapshot {name} cannot be read: {problem}", f"snapshot: {location}", ACCEPT]


def not_listed(name: str, location: str, error: BaseException) -> list[str]:
    problem = f"the changes could not be listed ({type(error).__name__}: {error})"
    return [f"model snapshot {name} changed", f"  {problem}", f"snapshot: {location}", ACCEPT]


def changed(name: str, location: str, comparison: Comparison, picture: str) -> list[str]:
    """The message of a model that drifted: headline, changes, first NaN, picture, snapshot, next step."""
    # A NaN spreads to everything after it; the first node that made one is the lead.
    nonfinite = comparison.new.first_nonfinite
    return [
        f"model snapshot {name} changed: {headline(comparison.changes)}",
        *change_lines(comparison.changes),
        *([f"first NaN/Inf: {nonfinite.node_id} ({nonfinite.op})"] if nonfinite is not None else []),
        picture,
        f"snapshot: {location}",
        ACCEPT,
    ]
