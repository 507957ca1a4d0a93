"""Snapshot files are never lost, shared, overwritten through a link or left unrepairable.

Each test hashes every file under the pytester directory's ``__snapshots__`` before and
after the runs that must not change anything.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pytest_modellens as lens

MODELS = textwrap.dedent(
    """
    import os

    import pytest
    import torch
    from torch import nn

    WIDTH = int(os.environ.get("LENS_WIDTH", "3"))


    def net(depth=2):
        return nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(depth)])


    def test_a(model_trace, snapshot):
        assert model_trace(net(), torch.ones(1, WIDTH)) == snapshot


    def test_b(model_trace, snapshot):
        assert model_trace(net(3), torch.ones(1, WIDTH)) == snapshot


    def test_c(model_trace, snapshot):
        assert model_trace(net(4), torch.ones(1, WIDTH)) == snapshot
    """
)
SNAPSHOTS = Path("__snapshots__/test_models")


def hashes(root: Path) -> dict[str, str]:
    """Every file under ``root``'s snapshot folders (links by where they point), by path."""
    found = {}
    for path in sorted(root.rglob("*")):
        if "__snapshots__" not in path.parts:
            continue
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[key] = "<dir>"
        else:
            found[key] = "<special>"
    return found


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """Three model tests with their snapshots written."""
    pytester.makepyfile(test_models=MODELS)
    result = pytester.runpytest("--lens-update")
    assert result.ret == 0, result.stdout.str()
    assert len(list((pytester.path / SNAPSHOTS).glob("*.lens.json"))) == 3
    return pytester


# -- item 1: an interrupted or partial update deletes nothing ----------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(["-x"], id="-x"),
        pytest.param(["--sw"], id="stepwise"),
        pytest.param(["-k", "test_a"], id="deselected"),
        pytest.param(["test_models.py::test_a"], id="one-test"),
    ],
)
def test_a_partial_update_deletes_no_snapshot(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, arguments: list[str]
) -> None:
    monkeypatch.setenv("LENS_WIDTH", "4")  # every model changed: -x and --sw stop at the first
    before = hashes(suite.path)
    suite.runpytest(*arguments)
    assert hashes(suite.path) == before, "a plain failing run changed a snapshot"
    result = suite.runpytest("--lens-update", *arguments)
    assert "deleted" not in result.stdout.str()
    after = hashes(suite.path)
    assert after.keys() == before.keys(), "an update deleted a snapshot"


def test_a_test_that_raises_before_its_assertion_keeps_its_snapshot(suite: pytest.Pytester) -> None:
    source = (suite.path / "test_models.py").read_text()
    (suite.path / "test_models.py").write_text(
        source.replace(
            "def test_b(model_trace, snapshot):\n", "def test_b(model_trace, snapshot):\n    1 / 0\n"
        )
    )
    before = hashes(suite.path)
    result = suite.runpytest("--lens-update")
    result.assert_outcomes(passed=2, failed=1)
    assert hashes(suite.path) == before


def test_ctrl_c_during_an_update_deletes_nothing(suite: pytest.Pytester) -> None:
    source = (suite.path / "test_models.py").read_text()
    (suite.path / "test_models.py").write_text(
        source.replace(
            "def test_b(model_trace, snapshot):\n",
            "def test_b(model_trace, snapshot):\n    raise KeyboardInterrupt\n",
        )
    )
    before = hashes(suite.path)
    result = suite.runpytest_subprocess("--lens-update")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert "deleted" not in result.stdout.str()
    assert hashes(suite.path) == before


def test_ctrl_c_as_a_signal_during_an_update_deletes_nothing(suite: pytest.Pytester) -> None:
    """A real SIGINT to a real process, while test_b sleeps."""
    source = (suite.path / "test_models.py").read_text()
    (suite.path / "test_models.py").write_text(
        source.replace(
            "def test_b(model_trace, snapshot):\n",
            "def test_b(model_trace, snapshot):\n    import time; print('SLEEPING', flush=True); time.sleep(60)\n",
        )
    )
    before = hashes(suite.path)
    # The child's SIGINT handler set outright: a Python started with SIGINT ignored (as a
    # parent that ignores it passes on) installs none, and the signal would be lost.
    run = (
        "import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.exit(pytest.main(['-p', 'no:cacheprovider', '-s', '--lens-update']))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", run],
        cwd=suite.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "SLEEPING" in line:
            break
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "deleted" not in output
    assert hashes(suite.path) == before


# -- item 2: a skipped test keeps its snapshot ------------------------------------------------


def test_a_skipped_test_keeps_its_snapshot_and_is_not_unused(suite: pytest.Pytester) -> None:
    source = (suite.path / "test_models.py").read_text()
    (suite.path / "test_models.py").write_text(
        source.replace("def test_c(", "@pytest.mark.skipif(True, reason='no GPU here')\ndef test_c(")
    )
    before = hashes(suite.path)
    result = suite.runpytest("--lens-update")
    assert result.ret == 0
    assert hashes(suite.path) == before
    result = suite.runpytest()
    assert result.ret == 0, result.stdout.str()
    assert "unused." not in result.stdout.str()


