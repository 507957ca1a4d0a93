"""torch.vmap, torch.cond and writes through views, traced as the forward reads."""

from __future__ import annotations

import pytest
import torch
from torch import nn, vmap

import pytest_modellens as lens


class Vmapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.vmap(lambda row: self.linear(row).sin())(x) + 1


class VmappedAhead(nn.Module):
    """Vmaps in ``__init__``, and with a ``vmap`` bound at import: both made before any trace."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.rows = vmap(lambda row: self.linear(row).sin())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows(x) + 1


class Conditional(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda t: t.cos(), lambda t: t.sin(), (x,)) * 2


class WritesThroughAView(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 1
        y[0].add_(1)  # a write of y, through the view y[0]
        y.view(-1)[:2].mul_(3)
        return y * 2


def test_vmap_is_one_operation_reading_its_inputs_and_read_by_what_follows() -> None:
    trace = lens.trace(Vmapped(), torch.randn(2, 3))
    assert [(n.node_id, n.inputs) for n in trace.op_nodes] == [("vmap", ("input:x",)), ("add", ("vmap",))]
    assert trace.node("vmap").outputs[0].shape == (2, 3)
    assert "const:" not in trace.dumps(), "nothing reads as a constant"
    assert torch.vmap.__name__ == "vmap" and torch.vmap is torch.func.vmap, "the patch is gone after"


def test_a_function_vmapped_before_the_trace_is_one_operation_too() -> None:
    model, x = VmappedAhead(), torch.randn(2, 3)
    trace = lens.trace(model, x)
    assert [(n.node_id, n.inputs) for n in trace.op_nodes] == [("vmap", ("input:x",)), ("add", ("vmap",))]
    assert "const:" not in trace.dumps(), "nothing reads as a constant"
    assert torch.equal(model(x), torch.vmap(lambda row: model.linear(row).sin())(x) + 1), "vmap as before"


def test_cond_is_the_if_it_stands_for_a_condition_then_the_branch_that_ran() -> None:
    positive = lens.trace(Conditional(), torch.ones(2, 3))
    negative = lens.trace(Conditional(), -torch.ones(2, 3))
    assert [n.op for n in positive.nodes if n.kind.in_forward] == ["sum", "gt", "bool", "cos", "mul"]
    assert [n.op for n in negative.nodes if n.kind.in_forward] == ["sum", "gt", "bool", "sin", "mul"]
    assert positive.conditional and positive.node("bool").args == (("result", True),)
    assert torch.cond(torch.tensor(True), torch.cos, torch.sin, (torch.zeros(1),)).item() == 1.0  # unpatched


def test_a_write_through_a_view_is_read_by_the_next_reader_of_the_base() -> None:
    trace = lens.trace(WritesThroughAView(), torch.randn(2, 3))
    assert trace.node("view").inputs == ("add_",), "y.view(-1) reads y as y[0].add_(1) left it"
    assert trace.node("mul:2").inputs == ("mul_",), "y * 2 reads y as the second write left it"


@pytest.mark.parametrize("model", [Vmapped(), Conditional(), WritesThroughAView()], ids=type)
def test_each_construct_gives_the_same_bytes_twice(model: nn.Module) -> None:
    x = torch.randn(2, 3)
    assert lens.trace(model, x).dumps() == lens.trace(model, x).dumps()
