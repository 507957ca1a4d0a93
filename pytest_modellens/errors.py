"""The exception and warning types users may catch or filter."""

from __future__ import annotations


class ModelLensError(Exception):
    """Base of every error this package raises on purpose."""


class TraceError(ModelLensError):
    """The model could not be traced (bad arguments, or the forward pass raised)."""


class SnapshotFormatError(ModelLensError):
    """A snapshot text does not parse, or was written by another schema version."""


class RenderError(ModelLensError):
    """A picture could not be drawn."""


class ModelStateWarning(UserWarning):
    """A trace put the model's tensors back, but the forward changed something it cannot reach."""


class NodeNotFoundError(ModelLensError, KeyError):
    """A node id asked of a Trace is not in it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
