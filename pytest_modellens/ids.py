"""The grammar of node ids, references and module paths: the one place that builds and parses them.

Node ids say where an operation happens, never when (see DESIGN.md)::

    <scope>/<op>[:<n>]      encoder.layers.0.self_attn/softmax, cell:3/add:2
    <op>[:<n>]              add:2, directly in the root forward
    input:<path>            input:x, input:past_key_values.layers.0.keys
    output[:<path>]         output, output:logits
    ...~<k>                 the k-th of several inputs or outputs that flatten to one path

A scope is ``<module path>[:<call>]``: the call is left out for a module's first call.
A module path joins attribute names with dots (``blocks.3.norm``); the root module's
path is ``""`` in the data and :data:`ROOT` wherever a person reads it.

The inputs of a node are references::

    <node id>               the only output of that node
    <node id>#<k>           its k-th output, when it has several
    param:<name>            a parameter (a shared one under its first name)
    buffer:<name>           a buffer
    const:<spec>            a tensor from neither a traced op, an input nor the model

Nothing here imports anything beyond the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import Enum
from functools import lru_cache

#: How the root module is named wherever a person reads a path (its path in the data is "").
ROOT = "<root>"
INPUT = "input"
OUTPUT = "output"


class RefKind(str, Enum):
    """What a reference in a node's inputs points to."""

    NODE = "node"
    PARAM = "param"
    BUFFER = "buffer"
    CONST = "const"


_PARAM, _BUFFER, _CONST = "param:", "buffer:", "const:"
_TENSOR_PREFIXES = (_PARAM, _BUFFER, _CONST)


# -- scopes and node ids --------------------------------------------------------------------


def scope(path: str, call: int) -> str:
    """``path`` for a module's first call, ``path:call`` for a later one."""
    return path if call == 1 else f"{path}:{call}"


def split_scope(scope_: str) -> tuple[str, int]:
    """``(module path, call)`` of a scope; the call is 1 when it is not written."""
    path, colon, call = scope_.partition(":")
    return path, int(call) if colon else 1


def scope_path(scope_: str) -> str:
    """The module path of a scope (``cell`` of ``cell:3``)."""
    return scope_.partition(":")[0]


def with_path(scope_: str, path: str) -> str:
    """``scope_`` with its module path replaced, its call kept."""
    _, colon, call = scope_.partition(":")
    return f"{path}:{call}" if colon else path


def numbered(name: str, n: int) -> str:
    """``name`` for the first of its kind, ``name:n`` for a later one (``add``, ``add:2``)."""
    return name if n == 1 else f"{name}:{n}"


def split_numbered_op(name: str) -> tuple[str, int]:
    """``(op, n)`` of an ``op[:n]`` name (the inverse of :func:`numbered`): ``("add", 2)`` of ``add:2``."""
    op, colon, n = name.rpartition(":")
    return (op, int(n)) if colon and n.isdigit() else (name, 1)


def op_id(scope_: str, op: str, n: int) -> str:
    """The id of the ``n``-th ``op`` in ``scope_``."""
    name = op if n == 1 else f"{op}:{n}"  # `numbered`, written out: this runs for every operation
    return f"{scope_}/{name}" if scope_ else name


def in_scope(scope_: str, name: str) -> str:
    """The id of the op or condition named ``op[:n]`` in ``scope_`` (the inverse of :func:`split_op_id`)."""
    return f"{scope_}/{name}" if scope_ else name


def split_op_id(node_id: str) -> tuple[str, str]:
    """``(scope, op[:n])`` of an op or condition id; the scope is ``""`` at the root."""
    scope_, _, name = node_id.rpartition("/")
    return scope_, name


def node_path(node_id: str) -> str:
    """The module path an op or condition happened in (``""`` at the root, and for inputs and outputs)."""
    return scope_path(split_op_id(node_id)[0])


def op_part(node_id: str) -> str:
    """The ``op[:n]`` end of an op id (``softmax`` of ``encoder/softmax``)."""
    return node_id.rpartition("/")[2]


def distinct(name: str, taken: object) -> str:
    """``name``, or ``name~2``, ``name~3``... the first that ``taken`` does not hold.

    Two inputs or outputs can flatten to one path (``{1: a, "1": b}``, or ``{"a.b": a}`` beside
    ``{"a": {"b": b}}``); the later one gets the next free number, in the order they come.
    """
    if name not in taken:  # type: ignore[operator]
        return name
    n = 2
    while f"{name}~{n}" in taken:  # type: ignore[operator]
        n += 1
    return f"{name}~{n}"


def input_id(path: str) -> str:
    return f"{INPUT}:{path}"


def output_id(path: str) -> str:
    return f"{OUTPUT}:{path}" if path else OUTPUT


# -- references -----------------------------------------------------------------------------


def output_ref(node_id: str, k: int) -> str:
    return f"{node_id}#{k}"


def output_refs(node_id: str, count: int) -> list[str]:
    """The references of all ``count`` outputs of a node with several."""
    return [f"{node_id}#{k}" for k in range(count)]


def split_output_ref(ref: str) -> tuple[str, int | None]:
    """``(node id, k)`` of a node reference; k is None for a node's only output.

    The last ``#`` with digits after it only: a module outside the model's tree is named
    ``<Linear#2>``, so its ops' ids hold a ``#`` of their own.
    """
    node_id, hash_, k = ref.rpartition("#")
    return (node_id, int(k)) if hash_ and k.isdigit() else (ref, None)


