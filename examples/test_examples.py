"""The examples suite: each model traced and compared with its committed snapshot.

Run it with ``bash scripts/examples.sh`` (which also draws every model into
``lens-artifacts/``), or ``pytest examples``; after a deliberate change to a model,
``pytest examples --lens-update`` rewrites its snapshot for review in the diff.

``model_trace`` seeds torch before each test, so the weights built here are the same
on every run and every machine.
"""

from pathlib import Path

import pytest
import torch
from models import (
    XOR_INPUTS,
    AlexNet,
    LSTMLoop,
    NeuralNetwork,
    NeuralNetworkWithReLU,
    ResNet,
    TransformerClassifier,
    tiny_gpt2,
)

import pytest_modellens as lens


def test_reference_mlp(model_trace, snapshot):
    net = NeuralNetwork()
    assert model_trace(net, XOR_INPUTS) == snapshot


def test_reference_mlp_with_statistics(model_trace, snapshot):
    """The same network with activation statistics: a changed weight now fails too."""
    net = NeuralNetwork()
    assert model_trace(net, XOR_INPUTS, stats=True) == snapshot


def test_alexnet(model_trace, snapshot):
    net = AlexNet().eval()
    assert model_trace(net, torch.randn(2, 3, 32, 32)) == snapshot


def test_resnet(model_trace, snapshot):
    net = ResNet().eval()
    assert model_trace(net, torch.randn(2, 3, 16, 16)) == snapshot


def test_transformer_encoder(model_trace, snapshot):
    net = TransformerClassifier().eval()
    tokens = torch.tensor([[5, 17, 42, 8, 0, 0], [3, 9, 27, 61, 12, 4]])  # 0 pads the first sentence
    assert model_trace(net, tokens) == snapshot


def test_lstm_loop(model_trace, snapshot):
    net = LSTMLoop()
    assert model_trace(net, torch.randn(2, 4), steps=5) == snapshot


def test_tiny_gpt2(model_trace, snapshot):
    pytest.importorskip("transformers")
    net = tiny_gpt2()
    input_ids = torch.tensor([[12, 7, 45, 3, 88, 21]])
    assert model_trace(net, input_ids, use_cache=False) == snapshot


def test_what_a_reviewer_sees_for_a_change(model_trace, lens_artifacts):
    """What a failing snapshot reports, shown on purpose: the changes, and their picture."""
    before = model_trace(NeuralNetwork(), XOR_INPUTS)
    after = model_trace(NeuralNetworkWithReLU(), XOR_INPUTS)
    changes = [" ".join(str(change).split()) for change in lens.diff(before, after)]
    assert "+ relu relu float32[4, 1]" in changes
    assert "~ sigmoid:2/sigmoid inputs hidden_to_output/linear -> relu" in changes
    assert "~ input_to_hidden/linear shape float32[4, 4] -> float32[4, 5]" in changes
    picture = lens.render_diff(before, after, str(lens_artifacts / "examples" / "reference-change.diff.svg"))
    assert 'fill="#' in Path(picture).read_text()  # drawn, with colours


def test_the_review_page_of_a_change(model_trace, lens_artifacts):
    """The page a failing run leaves in lens-artifacts/index.html, made here for the same change.

    With Chromium installed it is also photographed, for the README (``scripts/docs-pictures.sh``).
    """
    import shutil
    import subprocess

    from pytest_modellens.causes import explain
    from pytest_modellens.differ import compare
    from pytest_modellens.page import Counts, Entry, html
    from pytest_modellens.report import change_lines, headline

    before = model_trace(NeuralNetwork(), XOR_INPUTS)
    after = model_trace(NeuralNetworkWithReLU(), XOR_INPUTS)
    comparison = compare(before, after)
    folder = lens_artifacts / "examples"
    picture = lens.render_diff(before, after, str(folder / "reference-change.diff.svg"))
    entry = Entry(
        "examples/test_examples.py::test_reference_mlp",
        f"model snapshot test_reference_mlp changed: {headline(comparison.changes)}",
        tuple(change_lines(explain(comparison))),
        picture=picture,
        snapshot="examples/__snapshots__/test_examples/test_reference_mlp.lens.json",
        kept="lens-artifacts/examples/test_examples--test_reference_mlp.lens.json",
        command="pytest --lens-update 'examples/test_examples.py::test_reference_mlp'",
    )
    page = folder / "review-page.html"
    page.write_text(html([entry], Counts(traced=7, passed=6, changed=1), page=page), encoding="utf-8")
    assert "test_reference_mlp" in page.read_text() and "<svg" in page.read_text()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={folder / '.chromium'}"]  # fmt: skip
        shot = folder / "review-page.png"
        subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1000,1100", page.as_uri()],
                       capture_output=True, timeout=120, check=False)  # fmt: skip
        assert shot.read_bytes().startswith(b"\x89PNG")
        shutil.rmtree(folder / ".chromium", ignore_errors=True)
