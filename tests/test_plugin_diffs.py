"""End-to-end: what a failing model snapshot shows, and the pictures it leaves behind."""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch  # noqa: F401 - loaded here once: pytester's in-process runs cannot load torch again

from pytest_modellens.render import COLORS

#: A model whose head gains a ReLU (LENS_RELU) or another output (LENS_OUT) between runs.
MODEL_TEST = """
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn


class Head(nn.Linear):
    def forward(self, x):
        y = super().forward(x)
        return F.relu(y) if os.environ.get("LENS_RELU") else y


class Net(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.input_to_hidden = nn.Linear(2, width)
        self.hidden_to_output = Head(width, int(os.environ.get("LENS_OUT", "1")))
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.sigmoid(self.hidden_to_output(self.sigmoid(self.input_to_hidden(x))))


X = torch.ones(4, 2)


def test_net(model_trace, snapshot):
    assert model_trace(Net(), X) == snapshot
"""
PICTURE = Path("lens-artifacts/test_models.py--test_net.svg")
KEPT = Path("lens-artifacts/test_models--test_net.lens.json")
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The model test with its snapshot written; the model then drifts (a ReLU, a wider head)."""
    pytester.makepyfile(test_models=MODEL_TEST)
    pytester.runpytest("--lens-update").assert_outcomes(passed=1)
    monkeypatch.setenv("LENS_RELU", "1")
    monkeypatch.setenv("LENS_OUT", "2")
    return pytester


def fill_of(svg: Path, node_id: str) -> set[str]:
    for group in ET.parse(svg).getroot().iter(f"{SVG}g"):
        if group.get("id") == f"lens:{node_id}":
            return {
                shape.get("fill", "")
                for shape in group.iter()
                if shape.tag.endswith(("path", "polygon", "ellipse"))
            }
    raise AssertionError(f"no node {node_id!r} in {svg}")


def test_the_message_names_each_change_and_the_picture_shows_it(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-vv")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*model snapshot test_net changed: 1 node added, 3 nodes changed, 1 module changed",
            "*  ~ hidden_to_output (Head) * out_features * 1 -> 2  (3 shapes, 2 parameters follow)",
            "*  + hidden_to_output/relu * relu * float32[[]4, 2]  (1 rewiring follows)",
            "*  totals: ops 4 -> 5, tensors 6 -> 7, *",
            f"*picture: {PICTURE}",
            f"*snapshot: __snapshots__/test_models/test_net.lens.json, new: {KEPT}",
            "*accept with: pytest --lens-update 'test_models.py::test_net'",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*= model diffs =*",
            "test_models.py::test_net: model snapshot test_net changed: 1 node added, *",
            f"  picture: {PICTURE}",
            "  snapshot: __snapshots__/test_models/test_net.lens.json",
            f"  new snapshot: {KEPT}",
            "  accept with: pytest --lens-update 'test_models.py::test_net'",
        ]
    )
    listed = [line for line in result.stdout.lines if line.startswith("test_models.py::test_net: model")]
    assert len(listed) == 1  # once, for the call report only
    svg = suite.path / PICTURE
    assert fill_of(svg, "hidden_to_output/relu") == {COLORS["added"][1]}
    assert fill_of(svg, "hidden_to_output/linear") == {COLORS["changed"][1]}


def test_pictures_without_dot_on_path(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(suite.path / "no-graphviz-here"))
    result = suite.runpytest("-vv", "--lens-format=png")
    assert result.ret == 1
    picture = PICTURE.with_suffix(".png")
    result.stdout.fnmatch_lines([f"*picture: {picture}"])
    assert (suite.path / picture).read_bytes().startswith(b"\x89PNG")


def test_no_renderer_at_all_keeps_the_dot_file_and_says_so(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(suite.path / "no-graphviz-here"))
    monkeypatch.setattr(sys, "executable", str(suite.path / "python"))
    result = suite.runpytest("-vv")
    result.assert_outcomes(failed=1)  # the model's failure, not an internal error
    result.stdout.fnmatch_lines(
        ["*+ hidden_to_output/relu*", "*picture: not drawn: no Graphviz renderer found*", "*accept with:*"]
    )
    assert (suite.path / PICTURE.with_suffix(".gv")).read_text().startswith("digraph")
    assert not (suite.path / PICTURE).exists()


def test_junit_xml_records_the_picture(suite: pytest.Pytester) -> None:
    suite.runpytest("--junitxml=junit.xml")
    properties = [
        (p.get("name"), p.get("value")) for p in ET.parse(suite.path / "junit.xml").iter("property")
    ]
    assert properties == [("lens_artifact", str(KEPT)), ("lens_artifact", str(PICTURE))]


def test_parametrized_ids_get_distinct_safe_names(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_models=MODEL_TEST
        + """
