"""The model's side of a trace: its module tree walked once, its inputs named, its modules tabled."""

from __future__ import annotations

import inspect
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
        paths = list(root.named_modules(remove_duplicate=False, prefix=prefix))
        modules: list[tuple[str, nn.Module]] = []
        params: list[tuple[str, Tensor]] = []
        buffers: list[tuple[str, Tensor]] = []
        seen_modules: set[int] = set()
        seen_params: set[int] = set()
        seen_buffers: set[int] = set()
        for path, module in paths:
            if id(module) in seen_modules:
                continue
            seen_modules.add(id(module))
            modules.append((path, module))
            for table, found, seen in (
                (module._parameters, params, seen_params),
                (module._buffers, buffers, seen_buffers),
            ):
                for name, tensor in table.items():
                    if tensor is not None and id(tensor) not in seen:
                        seen.add(id(tensor))
                        found.append((ids.join(path, name), tensor))
        return cls(paths, modules, params, buffers)


def bind_inputs(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
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


def parameter_counts(modules: list[tuple[str, nn.Module]]) -> dict[int, tuple[int, int]]:
    """``(parameters, trainable ones)`` under each module (a shared one once), by module id, in one walk."""
    held: dict[int, dict[int, tuple[int, bool]]] = {}  # module id -> {parameter id: (numel, trainable)}

    def collect(module: nn.Module) -> dict[int, tuple[int, bool]]:
        found = held.get(id(module))
        if found is None:
            found = {id(p): (p.numel(), p.requires_grad) for p in module.parameters(recurse=False)}
            for child in module.children():
                found.update(collect(child))
            held[id(module)] = found
        return found

    counts = {}
    for _, module in modules:
        found = collect(module).values()
        counts[id(module)] = (sum(n for n, _ in found), sum(n for n, trainable in found if trainable))
    return counts


def module_table(
    model: nn.Module, *, foreign: list[tuple[str, nn.Module]], calls: dict[str, int]
) -> tuple[ModuleInfo, ...]:
    """Every module of the model, then those met outside its tree, with parameters and calls."""
    rows = []
    entries = list(model.named_modules())
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
        rows.append(
            ModuleInfo(
                path=path,
                class_name=type(module).__name__,
                config=config,
                params=params[id(module)][0],
                calls=calls.get(path, 0),
                trainable=params[id(module)][1],
            )
        )
    return tuple(rows)


def param_table(named: dict[int, tuple[str, bool, Tensor]]) -> tuple[ParamInfo, ...]:
    """The model's parameters and buffers, then those of modules met outside its tree.

    ``named`` holds ``(name, is_buffer, tensor)`` by tensor id, in the order they were named.
    """
    return tuple(
        ParamInfo(name, is_buffer, spec_of(tensor), trainable=not is_buffer and tensor.requires_grad)
        for name, is_buffer, tensor in named.values()
    )
