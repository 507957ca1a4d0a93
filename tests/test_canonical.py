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
