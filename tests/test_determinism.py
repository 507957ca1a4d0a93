"""The same model gives the same snapshot bytes, whatever the process or hash seed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from torch import nn

import pytest_modellens as lens

DUMP_SCRIPT = textwrap.dedent(
    f"""
    import sys
    import torch
    import pytest_modellens as lens

    sys.path.insert(0, {str(Path(__file__).parent)!r})
    from reference import X, NeuralNetwork

    torch.manual_seed(0)
    net = NeuralNetwork()
    sys.stdout.write(lens.trace(net, X).dumps() + lens.trace(net, X, stats=True).dumps())
    """
)


def test_snapshot_bytes_are_identical_across_processes_and_hash_seeds() -> None:
    outputs = [
        subprocess.run(
            [sys.executable, "-c", DUMP_SCRIPT],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
            timeout=300,
        ).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1]
    assert '"stats": {' in outputs[0], "the statistics are part of what must not vary"


def test_dump_load_dump_gives_the_same_bytes() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)
    )
    x = torch.randn(2, 3, 8, 8)
    for stats in (False, True):
        text = lens.trace(net, x, stats=stats).dumps()
        assert lens.loads(text).dumps() == text
        assert lens.loads(text) == lens.trace(net, x, stats=stats)
    assert lens.loads(text) != lens.trace(net, x * 2, stats=True), "statistics take part in the comparison"


def test_inserting_one_op_between_blocks_changes_a_handful_of_lines() -> None:
    class Deep(nn.Module):
        def __init__(self, *, extra_relu: bool) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(12))
            self.extra_relu = extra_relu

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for index, block in enumerate(self.blocks):
                x = block(x)
                if index == 5 and self.extra_relu:
                    x = torch.relu(x)
            return x

    x = torch.randn(2, 8)
    before = lens.trace(Deep(extra_relu=False), x).dumps().splitlines()
    after = lens.trace(Deep(extra_relu=True), x).dumps().splitlines()

    removed = [line for line in before if line not in after]
    added = [line for line in after if line not in before]

    def node_id(line: str) -> str:
        return line.split('"')[1]

    assert [node_id(line) for line in added if '"op": ' in line] == ["relu", "blocks.6.0/linear"]
    assert [node_id(line) for line in removed if '"op": ' in line] == ["blocks.6.0/linear"]
    assert '"in": ["blocks.5.1/tanh"]' in added[[node_id(line) for line in added].index("relu")]
    # Beyond those node lines only summary totals move (ops, tensors, bytes): a handful in all.
    assert {node_id(line) for line in added if '"op": ' not in line} <= {"ops", "tensors", "tensor_bytes"}
    assert len(added) + len(removed) <= 10
