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


_OP = NodeKind.OP


def _node_data(node: Node) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    kind = node.kind
    if kind is _OP:  # most nodes: answered without the enum's property
        entry["op"] = node.op
    else:
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
    param_ops, passes = trace.parameter_use()  # one walk of the nodes for both
    params, trainable = trace.param_count, trace.trainable_count
    tensors, tensor_bytes = trace.output_totals()
    summary = {
        "model": trace.model,
        "inputs": trace.inputs,
        "outputs": trace.outputs,
        "ops": len(trace.op_nodes),
        "tensors": tensors,
        "tensor_bytes": tensor_bytes,
        "params": params,
        "trainable_params": trainable,
        "frozen_params": params - trainable,
        "param_bytes": trace.param_bytes,
        "param_ops": param_ops,
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
            try:
                # One line per entry made by C functions mapped over the section (a line per
                # node: Python-level work per line is most of a small model's dump).
                lines = ",\n".join(
                    map(_LINE.format, map(encode_basestring, value), map(_json, value.values()))
                )
            except TypeError:  # a key that is not a string (only in data not made by a trace)
                lines = ",\n".join([_entry(k, v) for k, v in value.items()])
            sections.append(f"  {_json(key)}: {{\n{lines}\n  }}")
        else:
            sections.append(f"  {_json(key)}: {_json(value)}")
    return "{\n" + ",\n".join(sections) + "\n}\n"


#: One entry of a section: ``"key": value``, both written as JSON.
_LINE = "    {}: {}"


@gc_paused
def dumps(trace: Trace) -> str:
    return format_data(to_data(trace))


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing a key written twice (``json.loads`` would keep the last)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey(key)
        found[key] = value
    return found


def parse(text: str, *, source: str = "snapshot") -> dict[str, Any]:
    """Parse snapshot text to plain data, checking it is a snapshot of this schema."""
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as error:
        raise SnapshotFormatError(f"{source} holds the key {error.args[0]!r} twice; {UPDATE_HINT}") from None
    except json.JSONDecodeError as error:
        raise SnapshotFormatError(
            f"{source} is not valid model-snapshot JSON (line {error.lineno}, column "
            f"{error.colno}: {error.msg}); was it edited by hand? {UPDATE_HINT}"
        ) from None
    except RecursionError:
        raise SnapshotFormatError(
            f"{source} is nested too deeply to be a model snapshot; {UPDATE_HINT}"
        ) from None
    except ValueError as error:  # an integer of thousands of digits, say
        raise SnapshotFormatError(
            f"{source} holds a value no snapshot has ({error}); {UPDATE_HINT}"
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


#: Specs by their text: a snapshot spells few distinct ones many times, and a spec is immutable.
_parsed_specs: dict[str, TensorSpec] = {}


def _spec(text: str) -> TensorSpec:
    spec = _parsed_specs.get(text)
    if spec is None:
        spec = TensorSpec.parse(text)  # raises ValueError on a bad one, which is not kept
        if len(_parsed_specs) < 4096:
            _parsed_specs[text] = spec
    return spec


def _specs(value: Any) -> tuple[TensorSpec, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (_spec(value),)
    return tuple(map(_spec, value))


#: Node kinds by the name a snapshot writes.
_KINDS = {kind.value: kind for kind in NodeKind}


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
            kind_name = entry.get("kind", "op")
            kind = _KINDS.get(kind_name) if kind_name.__class__ is str else None
            if kind is None:
                kind = NodeKind(kind_name)  # the ValueError that names what is wrong
            outputs = _specs(entry.get("out"))
            op, inputs, args = (
                entry.get("op", kind.value),
                tuple(entry.get("in", ())),
                tuple(entry.get("args", {}).items()),
            )
            node_stats: tuple[Stats | None, ...] = ()
            if stats:  # by the references of the node's outputs
                refs = Node(node_id, kind, op, inputs, args, outputs).refs
                node_stats = tuple(Stats(**stats[ref]) if ref in stats else None for ref in refs)
            flops = entry.get("flops", 0) if counted else None
            nodes.append(Node(node_id, kind, op, inputs, args, outputs, node_stats, flops))
        return Trace(
            summary["model"],
            summary["inputs"],
            summary["outputs"],
            tuple(nodes),
            tuple(modules),
            tuple(params),
        )
    except KeyError as error:
        raise SnapshotFormatError(
            f"{source}: {where} has no {error.args[0]!r} field; {UPDATE_HINT}"
        ) from None
    except (TypeError, ValueError, AttributeError) as error:
        raise SnapshotFormatError(f"{source}: {where} is malformed ({error}); {UPDATE_HINT}") from None


def loads(text: str, *, source: str = "snapshot") -> Trace:
    """Read snapshot text back into a Trace, checking the whole file (see :func:`check`)."""
    data = parse(text, source=source)
    return check(data, source=source)


def loads_with_data(text: str, *, source: str = "snapshot") -> tuple[Trace, dict[str, Any]]:
    """:func:`loads`, and the Trace's canonical data, which the check has made anyway (the differ's)."""
    return _checked(parse(text, source=source), source)


def checked_data(text: str, *, source: str = "snapshot") -> dict[str, Any]:
    """Parse snapshot text and check the whole file; the plain data."""
    data = parse(text, source=source)
    check(data, source=source)
    return data


# -- checks on load ----------------------------------------------------------------------

SECTIONS = ("schema", "summary", "modules", "params", "nodes")
OPTIONAL_SECTIONS = ("stats",)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else "nothing"
    return text if len(text) <= 80 else text[:77] + "..."


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: The type each known field of a node and a module entry must have, as a check and its wording.
_FIELD_TYPES: dict[str, dict[str, tuple[Any, str]]] = {
    "nodes": {
        "kind": (lambda v: isinstance(v, str), "a string"),
        "op": (lambda v: isinstance(v, str), "a string"),
        "in": (_is_text_list, "a list of strings"),
        "args": (lambda v: isinstance(v, dict), "a mapping"),
        "out": (lambda v: isinstance(v, str) or _is_text_list(v), "a spec or a list of specs"),
    },
    "modules": {
        "class": (lambda v: isinstance(v, str), "a string"),
        "config": (lambda v: isinstance(v, str), "a string"),
        "params": (_is_count, "a whole number"),
        "calls": (_is_count, "a whole number"),
    },
}


def _check_types(data: dict[str, Any], wrong: Any) -> None:
    """Each entry of the node, module and parameter sections has fields of the right types."""
    for section, fields in _FIELD_TYPES.items():
        for key, entry in data[section].items():
            if not isinstance(entry, dict):
                raise wrong(f"{section} entry {key!r} is not a mapping (got {_short(entry)})")
            for field, (is_right, kind) in fields.items():
                if field in entry and not is_right(entry[field]):
                    raise wrong(
                        f"{section} entry {key!r} has {field} {_short(entry[field])}, which is not {kind}"
                    )
    for ref, spec in data["params"].items():
        if not isinstance(spec, str):
            raise wrong(f"parameter {ref!r} has the spec {_short(spec)}, which is not a string")


def _disagreement(section: str, key: str, stored: Any, derived: Any) -> str:
    """How one entry of a file differs from what the file's own Trace writes there."""
    entry = f"{section} entry {key!r}"
    if derived is None:
        return f"{entry} belongs to nothing in the file"
    if isinstance(stored, dict) and isinstance(derived, dict):
        for field in [*stored, *(f for f in derived if f not in stored)]:
            if field not in derived:
                return f"{entry} has a field this schema does not know: {field!r}"
            if field not in stored:
                return f"{entry} lacks its {field!r} field"
            if stored[field] != derived[field]:
                return f"{entry} holds {field} {_short(stored[field])}, which the file's other entries make {_short(derived[field])}"
    return f"{entry} holds {_short(stored)}, which reads back as {_short(derived)}"


def check(data: dict[str, Any], *, source: str = "snapshot") -> Trace:
    """Check a parsed snapshot as a whole and return its Trace; :class:`SnapshotFormatError` naming what is wrong.

    Beyond each entry's own form: the sections are the schema's, every reference a node
    reads resolves to an earlier node, a parameter, a buffer or a constant, statistics are
    numbers, and the file is what its own Trace writes (so counts in the summary agree
    with the nodes, and no entry holds a field the schema does not know).
    """
    return _checked(data, source)[0]


#: How a constant's reference starts (``const:float32[2]``): read for its spec, never looked up.
_CONST = ids.const_ref("")


def _checked(data: dict[str, Any], source: str) -> tuple[Trace, dict[str, Any]]:
    """:func:`check`, returning the Trace's own data as well."""

    def wrong(problem: str) -> SnapshotFormatError:
        return SnapshotFormatError(f"{source} does not hold together: {problem}; {UPDATE_HINT}")

    for section in SECTIONS:
        if section not in data:
            raise wrong(f"it has no {section!r} section")
    unknown = [key for key in data if key not in SECTIONS + OPTIONAL_SECTIONS]
    if unknown:
        raise wrong(f"it has a section this schema does not know: {unknown[0]!r}")
    for section in (*SECTIONS[1:], *(s for s in OPTIONAL_SECTIONS if s in data)):
        if not isinstance(data[section], dict):
            raise wrong(f"its {section!r} section is not a mapping (got {type(data[section]).__name__})")
    _check_types(data, wrong)
    for ref, entry in data.get("stats", {}).items():
        if not isinstance(entry, dict):
            raise wrong(f"statistics {ref!r} are not a mapping")
        for name in STAT_FIELDS:
            value = entry.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise wrong(f"statistic {name!r} of {ref!r} is not a number (got {_short(value)})")
        for name in ("nan", "inf"):
            if isinstance(entry.get(name), bool) or not isinstance(entry.get(name), int):
                raise wrong(
                    f"count {name!r} of {ref!r} is not a whole number (got {_short(entry.get(name))})"
                )
    trace = from_data(data, source=source)

    readable = {param.ref for param in trace.params}
    for node in trace.nodes:
        for ref in node.inputs:
            if ref in readable and not ref.startswith(_CONST):
                continue  # most references: an earlier node's, a parameter's (no need to split them)
            kind, name = ids.split_ref(ref)
            if kind is ids.RefKind.CONST:
                try:
                    TensorSpec.parse(name)
                except ValueError:
                    raise wrong(f"node {node.node_id!r} reads a constant with a bad spec {ref!r}") from None
            elif ref not in readable:
                raise wrong(
                    f"node {node.node_id!r} reads {ref!r}, which no earlier node, parameter or buffer is"
                )
        readable.update(node.refs)

    again = to_data(trace)
    for section, stored in data.items():
        derived = again.get(section)
        if section == "stats":  # more digits than are kept is harmless: compare what is kept
            stored = {ref: {k: round_stat(v) if k in STAT_FIELDS else v for k, v in entry.items()}
                      for ref, entry in stored.items()}  # fmt: skip
        if stored == derived:
            continue
        if not isinstance(stored, dict) or not isinstance(derived, dict):
            raise wrong(f"its {section!r} section does not agree with the rest of the file")
        for key in [*stored, *(k for k in derived if k not in stored)]:
            if stored.get(key) != derived.get(key):
                if section == "summary":
                    raise wrong(
                        f"the summary says {key} {_short(stored.get(key))}, but the rest of the file makes it "
                        f"{_short(derived.get(key))}"
                    )
                raise wrong(_disagreement(section, key, stored.get(key), derived.get(key)))
        raise wrong(f"its {section!r} entries are out of order")
    return trace, again


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
