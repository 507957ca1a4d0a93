"""The differ: which Changes a reviewer reads for each kind of model edit."""

from __future__ import annotations

import difflib
import json
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pytest_modellens as pm
from pytest_modellens import differ, match
from pytest_modellens.causes import explain
from pytest_modellens.changes import Change, ChangeKind
from pytest_modellens.report import change_lines, headline

torch.manual_seed(0)
X = torch.randn(4, 3)


class Head(nn.Linear):
    """A linear layer that may end in a ReLU of its own (``head/relu``)."""

    def __init__(self, out: int, *, relu: bool = False) -> None:
        super().__init__(4, out)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return F.relu(y) if self.relu else y


class Net(nn.Module):
    """The plugin's running example: input_to_hidden, a sigmoid used twice, a head."""

    def __init__(self, *, out: int = 1, relu: bool = False, act: str = "relu", dim: int = -1) -> None:
        super().__init__()
        self.input_to_hidden = nn.Linear(3, 4)
        self.act = act
        self.dim = dim
        self.hidden_to_output = Head(out, relu=relu)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = getattr(F, self.act)(self.input_to_hidden(x))
        h = self.sigmoid(F.softmax(h, dim=self.dim))
        return self.sigmoid(self.hidden_to_output(h))


def traced(**options: object) -> pm.Trace:
    torch.manual_seed(0)
    return pm.trace(Net(**options), X)  # type: ignore[arg-type]


def listed(old: pm.Trace | str, new: pm.Trace | str, *, limit: int | None = None) -> list[str]:
    """The change list a failure shows for ``old`` -> ``new``: rows, causes first."""
    return change_lines(explain(differ.compare(old, new)), limit=limit)


def only(changes: list[Change], kind: ChangeKind) -> list[Change]:
    return [c for c in changes if c.kind is kind]


def test_same_model_has_no_changes() -> None:
    assert pm.diff(traced(), traced()) == []


def test_added_node_and_the_input_it_rewired() -> None:
    changes = pm.diff(traced(), traced(relu=True))
    (added,) = only(changes, ChangeKind.NODE_ADDED)
    assert (added.subject, added.detail, added.new) == ("hidden_to_output/relu", "relu", "float32[4, 1]")
    (rewired,) = only(changes, ChangeKind.INPUTS_REWIRED)
    assert rewired.subject == "sigmoid:2/sigmoid"
    assert rewired.columns()[3] == "hidden_to_output/linear -> hidden_to_output/relu"
    assert changes[0] is added  # most important first
    assert headline(changes) == "1 node added, 1 node changed"


def test_removed_node() -> None:
    changes = pm.diff(traced(relu=True), traced())
    (removed,) = only(changes, ChangeKind.NODE_REMOVED)
    assert removed.subject == "hidden_to_output/relu"
    assert removed.columns()[0] == "-"


def test_op_changed_in_place() -> None:
    changes = pm.diff(traced(act="relu"), traced(act="gelu"))
    (changed,) = only(changes, ChangeKind.OP_CHANGED)
    assert (changed.subject, changed.old, changed.new) == ("gelu", "relu", "gelu")
    assert not only(changes, ChangeKind.NODE_ADDED) and not only(changes, ChangeKind.NODE_REMOVED)


def test_output_shape_parameters_and_config() -> None:
    changes = pm.diff(traced(out=1), traced(out=2))
    shapes = {c.subject: c for c in only(changes, ChangeKind.OUTPUT_CHANGED)}
    assert shapes["hidden_to_output/linear"].detail == "shape"
    assert shapes["hidden_to_output/linear"].columns()[3] == "float32[4, 1] -> float32[4, 2]"
    assert set(shapes) == {"hidden_to_output/linear", "sigmoid:2/sigmoid", "output"}
    (config,) = only(changes, ChangeKind.MODULE_RECONFIGURED)
    assert (config.subject, config.detail) == ("hidden_to_output", "config")
    assert config.columns()[3] == "out_features 1 -> 2"  # only the setting that moved
    params = {c.subject: c.columns()[3] for c in only(changes, ChangeKind.PARAMS_CHANGED)}
    # The count is named on the module that owns the weights, not on every ancestor.
    assert params == {
        "hidden_to_output": "5 -> 10",
        "param:hidden_to_output.bias": "float32[1] -> float32[2]",
        "param:hidden_to_output.weight": "float32[1, 4] -> float32[2, 4]",
    }
    summary = {c.detail: (c.old, c.new) for c in only(changes, ChangeKind.SUMMARY_CHANGED)}
    assert summary["params"] == (21, 26)


