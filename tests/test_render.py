"""Pictures: what the model and diff pictures show, and how they are drawn without Graphviz."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from torch import nn

import pytest_modellens as pm
from pytest_modellens import render
from pytest_modellens.differ import compare

SVG = "{http://www.w3.org/2000/svg}"
posix_only = pytest.mark.skipif(os.name == "nt", reason="fake renderers are shell scripts")


class Net(nn.Module):
    def __init__(self, *, relu: bool = False, out: int = 1) -> None:
        super().__init__()
        self.input_to_hidden = nn.Linear(3, 4)
        self.hidden_to_output = nn.Linear(4, out)
        self.sigmoid = nn.Sigmoid()
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.sigmoid(self.input_to_hidden(x))
        h = self.hidden_to_output(h)
        return self.sigmoid(torch.relu(h) if self.relu else h)


class Block(nn.Module):
    def __init__(self, *, extra: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.fc(x))
        return (torch.relu(y) if self.extra else y) + x


class Deep(nn.Module):
    def __init__(self, depth: int, *, changed: int | None = None) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(Block(extra=k == changed) for k in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Loop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.RNNCell(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(2, 4)
        for step in x:
            h = self.cell(step, h)
        return h


X = torch.randn(4, 3)


def nodes(svg: Path) -> dict[str, tuple[set[str], str]]:
    """Node id -> (fill colours, label text) of every box in an SVG the renderer wrote."""
    found = {}
    for group in ET.parse(svg).getroot().iter(f"{SVG}g"):
        if group.get("class") == "node":
            fills = {
                shape.get("fill", "")
                for shape in group.iter()
                if shape.tag.endswith(("path", "polygon", "ellipse"))
            }
            text = "\n".join(t.text or "" for t in group.iter(f"{SVG}text"))
            found[group.get("id", "").removeprefix("lens:")] = (fills, text)
    return found


def clusters(svg: Path) -> list[str]:
    return [
        "".join(t.text or "" for t in g.iter(f"{SVG}text"))
        for g in ET.parse(svg).getroot().iter(f"{SVG}g")
        if g.get("class") == "cluster"
    ]


def test_model_picture_marks_inputs_outputs_params_and_modules(tmp_path: Path) -> None:
    written = pm.trace(Net(), X).render(str(tmp_path / "net.svg"))
    assert written == str(tmp_path / "net.svg")
    drawn = nodes(Path(written))
    assert drawn["input:x"][0] == {"#98fb98"} and "float32[4, 3]" in drawn["input:x"][1]
    assert drawn["output"][0] == {"#ff9999"}
    assert "params: weight [4, 3], bias [4]" in drawn["input_to_hidden/linear"][1]
    assert "float32[4, 4]" in drawn["input_to_hidden/linear"][1]
    assert {"input_to_hidden (Linear)", "sigmoid (Sigmoid)", "sigmoid:2 (Sigmoid)"} <= set(
        clusters(Path(written))
    )


def test_depth_collapses_deeper_modules_into_boxes(tmp_path: Path) -> None:
    trace = pm.trace(Deep(3), torch.randn(2, 4))
    full = nodes(Path(render.render_trace(trace, tmp_path / "full.svg")))
    assert "blocks.1.fc/linear" in full
    shallow = nodes(Path(render.render_trace(trace, tmp_path / "d1.svg", depth=1)))
    assert set(shallow) == {"input:x", "module blocks", "output"}
    assert "9 ops" in shallow["module blocks"][1]
    per_block = nodes(Path(render.render_trace(trace, tmp_path / "d2.svg", depth=2)))
    assert {"module blocks.0", "module blocks.1", "module blocks.2"} <= set(per_block)
    with pytest.raises(ValueError, match="'depth' must be an int of at least 1"):
        render.render_trace(trace, tmp_path / "d0.svg", depth=0)


def test_rolled_view_draws_a_loop_once(tmp_path: Path) -> None:
    trace = pm.trace(Loop(), torch.randn(3, 2, 3))
    unrolled = nodes(Path(render.render_trace(trace, tmp_path / "unrolled.svg")))
    assert sum("rnn_tanh_cell" in text for _, text in unrolled.values()) == 3
    svg = Path(render.render_trace(trace, tmp_path / "rolled.svg", rolled=True))
    rolled = nodes(svg)
    assert sum("rnn_tanh_cell" in text for _, text in rolled.values()) == 1
    assert "rnn_tanh_cell x3" in rolled["cell/rnn_tanh_cell"][1]
    assert "cell (RNNCell) x3" in clusters(svg)
    # The recurrence is a loop edge: from the rolled cell to itself, in the graph and in the DOT.
    graph = render.trace_graph(trace, rolled=True)
    assert ("cell/rnn_tanh_cell", "cell/rnn_tanh_cell") in graph.edges
    dot = render.to_dot(graph)
    name = re.search(r'(\w+) \[label=[^\n]*id="lens:cell/rnn_tanh_cell"', dot)
    assert name is not None and f"{name[1]} -> {name[1]} " in dot


def test_diff_picture_colours_added_removed_changed_and_unchanged(tmp_path: Path) -> None:
    torch.manual_seed(0)
    old = pm.trace(Net(), X)
    torch.manual_seed(0)
    new = pm.trace(Net(relu=True, out=2), X)
    svg = Path(render.render_diff(old, new, tmp_path / "diff.svg"))
    drawn = nodes(svg)
    added, removed, changed, same = (render.COLORS[s][1] for s in ("added", "removed", "changed", "same"))
    assert drawn["relu"][0] == {added}
    assert drawn["hidden_to_output/linear"][0] == {changed}
    assert "shape: float32[4, 1] -> float32[4, 2]" in drawn["hidden_to_output/linear"][1]
    assert drawn["input_to_hidden/linear"][0] == {same}
    back = nodes(Path(render.render_diff(new, old, tmp_path / "back.svg")))
    assert back["relu (removed)"][0] == {removed}


def test_a_trace_diffed_with_itself_is_all_grey() -> None:
    trace = pm.trace(Net(), X)
    graph = render.diff_graph(compare(trace, trace))
    assert {vertex.state for vertex in graph.vertices.values()} == {"same"}


def test_big_diff_is_cropped_to_the_change(tmp_path: Path) -> None:
    x = torch.randn(2, 4)
    comparison = compare(pm.trace(Deep(30), x), pm.trace(Deep(30, changed=12), x))
    graph = render.diff_graph(comparison)
    assert len(graph.vertices) <= 20  # of 93 nodes
    labels = {line for vertex in graph.vertices.values() for line in vertex.lines}
    assert {"blocks.0..9 (Block)", "blocks.15..29 (Block)"} <= labels
    assert graph.vertices["blocks.12/relu"].state == "added"
    uncropped = render.diff_graph(comparison, crop_above=1000)
    assert len(uncropped.vertices) == 93


def test_png_and_dot_source(tmp_path: Path) -> None:
    trace = pm.trace(Net(), X)
    assert Path(trace.render(str(tmp_path / "net.png"))).read_bytes().startswith(b"\x89PNG")
    assert Path(trace.render(str(tmp_path / "net.gv"))).read_text().startswith("digraph")
    with pytest.raises(pm.RenderError, match=r"must end in \.svg, \.png or \.gv \(got 'net.pdf'\)"):
        trace.render(str(tmp_path / "net.pdf"))


def test_the_same_diff_gives_the_same_dot_in_every_process(tmp_path: Path) -> None:
    torch.manual_seed(0)
    old, new = tmp_path / "old.lens.json", tmp_path / "new.lens.json"
    old.write_text(pm.trace(Deep(30), torch.randn(2, 4)).dumps())
    new.write_text(pm.trace(Deep(30, changed=12), torch.randn(2, 4)).dumps())
    script = (
        "import sys; from pytest_modellens import differ, render; "
        "print(render.to_dot(render.diff_graph(differ.compare(*(open(p).read() for p in sys.argv[1:])))))"
    )
    sources = {
        subprocess.run(
            [sys.executable, "-c", script, str(old), str(new)],
            env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True,
        ).stdout
        for seed in ("1", "2")
    }  # fmt: skip
    assert len(sources) == 1 and "blocks.15..29 (Block)" in sources.pop()


# -- drawing without Graphviz --------------------------------------------------------------


def test_draws_without_dot_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert render.find_renderer() == [
        str(Path(sys.executable).parent / ("graphviz-pure" + (".exe" if os.name == "nt" else "")))
    ]
    svg = Path(pm.trace(Net(), X).render(str(tmp_path / "net.svg")))
    assert "input:x" in nodes(svg)


def _fake_dot(folder: Path, body: str) -> None:
    folder.mkdir()
    script = folder / "dot"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


@posix_only
def test_system_dot_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dot(tmp_path / "bin", 'echo "<svg xmlns=\\"http://www.w3.org/2000/svg\\"/>" > "${2#-o}"')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    written = Path(pm.trace(Net(), X).render(str(tmp_path / "net.svg")))
    assert written.read_text().strip() == '<svg xmlns="http://www.w3.org/2000/svg"/>'


@posix_only
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (f"exec {shutil.which('sleep')} 5", "it took longer than 0.3 s"),
        ("echo boom >&2; exit 3", "exit status 3: boom"),
    ],
    ids=["hangs", "fails"],
)
def test_a_renderer_that_hangs_or_fails_keeps_the_dot_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, expected: str
) -> None:
    _fake_dot(tmp_path / "bin", body)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(pm.RenderError, match=expected) as raised:
        render.render_trace(pm.trace(Net(), X), tmp_path / "net.svg", timeout=0.3)
    assert "the graph is kept as DOT in" in str(raised.value)
    assert (tmp_path / "net.gv").read_text().startswith("digraph")
    assert not (tmp_path / "net.svg").exists()


def test_no_renderer_at_all_keeps_the_dot_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert render.find_renderer() is None
    with pytest.raises(pm.RenderError, match="no Graphviz renderer found") as raised:
        pm.trace(Net(), X).render(str(tmp_path / "net.svg"))
    assert "pip install graphviz-pure" in str(raised.value)
    assert (tmp_path / "net.gv").read_text().startswith("digraph")


def test_a_one_layer_change_in_gpt2_small_is_a_small_picture(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):  # GPT-2 small's structure, without allocating its weights
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=12, n_embd=768)).eval()
    ids = torch.zeros(1, 16, dtype=torch.long, device="meta")
    old = pm.trace(model, ids).dumps()
    model.transformer.h[5].mlp.act = nn.ReLU()
    new = pm.trace(model, ids).dumps()

    comparison = compare(old, new)
    svg = Path(render.render_diff(old, new, tmp_path / "gpt2.svg", comparison=comparison))
    drawn = nodes(svg)
    assert len(drawn) < 50  # of more than 500 nodes
    assert drawn["transformer.h.5.mlp.act/relu"][0] == {render.COLORS["added"][1]}
    labels = "\n".join(text for _, text in drawn.values())
    assert "transformer.h.0..4 (GPT2Block)" in labels and "transformer.h.6..11 (GPT2Block)" in labels


def test_a_whole_added_module_is_one_green_box_on_a_big_graph() -> None:
    x = torch.randn(2, 4)
    longer = Deep(30)
    longer.blocks.append(nn.Sequential(Block(), Block()))
    graph = render.diff_graph(compare(pm.trace(Deep(30), x), pm.trace(longer, x)))
    box = graph.vertices["module blocks.30"]
    assert (box.state, box.lines) == ("added", ["blocks.30 (Sequential)", "6 ops"])
    assert not [key for key in graph.vertices if key.startswith("blocks.30.")]


def _tooltips(svg: Path) -> dict[str, str]:
    """Each box's tooltip in the SVG, by node id."""
    found = {}
    for group in ET.parse(svg).getroot().iter(f"{SVG}g"):
        node_id = (group.get("id") or "").removeprefix("lens:")
        for link in group.iter(f"{SVG}a"):
            found[node_id] = link.get("{http://www.w3.org/1999/xlink}title", "")
    return found


