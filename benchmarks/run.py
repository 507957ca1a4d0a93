"""How much a trace costs next to the forward pass it records, and next to TorchLens and torchview.

Run from the repository root (several minutes; ``--quick`` for fewer samples)::

    .venv/bin/python benchmarks/run.py

Every figure is taken in one process, with the methods interleaved round by round, so a
neighbour's load on the machine falls on all of them alike. Each sample records CPU time
(this process and the renderer it starts) and wall time; the ratios are CPU time, the
median over rounds of a method's sample over the forward pass timed in the same round.
A sample of a call faster than ~20 ms is the mean of a loop of calls. torch runs one
thread unless ``--threads`` says otherwise, so CPU time is the time of the work itself.
"Faster than" a tool divides its ratio to the forward by ours, each from its own rounds.

- ``forward``: ``model(*args)`` under ``torch.no_grad()``;
- ``floor``: the same under an empty ``TorchFunctionMode`` with two empty global module
  hooks: what any tracer of this design pays before it writes anything down;
- ``modellens``: ``pytest_modellens.trace(model, *args, warmup=False).dumps()`` (``stats=True`` too; the warm-up is one more plain forward on top);
- ``torchlens``: ``torchlens.trace(model, args)`` with its defaults (every activation
  saved), and ``torchlens meta``: with ``save=None`` (metadata only, the fair comparison),
  timed after the others, with forwards of its own, because TorchLens wraps torch globally
  until told to unwrap;
- ``torchview``: ``torchview.draw_graph(model, input_data=args)`` (the graph, not a picture).

Beyond the models: chains of one-op modules and loops of many steps (what a trace adds to
the forward must not grow with the graph), the GPT-2 snapshot match, diff and picture, the
diff of a 20k-node loop changed everywhere, the pictures of a 10k-op chain and a 5000-step
loop with one change, a model holding a 500 MB buffer, and GPT-2 XL built on the meta device.

Memory is measured in a fresh subprocess per figure: the growth of the process's peak
resident set size (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` just before the
call) over its resident size after the model and inputs are built.

Every target is in :data:`TARGETS`; the verdicts are made from it. Results are printed as
tables and written as JSON (``--out``, default ``benchmarks/results/benchmark.json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # models.py, and the package of this checkout

import torch
from models import MODELS, BigBuffer, StepLoop, build, chain, gpt2_with_inserted_layer, step_inputs
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

import pytest_modellens

#: A timing sample shorter than this is a loop of calls, so the clock's resolution and the
#: cost of one interpreter tick do not dominate a 20-microsecond forward.
MIN_SAMPLE_S = 0.02
#: A one-minute load average above this at the start means the machine is not quiet.
BUSY_LOAD = 0.5


@dataclass(frozen=True)
class Target:
    """A figure's target: at most ``limit`` (or at least, for ``at_least``), in ``unit``."""

    text: str
    limit: float
    unit: str
    at_least: bool = False

    def holds(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit

    def shown(self, value: float) -> str:
        sign = ">=" if self.at_least else "<="
        return f"{self.text}: {_value(value, self.unit)} ({sign} {_value(self.limit, self.unit)})"


def _value(value: float, unit: str) -> str:
    if unit == "s":
        return _time(value)
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:.4g} {unit}"


