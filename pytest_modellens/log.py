"""The readable views of a trace: TorchLens's "Log of ... forward pass" and a torchinfo-style table.

The layer labels here (``linear_1_1``: op, how many of that op so far, how many ops so
far) are global counters: handy to read, useless to diff, so they live only in this
printed view and never in the snapshot data.
"""

from __future__ import annotations

from collections import Counter

from . import ids
from .trace import TensorSpec, Trace


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
        shapes = ", ".join(s.shape_text for s in node.outputs) or "-"
        size = _bytes(sum(s.nbytes for s in node.outputs))
        where = _scope_label(node.scope, calls) if node.scope else ""
        rows.append((f"({index})", labels[node.node_id], shapes, size, where))
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[4]]
        lines.append("\t\t" + "  ".join(cells).rstrip())
    return "\n".join(lines)


# -- the torchinfo-style table ---------------------------------------------------------------


def module_level(path: str, called: set[str]) -> int:
    """A module's level: the model is 1, a module its forward calls 2; never-called containers add none."""
    above = ids.ancestors(path)[:-1]
    return len(above) + (2 if path else 1) - sum(1 for a in above if a not in called)


def module_outputs(trace: Trace) -> dict[str, TensorSpec]:
    """The first tensor each module handed out: the first one made within its path and read outside it.

    Of a module that ran more than once, that is its first call's (as far as the readers
    go). The root's is the model's first output.
    """
    made: dict[str, tuple[str, TensorSpec]] = {}  # reference -> (module path it was made in, spec)
    first: dict[str, TensorSpec] = {}
    for node in trace.nodes:
        reader = node.module_path
        for ref in node.inputs:
            entry = made.get(ref)
            if entry is not None:
                for path in ids.ancestors(entry[0]):
                    if path not in first and not ids.is_within(reader, path):
                        first[path] = entry[1]
        if node.kind.in_forward:
            for ref, spec in zip(node.refs, node.outputs):
                made[ref] = (node.module_path, spec)
    outputs = [spec for node in trace.nodes if node.kind.value == "output" for spec in node.outputs]
    if outputs:
        first[""] = outputs[0]
    return first


def _number(value: int | None) -> str:
    return "--" if value is None else f"{value:,}"


def format_table(trace: Trace, *, depth: int | None = None) -> str:
    """One row per module down to level ``depth`` (all when None), indented by path, then the totals.

    Levels are :func:`module_level`'s, those of ``depth=`` in a trace. Params and trainable
    count every parameter under the module once; the totals count each tensor once, tied
    and shared ones too. FLOPs show when they were counted (``flops=True``).
    """
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"'depth' must be an int of at least 1 or None (got {depth!r})")
    called = {m.path for m in trace.modules if m.calls}
    outputs = module_outputs(trace)
    flops = trace.has_flops
    header = ["Module (class)", "Output shape", "Params", "Trainable"] + (["FLOPs"] if flops else [])
    rows = [header]
    for m in trace.modules:
        if depth is not None and module_level(m.path, called) > depth:
            continue
        indent = "  " * len(ids.ancestors(m.path))
        out = outputs.get(m.path)
        row = [
            f"{indent}{m.path}: {m.class_name}" if m.path else m.class_name,
            "--" if out is None else out.shape_text,
            _number(m.params),
            _number(m.trainable),
        ]
        rows.append(row + ([_number(m.flops)] if flops else []))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        return "  ".join(cells).rstrip()

    rule = "=" * len(line(header))
    params, trainable = trace.param_count, trace.trainable_count
    lines = [rule, line(header), rule, *map(line, rows[1:]), rule]
    lines += [
        f"Total params: {params:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {params - trainable:,}",
        f"Parameter bytes: {trace.param_bytes:,} ({_bytes(trace.param_bytes)})",
        f"Activation bytes: {trace.tensor_bytes:,} ({_bytes(trace.tensor_bytes)})",
    ]
    if flops:
        lines.append(f"Total FLOPs: {trace.flops:,}")
    lines.append(rule)
    return "\n".join(lines)
