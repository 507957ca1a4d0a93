"""Run a model's forward pass once and record every tensor operation as a Trace.

The tracer is a scoped ``torch.overrides.TorchFunctionMode`` plus global module
forward pre/post hooks. Operations are named at the function level (``linear``,
``conv2d``, ``scaled_dot_product_attention``), which is the same on every device;
dispatcher-level (ATen) names are not. Nothing outlives a call to :func:`trace`:
the mode, the hooks and the one patch (below) are removed, and the model's parameters,
buffers, training flags, the input tensors and the global RNG state are put back as
they were, whether the forward returns or raises.

What the mode cannot see inside, it records from the outside:

- a custom ``torch.autograd.Function`` is one operation named after its class
  (``GradReverse``), its insides hidden as those of ``F.layer_norm`` are: a Function
  backed by a compiled kernel traces the same as one written in torch ops, on every
  device. ``Function.apply`` is patched for the duration of the trace to route it
  through the mode. The reentrant ``torch.utils.checkpoint`` Function only runs the
  model's own modules, so it stays transparent;
- a module whose output no traced operation produced (a TorchScript module, a call
  into a C++ extension) becomes one operation named after its class, reading the
  tensors it was given and its parameters.

Python branching on tensor values (``__bool__``, ``torch.equal``, ``torch.allclose``)
becomes a ``condition`` node whose ``result`` argument says which way it went. Inputs and
outputs are named by argument, key, field or attribute (``past_key_values.layers.0.keys``
for the tensors a Hugging Face cache object holds). Known limits: writing through a view
rebinds the view, not the tensor it views; the per-sample ops inside ``torch.vmap`` read
as constants; ``torch.cond`` is not supported.

The handler below runs inside every operation of the forward, so it is kept lean:
names are cached per function, and tensors are tracked by ``id`` with a weak
reference that proves the id still belongs to the same tensor (holding the tensors
themselves would keep every activation of the forward alive and slow the forward down).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import numbers
import sys
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.nn.parameter import is_lazy
from torch.overrides import TorchFunctionMode, handle_torch_function

from .errors import TraceError
from .trace import ModuleInfo, Node, NodeKind, ParamInfo, Stats, TensorSpec, Tolerance, Trace

#: Lists and tuples longer than this are written as ``<list of N>`` in node arguments.
MAX_LISTED_ARGS = 16
#: Significant digits kept of float arguments (``eps=1e-05``), so they print stably.
ARG_FLOAT_DIGITS = 8
#: How deep the tensors inside plain objects among the inputs and outputs are looked
#: for (a Hugging Face cache holds its tensors two objects down).
MAX_OBJECT_DEPTH = 4

_DUNDER_INPLACE = {"iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow",
                   "imatmul", "iand", "ior", "ixor", "ilshift", "irshift"}  # fmt: skip
#: Operations that turn tensor values into a Python bool: the forward branches on data.
_CONDITION_OPS = frozenset({"bool", "equal", "allclose", "is_nonzero", "contains"})
#: Operations whose output holds no values yet: their statistics would be noise.
_UNINITIALIZED_OPS = frozenset(
    {"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided", "empty_permuted"}
)
#: Device types: a string argument naming one (``x.to("cuda")``) is written ``<device>``.
_DEVICE_TYPES = frozenset({"cpu", "cuda", "mps", "xpu", "meta", "hpu", "xla", "npu", "mtia", "ipu"})
_FUNCTION_APPLY = torch.autograd.Function.__dict__["apply"]
#: The exit hook reads keyword arguments too, where this torch can pass them.
_EXIT_HOOK_OPTIONS = {"always_call": True} | (
    {"with_kwargs": True}
    if "with_kwargs" in inspect.signature(register_module_forward_hook).parameters
    else {}
)
_op_names: dict[Any, str] = {}
_function_ops: dict[type, Callable[..., Any]] = {}
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
    name = name.removesuffix(".default")  # torch.ops.aten.add.default
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
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return "<device>" if value.partition(":")[0] in _DEVICE_TYPES else value
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
    if isinstance(value, Mapping):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, numbers.Integral):  # numpy and other foreign scalars
        return int(value)
    if isinstance(value, numbers.Real):
        return _describe(float(value))
    return f"<{type(value).__name__}>"  # never repr(): it may hold an address or a device


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


def _tensors_in(values: Any, out: list[Tensor]) -> list[Tensor]:
    """The tensors in nested lists, tuples and dicts, in order (the handler's quick walk)."""
    for value in values:
        if isinstance(value, Tensor):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            _tensors_in(value, out)
        elif isinstance(value, dict):
            _tensors_in(value.values(), out)
    return out


def _flatten(value: Any, path: str, out: list[tuple[str, Tensor]], depth: int = 0) -> Any:
    """Collect the tensors of a nested value with their paths; return its description.

    Handles tensors, tuples and lists (named tuples by field), mappings (Hugging Face
    ``ModelOutput`` is one), dataclasses and, a few levels deep, the public attributes
    of plain objects that hold tensors (a Hugging Face cache). Paths join keys with
    dots: ``0.1``, ``logits``, ``past_key_values.layers.0.keys``.
    """
    join = (lambda key: f"{path}.{key}") if path else str
    if isinstance(value, Tensor):
        out.append((path, value))
        return str(_spec(value))
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {f: _flatten(v, join(f), out, depth) for f, v in zip(value._fields, value)}
    if isinstance(value, (list, tuple)):
        return [_flatten(v, join(i), out, depth) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): _flatten(v, join(k), out, depth) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _flatten(getattr(value, f.name), join(f.name), out, depth)
            for f in dataclasses.fields(value)
        }
    attributes = getattr(value, "__dict__", None)
    if attributes and depth < MAX_OBJECT_DEPTH and not isinstance(value, (nn.Module, type)):
        held = {}
        for name, item in attributes.items():
            found: list[tuple[str, Tensor]] = []
            if not name.startswith("_"):
                description = _flatten(item, join(name), found, depth + 1)
                if found:  # only what holds tensors: the rest is the object's bookkeeping
                    held[name] = description
                    out.extend(found)
        if held:
            return held
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
        self.foreign_names: dict[str, int] = {}
        #: The reference of every tensor a node may read, by id, with a weak reference
        #: that proves the id still belongs to that tensor: outputs of traced
        #: operations, inputs, and (named once, up front) parameters and buffers.
        self.producers: dict[int, tuple[weakref.ref[Tensor], str]] = {}
        self.named: dict[int, tuple[str, Tensor]] = {}
        self._name_tensors(model, "")
        #: Tensors an in-place operation may not leave changed: parameters and inputs.
        self.protected = {
            key
            for key, (ref, tensor) in self.named.items()
            if ref.startswith("param:") and not is_lazy(tensor)
        }
        self.saved: dict[int, tuple[Tensor, Tensor]] = {}
        self.scopes: list[str] = [""]
        self.owners: list[nn.Module | None] = [None]
        self.calls: dict[str, int] = {}
        self.op_counts: dict[tuple[str, str], int] = {}
        self.nodes: list[Node] = []

    def _name_tensors(self, module: nn.Module, prefix: str) -> None:
        """Name parameters and buffers (a shared one once, under its first name)."""
        params = [(f"param:{name}", p) for name, p in module.named_parameters(prefix=prefix)]
        buffers = [(f"buffer:{name}", b) for name, b in module.named_buffers(prefix=prefix)]
        for ref, tensor in params + buffers:
            if id(tensor) not in self.named:
                self.named[id(tensor)] = (ref, tensor)
                self.producers[id(tensor)] = (weakref.ref(tensor), ref)

    # -- inputs and outputs ------------------------------------------------------------

    def add_inputs(self, tensors: list[tuple[str, Tensor]]) -> None:
        for path, tensor in tensors:
            node = Node(
                f"input:{path}", NodeKind.INPUT, "input", (), (), (_spec(tensor),), self.stats_of([tensor])
            )
            self.add_node(node, [tensor])
            self.protected.add(id(tensor))

    def add_outputs(self, result: Any) -> Any:
        """Output nodes for the tensors of the forward's result; returns the result's description."""
        tensors: list[tuple[str, Tensor]] = []
        description = _flatten(result, "", tensors)
        for path, tensor in tensors:
            node_id = f"output:{path}" if path else "output"
            spec = (_spec(tensor),)
            self.nodes.append(
                Node(
                    node_id, NodeKind.OUTPUT, "output", (self.ref(tensor),), (), spec, self.stats_of([tensor])
                )
            )
        return description

    # -- module scopes ---------------------------------------------------------------

    def _path_of(self, module: nn.Module) -> str:
        path = self.module_paths.get(id(module))
        if path is None:
            # A module outside the model's tree (a model held in a plain list, a
            # global): name it after its class, numbered in order of first call.
            class_name = type(module).__name__
            taken = self.foreign_names[class_name] = self.foreign_names.get(class_name, 0) + 1
            root = f"<{class_name}>" if taken == 1 else f"<{class_name}#{taken}>"
            self.foreign.append((root, module))
            for sub, child in module.named_modules(remove_duplicate=False):
                self.module_paths.setdefault(id(child), f"{root}.{sub}" if sub else root)
            self._name_tensors(module, root)
            path = self.module_paths[id(module)]
        return path

    def enter_module(self, module: nn.Module, args: Any) -> None:
        if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
            # What the module's own pre-hook would do next, out of the trace: making the
            # parameters is not part of the forward a snapshot should show.
            with torch._C.DisableTorchFunction():
                module.initialize_parameters(*args)
                for buf in module.buffers():  # new running statistics are put back too
                    self.saved.setdefault(id(buf), (buf, buf.detach().clone()))
        path = self._path_of(module)
        call = self.calls[path] = self.calls.get(path, 0) + 1
        self.scopes.append(path if call == 1 else f"{path}:{call}")
        self.owners.append(module)

    def exit_module(self, module: nn.Module, args: Any, *rest: Any) -> None:
        # Called as (module, args, kwargs, output), or as (module, args, None) when the
        # forward raised; then a module deeper down may have raised without its exit,
        # so scopes are popped down to this module's own.
        output = rest[-1]
        if output is not None:
            self._cover_untraced(module, (args, rest[0] if len(rest) == 2 else None), output)
        if self.owners[-1] is not module and not any(owner is module for owner in self.owners):
            return
        while len(self.scopes) > 1:
            self.scopes.pop()
            if self.owners.pop() is module:
                break

    def _cover_untraced(self, module: nn.Module, given: Any, output: Any) -> None:
        """Record a module whose output tensors no traced operation produced."""
        if isinstance(output, Tensor):
            if self.known(output):
                return
            unknown = [output]
        else:
            unknown = [t for t in _tensors_in((output,), []) if not self.known(t)]
            if not unknown:
                return
        op = getattr(module, "original_name", None) or type(module).__name__  # TorchScript keeps it
        inputs = [self.ref(t) for t in _tensors_in(given, [])]
        inputs += [self.ref(p) for p in module.parameters()]
        self._record(op, inputs, [], unknown)

    # -- tensors ---------------------------------------------------------------------

    def known(self, tensor: Tensor) -> bool:
        entry = self.producers.get(id(tensor))
        return entry is not None and entry[0]() is tensor

    def ref(self, tensor: Tensor) -> str:
        """How a node names a tensor it reads: its producer's id, ``param:``/``buffer:`` or ``const:``."""
        entry = self.producers.get(id(tensor))
        if entry is not None and entry[0]() is tensor:
            return entry[1]
        return f"const:{_spec(tensor)}"

    def add_node(self, node: Node, tensors: list[Tensor]) -> None:
        self.nodes.append(node)
        for tensor, ref in zip(tensors, node.refs):
            try:
                self.producers[id(tensor)] = (weakref.ref(tensor), ref)
            except TypeError:  # a tensor type without weak references: track nothing
                pass

    def new_id(self, op: str) -> str:
        scope = self.scopes[-1]
        key = (scope, op)
        n = self.op_counts[key] = self.op_counts.get(key, 0) + 1
        name = op if n == 1 else f"{op}:{n}"
        return f"{scope}/{name}" if scope else name

    def stats_of(self, tensors: list[Tensor]) -> tuple[Stats | None, ...]:
        return tuple(_compute_stats(t) for t in tensors) if self.stats else ()

    def _record(
        self, op: str, inputs: list[str], described: list[tuple[str, Any]], outputs: list[Tensor]
    ) -> None:
        specs = (_spec(outputs[0]),) if len(outputs) == 1 else tuple(map(_spec, outputs))
        stats: tuple[Stats | None, ...] = ()
        if self.stats:  # the values of `torch.empty` are whatever the memory held
            stats = (
                (None,) * len(outputs) if op in _UNINITIALIZED_OPS else tuple(map(_compute_stats, outputs))
            )
        node = Node(self.new_id(op), NodeKind.OP, op, tuple(inputs), tuple(described), specs, stats)
        self.add_node(node, outputs)

    # -- operations ------------------------------------------------------------------

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if kwargs is None:
            kwargs = {}
        op = _op_name(func)
        if (
            op[-1] == "_"
            or op == "setitem"
            or (kwargs and ("out" in kwargs or kwargs.get("inplace") is True))
        ):
            self._save_before_write(args, kwargs)
        result = func(*args, **kwargs)

        if isinstance(result, Tensor):
            outputs = [result]
        elif op == "setitem":
            if not (args and isinstance(args[0], Tensor)):
                return result
            outputs = [args[0]]  # x[i] = v returns None but writes x
        elif result.__class__ is bool:
            if op in _CONDITION_OPS:  # `if x.sum() > 0:` calls __bool__
                reads = tuple(self.ref(t) for t in _tensors_in(args, []))
                self.nodes.append(Node(self.new_id(op), NodeKind.CONDITION, op, reads, (("result", result),)))
            return result
        elif isinstance(result, (tuple, list)) and not isinstance(result, torch.Size):
            outputs = _tensors_in(result, [])
            if not outputs:
                return result
        else:
            return result

        inputs: list[str] = []
        described: list[tuple[str, Any]] = []
        for position, value in enumerate(args):
            if isinstance(value, Tensor):
                inputs.append(self.ref(value))
            else:
                self._take(str(position), value, inputs, described)
        for key, value in kwargs.items():
            if isinstance(value, Tensor):
                inputs.append(self.ref(value))
            elif key[0] != "_":  # private knobs such as log_softmax's `_stacklevel`
                self._take(key, value, inputs, described)
        self._record(op, inputs, described, outputs)
        return result

    def _take(self, key: str, value: Any, inputs: list[str], described: list[tuple[str, Any]]) -> None:
        """A non-tensor argument: tensors inside a list go to the inputs, the rest is described."""
        if isinstance(value, (list, tuple)) and value:
            tensors = _tensors_in(value, [])
            if tensors:
                inputs.extend(self.ref(t) for t in tensors)
                if all(isinstance(v, Tensor) for v in value):
                    return  # torch.cat([a, b]): the inputs list says it all
        described.append((key, "<device>" if key == "device" else _describe(value)))

    def _save_before_write(self, args: Any, kwargs: Any) -> None:
        """Keep a copy of a parameter or input the forward is about to write in place."""
        target = kwargs.get("out", args[0] if args else None)
        if not isinstance(target, Tensor):
            return
        if target._base is not None:  # writing through a view writes the tensor it views
            target = target._base
        key = id(target)
        if key in self.protected and key not in self.saved:
            with torch.no_grad():  # the mode is off inside its own handler
                self.saved[key] = (target, target.detach().clone())

    # -- custom autograd Functions -----------------------------------------------------

    def apply_function(self, cls: type, args: Any, kwargs: Any) -> Any:
        """``Function.apply`` while tracing: one operation named after the class."""
        if not torch._C._is_torch_function_mode_enabled() or issubclass(cls, _checkpoint_function()):
            # Inside an operation (the mode is off there), or a Function that stays transparent.
            return _FUNCTION_APPLY.__get__(None, cls)(*args, **kwargs)
        # Through torch's own dispatch, so the mode is off while the Function runs.
        tensors = _tensors_in(args, _tensors_in(kwargs.values(), []))
        return handle_torch_function(_function_op(cls), tensors, *args, **kwargs)


