"""How much a trace costs next to the forward pass it records, and next to TorchLens and torchview.

Run from the repository root (a few minutes; ``--quick`` for about one)::

    .venv/bin/python benchmarks/run.py

Every time is the median over ``--repeats`` samples, taken in one process with the
methods interleaved round by round, so a neighbour's load on the machine falls on all of
them alike; a ratio is the median over rounds of a method's sample over the forward pass
timed in the same round. A sample of a call faster than ~20 ms is the mean of a loop of
calls. The figures are only as good as the machine is quiet: the load average is
recorded, and a warning printed when something else is running.

- ``forward``: ``model(*args)`` under ``torch.no_grad()``;
- ``modellens``: ``pytest_modellens.trace(model, *args).dumps()``;
- ``torchlens``: ``torchlens.trace(model, args)`` (TorchLens 2's name for
  ``log_forward_pass``, default options), timed after the others because it wraps torch
  globally until told to unwrap;
- ``torchview``: ``torchview.draw_graph(model, input_data=args)`` (builds the graph, does
  not render it);
- ``flops=True``: ``trace(model, *args, flops=True).dumps()`` as a ratio to the plain
  ``trace(model, *args).dumps()`` (ResNet-18 and GPT-2).

Memory is measured in a fresh subprocess per figure: the growth of the process's peak
resident set size (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` just before the
call) over its resident size after the model and inputs are built, for the first call of
the method in that process. Resident size is what the operating system charges; torch has
no allocator statistics for CPU memory, and ``tracemalloc`` does not see torch's buffers.

Results are printed as a table and written as JSON (``--out``, default
``benchmarks/results/benchmark.json``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # models.py, and the package of this checkout

import torch
from models import MODELS, build, gpt2_with_inserted_layer

import pytest_modellens

#: A timing sample shorter than this is a loop of calls, so the clock's resolution and the
#: cost of one interpreter tick do not dominate a 20-microsecond forward.
MIN_SAMPLE_S = 0.02
#: A one-minute load average above this at the start means the machine is not quiet.
BUSY_LOAD = 0.5
METHODS = ("forward", "modellens", "torchlens", "torchview")
MEMORY_METHODS = ("forward", "modellens")
TARGETS = {
    "ratio_max": 1.5,  # modellens / forward on resnet18 and gpt2
    "vs_torchlens_min": 10.0,  # torchlens / modellens, every model
    "match_max_s": 0.2,
    "diff_and_picture_max_s": 5.0,
    "meta_trace_max_s": 60.0,
    "meta_peak_max_mb": 2048.0,
}


# -- methods -----------------------------------------------------------------------------


def _call(model: Any, args: tuple[Any, ...], method: str) -> Callable[[], Any]:
    if method == "forward":

        def forward() -> Any:
            with torch.no_grad():
                return model(*args)

        return forward
    if method == "modellens":
        return lambda: pytest_modellens.trace(model, *args).dumps()
    if method == "torchlens":
        import torchlens

        return lambda: torchlens.trace(model, args[0] if len(args) == 1 else list(args))
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


class _Timed:
    """One method under the clock: its warm-up, loop size and samples, or why it failed."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.loops = 1
        self.first_s: float | None = None
        self.samples: list[float] = []
        self.error: str | None = None

    def warm_up(self) -> None:
        try:
            self.first_s = _clock(self.fn, 1)
            second = _clock(self.fn, 1)
        except Exception as error:  # noqa: BLE001  (a tool that cannot run a model is a result)
            self.error = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            return
        self.loops = max(1, int(MIN_SAMPLE_S / max(second, 1e-9)))

    def sample(self) -> None:
        if self.error is None:
            self.samples.append(_clock(self.fn, self.loops))

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


def _clock(fn: Callable[[], Any], loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - start) / loops


def _interleaved(timed: dict[str, _Timed], repeats: int) -> None:
    # One collection up front, none between samples: the garbage collections a method's
    # allocations trigger are part of what it costs.
    gc.collect()
    for entry in timed.values():
        entry.warm_up()
    for _ in range(repeats):
        for entry in timed.values():
            entry.sample()


