"""pytest-modellens: snapshot tests of PyTorch model structure and activations.

    def test_net(model_trace, snapshot):
        assert model_trace(net, x) == snapshot

Importing this package does not import torch; :func:`trace` does, when called.
"""

from __future__ import annotations

from typing import Any

from .canonical import SCHEMA, loads
from .changes import Change, ChangeKind
from .errors import (
    ModelLensError,
    ModelStateWarning,
    NodeNotFoundError,
    RenderError,
    SnapshotFormatError,
    TraceError,
)
from .trace import Layout, ModuleInfo, Node, NodeKind, ParamInfo, Stats, TensorSpec, Tolerance, Trace

__all__ = [
    "SCHEMA",
    "Change",
    "ChangeKind",
    "Layout",
    "ModelLensError",
    "ModelStateWarning",
    "ModuleInfo",
    "Node",
    "NodeKind",
    "NodeNotFoundError",
    "ParamInfo",
    "RenderError",
    "SnapshotFormatError",
    "Stats",
    "TensorSpec",
    "Tolerance",
    "Trace",
    "TraceError",
    "diff",
    "loads",
    "render_diff",
    "trace",
]


def trace(model: Any, /, *args: Any, **kwargs: Any) -> Trace:
    """Run ``model(*args, **kwargs)`` once under the tracer and return its :class:`Trace`.

    Keyword options ``stats``, ``rtol``, ``atol``, ``depth``, ``leaf_modules`` and ``flops``
    are the tracer's; every other keyword goes to the model. See
    :func:`pytest_modellens.tracer.trace`.
    """
    from .tracer import trace as _trace

    return _trace(model, *args, **kwargs)


def diff(old: Trace | str, new: Trace | str, *, tolerance: Tolerance | None = None) -> list[Change]:
    """The changes from ``old`` to ``new``: two Traces or two snapshot texts.

    ``tolerance`` decides which statistics moved too far (default: ``new``'s own).
    """
    from .differ import diff as _diff

    return _diff(old, new, tolerance=tolerance)


def render_diff(old: Trace | str, new: Trace | str, path: str, **options: Any) -> str:
    """Draw the changes from ``old`` to ``new`` to ``path`` (``.svg``, ``.png`` or ``.gv``).

    Added nodes are green, removed red, changed orange, the rest grey; big graphs are
    cropped to the neighbourhood of the changes. Returns the file written.
    """
    from .render import render_diff as _render_diff

    return _render_diff(old, new, path, **options)
