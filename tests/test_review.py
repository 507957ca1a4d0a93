"""The review in CI: the report page, the job summary, accept from CI, review a pull request."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import pytest_modellens as lens
from pytest_modellens.page import Counts, Entry, html, markdown

X = torch.ones(2, 3)


def _snapshot(width: int) -> str:
    torch.manual_seed(0)
    return lens.trace(nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 1)), X).dumps()


def _cli(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_modellens", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


# -- the page --------------------------------------------------------------------------------


def test_the_page_escapes_every_name_from_the_model(tmp_path: Path) -> None:
    entry = Entry("tests/test_x.py::test_<script>alert(1)</script>", "1 node added",
                  ("  + blocks.0/<script>  relu",), snapshot="a.lens.json", command="pytest --lens-update 'x'")  # fmt: skip
    page = html([entry], Counts(traced=2, passed=1, changed=1), page=tmp_path / "index.html")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<b>2</b> models traced" in page and 'href="#m0"' in page


def test_the_job_summary_is_a_table_of_changed_models() -> None:
    entry = Entry("t.py::test_a|b", "1 node added", ("  + relu", "  ~ fc  config  4 -> 5"), picture="p.svg")
    text = markdown([entry], Counts(traced=1, changed=1), report="lens-artifacts/index.html")
    assert "| `t.py::test_a\\|b` | 1 node added | + relu<br>~ fc  config  4 -&gt; 5 |" in text
    assert "lens-artifacts/index.html" in text and "`p.svg`" in text


# -- review a pull request --------------------------------------------------------------------


def _git(*arguments: str, cwd: Path) -> None:
    subprocess.run(["git", *arguments], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "repo"
    folder = root / "tests/__snapshots__/test_models"
    folder.mkdir(parents=True)
    _git("init", "-q", "-b", "main", cwd=root)
    _git("config", "user.email", "ci@example.invalid", cwd=root)
    _git("config", "user.name", "CI", cwd=root)
    (folder / "test_a.lens.json").write_text(_snapshot(4))
    (folder / "test_b.lens.json").write_text(_snapshot(2))
    _git("add", ".", cwd=root)
    _git("commit", "-q", "-m", "snapshots", cwd=root)
    return root


def test_review_lists_the_snapshot_a_branch_changed_and_draws_it(repository: Path) -> None:
    _git("checkout", "-q", "-b", "widen", cwd=repository)
    (repository / "tests/__snapshots__/test_models/test_a.lens.json").write_text(_snapshot(5))
    _git("commit", "-q", "-am", "widen", cwd=repository)

    done = _cli("review", cwd=repository)  # the merge base with main
    assert done.returncode == 0, done.stderr
    assert "tests/__snapshots__/test_models/test_a.lens.json:" in done.stdout
    assert "test_b" not in done.stdout
    assert re.search(r"out_features\s+4 -> 5", done.stdout), done.stdout
    page = (repository / "lens-artifacts/review.html").read_text()
    assert "test_a.lens.json" in page and "<svg" in page


def test_review_of_a_ref_that_is_not_there_says_what_to_fetch(repository: Path) -> None:
    done = _cli("review", "origin/nowhere", cwd=repository)
    assert done.returncode == 2
    assert "no commit 'origin/nowhere'" in done.stderr and "git fetch" in done.stderr


# -- accept what CI saw ------------------------------------------------------------------------


def _kept(folder: Path, root: Path, snapshot: str, text: str, *, old: Path | None) -> None:
    name = Path(snapshot).name.removesuffix(".lens.json")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.lens.json").write_text(text)
    manifest = {"schema": "pytest-modellens-kept/1", "snapshot": snapshot, "new": f"{name}.lens.json",
                "old_sha256": hashlib.sha256(old.read_bytes()).hexdigest() if old else None, "test": name}  # fmt: skip
    (folder / f"{name}.manifest.json").write_text(json.dumps(manifest))


def test_accept_applies_what_ci_kept_and_refuses_what_moved_or_is_outside(repository: Path) -> None:
    folder = repository / "tests/__snapshots__/test_models"
    artifacts = repository / "downloaded"
    _kept(
        artifacts,
        repository,
        "tests/__snapshots__/test_models/test_a.lens.json",
        _snapshot(5),
        old=folder / "test_a.lens.json",
    )
    _kept(
        artifacts / "b",
        repository,
        "tests/__snapshots__/test_models/test_b.lens.json",
        _snapshot(6),
        old=folder / "test_b.lens.json",
    )
    _kept(artifacts / "c", repository, "../outside.lens.json", _snapshot(6), old=None)
    (folder / "test_b.lens.json").write_text(_snapshot(3))  # edited since CI compared it
    before_b = (folder / "test_b.lens.json").read_bytes()

    dry = _cli("accept", "downloaded", "--dry-run", cwd=repository)
    assert "would accept tests/__snapshots__/test_models/test_a.lens.json" in dry.stdout
    assert (folder / "test_a.lens.json").read_text() == _snapshot(4), "--dry-run wrote"

    done = _cli("accept", "downloaded", cwd=repository)
    assert done.returncode == 2, done.stderr
    assert "accepted tests/__snapshots__/test_models/test_a.lens.json" in done.stdout
    assert "skipped tests/__snapshots__/test_models/test_b.lens.json: it changed since" in done.stdout
    assert "skipped ../outside.lens.json: it is outside" in done.stdout
    assert (folder / "test_a.lens.json").read_text() == _snapshot(5)
    assert (folder / "test_b.lens.json").read_bytes() == before_b
    assert not (repository.parent / "outside.lens.json").exists()


def test_the_workflow_runs_the_tests_and_uploads_the_artifacts() -> None:
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((Path(__file__).parent.parent / "docs/ci/github-actions.yml").read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    runs = " ".join(step.get("run", "") for step in steps)
    assert "pip install torch==2.13.0" in runs and "pytest" in runs
    uploads = [step for step in steps if step.get("uses", "").startswith("actions/upload-artifact")]
    assert any(
        step["with"]["path"].startswith("lens-artifacts") and "failure()" in step.get("if", "")
        for step in uploads
    )
    assert any("junit" in step["with"]["path"] for step in uploads)
