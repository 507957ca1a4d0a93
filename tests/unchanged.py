"""The one check that a trace left everything as it was: the model, its inputs, torch's globals.

``observe`` takes down what a user could see change; ``assert_unchanged`` compares two
observations and names what moved. Every test that promises "no trace leaves a trace"
uses these, so the promise is checked the same way everywhere.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

import numpy as np
import torch
from torch.nn.modules import module as torch_module

#: torch's global module-hook tables: a trace must leave each as it found it.
GLOBAL_HOOK_TABLES = (
    "_global_forward_pre_hooks",
    "_global_forward_hooks",
    "_global_forward_hooks_always_called",
    "_global_forward_hooks_with_kwargs",
    "_global_backward_pre_hooks",
    "_global_backward_hooks",
)


def tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in nested tuples, lists and dicts, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in tensors(item)]
    return []


def observe(model: torch.nn.Module, inputs: Any = ()) -> dict[str, Any]:
    """What a user could see change: weights, buffers, flags, RNGs, inputs, torch's hooks and modes."""
    return {
        "state_dict": {name: value.clone() for name, value in model.state_dict().items()},
        "tensor objects": {name: id(value) for name, value in model.state_dict(keep_vars=True).items()},
        "modules": [(name, id(m), m.training) for name, m in model.named_modules()],
        "buffers": [(name, id(b)) for name, b in model.named_buffers()],  # persistent or not
        "torch RNG": torch.get_rng_state(),
        "numpy RNG": _numpy_state(),
        "python RNG": random.getstate(),
        "inputs": [t.clone() for t in tensors(inputs)],
        "global hooks": {name: list(getattr(torch_module, name, {})) for name in GLOBAL_HOOK_TABLES},
        "torch function modes": torch._C._len_torch_function_stack(),
        "grad enabled": torch.is_grad_enabled(),
    }


def _numpy_state() -> bytes:
    """NumPy's global generator state in full: its words and position, and a cached Gaussian."""
    return pickle.dumps(np.random.get_state(legacy=False))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        if not (
            isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and a.layout == b.layout
        ):
            return False
        if a.layout != torch.strided:  # sparse: torch.equal takes dense tensors only
            a, b = a.to_dense(), b.to_dense()
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def assert_unchanged(before: dict[str, Any], after: dict[str, Any], where: str = "the trace") -> None:
    """Fail naming each part of ``before`` that ``after`` does not repeat."""
    moved = [part for part in before if not _same(before[part], after[part])]
    if "state_dict" in moved:
        changed = [
            k for k in before["state_dict"] if not _same(before["state_dict"][k], after["state_dict"].get(k))
        ]
        moved[moved.index("state_dict")] = (
            f"state_dict {changed or sorted(after['state_dict'].keys() ^ before['state_dict'].keys())}"
        )
    assert not moved, f"{where} changed: {', '.join(moved)}"
