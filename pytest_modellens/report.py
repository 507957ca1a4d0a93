"""The words of a failing model assertion: headline, causes, totals, and the next step.

Text only: the plugin hands in what syrupy found, the differ's Comparison and the
:class:`NextStep` (the picture, the snapshot, the kept new snapshot, the command that
accepts the change), and gets the lines of the assertion message back. The change list is
:func:`pytest_modellens.causes.explain`'s rows, causes first. Where pytest cuts a long
message (8 lines, 640 characters unless configured, and never under ``-vv`` or in CI) as
many rows are listed as leave the picture, the snapshot and the command in view, then
``... and N more``; a limit of rows (``--lens-max-changes``) replaces that fit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from . import ids
from .causes import Findings, Row, explain
from .changes import Change, ChangeKind, Comparison, count, only_reordered, whole_modules
from .errors import ModelLensError

#: Widest subject column before lines stop being aligned.
MAX_SUBJECT = 40
#: Longest change line on a screen that pytest cuts; the whole line is in ``-vv``.
MAX_ROW = 110
UPDATE = "pytest --lens-update"
#: What pytest shows of an assertion message unless configured: lines and characters.
SCREEN_LINES, SCREEN_CHARS = 8, 640


@dataclass(frozen=True, slots=True)
class Screen:
    """How much of an assertion message pytest shows before it cuts the rest."""

    lines: int = SCREEN_LINES
    chars: int = SCREEN_CHARS

    def fits(self, lines: Sequence[str]) -> bool:
        return len(lines) <= self.lines and sum(map(len, lines)) <= self.chars


@dataclass(frozen=True, slots=True)
class NextStep:
    """Where the failure's files are and how to accept it: the closing lines of a message."""

    snapshot: str  # the committed snapshot, as a message shows its path
    picture: str = ""  # the line naming the picture (``picture: ...``); none for a missing snapshot
    kept: str = ""  # the new snapshot kept in the artifacts directory
    command: str = UPDATE  # the exact command that accepts this test's change

    def lines(self, *, verb: str = "accept") -> list[str]:
        kept = f", new: {self.kept}" if self.kept else ""
        return [
            *([self.picture] if self.picture else []),
            f"snapshot: {self.snapshot}{kept}",
            f"{verb} with: {self.command}",
        ]


def headline(changes: list[Change]) -> str:
    """``1 node added, 2 nodes changed``: what the change list holds, in a few words."""
    nodes: dict[str, set[str]] = {"added": set(), "removed": set(), "changed": set()}
    modules: Counter[str] = Counter()
    params: set[str] = set()
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
        elif change.kind is ChangeKind.MODULE_RECONFIGURED:
            modules["changed"] += 1
        elif change.kind is ChangeKind.PARAMS_CHANGED:
            params.add(change.subject if ids.ref_kind(change.subject) is not ids.RefKind.NODE else "")
    nodes["changed"] -= nodes["added"]
    parts = [f"{count(len(node_ids), 'node')} {which}" for which, node_ids in nodes.items() if node_ids]
    parts += [f"{count(n, 'module')} {which}" for which, n in modules.items()]
    if params and not parts:  # only parameters moved: reshaped, frozen or unfrozen ones
        named = params - {""}
        parts.append(f"{count(len(named), 'parameter')} changed" if named else "parameter counts changed")
    if not parts and changes:
        parts = ["the summary changed"]
    return ", ".join(parts) or "no difference found in the parsed data"


def row_lines(rows: Sequence[Row], *, width: int | None = None) -> list[str]:
    """One aligned line per row; each cut to ``width`` characters when given."""
    subject_width = min(max((len(row.subject) for row in rows), default=0), MAX_SUBJECT)
    detail_width = max((len(row.detail) for row in rows), default=0)
    lines = []
    for row in rows:
        line = (
            f"  {row.sign} {row.subject.ljust(subject_width)}  {row.detail.ljust(detail_width)}  {row.value}"
        )
        line = (f"{line}  ({row.note})" if row.note else line).rstrip()
        lines.append(line if width is None else _cut(line, width))
    return lines


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def change_lines(findings: Findings, *, limit: int | None = None, hint: str = "") -> list[str]:
    """The rows of ``findings``, at most ``limit`` of them, then ``... and K more (hint)`` or the totals."""
    rows = findings.rows if limit is None else findings.rows[:limit]
    lines = row_lines(rows)
    if len(rows) < len(findings.rows):
        lines.append(f"  ... and {len(findings.rows) - len(rows)} more" + (f" ({hint})" if hint else ""))
    elif findings.totals_line:
        lines.append(f"  {findings.totals_line}")
    return lines