#: Every target, in one place. Ratios are CPU time over the forward timed beside them.
TARGETS: dict[str, Target] = {
    "ratio mlp": Target("reference MLP: trace+dumps / forward", 4.0, "x"),
    "ratio lstm": Target("LSTMCell loop: trace+dumps / forward", 1.8, "x"),
    "ratio transformer": Target("TransformerEncoder: trace+dumps / forward", 1.35, "x"),
    "ratio resnet18": Target("ResNet-18: trace+dumps / forward", 1.2, "x"),
    "ratio gpt2": Target("GPT-2: trace+dumps / forward", 1.2, "x"),
    "stats resnet18": Target("ResNet-18: stats=True trace+dumps / forward", 2.0, "x"),
    "stats transformer": Target("TransformerEncoder: stats=True trace+dumps / forward", 2.0, "x"),
    "stats gpt2": Target("GPT-2: stats=True trace+dumps / forward", 2.0, "x"),
    "vs torchlens meta": Target("faster than TorchLens with save=None (metadata only)", 10.0, "x", True),
    "vs torchview": Target("faster than torchview", 1.0, "x", True),
    "linear chain": Target("chain: trace+dumps over the forward at 10k ops / at 1k ops", 1.3, "x"),
    "linear loop": Target("loop: trace+dumps over the forward at 1000 steps / at 100 steps", 1.3, "x"),
    "match gpt2": Target("GPT-2: matching two identical snapshots", 0.2, "s"),
    "diff picture gpt2": Target("GPT-2: diff + SVG picture, one block inserted", 5.0, "s"),
    "diff 20k": Target("diff of a 20k-node loop, every node changed", 10.0, "s"),
    "chain picture time": Target("10k-op chain, one change: diff + SVG picture", 1.0, "s"),
    "chain picture boxes": Target("10k-op chain, one change: boxes drawn", 50, "boxes"),
    "loop picture time": Target("5000-step loop, one change: diff + SVG picture", 1.0, "s"),
    "loop picture boxes": Target("5000-step loop, one change: boxes drawn", 50, "boxes"),
    "buffer time": Target("500 MB buffer: trace+dumps over the forward", 0.002, "s"),
    "buffer memory": Target("500 MB buffer: peak memory of trace+dumps over the forward's", 5, "MiB"),
    "meta time": Target("GPT-2 XL on meta: trace+dumps", 60.0, "s"),
    "meta memory": Target("GPT-2 XL on meta: peak resident memory of the process", 2048, "MiB"),
}
STATS_MODELS = ("resnet18", "transformer", "gpt2")


# -- methods -----------------------------------------------------------------------------