def test_dtype_change() -> None:
    old = traced()
    torch.manual_seed(0)
    new = pm.trace(Net().double(), X.double())
    shapes = {c.subject: c.detail for c in only(pm.diff(old, new), ChangeKind.OUTPUT_CHANGED)}
    assert shapes["input_to_hidden/linear"] == "dtype"


def test_an_input_that_turns_sparse_is_a_layout_change_and_its_output_follows() -> None:
    old, new = pm.trace(nn.Identity(), torch.eye(3)), pm.trace(nn.Identity(), torch.eye(3).to_sparse())
    layouts = {c.subject: c for c in only(pm.diff(old, new), ChangeKind.OUTPUT_CHANGED)}
    assert {subject: c.detail for subject, c in layouts.items()} == {
        "input:input": "layout",
        "output": "layout",
    }
    assert layouts["input:input"].columns()[3] == "float32[3, 3] -> float32[3, 3] sparse_coo"
    assert listed(old, new) == [
        "  ~ input:input  layout  float32[3, 3] -> float32[3, 3] sparse_coo  (1 layout follows)"
    ]


def test_non_tensor_argument() -> None:
    (arg,) = only(pm.diff(traced(dim=-1), traced(dim=1)), ChangeKind.ARGS_CHANGED)
    assert (arg.subject, arg.detail, arg.old, arg.new) == ("softmax", "arg dim", -1, 1)


def test_module_added_and_removed() -> None:
    class Wrapped(Net):
        def __init__(self) -> None:
            super().__init__()
            self.extra = nn.Tanh()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.extra(super().forward(x))

    torch.manual_seed(0)
    wrapped = pm.trace(Wrapped(), X)
    (added,) = only(pm.diff(traced(), wrapped), ChangeKind.MODULE_ADDED)
    assert (added.subject, added.detail) == ("extra", "Tanh")
    (removed,) = only(pm.diff(wrapped, traced()), ChangeKind.MODULE_REMOVED)
    assert removed.subject == "extra"


def test_structure_flags() -> None:
    class Skip(Net):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.input_to_hidden(x)
            return self.sigmoid(self.hidden_to_output(h + F.relu(h)))

    torch.manual_seed(0)
    changes = pm.diff(traced(), pm.trace(Skip(), X))
    flags = {c.detail: (c.old, c.new) for c in only(changes, ChangeKind.STRUCTURE_CHANGED)}
    assert flags == {"branching": (False, True)}


def _edit_stat(text: str, ref: str, **values: float) -> str:
    data = json.loads(text)
    data["stats"][ref].update(values)
    return json.dumps(data)


def test_statistics_compare_with_tolerance() -> None:
    torch.manual_seed(0)
    text = pm.trace(Net(), X, stats=True).dumps()
    mean = json.loads(text)["stats"]["softmax"]["mean"]
    # Float noise within the tolerance is no change; a real shift is, with the tolerance shown.
    assert pm.diff(text, _edit_stat(text, "softmax", mean=mean * (1 + 1e-5))) == []
    (stat,) = pm.diff(text, _edit_stat(text, "softmax", mean=mean + 0.5))
    assert (stat.kind, stat.subject, stat.detail) == (ChangeKind.STAT_CHANGED, "softmax", "mean")
    assert stat.tolerance == pm.Tolerance()
    lines = listed(text, _edit_stat(text, "softmax", mean=mean + 0.5))
    assert lines[0].split() == ["~", "softmax", "mean", f"{mean:g}", "->", f"{mean + 0.5:g}"]
    assert lines[-1] == "  statistics within rtol 0.001, atol 1e-05 count as equal"  # once, not per row
    loose = differ.diff(text, _edit_stat(text, "softmax", mean=mean + 0.5), tolerance=pm.Tolerance(atol=1.0))
    assert loose == []
    (nan,) = pm.diff(text, _edit_stat(text, "softmax", nan=3))
    assert (nan.detail, nan.old, nan.new, nan.tolerance) == ("nan", 0, 3, None)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x)) + x