def _function_op(cls: type) -> Callable[..., Any]:
    """A callable named after a Function class that runs its original ``apply`` (one per class)."""
    op = _function_ops.get(cls)
    if op is None:
        apply = _FUNCTION_APPLY.__get__(None, cls)

        def op(*args: Any, **kwargs: Any) -> Any:
            return apply(*args, **kwargs)

        op.__name__ = op.__qualname__ = cls.__name__
        _function_ops[cls] = op
    return op


def _checkpoint_function() -> type:
    from torch.utils.checkpoint import CheckpointFunction

    return CheckpointFunction


class _ModelState:
    """What a forward pass may change and a trace must put back."""

    def __init__(self, model: nn.Module) -> None:
        self.training = [(m, m.training) for m in model.modules()]
        # Native kernels (batch_norm's running statistics) write buffers without bumping
        # their version counter, so every buffer is copied and put back.
        # A lazy module's first forward makes its parameters: that change is expected.
        self.buffers = [(b, b.detach().clone()) for b in model.buffers() if not is_lazy(b)]
        self.params = [(p, p._version) for p in model.parameters() if not is_lazy(p)]
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None
        )

    def restore(self, saved: dict[int, tuple[Tensor, Tensor]]) -> None:
        with torch.no_grad():
            for buf, copy in self.buffers:
                buf.copy_(copy)
            for tensor, copy in saved.values():
                tensor.copy_(copy)
        for module, training in self.training:
            module.training = training
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)

    def unrestorable(self, saved: dict[int, tuple[Tensor, Tensor]]) -> list[Tensor]:
        """Parameters changed in place by code the tracer could not see (native ops)."""
        return [p for p, version in self.params if p._version != version and id(p) not in saved]