def ref_node(ref: str) -> str:
    """The node id of a reference to a node's output (``a/linear`` of ``a/linear#1``)."""
    return split_output_ref(ref)[0]


def param_ref(name: str) -> str:
    return _PARAM + name


def buffer_ref(name: str) -> str:
    return _BUFFER + name


def tensor_ref(name: str, *, is_buffer: bool) -> str:
    return buffer_ref(name) if is_buffer else param_ref(name)


def tensor_refs(names: list[str], *, is_buffer: bool) -> list[str]:
    """:func:`tensor_ref` of each name (one call for a model's parameters or buffers)."""
    prefix = _BUFFER if is_buffer else _PARAM
    return [prefix + name for name in names]


def const_ref(spec: object) -> str:
    return f"{_CONST}{spec}"


def ref_kind(ref: str) -> RefKind:
    if ref.startswith(_TENSOR_PREFIXES):
        return RefKind(ref.partition(":")[0])
    return RefKind.NODE


def split_ref(ref: str) -> tuple[RefKind, str]:
    """``(kind, name)``: the parameter or buffer name, the const's spec, or the node reference."""
    kind = ref_kind(ref)
    return kind, ref if kind is RefKind.NODE else ref.partition(":")[2]


def is_param(ref: str) -> bool:
    return ref.startswith("param:")


def params_in(refs: tuple[str, ...] | list[str]) -> list[str]:
    """The parameter references among ``refs``, in order (one call for a node's inputs)."""
    return [ref for ref in refs if ref.startswith("param:")]


def is_node_ref(ref: str) -> bool:
    """Whether ``ref`` names a node's output (not a parameter, buffer or constant)."""
    return not ref.startswith(_TENSOR_PREFIXES)


# -- module paths ---------------------------------------------------------------------------


def shown(path: str) -> str:
    """A module path as a person reads it: :data:`ROOT` for the root."""
    return path or ROOT


def join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def parent(path: str) -> str:
    return path.rpartition(".")[0]


def leaf(path: str) -> str:
    """The last name of a dotted path (``weight`` of ``blocks.0.weight``)."""
    return path.rpartition(".")[2]


@lru_cache(maxsize=1 << 16)
def ancestors(path: str) -> tuple[str, ...]:
    """``a``, ``a.b``, ``a.b.c`` for ``a.b.c``: every prefix, outermost first, ``path`` last.

    Cached: the matcher, the differ and the picture ask it of every node's path, and a
    model's paths are few next to its nodes.
    """
    if not path:
        return ()
    parts = path.split(".")
    return tuple(".".join(parts[:end]) for end in range(1, len(parts) + 1))


def is_within(path: str, ancestor: str) -> bool:
    """Whether ``path`` is ``ancestor`` or below it (everything is within the root)."""
    return not ancestor or path == ancestor or path.startswith(ancestor + ".")


def split_numbered(path: str) -> tuple[str, int | None]:
    """``(parent, index)`` of a numbered child (``blocks.3``), ``(path, None)`` of any other."""
    parent_, _, last = path.rpartition(".")
    return (parent_, int(last)) if last.isdigit() else (path, None)


def run(first: str, last: str) -> str:
    """A run of numbered siblings as one name: ``blocks.6..11``."""
    return f"{first}..{leaf(last)}" if first != last else first


#: A number that is a place's own (``blocks.3``, ``mul:2``), not part of a name (``conv2d``).
_NUMBER = re.compile(r"(?<![A-Za-z_])\d+(?![A-Za-z_])")


def numbers_blind(place: str) -> str:
    """``blocks.#.norm``: a place with its own numbers masked, to find places that differ only there."""
    return _NUMBER.sub("#", place)


def compress(places: Sequence[str]) -> str | None:
    """Places that differ only in their numbers as one: ``blocks.{0..3}.norm``; None if they do not.

    ``transformer.h.{0,1}.mlp.act``; ``a.{0,2..5}``; two numbers that both vary compress
    only when every combination is there (``l.{0,1}.b.{0,1}``).
    """
    unique = list(dict.fromkeys(places))
    if len(unique) == 1:
        return unique[0]
    texts = {tuple(_NUMBER.split(p)) for p in unique}
    if len(texts) != 1:
        return None
    text = next(iter(texts))
    numbers = [_NUMBER.findall(p) for p in unique]
    columns = list(zip(*numbers))
    distinct = [sorted(set(col), key=int) for col in columns]
    size = 1
    for values in distinct:
        size *= len(values)
    if size != len(unique):
        return None
    parts = [text[0]]
    for values, rest in zip(distinct, text[1:]):
        parts += [values[0] if len(values) == 1 else "{" + _ranges(values) + "}", rest]
    return "".join(parts)


def _ranges(values: list[str]) -> str:
    """``0,2..5``: runs of three or more consecutive numbers as ``a..b``."""
    out, run = [], [values[0]]
    for value in values[1:]:
        if int(value) == int(run[-1]) + 1:
            run.append(value)
            continue
        out.append(run)
        run = [value]
    out.append(run)
    return ",".join(f"{r[0]}..{r[-1]}" if len(r) >= 3 else ",".join(r) for r in out)


def call_run(path: str, first: int, last: int) -> str:
    """A run of calls of one module as one name: ``cell:2..5000``."""
    return f"{path}:{first}..{last}"
