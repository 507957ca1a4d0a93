"""The tracer on the corners of PyTorch: what it records, what it names, what it puts back."""

from __future__ import annotations

import json
import types
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as module_globals
from unchanged import assert_unchanged, observe
from zoo import CASES

import pytest_modellens as lens
from pytest_modellens.errors import TraceError


def nodes_of(trace: lens.Trace) -> dict[str, dict[str, Any]]:
    return json.loads(trace.dumps())["nodes"]


def ops_of(trace: lens.Trace) -> list[str]:
    return [node.op for node in trace.op_nodes]


class Lambda(nn.Module):
    """A module whose forward is the function it is given (``fn(self, ...)``), signature and all."""

    def __init__(self, fn: Any, **children: nn.Module) -> None:
        super().__init__()
        self.forward = types.MethodType(fn, self)
        for name, child in children.items():
            self.add_module(name, child)


def _no_tracer_left() -> None:
    assert not module_globals._global_forward_pre_hooks
    assert not module_globals._global_forward_hooks
    assert not torch._C._is_torch_function_mode_enabled()
    assert torch.autograd.Function.apply.__func__.__qualname__ == "Function.apply"


# -- what is recorded --------------------------------------------------------------------


class Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: float) -> Tensor:
        return torch.from_numpy(x.numpy() * factor)  # numpy: nothing a TorchFunctionMode sees

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def test_a_custom_autograd_function_is_one_op_named_after_its_class() -> None:
    model = Lambda(lambda self, x: Scale.apply(self.fc(x), 3.0) + 1, fc=nn.Linear(2, 2))
    trace = lens.trace(model, torch.ones(1, 2))
    nodes = nodes_of(trace)
    # Its forward runs numpy, which no mode sees: the op is recorded from the outside.
    assert nodes["Scale"] == {"op": "Scale", "in": ["fc/linear"], "args": {"1": 3.0}, "out": "float32[1, 2]"}
    assert nodes["add"]["in"] == ["Scale"]
    _no_tracer_left()
    assert Scale.apply(torch.ones(1), 2.0).item() == 2.0  # apply works again outside the trace