def _more(hidden: int, findings: Findings) -> str:
    what = f"{hidden} more" if hidden else ""
    totals = "the totals" if findings.totals_line else ""
    return f"  ... and {' and '.join(filter(None, [what, totals]))} (-vv shows all)"


def fit(
    head: list[str], findings: Findings, tail: list[str], *, limit: int | None, screen: Screen | None
) -> list[str]:
    """``head``, as many rows as ``limit`` or the ``screen`` leave room for, then ``tail``.

    With a ``limit`` it is the number of rows (0 for all); without one, rows are listed until
    the next would push the tail past what pytest shows; the first row always is. Rows left
    out, and totals left out, are counted in one line.
    """
    rows = findings.rows
    if limit is not None or screen is None:
        shown = len(rows) if not limit else min(limit, len(rows))
        return [*head, *change_lines(findings, limit=shown, hint="--lens-max-changes 0 lists all"), *tail]
    for shown in range(len(rows), -1, -1):
        lines = row_lines(rows[:shown], width=MAX_ROW)
        totals = _cut(f"  {findings.totals_line}", MAX_ROW)
        complete = [*lines, totals] if findings.totals_line else lines
        if shown == len(rows) and screen.fits([*head, *complete, *tail]):
            return [*head, *complete, *tail]
        if shown < len(rows) or findings.totals_line:
            message = [*head, *lines, _more(len(rows) - shown, findings), *tail]
            if screen.fits(message) or shown <= 1:
                return message
    return [*head, _more(len(rows), findings), *tail]


def missing(name: str, step: NextStep) -> list[str]:
    return [f"model snapshot {name} does not exist", *step.lines(verb="write it")]


def not_compared(name: str, location: str, error: BaseException) -> list[str]:
    if isinstance(error, ModelLensError):  # says what happened and what to do in its own words
        return [f"model snapshot {name}: {error}", f"snapshot: {location}"]
    return [
        f"model snapshot {name} could not be compared: {type(error).__name__}: {error}",
        f"snapshot: {location}",
    ]


def unreadable(name: str, step: NextStep, problem: str) -> list[str]:
    """A snapshot file that is there but is no model snapshot: say why, and how to repair it."""
    return [f"model snapshot {name} cannot be read: {problem}", *step.lines()]


def not_listed(name: str, step: NextStep, error: BaseException) -> list[str]:
    problem = f"the changes could not be listed ({type(error).__name__}: {error})"
    return [f"model snapshot {name} changed", f"  {problem}", *step.lines()]


#: What a failure says when only the order of the work changed, not the work.
REORDERED = (
    "only the order changed: the same operations ran in another order, as when a forward loops "
    "over a set (its order follows PYTHONHASHSEED, which differs between processes and xdist "
    "workers); iterate in a fixed order (sorted(...)) or run pytest with PYTHONHASHSEED=0, then "
    "--lens-update"
)


def changed(
    name: str,
    comparison: Comparison,
    step: NextStep,
    *,
    limit: int | None = None,
    screen: Screen | None = None,
) -> list[str]:
    """The message of a model that drifted: headline, first NaN, causes, totals, picture, snapshot, command."""
    # A NaN spreads to everything after it; the first node that made one is the lead.
    nonfinite = comparison.new.first_nonfinite
    head = [
        f"model snapshot {name} changed: {headline(comparison.changes)}",
        *([f"first NaN/Inf: {nonfinite.node_id} ({nonfinite.op})"] if nonfinite is not None else []),
        *([REORDERED] if only_reordered(comparison.old, comparison.new) else []),
    ]
    return fit(head, explain(comparison), step.lines(), limit=limit, screen=screen)
