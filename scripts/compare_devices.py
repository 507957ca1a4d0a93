"""Trace every model of the test zoo on the CPU and on a GPU, and compare the snapshots.

The structure (everything but the activation statistics) must be byte-identical; the
statistics must agree within a tolerance, as a snapshot test compares them (except for
models that draw from the device's own RNG). TF32 is turned off so that matmuls and
convolutions on the GPU round like the CPU's.

    .venv/bin/python scripts/compare_devices.py                   # the whole zoo on cuda
    .venv/bin/python scripts/compare_devices.py attention resnetish --rtol 1e-2
    .venv/bin/python scripts/compare_devices.py --device mps

Exit status: 0 when every model agrees, 1 when one differs (each difference is shown),
2 when the device is not available.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from zoo import CASES, ZOO, Case, to_device

import pytest_modellens as lens

#: Most lines of one model's difference shown.
SHOWN = 20


def _available(device: str) -> str | None:
    """Why ``device`` cannot be used, or None when it can."""
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is available (torch.cuda.is_available() is False)"
    try:
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError) as error:
        return f"torch cannot use device {device!r}: {error}"
    return None


def _traces(case: Case, device: str) -> tuple[str, lens.Trace]:
    """The structure-only snapshot text and the traced statistics of one model on ``device``."""
    model, args, kwargs = to_device(case.build(), device)
    structure = lens.trace(model, *args, **kwargs).dumps()
    return structure, lens.trace(model, *args, stats=True, **kwargs)


def compare(case: Case, device: str, tolerance: lens.Tolerance) -> list[str]:
    """What differs between the CPU's trace and ``device``'s; empty when they agree."""
    cpu_structure, cpu_stats = _traces(case, "cpu")
    other_structure, other_stats = _traces(case, device)
    if cpu_structure != other_structure:
        lines = difflib.unified_diff(
            cpu_structure.splitlines(), other_structure.splitlines(), "cpu", device, lineterm="", n=1
        )
        return ["structure differs:", *list(lines)[:SHOWN]]
    expected = cpu_stats.with_tolerance(tolerance)
    if not case.random and expected != other_stats:
        changes = [str(change) for change in lens.diff(expected, other_stats)]
        return [f"statistics differ beyond rtol={tolerance.rtol}, atol={tolerance.atol}:", *changes[:SHOWN]]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", metavar="MODEL", help=f"zoo models (default: all): {', '.join(CASES)}"
    )
    parser.add_argument("--device", default="cuda", help="the device compared with the CPU (default: cuda)")
    parser.add_argument(
        "--rtol", type=float, default=1e-3, help="relative tolerance of statistics (default 1e-3)"
    )
    parser.add_argument(
        "--atol", type=float, default=1e-4, help="absolute tolerance of statistics (default 1e-4)"
    )
    options = parser.parse_args(argv)
    unknown = [name for name in options.names if name not in CASES]
    if unknown:
        parser.error(f"no zoo model named {', '.join(unknown)}; the zoo has {', '.join(CASES)}")

    why_not = _available(options.device)
    if why_not is not None:
        print(f"compare_devices: cannot compare with {options.device}: {why_not}", file=sys.stderr)
        return 2
    if torch.device(options.device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    tolerance = lens.Tolerance(rtol=options.rtol, atol=options.atol)
    cases = [CASES[name] for name in options.names] or ZOO
    failed = 0
    for case in cases:
        problems = compare(case, options.device, tolerance)
        print(f"{'same' if not problems else 'DIFFERENT':9}  {case.name}")
        for line in problems:
            print(f"           {line}")
        failed += bool(problems)
    print(f"\n{len(cases) - failed} of {len(cases)} models trace the same on cpu and {options.device}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
