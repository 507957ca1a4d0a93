"""The files a run leaves for a person or CI: pictures, kept snapshots, and where they are listed.

Each failing assertion's diff picture, and with ``--lens-pictures`` each traced model's
picture, goes to the artifacts directory under a name made from the test id. Beside the
diff picture the failing run keeps the new snapshot, named after the committed one, with a
small manifest saying which snapshot it belongs to and which version of it it was compared
with (:func:`keep_snapshot`): what CI uploads and a later accept applies. Every file
written is named in the junit-xml properties (:data:`ARTIFACT_PROPERTY`); each failure is
listed again in the "model diffs" section of the terminal summary, which pytest never cuts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from .changes import Comparison
from .errors import RenderError
from .files import MANIFEST_SCHEMA, MANIFEST_SUFFIX, write_snapshot_file
from .settings import Settings
from .trace import Trace

#: The junit-xml property naming a file a failure left (a picture, a kept snapshot).
ARTIFACT_PROPERTY = "lens_artifact"
#: The schema of a kept snapshot's manifest.
#: How many diff and model pictures a test has drawn so far, for their file names.
_diffs_drawn = pytest.StashKey[int]()
_models_drawn = pytest.StashKey[int]()
#: The failures of a test's assertions, for its report (and so the summary, also under xdist).
_failures = pytest.StashKey[list[dict[str, str]]]()
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


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
    return settings.artifacts_dir.joinpath(
        *_folders(file_path.parent.parts), f"{_safe(stem, nodeid)}.{suffix}"
    )


def _safe(stem: str, exact: str) -> str:
    """``stem`` with unsafe characters as ``_``, and then a hash of ``exact`` to keep it unique."""
    safe = _UNSAFE.sub("_", stem).strip(".")
    if safe == stem and len(safe) <= 120:  # a file name has at most 255 bytes on most filesystems
        return safe
    return f"{safe[:120]}_{hashlib.sha1(exact.encode()).hexdigest()[:8]}"


def _folders(parts: tuple[str, ...]) -> list[str]:
    return [_UNSAFE.sub("_", part).replace("..", "__") for part in parts]


def accept_command(item: pytest.Item | None) -> str:
    """``pytest --lens-update 'tests/test_x.py::test_y'``: accepts this test's snapshots only.

    The test's file is written relative to the working directory, where the command is run.
    """
    if item is None:
        return "pytest --lens-update"
    _, sep, rest = item.nodeid.partition("::")
    target = f"{display(item.path)}{sep}{rest}".replace(os.sep, "/")
    return "pytest --lens-update '" + target.replace("'", "'\"'\"'") + "'"


def kept_snapshot_path(location: Path, settings: Settings, rootdir: Path) -> Path:
    """Where a failure keeps the new snapshot: named after the committed one, beside the test's pictures.

    ``tests/__snapshots__/test_models/test_net.lens.json`` becomes
    ``<artifacts>/tests/test_models--test_net.lens.json``, next to the picture
    ``<artifacts>/tests/test_models.py--test_net.svg``. A snapshot outside the rootdir keeps
    its own name and a hash of its path.
    """
    try:
        parts = location.resolve().relative_to(rootdir.resolve()).parts
    except ValueError:
        parts = (f"{hashlib.sha1(str(location).encode()).hexdigest()[:8]}-{location.name}",)
    if "__snapshots__" in parts[:-1]:
        at = parts.index("__snapshots__")
        folders, name = parts[:at], "--".join(parts[at + 1 :])
    else:
        folders, name = parts[:-1], parts[-1]
    stem, dot, extension = name.partition(".lens.")
    # The hash is of the path inside the rootdir, so the name is the same on every machine.
    safe = _safe(stem, "/".join(parts))
    return settings.artifacts_dir.joinpath(*_folders(folders), f"{safe}{dot}{extension}")


def keep_snapshot(item: pytest.Item | None, trace: Trace, location: str | Path, settings: Settings) -> str:
    """Keep the new snapshot of a failed assertion and its manifest; what the message says of it.

    The manifest (``<name>.manifest.json``, beside it) records the snapshot it belongs to,
    relative to the rootdir, and the SHA-256 of the committed file it was compared with
    (null when there was none), so that applying it later can tell the snapshot moved on.
    Returns the kept file as a message shows it, or why it could not be kept.
    """
    location = Path(location)
    rootdir = item.config.rootpath if item is not None else Path.cwd()
    path = kept_snapshot_path(location, settings, rootdir)
    try:
        old = hashlib.sha256(location.read_bytes()).hexdigest() if location.is_file() else None
    except OSError:
        old = None
    try:
        snapshot = location.resolve().relative_to(rootdir.resolve()).as_posix()
    except ValueError:
        snapshot = str(location)
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "snapshot": snapshot,
        "new": path.name,
        "old_sha256": old,
        "test": item.nodeid if item is not None else None,
    }
    try:
        write_snapshot_file(str(path), trace.dumps())
        write_snapshot_file(str(path.with_name(f"{path.name.partition('.lens.')[0]}{MANIFEST_SUFFIX}")),
                            json.dumps(manifest, indent=2) + "\n")  # fmt: skip
    except OSError as error:
        return f"not kept ({error.strerror or error})"
    return _record(item, path)


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed model assertion as the "model diffs" summary lists it."""

    headline: str
    snapshot: str
    picture: str = ""
    kept: str = ""
    command: str = ""
    status: str = "changed"  # changed, missing or unreadable
    lines: tuple[str, ...] = ()  # the whole change list (or what the message says instead)