@pytest.mark.parametrize("width", [3, 5], ids=["a/b-1.5-..", "a_b-1.5-.."])
def test_widths(model_trace, snapshot, width):
    assert model_trace(Net(width), X) == snapshot
"""
    )
    pytester.runpytest("--lens-update").assert_outcomes(passed=3)
    monkeypatch.setenv("LENS_RELU", "1")
    result = pytester.runpytest("-vv", "-k", "widths")
    result.assert_outcomes(failed=2)
    artifacts = pytester.path / "lens-artifacts"
    pictures = sorted(artifacts.rglob("*.svg"))
    assert len(pictures) == 2
    assert all(
        p.parent == artifacts and "/" not in p.name and p.name.startswith("test_models.py--test_widths_a_")
        for p in pictures
    )
    for picture in pictures:
        result.stdout.fnmatch_lines([f"*picture: {picture.relative_to(pytester.path)}"])
        ET.parse(picture)


def test_model_pictures_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_models=MODEL_TEST)
    pytester.runpytest("--lens-update", "--lens-pictures").assert_outcomes(passed=1)
    svg = pytester.path / "lens-artifacts/test_models.py--test_net.model.svg"
    assert fill_of(svg, "input:x") == {COLORS["input"][1]}


def test_a_long_test_name_gets_its_picture_and_junit_names_it_from_the_rootdir(
    reference_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "test_" + "a" * 245
    reference_suite.makepyfile(
        test_long=f"""
        import os
        from reference import X, NeuralNetwork

        def {name}(model_trace, snapshot):
            assert model_trace(NeuralNetwork(hidden_size=int(os.environ.get("LENS_HIDDEN", "4"))), X) == snapshot
        """
    )
    reference_suite.makeini("[pytest]\n")
    assert reference_suite.runpytest("--lens-update", "test_long.py").ret == 0
    monkeypatch.setenv("LENS_HIDDEN", "5")
    sub = reference_suite.mkdir("sub")
    monkeypatch.chdir(sub)
    result = reference_suite.runpytest("--junitxml=junit.xml", "--rootdir", str(reference_suite.path),
                                       str(reference_suite.path / "test_long.py"))  # fmt: skip
    assert result.ret == 1
    assert "File name too long" not in result.stdout.str()
    junit = (sub / "junit.xml").read_text()
    recorded = re.findall(r'name="lens_artifact" value="([^"]+)"', junit)
    pictures = [path for path in recorded if path.endswith(".svg")]
    assert pictures and pictures[0].startswith("lens-artifacts/test_long.py--test_aaa"), recorded
    assert all((reference_suite.path / path).is_file() for path in recorded)


def test_an_output_that_turns_sparse_fails_naming_the_layout(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_models="""
        import os

        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 3)

            def forward(self, x):
                y = self.fc(x).relu()
                return y.to_sparse() if os.environ.get("LENS_SPARSE") else y


        def test_net(model_trace, snapshot):
            assert model_trace(Net(), torch.ones(2, 3)) == snapshot
        """
    )
    pytester.runpytest("--lens-update").assert_outcomes(passed=1)
    monkeypatch.setenv("LENS_SPARSE", "1")
    result = pytester.runpytest()
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*+ to_sparse  to_sparse  float32[[]2, 3[]] sparse_coo  (1 layout, 1 rewiring follow)"]
    )
    result.stdout.no_fnmatch_line("*shape*")


#: A forward whose independent work runs in an order it takes from the environment, as a
#: loop over a set takes it from the hash seed.
REORDERED_MODEL = """
import os

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.ModuleDict({"full": nn.Linear(3, 3), "sliding": nn.Linear(3, 3)})

    def forward(self, x):
        masks = {}
        for kind in os.environ.get("LENS_ORDER", "full,sliding").split(","):
            masks[kind] = self.scale[kind](x).sigmoid()
        return masks["full"] * masks["sliding"] {change}


def test_net(model_trace, snapshot):
    assert model_trace(Net(), torch.ones(2, 3)) == snapshot
"""


@pytest.mark.parametrize(("change", "told"), [("", True), ("+ 1", False)])
def test_a_failure_where_only_the_order_changed_says_so(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, change: str, told: bool
) -> None:
    pytester.makepyfile(test_models=REORDERED_MODEL.replace("{change}", ""))
    pytester.runpytest("--lens-update").assert_outcomes(passed=1)
    monkeypatch.setenv("LENS_ORDER", "sliding,full")
    pytester.makepyfile(test_models=REORDERED_MODEL.replace("{change}", change))
    result = pytester.runpytest()
    assert result.ret == 1
    said = "*only the order changed: the same operations ran in another order*PYTHONHASHSEED=0*"
    if told:  # on the first screen, with the command that accepts it
        result.stdout.fnmatch_lines([said, "*accept with: *--lens-update*"])
    else:  # a real change besides the order is not called a reordering
        result.stdout.no_fnmatch_line("*only the order changed*")
