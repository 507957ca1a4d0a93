"""The files a run leaves for a person or CI: pictures, their names, and where they are listed.

Each failing assertion's diff picture, and with ``--lens-pictures`` each traced model's
picture, goes to the artifacts directory under a name made from the test id. Every
picture written is named in the junit-xml properties (:data:`ARTIFACT_PROPERTY`) and in
the "model diffs" section of the terminal summary, which pytest never cuts.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest

from .changes import Comparison
from .errors import RenderError
from .settings import Settings
from .trace import Trace

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
    if safe != stem or len(safe) > 120:  # a file name has at most 255 bytes on most filesystems
        safe = f"{safe[:120]}_{hashlib.sha1(nodeid.encode()).hexdigest()[:8]}"
    folders = [re.sub(r"[^A-Za-z0-9_.\-]", "_", part).replace("..", "__") for part in file_path.parent.parts]
    return settings.artifacts_dir.joinpath(*folders, f"{safe}.{suffix}")


def display(path: str | Path) -> str:
    """A path as a message shows it: relative to the working directory where it can be."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def _record(item: pytest.Item | None, path: str | Path) -> str:
    """Name an artifact in the junit-xml properties and the "model diffs" summary, relative to the rootdir.

    Returns how the failure message shows it: relative to the working directory.
    """
    if item is not None:
        try:
            recorded = Path(path).resolve().relative_to(item.config.rootpath.resolve()).as_posix()
        except ValueError:  # an artifacts directory outside the rootdir
            recorded = str(path)
        item.user_properties.append((ARTIFACT_PROPERTY, recorded))
    return display(path)


def _next_index(item: pytest.Item | None, counter: pytest.StashKey[int]) -> int:
    if item is None:
        return 0
    count = item.stash[counter] = item.stash.get(counter, -1) + 1
    return count


def draw_diff(item: pytest.Item | None, comparison: Comparison, settings: Settings) -> str:
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


class ArtifactLog:
    """Collects the pictures named in test reports, on the xdist controller too."""

    def __init__(self) -> None:
        # Keyed, because the call and teardown reports of a test carry the same properties.
        self.artifacts: dict[tuple[str, str], None] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == ARTIFACT_PROPERTY:
                self.artifacts[report.nodeid, str(value)] = None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.artifacts:
            terminalreporter.section("model diffs")
            for nodeid, path in self.artifacts:
                terminalreporter.line(f"{nodeid}: {path}")
