"""The library surface: trace(), the printed log, and what a trace leaves behind."""

from __future__ import annotations

import pytest
import torch
from reference import NeuralNetwork, X
from torch import nn
from unchanged import assert_unchanged, observe

import pytest_modellens as lens


def test_the_reference_log_reads_like_torchlens() -> None:
    log = str(lens.trace(NeuralNetwork(), X))
    assert log.startswith("Log of NeuralNetwork forward pass:")
    for expected in (
        "purely feedforward, no recurrence",
        "no branching",
        "no conditional (if-then) branching",
        "3 total modules",
        "6 total tensors",
        "2 parameter operations (17 params total",
    ):
        assert expected in log
    hierarchy = log.split("Module Hierarchy:\n")[1].split("\tLayers:")[0].split()
    assert hierarchy == ["input_to_hidden", "sigmoid:1", "hidden_to_output", "sigmoid:2"]
    layers = [line.split()[1:3] for line in log.split("Layers:\n")[1].splitlines()]
    assert layers == [
        ["input_1", "[4,"], ["linear_1_1", "[4,"], ["sigmoid_1_2", "[4,"],
        ["linear_2_3", "[4,"], ["sigmoid_2_4", "[4,"], ["output_1", "[4,"],
    ]  # fmt: skip
    shapes = [line.split("]")[0].split("[")[1] for line in log.split("Layers:\n")[1].splitlines()]
    assert shapes == ["4, 2", "4, 4", "4, 4", "4, 1", "4, 1", "4, 1"]


def test_node_ids_come_from_where_each_op_runs() -> None:
    ids = [node.node_id for node in lens.trace(NeuralNetwork(), X).nodes]
    assert ids == [
        "input:x",
        "input_to_hidden/linear",
        "sigmoid/sigmoid",
        "hidden_to_output/linear",
        "sigmoid:2/sigmoid",
        "output",
    ]


class Exploding(nn.Module):
    """Updates BatchNorm statistics, draws random numbers, flips a flag, then raises."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(2)
        self.linear = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x) + torch.randn_like(x)
        self.linear.weight.add_(1.0)
        self.linear.eval()
        raise RuntimeError("boom in forward")


def test_a_forward_that_raises_leaves_no_mode_no_hook_and_an_unchanged_model() -> None:
    model = Exploding().train()
    before = observe(model, X)

    with pytest.raises(lens.TraceError, match=r"Exploding raised RuntimeError: boom in forward .*unchanged"):
        lens.trace(model, X)

    assert_unchanged(before, observe(model, X))
    assert model.training and model.linear.training


def test_a_successful_trace_also_leaves_the_model_as_it_was() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Dropout(0.5)).train()
    before = observe(model, X)
    lens.trace(model, X)
    assert_unchanged(before, observe(model, X))


def test_a_non_module_is_refused_with_what_to_do() -> None:
    with pytest.raises(
        lens.TraceError, match=r"needs a torch.nn.Module .*got 'builtin_function_or_method'.*wrap"
    ):
        lens.trace(torch.relu, X)


def test_bad_tolerances_are_refused() -> None:
    with pytest.raises(ValueError, match=r"'rtol' must be a non-negative number \(got -1"):
        lens.trace(NeuralNetwork(), X, rtol=-1)


def test_every_dtype_of_torch_counts_its_bytes() -> None:
    from pytest_modellens.trace import DTYPE_SIZES

    dtypes = {value for value in vars(torch).values() if isinstance(value, torch.dtype)}
    sizes = {str(dtype).removeprefix("torch."): dtype.itemsize for dtype in dtypes}
    assert {name: DTYPE_SIZES.get(name) for name in sizes} == sizes
    assert lens.TensorSpec("float8_e8m0fnu", (4, 2)).nbytes == 8


def test_asking_a_trace_for_a_node_it_lacks_names_the_nearest() -> None:
    trace = lens.trace(NeuralNetwork(), X)
    with pytest.raises(
        lens.NodeNotFoundError, match=r"no node 'input_to_hiden/linear'.*'input_to_hidden/linear'"
    ):
        trace.node("input_to_hiden/linear")
    assert trace.node("input_to_hidden/linear").op == "linear"
