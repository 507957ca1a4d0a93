"""The readable log of a trace, in the spirit of TorchLens's "Log of ... forward pass".

The layer labels here (``linear_1_1``: op, how many of that op so far, how many ops so
far) are global counters: handy to read, useless to diff, so they live only in this
printed view and never in the snapshot data.
"""

from __future__ import annotations

from collections import Counter

from . import ids
from .trace import Trace


def _bytes(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count} B"  # pragma: no cover - the loop always returns


def layer_labels(trace: Trace) -> dict[str, str]:
    """TorchLens-style labels by node id: ``input_1``, ``linear_1_1``, ``output_1``."""
    labels: dict[str, str] = {}
    per_kind: Counter[str] = Counter()
    per_op: Counter[str] = Counter()
    step = 0
    for node in trace.nodes:
        if node.kind.in_forward:
            step += 1
            per_op[node.op] += 1
            labels[node.node_id] = f"{node.op}_{per_op[node.op]}_{step}"
        else:
            per_kind[node.kind.value] += 1
            labels[node.node_id] = f"{node.kind.value}_{per_kind[node.kind.value]}"
    return labels


def _scope_label(scope: str, calls: dict[str, int]) -> str:
    """``sigmoid:1``/``sigmoid:2`` for a module that ran twice, the plain path otherwise."""
    path, call = ids.split_scope(scope)
    return f"{path}:{call}" if calls.get(path, 1) > 1 else path


def module_hierarchy(trace: Trace) -> list[str]:
    """Module calls in the order they ran, indented by depth; ``name:k`` for repeated modules."""
    calls = {m.path: m.calls for m in trace.modules}
    lines: list[str] = []
    seen: set[str] = set()
    for node in trace.nodes:
        scope = node.scope
        if not scope or scope in seen:
            continue
        prefixes = ids.ancestors(ids.scope_path(scope))
        for depth, parent in enumerate(prefixes[:-1]):  # parents first, once each
            if parent in calls and parent not in seen:
                seen.add(parent)
                lines.append("\t" * depth + parent)
        seen.add(scope)
        lines.append("\t" * (len(prefixes) - 1) + _scope_label(scope, calls))
    return lines


def format_summary(trace: Trace) -> str:
    labels = layer_labels(trace)
    calls = {m.path: m.calls for m in trace.modules}
    passes = trace.passes
    structure = [
        f"recurrent (at most {passes} passes of one layer)"
        if trace.recurrent
        else "purely feedforward, no recurrence",
        "with branching" if trace.branching else "no branching",
        "with conditional (if-then) branching" if trace.conditional else "no conditional (if-then) branching",
        f"{max(len(trace.modules) - 1, 0)} total modules",
    ]
    lines = [f"Log of {trace.model} forward pass:", "\tStructure:"]
    lines += [f"\t\t- {item}" for item in structure]
    lines += [
        "\tTensor info:",
        (
            f"\t\t- {trace.tensor_count} total tensors ({_bytes(trace.tensor_bytes)}) "
            "computed during forward pass."
        ),
        (
            f"\tParameters: {trace.param_op_count} parameter operations "
            f"({trace.param_count} params total; {_bytes(trace.param_bytes)})"
        ),
        "\tModule Hierarchy:",
    ]
    lines += [f"\t\t{line}" for line in module_hierarchy(trace)]
    lines.append("\tLayers:")
    rows = []
    for index, node in enumerate(trace.nodes):
        shapes = ", ".join(f"[{', '.join(map(str, s.shape))}]" for s in node.outputs) or "-"
        size = _bytes(sum(s.nbytes for s in node.outputs))
        where = _scope_label(node.scope, calls) if node.scope else ""
        rows.append((f"({index})", labels[node.node_id], shapes, size, where))
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[4]]
        lines.append("\t\t" + "  ".join(cells).rstrip())
    return "\n".join(lines)
