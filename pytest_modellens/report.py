"""What a failing model assertion tells the user: the changes, and a picture of them.

Called from the plugin's ``pytest_assertrepr_compare`` hook with the syrupy assertion
that just failed; nothing here changes a snapshot file. The message lists the
differ's Changes, grouped most important first and capped, names the diff picture
written to the artifacts directory and says how to accept the change. A picture that
cannot be drawn is mentioned in the message and never fails the run.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .changes import Change, ChangeKind
from .errors import RenderError, SnapshotFormatError
from .trace import Trace

if TYPE_CHECKING:
    from .differ import Comparison
    from .plugin import Settings

#: Most changes listed in a failure message; the rest are counted.
MAX_CHANGES = 12
#: Widest subject column before lines stop being aligned.
MAX_SUBJECT = 40
ACCEPT = "accept with: pytest --lens-update"
#: The junit-xml property (and "model diffs" summary entry) naming a picture.
ARTIFACT_PROPERTY = "lens_artifact"
#: How many diff and model pictures a test has drawn so far, for their file names.
_diffs_drawn = pytest.StashKey[int]()
_models_drawn = pytest.StashKey[int]()


def artifact_path(item: pytest.Item | None, settings: Settings, *, index: int, suffix: str) -> Path:
    """A file name for an artifact of one assertion: safe for any test id, unique per test.

    ``tests/test_models.py::test_net[a/b-1.5-..]`` becomes
    ``<artifacts>/tests/test_models.py--test_net_a_b-1.5-.._<hash>.svg``: the test's
    directory is kept as folders, unsafe characters become ``_`` and, when any were
    replaced, a hash of the exact node id keeps two ids that differ only there apart.
    """
    nodeid = item.nodeid if item is not None else "unknown"
    file_part, _, rest = nodeid.partition("::")
    file_path = Path(file_part)
    stem = f"{file_path.name}--{rest.replace('::', '--')}" + (f".{index}" if index else "")
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem).strip(".")
    if safe != stem:
        safe = f"{safe[:120]}_{hashlib.sha1(nodeid.encode()).hexdigest()[:8]}"
    folders = [re.sub(r"[^A-Za-z0-9_.\-]", "_", part).replace("..", "__") for part in file_path.parent.parts]
    return settings.artifacts_dir.joinpath(*folders, f"{safe}.{suffix}")


def _display(path: str | Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def headline(changes: list[Change]) -> str:
    """``1 node added, 2 nodes changed``: what the change list holds, in a few words."""
    nodes: dict[str, set[str]] = {"added": set(), "removed": set(), "changed": set()}
    modules: Counter[str] = Counter()
    for change in changes:
        if change.node_id is not None:
            which = {"+": "added", "-": "removed"}.get(change.sign, "changed")
            nodes[which].add(change.node_id)
        elif change.kind is ChangeKind.MODULE_RENAMED:
            modules["renamed"] += 1
        elif change.kind in (ChangeKind.MODULE_ADDED, ChangeKind.MODULE_REMOVED):
            modules[change.kind.value.split()[1]] += 1
    nodes["changed"] -= nodes["added"]
    parts = [f"{_count(len(ids), 'node')} {which}" for which, ids in nodes.items() if ids]
    parts += [f"{_count(n, 'module')} {which}" for which, n in modules.items()]
    if not parts and changes:
        parts = ["the summary changed"]
    return ", ".join(parts) or "no difference found in the parsed data"


def _rows(changes: list[Change]) -> list[tuple[str, str, str, str]]:
    """The columns of each change; a whole module added or removed is one row, not one per node."""
    whole = {
        ChangeKind.NODE_ADDED: ChangeKind.MODULE_ADDED,
        ChangeKind.NODE_REMOVED: ChangeKind.MODULE_REMOVED,
    }
    modules = {(c.kind, c.subject): c for c in changes if c.kind in whole.values() and c.subject}

    def owner(change: Change) -> Change | None:
        if change.kind in whole:
            path = change.subject.rpartition("/")[0].partition(":")[0]
        elif change.kind in whole.values():
            path = change.subject.rpartition(".")[0]  # a submodule folds into its parent's row
        else:
            return None
        parts = path.split(".")
        kind = whole.get(change.kind, change.kind)
        return next((modules[kind, p] for p in (".".join(parts[:n]) for n in range(1, len(parts) + 1))
                     if (kind, p) in modules), None)  # fmt: skip

    members: dict[str, list[Change]] = {}
    for change in changes:
        top = owner(change)
        if top is not None and change.kind in whole:
            members.setdefault(top.subject, []).append(change)
    rows, shown = [], set()
    for change in changes:
        top = owner(change) or (change if change.kind in whole.values() else None)
        if top is None or len(members.get(top.subject, ())) < 2:
            rows.append(change.columns())
        elif top.subject not in shown:
            shown.add(top.subject)
            nodes = _count(len(members[top.subject]), "node")
            rows.append((top.sign, top.subject, top.detail, f"{nodes} {top.kind.value.split()[1]}"))
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


def _record(item: pytest.Item | None, path: str | Path) -> str:
    """Name an artifact in the junit-xml properties (and the "model diffs" summary)."""
    shown = _display(path)
    if item is not None:
        item.user_properties.append((ARTIFACT_PROPERTY, shown))
    return shown


def _next_index(item: pytest.Item | None, counter: pytest.StashKey[int]) -> int:
    if item is None:
        return 0
    count = item.stash[counter] = item.stash.get(counter, -1) + 1
    return count


def _draw_diff(item: pytest.Item | None, comparison: Comparison, settings: Settings) -> str:
    """Write the diff picture of one failed assertion; the message line that names it."""
    from .render import render_diff

    index = _next_index(item, _diffs_drawn)
    path = artifact_path(item, settings, index=index, suffix=settings.picture_format)
    try:
        written = render_diff(comparison.old, comparison.new, path, comparison=comparison)
    except RenderError as error:
        kept = path.with_suffix(".gv")
        if kept.is_file():
            _record(item, kept)
        return f"picture: not drawn: {error}"
    except Exception as error:  # noqa: BLE001 - a drawing bug must not hide the diff itself
        return f"picture: not drawn ({type(error).__name__}: {error})"
    return f"picture: {_record(item, written)}"


def failure_lines(item: pytest.Item | None, trace: Trace, snapshot: Any, settings: Settings) -> list[str]:
    """The assertion message for ``trace == snapshot`` that failed."""
    from .differ import compare
    from .extension import last_result

    result = last_result(snapshot)
    name = result.snapshot_name if result else "?"
    location = _display(result.snapshot_location) if result else "?"
    if result is None:
        return [f"model snapshot {name} could not be compared"]
    if result.exception is not None:
        error = result.exception
        return [
            f"model snapshot {name} could not be compared: {type(error).__name__}: {error}",
            f"snapshot: {location}",
        ]
    if result.recalled_data is None:
        return [
            f"model snapshot {name} does not exist",
            f"snapshot: {location}",
            "write it with: pytest --lens-update",
        ]
    try:
        comparison = compare(str(result.recalled_data), trace, tolerance=trace.tolerance)
    except SnapshotFormatError as error:
        return [f"model snapshot {name} cannot be read", f"  {error}", f"snapshot: {location}", ACCEPT]
    except Exception as error:  # noqa: BLE001 - the test failed either way; say so, not a traceback
        problem = f"the changes could not be listed ({type(error).__name__}: {error})"
        return [f"model snapshot {name} changed", f"  {problem}", f"snapshot: {location}", ACCEPT]
    # A NaN spreads to everything after it; the first node that made one is the lead.
    nonfinite = trace.first_nonfinite
    return [
        f"model snapshot {name} changed: {headline(comparison.changes)}",
        *change_lines(comparison.changes),
        *([f"first NaN/Inf: {nonfinite.node_id} ({nonfinite.op})"] if nonfinite is not None else []),
        _draw_diff(item, comparison, settings),
        f"snapshot: {location}",
        ACCEPT,
    ]


def draw_model_picture(item: pytest.Item, trace: Trace, settings: Settings) -> Path | None:
    """Draw a traced model into the artifacts directory (the ``--lens-pictures`` option).

    Named ``<test>.model.<format>`` so that a diff picture of the same test never
    overwrites it. A picture that cannot be drawn becomes a warning, never a failure.
    """
    from .render import render_trace

    index = _next_index(item, _models_drawn)
    path = artifact_path(item, settings, index=index, suffix=f"model.{settings.picture_format}")
    try:
        written = Path(render_trace(trace, path))
    except Exception as error:  # noqa: BLE001 - a picture is a by-product; the test goes on
        item.warn(pytest.PytestWarning(f"model picture not drawn: {error}"))
        return None
    return written
