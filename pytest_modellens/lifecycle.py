"""The life of model snapshot files across a session: which were used, and pruning the stale ones.

``--lens-update`` writes and refreshes only; it never deletes. A model snapshot that no
test uses any more is removed by ``--lens-prune``, and only when nothing the session did
could make a used snapshot look stale: every selected test ran to its end (no Ctrl-C, no
``-x``/``--maxfail``/``--sw`` stop, no failure or error, which may have come before the
assertion), and nothing was deselected or picked out (``-k``, ``-m``, ``--lf``, a
``file::test`` argument, ``--deselect``). A skipped test keeps its snapshots. Only
``*.lens.json`` files are candidates; anything else in ``__snapshots__/`` is never touched.

Each test's report carries what it used (:data:`USED`) and, when skipped, what it owns
(:data:`KEPT`), so the xdist controller decides from the same facts a plain run has.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

#: Report properties: a snapshot an assertion read or wrote, and one a skipped test owns
#: (both relative to the rootdir).
USED = "lens_snapshot"
KEPT = "lens_snapshot_kept"
SUFFIX = ".lens.json"


def _relative(path: str | Path, root: Path) -> str:
    """``path`` relative to the rootdir, its folder's links resolved (a linked snapshot stays itself)."""
    path = Path(path)
    try:
        return (path.parent.resolve() / path.name).relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def label(report: pytest.TestReport, *, used: Iterable[str], kept: Iterable[str], root: Path) -> None:
    """Put what a test used (or, skipped, owns) on its report, for whichever process decides."""
    report.user_properties.extend((USED, _relative(path, root)) for path in used)
    report.user_properties.extend((KEPT, _relative(path, root)) for path in kept)


class SnapshotLife:
    """Collects what the session's tests used; prunes or lists stale model snapshots at its end."""

    def __init__(self, config: pytest.Config, *, prune: bool) -> None:
        self.config = config
        self.prune = prune
        self.root = config.rootpath.resolve()
        self.used: set[str] = set()
        self.kept: set[str] = set()
        self.modules: set[str] = set()  # test files that ran, relative to the rootdir
        self.failed: set[str] = set()
        self.deselected = 0
        self.removed: list[str] = []
        self.stale: list[str] = []
        self.refused = ""

    # -- hooks ---------------------------------------------------------------------------

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.modules.add(report.nodeid.split("::")[0])
        if report.failed:
            self.failed.add(report.nodeid)
        for name, value in report.user_properties:
            if name == USED:
                self.used.add(str(value))
            elif name == KEPT:
                self.kept.add(str(value))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput"):
            return  # an xdist worker: the controller decides, from the reports
        self.stale = self._stale_files()
        self.refused = self._why_not(session, exitstatus)
        if not self.prune or not self.stale or self.refused:
            return
        for relative in self.stale:
            path = self.root / relative
            if path.is_symlink() or path.is_file():
                path.unlink()
                self.removed.append(relative)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.removed:
            terminalreporter.section("model snapshots")
            for relative in self.removed:
                terminalreporter.line(f"removed stale model snapshot: {relative}")
        elif self.stale and self.prune and self.refused:
            terminalreporter.section("model snapshots")
            terminalreporter.line(f"--lens-prune removed nothing: {self.refused}")
        elif self.stale and not self.refused:
            terminalreporter.section("model snapshots")
            for relative in self.stale:
                terminalreporter.line(f"no test uses {relative}")
            terminalreporter.line("remove them with: pytest --lens-prune")

    # -- deciding ------------------------------------------------------------------------

    def _why_not(self, session: pytest.Session | None, exitstatus: int) -> str:
        """Why this session cannot tell a stale snapshot from one whose test did not get to it."""
        option = self.config.option
        if exitstatus == pytest.ExitCode.INTERRUPTED or (session is not None and session.shouldstop):
            return "the session did not run to its end"
        if getattr(option, "exitfirst", False) or getattr(option, "maxfail", 0):
            return "-x or --maxfail may stop the session early"
        if getattr(option, "stepwise", False) or getattr(option, "stepwise_skip", False):
            return "--sw runs part of the suite"
        if self.failed:
            return f"{len(self.failed)} test(s) failed or errored, maybe before their assertion"
        picked = [
            flag
            for flag, on in (
                ("-k", getattr(option, "keyword", "")),
                ("-m", getattr(option, "markexpr", "")),
                ("--lf", getattr(option, "lf", False)),
                ("--deselect", getattr(option, "deselect", None)),
            )
            if on
        ]
        if picked or self.deselected:
            return f"tests were deselected ({', '.join(picked) or 'by a plugin'})"
        if any("::" in str(arg) for arg in self.config.args):
            return "single tests were picked out on the command line"
        return ""

    def _stale_files(self) -> list[str]:
        """Model snapshots in the ran test files' folders that no test used or owns, in name order."""
        folders: dict[Path, Path] = {}  # snapshot folder -> the test file it belongs to
        for module in self.modules:
            test_file = self.root / module
            if test_file.suffix != ".py":
                continue
            snapshots = test_file.parent / "__snapshots__"
            folders[snapshots / test_file.stem] = test_file
            # Folders of test files that no longer exist, beside the ones that ran.
            if snapshots.is_dir():
                for folder in snapshots.iterdir():
                    if folder.is_dir() and not (test_file.parent / f"{folder.name}.py").exists():
                        folders.setdefault(folder, test_file.parent / f"{folder.name}.py")
        found = []
        for folder in folders:
            if not folder.is_dir() or folder.is_symlink():
                continue
            for path in folder.iterdir():
                if not path.name.endswith(SUFFIX) or not (path.is_file() or path.is_symlink()):
                    continue
                relative = _relative(path, self.root)
                if relative not in self.used and relative not in self.kept:
                    found.append(relative)
        return sorted(found)