class Images(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def test_labels_keep_the_new_value_and_tooltips_hold_the_whole_change(tmp_path: Path) -> None:
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    old = pm.trace(Images(), x)
    torch.manual_seed(0)
    new = pm.trace(Images().to(torch.bfloat16), x.to(torch.bfloat16))
    graph = render.diff_graph(compare(old, new))
    # `dtype: float32[2, 4, 32, 32] -> bfloat16[2, 4...` would cut away what changed
    assert "dtype: float32 -> bfloat16" in graph.vertices["conv/conv2d"].lines
    svg = Path(render.render_diff(old, new, tmp_path / "bf16.svg"))
    tip = [" ".join(line.split()) for line in _tooltips(svg)["conv/conv2d"].splitlines()]
    assert tip == ["conv/conv2d", "~ conv/conv2d dtype float32[2, 4, 32, 32] -> bfloat16[2, 4, 32, 32]"]


def test_a_label_of_a_layout_change_names_the_layouts() -> None:
    x = torch.randn(2, 3, 32, 32)
    old = pm.trace(nn.Identity(), x)
    new = pm.trace(nn.Identity(), x.to_sparse())
    graph = render.diff_graph(compare(old, new))
    # `layout: float32[2, 3, 32, 32] -> float32[2, 3, 32...` would cut away what changed
    assert "layout: strided -> sparse_coo" in graph.vertices["input:input"].lines


def test_a_long_configuration_change_puts_the_new_value_on_its_own_line() -> None:
    class Mode(nn.Module):
        def __init__(self, mode: str) -> None:
            super().__init__()
            self.mode = mode

        def extra_repr(self) -> str:
            return f"mode={self.mode}"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    old = pm.trace(nn.Sequential(Mode("nearest_neighbour_resampling")), X)
    new = pm.trace(nn.Sequential(Mode("bilinear_area_resampling")), X)
    (label,) = [label for label, _ in render.diff_graph(compare(old, new)).clusters.values()]
    assert label.splitlines() == [
        "0 (Mode)",
        "config: mode nearest_neighbour_resampling",
        "-> bilinear_area_resampling",
    ]


def test_model_pictures_have_a_legend_and_conditions_say_which_way_they_went() -> None:
    class Branch(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else -x

    graph = render.trace_graph(pm.trace(Branch(), torch.ones(2)))
    assert (
        graph.title[1]
        == "green: input   red: output   grey: uses parameters   yellow: condition   blue: module"
    )
    (condition,) = [v for v in graph.vertices.values() if v.kind == "condition"]
    assert condition.lines[-1] == "result: true"


class ScaledLoop(nn.Module):
    """The input scaled, then a cell called once per step of it (every step reads `unbind`), then a head."""

    def __init__(self, scale: float = 2.0, head: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.cell = nn.RNNCell(4, 4)
        self.head = nn.Linear(4, head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale
        h = torch.zeros(x.shape[1], 4)
        for step in x:
            h = self.cell(step, h)
        return self.head(h)


def _mixed_chain(length: int, *, changed: int | None = None) -> nn.Sequential:
    kinds = (nn.ReLU, nn.Tanh, nn.Sigmoid)
    return nn.Sequential(*(nn.GELU() if k == changed else kinds[k % 3]() for k in range(length)))


def test_a_long_chain_of_siblings_of_mixed_classes_folds_around_its_one_change() -> None:
    x = torch.randn(1, 8)
    graph = render.diff_graph(
        compare(pm.trace(_mixed_chain(3000), x), pm.trace(_mixed_chain(3000, changed=1500), x))
    )
    assert len(graph.vertices) < 15  # of 3002 nodes, each its own module
    labels = [vertex.lines[0] for vertex in graph.vertices.values()]
    assert "0..1497 (ReLU, Tanh, Sigmoid)" in labels and "1503..2999 (ReLU, Tanh, Sigmoid)" in labels
    assert graph.vertices["1500/gelu"].state == "changed"


def _blocks(length: int, *, unbiased: int | None = None, inserted: int | None = None) -> nn.Sequential:
    blocks = [nn.Sequential(nn.Linear(4, 4, bias=k != unbiased), nn.ReLU()) for k in range(length)]
    if inserted is not None:
        blocks.insert(inserted, nn.Sequential(nn.Linear(4, 4), nn.Tanh()))
    return nn.Sequential(*blocks)


def test_a_cropped_picture_labels_the_modules_it_keeps_open_with_their_changes_and_old_names() -> None:
    x = torch.randn(1, 4)
    old = pm.trace(_blocks(200), x)
    reconfigured = render.diff_graph(compare(old, pm.trace(_blocks(200, unbiased=100), x)))
    assert len(reconfigured.vertices) < 15  # of 402 nodes
    assert reconfigured.clusters["100.0"] == (
        "100.0 (Linear)\nconfig: bias True -> False\nparams: 20 -> 16",
        "changed",
    )
    assert reconfigured.clusters["99"] == ("99 (Sequential)", "same")
    assert "50" not in reconfigured.clusters  # folded into a box, not drawn as a cluster
    renumbered = render.diff_graph(compare(old, pm.trace(_blocks(200, inserted=100), x)))
    assert len(renumbered.vertices) < 15
    assert renumbered.clusters["102"] == ("102 (Sequential), was 101", "same")


def test_two_siblings_of_different_classes_stay_two_boxes() -> None:
    x = torch.randn(1, 8)
    graph = render.diff_graph(
        compare(pm.trace(_mixed_chain(60), x), pm.trace(_mixed_chain(60, changed=4), x))
    )
    labels = [vertex.lines[0] for vertex in graph.vertices.values()]
    assert "7..59 (Tanh, Sigmoid, ReLU)" in labels
    assert "0..1 (ReLU, Tanh)" not in labels and "0 (ReLU)" in labels and "1 (Tanh)" in labels


def test_the_calls_of_a_loop_fold_and_the_crop_does_not_spread_through_the_input_every_step_reads() -> None:
    x = torch.randn(2000, 1, 4)
    comparison = compare(pm.trace(ScaledLoop(), x), pm.trace(ScaledLoop(scale=3.0), x))
    graph = render.diff_graph(comparison)
    assert len(graph.vertices) < 10  # of 6005 nodes in 2000 clusters
    assert graph.vertices["mul"].state == "changed"
    assert graph.vertices["module cell"].lines == ["cell:1..2000 (RNNCell)", "2000 ops"]


def test_a_change_after_a_loop_keeps_the_last_calls_open_and_folds_the_others() -> None:
    x = torch.randn(2000, 1, 4)
    graph = render.diff_graph(compare(pm.trace(ScaledLoop(), x), pm.trace(ScaledLoop(head=3), x)))
    assert len(graph.vertices) < 10
    assert graph.vertices["module cell"].lines[0] == "cell:1..1998 (RNNCell)"  # two steps from the head: open
    assert graph.vertices["cell:2000/rnn_tanh_cell"].state == "same"
    assert graph.vertices["head/linear"].state == "changed"


def test_a_module_called_twice_with_other_boxes_between_keeps_its_calls_apart() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act, self.fc, self.blocks = (
                nn.ReLU(),
                nn.Linear(4, 4),
                nn.Sequential(*(Block() for _ in range(20))),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.blocks(self.act(self.fc(self.act(x))))

    changed = Twice()
    changed.blocks[19].extra = True
    graph = render.diff_graph(
        compare(
            pm.trace(Twice(), X[:, :3].repeat(1, 2)[:, :4]), pm.trace(changed, X[:, :3].repeat(1, 2)[:, :4])
        )
    )
    labels = [vertex.lines[0] for vertex in graph.vertices.values()]
    assert "act (ReLU)" in labels and "act:2 (ReLU)" in labels