class _EmptyMode(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


def _call(model: Any, args: tuple[Any, ...], method: str) -> Callable[[], Any]:
    """The callable timed for ``method`` on ``model(*args)``."""

    def forward() -> Any:
        with torch.no_grad():
            return model(*args)

    def floor() -> Any:
        hooks = [
            register_module_forward_pre_hook(lambda module, args: None),
            register_module_forward_hook(lambda module, args, output: None, always_call=True),
        ]
        try:
            with torch.no_grad(), _EmptyMode():
                return model(*args)
        finally:
            for hook in hooks:
                hook.remove()

    if method == "forward":
        return forward
    if method == "floor":
        return floor
    if method == "modellens":
        return lambda: pytest_modellens.trace(model, *args, warmup=False).dumps()
    if method == "modellens stats":
        return lambda: pytest_modellens.trace(model, *args, stats=True, warmup=False).dumps()
    if method in ("torchlens", "torchlens meta"):
        import torchlens

        given = args[0] if len(args) == 1 else list(args)
        if method == "torchlens":
            return lambda: torchlens.trace(model, given)
        return lambda: torchlens.trace(model, given, save=None)
    if method == "torchview":
        import torchview

        return lambda: torchview.draw_graph(model, input_data=list(args), device="cpu")
    raise ValueError(f"unknown method {method!r}")


def _installed(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001  (any failure to read metadata means: not installed)
        return None


def _unwrap_torchlens() -> None:
    from torchlens.backends.torch.wrappers import unwrap_torch

    unwrap_torch()


# -- timing ------------------------------------------------------------------------------


def _cpu() -> float:
    """CPU seconds of this process and of the children it waited for (the picture renderer)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class _Timed:
    """One method under the clock: its warm-up, loop size and samples, or why it failed."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.loops = 1
        self.first_s: float | None = None
        self.cpu: list[float] = []
        self.wall: list[float] = []
        self.error: str | None = None

    def warm_up(self) -> None:
        try:
            self.first_s = _clock(self.fn, 1)[1]
            second = _clock(self.fn, 1)[1]
        except Exception as error:  # noqa: BLE001  (a tool that cannot run a model is a result)
            self.error = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            return
        self.loops = max(1, int(MIN_SAMPLE_S / max(second, 1e-9)))

    def sample(self) -> None:
        if self.error is None:
            cpu, wall = _clock(self.fn, self.loops)
            self.cpu.append(cpu)
            self.wall.append(wall)

    def result(self, base: _Timed | None = None) -> dict[str, Any]:
        return {
            "cpu_s": statistics.median(self.cpu) if self.cpu else None,
            "wall_s": statistics.median(self.wall) if self.wall else None,
            "ratio": _paired_ratio(self, base) if base is not None and base is not self else None,
            "first_s": self.first_s,
            "cpu_samples_s": self.cpu,
            "loops": self.loops,
            "error": self.error,
        }


def _clock(fn: Callable[[], Any], loops: int) -> tuple[float, float]:
    cpu, wall = _cpu(), time.perf_counter()
    for _ in range(loops):
        fn()
    return (_cpu() - cpu) / loops, (time.perf_counter() - wall) / loops


def _interleaved(timed: dict[str, _Timed], repeats: int) -> None:
    # One collection up front, none between samples: the garbage collections a method's
    # allocations trigger are part of what it costs.
    gc.collect()
    for entry in timed.values():
        entry.warm_up()
    for _ in range(repeats):
        for entry in timed.values():
            entry.sample()


def _paired_ratio(entry: _Timed, base: _Timed) -> float | None:
    """The median over rounds of this method's CPU sample over the base's sample of the same round.

    Pairing each sample with the forward pass timed next to it cancels load that comes
    and goes on a shared machine better than a ratio of two medians does.
    """
    ratios = [mine / theirs for mine, theirs in zip(entry.cpu, base.cpu) if theirs > 0]
    return statistics.median(ratios) if ratios else None


def time_model(name: str, *, repeats: int, compare: bool) -> dict[str, Any]:
    """forward, floor, modellens (and with statistics), TorchLens both ways and torchview on one model."""
    load = round(os.getloadavg()[0], 2)
    model, args = build(name)
    methods = ["forward", "floor", "modellens"]
    if name in STATS_MODELS:
        methods.append("modellens stats")
    if compare and _installed("torchview"):
        methods.append("torchview")
    timed = {method: _Timed(_call(model, args, method)) for method in methods}
    _interleaved(timed, repeats)
    row: dict[str, Any] = {"model": name, "description": MODELS[name][0], "load_average": load}
    row["nodes"] = len(pytest_modellens.trace(model, *args).nodes)
    row["methods"] = {method: entry.result(timed["forward"]) for method, entry in timed.items()}
    if compare and _installed("torchlens"):
        # Its own block, with forward passes of its own to pair with: TorchLens keeps torch
        # wrapped from its first call until unwrap_torch().
        block = {
            method: _Timed(_call(model, args, method))
            for method in ("forward", "torchlens", "torchlens meta")
        }
        try:
            _interleaved(block, repeats)
        finally:
            _unwrap_torchlens()
        for method in ("torchlens", "torchlens meta"):
            row["methods"][method] = block[method].result(block["forward"])
    return row


# -- graphs of a size: the cost per op ---------------------------------------------------


def time_scaling(*, repeats: int) -> dict[str, Any]:
    """trace+dumps of chains of 1k and 10k one-op modules, and of loops of 100 and 1000 steps."""
    rows: dict[str, Any] = {}
    for label, make in (
        ("chain 1000", lambda: (chain(1000), (torch.randn(1, 8),))),
        ("chain 10000", lambda: (chain(10000), (torch.randn(1, 8),))),
        ("loop 100", lambda: (StepLoop(), (step_inputs(100),))),
        ("loop 1000", lambda: (StepLoop(), (step_inputs(1000),))),
    ):
        torch.manual_seed(0)
        model, args = make()
        timed = {method: _Timed(_call(model, args, method)) for method in ("forward", "floor", "modellens")}
        _interleaved(timed, max(3, repeats // 3))
        nodes = len(pytest_modellens.trace(model, *args).nodes)
        entry = {"nodes": nodes, "methods": {m: t.result(timed["forward"]) for m, t in timed.items()}}
        entry["per_node_s"] = entry["methods"]["modellens"]["cpu_s"] / nodes
        rows[label] = entry
    # The ratio to the forward timed beside it, not the time per node: a forward of 3000 steps can
    # itself cost more per step than one of 300 on a loaded machine (16x for 10x the steps, in one
    # run); what must not grow is what the trace adds to the forward it records.
    for key, small, large in (
        ("linear chain", "chain 1000", "chain 10000"),
        ("linear loop", "loop 100", "loop 1000"),
    ):
        rows[key] = (
            rows[large]["methods"]["modellens"]["ratio"] / rows[small]["methods"]["modellens"]["ratio"]
        )
    return rows


# -- snapshot, diff and pictures -----------------------------------------------------------


def _boxes(comparison: Any) -> int:
    from pytest_modellens.picture import diff_graph

    return len(diff_graph(comparison).vertices)


def _once(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """A call of seconds: ``repeats`` samples, not looped."""
    entry = _Timed(fn)
    entry.warm_up()
    for _ in range(max(1, repeats - 2)):
        entry.sample()
    return entry.result()


def time_snapshot_work(*, repeats: int) -> dict[str, Any]:
    """What a passing GPT-2 test costs beyond its trace, and what a failing one costs."""
    from pytest_modellens.canonical import data_matches, parse
    from pytest_modellens.extension import ModelSnapshotExtension

    model, args = build("gpt2")
    stored = pytest_modellens.trace(model, *args).dumps()
    fresh = pytest_modellens.trace(model, *args).dumps()
    extension = ModelSnapshotExtension()
    old_data, new_data = parse(stored), json.loads(fresh)
    tolerance = pytest_modellens.Tolerance()
    assert extension.matches(serialized_data=fresh, snapshot_data=stored), "identical GPT-2 snapshots differ"
    changed = pytest_modellens.trace(gpt2_with_inserted_layer(model), *args).dumps()
    path = str(Path(tempfile.mkdtemp(prefix="modellens-bench-")) / "gpt2-inserted-layer.svg")
    timed = {
        "match": _Timed(lambda: extension.matches(serialized_data=fresh, snapshot_data=stored)),
        "compare_parsed": _Timed(lambda: data_matches(old_data, new_data, tolerance)),
        "diff": _Timed(lambda: pytest_modellens.diff(stored, changed)),
        # From the two texts, as a failing test has them: the comparison is made inside.
        "diff_and_picture": _Timed(lambda: pytest_modellens.render_diff(stored, changed, path)),
    }
    _interleaved(timed, repeats)
    changes = pytest_modellens.diff(stored, changed)
    result: dict[str, Any] = {
        "snapshot_bytes": len(stored.encode()),
        "snapshot_lines": stored.count("\n"),
        "diff_changes": len(changes),
        "diff_first_changes": [str(c) for c in changes[:8]],
        "picture_bytes": Path(path).stat().st_size,
    }
    for key, entry in timed.items():
        result[key] = entry.result()
    return result


def time_big_diffs(*, repeats: int) -> dict[str, Any]:
    """The diff of a 20k-node loop changed everywhere; pictures of a 10k chain and a 5000-step loop."""
    from pytest_modellens.differ import compare

    folder = Path(tempfile.mkdtemp(prefix="modellens-bench-"))
    result: dict[str, Any] = {}
    steps = 6666  # three ops a step: 20k nodes
    old = pytest_modellens.trace(StepLoop(), step_inputs(steps)).dumps()
    new = pytest_modellens.trace(StepLoop(width=5, act="sigmoid"), step_inputs(steps, 5)).dumps()
    result["diff 20k"] = _once(lambda: pytest_modellens.diff(old, new), repeats)
    result["diff 20k"]["nodes"] = len(pytest_modellens.loads(old).nodes)
    result["diff 20k"]["changes"] = len(pytest_modellens.diff(old, new))

    x = torch.randn(1, 8)
    pairs = {
        "chain picture": (chain(10000), chain(10000, changed=5000), (x,), (x,)),
        "loop picture": (StepLoop(), StepLoop(scale=3.0), (step_inputs(5000),), (step_inputs(5000),)),
    }
    for label, (before, after, old_args, new_args) in pairs.items():
        old_text = pytest_modellens.trace(before, *old_args).dumps()
        new_text = pytest_modellens.trace(after, *new_args).dumps()
        path = str(folder / f"{label.replace(' ', '-')}.svg")
        entry = _once(
            lambda old_text=old_text, new_text=new_text, path=path: pytest_modellens.render_diff(
                old_text, new_text, path
            ),
            repeats,
        )
        entry["nodes"] = len(pytest_modellens.loads(old_text).nodes)
        entry["boxes"] = _boxes(compare(old_text, new_text))
        entry["picture_bytes"] = Path(path).stat().st_size
        result[label] = entry
    return result


# -- memory (subprocesses) ---------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_kib() -> int:
    peak = _status_kib("VmHWM")
    if peak is not None:
        return peak
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _growth_mib(fn: Callable[[], Any]) -> tuple[float | None, float, float]:
    """(peak growth over the resident size before, in MiB; peak MiB; seconds) of one call."""
    gc.collect()
    before = _status_kib("VmRSS")
    reset = _reset_peak()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = _peak_kib()
    growth = (peak - before) / 1024 if reset and before is not None else None
    return growth, peak / 1024, seconds


def child_memory(name: str, method: str) -> dict[str, Any]:
    """In a fresh process: build the model, then measure one call of ``method``."""
    import pytest_modellens.tracer  # noqa: F401  (imported before the reset, like torch)

    start = time.perf_counter()
    if name == "big-buffer":
        return _child_buffer()
    model, args = build(name)
    build_s = time.perf_counter() - start
    call = _call(model, args, method)
    results: list[Any] = []
    growth, peak, seconds = _growth_mib(lambda: results.append(call()))
    report: dict[str, Any] = {
        "model": name,
        "method": method,
        "build_s": build_s,
        "call_s": seconds,
        "peak_mib": peak,
        "growth_mib": growth,
    }
    if name.endswith("-meta"):
        report["params_on_meta"] = all(p.is_meta for p in model.parameters())
        report["params"] = sum(p.numel() for p in model.parameters())
        report["snapshot_lines"] = results[0].count("\n") if isinstance(results[0], str) else None
    return report


def _child_buffer() -> dict[str, Any]:
    """A 500 MB buffer: the forward's and the trace's peak growth, then their CPU times."""
    torch.manual_seed(0)
    model, x = BigBuffer().eval(), torch.randn(2, 8)
    forward, trace = _call(model, (x,), "forward"), _call(model, (x,), "modellens")
    forward()
    trace()
    forward_growth, _, _ = _growth_mib(forward)
    trace_growth, _, _ = _growth_mib(trace)
    timed = {"forward": _Timed(forward), "modellens": _Timed(trace)}
    _interleaved(timed, 5)
    over = [mine - base for mine, base in zip(timed["modellens"].cpu, timed["forward"].cpu)]
    return {
        "model": "big-buffer",
        "forward_growth_mib": forward_growth,
        "trace_growth_mib": trace_growth,
        "memory_over_forward_mib": None
        if trace_growth is None or forward_growth is None
        else trace_growth - forward_growth,
        "forward_cpu_s": statistics.median(timed["forward"].cpu),
        "trace_cpu_s": statistics.median(timed["modellens"].cpu),
        "time_over_forward_s": statistics.median(over),
    }


def measure_memory(name: str, method: str, *, runs: int = 1) -> dict[str, Any]:
    """The run with the median peak growth of ``runs`` fresh processes (RSS is noisy by a few MiB)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child-memory", name, method]
    reports = []
    for _ in range(runs):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"model": name, "method": method, "error": f"exit {done.returncode}: {tail[:200]}"}
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if len(reports) == 1:
        return reports[0]
    key = "memory_over_forward_mib" if name == "big-buffer" else "growth_mib"
    reports.sort(key=lambda r: r.get(key) if r.get(key) is not None else r.get("peak_mib", 0))
    chosen = reports[len(reports) // 2]
    chosen["runs"] = [r.get(key) for r in reports]
    return chosen


# -- report ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _installed("transformers"),
        "torchlens": _installed("torchlens"),
        "torchview": _installed("torchview"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} us"
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def _cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    if entry.get("error"):
        return f"crashed ({entry['error'].split(':')[0]})"
    if entry.get("ratio") is None:
        return _time(entry.get("cpu_s"))
    return f"{_time(entry['cpu_s'])} ({entry['ratio']:.2f}x)"


def _mib(entry: dict[str, Any] | None, key: str = "growth_mib") -> str:
    if not entry:
        return "-"
    if entry.get("error"):
        return "error"
    value = entry.get(key)
    return "-" if value is None else f"{value:.0f} MiB"


def format_table(results: dict[str, Any]) -> str:
    header = ["model", "nodes", "forward", "floor", "modellens", "modellens stats=True",
              "TorchLens", "TorchLens save=None", "torchview", "peak growth: forward / trace"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    memory = {(m.get("model"), m.get("method")): m for m in results.get("memory", [])}
    for row in results["models"]:
        name, methods = row["model"], row["methods"]
        cells = [f"{name}: {row['description']}", str(row["nodes"]), _time(methods["forward"]["cpu_s"])]
        cells += [
            _cell(methods.get(m))
            for m in ("floor", "modellens", "modellens stats", "torchlens", "torchlens meta", "torchview")
        ]
        cells.append(f"{_mib(memory.get((name, 'forward')))} / {_mib(memory.get((name, 'modellens')))}")
        lines.append("| " + " | ".join(cells) + " |")
    scaling = results.get("scaling")
    if scaling:
        lines += [
            "",
            "| graph of a size | nodes | forward | floor | trace+dumps | per node |",
            "|---|---|---|---|---|---|",
        ]
        for label in ("chain 1000", "chain 10000", "loop 100", "loop 1000"):
            entry = scaling[label]
            methods = entry["methods"]
            lines.append(
                f"| {label} | {entry['nodes']} | {_time(methods['forward']['cpu_s'])} | {_cell(methods['floor'])} "
                f"| {_cell(methods['modellens'])} | {_time(entry['per_node_s'])} |"
            )
    snap, big = results.get("snapshot"), results.get("big")
    if snap or big:
        lines += ["", "| snapshot work | CPU time | wall time | |", "|---|---|---|---|"]
    if snap:
        for key, label in (
            (
                "match",
                f"GPT-2: match two identical snapshots ({snap['snapshot_lines']} lines, extension `matches`)",
            ),
            ("compare_parsed", "of which `data_matches` on parsed data"),
            ("diff", "GPT-2: diff against a copy with one block inserted (`pytest_modellens.diff`)"),
            ("diff_and_picture", "GPT-2: diff + SVG picture of it (`pytest_modellens.render_diff`)"),
        ):
            entry = snap[key]
            extra = f"{snap['diff_changes']} changes" if key == "diff" else ""
            lines.append(f"| {label} | {_time(entry['cpu_s'])} | {_time(entry['wall_s'])} | {extra} |")
    if big:
        entry = big["diff 20k"]
        lines.append(
            f"| diff of a {entry['nodes']}-node loop, every node changed | {_time(entry['cpu_s'])} "
            f"| {_time(entry['wall_s'])} | {entry['changes']} changes |"
        )
        for key, label in (("chain picture", "10k-op chain"), ("loop picture", "5000-step loop")):
            entry = big[key]
            lines.append(
                f"| {label} ({entry['nodes']} nodes), one change: diff + SVG picture | {_time(entry['cpu_s'])} "
                f"| {_time(entry['wall_s'])} | {entry['boxes']} boxes, {entry['picture_bytes'] / 1024:.0f} KiB |"
            )
    buffer, meta = results.get("buffer"), results.get("meta")
    if buffer or meta:
        lines += ["", "| fresh process | |", "|---|---|"]
    if buffer:
        if buffer.get("error"):
            lines.append(f"| 500 MB buffer | {buffer['error']} |")
        else:
            lines.append(
                f"| 500 MB buffer: forward {_time(buffer['forward_cpu_s'])}, trace+dumps {_time(buffer['trace_cpu_s'])} "
                f"| +{_time(buffer['time_over_forward_s'])}, +{buffer['memory_over_forward_mib']:.0f} MiB over the forward |"
            )
    if meta:
        if meta.get("error"):
            lines.append(f"| GPT-2 XL on meta | {meta['error']} |")
        else:
            lines.append(
                f"| GPT-2 XL on meta ({meta['params'] / 1e9:.2f}B parameters): build | {_time(meta['build_s'])} |"
            )
            lines.append(f"| trace + dumps | {_time(meta['call_s'])} |")
            lines.append(f"| peak resident memory of the whole process | {meta['peak_mib']:.0f} MiB |")
            lines.append(f"| parameters still on meta after the trace | {meta['params_on_meta']} |")
    return "\n".join(lines)


def figures(results: dict[str, Any]) -> dict[str, tuple[float | None, str]]:
    """Each target's measured value (None where it was not measured), with a note."""
    found: dict[str, tuple[float | None, str]] = {}
    for row in results["models"]:
        name, methods = row["model"], row["methods"]
        found[f"ratio {name}"] = (methods["modellens"]["ratio"], "")
        if "modellens stats" in methods:
            found[f"stats {name}"] = (methods["modellens stats"]["ratio"], "")
        # Each tool's cost in forwards timed beside it, over trace+dumps's: TorchLens runs in a
        # block of its own, later, so a ratio of CPU times across the two blocks would carry the
        # load that differed between them into the verdict.
        mine = methods["modellens"]["ratio"]
        for tool, key in (("torchlens meta", "vs torchlens meta"), ("torchview", "vs torchview")):
            theirs = methods.get(tool, {}).get("ratio")
            found[f"{key} {name}"] = (
                theirs / mine if theirs and mine else None,
                methods.get(tool, {}).get("error") or "",
            )
    scaling = results.get("scaling") or {}
    for key in ("linear chain", "linear loop"):
        found[key] = (scaling.get(key), "")
    snap = results.get("snapshot") or {}
    found["match gpt2"] = (snap.get("match", {}).get("cpu_s"), "")
    found["diff picture gpt2"] = (snap.get("diff_and_picture", {}).get("cpu_s"), "")
    big = results.get("big") or {}
    found["diff 20k"] = (big.get("diff 20k", {}).get("cpu_s"), "")
    for label in ("chain picture", "loop picture"):
        found[f"{label} time"] = (big.get(label, {}).get("cpu_s"), "")
        found[f"{label} boxes"] = (big.get(label, {}).get("boxes"), "")
    buffer = results.get("buffer") or {}
    found["buffer time"] = (buffer.get("time_over_forward_s"), "")
    found["buffer memory"] = (buffer.get("memory_over_forward_mib"), "")
    meta = results.get("meta") or {}
    found["meta time"] = (meta.get("call_s"), "")
    found["meta memory"] = (meta.get("peak_mib"), "")
    return found


def check_targets(results: dict[str, Any]) -> list[str]:
    verdicts = []
    for key, (value, note) in figures(results).items():
        target = TARGETS[key] if key in TARGETS else TARGETS[key.rsplit(" ", 1)[0]]
        where = f"{key.rsplit(' ', 1)[1]}: " if key not in TARGETS else ""
        if value is None:
            if note:
                verdicts.append(f"n/a   {where}{target.text}: not measured ({note})")
            continue
        verdicts.append(f"{'MET ' if target.holds(value) else 'MISS'}  {where}{target.shown(value)}")
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 samples per figure instead of --repeats")
    parser.add_argument("--repeats", type=int, default=9, help="samples per figure (default 9)")
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--no-compare", action="store_true", help="skip TorchLens and torchview")
    parser.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurements")
    parser.add_argument("--no-meta", action="store_true", help="skip the GPT-2 XL meta-device row")
    parser.add_argument("--no-snapshot", action="store_true", help="skip the GPT-2 match/diff/picture rows")
    parser.add_argument("--no-scaling", action="store_true", help="skip the chains and loops of a size")
    parser.add_argument("--no-big", action="store_true", help="skip the 20k-node diff and the big pictures")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results" / "benchmark.json", help="JSON file to write"
    )
    parser.add_argument("--child-memory", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(options.threads)

    if options.child_memory:
        print(json.dumps(child_memory(*options.child_memory)))
        return 0

    repeats = 3 if options.quick else options.repeats
    if os.getloadavg()[0] > BUSY_LOAD:
        print(
            f"warning: load average {os.getloadavg()[0]:.2f} at the start: the machine has been busy "
            "in the last minute; the CPU-time ratios hold up better than the wall times",
            file=sys.stderr,
        )
    names = [n.strip() for n in options.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    results: dict[str, Any] = {
        "machine": machine(),
        "repeats": repeats,
        "command": " ".join(sys.argv),
        "models": [],
    }

    def step(text: str) -> None:
        print(f"{text} ...", file=sys.stderr, flush=True)

    for name in names:
        step(f"timing {name}")
        results["models"].append(time_model(name, repeats=repeats, compare=not options.no_compare))
    if not options.no_scaling:
        step("timing chains and loops of a size")
        results["scaling"] = time_scaling(repeats=repeats)
    if not options.no_snapshot and "gpt2" in names:
        step("timing GPT-2 snapshot match, diff and picture")
        results["snapshot"] = time_snapshot_work(repeats=repeats)
    if not options.no_big:
        step("timing the 20k-node diff and the big pictures")
        results["big"] = time_big_diffs(repeats=repeats)
    if not options.no_memory:
        results["memory"] = []
        for name in names:
            for method in ("forward", "modellens"):
                step(f"memory of {method} on {name} (subprocess)")
                results["memory"].append(measure_memory(name, method, runs=1 if options.quick else 3))
        step("a 500 MB buffer (subprocess)")
        results["buffer"] = measure_memory("big-buffer", "modellens", runs=1 if options.quick else 3)
    if not options.no_meta:
        step("GPT-2 XL on meta (subprocess)")
        results["meta"] = measure_memory("gpt2-xl-meta", "modellens")
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = check_targets(results)

    m = results["machine"]
    print(
        f"\n{m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, torch {m['torch']} "
        f"({m['torch_threads']} thread{'s' if m['torch_threads'] != 1 else ''}), Python {m['python']}, "
        f"transformers {m['transformers']}, TorchLens {m['torchlens']}, torchview {m['torchview']}; "
        f"CPU time, median of {repeats}; load average {m['load_average_at_start'][0]} at start, "
        f"{m['load_average_at_end'][0]} at end\n"
    )
    print(format_table(results))
    print("\ntargets:\n" + "\n".join(f"  {line}" for line in results["targets"]))
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
