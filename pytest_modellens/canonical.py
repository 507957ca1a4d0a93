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
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

from . import ids
from .errors import SnapshotFormatError
from .gcpause import gc_paused
from .trace import ModuleInfo, Node, NodeKind, ParamInfo, Stats, TensorSpec, Tolerance, Trace

SCHEMA = "pytest-modellens/1"
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


_OP, _CONDITION = NodeKind.OP, NodeKind.CONDITION


def _node_data(node: Node) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    kind = node.kind
    if kind is _OP:
        entry["op"] = node.op
    else:
        entry["kind"] = kind.value
        if kind is _CONDITION:
            entry["op"] = node.op
    if node.inputs:
        entry["in"] = list(node.inputs)
    if node.args:
        entry["args"] = dict(node.args)
    if node.outputs:
        entry["out"] = _out(node.outputs)
    return entry


def _stats_data(stats: Stats) -> dict[str, Any]:
    entry: dict[str, Any] = {name: round_stat(getattr(stats, name)) for name in STAT_FIELDS}
    entry["nan"] = stats.nan
    entry["inf"] = stats.inf
    return entry


def to_data(trace: Trace) -> dict[str, Any]:
    """The canonical plain-data form of a trace (what the snapshot file holds)."""
    param_ops, passes = trace.parameter_use()  # one walk of the nodes for both
    summary = {
        "model": trace.model,
        "inputs": trace.inputs,
        "outputs": trace.outputs,
        "ops": len(trace.op_nodes),
        "tensors": trace.tensor_count,
        "tensor_bytes": trace.tensor_bytes,
        "params": trace.param_count,
        "param_bytes": trace.param_bytes,
        "param_ops": param_ops,
        "modules": max(len(trace.modules) - 1, 0),
        "recurrent": passes > 1,
        "passes": passes,
        "branching": trace.branching,
        "conditional": trace.conditional,
    }
    modules = {}
    for m in trace.modules:
        entry: dict[str, Any] = {"class": m.class_name}
        if m.config:
            entry["config"] = m.config
        entry["params"] = m.params
        entry["calls"] = m.calls
        modules[m.path] = entry
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "summary": summary,
        "modules": modules,
        "params": {p.ref: str(p.spec) for p in trace.params},
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


def _make_encoder() -> Callable[[Any], str]:
    """``json.dumps(value, ensure_ascii=False, separators=(", ", ": "))``, made once.

    ``json.dumps`` with options builds a new encoder per call, and each call of an
    encoder's ``encode`` builds a new C encoder inside it: most of the cost of a one-line
    value. The C encoder is made once here (where this Python has it) and called directly;
    the text is the same either way.
    """
    options = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return options.encode
    encode = make(
        None, options.default, encode_basestring, None, ": ", ", ", False, False, True
    )  # no circular check (the data is a tree), a TypeError for what JSON cannot hold, NaN allowed

    def encoded(value: Any) -> str:
        return "".join(encode(value, 0))

    return encoded


_json = _make_encoder()


def _encoded(value: Any) -> str:
    """``_json(value)``, with the plain values most entries are written here, as JSON writes them."""
    kind = value.__class__
    if kind is str:
        return encode_basestring(value)
    if kind is int:
        return int.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    return _json(value)


def _entry(key: Any, value: Any) -> str:
    """One line of a section: ``"key": value``."""
    if key.__class__ is str:
        return f"    {encode_basestring(key)}: {_encoded(value)}"
    return f"    {_json({key: value})[1:-1]}"  # JSON writes a number or bool key as a string


def format_data(data: dict[str, Any]) -> str:
    """Lay plain data out as snapshot text: one line per entry of each section."""
    sections = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            lines = ",\n".join([_entry(k, v) for k, v in value.items()])
            sections.append(f"  {_json(key)}: {{\n{lines}\n  }}")
        else:
            sections.append(f"  {_json(key)}: {_json(value)}")
    return "{\n" + ",\n".join(sections) + "\n}\n"


@gc_paused
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
        raise SnapshotFormatError(
            f"{source} was written by schema {data['schema']!r}, this version reads {SCHEMA!r}; {UPDATE_HINT}"
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
        modules = []
        for path, entry in data["modules"].items():
            where = f"module {path!r}"
            modules.append(
                ModuleInfo(path, entry["class"], entry.get("config", ""), entry["params"], entry["calls"])
            )
        params = []
        for ref, spec in data["params"].items():
            where = f"parameter {ref!r}"
            ref_kind, name = ids.split_ref(ref)
            if ref_kind is not ids.RefKind.PARAM and ref_kind is not ids.RefKind.BUFFER:
                raise ValueError(f"a parameter is named 'param:<name>' or 'buffer:<name>' (got {ref!r})")
            params.append(ParamInfo(name, ref_kind is ids.RefKind.BUFFER, TensorSpec.parse(spec)))
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
            nodes.append(Node(node.node_id, kind, node.op, node.inputs, node.args, outputs, node_stats))
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
