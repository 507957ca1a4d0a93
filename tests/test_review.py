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


# -- the page and the summary from real runs ------------------------------------------------

MODELS = """
import os
import pytest
import torch
from torch import nn

@pytest.mark.parametrize("width", [2, 3, 4])
def test_mlp(model_trace, snapshot, width):
    hidden = width + int(os.environ.get("LENS_EXTRA", "0")) * (width != 3)
    net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    assert model_trace(net, torch.ones(2, width)) == snapshot
"""


@pytest.fixture
def drifted(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """Three model tests with snapshots; two of the models then widened."""
    pytester.makepyfile(test_many=MODELS)
    assert pytester.runpytest("--lens-update").ret == 0
    monkeypatch.setenv("LENS_EXTRA", "1")
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    return pytester


def test_a_failing_session_writes_one_page_with_every_failure(drifted: pytest.Pytester) -> None:
    result = drifted.runpytest()
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*report: lens-artifacts/index.html*"])
    page = (drifted.path / "lens-artifacts/index.html").read_text()
    assert page.count("<section") == 2
    for width in (2, 4):
        assert f"test_many.py::test_mlp[{width}]" in page
    assert "<b>3</b> models traced" in page and "<b>1</b> passed" in page and "<b>2</b> changed" in page
    assert "<svg" in page and "pytest --lens-update &#x27;test_many.py::test_mlp[2]&#x27;" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")


def test_a_passing_session_writes_no_page_unless_asked(
    drifted: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LENS_EXTRA", "0")
    assert drifted.runpytest().ret == 0
    assert not (drifted.path / "lens-artifacts/index.html").exists()
    assert drifted.runpytest("--lens-report", "out/models.html").ret == 0
    page = (drifted.path / "out/models.html").read_text()
    assert "Every model matched its snapshot" in page and "<b>3</b> passed" in page


def test_under_xdist_the_controller_writes_the_one_page(drifted: pytest.Pytester) -> None:
    result = drifted.runpytest_subprocess("-n", "2")
    assert result.ret == 1
    pages = list(drifted.path.rglob("*.html"))
    assert [p.relative_to(drifted.path).as_posix() for p in pages] == ["lens-artifacts/index.html"]
    page = pages[0].read_text()
    assert page.count("<section") == 2 and "<b>3</b> models traced" in page


def test_the_github_job_summary_gets_the_table(
    drifted: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = drifted.path / "summary.md"
    summary.write_text("## earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert drifted.runpytest().ret == 1
    text = summary.read_text()
    assert text.startswith("## earlier step\n"), "the summary is appended to, not replaced"
    assert "| `test_many.py::test_mlp[2]` |" in text and "| `test_many.py::test_mlp[4]` |" in text
    assert "3 traced, 1 passed, 2 changed, 0 missing" in text and "lens-artifacts/index.html" in text


def test_accept_applies_what_a_failing_run_kept_and_the_next_run_passes(drifted: pytest.Pytester) -> None:
    assert drifted.runpytest().ret == 1
    shutil.copytree(drifted.path / "lens-artifacts", drifted.path / "downloaded")  # as CI uploads it
    done = _cli("accept", "downloaded", cwd=drifted.path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("accepted __snapshots__/test_many/") == 2
    assert drifted.runpytest().ret == 0
    again = _cli("accept", "downloaded", cwd=drifted.path)  # the snapshots moved on since
    assert again.returncode == 2 and again.stdout.count("it changed since the run compared it") == 2


# -- the page in a real browser ------------------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.mark.skipif(_chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)")
def test_the_page_renders_in_chromium(drifted: pytest.Pytester, tmp_path: Path) -> None:
    assert drifted.runpytest().ret == 1
    page = drifted.path / "lens-artifacts/index.html"
    browser = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )
    assert "test_many.py::test_mlp[2]" in dom.stdout and "test_many.py::test_mlp[4]" in dom.stdout
    shot = tmp_path / "page.png"
    subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
                   capture_output=True, timeout=120, check=False)  # fmt: skip
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000, "the screenshot is blank"
