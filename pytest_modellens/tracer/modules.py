"""The model's side of a trace: its module tree walked once, its inputs named, its modules tabled."""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .. import ids
from ..trace import ModuleInfo, ParamInfo
from .describe import spec_of


@dataclass(frozen=True, slots=True)
class ModuleTree:
    """One walk of a module tree, with the order and names torch's own walks give.

    ``paths`` holds every path of every module (a shared module at each of its paths),
    ``modules`` each module once under its first path (``named_modules()``), and
    ``params``/``buffers`` each tensor once under its first name (``named_parameters()``,
    ``named_buffers()``). A trace asks these questions before the forward; one walk for
    all of them instead of one walk each is most of its fixed cost on a small model.
    """

    paths: list[tuple[str, nn.Module]]
    modules: list[tuple[str, nn.Module]]
    params: list[tuple[str, Tensor]]
    buffers: list[tuple[str, Tensor]]

    @classmethod
    def of(cls, root: nn.Module, prefix: str = "") -> ModuleTree:
        paths: list[tuple[str, nn.Module]] = []
        modules: list[tuple[str, nn.Module]] = []
        params: list[tuple[str, Tensor]] = []
        buffers: list[tuple[str, Tensor]] = []
        seen_modules: set[int] = set()
        seen_params: set[int] = set()
        seen_buffers: set[int] = set()
        join = ids.join

        # `named_modules(remove_duplicate=False)`'s walk and order, on the tables directly:
        # its generators cost more than the rest of the walk (a model overriding it is rare,
        # and its forward still calls the modules its tables hold).
        def walk(module: nn.Module, path: str) -> None:
            paths.append((path, module))
            if id(module) not in seen_modules:
                seen_modules.add(id(module))
                modules.append((path, module))
                if module._parameters:
                    take(module._parameters, path, params, seen_params)
                if module._buffers:  # most modules have none
                    take(module._buffers, path, buffers, seen_buffers)
            if module._modules:
                for name, child in module._modules.items():
                    if child is not None:
                        walk(child, join(path, name))

        def take(table: dict[str, Any], path: str, found: list[tuple[str, Tensor]], seen: set[int]) -> None:
            for name, tensor in table.items():
                if tensor is not None and id(tensor) not in seen:
                    seen.add(id(tensor))
                    found.append((join(path, name), tensor))

        walk(root, prefix)
        return cls(paths, modules, params, buffers)


@dataclass(frozen=True, slots=True)
class _Signature:
    """A forward's signature, and what naming plain positional inputs needs to know of it."""

    signature: inspect.Signature
    positional: tuple[str, ...]  # the parameters a positional argument may fill, in order
    required: int  # how many of them have no default
    simple: bool  # no *args, and no keyword-only parameter without a default

    @classmethod
    def of(cls, forward: Any) -> _Signature:
        signature = inspect.signature(forward)
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        positional = [p for p in signature.parameters.values() if p.kind in kinds]
        required = 0
        while required < len(positional) and positional[required].default is inspect.Parameter.empty:
            required += 1
        simple = all(
            p.kind is not inspect.Parameter.VAR_POSITIONAL
            and not (p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty)
            for p in signature.parameters.values()
        )
        return cls(signature, tuple(p.name for p in positional), required, simple)


#: Signatures by forward function: ``inspect.signature`` costs more than a small forward.
_signatures: weakref.WeakKeyDictionary[Any, _Signature] = weakref.WeakKeyDictionary()


def _signature_of(model: nn.Module) -> _Signature:
    forward = model.forward
    function = getattr(forward, "__func__", None)
    if function is None or getattr(forward, "__self__", None) is not model:
        return _Signature.of(forward)  # not a plain method: nothing to key a cache by
    try:
        return _signatures[function]
    except KeyError:
        found = _signatures[function] = _Signature.of(forward)
        return found
    except TypeError:  # a callable that takes no weak reference
        return _Signature.of(forward)


