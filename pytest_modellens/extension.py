"""The syrupy extension for model snapshots (the only module that imports syrupy).

Updating and counting are syrupy's own single-file machinery: one
``__snapshots__/<test file>/<test name>.lens.json`` per assertion. This class changes
what is stored (the canonical text), what "matches" means (parsed data with the
structure equal exactly and activation statistics within the trace's tolerance, so
harmless float noise neither fails a test nor rewrites the file), and how the files are
named, read and written, because a gate must never lose what it gates on:

- **Nothing is discovered, so nothing is deleted.** syrupy deletes the snapshots it finds
  unused after an update, and it takes a skipped test's ``.lens.json`` file, a test not
  reached before Ctrl-C or ``-x``, or a deselected one for unused. Model snapshots are
  never offered to it; stale ones are removed by the explicit ``--lens-prune`` step.
- **Distinct test ids get distinct names**, on every filesystem: where a name had to be
  changed to be safe (a character replaced, upper case, cut to length), a short hash of
  the exact name follows it.
- **Reading never raises or blocks**: a file that is binary, not UTF-8, a directory, a
  dangling link or a FIFO reads as :class:`Unreadable`, which never matches, so the test
  fails saying why and ``--lens-update`` writes a good file in its place.
- **syrupy's default extension keeps to its own files.** The ``snapshot`` fixture a model
  test asks for is an amber one, and amber takes every other file under ``__snapshots__/``
  for one of its own gone stale: the model snapshot of a skipped test, a ``README.md``.
  :class:`AmberSnapshotExtension` (made the default unless a suite names its own) is amber
  but for that.
- **Writing is atomic** (a temporary file in the same folder, then a rename), replaces a
  link instead of writing through it, and leaves the old file whole when it fails.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from syrupy.assertion import SnapshotAssertion
from syrupy.data import SnapshotCollection, SnapshotCollections
from syrupy.extensions.amber import AmberSnapshotExtension as _Amber
from syrupy.extensions.base import AbstractSyrupyExtension
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from .canonical import checked_data, data_matches
from .errors import SnapshotFormatError
from .files import SnapshotWriteError, Unreadable, read_snapshot_file, write_snapshot_file
from .trace import Tolerance, Trace

#: Longest file name a snapshot gets (most filesystems allow 255 bytes).
MAX_NAME = 200
_UNSAFE = re.compile(r"[^a-z0-9_.\-\[\]=,+@]")


def snapshot_stem(name: str) -> str:
    """The file name (less the extension) of the snapshot of test ``name``: safe, unique, stable.

    A name of lower-case letters, digits and ``_.-[]=,+@`` only is used as it is. Any other
    has each other character replaced by ``_``, is cut to fit, and gets ``-`` and 8 hex
    digits of the SHA-1 of the exact name, so ``test[a/b]``, ``test[a:b]`` and ``test[A]``
    never share a file, on a case-insensitive filesystem either.
    """
    if len(name) <= MAX_NAME and not _UNSAFE.search(name):
        return name
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9_.\-\[\]=,+@]", "_", name)
    safe = re.sub(r"^\.+", "_", safe)[: MAX_NAME - 9]
    return f"{safe}-{digest}"


class ModelSnapshotExtension(SingleFileSnapshotExtension):
    """Stores a :class:`Trace` as its canonical text and compares it tolerantly."""

    file_extension = "lens.json"
    _write_mode = WriteMode.TEXT

    def __init__(self) -> None:
        super().__init__()
        # syrupy makes one extension per assertion and serialises before it compares,
        # so the tolerance of the trace being asserted is known by `matches`.
        self._tolerance = Tolerance()

    # -- names -------------------------------------------------------------------------

    @classmethod
    def get_snapshot_name(cls, *, test_location: Any, index: Any = 0) -> str:
        return snapshot_stem(
            AbstractSyrupyExtension.get_snapshot_name(test_location=test_location, index=index)
        )

    @classmethod
    def matches_test_location(cls, *, test_location: Any, snapshot_location: str) -> bool:
        return Path(snapshot_location).parent.name == test_location.basename

    def discover_snapshots(self, *, test_location: Any, ignore_extensions: Any = None) -> SnapshotCollections:
        """None: syrupy never counts or deletes model snapshots (``--lens-prune`` does, with care)."""
        return SnapshotCollections()

    def delete_snapshots(self, *, snapshot_location: str, snapshot_names: set[str]) -> None:
        raise SnapshotWriteError(
            f"model snapshots are removed by `pytest --lens-prune` only ({snapshot_location})"
        )

    # -- data --------------------------------------------------------------------------

    def serialize(self, data: Any, **_options: Any) -> str:
        if not isinstance(data, Trace):
            raise TypeError(
                f"the model snapshot extension stores Trace objects (got {type(data).__name__!r}); "
                "compare the result of model_trace(model, inputs) with the snapshot"
            )
        self._tolerance = data.tolerance
        return data.dumps()

    def matches(self, *, serialized_data: Any, snapshot_data: Any) -> bool:
        if isinstance(snapshot_data, Unreadable):
            return False  # reported by the failure message; --lens-update rewrites it
        try:
            old = checked_data(str(snapshot_data))
            return data_matches(old, checked_data(serialized_data), self._tolerance)
        except SnapshotFormatError:
            return False  # likewise
        except Exception:  # noqa: BLE001 - a snapshot no check foresaw must still be rewritable
            return False

    # -- files -------------------------------------------------------------------------

    def read_snapshot_data_from_location(
        self, *, snapshot_location: str, snapshot_name: str, session_id: str
    ) -> str | None:
        return read_snapshot_file(snapshot_location)

    @classmethod
    def write_snapshot_collection(
        cls, *, snapshot_collection: SnapshotCollection, name_order: dict[str, int] | None = None
    ) -> None:
        data = next(iter(snapshot_collection)).data
        if not isinstance(data, str):
            raise TypeError(f"a model snapshot is text (got {type(data).__name__!r})")
        write_snapshot_file(snapshot_collection.location, data)


class AmberSnapshotExtension(_Amber):
    """syrupy's amber extension, except that files which are not ``.ambr`` are never its to count or delete."""

    def discover_snapshots(self, *, test_location: Any, ignore_extensions: Any = None) -> SnapshotCollections:
        found = super().discover_snapshots(test_location=test_location, ignore_extensions=ignore_extensions)
        own = SnapshotCollections()
        for collection in found:
            if self.is_snapshot_location(location=collection.location):
                own.add(collection)
        return own


