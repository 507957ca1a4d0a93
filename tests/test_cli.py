"""``python -m pytest_modellens``: diff and show snapshot files from the shell."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import pytest_modellens as pm
from pytest_modellens.__main__ import main


@pytest.fixture
def snapshots(tmp_path: Path) -> tuple[Path, Path]:
    """An old and a new snapshot file: the new model has a ReLU between its layers."""
    x = torch.ones(2, 3)
    old, new = tmp_path / "old.lens.json", tmp_path / "new.lens.json"
    old.write_text(pm.trace(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1)), x).dumps())
    new.write_text(pm.trace(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)), x).dumps())
    return old, new


def test_diff_lists_the_changes_and_draws_them(snapshots: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = snapshots
    done = subprocess.run(
        [sys.executable, "-m", "pytest_modellens", "diff", str(old), str(new), "-o", str(tmp_path / "d.svg")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # like `diff`: 1 means "they differ"
    lines = done.stdout.splitlines()
    assert lines[0].endswith("1 node added, 1 node changed, 1 module added, 1 module renamed")
    assert lines[1].split()[:5] == ["+", "1/relu", "(ReLU)", "relu", "float32[2,"]
    assert ["~", "1", "->", "2", "renamed"] in [line.split() for line in lines]
    assert lines[-1] == f"picture: {tmp_path / 'd.svg'}"
    ET.parse(tmp_path / "d.svg")


def test_diff_of_equal_snapshots_exits_0(
    snapshots: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    old, _ = snapshots
    assert main(["diff", str(old), str(old)]) == 0
    assert capsys.readouterr().out.endswith(": no changes\n")


def test_show_prints_the_summary_and_draws_the_model(
    snapshots: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, new = snapshots
    picture = tmp_path / "model.png"
    assert main(["show", str(new), "-o", str(picture), "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Log of Sequential forward pass:")
    assert out.endswith(f"picture: {picture}\n")
    assert picture.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "error: cannot read {path}: No such file or directory"),
        ("not json", "error: snapshot file {path} is not valid model-snapshot JSON"),
        (
            '{"schema": "pytest-modellens/0"}',
            "error: snapshot file {path} was written by schema 'pytest-modellens/0'",
        ),
    ],
    ids=["missing", "not-json", "other-schema"],
)
def test_bad_snapshot_files_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, expected: str
) -> None:
    path = tmp_path / "bad.lens.json"
    if content is not None:
        path.write_text(content)
    assert main(["show", str(path)]) == 2
    assert main(["diff", str(path), str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected.format(path=path))
    assert "Traceback" not in err


def test_bad_arguments_exit_2(snapshots: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    old, _ = snapshots
    with pytest.raises(SystemExit) as exited:
        main(["show", str(old), "--depth", "0"])
    assert exited.value.code == 2
    assert "--depth: must be a whole number of at least 1 (got '0')" in capsys.readouterr().err
    assert main(["show", str(old), "-o", "model.pdf"]) == 2
    assert "picture file must end in .svg, .png or .gv (got 'model.pdf')" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text.replace('"out": "float32[2, 4]"', '"out": "float32[2, 4]", "in": [1, 2]', 1),
        lambda text: '{"schema": "' + pm.SCHEMA + '", "summary": ' + "[" * 50000 + "]" * 50000 + "}",
        lambda text: text.replace('"params": 16', '"params": "sixteen"', 1),
        lambda text: text.replace('"schema"', '"schéma"').encode("latin-1").decode("latin-1"),
    ],
    ids=["numbers-as-inputs", "deep-nesting", "a-string-count", "latin-1"],
)
def test_bad_input_exits_2_with_a_message(snapshots: tuple[Path, Path], tmp_path: Path, damage: Any) -> None:
    old, new = snapshots
    bad = tmp_path / "bad.lens.json"
    bad.write_bytes(damage(old.read_text()).encode("latin-1", errors="replace"))
    for arguments in (["diff", str(bad), str(new)], ["diff", str(old), str(bad)], ["show", str(bad)]):
        done = subprocess.run(
            [sys.executable, "-m", "pytest_modellens", *arguments],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 2, (arguments, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
        assert "bad.lens.json" in done.stderr


def test_an_unwritable_picture_path_exits_2(snapshots: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = snapshots
    (tmp_path / "file").write_text("")
    for picture in ("file/d.svg", "file/d.gv"):
        assert main(["diff", str(old), str(new), "-o", str(tmp_path / picture)]) == 2
