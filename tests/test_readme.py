"""README's "Reading a failure" shows what a run of the examples suite really prints.

The change under review is the one README describes: the reference network of
``examples/models.py`` gets a wider hidden layer and a ReLU before its output. Its test in
the examples suite then runs against the committed snapshot the way a person runs pytest
(no ``-v``, not in CI), and the README block must be that output, line for line.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The change under review, as edits to examples/models.py: (before, after).
CHANGE = [
    ("hidden_size: int = 4,", "hidden_size: int = 5,"),
    (
        "        hidden = self.sigmoid(self.input_to_hidden(x))\n        return self.sigmoid(self.hidden_to_output(hidden))\n\n\n#",
        "        hidden = self.sigmoid(self.input_to_hidden(x))\n        return self.sigmoid(torch.relu(self.hidden_to_output(hidden)))\n\n\n#",
    ),
]
TEST = "examples/test_examples.py::test_reference_mlp"


def readme_block() -> list[str]:
    """The first code block of README's "Reading a failure" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Reading a failure", 1)[1]
    return section.split("```\n", 2)[1].splitlines()


def what_a_run_prints(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ``E`` lines of the failure and the "model diffs" section of the changed example's run."""
    for name in ("CI", "BUILD_NUMBER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    for name in ("models", "test_examples"):  # the examples suite's own, when this worker ran it
        monkeypatch.delitem(sys.modules, name, raising=False)
    examples = pytester.path / "examples"
    snapshots = examples / "__snapshots__" / "test_examples"
    snapshots.mkdir(parents=True)
    shutil.copy(ROOT / "examples/__snapshots__/test_examples/test_reference_mlp.lens.json", snapshots)
    shutil.copy(ROOT / "examples/test_examples.py", examples)
    models = (ROOT / "examples/models.py").read_text(encoding="utf-8")
    for before, after in CHANGE:
        assert models.count(before) == 1, before
        models = models.replace(before, after)
    (examples / "models.py").write_text(models, encoding="utf-8")
    result = pytester.runpytest(TEST)
    result.assert_outcomes(failed=1)
    lines = result.stdout.lines
    shown = [line.rstrip() for line in lines if line.startswith("E ")]
    start = next(k for k, line in enumerate(lines) if re.fullmatch(r"=+ model diffs =+", line))
    end = next(k for k in range(start + 1, len(lines)) if re.match(r"[=-]{3,} ", lines[k]))
    return [*shown, "", *lines[start:end]]


def test_the_readme_shows_what_a_failing_example_prints(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    printed = what_a_run_prints(pytester, monkeypatch)
    assert "Full output truncated" not in "\n".join(printed)
    assert readme_block() == printed, "\n".join(printed)