class Deep(nn.Module):
    def __init__(self, *, insert: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        blocks: list[nn.Module] = [Block() for _ in range(12)]
        if insert:
            blocks.insert(6, nn.ReLU())
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def test_inserted_layer_renumbers_modules_but_reads_as_one_node_and_one_rename() -> None:
    x = torch.randn(2, 8)
    old, new = pm.trace(Deep(), x), pm.trace(Deep(insert=True), x)
    assert "blocks.6.fc/linear" in old.dumps() and "blocks.12.fc/linear" in new.dumps()
    changes = pm.diff(old.dumps(), new.dumps())
    assert [c.subject for c in only(changes, ChangeKind.NODE_ADDED)] == ["blocks.6/relu"]
    assert only(changes, ChangeKind.NODE_REMOVED) == []
    (rename,) = only(changes, ChangeKind.MODULE_RENAMED)
    assert str(rename) == "~  blocks.6..11 -> blocks.7..12  renamed"
    # Only the edges around the new node moved: the two consumers of its output.
    assert {c.subject for c in only(changes, ChangeKind.INPUTS_REWIRED)} == {
        "blocks.7.fc/linear",
        "blocks.7/add",
    }
    assert [c.subject for c in only(changes, ChangeKind.MODULE_ADDED)] == ["blocks.6"]
    assert only(changes, ChangeKind.PARAMS_CHANGED) == []  # renamed weights are the same weights
    assert headline(changes) == "1 node added, 2 nodes changed, 1 module added, 1 module renamed"
    assert "  ~ blocks.6..11 -> blocks.7..12  renamed" in listed(old, new)


def test_renamed_attribute_is_one_rename() -> None:
    class Named(nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name
            self.add_module(name, nn.Linear(3, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return getattr(self, self.name)(x)

    changes = pm.diff(pm.trace(Named("fc"), X), pm.trace(Named("proj"), X))
    assert [str(c) for c in changes] == ["~  fc -> proj  renamed"]


def test_a_whole_added_module_is_one_line_of_the_message() -> None:
    x = torch.randn(2, 8)
    longer = Deep()
    longer.blocks.append(Block())
    old, new = pm.trace(Deep(), x), pm.trace(longer, x)
    changes = pm.diff(old, new)
    assert len(only(changes, ChangeKind.NODE_ADDED)) == 3  # the diff itself names every node
    lines = listed(old, new)
    assert lines[0].split()[:5] == ["+", "blocks.12", "Block", "3", "ops"]
    assert [line.split()[1] for line in lines if line.split()[0] == "+"] == ["blocks.12"]
    outputs = [c for c in changes if c.detail == "outputs"]
    assert outputs == []  # same output shape: the summary does not move


def test_nested_summary_values_show_the_leaves_that_moved() -> None:
    class Pair(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.fc = nn.Linear(3, width)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.fc(x), "hidden": x}

    (outputs,) = [c for c in pm.diff(pm.trace(Pair(2), X), pm.trace(Pair(5), X)) if c.detail == "outputs"]
    assert outputs.columns()[3] == "logits: float32[4, 2] -> float32[4, 5]"


def test_texts_and_traces_give_the_same_changes_most_important_first() -> None:
    old, new = traced(), traced(out=2, relu=True)
    changes = pm.diff(old.dumps(), new.dumps())
    assert changes == pm.diff(old, new) == old.diff(new)
    ranks = [c.kind.rank for c in changes]
    assert ranks == sorted(ranks)


def test_capped_list() -> None:
    lines = listed(traced(), traced(out=2, relu=True, act="tanh", dim=0), limit=1)
    assert len(lines) == 2 and lines[-1].startswith("  ... and ") and lines[-1].endswith(" more")


def test_bad_input() -> None:
    with pytest.raises(pm.SnapshotFormatError, match="not valid model-snapshot JSON"):
        pm.diff("{", traced())
    with pytest.raises(TypeError, match="Traces or snapshot texts"):
        pm.diff(traced(), 3)  # type: ignore[arg-type]


# -- big graphs: the alignment stays near-linear ---------------------------------------


class StepCell(nn.Module):
    def __init__(self, act: str) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = act

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return getattr(torch, self.act)(self.fc(x) + h)


class StepLoop(nn.Module):
    """A cell called once per step of its input: three ops a step, all under ``cell:<step>``."""

    def __init__(self, act: str = "tanh") -> None:
        super().__init__()
        self.cell = StepCell(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[1], 4)
        for step in x:
            h = self.cell(step, h)
        return h


def _reference_align(a: list[object], b: list[object]) -> list[tuple[bool, int, int, int, int]]:
    """The alignment before it was bounded: common head and tail, difflib on the middle."""
    head, tail, limit = 0, 0, min(len(a), len(b))
    while head < limit and a[head] == b[head]:
        head += 1
    while tail < limit - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    matcher = difflib.SequenceMatcher(None, a[head : len(a) - tail], b[head : len(b) - tail], autojunk=False)
    blocks = [(True, 0, head, 0, head)] if head else []
    blocks += [
        (tag == "equal", head + i1, head + i2, head + j1, head + j2)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
    ]
    if tail:
        blocks.append((True, len(a) - tail, len(a), len(b) - tail, len(b)))
    return blocks


def test_small_alignments_are_what_difflib_finds() -> None:
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randrange(0, 40))]
        b = [rng.choice("abcdef") for _ in range(rng.randrange(0, 40))]
        assert match.align(a, b) == _reference_align(a, b), (a, b)


@pytest.mark.parametrize("shape", ["alternating", "unique", "shifted"])
def test_big_alignments_cover_both_sides_in_order_and_give_difflib_only_small_pieces(
    shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 6000
    if shape == "alternating":  # the same two signatures over and over, one of them changed
        a, b = ["linear", "tanh"] * n, ["linear", "sigmoid"] * n
    elif shape == "unique":  # every signature once, every other one changed
        a = [("op", k) for k in range(2 * n)]
        b = [("op", k) if k % 2 else ("new", k) for k in range(2 * n)]
    else:  # one signature inserted near the start, one removed near the end, changes at both ends
        a = ["x", *[("op", k) for k in range(2 * n)], "y"]
        b = ["z", *[("op", k) for k in range(2 * n) if k != 2 * n - 7], "w"]
        b.insert(5, "inserted")
    given: list[int] = []
    real = difflib.SequenceMatcher

    def spy(isjunk: object, left: list[object], right: list[object], **options: object) -> object:
        given.append(len(left) + len(right))
        return real(isjunk, left, right, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(match, "SequenceMatcher", spy)
    blocks = match.align(a, b)
    assert max(given, default=0) <= 2000  # of 24000
    i = j = 0
    for equal, i1, i2, j1, j2 in blocks:
        assert (i1, j1) == (i, j)
        if equal:
            assert a[i1:i2] == b[j1:j2]
        i, j = i2, j2
    assert (i, j) == (len(a), len(b))
    if shape == "shifted":  # the long common middle is one equal run, in spite of the shift
        assert max(i2 - i1 for equal, i1, i2, _, _ in blocks if equal) > 2 * n - 20


def test_an_op_changed_in_every_step_of_a_long_loop_is_paired_step_by_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    steps = 1500  # 4500 nodes: the whole middle went to difflib, which took minutes at 20k
    x = torch.randn(steps, 1, 4)
    old, new = pm.trace(StepLoop(), x), pm.trace(StepLoop("sigmoid"), x)
    given: list[int] = []
    real = difflib.SequenceMatcher

    def spy(isjunk: object, left: list[object], right: list[object], **options: object) -> object:
        given.append(len(left) + len(right))
        return real(isjunk, left, right, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(match, "SequenceMatcher", spy)
    changes = pm.diff(old.dumps(), new.dumps())
    assert max(given, default=0) <= 2000
    assert {c.kind for c in changes} == {ChangeKind.OP_CHANGED}
    assert [c.subject for c in changes[:3]] == ["cell/sigmoid", "cell:2/sigmoid", "cell:3/sigmoid"]
    assert len(changes) == steps
