"""Reading snapshot text back: what goes wrong says where, and what to do next."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from reference import NeuralNetwork, X

import pytest_modellens as lens


@pytest.fixture
def data() -> dict:
    torch.manual_seed(0)
    return json.loads(lens.trace(NeuralNetwork(), X).dumps())


def test_a_broken_entry_is_named_with_the_way_out(data: dict) -> None:
    data["nodes"]["sigmoid/sigmoid"]["out"] = "float32 4 4"
    with pytest.raises(lens.SnapshotFormatError, match=r"node 'sigmoid/sigmoid' is malformed.*--lens-update"):
        lens.loads(json.dumps(data))

    del data["modules"]["hidden_to_output"]["class"]
    with pytest.raises(
        lens.SnapshotFormatError, match=r"module 'hidden_to_output' has no 'class' field.*--lens-update"
    ):
        lens.loads(json.dumps(data))


def test_text_that_is_no_model_snapshot_is_refused(data: dict) -> None:
    del data["schema"]
    with pytest.raises(
        lens.SnapshotFormatError, match=r"not a model snapshot \(no 'schema' key\).*--lens-update"
    ):
        lens.loads(json.dumps(data))
    with pytest.raises(lens.SnapshotFormatError, match=r"line 1, column 1"):
        lens.loads("<html>")


def test_float_noise_in_statistics_compares_equal_and_structure_does_not() -> None:
    torch.manual_seed(0)
    net = NeuralNetwork()
    old = lens.loads(lens.trace(net, X, stats=True).dumps())
    assert lens.trace(net, X + 1e-9, stats=True) == old
    assert lens.trace(NeuralNetwork(hidden_size=5), X, stats=True) != old


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("nodes"), r"it has no 'nodes' section"),
        (lambda d: d.update(extra={}), r"a section this schema does not know: 'extra'"),
        (
            lambda d: d["modules"]["sigmoid"].update(colour="red"),
            r"modules entry 'sigmoid' has a field .* 'colour'",
        ),
        (
            lambda d: d["summary"].update(ops=99),
            r"the summary says ops 99, but the rest of the file makes it 4",
        ),
        (
            lambda d: d["nodes"]["sigmoid/sigmoid"].update({"in": ["nowhere"]}),
            r"reads 'nowhere', which no earlier",
        ),
        (
            lambda d: d["nodes"]["sigmoid/sigmoid"].update(op=["x"]),
            r"has op \[\"x\"\], which is not a string",
        ),
    ],
    ids=["missing-section", "extra-section", "extra-field", "counts-disagree", "dangling-ref", "wrong-type"],
)
def test_the_whole_file_is_checked_and_the_wrong_part_named(data: dict, edit: Any, message: str) -> None:
    edit(data)
    with pytest.raises(lens.SnapshotFormatError, match=message + r".*--lens-update"):
        lens.loads(json.dumps(data))


def test_a_snapshot_of_the_previous_schema_says_what_changed_and_how_to_rewrite_it() -> None:
    text = (
        lens.trace(torch.nn.Linear(2, 3), torch.ones(1, 2)).dumps().replace(lens.SCHEMA, "pytest-modellens/1")
    )
    with pytest.raises(lens.SnapshotFormatError) as raised:
        lens.loads(text, source="snapshot file old.lens.json")
    message = str(raised.value)
    assert "old.lens.json was written by schema 'pytest-modellens/1'" in message
    assert "schema 2 records trainable parameters" in message
    assert message.endswith("run `pytest --lens-update` to rewrite it")


@pytest.mark.parametrize(
    "text",
    ["float32[4, 2]", "float32[4, 2] sparse_coo", "float64[3] sparse_csr", "bool[2, 2] mkldnn",
     "float32[2, *, 3] nested", "float16[2, *, *] jagged", "qint8[]"],
)  # fmt: skip
def test_a_tensor_spec_reads_back_as_it_was_written(text: str) -> None:
    assert str(lens.TensorSpec.parse(text)) == text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("float32[2, 2] sparse_xyz", r"unknown layout 'sparse_xyz' .*sparse_coo"),
        ("float32[2, *]", r"a ragged size '\*' is for nested tensors only"),
        ("float32[2, 2] strided", r"a dense tensor's spec names no layout"),
    ],
    ids=["unknown-layout", "ragged-dense", "strided-named"],
)
def test_a_bad_layout_is_named_with_the_way_out(data: dict, spec: str, message: str) -> None:
    data["nodes"]["sigmoid/sigmoid"]["out"] = spec
    with pytest.raises(lens.SnapshotFormatError, match=r"node 'sigmoid/sigmoid' is malformed.*" + message):
        lens.loads(json.dumps(data))
    with pytest.raises(lens.SnapshotFormatError, match=r"--lens-update"):
        lens.loads(json.dumps(data))


def test_a_parameter_spec_keeps_its_layout_and_a_constant_read_its_own(data: dict) -> None:
    data["params"]["param:input_to_hidden.weight"] = "float32[4, 2] sparse_coo"
    data["nodes"]["sigmoid/sigmoid"]["in"].append("const:float32[4, 4] sparse_csr")
    trace = lens.loads(json.dumps(data))
    assert trace.params[0].spec == lens.TensorSpec("float32", (4, 2), lens.Layout.SPARSE_COO)
    text = trace.dumps()
    assert '"param:input_to_hidden.weight": "float32[4, 2] sparse_coo"' in text
    assert "const:float32[4, 4] sparse_csr" in text
    assert lens.loads(text).dumps() == text
