"""Models built on the meta device trace for structure, with no weights allocated."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import pytest_modellens as lens

Built = tuple[nn.Module, tuple[Any, ...]]


def gpt2_tiny(device: str, **sizes: int) -> Built:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(**{"n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 32, **sizes})
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.GPT2LMHeadModel(config).eval()
        ids = torch.zeros(1, 16, dtype=torch.long)
    return model, (ids,)


def transformer_encoder(device: str) -> Built:
    torch.manual_seed(0)
    with torch.device(device):
        layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
        model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
        return model, (torch.zeros(1, 8, 32),)


BUILDERS: dict[str, Callable[[str], Built]] = {
    "gpt2-tiny": gpt2_tiny,
    "transformer-encoder": transformer_encoder,
}


@pytest.mark.parametrize("name", BUILDERS)
def test_meta_snapshot_equals_the_cpu_snapshot(name: str) -> None:
    on_cpu = lens.trace(*_call(BUILDERS[name]("cpu")))
    model, args = BUILDERS[name]("meta")

    on_meta = lens.trace(model, *args)

    assert on_meta.dumps() == on_cpu.dumps()
    assert len(on_meta.op_nodes) > 10, "the trace holds the model's operations, not an empty graph"


@pytest.mark.parametrize("name", BUILDERS)
def test_meta_trace_leaves_every_parameter_and_buffer_without_storage(name: str) -> None:
    model, args = BUILDERS[name]("meta")

    trace = lens.trace(model, *args)

    tensors = [*model.parameters(), *model.buffers()]
    assert tensors and all(t.is_meta and t.untyped_storage().device.type == "meta" for t in tensors)
    assert trace.param_count == sum(p.numel() for p in model.parameters())


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux peak-RSS accounting")
def test_building_and_tracing_a_big_model_on_meta_allocates_no_weights() -> None:
    gpt2_tiny("meta")  # imports transformers' GPT-2 code before the measurement
    gc.collect()
    before = _resident_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the present size

    # 12 blocks 1024 wide: about 200M parameters, 0.8 GB of float32 weights on a real device.
    model, args = gpt2_tiny("meta", n_layer=12, n_embd=1024, n_head=16)
    trace = lens.trace(model, *args)
    trace.dumps()

    grown_mib = (_resident_kib("VmHWM") - before) / 1024
    assert trace.param_bytes > 700 * 2**20
    assert grown_mib < 150, (
        f"building and tracing on meta grew the process by {grown_mib:.0f} MiB at its peak"
    )


def test_statistics_on_meta_are_refused_with_a_clear_message() -> None:
    model, args = transformer_encoder("meta")

    with pytest.raises(lens.TraceError) as raised:
        lens.trace(model, *args, stats=True)

    message = str(raised.value)
    assert "TransformerEncoder" in message
    assert "meta device" in message
    assert "without stats=True" in message


def _call(built: Built) -> tuple[Any, ...]:
    model, args = built
    return (model, *args)


def _resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status on {sys.platform}")


class ReadsValues(nn.Module):
    def __init__(self, op: str) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if self.op == "item":
            return y * y.sum().item()
        return y[torch.nonzero(y > 0)[:, 0]]


@pytest.mark.parametrize("op", ["item", "nonzero"])
def test_a_forward_that_needs_values_on_meta_fails_naming_the_op(op: str) -> None:
    with torch.device("meta"):
        model, x = ReadsValues(op), torch.zeros(2, 4)

    with pytest.raises(lens.TraceError) as raised:
        lens.trace(model, x)

    message = str(raised.value)
    assert f"in the operation {op!r} of <root>" in message
    assert "tracing on meta needs a data-independent forward" in message
    assert "trace this model on a real device" in message