def record_failure(item: pytest.Item | None, failure: Failure) -> None:
    """Remember a failed assertion for the test's report and the "model diffs" summary."""
    if item is not None:
        item.stash.setdefault(_failures, []).append(asdict(failure))


def failures_of(item: pytest.Item) -> list[dict[str, str]]:
    """The failures :func:`record_failure` remembered for ``item``, as plain data for its report."""
    return item.stash.get(_failures, [])


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


#: The attribute of a test report carrying its failures; plain data, so xdist sends it along.
REPORT_ATTRIBUTE = "lens_failures"


#: The junit-xml property saying how one model assertion came out (see ``extension.outcomes``).
OUTCOME_PROPERTY = "lens_outcome"
#: Where GitHub Actions reads a job summary from.
JOB_SUMMARY = "GITHUB_STEP_SUMMARY"


class ArtifactLog:
    """Collects the model assertions of test reports (on the xdist controller too); writes what a run leaves.

    At the end of the session, in the one process that decides (the xdist controller, or
    the only one): the "model diffs" section, the review page and, under GitHub Actions,
    the job summary. Workers only hand their results over in their reports.
    """

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.failures: list[tuple[str, Failure]] = []
        self.outcomes: Counter[str] = Counter()
        self.page: Path | None = None
        self.summary_problem = ""

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for entry in getattr(report, REPORT_ATTRIBUTE, None) or ():
            entry = dict(entry, lines=tuple(entry.get("lines", ())))
            self.failures.append((report.nodeid, Failure(**entry)))
        for name, value in report.user_properties:
            if name == OUTCOME_PROPERTY:
                self.outcomes[str(value)] += 1

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):
            return  # an xdist worker: the controller writes the page, once
        entries = [self._entry(nodeid, failure) for nodeid, failure in self.failures]
        counts = self.counts()
        page = self.settings.report or (self.settings.artifacts_dir / "index.html" if entries else None)
        if page is not None and (entries or counts.traced):
            from .page import html

            write_snapshot_file(str(page), html(entries, counts, page=page))
            self.page = page
        summary = os.environ.get(JOB_SUMMARY)
        if summary and (entries or counts.traced):
            from .page import markdown

            shown = display(self.page) if self.page else ""
            try:
                with open(summary, "a", encoding="utf-8") as file:
                    file.write(markdown(entries, counts, report=shown))
            except OSError as error:  # a summary is a by-product: say so, the run's result stands
                self.summary_problem = (
                    f"the job summary {summary} could not be written: {error.strerror or error}"
                )

    def counts(self) -> Any:
        from .page import Counts

        done = self.outcomes
        written = {k: done[k] for k in ("written", "updated") if done[k]}
        return Counts(traced=sum(done.values()), passed=done["passed"], changed=done["changed"],
                      missing=done["missing"], extra=written)  # fmt: skip

    def _entry(self, nodeid: str, failure: Failure) -> Any:
        from .page import Entry

        picture = failure.picture if failure.picture and Path(failure.picture).is_file() else ""
        kept = failure.kept if failure.kept and Path(failure.kept).is_file() else ""
        return Entry(nodeid, failure.headline, tuple(failure.lines), picture=picture, snapshot=failure.snapshot,
                     kept=kept, command=failure.command, status=failure.status)  # fmt: skip

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.failures:
            if self.page is not None:
                terminalreporter.line(f"model report: {display(self.page)}")
            return
        terminalreporter.section("model diffs")
        for nodeid, failure in self.failures:
            terminalreporter.line(f"{nodeid}: {failure.headline}")
            for label, value in (("picture", failure.picture), ("snapshot", failure.snapshot),
                                 ("new snapshot", failure.kept), ("accept with", failure.command)):  # fmt: skip
                if value:
                    terminalreporter.line(f"  {label}: {value}")
        if self.page is not None:
            terminalreporter.line(f"report: {display(self.page)}")
        if self.summary_problem:
            terminalreporter.line(self.summary_problem)
