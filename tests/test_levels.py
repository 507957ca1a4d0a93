"""Snapshots at a level, end to end: tiny GPT-2 at depth 2, leaf modules, frozen layers, the options.

Each test is a real pytest session in a temporary directory (pytester); the model changes
between runs through environment variables, as a model under review would.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

try:
    # Imported once, before any inner run: pytester forgets the modules a run imports, and
    # the distributed ops transformers pulls in cannot be registered twice in one process.
    from transformers.models.gpt2 import modeling_gpt2
except ImportError:
    modeling_gpt2 = None

GPT2_TEST = textwrap.dedent(
    """
    import os

    import torch
    import transformers
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention


    def gpt2():
        config = transformers.GPT2Config(
            vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2,
            n_inner=int(os.environ.get("LENS_INNER", "128")),
            attn_implementation=os.environ.get("LENS_ATTN", "eager"),
        )
        return transformers.GPT2LMHeadModel(config).eval()


    IDS = torch.tensor([[12, 7, 45, 3, 88, 21]])


    def test_tiny_gpt2(model_trace, snapshot):
        assert model_trace(gpt2(), IDS, use_cache=False, depth=2) == snapshot


    def test_attention_as_a_black_box(model_trace, snapshot):
        assert model_trace(gpt2(), IDS, use_cache=False, leaf_modules=[GPT2Attention]) == snapshot
    """
)
SNAPSHOTS = Path("__snapshots__/test_gpt2")


@pytest.fixture
def gpt2_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    if modeling_gpt2 is None:
        pytest.skip("transformers is not installed")
    pytester.makepyfile(test_gpt2=GPT2_TEST)
    return pytester


def _nodes(path: Path) -> dict[str, dict]:
    return json.loads(path.read_text())["nodes"]


def test_gpt2_at_depth_two_keeps_what_the_model_owns(
    gpt2_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    import transformers

    import pytest_modellens as lens

    assert gpt2_suite.runpytest("--lens-update").ret == 0
    snapshot = gpt2_suite.path / SNAPSHOTS / "test_tiny_gpt2.lens.json"
    written = snapshot.read_bytes()
    config = transformers.GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    op_level = lens.trace(
        transformers.GPT2LMHeadModel(config).eval(), torch.tensor([[1, 2]]), use_cache=False
    )
    assert 5 * len(_nodes(snapshot)) <= len(op_level.nodes)

    # How attention is computed is the library's business: switching it changes nothing.
    monkeypatch.setenv("LENS_ATTN", "sdpa")
    result = gpt2_suite.runpytest("-k", "tiny")
    assert result.ret == 0, result.stdout.str()

    # A wider MLP is the model's own business: the run fails and names the module.
    monkeypatch.setenv("LENS_INNER", "256")
    result = gpt2_suite.runpytest("-k", "tiny")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*model snapshot test_tiny_gpt2 changed*", "*transformer.h.{0,1}.mlp.c_fc*-> *"]
    )
    assert snapshot.read_bytes() == written


def test_leaf_attention_is_one_node_per_attention_call(gpt2_suite: pytest.Pytester) -> None:
    assert gpt2_suite.runpytest("--lens-update", "-k", "black_box").ret == 0
    nodes = _nodes(gpt2_suite.path / SNAPSHOTS / "test_attention_as_a_black_box.lens.json")
    attention = [node_id for node_id, node in nodes.items() if node.get("op") == "GPT2Attention"]
    assert attention == ["transformer.h.0.attn/GPT2Attention", "transformer.h.1.attn/GPT2Attention"]
    assert not [
        node_id
        for node_id in nodes
        if ".attn." in node_id or ".attn/" in node_id and node_id not in attention
    ]
    assert any("transformer.h.0.mlp" in node_id for node_id in nodes)  # the rest stays op by op
    assert gpt2_suite.runpytest("-k", "black_box").ret == 0


FROZEN_TEST = textwrap.dedent(
    """
    import os

    import torch
    from torch import nn


    def test_frozen(model_trace, snapshot):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Sequential(nn.Linear(2, 4)), nn.ReLU(), nn.Linear(4, 1))
        if os.environ.get("LENS_FREEZE"):
            net[0][0].requires_grad_(False)
        assert model_trace(net, torch.ones(3, 2)) == snapshot
    """
)


def test_freezing_a_linear_fails_naming_its_trainable_params(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_frozen=FROZEN_TEST)
    assert pytester.runpytest("--lens-update").ret == 0
    monkeypatch.setenv("LENS_FREEZE", "1")
    result = pytester.runpytest()
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*0.0*trainable params*12 -> 0*"])
    assert pytester.runpytest("--lens-update").ret == 0
    text = (pytester.path / "__snapshots__/test_frozen/test_frozen.lens.json").read_text()
    assert '"param:0.0.weight": "float32[4, 2] frozen"' in text
    assert '"trainable_params": 5' in text and '"frozen_params": 12' in text


DEPTH_TEST = textwrap.dedent(
    """
    import torch
    from torch import nn


    def test_net(model_trace, snapshot):
        net = nn.Sequential(nn.Sequential(nn.Linear(2, 4), nn.ReLU()), nn.Linear(4, 1))
        assert model_trace(net, torch.ones(3, 2)) == snapshot
    """
)


@pytest.mark.parametrize("how", ["option", "ini"])
def test_the_depth_option_and_ini_key_set_the_level(pytester: pytest.Pytester, how: str) -> None:
    pytester.makepyfile(test_net=DEPTH_TEST)
    args = ["--lens-update"]
    if how == "option":
        args.append("--lens-depth=2")
    else:
        pytester.makeini("[pytest]\nlens_depth = 2\n")
    assert pytester.runpytest(*args).ret == 0
    nodes = _nodes(pytester.path / "__snapshots__/test_net/test_net.lens.json")
    assert [node_id for node_id in nodes if "/" in node_id] == ["0/Sequential", "1/Linear"]
    assert pytester.runpytest(*args[1:]).ret == 0


@pytest.mark.parametrize("how", ["option", "ini"])
def test_a_bad_depth_stops_the_run_naming_it(pytester: pytest.Pytester, how: str) -> None:
    pytester.makepyfile(test_net=DEPTH_TEST)
    if how == "option":
        result = pytester.runpytest("--lens-depth=0")
        result.stderr.fnmatch_lines(["*--lens-depth*must be a whole number of at least 1 (got '0')*"])
    else:
        pytester.makeini("[pytest]\nlens_depth = deep\n")
        result = pytester.runpytest()
        result.stderr.fnmatch_lines(["*lens_depth*must be a whole number of at least 1 (got 'deep')*"])
    assert result.ret != 0
