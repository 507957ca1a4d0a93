"""Run a model's forward pass once and record every tensor operation as a Trace.

The only package that imports torch. Its modules:

- :mod:`.recorder`: the TorchFunctionMode and module hooks that write down each operation;
- :mod:`.describe`: torch values turned into plain, deterministic data;
- :mod:`.modules`: the module tree walked once, the inputs named, the module and parameter tables;
- :mod:`.state`: what a forward may change, saved and put back; the fixture's seeding;
- :mod:`.flops`: the opt-in FLOP count, torch's ``FlopCounterMode`` attributed to each node;
- :mod:`.warmup`: the untraced forward before the traced one, so first-call caches do not show;
- :mod:`.constructs`: ``torch.vmap`` and ``torch.cond`` as a trace shows them;
- :mod:`.writes`: what an operation writes, saved before and, through a view, rebound after;
- :mod:`.order`: interchangeable module calls in one order, whatever order the forward ran them in.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.hooks import RemovableHandle

from .. import ids
from ..errors import ModelStateWarning, TraceError
from ..gcpause import gc_paused
from ..granularity import check_depth, collapse
from ..trace import Tolerance, Trace
from . import constructs
from .describe import flatten
from .flops import FlopRecorder, with_module_flops
from .modules import ModuleTree, bind_inputs, module_table, param_table
from .order import canonical_calls
from .recorder import _EXIT_HOOK_OPTIONS, _FUNCTION_APPLY, Recorder
from .state import ModelState, RngState, seeded
from .warmup import warm_up

__all__ = ["seeded", "trace"]

#: Warnings torch gives about the tracer's own mechanism (its global module hooks), which
#: would turn into a user-visible failure under ``-W error``.
_TRACER_WARNINGS = (r".*global .*hook.*", r".*[Hh]ooks? .*(are|is) not supported.*")
#: Those as entries of ``warnings.filters``, made once: what ``warnings.filterwarnings("ignore",
#: message=...)`` would insert, without its cost on every trace of a small model.
_TRACER_FILTERS = [
    ("ignore", re.compile(message, re.IGNORECASE), Warning, None, 0) for message in _TRACER_WARNINGS
]
#: Where torch keeps which global forward hooks take keyword arguments (not in every torch).
_WITH_KWARGS: dict[int, Any] = getattr(torch_module, "_global_forward_hooks_with_kwargs", {})

#: The tolerance of a trace that sets none (frozen: shared by every trace).
_DEFAULT_TOLERANCE = Tolerance()


class _Tracing:
    """What the trace needs while the forward runs; all of it undone on the way out.

    A class rather than an ``ExitStack``: on a small model, entering and leaving a stack of
    callbacks cost more than the forward pass it wraps.
    """

    def __init__(self, recorder: Recorder, state: ModelState, *, grad: bool) -> None:
        self.recorder = recorder
        self.state = state
        self.grad = grad
        self.grad_before = torch.is_grad_enabled()
        self.warnings = warnings.catch_warnings()
        self.limit = sys.getrecursionlimit()
        self.hooks: list[RemovableHandle] = []
        self.originals: list[tuple[Any, str, Any]] = []
        self.filtering = False  # whether the warnings filter and the stance were entered (for __exit__)
        # Compiled parts run eagerly; only asked where torch.compile was ever used.
        self.stance = (
            torch.compiler.set_stance("force_eager")
            if "torch._dynamo" in sys.modules and hasattr(torch.compiler, "set_stance")
            else None
        )

    def __enter__(self) -> None:
        recorder = self.recorder
        torch._C._set_grad_enabled(self.grad)  # what `torch.no_grad()` does, without its object
        try:
            # torch's module call under global hooks takes a frame more per level than without:
            # a model that recurses as deep as it can without the tracer must still fit.
            sys.setrecursionlimit(self.limit + self.limit // 2)
            self.warnings.__enter__()  # a copy of the filters, put back on the way out
            _ignore_tracer_warnings()  # about the tracer's own hooks, not the user's code
            if self.stance is not None:
                self.stance.__enter__()
            self.filtering = True
            self.hooks.append(register_module_forward_pre_hook(recorder.enter_module))
            self.hooks.append(register_module_forward_hook(recorder.exit_module, **_EXIT_HOOK_OPTIONS))
            torch.autograd.Function.apply = classmethod(  # type: ignore[method-assign, assignment]
                lambda cls, *args, **kwargs: recorder.apply_function(cls, args, kwargs)
            )
            self.originals = constructs.patch()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc_info: object) -> None:
        try:
            constructs.unpatch(self.originals)
            torch.autograd.Function.apply = _FUNCTION_APPLY  # type: ignore[method-assign]
            for hook in reversed(self.hooks):
                # torch's handle forgets the with_kwargs table: leave no entry behind in it.
                _WITH_KWARGS.pop(hook.id, None)
                hook.remove()
            if self.filtering:
                if self.stance is not None:
                    self.stance.__exit__(None, None, None)
                self.warnings.__exit__(None, None, None)
            sys.setrecursionlimit(self.limit)
            torch._C._set_grad_enabled(self.grad_before)
        finally:
            self.state.restore()  # last, whatever failed before it


def _ignore_tracer_warnings() -> None:
    """``warnings.filterwarnings("ignore", message=m)`` for each of :data:`_TRACER_WARNINGS`."""
    mutated = getattr(warnings, "_filters_mutated", None)
    if mutated is None or not isinstance(warnings.filters, list):  # another warnings module: its own API
        for message in _TRACER_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        return
    warnings.filters[:0] = _TRACER_FILTERS
    mutated()  # the C side's caches of which filters apply are stale now


def _unwrap(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds, so compiling does not change the snapshot."""
    inner = getattr(model, "_orig_mod", None) if type(model).__name__ == "OptimizedModule" else None
    return inner if isinstance(inner, nn.Module) else model