def _paired_ratio(entry: _Timed, forward: _Timed) -> float | None:
    """The median over rounds of this method's sample over the forward's sample of the same round.

    Pairing each sample with the forward pass timed next to it cancels load that comes
    and goes on a shared machine better than a ratio of two medians does.
    """
    ratios = [mine / base for mine, base in zip(entry.samples, forward.samples)]
    return statistics.median(ratios) if ratios else None


def time_model(name: str, *, repeats: int, compare: bool) -> dict[str, Any]:
    load = round(os.getloadavg()[0], 2)
    model, args = build(name)
    methods = ["forward", "modellens"]
    if compare and _installed("torchview"):
        methods.append("torchview")
    timed = {method: _Timed(_call(model, args, method)) for method in methods}
    _interleaved(timed, repeats)
    baselines = {method: timed["forward"] for method in timed}
    if compare and _installed("torchlens"):
        # Its own block, with forward passes of its own to pair with: TorchLens keeps torch
        # wrapped from its first call until unwrap_torch().
        block = {
            "forward": _Timed(_call(model, args, "forward")),
            "torchlens": _Timed(_call(model, args, "torchlens")),
        }
        try:
            _interleaved(block, repeats)
        finally:
            _unwrap_torchlens()
        timed["torchlens"], baselines["torchlens"] = block["torchlens"], block["forward"]

    row: dict[str, Any] = {"model": name, "description": MODELS[name][0], "load_average": load}
    row["nodes"] = len(pytest_modellens.trace(model, *args).nodes)
    for method in METHODS:
        entry = timed.get(method)
        if entry is None:
            row[method] = {"error": "not installed" if compare else "not run (--no-compare)"}
            continue
        row[method] = {
            "median_s": entry.median,
            "ratio": _paired_ratio(entry, baselines[method]),
            "first_s": entry.first_s,
            "samples_s": entry.samples,
            "loops": entry.loops,
            "error": entry.error,
        }
    return row


# -- FLOPs -------------------------------------------------------------------------------

#: The models the ``flops=True`` row is timed on.
FLOPS_MODELS = ("resnet18", "gpt2")


def time_flops(names: list[str], *, repeats: int) -> list[dict[str, Any]]:
    """``trace(..., flops=True).dumps()`` as a ratio to the plain ``trace(...).dumps()``, per model.

    The two are interleaved round by round and paired, as the forward and the trace are.
    """
    rows = []
    for name in (n for n in FLOPS_MODELS if n in names):
        model, args = build(name)
        timed = {
            "plain": _Timed(lambda m=model, a=args: pytest_modellens.trace(m, *a).dumps()),
            "flops": _Timed(lambda m=model, a=args: pytest_modellens.trace(m, *a, flops=True).dumps()),
        }
        _interleaved(timed, repeats)
        rows.append({
            "model": name,
            "plain_s": timed["plain"].median,
            "flops_s": timed["flops"].median,
            "ratio": _paired_ratio(timed["flops"], timed["plain"]),
            "error": timed["flops"].error or timed["plain"].error,
        })  # fmt: skip
    return rows


