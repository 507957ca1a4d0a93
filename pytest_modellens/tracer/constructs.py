"""``torch.vmap`` and ``torch.cond`` while tracing: what each looks like in the trace, and why.

Both are patched for the duration of a trace (and put back after it):

- ``torch.vmap(f)(x)`` is one operation named ``vmap``, reading the tensors it is given and
  returning what ``f`` returned for the whole batch. Its insides run on functorch's batched
  tensors, whose per-sample ops have neither the shapes nor the identities of the tensors the
  rest of the trace holds (traced one by one, they read as constants): hidden, as those of a
  custom autograd Function are.
- ``torch.cond(pred, true_fn, false_fn, operands)`` runs eagerly as the ``if`` it stands for:
  ``pred`` decides (a ``condition`` node when it is a tensor, as for ``if x.sum() > 0``), then
  the chosen branch's operations are traced like any others. Unpatched, ``torch.cond`` compiles
  its branches with dynamo, which cannot run under the tracer's mode.

For ``vmap`` the patch sits where every vmapped function runs, functorch's ``vmap_impl``
(looked up by the function ``vmap`` returns each time it is called), so a ``vmap`` bound at
import time (``from torch import vmap``) and a function vmapped before the trace (in
``__init__``) are one operation too. A torch without that function gets ``torch.vmap`` and
``torch.func.vmap`` patched instead, which those two escape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.func
from torch.overrides import handle_torch_function

from .describe import tensors_in

_VMAP = torch.func.vmap
_COND = torch.cond
#: Where functorch runs every vmapped call (not in every torch: then the public names are patched).
_APIS: Any = getattr(getattr(torch, "_functorch", None), "apis", None)
_VMAP_IMPL: Callable[..., Any] | None = getattr(_APIS, "vmap_impl", None)


def vmap(*args: Any, _vmapped: Callable[..., Any], **kwargs: Any) -> Any:
    """The traced operation a vmapped call is: named ``vmap``, its insides untraced."""
    return _vmapped(*args, **kwargs)


def _traced_vmap(func: Callable[..., Any], *options: Any, **named: Any) -> Callable[..., Any]:
    vmapped = _VMAP(func, *options, **named)

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch._C._is_torch_function_mode_enabled():  # inside an operation: nothing to record
            return vmapped(*args, **kwargs)
        tensors = tensors_in(args, tensors_in(kwargs.values(), []))
        # `_vmapped` starts with `_`: the recorder leaves it out of the node's arguments.
        return handle_torch_function(vmap, tensors, *args, _vmapped=vmapped, **kwargs)

    return run


def _traced_vmap_impl(func: Callable[..., Any], *settings_and_args: Any, **kwargs: Any) -> Any:
    """functorch's ``vmap_impl(func, in_dims, out_dims, randomness, chunk_size, *args, **kwargs)``, traced."""
    assert _VMAP_IMPL is not None
    if not torch._C._is_torch_function_mode_enabled():  # inside an operation, or not tracing
        return _VMAP_IMPL(func, *settings_and_args, **kwargs)
    settings, args = settings_and_args[:4], settings_and_args[4:]
    vmapped = functools.partial(_VMAP_IMPL, func, *settings)
    tensors = tensors_in(args, tensors_in(kwargs.values(), []))
    return handle_torch_function(vmap, tensors, *args, _vmapped=vmapped, **kwargs)


def _eager_cond(
    pred: Any, true_fn: Callable[..., Any], false_fn: Callable[..., Any], operands: Any = (), *rest: Any
) -> Any:
    if not torch._C._is_torch_function_mode_enabled():
        return _COND(pred, true_fn, false_fn, operands, *rest)
    branch = true_fn if bool(pred) else false_fn  # bool(tensor): the trace's condition node
    return branch(*operands)


#: ``(owner, name, replacement)`` of each construct the trace replaces while it runs.
_PATCHES = (
    ((_APIS, "vmap_impl", _traced_vmap_impl),)
    if _VMAP_IMPL is not None
    else ((torch, "vmap", _traced_vmap), (torch.func, "vmap", _traced_vmap))
) + ((torch, "cond", _eager_cond),)


def patch() -> list[tuple[Any, str, Any]]:
    """Put the traced ``vmap`` and ``cond`` in place; what was there, for :func:`unpatch`."""
    originals = []
    for owner, name, replacement in _PATCHES:
        originals.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)
    return originals


def unpatch(originals: list[tuple[Any, str, Any]]) -> None:
    for owner, name, original in reversed(originals):
        setattr(owner, name, original)


@contextmanager
def patched() -> Iterator[None]:
    """``vmap`` and ``torch.cond`` as the trace shows them (:data:`_PATCHES`), put back after."""
    originals = patch()
    try:
        yield
    finally:
        unpatch(originals)
