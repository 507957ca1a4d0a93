"""Run a model's forward pass once and record every tensor operation as a Trace.

The tracer is a scoped ``torch.overrides.TorchFunctionMode`` plus global module
forward pre/post hooks. Operations are named at the function level (``linear``,
``conv2d``, ``scaled_dot_product_attention``), which is the same on every device;
dispatcher-level (ATen) names are not. Nothing outlives a call to :func:`trace`:
the mode and hooks are removed, and the model's parameters, buffers, training flags
and the global RNG state are put back as they were, whether the forward returns or
raises.

The handler below runs inside every operation of the forward, so it is kept lean:
names are cached per function, and tensors are tracked by ``id`` with a weak
reference that proves the id still belongs to the same tensor (holding the tensors
themselves would keep every activation of the forward alive).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.overrides import TorchFunctionMode

from .errors import TraceError
from .trace import ModuleInfo, Node, NodeKind, ParamInfo, Stats, TensorSpec, Tolerance, Trace

#: Lists and tuples longer than this are written as ``<list of N>`` in node arguments.
MAX_LISTED_ARGS = 16
#: Significant digits kept of float arguments (``eps=1e-05``), so they print stably.
ARG_FLOAT_DIGITS = 8

_DUNDER_INPLACE = {"iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow",
                   "imatmul", "iand", "ior", "ixor", "ilshift", "irshift"}  # fmt: skip
_op_names: dict[Any, str] = {}
_dtype_names: dict[torch.dtype, str] = {}


def _op_name(func: Any) -> str:
    """The function-level name of an intercepted callable, cached per callable."""
    try:
        return _op_names[func]
    except (KeyError, TypeError):
        pass
    name = getattr(func, "__name__", None) or type(func).__name__
    if name == "__get__":  # a Tensor property such as `.T` or `.real`
        name = getattr(getattr(func, "__self__", None), "__name__", "get")
    if name.startswith("__") and name.endswith("__") and len(name) > 4:
        name = name[2:-2]
        if name in _DUNDER_INPLACE:
            name = name[1:] + "_"
    try:
        _op_names[func] = name
    except TypeError:
        pass
    return name


def _dtype_name(dtype: torch.dtype) -> str:
    name = _dtype_names.get(dtype)
    if name is None:
        name = _dtype_names[dtype] = str(dtype).removeprefix("torch.")
    return name


def _spec(tensor: Tensor) -> TensorSpec:
    try:
        shape = tuple(tensor.shape)
    except (RuntimeError, TypeError):  # nested tensors have no plain shape
        shape = ()
    return TensorSpec(_dtype_name(tensor.dtype), shape)


def _describe(value: Any) -> Any:
    """A JSON-safe, device-free, deterministic description of a non-tensor argument."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return float(f"{value:.{ARG_FLOAT_DIGITS}g}")
        return str(value)
    if isinstance(value, Tensor):
        return "<tensor>"
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_LISTED_ARGS:
            return f"<{type(value).__name__} of {len(value)}>"
        return [_describe(item) for item in value]
    if isinstance(value, slice):
        parts = (value.start, value.stop) if value.step is None else (value.start, value.stop, value.step)
        return ":".join("" if p is None else str(_describe(p)) for p in parts)
    if value is Ellipsis:
        return "..."
    if isinstance(value, torch.dtype):
        return _dtype_name(value)
    if isinstance(value, torch.device):
        return "<device>"  # devices stay out of the compared data
    if isinstance(value, (torch.memory_format, torch.layout)):
        return str(value).removeprefix("torch.")
    if isinstance(value, torch.Generator):
        return "<generator>"
    if isinstance(value, Mapping):
        return {str(k): _describe(v) for k, v in value.items()}
    return f"<{type(value).__name__}>"


def _compute_stats(tensor: Tensor) -> Stats:
    """Statistics of a tensor's finite values, computed in float64."""
    if tensor.numel() == 0 or tensor.is_meta:
        return Stats(None, None, None, None, 0, 0)
    values = tensor.detach()
    if values.is_complex():
        values = values.abs()
    values = values.to(torch.float64)
    finite = torch.isfinite(values)
    nan = int(torch.isnan(values).sum())
    finite_count = int(finite.sum())
    inf = values.numel() - finite_count - nan
    if finite_count == 0:
        return Stats(None, None, None, None, nan, inf)
    if finite_count < values.numel():
        values = values[finite]
    return Stats(
        values.mean().item(),
        values.std(correction=0).item(),
        values.min().item(),
        values.max().item(),
        nan,
        inf,
    )


