"""What an operation writes: copied before it runs, and, for a view, its base rebound after.

Before: the guard copies a model tensor (or an input) the moment before the forward first
writes it, so the trace can put it back (:class:`~.state.WriteGuard`).

After: an in-place operation on a view changes the memory of the tensor it views (its
``_base``), so the node that wrote is what the base holds from then on, as for a write of the
base itself. Without that, ``y = x * 1; y[0].add_(1); z = y * 2`` would wire ``z`` to the
multiplication and lose the write. (A view taken before its base is written keeps its old
producer: tracking every view of a base would cost every operation a lookup.)
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from torch import Tensor

from .describe import tensors_in

if TYPE_CHECKING:
    from .recorder import Recorder
    from .state import WriteGuard

#: Operations that write tensors they are given besides their first (running statistics).
WRITES_ARGUMENTS = frozenset({"batch_norm", "instance_norm"})


def writes(op: str, kwargs: Any) -> bool:
    """Whether the operation writes a tensor it is given (the recorder inlines the same test)."""
    return (
        op[-1] == "_"
        or op == "setitem"
        or bool(kwargs and ("out" in kwargs or kwargs.get("inplace") is True))
        or op in WRITES_ARGUMENTS
    )


def save_before_write(guard: WriteGuard, op: str, args: Any, kwargs: Any) -> None:
    """Let the guard copy a model tensor (or input) the operation is about to write."""
    if op in WRITES_ARGUMENTS:  # batch_norm(input, running_mean, running_var, ...)
        written = tensors_in(args[1:], tensors_in(kwargs.values(), []))
    elif kwargs and "out" in kwargs:
        written = tensors_in((kwargs["out"],), [])
    else:  # the tensor written is the first one given: x.add_(1), nn.init.normal_(tensor=w)
        written = tensors_in(args, [])[:1] or tensors_in(kwargs.values(), [])[:1]
    for target in written:
        guard.before_write(target)


def rebind_bases(recorder: Recorder, op: str, args: Any, kwargs: Any) -> None:
    """Make the base of each view the operation wrote read as the operation's result."""
    if op in WRITES_ARGUMENTS:  # batch_norm writes its statistics, which are no views
        return
    written = tensors_in((kwargs["out"],), []) if kwargs and "out" in kwargs else tensors_in(args, [])[:1]
    for view in written:
        base = view._base
        if isinstance(base, Tensor):
            ref = recorder.ref(view)
            if ref != recorder.ref(base):
                recorder.producers[id(base)] = (weakref.ref(base), ref)