def _leaf_paths(tree: ModuleTree, leaf_modules: Iterable[type | str], model: str) -> frozenset[str]:
    """The paths (as the trace names modules) of the modules ``leaf_modules`` picks.

    A class picks its instances (and its subclasses'), a string the modules at a path it
    matches (``fnmatch``: ``encoder.*``, ``blocks.?.attn``). One that picks none is a mistake.
    """
    leaf_modules = list(leaf_modules)
    if not leaf_modules:
        return frozenset()  # the usual case: no walk of the tree for it
    first: dict[int, str] = {}
    for path, module in tree.paths:
        first.setdefault(id(module), path)
    found: set[str] = set()
    for spec in leaf_modules:
        if isinstance(spec, str):
            picked = {first[id(module)] for path, module in tree.paths if fnmatchcase(path, spec)}
        elif isinstance(spec, type) and issubclass(spec, nn.Module):
            picked = {first[id(module)] for _, module in tree.paths if isinstance(module, spec)}
        else:
            raise TraceError(
                f"leaf_modules takes nn.Module classes and path patterns (got {spec!r} that is a "
                f"{type(spec).__name__}); e.g. leaf_modules=[nn.MultiheadAttention, 'encoder.*']"
            )
        if not picked:
            example = next((path for path, _ in tree.paths if path), "")
            what = "path pattern" if isinstance(spec, str) else "class"
            raise TraceError(
                f"leaf_modules: the {what} {spec if isinstance(spec, str) else spec.__name__!r} matches no "
                f"module of {model} (module paths look like {example!r}); check its spelling"
            )
        found |= picked
    return frozenset(found)