def _flatten(value: Any, path: str, out: list[tuple[str, Tensor]]) -> Any:
    """Collect the tensors of a nested value with their paths; return its description.

    Handles tensors, tuples/lists (named tuples included), mappings (Hugging Face
    ``ModelOutput`` is one) and dataclasses. Paths join keys with dots: ``0.1``, ``logits``.
    """
    join = (lambda key: f"{path}.{key}") if path else str
    if isinstance(value, Tensor):
        out.append((path, value))
        return str(_spec(value))
    if isinstance(value, Mapping):
        return {str(k): _flatten(v, join(k), out) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_flatten(v, join(i), out) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _flatten(getattr(value, f.name), join(f.name), out)
            for f in dataclasses.fields(value)
        }
    return _describe(value)


class _Recorder(TorchFunctionMode):
    """Records operations while active; one instance per call of :func:`trace`."""

    def __init__(self, model: nn.Module, *, stats: bool) -> None:
        super().__init__()
        self.stats = stats
        self.module_paths: dict[int, str] = {}
        for path, module in model.named_modules(remove_duplicate=False):
            self.module_paths.setdefault(id(module), path)
        self.foreign: list[tuple[str, nn.Module]] = []
        self.named: dict[int, str] = {}
        for name, param in model.named_parameters():
            self.named[id(param)] = f"param:{name}"
        for name, buf in model.named_buffers():
            self.named.setdefault(id(buf), f"buffer:{name}")
        self.param_ids = {id(p) for p in model.parameters()}
        self.saved_params: dict[int, tuple[Tensor, Tensor]] = {}
        self.producers: dict[int, tuple[weakref.ref[Tensor], str]] = {}
        self.scopes: list[str] = [""]
        self.calls: dict[str, int] = {}
        self.op_counts: dict[tuple[str, str], int] = {}
        self.nodes: list[Node] = []

    # -- module scopes ---------------------------------------------------------------

    def _path_of(self, module: nn.Module) -> str:
        path = self.module_paths.get(id(module))
        if path is None:
            # A module outside the model's tree (a model held in a plain list, a
            # global): name it after its class, numbered in order of first call.
            base = f"<{type(module).__name__}>"
            taken = sum(1 for name, _ in self.foreign if name.startswith(base[:-1]))
            root = base if not taken else f"{base[:-1]}#{taken + 1}>"
            self.foreign.append((root, module))
            for sub, child in module.named_modules(remove_duplicate=False):
                self.module_paths.setdefault(id(child), f"{root}.{sub}" if sub else root)
            path = self.module_paths[id(module)]
        return path

    def enter_module(self, module: nn.Module, _args: Any) -> None:
        path = self._path_of(module)
        call = self.calls[path] = self.calls.get(path, 0) + 1
        self.scopes.append(path if call == 1 else f"{path}:{call}")

    def exit_module(self, _module: nn.Module, _args: Any, _output: Any) -> None:
        if len(self.scopes) > 1:
            self.scopes.pop()

    # -- tensors ---------------------------------------------------------------------

    def ref(self, tensor: Tensor) -> str:
        key = id(tensor)
        entry = self.producers.get(key)
        if entry is not None and entry[0]() is tensor:
            return entry[1]
        named = self.named.get(key)
        if named is not None:
            return named
        return f"const:{_spec(tensor)}"

    def _bind(self, tensor: Tensor, ref: str) -> None:
        try:
            self.producers[id(tensor)] = (weakref.ref(tensor), ref)
        except TypeError:  # a tensor type without weak references: track nothing
            pass

    def add_node(self, node: Node, tensors: list[Tensor]) -> None:
        self.nodes.append(node)
        for tensor, ref in zip(tensors, node.refs):
            self._bind(tensor, ref)

    def new_id(self, op: str) -> str:
        scope = self.scopes[-1]
        key = (scope, op)
        n = self.op_counts[key] = self.op_counts.get(key, 0) + 1
        name = op if n == 1 else f"{op}:{n}"
        return f"{scope}/{name}" if scope else name

    def _stats_of(self, tensors: list[Tensor]) -> tuple[Stats | None, ...]:
        return tuple(_compute_stats(t) for t in tensors) if self.stats else ()

    # -- operations ------------------------------------------------------------------

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if kwargs is None:
            kwargs = {}
        op = _op_name(func)
        if op[-1] == "_" or op == "setitem" or "out" in kwargs:
            self._save_param_before_write(args, kwargs)
        result = func(*args, **kwargs)

        if isinstance(result, Tensor):
            outputs = [result]
        elif op == "setitem" and args and isinstance(args[0], Tensor):
            outputs = [args[0]]  # x[i] = v returns None but writes x
        elif op == "bool":
            if args and isinstance(args[0], Tensor):
                node = Node(self.new_id("bool"), NodeKind.CONDITION, "bool", (self.ref(args[0]),))
                self.nodes.append(node)
            return result
        elif isinstance(result, (tuple, list)) and result:
            pairs: list[tuple[str, Tensor]] = []
            _flatten(result, "", pairs)
            outputs = [t for _, t in pairs]
            if not outputs:
                return result
        else:
            return result

        inputs: list[str] = []
        described: list[tuple[str, Any]] = []
        for position, value in enumerate(args):
            self._take(str(position), value, inputs, described)
        for key, value in kwargs.items():
            self._take(key, value, inputs, described)
        node = Node(
            self.new_id(op),
            NodeKind.OP,
            op,
            tuple(inputs),
            tuple(described),
            tuple(_spec(t) for t in outputs),
            self._stats_of(outputs),
        )
        self.add_node(node, outputs)
        return result

    def _take(self, key: str, value: Any, inputs: list[str], described: list[tuple[str, Any]]) -> None:
        if isinstance(value, Tensor):
            inputs.append(self.ref(value))
            return
        if isinstance(value, (list, tuple)):
            tensors: list[tuple[str, Tensor]] = []
            _flatten(value, "", tensors)
            if tensors:
                inputs.extend(self.ref(t) for _, t in tensors)
                if all(isinstance(v, Tensor) for v in value):
                    return  # torch.cat([a, b]): the inputs list says it all
        if key == "device":
            value = "<device>"
        described.append((key, _describe(value)))

    def _save_param_before_write(self, args: Any, kwargs: Any) -> None:
        """Keep a copy of a parameter the forward is about to write in place."""
        target = kwargs.get("out", args[0] if args else None)
        if isinstance(target, Tensor) and id(target) in self.param_ids:
            if id(target) not in self.saved_params:
                with torch.no_grad():  # the mode is off inside its own handler
                    self.saved_params[id(target)] = (target, target.detach().clone())


