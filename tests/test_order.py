"""Interchangeable module calls get one order and numbering, whatever order the forward ran them in."""

from __future__ import annotations

import torch
from torch import nn

import pytest_modellens as lens


class Rotary(nn.Module):
    """One table per attention kind, as transformers' rotary embeddings keep them."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("full_inv_freq", torch.arange(4.0))
        self.register_buffer("sliding_inv_freq", torch.arange(4.0) / 2)

    def forward(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        return x * getattr(self, f"{kind}_inv_freq")


class PerKind(nn.Module):
    """Calls ``rotary`` once per kind, in the order given (a set's order, in transformers)."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        super().__init__()
        self.rotary = Rotary()
        self.kinds = kinds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tables = {kind: self.rotary(x, kind) for kind in self.kinds}
        return tables["full"] - tables["sliding"]


class Siamese(nn.Module):
    def __init__(self, *, swapped: bool) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.swapped = swapped

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.swapped:
            eb, ea = self.encoder(b), self.encoder(a)
        else:
            ea, eb = self.encoder(a), self.encoder(b)
        return ea - eb


def test_calls_that_differ_only_in_buffers_get_the_same_snapshot_in_either_order() -> None:
    x = torch.randn(2, 4)
    one = lens.trace(PerKind(("full", "sliding")), x)
    other = lens.trace(PerKind(("sliding", "full")), x)
    assert one.dumps() == other.dumps()
    assert one.node("rotary/mul").inputs == ("input:x", "buffer:rotary.full_inv_freq")
    assert one.node("sub").inputs == ("rotary/mul", "rotary:2/mul")


def test_calls_on_different_data_keep_the_forwards_order() -> None:
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    plain = lens.trace(Siamese(swapped=False), a, b)
    swapped = lens.trace(Siamese(swapped=True), a, b)
    assert plain.node("encoder/linear").inputs[0] == "input:a"
    assert swapped.node("encoder/linear").inputs[0] == "input:b"
