"""The recorder: a TorchFunctionMode that writes down every tensor operation of one forward.

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
for the tensors a Hugging Face cache object holds). A write through a view is a write of
the tensor it views too (:mod:`.writes`); ``torch.vmap`` and ``torch.cond`` show as
:mod:`.constructs` says.

The handler below runs inside every operation of the forward, so it is kept lean:
names are cached per function, and tensors are tracked by ``id`` with a weak
reference that proves the id still belongs to the same tensor (holding the tensors
themselves would keep every activation of the forward alive and slow the forward down).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.modules.module import (
    register_module_forward_hook,
)
from torch.overrides import TorchFunctionMode, handle_torch_function

from .. import ids
from ..trace import Node, NodeKind, Stats, TensorSpec
from .describe import (
    MAX_LISTED_ARGS,
    OP_NAMES,
    compute_stats,
    describe,
    describe_float,
    flatten,
    op_name,
    spec_of,
    tensors_in,
)
from .modules import ModuleTree
from .state import WriteGuard
from .writes import WRITES_ARGUMENTS as _WRITES_ARGUMENTS
from .writes import rebind_bases, save_before_write

#: Operations that turn tensor values into a Python bool: the forward branches on data.
_CONDITION_OPS = frozenset({"bool", "equal", "allclose", "is_nonzero", "contains"})
#: Operations whose output holds no values yet: their statistics would be noise.
_UNINITIALIZED_OPS = frozenset(
    {"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided", "empty_permuted"}
)
_FUNCTION_APPLY = torch.autograd.Function.__dict__["apply"]
#: The exit hook reads keyword arguments too, where this torch can pass them.
_EXIT_HOOK_OPTIONS = {"always_call": True} | (
    {"with_kwargs": True}
    if "with_kwargs" in inspect.signature(register_module_forward_hook).parameters
    else {}
)
_function_ops: dict[type, Callable[..., Any]] = {}
_OP = NodeKind.OP
#: Whether a TorchFunctionMode is on: off inside an operation (the hooks ask it on every module call).
_mode_enabled = torch._C._is_torch_function_mode_enabled
#: The keys under which positional arguments are described, made once.
_POSITIONS = tuple(str(position) for position in range(8))
#: Questions about a tensor's shape, type and place: they never make a node, so the handler
#: answers them before anything else (an ``nn.LSTMCell`` step asks ``dim`` four times).
_QUERIES = frozenset({
    "dim", "ndim", "size", "shape", "numel", "len", "stride", "storage_offset", "element_size",
    "is_contiguous", "is_floating_point", "is_complex", "dtype", "device", "layout", "is_sparse",
    "is_cuda", "is_meta", "is_quantized", "is_nested", "get_device", "data_ptr", "requires_grad",
    "is_leaf", "names", "nbytes", "itemsize",
})  # fmt: skip


class Recorder(TorchFunctionMode):
    """Records operations while active; one instance per call of :func:`trace`."""

    def __init__(self, tree: ModuleTree, *, stats: bool, guard: WriteGuard) -> None:
        super().__init__()
        self.stats = stats
        self.guard = guard
        self.module_paths: dict[int, str] = {}
        for path, module in tree.paths:
            self.module_paths.setdefault(id(module), path)
        self.foreign: list[tuple[str, nn.Module]] = []
        self.foreign_names: dict[str, int] = {}
        #: The reference of every tensor a node may read, by id, with a weak reference
        #: that proves the id still belongs to that tensor: outputs of traced
        #: operations, inputs, and (named once, up front) parameters and buffers.
        self.producers: dict[int, tuple[weakref.ref[Tensor], str]] = {}
        #: ``(name, is_buffer, tensor)`` of each parameter and buffer by id, first name first.
        self.named: dict[int, tuple[str, bool, Tensor]] = {}
        self._name_tensors(tree)
        #: Statistics already taken, by tensor id, with the tensor's version when taken.
        self.taken: dict[int, tuple[weakref.ref[Tensor], int, Stats]] = {}
        self.scopes: list[str] = [""]
        self.owners: list[nn.Module | None] = [None]
        self.calls: dict[str, int] = {}
        #: The scope each module call ran inside (``""``: the model's forward), for ``depth``.
        self.call_parents: dict[str, str] = {}
        self.op_counts: dict[tuple[str, str], int] = {}
        self.nodes: list[Node] = []
        #: ``(scope, op)`` of the operation that raised, when one did.
        self.failed: tuple[str, str] | None = None

    def _name_tensors(self, tree: ModuleTree) -> None:
        """Name parameters and buffers (a shared one once, under its first name)."""
        tensors = [t for _, t in (*tree.params, *tree.buffers)]
        keys = list(map(id, tensors))
        if not self.named and len(set(keys)) == len(keys):  # the model's own tree: each tensor once
            param_names = [name for name, _ in tree.params]
            buffer_names = [name for name, _ in tree.buffers]
            names = param_names + buffer_names
            refs = ids.tensor_refs(param_names, is_buffer=False) + ids.tensor_refs(
                buffer_names, is_buffer=True
            )
            kinds = [False] * len(param_names) + [True] * len(buffer_names)
            self.named.update(zip(keys, zip(names, kinds, tensors)))
            self.producers.update(zip(keys, zip(map(weakref.ref, tensors), refs)))
            return
        for table, is_buffer in ((tree.params, False), (tree.buffers, True)):
            for name, tensor in table:
                if id(tensor) not in self.named:
                    self.named[id(tensor)] = (name, is_buffer, tensor)
                    ref = ids.tensor_ref(name, is_buffer=is_buffer)
                    self.producers[id(tensor)] = (weakref.ref(tensor), ref)

    # -- inputs and outputs ------------------------------------------------------------

    def add_inputs(self, tensors: list[tuple[str, Tensor]]) -> None:
        taken: set[str] = set()
        for path, tensor in tensors:
            node_id = ids.distinct(ids.input_id(path), taken)
            taken.add(node_id)
            node = Node(
                node_id,
                NodeKind.INPUT,
                "input",
                (),
                (),
                (spec_of(tensor),),
                self.stats_of([tensor], node_id),
            )
            self.add_node(node, [tensor])

    def add_outputs(self, result: Any) -> Any:
        """Output nodes for the tensors of the forward's result; returns the result's description."""
        tensors: list[tuple[str, Tensor]] = []
        description = flatten(result, "", tensors)
        taken: set[str] = set()
        for path, tensor in tensors:
            spec = (spec_of(tensor),)
            node_id = ids.distinct(ids.output_id(path), taken)
            taken.add(node_id)
            self.nodes.append(
                Node(
                    node_id,
                    NodeKind.OUTPUT,
                    "output",
                    (self.ref(tensor),),
                    (),
                    spec,
                    self.stats_of([tensor], node_id),
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
            tree = ModuleTree.of(module, root)
            for child_path, child in tree.paths:
                self.module_paths.setdefault(id(child), child_path)
            self._name_tensors(tree)
            path = self.module_paths[id(module)]
        return path

    def enter_module(self, module: nn.Module, args: Any) -> None:
        if not _mode_enabled():
            return  # a module run inside an operation (torch.vmap's): part of that operation
        if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
            # What the module's own pre-hook would do next, out of the trace: making the
            # parameters is not part of the forward a snapshot should show.
            with torch._C.DisableTorchFunction():
                module.initialize_parameters(*args)
                self.guard.save(module.buffers())  # new running statistics are put back too
        path = self.module_paths.get(id(module))
        if path is None:
            path = self._path_of(module)
        call = self.calls[path] = self.calls.get(path, 0) + 1
        scope = ids.scope(path, call)
        self.call_parents[scope] = self.scopes[-1]
        self.scopes.append(scope)
        self.owners.append(module)

    def exit_module(self, module: nn.Module, args: Any, *rest: Any) -> None:
        # Called as (module, args, kwargs, output), or as (module, args, None) when the
        # forward raised; then a module deeper down may have raised without its exit,
        # so scopes are popped down to this module's own.
        if not _mode_enabled():
            return
        output = rest[-1]
        if output is not None:
            # The usual cases, answered here: a tensor, or a tuple of tensors (an LSTM cell's
            # ``(h, c)``), each made by a traced operation.
            producers = self.producers
            if output.__class__ is Tensor:
                entry = producers.get(id(output))
                traced = entry is not None and entry[0]() is output
            elif output.__class__ is tuple:
                traced = True
                for t in output:
                    if (
                        t.__class__ is not Tensor
                        or (entry := producers.get(id(t))) is None
                        or entry[0]() is not t
                    ):
                        traced = False
                        break
            else:
                traced = False
            if not traced:
                self._cover_untraced(module, (args, rest[0] if len(rest) == 2 else None), output)
        owners = self.owners
        if owners[-1] is module:
            self.scopes.pop()
            owners.pop()
            return
        if not any(owner is module for owner in owners):
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
            producers = self.producers
            unknown = []
            for t in tensors_in((output,), []):
                entry = producers.get(id(t))
                if entry is None or entry[0]() is not t:
                    unknown.append(t)
            if not unknown:
                return
        op = getattr(module, "original_name", None) or type(module).__name__  # TorchScript keeps it
        # The hook runs inside the forward, under the mode: the tracer's own tensor calls
        # (shapes, statistics) must not be recorded as the model's.
        with torch._C.DisableTorchFunction():
            inputs = [self.ref(t) for t in tensors_in(given, [])]
            inputs += [self.ref(p) for p in module.parameters()]
            self._record(op, inputs, [], unknown)

    # -- tensors ---------------------------------------------------------------------

    def _producer(self, tensor: Tensor) -> str | None:
        """The reference bound to this very tensor (its id alone may be a dead tensor's)."""
        entry = self.producers.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def known(self, tensor: Tensor) -> bool:
        return self._producer(tensor) is not None

    def ref(self, tensor: Tensor) -> str:
        """How a node names a tensor it reads: its producer's id, ``param:``/``buffer:`` or ``const:``."""
        return self._producer(tensor) or ids.const_ref(spec_of(tensor))

    def add_node(self, node: Node, tensors: list[Tensor]) -> None:
        self.nodes.append(node)
        self._produced(tensors, (node.node_id,) if len(tensors) == 1 else node.refs)

    def _produced(self, tensors: list[Tensor], refs: tuple[str, ...] | list[str]) -> None:
        """Bind each tensor to the reference later nodes read it by."""
        producers = self.producers
        for tensor, ref in zip(tensors, refs):
            try:
                producers[id(tensor)] = (weakref.ref(tensor), ref)
            except TypeError:  # a tensor type without weak references: track nothing
                pass

    def new_id(self, op: str) -> str:
        scope = self.scopes[-1]
        key = (scope, op)
        n = self.op_counts[key] = self.op_counts.get(key, 0) + 1
        return ids.op_id(scope, op, n)

    def stats_of(self, tensors: list[Tensor], node_id: str) -> tuple[Stats | None, ...]:
        return tuple(self._stats_of(t, node_id) for t in tensors) if self.stats else ()

    def _stats_of(self, tensor: Tensor, node_id: str) -> Stats:
        """Statistics of a tensor; one an op hands back unchanged (dropout in eval) keeps those taken of it."""
        try:
            version = tensor._version
        except RuntimeError:  # an inference tensor keeps no version: nothing proves it unchanged
            return compute_stats(tensor, node_id=node_id)
        key = id(tensor)
        taken = self.taken.get(key)
        if taken is not None and taken[0]() is tensor and taken[1] == version:
            return taken[2]
        stats = compute_stats(tensor, node_id=node_id)
        try:
            self.taken[key] = (weakref.ref(tensor), version, stats)
        except TypeError:  # a tensor type without weak references
            pass
        return stats

    def _record(
        self, op: str, inputs: list[str], described: list[tuple[str, Any]], outputs: list[Tensor]
    ) -> None:
        node_id = self.new_id(op)
        if len(outputs) == 1:
            output = outputs[0]
            specs: tuple[TensorSpec, ...] = (spec_of(output),)
            if not self.stats:
                stats: tuple[Stats | None, ...] = ()
            elif op in _UNINITIALIZED_OPS:  # the values of `torch.empty` are whatever the memory held
                stats = (None,)
            else:
                stats = (self._stats_of(output, node_id),)
            self.nodes.append(Node(node_id, _OP, op, tuple(inputs), tuple(described), specs, stats))
            try:  # what `_produced` does, for the one output most operations have
                self.producers[id(output)] = (weakref.ref(output), node_id)
            except TypeError:  # a tensor type without weak references: track nothing
                pass
            return
        specs = tuple(map(spec_of, outputs))
        if not self.stats:
            stats = ()
        elif op in _UNINITIALIZED_OPS:
            stats = (None,) * len(outputs)
        else:
            stats = self.stats_of(outputs, node_id)
        self.nodes.append(Node(node_id, _OP, op, tuple(inputs), tuple(described), specs, stats))
        self._produced(outputs, ids.output_refs(node_id, len(outputs)))

    # -- operations ------------------------------------------------------------------

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        try:
            op = OP_NAMES[func]
        except (KeyError, TypeError):
            op = op_name(func)
        if op in _QUERIES:
            return func(*args, **kwargs) if kwargs else func(*args)
        if kwargs is None:
            kwargs = {}
        # The test of `writes.writes`, inlined: it runs on every operation.
        writes = (
            op[-1] == "_"
            or op == "setitem"
            or op in _WRITES_ARGUMENTS
            or bool(kwargs and ("out" in kwargs or kwargs.get("inplace") is True))
        )
        if writes:
            save_before_write(self.guard, op, args, kwargs)
        try:
            result = func(*args, **kwargs) if kwargs else func(*args)
        except Exception:
            self.failed = (self.scopes[-1], op)  # for the error: where the forward stopped
            raise

        if isinstance(result, Tensor):
            outputs = [result]
        elif op == "setitem":
            if not (args and isinstance(args[0], Tensor)):
                return result
            outputs = [args[0]]  # x[i] = v returns None but writes x
        elif result.__class__ is bool:
            if op in _CONDITION_OPS:  # `if x.sum() > 0:` calls __bool__
                reads = tuple(self.ref(t) for t in tensors_in(args, []))
                self.nodes.append(Node(self.new_id(op), NodeKind.CONDITION, op, reads, (("result", result),)))
            return result
        elif isinstance(result, (tuple, list)) and not isinstance(result, torch.Size):
            outputs = tensors_in(result, [])
            if not outputs:
                return result
        else:
            return result

        # The references are looked up inline, not through `ref`: this loop runs for every
        # argument of every operation of the forward.
        producers = self.producers
        inputs: list[str] = []
        described: list[tuple[str, Any]] = []
        for position, value in enumerate(args):
            if isinstance(value, Tensor):
                entry = producers.get(id(value))
                inputs.append(entry[1] if entry is not None and entry[0]() is value else self.ref(value))
            elif value is None or value.__class__ is int or value.__class__ is bool:
                described.append((_POSITIONS[position] if position < 8 else str(position), value))
            elif value.__class__ is float:
                described.append(
                    (_POSITIONS[position] if position < 8 else str(position), describe_float(value))
                )
            else:
                self._take(_POSITIONS[position] if position < 8 else str(position), value, inputs, described)
        if kwargs:
            for key, value in kwargs.items():
                if isinstance(value, Tensor):
                    entry = producers.get(id(value))
                    inputs.append(entry[1] if entry is not None and entry[0]() is value else self.ref(value))
                elif key[0] == "_":  # private knobs such as log_softmax's `_stacklevel`
                    continue
                elif value is None or value.__class__ is int or value.__class__ is bool:
                    described.append((key, value))  # what `describe` makes of them: themselves
                elif value.__class__ is float:
                    described.append((key, describe_float(value)))
                else:
                    self._take(key, value, inputs, described)
        self._record(op, inputs, described, outputs)
        if writes:
            rebind_bases(self, op, args, kwargs)
        return result

    def _take(self, key: str, value: Any, inputs: list[str], described: list[tuple[str, Any]]) -> None:
        """A non-tensor argument: tensors inside a list go to the inputs, the rest is described."""
        kind = value.__class__
        plain = False  # a sequence of plain tensors only
        if (kind is tuple or kind is list or kind is torch.Size) and value:
            # The two usual cases, told by the first item without a walk: a shape, stride or
            # dims (what `describe` makes of it), and plain tensors (an LSTM cell's `(h, c)`,
            # `torch.cat([a, b])`), which need no `tensors_in` to find them.
            head = value[0].__class__
            if head is int:
                if len(value) <= MAX_LISTED_ARGS and all(item.__class__ is int for item in value):
                    described.append((key, list(value)))
                    return
            elif head is Tensor:
                plain = all(item.__class__ is Tensor for item in value)
        if isinstance(value, (list, tuple)) and value:
            tensors = value if plain else tensors_in(value, [])
            if tensors:
                producers = self.producers
                for t in tensors:
                    entry = producers.get(id(t))
                    inputs.append(entry[1] if entry is not None and entry[0]() is t else self.ref(t))
                if plain or len(tensors) == len(value) and all(isinstance(v, Tensor) for v in value):
                    return  # tensors only (parameters too): the inputs list says it all
        described.append((key, "<device>" if key == "device" else describe(value)))

    # -- custom autograd Functions -----------------------------------------------------

    def apply_function(self, cls: type, args: Any, kwargs: Any) -> Any:
        """``Function.apply`` while tracing: one operation named after the class."""
        if not torch._C._is_torch_function_mode_enabled() or issubclass(cls, _checkpoint_function()):
            # Inside an operation (the mode is off there), or a Function that stays transparent.
            return _FUNCTION_APPLY.__get__(None, cls)(*args, **kwargs)
        # Through torch's own dispatch, so the mode is off while the Function runs.
        tensors = tensors_in(args, tensors_in(kwargs.values(), []))
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
