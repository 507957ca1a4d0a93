"""End-to-end: the first screen of a failure, as pytest shows it by default, names the cause.

Each case is a realistic change to a model, run the way a person runs pytest on their own
machine: no ``-v``, not in CI, so pytest cuts an assertion message at 8 lines and 640
characters. The cause must lead, and the snapshot and the command that accepts this one
test must be on screen.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest
import torch  # loaded here once: pytester's in-process runs cannot load torch again

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", autouse=True)
def _gpt2_loaded_once() -> None:
    """Trace GPT-2 here first: what it imports (torch.distributed...) cannot be imported twice,
    and pytester's in-process runs forget the modules imported inside them."""
    import pytest_modellens as pm

    config = transformers.GPT2Config(vocab_size=10, n_positions=8, n_embd=8, n_layer=1, n_head=2,
                                     activation_function="relu")  # fmt: skip
    pm.trace(transformers.GPT2LMHeadModel(config).eval(), torch.tensor([[1, 2]]), use_cache=False)


#: Six realistic changes (and one with many unrelated ones), switched on by LENS_CHANGE.
CHANGES = """
import os

import pytest
import torch
from torch import nn

CHANGED = bool(os.environ.get("LENS_CHANGE"))


class Block(nn.Module):
    def __init__(self, eps=1e-5, skip=True, width=16):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=eps)
        self.fc = nn.Linear(width, width)
        self.skip = skip

    def forward(self, x):
        y = self.fc(self.norm(x))
        return x + y if self.skip else y


class Gate(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        return x * torch.sigmoid(self.proj(x))


class Stack(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.blocks(x))


class Body(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                  nn.Linear(width, 4))

    def forward(self, x):
        return self.body(x)


def widen():
    return Body(48 if CHANGED else 32), torch.randn(2, 16)


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=99,
                        eos_token_id=99, activation_function="relu" if CHANGED else "gelu_new")
    return GPT2LMHeadModel(config).eval(), torch.tensor([[12, 7, 45, 3, 88, 21]])


def eps():
    return Stack([Block(eps=1e-6 if CHANGED else 1e-5) for _ in range(4)]), torch.randn(2, 16)


def bf16():
    model, x = Stack([Block() for _ in range(4)]), torch.randn(2, 16)
    return (model.to(torch.bfloat16), x.to(torch.bfloat16)) if CHANGED else (model, x)


def insert():
    blocks = [Block() for _ in range(4)]
    if CHANGED:
        blocks.insert(2, Gate())
    return Stack(blocks), torch.randn(2, 16)


def skip():
    blocks = [Block() for _ in range(4)]
    blocks[1].skip = not CHANGED
    return Stack(blocks), torch.randn(2, 16)


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        for k, name in enumerate("abcdef"):
            self.add_module(name, nn.LayerNorm(8, eps=10.0 ** -(k + 1) if CHANGED else 0.5))

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
        return x


def many():
    return Chain(), torch.randn(2, 8)


@pytest.mark.parametrize("case", ["widen", "gpt2", "eps", "bf16", "insert", "skip", "many"])
def test_change(model_trace, snapshot, case):
    model, x = globals()[case]()
    assert model_trace(model, x) == snapshot
"""

#: What the first row after the headline must say for each change: the cause.
FIRST_ROW = {
    "widen": r"~ body\.0 \(Linear\) +out_features +32 -> 48",
    "gpt2": r"~ transformer\.h\.\{0,1\}\.mlp\.act +class +NewGELUActivation -> ReLU +\(8 ops -> 1 op each",
    "eps": r"~ blocks\.\{0\.\.3\}\.norm \(LayerNorm\) +eps +1e-05 -> 1e-06",
    "bf16": r"~ all \d+ tensors +dtype +float32 -> bfloat16",
    "insert": r"\+ blocks\.2 +Gate +3 ops",
    "skip": r"- blocks\.1/add +add +float32\[2, 16\]",
    "many": r"~ a \(LayerNorm\) +eps +0\.5 -> 0\.1",
}
DERIVED = ("ops", "tensors", "tensor_bytes", "params", "param_bytes", "param_ops", "modules")