# -- item 3: other files in __snapshots__ are not ours ---------------------------------------


def test_files_that_are_not_model_snapshots_are_never_touched_or_counted(suite: pytest.Pytester) -> None:
    folder = suite.path / SNAPSHOTS
    (folder / "README.md").write_text("what these files are\n")
    (folder / "test_a.lens.json.bak").write_text("an old copy\n")
    (suite.path / "__snapshots__" / "NOTES.txt").write_text("notes\n")
    (folder / "notes-link.md").symlink_to("README.md")
    before = hashes(suite.path)
    result = suite.runpytest()
    assert result.ret == 0, result.stdout.str()
    assert "unused." not in result.stdout.str()
    suite.runpytest("--lens-update")
    assert hashes(suite.path) == before


# -- item 4: distinct ids, distinct files -----------------------------------------------------


def test_parametrize_ids_that_differ_only_in_unsafe_characters_get_their_own_files(
    pytester: pytest.Pytester,
) -> None:
    ids = ["a/b", "a:b", "a\\\\b", "a*b", "a?b", "a|b", "A", "a", "x" * 300, "x" * 301]
    pytester.makepyfile(
        test_ids=f"""
        import pytest
        import torch
        from torch import nn

        IDS = {ids!r}

        @pytest.mark.parametrize("width", range(1, len(IDS) + 1), ids=IDS)
        def test_width(model_trace, snapshot, width):
            assert model_trace(nn.Linear(width, 1), torch.ones(1, width)) == snapshot
        """
    )
    result = pytester.runpytest("--lens-update")
    assert result.ret == 0, result.stdout.str()
    files = list((pytester.path / "__snapshots__/test_ids").iterdir())
    assert len(files) == len(ids)
    assert len({f.name.casefold() for f in files}) == len(ids), "two names differ only by case"
    assert all(len(f.name) <= 255 for f in files)
    assert any(f.name.startswith("test_width[a_b]") or f.name.startswith("test_width[ab]") for f in files)
    result = pytester.runpytest("-n", "2") if _has_xdist() else pytester.runpytest()
    assert result.ret == 0, result.stdout.str()


def _has_xdist() -> bool:
    import importlib.util

    return importlib.util.find_spec("xdist") is not None


# -- item 5: writes are atomic ------------------------------------------------------------------


def test_a_full_disk_during_an_update_keeps_the_old_snapshot(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_big="""
        import os
        import torch
        from torch import nn

        def test_big(model_trace, snapshot):
            depth = int(os.environ.get("LENS_DEPTH", "60"))
            net = nn.Sequential(*[nn.Linear(4, 4) for _ in range(depth)])
            assert model_trace(net, torch.ones(1, 4)) == snapshot
        """
    )
    assert pytester.runpytest("--lens-update").ret == 0
    snapshot = pytester.path / "__snapshots__/test_big/test_big.lens.json"
    assert snapshot.stat().st_size > 16384, "the snapshot must outgrow the file-size limit below"
    before = hashes(pytester.path)
    # A file-size limit makes a write beyond 16 KiB fail as a full disk does (EFBIG vs ENOSPC).
    pytester.makeconftest(
        """
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.RLIM_INFINITY))
        """
    )
    monkeypatch.setenv("LENS_DEPTH", "70")
    result = pytester.runpytest_subprocess("--lens-update", "-p", "no:cacheprovider")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*could not write*test_big.lens.json*the old snapshot is kept*"])
    assert hashes(pytester.path) == before
    assert not [p for p in snapshot.parent.iterdir() if p.name != snapshot.name], "a temporary file was left"


# -- item 6: any unreadable snapshot says so and --lens-update repairs it ------------------


def _corrupt(path: Path, how: str) -> None:
    good = path.read_text()
    path.unlink()
    if how == "binary":
        path.write_bytes(b"\x00\xff\xfe" * 100)
    elif how == "latin-1":
        path.write_bytes(good.replace('"schema"', '"sch\xe9ma"').encode("latin-1"))
    elif how == "utf-16":
        path.write_bytes(good.encode("utf-16"))
    elif how == "directory":
        path.mkdir()
    elif how == "dangling-link":
        path.symlink_to("nowhere.lens.json")
    elif how == "deep-nesting":
        path.write_text('{"schema": "' + lens.SCHEMA + '", "summary": ' + "[" * 100000 + "]" * 100000 + "}")
    elif how == "huge-int":
        path.write_text(good.replace('"params": 17', '"params": ' + "9" * 5000))
    elif how == "string-stat":
        path.write_text(good.replace('"mean": ', '"mean": "high", "was": '))
    elif how == "fifo":
        os.mkfifo(path)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "binary",
        "latin-1",
        "utf-16",
        "directory",
        "dangling-link",
        "deep-nesting",
        "huge-int",
        "string-stat",
        "fifo",
    ],
)
def test_an_unreadable_snapshot_names_the_file_and_the_repair(
    reference_suite: pytest.Pytester, how: str
) -> None:
    reference_suite.makeini("[pytest]\nlens_stats = true\n")
    assert reference_suite.runpytest("--lens-update").ret == 0
    snapshot = reference_suite.path / "__snapshots__/test_net/test_reference.lens.json"
    good = snapshot.read_bytes()
    _corrupt(snapshot, how)

    # A FIFO would block a careless reader: that case runs in a process of its own, with a timeout.
    run = reference_suite.runpytest_subprocess if how == "fifo" else reference_suite.runpytest
    options = {"timeout": 60} if how == "fifo" else {}
    result = run(**options)
    assert result.ret == 1
    output = result.stdout.str()
    assert "Traceback" not in output and "TypeError" not in output
    result.stdout.fnmatch_lines(["*test_reference*", "*test_reference.lens.json*", "*--lens-update*"])

    result = run("--lens-update", **options)
    assert result.ret == 0, result.stdout.str()
    assert snapshot.is_file() and not snapshot.is_symlink()
    assert snapshot.read_bytes() == good
    assert reference_suite.runpytest().ret == 0