def _model_results(item: Any) -> list[Any]:
    """syrupy's AssertionResult of each model-snapshot assertion a test that ran made."""
    return [
        result
        for value in getattr(item, "funcargs", {}).values()
        if isinstance(value, SnapshotAssertion)
        for result in value.executions.values()
        if result.snapshot_location.endswith(f".{ModelSnapshotExtension.file_extension}")
    ]


def used_locations(item: Any) -> list[str]:
    """The model snapshot files the assertions of a test that ran read or wrote."""
    return [result.snapshot_location for result in _model_results(item)]


def outcomes(item: Any) -> list[str]:
    """How each model assertion of a test came out: passed, written, updated, missing or changed."""
    found = []
    for result in _model_results(item):
        if result.created:
            found.append("written")
        elif result.updated:
            found.append("updated")
        elif result.success:
            found.append("passed")
        else:
            found.append(
                "missing" if result.recalled_data is None and result.exception is None else "changed"
            )
    return found


def owned_locations(item: Any, *, assertions: int = 20) -> list[str]:
    """Where the first ``assertions`` model snapshots of a test would be: what a skipped test keeps."""
    from syrupy.location import PyTestLocation

    location = PyTestLocation(item)
    return [
        ModelSnapshotExtension.get_location(test_location=location, index=index)
        for index in range(assertions)
    ]


def is_snapshot_assertion(value: object) -> bool:
    return isinstance(value, SnapshotAssertion)


def compare_with_snapshot(trace: Trace, other: object) -> Any:
    """``trace == snapshot``: assert through the model extension, keeping syrupy's index."""
    if not isinstance(other, SnapshotAssertion):
        return NotImplemented
    extension_class = other.extension_class
    if not issubclass(extension_class, ModelSnapshotExtension):
        extension_class = ModelSnapshotExtension
    return other(extension_class=extension_class) == trace


def last_result(snapshot: Any) -> Any:
    """The syrupy AssertionResult of the latest assertion made with ``snapshot``."""
    return snapshot.executions.get(snapshot.num_executions - 1)


def unreadable_problem(recalled: Any) -> str | None:
    """Why a recalled snapshot could not be read as text, if it could not."""
    return recalled.problem if isinstance(recalled, Unreadable) else None