@gc_paused  # the cyclic collector makes big traces superlinear; put back as it was after
def trace(
    model: nn.Module,
    /,
    *args: Any,
    stats: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    grad: bool = False,
    depth: int | None = None,
    leaf_modules: Iterable[type | str] = (),
    flops: bool = False,
    warmup: bool = True,
    **kwargs: Any,
) -> Trace:
    """Run ``model(*args, **kwargs)`` once and return the record of every tensor operation.

    ``stats=True`` also records mean, std, min, max and NaN/Inf counts of every output;
    ``rtol``/``atol`` set how far those may move when the trace is compared with a
    snapshot. ``depth=N`` makes each module call at level N (the model is level 1, the
    modules its forward calls level 2) one node, and ``leaf_modules`` (classes or path
    patterns) the calls of those modules, whatever the level (see
    :mod:`pytest_modellens.granularity`). ``flops=True`` counts each node's and each
    module's FLOPs with ``torch.utils.flop_counter.FlopCounterMode``. The forward runs
    under ``torch.no_grad()`` (and eagerly, for a ``torch.compile``-d model); ``grad=True``
    runs it with autograd on, for a forward that differentiates (``torch.autograd.grad``
    inside). The model and the inputs are left exactly as they were, even if the forward raises.

    The traced forward comes after an untraced one (``warmup=False`` skips it), with the
    model and the RNGs put back in between, so what a forward caches on its first call does
    not make the first trace of a model differ from later ones (see :mod:`.warmup`).
    """
    if not isinstance(model, nn.Module):
        raise TraceError(
            f"trace() needs a torch.nn.Module as its first argument (got {type(model).__name__!r}); "
            "wrap a plain function in an nn.Module whose forward calls it"
        )
    model = _unwrap(model)
    try:
        check_depth(depth)
    except ValueError as error:
        raise TraceError(str(error)) from None
    if isinstance(leaf_modules, (str, type)):
        leaf_modules = [leaf_modules]
    tolerance = (
        _DEFAULT_TOLERANCE
        if rtol is None and atol is None
        else _DEFAULT_TOLERANCE.overridden(rtol=rtol, atol=atol)
    )
    named_inputs = bind_inputs(model, args, kwargs)
    input_tensors: list[tuple[str, Tensor]] = []
    inputs_desc = flatten(named_inputs, "", input_tensors)
    tree = ModuleTree.of(model)
    if stats and (any(t.is_meta for _, t in input_tensors) or any(p.is_meta for _, p in tree.params)):
        raise TraceError(
            f"statistics need tensor values, but {type(model).__name__} or its inputs are on "
            "the meta device; trace it without stats=True (structure only), or build it on a real device"
        )

    leaves = _leaf_paths(tree, leaf_modules, type(model).__name__)
    rng = RngState()
    if warmup:
        changed = warm_up(
            model, args, kwargs, tree=tree, inputs=[t for _, t in input_tensors], grad=grad, rng=rng
        )
        if changed:
            raise TraceError(_unrestorable(model, changed))
    state = ModelState(tree, [t for _, t in input_tensors], grad=grad, rng=rng)
    recorder_class = FlopRecorder if flops else Recorder
    recorder = recorder_class(tree, stats=stats, guard=state.guard)
    recorder.add_inputs(input_tensors)
    with _Tracing(recorder, state, grad=grad):
        try:
            with recorder:
                result = model(*args, **kwargs)
            # Before anything is put back: an output may be an input written in place.
            outputs_desc = recorder.add_outputs(result)
            written = state.written_parameters()
        except TraceError as error:  # the tracer's own (statistics it could not take): it names the node
            raise TraceError(f"{error}; the model was left unchanged") from None
        except Exception as error:
            raise TraceError(_failure(model, error, recorder, tree, input_tensors, grad=grad)) from error
    changed = state.unrestorable()
    if changed:
        raise TraceError(_unrestorable(model, changed))
    if written:
        _warn_parameters_written(model, written, recorder)

    nodes = canonical_calls(recorder.nodes, recorder.call_parents)
    modules = module_table(tree, foreign=recorder.foreign, calls=recorder.calls)
    if isinstance(recorder, FlopRecorder):
        nodes = recorder.counted(nodes)
        modules = with_module_flops(modules, nodes)
    op_level = Trace(
        model=type(model).__name__,
        inputs=inputs_desc,
        outputs=outputs_desc,
        nodes=tuple(nodes),
        modules=modules,
        params=param_table(recorder.named),
        tolerance=tolerance,
    )
    return collapse(op_level, parents=recorder.call_parents, depth=depth, leaves=leaves)


def _failure(
    model: nn.Module,
    error: Exception,
    recorder: Recorder,
    tree: ModuleTree,
    inputs: list[tuple[str, Tensor]],
    *,
    grad: bool,
) -> str:
    """What a forward that raised under the tracer says: the error, the op and module, the way out."""
    name = type(model).__name__
    ops = [node.node_id for node in recorder.nodes if node.kind.in_forward]
    where = f"last operation traced: {ops[-1]}" if ops else "before its first operation"
    hint = ""
    if recorder.failed is not None:
        scope, op = recorder.failed
        where = f"in the operation {op!r} of {ids.shown(ids.scope_path(scope))}; {where}"
        on_meta = any(t.is_meta for _, t in inputs) or any(p.is_meta for _, p in tree.params)
        if on_meta:
            hint = (
                f"; on the meta device tensors have shapes but no values, and {op!r} needs values: "
                "tracing on meta needs a data-independent forward (no .item(), nonzero, tensor-valued "
                "if, copies to the CPU); trace this model on a real device instead"
            )
    if not grad and "does not require grad" in str(error):
        hint = "; it differentiates inside forward: trace it with grad=True (model_trace(..., grad=True))"
    return (
        f"the forward pass of {name} raised {type(error).__name__}: {error} ({where}); "
        f"the model was left unchanged{hint}"
    )


def _unrestorable(model: nn.Module, changed: list[Tensor]) -> str:
    return (
        f"the forward pass of {type(model).__name__} changed {len(changed)} parameter(s) or buffer(s) "
        "in place inside an operation the tracer cannot see into (a native kernel), so they could "
        "not be put back; avoid writing the model during forward"
    )


def _warn_parameters_written(model: nn.Module, written: list[Tensor], recorder: Recorder) -> None:
    """Say so when the forward wrote parameters: they are put back, what it remembers of it is not."""
    names = [recorder.named[id(p)][0] for p in written]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    warnings.warn(
        ModelStateWarning(
            f"the forward pass of {type(model).__name__} wrote {len(names)} parameter(s) in place "
            f"({shown}); the trace put their values back, but not what the model's own code may "
            "remember of the write (a flag such as 'weights rescaled'), so later forwards of this "
            "model may differ from those of a model never traced"
        ),
        stacklevel=3,
    )
