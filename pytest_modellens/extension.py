"""The syrupy extension for model snapshots (the only module that imports syrupy).

Storage, updating and cleanup are syrupy's own single-file machinery: one
``__snapshots__/<test file>/<test name>.lens.json`` per assertion. This class changes
what is stored (the canonical text) and what "matches" means: parsed data with the
structure equal exactly and activation statistics within the trace's tolerance, so
harmless float noise neither fails a test nor rewrites the file.
"""

from __future__ import annotations

import json
from typing import Any

from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from .canonical import data_matches, parse
from .errors import SnapshotFormatError
from .trace import Tolerance, Trace


class ModelSnapshotExtension(SingleFileSnapshotExtension):
    """Stores a :class:`Trace` as its canonical text and compares it tolerantly."""

    file_extension = "lens.json"
    _write_mode = WriteMode.TEXT

    def __init__(self) -> None:
        super().__init__()
        # syrupy makes one extension per assertion and serialises before it compares,
        # so the tolerance of the trace being asserted is known by `matches`.
        self._tolerance = Tolerance()

    def serialize(self, data: Any, **_options: Any) -> str:
        if not isinstance(data, Trace):
            raise TypeError(
                f"the model snapshot extension stores Trace objects (got {type(data).__name__!r}); "
                "compare the result of model_trace(model, inputs) with the snapshot"
            )
        self._tolerance = data.tolerance
        return data.dumps()

    def matches(self, *, serialized_data: Any, snapshot_data: Any) -> bool:
        try:
            old = parse(str(snapshot_data))
        except SnapshotFormatError:
            return False  # reported by the failure message; --lens-update rewrites it
        return data_matches(old, json.loads(serialized_data), self._tolerance)


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
