"""The canonical form: Trace <-> plain data <-> snapshot text.

The snapshot text is JSON laid out for review: the schema, a summary, then one line
per module, parameter, node and (when asked for) statistics entry, so a changed shape
is a one-line change in ``git diff``. It is read back with ``json.loads`` only, never
anything that executes code.

Determinism rests on three rules, each kept here:

- order is the model's own: modules and parameters in registration order, nodes in
  execution order; no set or dict-of-ids order ever reaches the text;
- floats are rounded: statistics to :data:`STATS_DIGITS` significant digits, ``-0.0``
  written as ``0.0``;
- nothing varies between runs: no timings, seeds, addresses, devices, paths or versions.

Dumping, loading and dumping again gives the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

from . import ids
from .errors import SnapshotFormatError
from .trace import ModuleInfo, Node, NodeKind, ParamInfo, Stats, TensorSpec, Tolerance, Trace

SCHEMA = "pytest-modellens/2"
#: What each newer schema added, for the message that an older snapshot gets.
SCHEMA_CHANGES = {
    "pytest-modellens/1": (
        "schema 2 records trainable parameters (a 'trainable' count per module, 'trainable_params' and "
        "'frozen_params' in the summary, frozen parameters marked), and optional FLOPs and module nodes"
    ),
}
#: The mark after a parameter's spec when it does not require grad: ``"float32[4, 2] frozen"``.
FROZEN = " frozen"
#: Significant digits kept of each activation statistic.
STATS_DIGITS = 6
STAT_FIELDS = ("mean", "std", "min", "max")
UPDATE_HINT = "run `pytest --lens-update` to rewrite it"


def round_stat(value: float | None) -> float | None:
    if value is None:
        return None
    rounded = float(f"{value:.{STATS_DIGITS}g}")
    return 0.0 if rounded == 0 else rounded


# -- Trace -> data ---------------------------------------------------------------------


def _out(specs: tuple[TensorSpec, ...]) -> str | list[str]:
    return str(specs[0]) if len(specs) == 1 else [str(s) for s in specs]


def _node_data(node: Node) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    kind = node.kind
    if kind is not NodeKind.OP:
        entry["kind"] = kind.value
    if kind.in_forward:
        entry["op"] = node.op
    if node.inputs:
        entry["in"] = list(node.inputs)
    if node.args:
        entry["args"] = dict(node.args)
    if node.outputs:
        entry["out"] = _out(node.outputs)
    if node.flops:  # counted and not zero: a node without the key did none
        entry["flops"] = node.flops
    return entry


def _stats_data(stats: Stats) -> dict[str, Any]:
    entry: dict[str, Any] = {name: round_stat(getattr(stats, name)) for name in STAT_FIELDS}
    entry["nan"] = stats.nan
    entry["inf"] = stats.inf
    return entry


def to_data(trace: Trace) -> dict[str, Any]:
    """The canonical plain-data form of a trace (what the snapshot file holds)."""
    passes = trace.passes  # walks every node: once, not again for `recurrent`
    params, trainable = trace.param_count, trace.trainable_count
    summary = {
        "model": trace.model,
        "inputs": trace.inputs,
        "outputs": trace.outputs,
        "ops": len(trace.op_nodes),
        "tensors": trace.tensor_count,
        "tensor_bytes": trace.tensor_bytes,
        "params": params,
        "trainable_params": trainable,
        "frozen_params": params - trainable,
        "param_bytes": trace.param_bytes,
        "param_ops": trace.param_op_count,
        "modules": max(len(trace.modules) - 1, 0),
        "recurrent": passes > 1,
        "passes": passes,
        "branching": trace.branching,
        "conditional": trace.conditional,
    }
    if trace.has_flops:
        summary["flops"] = trace.flops
    modules = {}
    for m in trace.modules:
        entry: dict[str, Any] = {"class": m.class_name}
        if m.config:
            entry["config"] = m.config
        entry["params"] = m.params
        entry["trainable"] = m.trainable
        entry["calls"] = m.calls
        if m.flops:
            entry["flops"] = m.flops
        modules[m.path] = entry
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "summary": summary,
        "modules": modules,
        "params": {p.ref: f"{p.spec}{'' if p.trainable or p.is_buffer else FROZEN}" for p in trace.params},
        "nodes": {node.node_id: _node_data(node) for node in trace.nodes},
    }
    if trace.has_stats:
        data["stats"] = {
            ref: _stats_data(stats)
            for node in trace.nodes
            for ref, stats in zip(node.refs, node.stats)
            if stats is not None
        }
    return data


# -- data <-> text ---------------------------------------------------------------------


#: One encoder for every value: ``json.dumps`` with options builds a new encoder per call,
#: which is most of the cost of a one-line value.
_json = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode


def format_data(data: dict[str, Any]) -> str:
    """Lay plain data out as snapshot text: one line per entry of each section."""
    sections = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            # '{"key": value}' less its braces is the line: one encoder call per entry.
            lines = ",\n".join(f"    {_json({k: v})[1:-1]}" for k, v in value.items())
            sections.append(f"  {_json(key)}: {{\n{lines}\n  }}")
        else:
            sections.append(f"  {_json(key)}: {_json(value)}")
    return "{\n" + ",\n".join(sections) + "\n}\n"


def dumps(trace: Trace) -> str:
    return format_data(to_data(trace))


def parse(text: str, *, source: str = "snapshot") -> dict[str, Any]:
    """Parse snapshot text to plain data, checking it is a snapshot of this schema."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SnapshotFormatError(
            f"{source} is not valid model-snapshot JSON (line {error.lineno}, column "
            f"{error.colno}: {error.msg}); was it edited by hand? {UPDATE_HINT}"
        ) from None
    if not isinstance(data, dict) or "schema" not in data:
        raise SnapshotFormatError(f"{source} is not a model snapshot (no 'schema' key); {UPDATE_HINT}")
    if data["schema"] != SCHEMA:
        news = SCHEMA_CHANGES.get(data["schema"])
        raise SnapshotFormatError(
            f"{source} was written by schema {data['schema']!r}, this version reads {SCHEMA!r}"
            f"{f' ({news})' if news else ''}; {UPDATE_HINT}"
        )
    return data


