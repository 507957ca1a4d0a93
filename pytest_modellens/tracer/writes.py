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


#: The flag that tells a normalisation to update its running statistics (the sixth argument in
#: both of its forms), and its default.
_UPDATE_FLAGS = {"batch_norm": ("training", False), "instance_norm": ("use_input_stats", True)}
#: Where the running mean and variance are given: the functional form (``F.batch_norm(input,
#: running_mean, running_var, weight, bias, training, ...)``) and torch's own
#: (``torch.batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps,
#: cudnn_enabled)``), told apart by its ninth argument.
_FUNCTIONAL_STATISTICS, _NATIVE_STATISTICS = (1, 2), (3, 4)
_STATISTICS_NAMES = ("running_mean", "running_var")


def _argument(args: Any, kwargs: Any, position: int, name: str, default: Any) -> Any:
    if len(args) > position:
        return args[position]
    return kwargs.get(name, default) if kwargs else default


def _written_statistics(op: str, args: Any, kwargs: Any) -> list[Tensor]:
    """The running statistics a normalisation is about to update: none in eval mode.

    An eval ``BatchNorm`` writes nothing; copying the tensors it is given on every call
    would cost a ResNet a copy of every normalisation's parameters per trace. A flag that
    is not a bool is taken to mean every tensor given but the first may be written.
    """
    native = len(args) > 8 or bool(kwargs and "cudnn_enabled" in kwargs)
    name, default = _UPDATE_FLAGS[op]
    updates = _argument(args, kwargs, 5, name, default)
    if updates is False:
        return []
    if updates is not True:
        return tensors_in(args[1:], tensors_in(kwargs.values(), []))
    positions = _NATIVE_STATISTICS if native else _FUNCTIONAL_STATISTICS
    found = (_argument(args, kwargs, at, key, None) for at, key in zip(positions, _STATISTICS_NAMES))
    return [t for t in found if isinstance(t, Tensor)]


def save_before_write(guard: WriteGuard, op: str, args: Any, kwargs: Any) -> None:
    """Let the guard copy a model tensor (or input) the operation is about to write."""
    if op in WRITES_ARGUMENTS:
        written = _written_statistics(op, args, kwargs)
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
