"""Reading a comparison for a person: causes first, consequences counted, repeats grouped."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pytest_modellens as pm
from pytest_modellens import ids
from pytest_modellens.causes import explain
from pytest_modellens.differ import compare


@pytest.mark.parametrize(
    ("places", "together"),
    [
        ([f"blocks.{k}.norm" for k in range(4)], "blocks.{0..3}.norm"),
        (["transformer.h.0.mlp.act", "transformer.h.1.mlp.act"], "transformer.h.{0,1}.mlp.act"),
        (["a.0", "a.2", "a.3", "a.4", "a.5"], "a.{0,2..5}"),
        (["l.0.b.0", "l.0.b.1", "l.1.b.0", "l.1.b.1"], "l.{0,1}.b.{0,1}"),
        (["l.0.b.0", "l.1.b.1"], None),  # not every combination: no pattern says just these
        (["blocks.0.norm", "blocks.1.fc"], None),
        (["conv2d", "conv2d"], "conv2d"),  # a number inside a name is not a place's number
    ],
)
def test_places_that_differ_only_in_their_numbers_compress(places: list[str], together: str | None) -> None:
    assert ids.compress(places) == together


class Body(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_what_follows_from_a_wider_layer_is_counted_under_it() -> None:
    x = torch.randn(2, 16)
    findings = explain(compare(pm.trace(Body(32), x), pm.trace(Body(48), x)))
    first = findings.rows[0]
    assert (first.subject, first.detail, first.value) == ("body.0 (Linear)", "out_features", "32 -> 48")
    assert first.note == "2 shapes, 2 parameters follow"  # its linear and the relu; its weight and bias
    assert all("<root>" not in row.subject for row in findings.rows)
    assert findings.totals_line.startswith("totals: tensor_bytes ")


def test_ops_replaced_inside_a_module_read_as_one_row() -> None:
    transformers = pytest.importorskip("transformers")

    def gpt2(attention: str) -> pm.Trace:
        torch.manual_seed(0)
        config = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2,
                                          bos_token_id=99, eos_token_id=99, attn_implementation=attention)  # fmt: skip
        model = transformers.GPT2LMHeadModel(config).eval()
        return pm.trace(model, torch.tensor([[12, 7, 45, 3, 88, 21]]), use_cache=False)

    findings = explain(compare(gpt2("sdpa"), gpt2("eager")))
    assert len(findings.rows) <= 5  # of 49 changes
    (attention,) = [row for row in findings.rows if row.subject == "transformer.h.{0,1}.attn"]
    assert attention.sign == "~" and attention.detail == "ops"
    assert attention.value.startswith("scaled_dot_product_attention, ") and "softmax" in attention.value
    assert attention.note.startswith("3 ops -> 8 ops each")