# -- item 7: never through a link to outside ------------------------------------------------------


def test_a_snapshot_linked_to_outside_the_folder_is_replaced_not_written_through(
    reference_suite: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    assert reference_suite.runpytest("--lens-update").ret == 0
    snapshot = reference_suite.path / "__snapshots__/test_net/test_reference.lens.json"
    outside = tmp_path_factory.mktemp("outside") / "precious.json"
    outside.write_bytes(snapshot.read_bytes())
    snapshot.unlink()
    snapshot.symlink_to(outside)
    kept = outside.read_bytes()

    monkeypatch.setenv("LENS_HIDDEN", "5")
    result = reference_suite.runpytest("--lens-update")
    assert result.ret == 0
    assert outside.read_bytes() == kept, "the update wrote through the link"
    assert snapshot.is_file() and not snapshot.is_symlink()
    assert '"float32[4, 5]"' in snapshot.read_text()


# -- pruning: explicit, after complete sessions only ----------------------------------------------


def _rename_test_c(suite: pytest.Pytester) -> None:
    source = (suite.path / "test_models.py").read_text()
    (suite.path / "test_models.py").write_text(source.replace("def test_c(", "def test_c_renamed("))


def test_a_stale_snapshot_is_listed_and_pruned_only_on_request(suite: pytest.Pytester) -> None:
    _rename_test_c(suite)
    folder = suite.path / SNAPSHOTS
    (folder / "README.md").write_text("kept\n")
    result = suite.runpytest("--lens-update")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*no test uses __snapshots__/test_models/test_c.lens.json*", "*pytest --lens-prune*"]
    )
    assert (folder / "test_c.lens.json").is_file(), "an update deleted a snapshot"

    result = suite.runpytest("--lens-prune")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*removed stale model snapshot: __snapshots__/test_models/test_c.lens.json*"]
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "test_a.lens.json",
        "test_b.lens.json",
        "test_c_renamed.lens.json",
    ]


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["-k", "test_a or test_c_renamed"], "*tests were deselected (-k)*"),
        (["-x"], "*-x or --maxfail*"),
        (["test_models.py::test_a"], "*single tests were picked out*"),
    ],
)
def test_prune_refuses_after_a_partial_session(
    suite: pytest.Pytester, arguments: list[str], reason: str
) -> None:
    _rename_test_c(suite)
    assert suite.runpytest("--lens-update").ret == 0
    before = hashes(suite.path)
    result = suite.runpytest("--lens-prune", *arguments)
    result.stdout.fnmatch_lines([f"*--lens-prune removed nothing: {reason.strip('*')}*"])
    assert hashes(suite.path) == before


def test_prune_refuses_after_a_failure_and_keeps_a_skipped_tests_snapshot(suite: pytest.Pytester) -> None:
    source = (suite.path / "test_models.py").read_text()
    source = source.replace("def test_c(", "def test_c_renamed(")
    source = source.replace("def test_b(", "@pytest.mark.skip(reason='later')\ndef test_b(")
    (suite.path / "test_models.py").write_text(
        source + "\n\ndef test_broken(model_trace, snapshot):\n    1 / 0\n"
    )
    before = hashes(suite.path)
    result = suite.runpytest("--lens-prune")
    result.stdout.fnmatch_lines(["*--lens-prune removed nothing: * failed or errored*"])
    assert hashes(suite.path) == before

    (suite.path / "test_models.py").write_text(source)
    result = suite.runpytest("--lens-update", "--lens-prune")
    assert result.ret == 0
    assert (suite.path / SNAPSHOTS / "test_b.lens.json").is_file(), "a skipped test lost its snapshot"
    assert not (suite.path / SNAPSHOTS / "test_c.lens.json").exists()


def test_prune_under_xdist_decides_on_the_controller(suite: pytest.Pytester) -> None:
    _rename_test_c(suite)
    result = suite.runpytest_subprocess("-n", "2", "--lens-update", "--lens-prune")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*removed stale model snapshot: __snapshots__/test_models/test_c.lens.json*"]
    )
    assert sorted(p.name for p in (suite.path / SNAPSHOTS).iterdir()) == [
        "test_a.lens.json",
        "test_b.lens.json",
        "test_c_renamed.lens.json",
    ]