class _ModelState:
    """What a forward pass may change and a trace must put back."""

    def __init__(self, model: nn.Module) -> None:
        self.training = [(m, m.training) for m in model.modules()]
        # Native kernels (batch_norm's running statistics) write buffers without bumping
        # their version counter, so every buffer is copied and put back.
        self.buffers = [(b, b.detach().clone()) for b in model.buffers()]
        self.params = [(p, p._version) for p in model.parameters()]
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None
        )

    def restore(self, saved_params: dict[int, tuple[Tensor, Tensor]]) -> None:
        with torch.no_grad():
            for buf, copy in self.buffers:
                buf.copy_(copy)
            for param, copy in saved_params.values():
                param.copy_(copy)
        for module, training in self.training:
            module.training = training
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)

    def unrestorable(self, saved_params: dict[int, tuple[Tensor, Tensor]]) -> list[Tensor]:
        """Parameters changed in place by code the tracer could not see (native ops)."""
        return [
            p for p, version in self.params if p._version != version and id(p) not in saved_params
        ]


def _bind_inputs(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Name the inputs after the forward's parameters (``x``, ``input_ids``), else by position."""
    try:
        bound = inspect.signature(model.forward).bind(*args, **kwargs)
    except (TypeError, ValueError):
        named = {str(i): a for i, a in enumerate(args)}
        named.update(kwargs)
        return named
    named = {}
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        else:
            named[name] = value
    return named


def _module_table(model: nn.Module, recorder: _Recorder) -> tuple[ModuleInfo, ...]:
    rows = []
    entries = list(model.named_modules())
    entries += [(root, module) for root, module in recorder.foreign]
    seen_foreign = {id(m) for _, m in recorder.foreign}
    for root, module in recorder.foreign:
        entries += [(f"{root}.{sub}", m) for sub, m in module.named_modules() if sub and id(m) not in seen_foreign]
    for path, module in entries:
        try:
            config = module.extra_repr()
        except Exception:  # a custom extra_repr that fails must not fail the trace
            config = ""
        rows.append(
            ModuleInfo(
                path=path,
                class_name=type(module).__name__,
                config=config,
                params=sum(p.numel() for p in module.parameters()),
                calls=recorder.calls.get(path, 0),
            )
        )
    return tuple(rows)


def _param_table(model: nn.Module) -> tuple[ParamInfo, ...]:
    rows = [ParamInfo(name, False, _spec(p)) for name, p in model.named_parameters()]
    rows += [ParamInfo(name, True, _spec(b)) for name, b in model.named_buffers()]
    return tuple(rows)


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
    snapshot. The forward runs under ``torch.no_grad()``. The model is left exactly as
    it was, even if the forward raises.
    """
    if not isinstance(model, nn.Module):
        raise TraceError(
            f"trace() needs a torch.nn.Module as its first argument (got {type(model).__name__!r}); "
            "wrap a plain function in an nn.Module whose forward calls it"
        )
    defaults = Tolerance()
    tolerance = Tolerance(
        rtol=defaults.rtol if rtol is None else rtol, atol=defaults.atol if atol is None else atol
    )
    named_inputs = _bind_inputs(model, args, kwargs)
    input_tensors: list[tuple[str, Tensor]] = []
    inputs_desc = _flatten(named_inputs, "", input_tensors)
    if stats and (
        any(t.is_meta for _, t in input_tensors) or any(p.is_meta for p in model.parameters())
    ):
        raise TraceError(
            f"statistics need tensor values, but {type(model).__name__} or its inputs are on "
            "the meta device; trace it without stats=True (structure only), or build it on a real device"
        )

    recorder = _Recorder(model, stats=stats)
    for path, tensor in input_tensors:
        node = Node(f"input:{path}", NodeKind.INPUT, "input", (), (), (_spec(tensor),), recorder._stats_of([tensor]))
        recorder.add_node(node, [tensor])

    state = _ModelState(model)
    hooks = [
        register_module_forward_pre_hook(recorder.enter_module),
        register_module_forward_hook(recorder.exit_module, always_call=True),
    ]
    try:
        with torch.no_grad(), recorder:
            result = model(*args, **kwargs)
    except Exception as error:
        where = recorder.nodes[-1].node_id if recorder.nodes else "the start of forward"
        raise TraceError(
            f"the forward pass of {type(model).__name__} raised {type(error).__name__}: {error} "
            f"(last operation traced: {where}); the model was left unchanged"
        ) from error
    finally:
        for handle in hooks:
            handle.remove()
        state.restore(recorder.saved_params)
    changed = state.unrestorable(recorder.saved_params)
    if changed:
        raise TraceError(
            f"the forward pass of {type(model).__name__} changed {len(changed)} parameter(s) in place "
            "inside an operation the tracer cannot see into, so they could not be put back; "
            "avoid writing parameters during forward"
        )

    output_tensors: list[tuple[str, Tensor]] = []
    outputs_desc = _flatten(result, "", output_tensors)
    for path, tensor in output_tensors:
        node_id = f"output:{path}" if path else "output"
        node = Node(node_id, NodeKind.OUTPUT, "output", (recorder.ref(tensor),), (), (_spec(tensor),), recorder._stats_of([tensor]))
        recorder.nodes.append(node)

    return Trace(
        model=type(model).__name__,
        inputs=inputs_desc,
        outputs=outputs_desc,
        nodes=tuple(recorder.nodes),
        modules=_module_table(model, recorder),
        params=_param_table(model),
        tolerance=tolerance,
    )
