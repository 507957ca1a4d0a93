"""Depth and leaf modules: whole module calls as one node each, wired as the ops inside were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import pytest_modellens as lens
from pytest_modellens import NodeKind, TraceError


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.head(h) + h.sum(dim=1, keepdim=True)


class Loop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.GRUCell(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros_like(x)
        for _ in range(3):
            h = self.cell(x, h)
        return h


X = torch.ones(2, 3)


def _nodes(trace: lens.Trace) -> dict[str, dict]:
    return json.loads(trace.dumps())["nodes"]


def test_depth_two_makes_each_call_of_the_forward_one_node_wired_as_before() -> None:
    torch.manual_seed(0)
    trace = lens.trace(Net(), X, depth=2)
    nodes = _nodes(trace)
    assert list(nodes) == ["input:x", "body/Sequential", "head/Linear", "sum", "add", "output"]
    assert nodes["body/Sequential"] == {
        "kind": "module",
        "op": "Sequential",
        "in": ["input:x"],
        "out": "float32[2, 4]",
    }
    # the module's own parameters are in its module entry, not its inputs
    assert nodes["head/Linear"]["in"] == ["body/Sequential"]
    assert nodes["add"]["in"] == ["head/Linear", "sum"]
    data = json.loads(trace.dumps())
    assert list(data["modules"]) == ["", "body", "head"]  # what is inside a node is not listed
    assert data["modules"]["body"] == {"class": "Sequential", "params": 16, "trainable": 16, "calls": 1}
    assert len(data["params"]) == 4  # every tensor stays, as in the state dict


def test_deeper_levels_show_more_and_the_model_itself_is_level_one() -> None:
    three = _nodes(lens.trace(Net(), X, depth=3))
    assert ["body.0/Linear", "body.1/ReLU", "head/linear"] == [k for k in three if "/" in k]
    assert list(_nodes(lens.trace(Net(), X, depth=1))) == ["input:x", "Net", "output"]
    assert list(_nodes(lens.trace(Net(), X, depth=9))) == list(_nodes(lens.trace(Net(), X)))


def test_a_module_called_in_a_loop_is_one_node_per_call_and_still_recurrent() -> None:
    trace = lens.trace(Loop(), X, depth=2)
    nodes = _nodes(trace)
    assert [k for k in nodes if nodes[k].get("kind") == "module"] == [
        "cell/GRUCell",
        "cell:2/GRUCell",
        "cell:3/GRUCell",
    ]
    assert nodes["cell:2/GRUCell"]["in"] == ["input:x", "cell/GRUCell"]
    summary = json.loads(trace.dumps())["summary"]
    assert (summary["recurrent"], summary["passes"]) == (True, 3)


def test_leaf_modules_by_class_or_path_pattern_whatever_the_depth() -> None:
    by_class = _nodes(lens.trace(Net(), X, leaf_modules=[nn.ReLU]))
    assert "body.1/ReLU" in by_class and "body.0/linear" in by_class
    by_path = _nodes(lens.trace(Net(), X, leaf_modules=["body.*"]))
    assert {"body.0/Linear", "body.1/ReLU"} <= set(by_path)
    # the outer of two that qualify wins
    assert "body/Sequential" in _nodes(lens.trace(Net(), X, leaf_modules=[nn.Sequential, nn.ReLU]))


def test_statistics_and_flops_of_a_collapsed_call_are_those_of_its_outputs_and_ops() -> None:
    torch.manual_seed(0)
    net = Net()
    ops = lens.trace(net, X, stats=True, flops=True)
    collapsed = lens.trace(net, X, stats=True, flops=True, depth=2)
    assert collapsed.node("body/Sequential").stats == ops.node("body.1/relu").stats
    assert collapsed.node("body/Sequential").flops == ops.node("body.0/linear").flops > 0
    assert collapsed.flops == ops.flops


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"depth": 0}, "'depth' must be an int of at least 1 or None (got 0"),
        ({"depth": True}, "'depth' must be an int of at least 1 or None (got True"),
        ({"leaf_modules": ["encoder.*"]}, "the path pattern 'encoder.*' matches no module of Net"),
        ({"leaf_modules": [nn.LSTM]}, "the class 'LSTM' matches no module of Net"),
        ({"leaf_modules": [3]}, "leaf_modules takes nn.Module classes and path patterns (got 3"),
    ],
)
def test_bad_levels_are_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(TraceError) as raised:
        lens.trace(Net(), X, **options)
    assert message in str(raised.value)


def test_a_collapsed_snapshot_reads_back_as_it_was_written() -> None:
    trace = lens.trace(Loop(), X, depth=2, flops=True)
    again = lens.loads(trace.dumps())
    assert again.dumps() == trace.dumps()
    assert again.node("cell:3/GRUCell").kind is NodeKind.MODULE


def test_a_collapsed_call_is_drawn_as_one_box(tmp_path: Path) -> None:
    written = lens.trace(Net(), X, depth=2).render(str(tmp_path / "net.gv"))
    dot = Path(written).read_text()
    assert "body/Sequential" in dot and "body.0" not in dot
