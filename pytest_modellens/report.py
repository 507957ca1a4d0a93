"""What a failing model assertion tells the user: the message and the picture.

Called from the plugin's ``pytest_assertrepr_compare`` hook with the syrupy assertion
that just failed; nothing here changes a snapshot file.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .canonical import UPDATE_HINT, parse
from .errors import SnapshotFormatError
from .extension import last_result
from .trace import Trace

if TYPE_CHECKING:
    import pytest

    from .plugin import Settings

#: Most diff lines shown in a failure message; the rest are counted.
MAX_LINES = 40
ACCEPT = "accept with: pytest --lens-update"


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


def _text_diff(old_text: str, new_text: str) -> list[str]:
    lines = [
        line.rstrip("\n")
        for line in difflib.unified_diff(
            old_text.splitlines(), new_text.splitlines(), "snapshot", "model", n=0, lineterm=""
        )
        if not line.startswith(("---", "+++", "@@"))
    ]
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES] + [f"... and {len(lines) - MAX_LINES} more lines"]
    return ["  " + line for line in lines]


def failure_lines(item: pytest.Item | None, trace: Trace, snapshot: Any, settings: Settings) -> list[str]:
    """The assertion message for ``trace == snapshot`` that failed."""
    result = last_result(snapshot)
    name = result.snapshot_name if result else "?"
    location = _display(result.snapshot_location) if result else "?"
    if result is None:
        return [f"model snapshot {name} could not be compared"]
    if result.exception is not None:
        error = result.exception
        return [f"model snapshot {name} could not be compared: {type(error).__name__}: {error}", f"snapshot: {location}"]
    if result.recalled_data is None:
        return [
            f"model snapshot {name} does not exist",
            f"snapshot: {location}",
            "write it with: pytest --lens-update",
        ]
    old_text, new_text = str(result.recalled_data), str(result.asserted_data)
    try:
        parse(old_text, source=f"snapshot file {location}")
    except SnapshotFormatError as error:
        return [f"model snapshot {name} cannot be read", f"  {error}", f"snapshot: {location}", ACCEPT]
    return [
        f"model snapshot {name} changed",
        *_text_diff(old_text, new_text),
        f"snapshot: {location}",
        ACCEPT,
    ]


def draw_model_picture(item: pytest.Item, trace: Trace, settings: Settings) -> Path | None:
    """Draw a traced model into the artifacts directory (the ``--lens-pictures`` option)."""
    from .render import render_trace

    count = getattr(item, "_lens_pictures", 0)
    item._lens_pictures = count + 1  # type: ignore[attr-defined]
    path = artifact_path(item, settings, index=count, suffix=settings.picture_format)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(render_trace(trace, str(path)))