def format_flops(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | trace+dumps | with flops=True | ratio |", "|---|---|---|---|"]
    for row in rows:
        ratio = row["error"] or f"{row['ratio']:.2f}x"
        lines.append(f"| {row['model']} | {_ms(row['plain_s'])} | {_ms(row['flops_s'])} | {ratio} |")
    return "\n".join(lines)


# -- snapshot, diff and picture ----------------------------------------------------------


def _diff_picture_function() -> tuple[Callable[..., Any] | None, str]:
    """``pytest_modellens.render_diff(old, new, path)``, if the package has it yet."""
    picture = getattr(pytest_modellens, "render_diff", None)
    if picture is None:
        return None, "pytest_modellens.render_diff is not there yet"
    return picture, "pytest_modellens.render_diff"


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
    timed = {
        "match": _Timed(lambda: extension.matches(serialized_data=fresh, snapshot_data=stored)),
        "compare_parsed": _Timed(lambda: data_matches(old_data, new_data, tolerance)),
    }
    assert extension.matches(serialized_data=fresh, snapshot_data=stored), "identical GPT-2 snapshots differ"
    result: dict[str, Any] = {"snapshot_bytes": len(stored.encode()), "snapshot_lines": stored.count("\n")}

    changed_model = gpt2_with_inserted_layer(model)
    changed = pytest_modellens.trace(changed_model, *args).dumps()
    try:
        from pytest_modellens import differ  # noqa: F401
    except ImportError as error:
        skipped = {"error": f"skipped: pytest_modellens.differ is not there yet ({error})"}
        result["diff"] = result["diff_and_picture"] = skipped
    else:
        changes = pytest_modellens.diff(stored, changed)
        result["diff_changes"] = len(changes)
        result["diff_first_changes"] = [str(c) for c in changes[:8]]
        timed["diff"] = _Timed(lambda: pytest_modellens.diff(stored, changed))
        picture, where = _diff_picture_function()
        if picture is None:
            result["diff_and_picture"] = {"error": f"skipped: {where}"}
        else:
            folder = Path(tempfile.mkdtemp(prefix="modellens-bench-"))
            path = str(folder / "gpt2-inserted-layer.svg")
            # From the two texts, as a failing test has them: the comparison is made inside.
            timed["diff_and_picture"] = _Timed(lambda: picture(stored, changed, path))
            result["picture_function"] = where
    _interleaved(timed, repeats)
    for key, entry in timed.items():
        result[key] = {"median_s": entry.median, "first_s": entry.first_s, "error": entry.error}
    if "diff_and_picture" in timed and timed["diff_and_picture"].error is None:
        result["picture_path"] = path
        result["picture_bytes"] = Path(path).stat().st_size
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
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def child_memory(name: str, method: str) -> dict[str, Any]:
    """In a fresh process: build the model, then measure one call of ``method``."""
    import pytest_modellens.tracer  # noqa: F401  (imported before the reset, like torch)

    start = time.perf_counter()
    model, args = build(name)
    build_s = time.perf_counter() - start
    gc.collect()
    before = _status_kib("VmRSS")
    reset = _reset_peak()
    start = time.perf_counter()
    result = _call(model, args, method)()
    seconds = time.perf_counter() - start
    peak = _peak_kib()
    report: dict[str, Any] = {
        "model": name,
        "method": method,
        "build_s": build_s,
        "call_s": seconds,
        "rss_before_mib": before / 1024 if before is not None else None,
        "peak_mib": peak / 1024,
        "growth_mib": (peak - before) / 1024 if reset and before is not None else None,
        "method_note": "VmHWM reset before the call" if reset else "ru_maxrss of the whole process",
    }
    if name.endswith("-meta"):
        report["params_on_meta"] = all(p.is_meta for p in model.parameters())
        report["params"] = sum(p.numel() for p in model.parameters())
        report["snapshot_lines"] = result.count("\n") if isinstance(result, str) else None
    return report


def measure_memory(name: str, method: str, *, runs: int = 1) -> dict[str, Any]:
    """The run with the median peak growth of ``runs`` fresh processes (RSS is noisy by a few MiB)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child-memory", name, method]
    reports = []
    for _ in range(runs):
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"model": name, "method": method, "error": f"exit {done.returncode}: {tail[:200]}"}
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    reports.sort(key=lambda r: r["growth_mib"] if r["growth_mib"] is not None else r["peak_mib"])
    chosen = reports[len(reports) // 2]
    chosen["growth_runs_mib"] = [r["growth_mib"] for r in reports]
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


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def _cell(entry: dict[str, Any]) -> str:
    if entry.get("error"):
        # The exception's type here, its message in the JSON.
        return f"crashed ({entry['error'].split(':')[0]})" if ":" in entry["error"] else entry["error"]
    if entry.get("ratio") is None:
        return _ms(entry.get("median_s"))
    return f"{_ms(entry['median_s'])} ({entry['ratio']:.2f}x)"


def _mib(entry: dict[str, Any] | None, key: str = "growth_mib") -> str:
    if not entry:
        return "-"
    if entry.get("error"):
        return "error"
    value = entry.get(key)
    return "-" if value is None else f"{value:.0f} MiB"


def format_table(results: dict[str, Any]) -> str:
    header = [
        "model", "nodes", "forward", "modellens trace+dumps", "TorchLens", "torchview",
        "peak growth: forward", "peak growth: trace",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    memory = {(m["model"], m["method"]): m for m in results.get("memory", [])}
    for row in results["models"]:
        name = row["model"]
        lines.append(
            "| "
            + " | ".join([
                f"{name}: {row['description']}", str(row["nodes"]), _ms(row["forward"]["median_s"]),
                _cell(row["modellens"]), _cell(row["torchlens"]), _cell(row["torchview"]),
                _mib(memory.get((name, "forward"))), _mib(memory.get((name, "modellens"))),
            ])
            + " |"
        )  # fmt: skip
    snap = results.get("snapshot")
    if snap:
        lines += ["", "| GPT-2 snapshot work | median |", "|---|---|"]
        lines.append(
            f"| match two identical snapshots (extension `matches`, parses both texts; "
            f"{snap['snapshot_lines']} lines) | {_ms(snap['match']['median_s'])} |"
        )
        lines.append(
            f"| of which `data_matches` on parsed data | {_ms(snap['compare_parsed']['median_s'])} |"
        )
        for key, label in (
            ("diff", "diff against a copy with one block inserted (`pytest_modellens.diff` on the texts)"),
            ("diff_and_picture", "diff + SVG picture of it (`pytest_modellens.render_diff` on the texts)"),
        ):
            entry = snap.get(key, {})
            lines.append(f"| {label} | {entry.get('error') or _ms(entry.get('median_s'))} |")
        if "diff_changes" in snap:
            lines.append(f"| changes reported by the diff | {snap['diff_changes']} |")
    meta = results.get("meta")
    if meta:
        lines += ["", "| GPT-2 XL on meta (1.5B parameters, fresh process) | |", "|---|---|"]
        if meta.get("error"):
            lines.append(f"| error | {meta['error']} |")
        else:
            lines.append(f"| build on meta | {_ms(meta['build_s'])} |")
            lines.append(f"| trace + dumps | {_ms(meta['call_s'])} |")
            lines.append(f"| peak resident memory of the whole process | {meta['peak_mib']:.0f} MiB |")
            lines.append(
                f"| parameters still on meta after the trace | {meta['params_on_meta']} "
                f"({meta['params'] / 1e9:.2f}B parameters) |"
            )
    return "\n".join(lines)


def check_targets(results: dict[str, Any]) -> list[str]:
    verdicts = []

    def verdict(ok: bool | None, text: str) -> None:
        verdicts.append(f"{'n/a ' if ok is None else 'MET ' if ok else 'MISS'}  {text}")

    for row in results["models"]:
        mine = row["modellens"]["ratio"]
        if mine is None:
            verdict(False, f"{row['model']}: the trace failed ({row['modellens']['error']})")
            continue
        if row["model"] in ("resnet18", "gpt2"):
            verdict(
                mine <= TARGETS["ratio_max"], f"{row['model']}: trace+dumps {mine:.2f}x forward (<= 1.5x)"
            )
        for tool, need in (("torchlens", TARGETS["vs_torchlens_min"]), ("torchview", 1.0)):
            other = row[tool].get("ratio")
            if other is None:
                verdict(None, f"{row['model']}: {tool} did not run ({row[tool].get('error')})")
            else:
                verdict(
                    other / mine >= need,
                    f"{row['model']}: {other / mine:.1f}x faster than {tool} (>= {need:g}x)",
                )
    snap = results.get("snapshot")
    if snap:
        match_s = snap["match"]["median_s"]
        verdict(
            match_s < TARGETS["match_max_s"], f"gpt2: matching identical snapshots {_ms(match_s)} (< 0.2 s)"
        )
        both = snap.get("diff_and_picture", {})
        if both.get("median_s") is None:
            verdict(None, f"gpt2: diff + picture not measured ({both.get('error')})")
        else:
            verdict(
                both["median_s"] < TARGETS["diff_and_picture_max_s"],
                f"gpt2: diff + SVG picture {_ms(both['median_s'])} (< 5 s)",
            )
    meta = results.get("meta")
    if meta and not meta.get("error"):
        verdict(
            meta["call_s"] < TARGETS["meta_trace_max_s"],
            f"gpt2-xl on meta: trace {_ms(meta['call_s'])} (< 60 s)",
        )
        verdict(
            meta["peak_mib"] < TARGETS["meta_peak_max_mb"],
            f"gpt2-xl on meta: peak {meta['peak_mib']:.0f} MiB (< 2 GiB)",
        )
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 samples per figure instead of --repeats")
    parser.add_argument("--repeats", type=int, default=9, help="samples per figure (default 9)")
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}"
    )
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's own, one per core)"
    )
    parser.add_argument("--no-compare", action="store_true", help="skip TorchLens and torchview")
    parser.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurements")
    parser.add_argument("--no-meta", action="store_true", help="skip the GPT-2 XL meta-device row")
    parser.add_argument("--no-snapshot", action="store_true", help="skip the GPT-2 match/diff/picture rows")
    parser.add_argument("--no-flops", action="store_true", help="skip the flops=True rows")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results" / "benchmark.json", help="JSON file to write"
    )
    parser.add_argument("--child-memory", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    if options.child_memory:
        print(json.dumps(child_memory(*options.child_memory)))
        return 0

    if options.threads:
        torch.set_num_threads(options.threads)
    repeats = 3 if options.quick else options.repeats
    if os.getloadavg()[0] > BUSY_LOAD:
        print(
            f"warning: load average {os.getloadavg()[0]:.2f} at the start: the machine has been busy "
            "in the last minute, so the timings may be noisy",
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
    for name in names:
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        results["models"].append(time_model(name, repeats=repeats, compare=not options.no_compare))
    if not options.no_snapshot and "gpt2" in names:
        print("timing GPT-2 snapshot match, diff and picture ...", file=sys.stderr, flush=True)
        results["snapshot"] = time_snapshot_work(repeats=repeats)
    if not options.no_flops:
        print("timing flops=True against the plain trace ...", file=sys.stderr, flush=True)
        results["flops"] = time_flops(names, repeats=repeats)
    if not options.no_memory:
        results["memory"] = []
        for name in names:
            for method in MEMORY_METHODS:
                print(f"memory of {method} on {name} (subprocess) ...", file=sys.stderr, flush=True)
                results["memory"].append(measure_memory(name, method, runs=1 if options.quick else 3))
    if not options.no_meta:
        print("GPT-2 XL on meta (subprocess) ...", file=sys.stderr, flush=True)
        results["meta"] = measure_memory("gpt2-xl-meta", "modellens")
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = check_targets(results)

    m = results["machine"]
    print(
        f"\n{m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, torch {m['torch']} "
        f"({m['torch_threads']} threads), Python {m['python']}, transformers {m['transformers']}, "
        f"TorchLens {m['torchlens']}, torchview {m['torchview']}; median of {repeats}; "
        f"load average {m['load_average_at_start'][0]} at start, {m['load_average_at_end'][0]} at end\n"
    )
    print(format_table(results))
    if results.get("flops"):
        print("\n" + format_flops(results["flops"]))
    print("\ntargets:\n" + "\n".join(f"  {line}" for line in results["targets"]))
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