def test_reentrant_checkpointing_stays_transparent() -> None:
    block = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    model = Lambda(
        lambda self, x: torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=True), block=block
    )
    with pytest.warns(UserWarning):  # torch's: no input requires grad under the tracer's no_grad
        trace = lens.trace(model, torch.ones(1, 2))
    assert ops_of(trace) == ["linear", "relu"]
    assert [node.node_id for node in trace.op_nodes] == ["block.0/linear", "block.1/relu"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script is deprecated, and still used
def test_a_torchscript_module_is_one_op_reading_its_parameters() -> None:
    scripted = torch.jit.script(nn.Sequential(nn.Linear(3, 3), nn.Tanh()))
    model = Lambda(lambda self, x: self.head(self.body(x)), body=scripted, head=nn.Linear(3, 1))
    assert lens.trace(model, torch.ones(2, 3)).inputs == {"x": "float32[2, 3]"}
    nodes = nodes_of(lens.trace(model, torch.ones(2, 3)))
    assert nodes["body/Sequential"]["in"] == ["input:x", "param:body.0.weight", "param:body.0.bias"]
    assert nodes["head/linear"]["in"][0] == "body/Sequential"
    # Its statistics are taken inside the forward: the tracer's own ops are not the model's.
    with_stats = lens.trace(model, torch.ones(2, 3), stats=True)
    assert list(nodes_of(with_stats)) == list(nodes)
    assert with_stats.node("body/Sequential").stats[0] is not None


def test_conditions_record_which_way_the_branch_went() -> None:
    def forward(self: nn.Module, x: Tensor) -> Tensor:
        if x.sum() > 0:
            x = x + 1
        if torch.equal(x, x * 2):
            x = x - 1
        return x

    nodes = nodes_of(lens.trace(Lambda(forward), torch.ones(2)))
    assert nodes["bool"] == {"kind": "condition", "op": "bool", "in": ["gt"], "args": {"result": True}}
    assert nodes["equal"] == {
        "kind": "condition",
        "op": "equal",
        "in": ["add", "mul"],
        "args": {"result": False},
    }
    assert "sub" not in nodes


def test_iterating_a_tensor_and_indexing_with_tensors_keep_the_data_flow() -> None:
    def forward(self: nn.Module, x: Tensor, index: Tensor) -> Tensor:
        total = x[index].sum()
        for row in x:
            total = total + row.sum()
        return total

    nodes = nodes_of(lens.trace(Lambda(forward), torch.ones(3, 2), torch.tensor([0, 2])))
    assert nodes["getitem"]["in"] == ["input:x", "input:index"]
    assert nodes["unbind"]["out"] == ["float32[2]"] * 3
    assert [nodes[f"sum:{k}"]["in"] for k in (2, 3, 4)] == [["unbind#0"], ["unbind#1"], ["unbind#2"]]
    assert not any(ref.startswith("const:") for node in nodes.values() for ref in node.get("in", []))


def test_arguments_are_device_free_and_deterministic() -> None:
    def forward(self: nn.Module, x: Tensor) -> Tensor:
        y = x.to("cpu") + torch.zeros(2, device="cpu") + torch.ones(2, device=x.device)
        return F.log_softmax(y * np.float32(0.5), dim=np.int64(0))

    text = lens.trace(Lambda(forward), torch.ones(2)).dumps()
    nodes = json.loads(text)["nodes"]
    assert "cpu" not in text
    assert nodes["to"]["args"] == {"1": "<device>"}
    assert nodes["zeros"]["args"] == {"0": 2, "device": "<device>"}
    assert nodes["mul"]["args"] == {"1": 0.5}  # a numpy scalar reads as its number
    assert nodes["log_softmax"]["args"] == {"dim": 0, "dtype": None}  # the private `_stacklevel` is left out


def test_float_arguments_are_rounded_and_keep_their_sign_every_time() -> None:
    def forward(self: nn.Module, x: Tensor) -> Tensor:
        return (x * -0.0 + x * 0.0) * (1 / 3) + x * (1 / 3) * float("inf")

    for _ in range(2):  # the second trace reads what the first one rounded
        text = lens.trace(Lambda(forward), torch.ones(2)).dumps()
        nodes = json.loads(text)["nodes"]
        assert '"args": {"1": -0.0}' in text and '"args": {"1": 0.0}' in text
        assert nodes["mul:3"]["args"] == nodes["mul:4"]["args"] == {"1": 0.33333333}
        assert nodes["mul:5"]["args"] == {"1": "inf"}


def test_the_same_model_on_the_meta_device_gives_the_same_snapshot() -> None:
    for name in (
        "functional_mlp",
        "in_place",
        "nested_io",
        "shared_weights",
        "loop_cell",
        "resnetish",
        "attention",
    ):
        model, args, kwargs = CASES[name].build()
        on_cpu = lens.trace(model, *args, **kwargs).dumps()
        with torch.device("meta"):
            model, args, kwargs = CASES[name].build()
        assert next(model.parameters()).is_meta
        assert lens.trace(model, *args, **kwargs).dumps() == on_cpu, name


# -- naming --------------------------------------------------------------------------------


def test_modules_outside_the_model_are_named_by_class_and_their_parameters_too() -> None:
    outside = [nn.Linear(2, 2), nn.Linear(2, 2)]

    class LinearBlock(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x * 2

    block = LinearBlock()
    model = Lambda(lambda self, x: block(outside[1](outside[0](x))))
    trace = lens.trace(model, torch.ones(1, 2))
    nodes = nodes_of(trace)
    assert list(nodes)[1:4] == ["<Linear>/linear", "<Linear#2>/linear", "<LinearBlock>/mul"]
    assert nodes["<Linear#2>/linear"]["in"] == [
        "<Linear>/linear",
        "param:<Linear#2>.weight",
        "param:<Linear#2>.bias",
    ]
    assert [p.name for p in trace.params] == [
        "<Linear>.weight",
        "<Linear>.bias",
        "<Linear#2>.weight",
        "<Linear#2>.bias",
    ]


def test_a_caught_exception_in_a_submodule_does_not_shift_later_scopes() -> None:
    class Fails(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            x = x + 1
            raise ValueError("no")

    def forward(self: nn.Module, x: Tensor) -> Tensor:
        try:
            self.fails(x)
        except ValueError:
            pass
        return self.after(x * 2)

    nodes = nodes_of(lens.trace(Lambda(forward, fails=Fails(), after=nn.Linear(2, 2)), torch.ones(2)))
    assert list(nodes)[1:] == ["fails/add", "mul", "after/linear", "output"]


def test_named_tuples_and_objects_holding_tensors_are_named_by_field() -> None:
    Pair = namedtuple("Pair", "value gate")

    class Memory:
        def __init__(self, keys: Tensor) -> None:
            self.keys = keys
            self.size = keys.shape[0]
            self._scratch = torch.zeros(1)

    def forward(self: nn.Module, x: Tensor, memory: Memory) -> Pair:
        memory.keys = torch.cat([memory.keys, x])
        return Pair(memory.keys.sum(0), memory)

    trace = lens.trace(Lambda(forward), torch.ones(1, 2), Memory(torch.zeros(3, 2)))
    assert trace.inputs == {"x": "float32[1, 2]", "memory": {"keys": "float32[3, 2]"}}
    assert trace.outputs == {"value": "float32[2]", "gate": {"keys": "float32[4, 2]"}}
    nodes = nodes_of(trace)
    assert nodes["cat"]["in"] == ["input:memory.keys", "input:x"]
    assert nodes["output:gate.keys"]["in"] == ["cat"]


# -- what is put back ----------------------------------------------------------------------


def test_inputs_written_in_place_are_put_back_after_their_statistics_are_taken() -> None:
    x = torch.tensor([-1.0, 2.0])
    trace = lens.trace(Lambda(lambda self, x: x[1:].mul_(3) + x.relu_()), x, stats=True)
    assert x.tolist() == [-1.0, 2.0]
    assert (trace.node("output").stats[0].min, trace.node("output").stats[0].max) == (
        6.0,
        12.0,
    )  # as left by forward


@pytest.mark.filterwarnings("ignore::pytest_modellens.ModelStateWarning")
def test_parameters_written_in_place_are_put_back() -> None:
    def forward(self: nn.Module, x: Tensor) -> Tensor:
        self.fc.weight.mul_(0)
        self.fc.bias[0] = 5.0
        self.fc.bias[1:].add_(1.0)  # through a view
        return self.fc(x)

    model = Lambda(forward, fc=nn.Linear(2, 2))
    before = observe(model)
    lens.trace(model, torch.ones(2))
    assert_unchanged(before, observe(model))


def test_a_forward_that_raises_leaves_no_tracer_behind() -> None:
    def forward(self: nn.Module, x: Tensor) -> Tensor:
        self.bn(x)
        Scale.apply(x, 2.0)
        raise RuntimeError("broken")

    model = Lambda(forward, bn=nn.BatchNorm1d(2))
    x = torch.randn(3, 2)
    before = observe(model, x)
    with pytest.raises(TraceError, match=r"raised RuntimeError: broken \(last operation traced: Scale\)"):
        lens.trace(model, x)
    _no_tracer_left()
    assert_unchanged(before, observe(model, x))


def test_lazy_modules_are_made_outside_the_trace_and_keep_their_initial_weights() -> None:
    x = torch.randn(4, 2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyLinear(3), nn.LazyBatchNorm1d())
    first = lens.trace(model, x)
    assert ops_of(first) == ["linear", "add_", "batch_norm"]  # no fill_/empty from making the weights
    assert lens.trace(model, x).dumps() == first.dumps()
    torch.manual_seed(0)
    reference = nn.Sequential(nn.LazyLinear(3), nn.LazyBatchNorm1d())
    reference(x)
    assert torch.equal(model[0].weight, reference[0].weight)
    assert torch.equal(model[1].running_mean, torch.zeros(3))  # the batch's statistics were put back


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised by torch's own imports
def test_a_compiled_model_traces_as_the_eager_one() -> None:
    model, args, kwargs = CASES["resnetish"].build()
    eager = lens.trace(model, *args, **kwargs).dumps()
    assert lens.trace(torch.compile(model, backend="eager"), *args, **kwargs).dumps() == eager


# -- tensor layouts ------------------------------------------------------------------------

#: Each layout a tensor of float32[2, 2] can have, made from a dense one.
LAID_OUT = {
    "strided": lambda x: x,
    "sparse_coo": Tensor.to_sparse,
    "sparse_csr": Tensor.to_sparse_csr,
    "sparse_csc": Tensor.to_sparse_csc,
    "sparse_bsr": lambda x: x.to_sparse_bsr((1, 1)),
    "sparse_bsc": lambda x: x.to_sparse_bsc((1, 1)),
    "mkldnn": Tensor.to_mkldnn,
}


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_each_layout_is_written_in_the_spec_and_a_dense_tensor_as_before() -> None:
    texts = {}
    for layout, make in LAID_OUT.items():
        text = lens.trace(Lambda(lambda self, x: x * 2), make(torch.tensor([[0.0, 1.5], [2.0, 0.0]]))).dumps()
        spec = "float32[2, 2]" if layout == "strided" else f"float32[2, 2] {layout}"
        assert json.loads(text)["summary"]["inputs"] == {"x": spec}
        assert nodes_of(lens.loads(text))["mul"]["out"] == spec
        assert lens.loads(text).dumps() == text
        texts[layout] = text
    assert len(set(texts.values())) == len(LAID_OUT), "two layouts gave one snapshot"


def test_an_op_that_makes_a_sparse_tensor_writes_its_layout() -> None:
    nodes = nodes_of(lens.trace(Lambda(lambda self, x: x.to_sparse().coalesce()), torch.eye(3)))
    assert nodes["to_sparse"]["out"] == nodes["output"]["out"] == "float32[3, 3] sparse_coo"
    assert nodes["to_sparse"]["in"] == ["input:x"]


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_a_quantized_tensor_is_written_by_its_quantized_dtype() -> None:
    x = torch.quantize_per_tensor(torch.tensor([0.5, -1.0]), 0.1, 0, torch.qint8)
    text = lens.trace(nn.Identity(), x).dumps()
    assert json.loads(text)["summary"]["inputs"] == {"input": "qint8[2]"}
    assert lens.loads(text).dumps() == text


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize(("layout", "name"), [(torch.strided, "nested"), (torch.jagged, "jagged")])
def test_a_nested_tensor_is_written_with_its_ragged_dims_the_same_every_time(
    layout: torch.layout, name: str
) -> None:
    def nested() -> Tensor:
        return torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(4, 3)], layout=layout)

    texts = {lens.trace(Lambda(lambda self, x: x * 2), nested()).dumps() for _ in range(2)}
    assert len(texts) == 1, "a nested tensor's spec changed between traces"
    text = texts.pop()
    assert json.loads(text)["summary"]["inputs"] == {"x": f"float32[2, *, 3] {name}"}
    assert nodes_of(lens.loads(text))["mul"]["out"] == f"float32[2, *, 3] {name}"
    assert lens.loads(text).dumps() == text


def test_every_layout_of_this_torch_has_a_name_in_the_spec() -> None:
    from pytest_modellens.tracer.describe import _LAYOUTS

    layouts = {value for value in vars(torch).values() if isinstance(value, torch.layout)}
    assert layouts - {torch.strided} == set(_LAYOUTS), "a layout this torch has is not named"