@pytest.fixture
def changed(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """The seven tests with their snapshots written; then every model changes."""
    for name in ("CI", "BUILD_NUMBER"):  # pytest shows everything in CI; a person's machine is not
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(test_models=CHANGES)
    pytester.runpytest("--lens-update").assert_outcomes(passed=7)
    monkeypatch.setenv("LENS_CHANGE", "1")
    return pytester


def messages(result: pytest.RunResult) -> dict[str, list[str]]:
    """The assertion message of each failed test, as pytest printed it (the ``E`` lines, unprefixed)."""
    found: dict[str, list[str]] = {}
    case = None
    for line in result.stdout.lines:
        header = re.match(r"_+ test_change\[(\w+)\] _+$", line)
        if header:
            case = header.group(1)
            found[case] = []
        elif case and line.startswith("E "):
            found[case].append(line[1:].strip().removeprefix("AssertionError: assert "))
        elif case and found[case] and not line.startswith("E"):
            case = None
    return found


def rows_of(message: list[str]) -> list[str]:
    return [line for line in message[1:] if line[:2] in ("~ ", "+ ", "- ", "..")]


def test_the_first_screen_names_the_cause_the_snapshot_and_the_command(changed: pytest.Pytester) -> None:
    result = changed.runpytest()
    result.assert_outcomes(failed=7)
    assert "Full output truncated" not in result.stdout.str()
    shown = messages(result)
    assert set(shown) == set(FIRST_ROW)
    for case, message in shown.items():
        assert message[0].startswith(f"model snapshot test_change[{case}] changed: "), message
        assert re.match(FIRST_ROW[case], message[1]), (case, message)
        assert f"snapshot: __snapshots__/test_models/test_change[{case}].lens.json" in message[-2], message
        assert message[-1] == f"accept with: pytest --lens-update 'test_models.py::test_change[{case}]'"
        assert len(message) <= 8, message
        for row in rows_of(message):  # totals are a closing line, never a row
            assert not any(row.split()[1:3] == ["<root>", key] for key in DERIVED), (case, row)
    assert shown["gpt2"][-4] == "totals: ops 99 -> 85, tensors 109 -> 95, tensor_bytes 137136 -> 94128"
    assert rows_of(shown["insert"])[1].split() == ["~", "blocks.2..3", "->", "blocks.3..4", "renamed"]
    assert shown["many"][-4] == "... and 3 more (-vv shows all)"


def test_vv_lists_every_row_and_the_max_changes_option_sets_how_many(changed: pytest.Pytester) -> None:
    every = messages(changed.runpytest("-vv", "-k", "many"))["many"]
    assert [row.split()[1] for row in rows_of(every)] == list("abcdef")
    assert len(every) > 8  # pytest shows it all under -vv

    three = messages(changed.runpytest("--lens-max-changes", "3", "-k", "many"))["many"]
    assert [row.split()[1] for row in rows_of(three)] == ["a", "b", "c", "and"]
    assert three[4] == "... and 3 more (--lens-max-changes 0 lists all)"

    changed.makeini("[pytest]\nlens_max_changes = 2\n")
    two = messages(changed.runpytest("-k", "many"))["many"]
    assert [row.split()[1] for row in rows_of(two)] == ["a", "b", "and"]
    everything = messages(changed.runpytest("-k", "many", "--lens-max-changes=0"))["many"]
    assert len(rows_of(everything)) == 6


def test_bad_max_changes_is_a_usage_error(changed: pytest.Pytester) -> None:
    result = changed.runpytest("--lens-max-changes", "few")
    result.stderr.fnmatch_lines(["*--lens-max-changes: must be a whole number of at least 0 (got 'few')"])
    changed.makeini("[pytest]\nlens_max_changes = -1\n")
    result = changed.runpytest()
    result.stderr.fnmatch_lines(
        ["*ini key 'lens_max_changes' must be a whole number of at least 0 (got '-1')"]
    )


def test_the_new_snapshot_is_kept_beside_the_picture_and_the_cli_diffs_it(changed: pytest.Pytester) -> None:
    result = changed.runpytest("-k", "widen")
    result.assert_outcomes(failed=1)
    artifacts = changed.path / "lens-artifacts"
    (kept,) = artifacts.glob("test_models--test_change_widen_*.lens.json")
    (picture,) = artifacts.glob("test_models.py--test_change_widen_*.svg")
    assert kept.parent == picture.parent
    old = changed.path / "__snapshots__/test_models/test_change[widen].lens.json"
    committed = old.read_bytes()
    manifest = json.loads(kept.with_name(kept.name.replace(".lens.json", ".manifest.json")).read_text())
    assert manifest == {
        "schema": "pytest-modellens-kept/1",
        "snapshot": "__snapshots__/test_models/test_change[widen].lens.json",
        "new": kept.name,
        "old_sha256": hashlib.sha256(committed).hexdigest(),
        "test": "test_models.py::test_change[widen]",
    }
    shown = messages(result)["widen"]
    assert f"new: lens-artifacts/{kept.name}" in shown[-2]
    result.stdout.fnmatch_lines(["*= model diffs =*", "test_models.py::test_change[[]widen[]]: model snapshot *",
                                 f"  new snapshot: lens-artifacts/{kept.name}"])  # fmt: skip
    assert old.read_bytes() == committed  # a failing run changes no snapshot

    done = subprocess.run([sys.executable, "-m", "pytest_modellens", "diff", str(old), str(kept)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert re.match(r"  " + FIRST_ROW["widen"], lines[1]), lines
    assert lines[-1].startswith("  totals: ")

    changed.runpytest("--lens-update", "-k", "widen").assert_outcomes(passed=1)
    assert old.read_bytes() == kept.read_bytes()  # what accepting writes is what was kept