# -- data -> Trace ---------------------------------------------------------------------


def _specs(value: Any) -> tuple[TensorSpec, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (TensorSpec.parse(value),)
    return tuple(TensorSpec.parse(v) for v in value)


def from_data(data: dict[str, Any], *, source: str = "snapshot") -> Trace:
    """Build a Trace from canonical data; errors name the entry that is wrong."""
    where = "summary"
    try:
        summary = data["summary"]
        counted = "flops" in summary  # then a node or module without the key did none
        modules = []
        for path, entry in data["modules"].items():
            where = f"module {path!r}"
            modules.append(
                ModuleInfo(
                    path,
                    entry["class"],
                    entry.get("config", ""),
                    entry["params"],
                    entry["calls"],
                    entry["trainable"],
                    entry.get("flops", 0) if counted else None,
                )
            )
        params = []
        for ref, spec in data["params"].items():
            where = f"parameter {ref!r}"
            ref_kind, name = ids.split_ref(ref)
            if ref_kind is not ids.RefKind.PARAM and ref_kind is not ids.RefKind.BUFFER:
                raise ValueError(f"a parameter is named 'param:<name>' or 'buffer:<name>' (got {ref!r})")
            is_buffer, frozen = ref_kind is ids.RefKind.BUFFER, spec.endswith(FROZEN)
            tensor = TensorSpec.parse(spec.removesuffix(FROZEN))
            params.append(ParamInfo(name, is_buffer, tensor, trainable=not (is_buffer or frozen)))
        stats = data.get("stats", {})
        nodes = []
        for node_id, entry in data["nodes"].items():
            where = f"node {node_id!r}"
            kind = NodeKind(entry.get("kind", "op"))
            outputs = _specs(entry.get("out"))
            node = Node(
                node_id,
                kind,
                entry.get("op", kind.value),
                tuple(entry.get("in", ())),
                tuple(entry.get("args", {}).items()),
                outputs,
            )
            node_stats = (
                tuple(Stats(**stats[ref]) if ref in stats else None for ref in node.refs) if stats else ()
            )
            flops = entry.get("flops", 0) if counted else None
            nodes.append(
                Node(node.node_id, kind, node.op, node.inputs, node.args, outputs, node_stats, flops)
            )
        return Trace(
            summary["model"],
            summary["inputs"],
            summary["outputs"],
            tuple(nodes),
            tuple(modules),
            tuple(params),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise SnapshotFormatError(
            f"{source}: {where} is malformed ({type(error).__name__}: {error}); {UPDATE_HINT}"
        ) from None


def loads(text: str, *, source: str = "snapshot") -> Trace:
    """Read snapshot text back into a Trace."""
    return from_data(parse(text, source=source), source=source)


# -- comparison ------------------------------------------------------------------------


def stats_within(old: dict[str, Any], new: dict[str, Any], tolerance: Tolerance) -> bool:
    if old.keys() != new.keys():
        return False
    for ref, new_entry in new.items():
        old_entry = old[ref]
        if old_entry["nan"] != new_entry["nan"] or old_entry["inf"] != new_entry["inf"]:
            return False
        if not all(tolerance.close(old_entry[f], new_entry[f]) for f in STAT_FIELDS):
            return False
    return True


def data_matches(old: dict[str, Any], new: dict[str, Any], tolerance: Tolerance) -> bool:
    """Structure equal exactly, statistics equal within ``tolerance``."""
    if old.keys() != new.keys():
        return False
    for key, value in new.items():
        if key == "stats":
            if not stats_within(old[key], value, tolerance):
                return False
        elif old[key] != value:
            return False
    return True
