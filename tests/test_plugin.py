"""End-to-end runs of the plugin: real pytest sessions in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

import pytest_modellens as lens

SNAPSHOT = Path("__snapshots__/test_net/test_reference.lens.json")


def test_update_writes_the_snapshot_and_a_plain_run_passes(reference_suite: pytest.Pytester) -> None:
    result = reference_suite.runpytest("--lens-update")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*1 snapshot generated*"])
    snapshot = reference_suite.path / SNAPSHOT
    text = snapshot.read_text()
    assert '"input_to_hidden/linear": {"op": "linear"' in text
    assert '"out": "float32[4, 1]"' in text

    result = reference_suite.runpytest()
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*1 passed*"])
    assert snapshot.read_text() == text


def test_a_changed_model_fails_naming_the_snapshot_and_the_fix(
    reference_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference_suite.runpytest("--lens-update").assert_outcomes(passed=1)
    before = (reference_suite.path / SNAPSHOT).read_bytes()

    monkeypatch.setenv("LENS_HIDDEN", "5")
    result = reference_suite.runpytest("-vv")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*model snapshot test_reference changed*",
            f"*{SNAPSHOT}*",
            "*pytest --lens-update*",
        ]
    )
    assert (reference_suite.path / SNAPSHOT).read_bytes() == before, "a failing run changed the snapshot"

    result = reference_suite.runpytest("--lens-update")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*1 snapshot updated*"])
    assert '"float32[4, 5]"' in (reference_suite.path / SNAPSHOT).read_text()
    assert reference_suite.runpytest().ret == 0


def test_a_missing_snapshot_fails_and_says_how_to_write_it(reference_suite: pytest.Pytester) -> None:
    result = reference_suite.runpytest()
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*model snapshot test_reference does not exist*", "*pytest --lens-update*"])
    assert not (reference_suite.path / SNAPSHOT).exists()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda text: text.replace(lens.SCHEMA, "pytest-modellens/0"),
            "*written by schema 'pytest-modellens/0'*",
        ),
        (lambda text: text[: len(text) // 2], "*not valid model-snapshot JSON (line*"),
    ],
    ids=["other-schema", "truncated"],
)
def test_an_unreadable_snapshot_fails_with_a_message_not_a_traceback(
    reference_suite: pytest.Pytester, edit, expected: str
) -> None:
    reference_suite.runpytest("--lens-update").assert_outcomes(passed=1)
    snapshot = reference_suite.path / SNAPSHOT
    snapshot.write_text(edit(snapshot.read_text()))
    broken = snapshot.read_bytes()

    result = reference_suite.runpytest("-vv")
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        ["*model snapshot test_reference cannot be read*", expected, "*pytest --lens-update*"]
    )
    result.stdout.no_fnmatch_line("*Traceback*")
    assert snapshot.read_bytes() == broken

    assert reference_suite.runpytest("--lens-update").ret == 0
    assert reference_suite.runpytest().ret == 0


def test_several_assertions_in_one_test_get_one_file_each(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_two="""
        import torch
        from torch import nn

        def test_shapes(model_trace, snapshot):
            net = nn.Linear(3, 2)
            assert model_trace(net, torch.ones(1, 3)) == snapshot
            assert model_trace(net, torch.ones(5, 3)) == snapshot
        """
    )
    assert pytester.runpytest("--lens-update").ret == 0
    folder = pytester.path / "__snapshots__/test_two"
    assert sorted(p.name for p in folder.iterdir()) == ["test_shapes.1.lens.json", "test_shapes.lens.json"]
    assert (
        '"input:input": {"kind": "input", "out": "float32[5, 3]"}'
        in (folder / "test_shapes.1.lens.json").read_text()
    )
    assert pytester.runpytest().ret == 0


MANY_TESTS = """
import os
import pytest

import pytest_modellens as lens
import torch
from torch import nn

@pytest.mark.parametrize("width", [2, 3, 4, 5])
def test_mlp(model_trace, snapshot, width):
    hidden = width + int(os.environ.get("LENS_EXTRA", "0"))
    net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    assert model_trace(net, torch.ones(2, width)) == snapshot
"""


def _snapshot_bytes(pytester: pytest.Pytester) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in pytester.path.glob("__snapshots__/test_many/*.lens.json")}


def test_xdist_workers_write_the_bytes_a_plain_run_writes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_many=MANY_TESTS)
    result = pytester.runpytest_subprocess("-n", "2", "--lens-update")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*4 snapshots generated*"])
    written = _snapshot_bytes(pytester)
    assert len(written) == 4

    for name in written:
        (pytester.path / "__snapshots__/test_many" / name).unlink()
    assert pytester.runpytest("--lens-update").ret == 0
    assert _snapshot_bytes(pytester) == written


def test_passing_and_failing_runs_under_xdist(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_many=MANY_TESTS)
    assert pytester.runpytest("--lens-update").ret == 0
    written = _snapshot_bytes(pytester)

    result = pytester.runpytest_subprocess("-n", "2")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*4 passed*"])

    monkeypatch.setenv("LENS_EXTRA", "1")
    result = pytester.runpytest_subprocess("-n", "2", "-vv")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*4 failed*"])
    assert result.stdout.str().count("pytest --lens-update") >= 4
    assert _snapshot_bytes(pytester) == written, "a failing run changes no snapshot"
    # The workers' failures reach the controller's "model diffs" section, each with its kept snapshot.
    section = result.stdout.str().split("= model diffs =", 1)[1]
    assert section.count("  new snapshot: lens-artifacts/") == 4
    assert len(list((pytester.path / "lens-artifacts").glob("*.lens.json"))) == 4


def test_bad_option_values_are_usage_errors(reference_suite: pytest.Pytester) -> None:
    result = reference_suite.runpytest("--lens-rtol=-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--lens-rtol*must be a non-negative number (got '-1')*"])

    reference_suite.makeini("[pytest]\nlens_atol = tiny\n")
    result = reference_suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini key 'lens_atol'*must be a non-negative number (got 'tiny')*"])

    reference_suite.makeini("[pytest]\nlens_seed = abc\n")
    result = reference_suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini key 'lens_seed' must be a whole number (got 'abc')*"])

    reference_suite.makeini("[pytest]\nlens_picture_format = gif\n")
    result = reference_suite.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*ini key 'lens_picture_format' has a bad value 'gif': expected one of svg, png*"]
    )


def test_the_fixture_seeds_torch_and_restores_the_global_stream(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_seed="""
        import torch

        torch.manual_seed(123)
        EXPECTED = torch.rand(3, generator=torch.Generator().manual_seed(123))

        def test_uses_fixture(model_trace):
            assert torch.equal(torch.rand(2), torch.rand(2, generator=torch.Generator().manual_seed(7)))

        def test_after_it():
            assert torch.equal(torch.rand(3), EXPECTED)
        """
    )
    result = pytester.runpytest("-p", "no:randomly", "--lens-seed", "7")
    result.assert_outcomes(passed=2)


def test_a_run_that_does_not_use_the_plugin_does_not_import_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
        import sys

        def test_no_torch():
            assert "torch" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:anyio")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugins:*modellens*"])
