"""Run a model's forward pass once and record every tensor operation as a Trace.

The only package that imports torch. Its modules:

- :mod:`.recorder`: the TorchFunctionMode and module hooks that write down each operation;
- :mod:`.describe`: torch values turned into plain, deterministic data;
- :mod:`.modules`: the module tree walked once, the inputs named, the module and parameter tables;
- :mod:`.state`: what a forward may change, saved and put back; the fixture's seeding.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.hooks import RemovableHandle

from ..errors import TraceError
from ..gcpause import gc_paused
from ..trace import Tolerance, Trace
from .describe import flatten
from .modules import ModuleTree, bind_inputs, module_table, param_table
from .recorder import _EXIT_HOOK_OPTIONS, _FUNCTION_APPLY, Recorder
from .state import ModelState, seeded

__all__ = ["seeded", "trace"]

_TOLERANCE = Tolerance()
#: Where torch keeps which global forward hooks take keyword arguments (not in every torch).
_WITH_KWARGS: dict[int, Any] = getattr(torch_module, "_global_forward_hooks_with_kwargs", {})


class _Tracing:
    """What the trace needs while the forward runs; all of it undone on the way out.

    A class rather than an ``ExitStack``: on a small model, entering and leaving a stack of
    callbacks cost more than the forward pass it wraps.
    """

    def __init__(self, recorder: Recorder, state: ModelState) -> None:
        self.recorder = recorder
        self.state = state
        self.hooks: list[RemovableHandle] = []
        self.no_grad = torch.no_grad()
        # Compiled parts run eagerly; only asked where torch.compile was ever used.
        self.stance = (
            torch.compiler.set_stance("force_eager")
            if "torch._dynamo" in sys.modules and hasattr(torch.compiler, "set_stance")
            else None
        )

    def __enter__(self) -> None:
        recorder = self.recorder
        self.no_grad.__enter__()
        try:
            if self.stance is not None:
                self.stance.__enter__()
            self.hooks.append(register_module_forward_pre_hook(recorder.enter_module))
            self.hooks.append(register_module_forward_hook(recorder.exit_module, **_EXIT_HOOK_OPTIONS))
            torch.autograd.Function.apply = classmethod(  # type: ignore[method-assign, assignment]
                lambda cls, *args, **kwargs: recorder.apply_function(cls, args, kwargs)
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc_info: object) -> None:
        try:
            torch.autograd.Function.apply = _FUNCTION_APPLY  # type: ignore[method-assign]
            for hook in reversed(self.hooks):
                # torch's handle forgets the with_kwargs table: leave no entry behind in it.
                _WITH_KWARGS.pop(hook.id, None)
                hook.remove()
            if self.stance is not None:
                self.stance.__exit__(None, None, None)
            self.no_grad.__exit__(None, None, None)
        finally:
            self.state.restore(self.recorder.saved)  # last, whatever failed before it


def _unwrap(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds, so compiling does not change the snapshot."""
    inner = getattr(model, "_orig_mod", None) if type(model).__name__ == "OptimizedModule" else None
    return inner if isinstance(inner, nn.Module) else model


@gc_paused
def trace(
    model: nn.Module,
    /,
    *args: Any,
    stats: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    **kwargs: Any,
) -> Trace:
    """Run ``model(*args, **kwargs)`` once and return the record of every tensor operation.

    ``stats=True`` also records mean, std, min, max and NaN/Inf counts of every output;
    ``rtol``/``atol`` set how far those may move when the trace is compared with a
    snapshot. The forward runs under ``torch.no_grad()`` (and eagerly, for a
    ``torch.compile``-d model). The model and the inputs are left exactly as they were,
    even if the forward raises.
    """
    if not isinstance(model, nn.Module):
        raise TraceError(
            f"trace() needs a torch.nn.Module as its first argument (got {type(model).__name__!r}); "
            "wrap a plain function in an nn.Module whose forward calls it"
        )
    model = _unwrap(model)
    tolerance = _TOLERANCE if rtol is None and atol is None else _TOLERANCE.overridden(rtol=rtol, atol=atol)
    named_inputs = bind_inputs(model, args, kwargs)
    input_tensors: list[tuple[str, Tensor]] = []
    inputs_desc = flatten(named_inputs, "", input_tensors)
    tree = ModuleTree.of(model)
    if stats and (any(t.is_meta for _, t in input_tensors) or any(p.is_meta for _, p in tree.params)):
        raise TraceError(
            f"statistics need tensor values, but {type(model).__name__} or its inputs are on "
            "the meta device; trace it without stats=True (structure only), or build it on a real device"
        )

    recorder = Recorder(tree, stats=stats)
    recorder.add_inputs(input_tensors)
    state = ModelState(tree)
    with _Tracing(recorder, state):
        try:
            with recorder:
                result = model(*args, **kwargs)
            # Before anything is put back: an output may be an input written in place.
            outputs_desc = recorder.add_outputs(result)
        except Exception as error:
            ops = [node.node_id for node in recorder.nodes if node.kind.in_forward]
            where = f"last operation traced: {ops[-1]}" if ops else "before its first operation"
            raise TraceError(
                f"the forward pass of {type(model).__name__} raised {type(error).__name__}: {error} "
                f"({where}); the model was left unchanged"
            ) from error
    changed = state.unrestorable(recorder.saved)
    if changed:
        raise TraceError(
            f"the forward pass of {type(model).__name__} changed {len(changed)} parameter(s) in place "
            "inside an operation the tracer cannot see into, so they could not be put back; "
            "avoid writing parameters during forward"
        )

    return Trace(
        model=type(model).__name__,
        inputs=inputs_desc,
        outputs=outputs_desc,
        nodes=tuple(recorder.nodes),
        modules=module_table(model, foreign=recorder.foreign, calls=recorder.calls),
        params=param_table(recorder.named),
        tolerance=tolerance,
    )