def bind_inputs(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Name the inputs after the forward's parameters (``x``, ``input_ids``), else by position.

    ``*args`` are named by position and ``**kwargs`` by keyword, as if spelt out.
    """
    try:
        found = _signature_of(model)
        if not kwargs and found.simple and found.required <= len(args) <= len(found.positional):
            return dict(zip(found.positional, args))  # what `bind` gives, without its cost
        bound = found.signature.bind(*args, **kwargs)
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


def parameter_counts(modules: list[tuple[str, nn.Module]]) -> dict[int, tuple[int, int]]:
    """``(parameters, trainable ones)`` under each module (a shared one once), by module id.

    Where no parameter and no module is reachable twice (most models), each module's counts
    are its own plus its children's, in one walk; otherwise each module's set of parameters
    is kept. The tables behind parameters() and children() are read directly: this walk
    visits every module of the model on every trace.
    """
    totals: dict[int, tuple[int, int]] = {}
    seen: set[int] = set()
    shared = False

    def total(module: nn.Module) -> tuple[int, int]:
        nonlocal shared
        count = trainable = 0
        for p in module._parameters.values():
            if p is not None:
                shared = shared or id(p) in seen
                seen.add(id(p))
                numel = p.numel()
                count += numel
                trainable += numel if p.requires_grad else 0
        for child in module._modules.values():
            if child is not None:
                if id(child) in totals:
                    shared = True  # one module under two parents
                    continue
                below, below_trainable = total(child)
                count += below
                trainable += below_trainable
        totals[id(module)] = (count, trainable)
        return count, trainable

    for _, module in modules:
        if id(module) not in totals:
            total(module)
    return _shared_parameter_counts(modules) if shared else totals


def _shared_parameter_counts(modules: list[tuple[str, nn.Module]]) -> dict[int, tuple[int, int]]:
    """:func:`parameter_counts` where parameters or modules are shared: sets of parameters, merged."""
    held: dict[int, dict[int, tuple[int, bool]]] = {}  # module id -> {parameter id: (numel, trainable)}

    def collect(module: nn.Module) -> dict[int, tuple[int, bool]]:
        found = held.get(id(module))
        if found is None:
            found = {
                id(p): (p.numel(), p.requires_grad) for p in module._parameters.values() if p is not None
            }
            for child in module._modules.values():
                if child is not None:
                    found.update(collect(child))
            held[id(module)] = found
        return found

    counts = {}
    for _, module in modules:
        found = collect(module).values()
        counts[id(module)] = (sum(n for n, _ in found), sum(n for n, trainable in found if trainable))
    return counts


def module_table(
    tree: ModuleTree, *, foreign: list[tuple[str, nn.Module]], calls: dict[str, int]
) -> tuple[ModuleInfo, ...]:
    """Every module of the model, then those met outside its tree, with parameters and calls.

    ``tree`` is the model's as it was before the forward, which is what the trace put back.
    """
    rows = []
    entries = list(tree.modules)
    entries += [(root, module) for root, module in foreign]
    seen_foreign = {id(m) for _, m in foreign}
    for root, module in foreign:
        entries += [
            (ids.join(root, sub), m) for sub, m in module.named_modules() if sub and id(m) not in seen_foreign
        ]
    params = parameter_counts(entries)
    for path, module in entries:
        try:
            config = module.extra_repr()
        except Exception:  # noqa: BLE001 - a custom extra_repr that fails must not fail the trace
            config = ""
        count, trainable = params[id(module)]
        rows.append(ModuleInfo(path, type(module).__name__, config, count, calls.get(path, 0), trainable))
    return tuple(rows)


def param_table(named: dict[int, tuple[str, bool, Tensor]]) -> tuple[ParamInfo, ...]:
    """The model's parameters and buffers, then those of modules met outside its tree.

    ``named`` holds ``(name, is_buffer, tensor)`` by tensor id, in the order they were named.
    """
    return tuple(
        ParamInfo(name, is_buffer, spec_of(tensor), trainable=not is_buffer and tensor.requires_grad)
        for name, is_buffer, tensor in named.values()
    )
