"""The warm-up: one untraced forward before the traced one, everything it changed put back.

Why: a forward may cache what it computes on its first call (transformers'
``compile_compatible_method_lru_cache``, a rotary table built once, a flag set after weights
are rescaled). Then the first trace of a model records that computation and every later one
reads the cached tensor, so a snapshot would depend on what ran earlier in the process, which
under pytest-xdist is chance. After a warm-up every trace sees the same, warm, model: the first
trace in a process equals the tenth.

The warm-up runs with the model's state saved and put back afterwards exactly as a trace does
(parameters, buffers, submodules, training flags, RNG states: :class:`~.state.ModelState`), so
the traced forward starts from what the caller had, less the caches. A warm-up that raises is
ignored: the traced forward raises again, with the tracer's message. The warm-up gets copies
of the inputs' containers and objects (a cache it grows is a copy), holding the same tensors;
inputs that cannot be copied mean no warm-up, and so does a lazy module not made yet (the trace
makes its parameters outside the forward, as it always has). ``trace(..., warmup=False)``
skips it (half the forward cost) for a model known to keep no first-call state.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.overrides import TorchFunctionMode

from . import constructs
from .describe import op_name
from .modules import ModuleTree
from .state import ModelState, RngState, grad_mode
from .writes import save_before_write, writes


class _WriteWatch(TorchFunctionMode):
    """Copies each model tensor the moment before the warm-up forward writes it; records nothing."""

    def __init__(self, state: ModelState) -> None:
        super().__init__()
        self.guard = state.guard

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        op = op_name(func)
        if writes(op, kwargs):
            save_before_write(self.guard, op, args, kwargs)
        return func(*args, **kwargs)


def warm_up(
    model: nn.Module,
    args: Any,
    kwargs: Any,
    *,
    tree: ModuleTree,
    inputs: list[Tensor],
    grad: bool,
    rng: RngState,
) -> list[Tensor]:
    """Run the forward once, untraced, and put back what it changed; returns what could not be."""
    if any(isinstance(m, LazyModuleMixin) and m.has_uninitialized_params() for _, m in tree.modules):
        return []  # the trace makes their parameters, outside the forward; no warm-up makes them first
    # The inputs' containers and objects copied, their tensors not (the guard covers those): a
    # forward that grows a cache object it is given must grow the caller's once, in the trace.
    model_tensors = (t for _, t in (*tree.params, *tree.buffers))
    shared: dict[int, Any] = {id(t): t for t in (*inputs, *model_tensors)}
    shared.update((id(m), m) for _, m in tree.modules)
    try:
        args, kwargs = copy.deepcopy((args, kwargs), shared)
    except Exception:  # noqa: BLE001 - an input that cannot be copied: no warm-up, rather than a changed input
        return []
    state = ModelState(tree, inputs, grad=grad, rng=rng)
    try:
        with grad_mode(grad=grad), constructs.patched(), _WriteWatch(state):
            model(*args, **kwargs)
    except Exception:  # noqa: BLE001, S110 - the traced forward raises it again, explained
        pass
    finally:
        state.restore()
    return state.unrestorable()
