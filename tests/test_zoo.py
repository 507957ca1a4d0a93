"""Every zoo model traces, to the same bytes every time, and leaves the model as it was."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from unchanged import assert_unchanged, observe
from zoo import CASES, ZOO, Case

import pytest_modellens as lens
from pytest_modellens.render import trace_graph

by_name = pytest.mark.parametrize("case", ZOO, ids=lambda case: case.name)


@by_name
def test_snapshot(case: Case, model_trace: Any, snapshot: Any) -> None:
    model, args, kwargs = case.build()
    assert model_trace(model, *args, **kwargs) == snapshot


@by_name
def test_three_traces_give_the_same_bytes_and_leave_the_model_as_it_was(case: Case) -> None:
    model, args, kwargs = case.build()
    before = observe(model, (args, kwargs))
    texts = []
    for attempt in range(3):
        texts.append(lens.trace(model, *args, stats=True, **kwargs).dumps())
        assert_unchanged(before, observe(model, (args, kwargs)), f"{case.name}, trace {attempt + 1}")
    assert texts[0] == texts[1] == texts[2]


@by_name
def test_structure_flags_and_the_rolled_view(case: Case) -> None:
    model, args, kwargs = case.build()
    trace = lens.trace(model, *args, **kwargs)
    assert (trace.recurrent, trace.branching, trace.conditional, trace.passes) == (
        case.recurrent,
        case.branching,
        case.conditional,
        case.passes,
    )
    # The rolled picture draws a module called N times once, marked xN: the recurrent layer
    # with its pass count, and nothing rolled up in a model without recurrence.
    rolled = trace_graph(trace, rolled=True).vertices.values()
    assert max((vertex.count for vertex in rolled), default=1) == case.passes


@pytest.mark.parametrize("steps", [5, 3])
def test_the_summary_of_a_loop_counts_its_passes(steps: int) -> None:
    model, (sequence,), _ = CASES["loop_cell"].build()
    summary = str(lens.trace(model, sequence[:steps]))
    assert f"{steps} passes" in summary
    assert summary.count("cell:") >= steps  # each call of the cell is listed


DUMP_ALL = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import pytest_modellens as lens
    from zoo import ZOO

    for case in ZOO:
        model, args, kwargs = case.build()
        sys.stdout.write(f"== {case.name}\\n" + lens.trace(model, *args, stats=True, **kwargs).dumps())
    """
)


def test_the_whole_zoo_dumps_the_same_bytes_in_processes_with_different_hash_seeds() -> None:
    tests_dir = str(Path(__file__).parent)
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", DUMP_ALL, tests_dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        for seed in ("1", "2")
    ]
    outputs = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        outputs.append(out)
    assert outputs[0].count("== ") == len(ZOO)
    assert outputs[0] == outputs[1]


def _compare_devices_script() -> Any:
    path = Path(__file__).parent.parent / "scripts" / "compare_devices.py"
    spec = importlib.util.spec_from_file_location("compare_devices", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_device_comparison_script_compares_and_says_when_it_cannot(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = _compare_devices_script()
    assert script.main(["--device", "cpu", "in_place", "loop_cell"]) == 0  # the CPU against itself
    assert "2 of 2 models trace the same" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert script.main([]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err