def _bind_inputs(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Name the inputs after the forward's parameters (``x``, ``input_ids``), else by position.

    ``*args`` are named by position and ``**kwargs`` by keyword, as if spelt out.
    """
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
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            named.update((str(position), item) for position, item in enumerate(value, start=len(named)))
        else:
            named[name] = value
    return named


def _parameter_counts(modules: list[tuple[str, nn.Module]]) -> dict[int, int]:
    """Parameters under each module (a shared one once), by module id, in one walk of the tree."""
    held: dict[int, dict[int, int]] = {}  # module id -> {parameter id: numel}

    def collect(module: nn.Module) -> dict[int, int]:
        found = held.get(id(module))
        if found is None:
            found = {id(p): p.numel() for p in module.parameters(recurse=False)}
            for child in module.children():
                found.update(collect(child))
            held[id(module)] = found
        return found

    return {id(module): sum(collect(module).values()) for _, module in modules}


def _module_table(model: nn.Module, recorder: _Recorder) -> tuple[ModuleInfo, ...]:
    rows = []
    entries = list(model.named_modules())
    entries += [(root, module) for root, module in recorder.foreign]
    seen_foreign = {id(m) for _, m in recorder.foreign}
    for root, module in recorder.foreign:
        entries += [
            (f"{root}.{sub}", m) for sub, m in module.named_modules() if sub and id(m) not in seen_foreign
        ]
    params = _parameter_counts(entries)
    for path, module in entries:
        try:
            config = module.extra_repr()
        except Exception:  # noqa: BLE001 - a custom extra_repr that fails must not fail the trace
            config = ""
        rows.append(
            ModuleInfo(
                path=path,
                class_name=type(module).__name__,
                config=config,
                params=params[id(module)],
                calls=recorder.calls.get(path, 0),
            )
        )
    return tuple(rows)


def _param_table(recorder: _Recorder) -> tuple[ParamInfo, ...]:
    """The model's parameters and buffers, then those of modules met outside its tree."""
    rows = []
    for ref, tensor in recorder.named.values():
        kind, _, name = ref.partition(":")
        rows.append(ParamInfo(name, kind == "buffer", _spec(tensor)))
    return tuple(rows)


@contextmanager
def _tracing(recorder: _Recorder, state: _ModelState) -> Iterator[None]:
    """What the trace needs while the forward runs; all of it undone on the way out."""
    with ExitStack() as scope:
        scope.callback(state.restore, recorder.saved)  # runs last
        scope.enter_context(torch.no_grad())
        if "torch._dynamo" in sys.modules and hasattr(torch.compiler, "set_stance"):
            scope.enter_context(torch.compiler.set_stance("force_eager"))  # compiled parts run eagerly
        for hook in (
            register_module_forward_pre_hook(recorder.enter_module),
            register_module_forward_hook(recorder.exit_module, **_EXIT_HOOK_OPTIONS),
        ):
            scope.callback(hook.remove)
        torch.autograd.Function.apply = classmethod(  # type: ignore[method-assign, assignment]
            lambda cls, *args, **kwargs: recorder.apply_function(cls, args, kwargs)
        )
        scope.callback(setattr, torch.autograd.Function, "apply", _FUNCTION_APPLY)
        yield


def _unwrap(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds, so compiling does not change the snapshot."""
    inner = getattr(model, "_orig_mod", None) if type(model).__name__ == "OptimizedModule" else None
    return inner if isinstance(inner, nn.Module) else model


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
    defaults = Tolerance()
    tolerance = Tolerance(
        rtol=defaults.rtol if rtol is None else rtol, atol=defaults.atol if atol is None else atol
    )
    named_inputs = _bind_inputs(model, args, kwargs)
    input_tensors: list[tuple[str, Tensor]] = []
    inputs_desc = _flatten(named_inputs, "", input_tensors)
    if stats and (any(t.is_meta for _, t in input_tensors) or any(p.is_meta for p in model.parameters())):
        raise TraceError(
            f"statistics need tensor values, but {type(model).__name__} or its inputs are on "
            "the meta device; trace it without stats=True (structure only), or build it on a real device"
        )

    recorder = _Recorder(model, stats=stats)
    recorder.add_inputs(input_tensors)
    state = _ModelState(model)
    with _tracing(recorder, state):
        try:
            with recorder:
                result = model(*args, **kwargs)
            # Before anything is put back: an output may be an input written in place.
            outputs_desc = recorder.add_outputs(result)
        except Exception as error:
            ops = [node.node_id for node in recorder.nodes if node.kind in (NodeKind.OP, NodeKind.CONDITION)]
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
        modules=_module_table(model, recorder),
        params=_param_table(recorder),
        tolerance=tolerance,
    )
