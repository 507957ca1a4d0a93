"""The model's state around a trace: what a forward may change, saved before and put back after.

This is the "no trace leaves a trace" promise of DESIGN.md: after :func:`trace` returns or
raises, the model's parameters, buffers and training flags and the global RNG state are as
they were. :func:`seeded` is the fixture's side of it: the RNGs seeded for a test body and
restored after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.nn.parameter import is_lazy

from .modules import ModuleTree


class ModelState:
    """What a forward pass may change and a trace must put back."""

    def __init__(self, tree: ModuleTree) -> None:
        self.training = [(m, m.training) for _, m in tree.modules]
        # Native kernels (batch_norm's running statistics) write buffers without bumping
        # their version counter, so every buffer is copied and put back.
        # A lazy module's first forward makes its parameters: that change is expected.
        self.buffers = [(b, b.detach().clone()) for _, b in tree.buffers if not is_lazy(b)]
        self.params = [(p, p._version) for _, p in tree.params if not is_lazy(p)]
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
            if module.training is not training:  # nn.Module.__setattr__ is slow: skip the no-ops
                module.training = training
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)

    def unrestorable(self, saved: dict[int, tuple[Tensor, Tensor]]) -> list[Tensor]:
        """Parameters changed in place by code the tracer could not see (native ops)."""
        return [p for p, version in self.params if p._version != version and id(p) not in saved]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's RNGs (CPU and every CUDA device) seeded with ``seed`` inside, restored after."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield
