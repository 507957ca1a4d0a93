"""The torchinfo-style table and the FLOP count: their totals against the tools they stand in for.

torchinfo's totals are compared where torchinfo is installed (the ``test`` extra pins 1.8.0);
FLOPs against ``torch.utils.flop_counter.FlopCounterMode`` run around the same forward.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import pytest_modellens as lens
from pytest_modellens.__main__ import main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import models as examples

IDS = torch.tensor([[12, 7, 45, 3, 88, 21]])


def _gpt2(**config: Any) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    settings = {"vocab_size": 100, "n_positions": 32, "n_embd": 32, "n_layer": 2, "n_head": 2} | config
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**settings)).eval()


#: name -> (model, positional inputs, keyword inputs)
MODELS: dict[str, Any] = {
    "reference_mlp": lambda: (examples.NeuralNetwork(), (examples.XOR_INPUTS,), {}),
    "alexnet": lambda: (examples.AlexNet().eval(), (torch.randn(2, 3, 32, 32),), {}),
    "resnet": lambda: (examples.ResNet().eval(), (torch.randn(2, 3, 16, 16),), {}),
    "transformer_encoder": lambda: (
        examples.TransformerClassifier().eval(),
        (torch.tensor([[5, 17, 42, 8, 0, 0], [3, 9, 27, 61, 12, 4]]),),
        {},
    ),
    "lstm_loop": lambda: (examples.LSTMLoop(), (torch.randn(2, 4),), {"steps": 5}),
    "tiny_gpt2_untied": lambda: (_gpt2(tie_word_embeddings=False), (IDS,), {"use_cache": False}),
}


def _totals(table: str) -> dict[str, int]:
    found = re.findall(
        r"^(Total params|Trainable params|Non-trainable params): ([\d,]+)$", table, re.MULTILINE
    )
    return {name: int(value.replace(",", "")) for name, value in found}


@pytest.mark.parametrize("name", MODELS)
def test_the_totals_are_torchinfos(name: str) -> None:
    torchinfo = pytest.importorskip("torchinfo")
    model, args, kwargs = MODELS[name]()
    model.requires_grad_(True)
    next(model.parameters()).requires_grad_(False)  # one frozen tensor, so the split is tested too
    info = torchinfo.summary(model, input_data=list(args), verbose=0, **kwargs)
    totals = _totals(lens.trace(model, *args, **kwargs).table())
    assert totals == {
        "Total params": info.total_params,
        "Trainable params": info.trainable_params,
        "Non-trainable params": info.total_params - info.trainable_params,
    }


def test_tied_embeddings_are_counted_once_where_torchinfo_counts_them_twice() -> None:
    torchinfo = pytest.importorskip("torchinfo")
    model = _gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    totals = _totals(lens.trace(model, IDS, use_cache=False).table())
    assert totals["Total params"] == sum(
        p.numel() for p in model.parameters()
    )  # torch's own count, once each
    # torchinfo 1.8 adds the tied matrix again under lm_head: the same total less that.
    info = torchinfo.summary(model, input_data=[IDS], verbose=0, use_cache=False)
    assert totals["Total params"] == info.total_params - model.lm_head.weight.numel()


def test_the_table_lists_modules_down_to_a_level_with_shapes_and_trainable_counts() -> None:
    torch.manual_seed(0)
    net = examples.ResNet().eval()
    net.layer1.requires_grad_(False)
    table = lens.trace(net, torch.randn(2, 3, 16, 16)).table(depth=2)
    rows = table.splitlines()
    assert rows[3].split() == ["ResNet", "[2,", "10]", "11,122", "8,754"]
    assert "  layer1: Sequential       [2, 8, 16, 16]   2,368          0" in rows
    assert not [row for row in rows if "layer1.0" in row]  # level 3
    assert "Non-trainable params: 2,368" in rows
    assert "Parameter bytes: 44,488 (43.4 KB)" in rows
    assert lens.trace(net, torch.randn(2, 3, 16, 16)).table().count("layer1.0.conv1: Conv2d") == 1
    with pytest.raises(ValueError, match="'depth' must be an int of at least 1"):
        lens.trace(net, torch.randn(2, 3, 16, 16)).table(depth=0)


def test_show_table_prints_it_from_a_snapshot_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "net.lens.json"
    path.write_text(lens.trace(examples.ResNet().eval(), torch.randn(2, 3, 16, 16), flops=True).dumps())
    assert main(["show", str(path), "--table", "--table-depth", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == [
        "Module",
        "(class)",
        "Output",
        "shape",
        "Params",
        "Trainable",
        "FLOPs",
    ]
    assert "  fc: Linear" in out and "layer1.0" not in out
    assert re.search(r"^Total FLOPs: [\d,]+$", out, re.MULTILINE)


# -- FLOPs -----------------------------------------------------------------------------


def _counted(model: nn.Module, *args: Any, **kwargs: Any) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*args, **kwargs)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ["resnet", "tiny_gpt2"])
def test_flops_add_up_to_flop_counter_modes_total(name: str) -> None:
    if name == "resnet":
        model, args, kwargs = examples.ResNet().eval(), (torch.randn(2, 3, 16, 16),), {}
    else:
        model, args, kwargs = _gpt2(), (IDS,), {"use_cache": False}
    trace = lens.trace(model, *args, flops=True, **kwargs)
    expected = _counted(model, *args, **kwargs)
    assert expected > 0
    assert trace.flops == sum(node.flops or 0 for node in trace.nodes) == expected
    root = trace.modules[0]
    assert root.path == "" and root.flops == expected
    summary = lens.loads(trace.dumps())
    assert summary.flops == expected  # stored, and read back exactly


def test_a_layer_doing_twice_the_work_fails_naming_it() -> None:
    class Net(nn.Module):
        def __init__(self, groups: int) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.body = nn.Conv2d(4, 4, 3, padding=1, groups=groups)  # same shapes, 1/groups the work

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(self.stem(x))

    x = torch.randn(1, 3, 8, 8)
    before = lens.trace(Net(2), x, flops=True, depth=2)
    assert before == lens.trace(Net(2), x, flops=True, depth=2)
    work = before.node("body/Conv2d").flops
    lines = [
        " ".join(str(change).split())
        for change in lens.diff(before, lens.trace(Net(1), x, flops=True, depth=2))
    ]
    assert f"~ body/Conv2d flops {work} -> {2 * work}" in lines
    assert f"~ body flops {work} -> {2 * work}" in lines
    assert not [line for line in lines if "stem" in line]


def test_without_flops_nothing_about_them_is_written() -> None:
    text = lens.trace(examples.NeuralNetwork(), examples.XOR_INPUTS).dumps()
    assert "flops" not in text
