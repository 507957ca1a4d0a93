"""Hugging Face models, built from tiny configs (no downloads): they trace, whole and the same every time.

Runs when ``transformers`` is installed. Each model has 2 layers and a hidden size of 32.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
from unchanged import assert_unchanged, observe

import pytest_modellens as lens

transformers = pytest.importorskip("transformers")

VOCAB = 96


def _gpt2() -> Any:
    return transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    )


def _bert() -> Any:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=3,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config)


def _t5() -> Any:
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, decoder_start_token_id=0
    )
    return transformers.T5ForConditionalGeneration(config)


def _vit() -> Any:
    config = transformers.ViTConfig(
        image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config)


def _llama() -> Any:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


def _text_inputs() -> dict[str, Any]:
    input_ids = torch.randint(0, VOCAB, (2, 6))
    attention_mask = torch.ones(2, 6, dtype=torch.long)
    attention_mask[1, 4:] = 0  # the second sequence is padded
    return {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}


# name -> (model factory, inputs factory, output keys, an op every such model runs)
MODELS: dict[str, tuple[Callable[[], Any], Callable[[], dict[str, Any]], set[str], str]] = {
    "gpt2": (_gpt2, _text_inputs, {"logits"}, "addmm"),  # GPT-2's Conv1D
    "bert": (_bert, _text_inputs, {"logits"}, "layer_norm"),
    "t5": (
        _t5,
        lambda: {**_text_inputs(), "decoder_input_ids": torch.randint(0, VOCAB, (2, 3))},
        {"logits", "encoder_last_hidden_state"},
        "embedding",
    ),
    "vit": (_vit, lambda: {"pixel_values": torch.randn(2, 3, 16, 16)}, {"logits"}, "conv2d"),
    "llama": (_llama, _text_inputs, {"logits"}, "silu"),
}


def _build(name: str) -> tuple[Any, dict[str, Any]]:
    make_model, make_inputs, _, _ = MODELS[name]
    torch.manual_seed(0)
    return make_model().eval(), make_inputs()


def _cache_argument(model: Any) -> str:
    """The name the installed transformers gives the cache argument (``past_key_values``, later ``cache``)."""
    parameters = inspect.signature(model.forward).parameters
    return "past_key_values" if "past_key_values" in parameters else "cache"


@pytest.mark.parametrize("name", MODELS)
def test_traces_every_op_the_same_way_twice_and_leaves_the_model_as_it_was(name: str) -> None:
    model, inputs = _build(name)
    _, _, output_keys, expected_op = MODELS[name]
    before = observe(model, inputs)

    first = lens.trace(model, **inputs)
    again = lens.trace(model, **inputs)

    assert first.dumps() == again.dumps()
    assert output_keys <= set(first.outputs), first.outputs  # the ModelOutput, by field
    assert expected_op in {node.op for node in first.op_nodes}
    nodes = json.loads(first.dumps())["nodes"]
    assert not [ref for node in nodes.values() for ref in node.get("in", []) if ref.startswith("const:")]
    assert {f"input:{key}" for key, value in inputs.items() if isinstance(value, torch.Tensor)} <= set(nodes)
    assert_unchanged(before, observe(model, inputs))


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_the_attention_mask_is_read_by_the_graph(name: str) -> None:
    model, inputs = _build(name)
    trace = lens.trace(model, **inputs)
    readers = [node for node in trace.nodes if "input:attention_mask" in node.inputs]
    assert readers, "no operation reads the attention mask"


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_cache_passed_in_is_traced_as_inputs_and_returned_grown(name: str) -> None:
    model, inputs = _build(name)
    cache_argument = _cache_argument(model)
    with torch.no_grad():
        cache = model(**{**inputs, "use_cache": True})[cache_argument]
    step = {
        "input_ids": torch.randint(0, VOCAB, (2, 1)),
        "attention_mask": torch.cat([inputs["attention_mask"], torch.ones(2, 1, dtype=torch.long)], dim=1),
    }
    trace = lens.trace(model, **step, use_cache=True, **{cache_argument: cache})
    cache_inputs = [node for node in trace.nodes if node.node_id.startswith(f"input:{cache_argument}.")]
    assert len(cache_inputs) == 2 * 2  # keys and values of 2 layers
    assert all(node.outputs[0].shape[-2] == 6 for node in cache_inputs)
    read = {ref for node in trace.op_nodes for ref in node.inputs}
    assert {node.node_id for node in cache_inputs} <= read
    nodes = json.loads(trace.dumps())["nodes"]
    assert not [ref for node in nodes.values() for ref in node.get("in", []) if ref.startswith("const:")]
    cache_outputs = [
        node for node in trace.nodes if node.kind.value == "output" and len(node.outputs[0].shape) == 4
    ]
    assert len(cache_outputs) == 4 and all(node.outputs[0].shape[-2] == 7 for node in cache_outputs)


def test_gpt2_traces_on_the_meta_device_as_on_the_cpu() -> None:
    """README's recipe for big models. (Without a cache, transformers branches on the position ids'
    values to find packed sequences, which a meta tensor cannot answer.)"""
    torch.manual_seed(0)
    model = _gpt2().eval()
    ids = torch.randint(0, VOCAB, (1, 8))
    on_cpu = lens.trace(model, ids).dumps()
    with torch.device("meta"):
        meta_model = _gpt2().eval()
    assert lens.trace(meta_model, ids.to("meta")).dumps() == on_cpu
