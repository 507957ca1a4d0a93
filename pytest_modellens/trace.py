"""The Trace: an in-memory record of one forward pass, as frozen data.

Nothing here imports torch or any other third-party package, so a Trace read back
from a snapshot file is the same kind of object as one made by the tracer.

Node kinds form a closed set (:class:`NodeKind`):

- ``input``: a tensor passed to the model (``input:x``, ``input:batch.image``);
- ``op``: one tensor operation (``encoder.layers.0/linear``, ``cell:3/add:2``);
- ``condition``: Python branching on a tensor value (``if x.sum() > 0``,
  ``torch.equal(a, b)``), op ``bool``/``equal``/``allclose``/``is_nonzero``/``contains``;
  its ``args`` say which way it went: ``{"result": true}``;
- ``output``: a tensor the model returned (``output``, ``output:logits``);
- ``module``: a whole module call shown as one node (``depth``, ``leaf_modules``), its op the
  module's class (``transformer.h.0/GPT2Block``, ``cell:3/LSTMCell``), its inputs what the call
  read from outside (its own parameters left to the module table), its outputs what was read of
  it afterwards.

Node ids come from where an operation happens, never from a global counter, so a
change in one place of a model changes the ids of that place only (see DESIGN.md).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from enum import Enum
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from . import ids
from .errors import NodeNotFoundError

if TYPE_CHECKING:
    from .changes import Change

#: Bytes per element of each dtype name the tracer writes (``str(torch.float32)`` less ``torch.``),
#: as torch stores them (``dtype.itemsize``: sub-byte and packed types take one byte each). The
#: tracer adds any dtype a newer torch brings from ``itemsize``; a test holds this table to torch's.
DTYPE_SIZES = {
    "bool": 1, "uint8": 1, "int8": 1, "uint16": 2, "int16": 2, "uint32": 4, "int32": 4,
    "uint64": 8, "int64": 8, "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
    "complex32": 4, "complex64": 8, "complex128": 16,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1, "float4_e2m1fn_x2": 1,
    "uint1": 1, "uint2": 1, "uint3": 1, "uint4": 1, "uint5": 1, "uint6": 1, "uint7": 1,
    "int1": 1, "int2": 1, "int3": 1, "int4": 1, "int5": 1, "int6": 1, "int7": 1,
    "qint8": 1, "quint8": 1, "qint32": 4, "quint4x2": 1, "quint2x4": 1,
    "bits1x8": 1, "bits2x4": 1, "bits4x2": 1, "bits8": 1, "bits16": 2,
}  # fmt: skip


class NodeKind(str, Enum):
    """The closed set of node kinds; see the module docstring."""

    INPUT = "input"
    OP = "op"
    CONDITION = "condition"
    OUTPUT = "output"
    MODULE = "module"

    @property
    def in_forward(self) -> bool:
        """Whether nodes of this kind happen inside the forward (ops, conditions, module calls), in a scope."""
        return self is not NodeKind.INPUT and self is not NodeKind.OUTPUT


class Layout(str, Enum):
    """How a tensor holds its values: torch's layouts, and nested tensors as one each of their own.

    A dense tensor is ``strided`` and its spec names no layout, so a dense model's snapshot
    reads as it did before layouts were recorded; every other layout is written after the
    shape (``float32[4, 2] sparse_coo``). A nested tensor is strided or jagged inside, but what
    a person reads is that it is nested.
    """

    STRIDED = "strided"
    SPARSE_COO = "sparse_coo"
    SPARSE_CSR = "sparse_csr"
    SPARSE_CSC = "sparse_csc"
    SPARSE_BSR = "sparse_bsr"
    SPARSE_BSC = "sparse_bsc"
    MKLDNN = "mkldnn"
    NESTED = "nested"
    JAGGED = "jagged"

    @property
    def nested(self) -> bool:
        """Whether tensors of this layout hold components of their own sizes (ragged dims, ``*``)."""
        return self is Layout.NESTED or self is Layout.JAGGED


#: How a ragged dim of a nested tensor is written: its components differ in that size.
RAGGED = "*"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """The dtype, shape and layout of one tensor: ``float32[4, 2]``, ``float32[4, 2] sparse_csr``.

    A dense tensor's layout is not written. A size of None is a ragged dim of a nested
    tensor, written ``*``: ``float32[3, *, 8] jagged``.
    """

    dtype: str
    shape: tuple[int | None, ...]
    layout: Layout = Layout.STRIDED
    # Made once: a snapshot writes the text, and its summary the size, of every output.
    _text: str = field(init=False, repr=False, compare=False)
    _numel: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        count = 1
        for size in self.shape:
            if size is None:  # ragged: the dense size is not known
                count = 0
                break
            count *= size
        object.__setattr__(self, "_numel", count)
        text = f"{self.dtype}{self.shape_text}"
        if self.layout is not Layout.STRIDED:
            text = f"{text} {self.layout.value}"
        object.__setattr__(self, "_text", text)

    def __str__(self) -> str:
        return self._text

    @property
    def shape_text(self) -> str:
        """The shape as a person reads it: ``[4, 2]``, ``[3, *, 8]``."""
        return f"[{', '.join(RAGGED if size is None else str(size) for size in self.shape)}]"

    @property
    def numel(self) -> int:
        """The element count of the dense tensor it stands for; 0 where a dim is ragged (not known)."""
        return self._numel

    @property
    def nbytes(self) -> int:
        return self._numel * DTYPE_SIZES.get(self.dtype, 0)

    @classmethod
    def parse(cls, text: str) -> TensorSpec:
        """Read ``float32[4, 2]`` (or ``float32[4, 2] sparse_coo``) back; raises ValueError on anything else."""
        dtype, bracket, rest = text.partition("[")
        inner, closed, named = rest.partition("]")
        if not bracket or not closed or not dtype or (named and not named.startswith(" ")):
            raise ValueError(f"tensor spec must look like 'float32[4, 2]' (got {text!r})")
        layout = _layout(named[1:]) if named else Layout.STRIDED
        inner = inner.strip()
        shape = tuple(_size(size, layout) for size in inner.split(",")) if inner else ()
        return cls(dtype, shape, layout)


_NBYTES = attrgetter("nbytes")


def _layout(name: str) -> Layout:
    if name == Layout.STRIDED.value:
        raise ValueError("a dense tensor's spec names no layout: write 'float32[4, 2]', not '... strided'")
    try:
        return Layout(name)
    except ValueError:
        known = ", ".join(layout.value for layout in Layout if layout is not Layout.STRIDED)
        raise ValueError(f"unknown layout {name!r} (known: {known})") from None


def _size(text: str, layout: Layout) -> int | None:
    if text.strip() != RAGGED:
        return int(text)
    if not layout.nested:
        raise ValueError(f"a ragged size {RAGGED!r} is for nested tensors only (layout nested or jagged)")
    return None


@dataclass(frozen=True, slots=True)
class Stats:
    """Statistics of one tensor's values over its finite elements, in float64.

    ``mean``/``std``/``min``/``max`` are None when the tensor has no finite element.
    """

    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    nan: int
    inf: int

    @property
    def nonfinite(self) -> int:
        return self.nan + self.inf


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far activation statistics may move and still count as equal.

    Two values ``old`` and ``new`` match when ``|new - old| <= atol + rtol * |old|``.
    Structure (ops, shapes, dtypes, wiring) always compares exactly.
    """

    rtol: float = 1e-3
    atol: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"{name!r} must be a non-negative number (got {value!r} that is a {type(value).__name__})"
                )

    def overridden(self, *, rtol: float | None = None, atol: float | None = None) -> Tolerance:
        """This tolerance with the values given instead of its own (None keeps its own)."""
        return Tolerance(self.rtol if rtol is None else rtol, self.atol if atol is None else atol)

    def close(self, old: float | None, new: float | None) -> bool:
        if old is None or new is None:
            return old is new
        return abs(new - old) <= self.atol + self.rtol * abs(old)


@dataclass(frozen=True, slots=True)
class Node:
    """One node of the traced graph; see :class:`NodeKind` for what each kind means.

    ``inputs`` are references: node ids (``id#k`` for the k-th output of a node with
    several), ``param:<name>``, ``buffer:<name>`` or ``const:<spec>`` for a tensor that
    came from neither. ``args`` are the non-tensor arguments as ``(position or keyword,
    value)`` pairs with JSON-safe values. ``flops`` is None unless FLOPs were counted
    (``flops=True``): then the floating-point operations ``FlopCounterMode`` saw in this node.
    """

    node_id: str
    kind: NodeKind
    op: str
    inputs: tuple[str, ...] = ()
    args: tuple[tuple[str, Any], ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    stats: tuple[Stats | None, ...] = ()
    flops: int | None = None

    @property
    def scope(self) -> str:
        """Module path and call (``cell:3``) of an op or condition; ``""`` at the root."""
        # `kind.in_forward`, written out: the ordering rules ask this of every node several
        # times per trace.
        kind = self.kind
        if kind is NodeKind.INPUT or kind is NodeKind.OUTPUT:
            return ""
        return ids.split_op_id(self.node_id)[0]

    @property
    def module_path(self) -> str:
        return ids.scope_path(self.scope)

    @property
    def refs(self) -> tuple[str, ...]:
        """The references other nodes use for this node's outputs."""
        if len(self.outputs) <= 1:
            return (self.node_id,)
        return tuple(ids.output_refs(self.node_id, len(self.outputs)))


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """One module of the model: where it sits, what it is, how often it ran.

    ``params`` and ``trainable`` count the parameters under it (a shared one once), all and
    those with ``requires_grad``; ``flops`` is None unless FLOPs were counted, then the sum
    over every call of the nodes within its path.
    """

    path: str
    class_name: str
    config: str
    params: int
    calls: int
    trainable: int
    flops: int | None = None


@dataclass(frozen=True, slots=True)
class ParamInfo:
    """A parameter or buffer of the model (shared ones once, under their first name).

    ``trainable`` is the parameter's ``requires_grad``; a buffer is never trainable.
    """

    name: str
    is_buffer: bool
    spec: TensorSpec
    trainable: bool = False

    @property
    def ref(self) -> str:
        return ids.tensor_ref(self.name, is_buffer=self.is_buffer)


@dataclass(frozen=True, slots=True, eq=False)
class Trace:
    """The record of one forward pass: the op graph, the modules and the parameters.

    Compare a Trace with syrupy's ``snapshot`` (``assert trace == snapshot``), print it
    for a TorchLens-style log, ``dumps()`` it to the canonical snapshot text.
    ``tolerance`` only says how statistics are compared; it is not part of the data.
    """

    model: str
    inputs: Any
    outputs: Any
    nodes: tuple[Node, ...]
    modules: tuple[ModuleInfo, ...]
    params: tuple[ParamInfo, ...]
    tolerance: Tolerance = field(default_factory=Tolerance)

    # -- derived facts ---------------------------------------------------------------

    @property
    def op_nodes(self) -> tuple[Node, ...]:
        op = NodeKind.OP
        return tuple([node for node in self.nodes if node.kind is op])

    @property
    def has_stats(self) -> bool:
        return any(node.stats for node in self.nodes)

    @property
    def tensor_count(self) -> int:
        return self.output_totals()[0]

    @property
    def tensor_bytes(self) -> int:
        return self.output_totals()[1]

    def output_totals(self) -> tuple[int, int]:
        """``(tensor_count, tensor_bytes)`` of the nodes' outputs, from one walk (a snapshot writes both)."""
        specs = [spec for node in self.nodes for spec in node.outputs]
        return len(specs), sum(map(_NBYTES, specs))

    @property
    def param_count(self) -> int:
        return sum(p.spec.numel for p in self.params if not p.is_buffer)

    @property
    def param_bytes(self) -> int:
        return sum(p.spec.nbytes for p in self.params if not p.is_buffer)

    @property
    def trainable_count(self) -> int:
        return sum(p.spec.numel for p in self.params if p.trainable)

    @property
    def has_flops(self) -> bool:
        return any(node.flops is not None for node in self.nodes)

    @property
    def flops(self) -> int:
        """Floating-point operations of the whole forward (0 when they were not counted)."""
        return sum(node.flops or 0 for node in self.nodes)

    @property
    def param_op_count(self) -> int:
        return self.parameter_use()[0]

    @property
    def passes(self) -> int:
        """Most times one parametrised operation ran: the same op on the same parameters.

        A parameter-free module called twice (one ``nn.Sigmoid`` used after two layers)
        is not recurrence; a cell whose weights run on every step of a loop is, whether its
        steps are ops or, collapsed, module nodes.
        """
        return self.parameter_use()[1]

    def parameter_use(self) -> tuple[int, int]:
        """``(param_op_count, passes)``, from one walk of the nodes (a snapshot writes both).

        Each op that uses parameters counts, and each module node of a module that has them
        (its own parameters, counted in its module entry).
        """
        holders = {m.path for m in self.modules if m.params}
        groups: dict[tuple[str, tuple[str, ...]], int] = {}
        params_in = ids.params_in
        op, module = NodeKind.OP, NodeKind.MODULE
        count = 0
        for node in self.nodes:
            if node.kind is op:
                params = params_in(node.inputs)
                if not params:
                    continue
                key = (node.op, tuple(sorted(params)) if len(params) > 1 else tuple(params))
            elif node.kind is module and node.module_path in holders:
                key = (node.op, (node.module_path,))
            else:
                continue
            count += 1
            groups[key] = groups.get(key, 0) + 1
        return count, max(groups.values(), default=1)

    @property
    def recurrent(self) -> bool:
        return self.passes > 1

    @property
    def branching(self) -> bool:
        """Whether one tensor feeds more than one node."""
        is_node_ref = ids.is_node_ref
        consumers: dict[str, str] = {}  # a tensor -> the first node that read it
        for node in self.nodes:
            node_id = node.node_id
            for ref in node.inputs:
                if consumers.setdefault(ref, node_id) != node_id and is_node_ref(ref):
                    return True
        return False

    @property
    def conditional(self) -> bool:
        condition = NodeKind.CONDITION
        return any(node.kind is condition for node in self.nodes)

    @property
    def first_nonfinite(self) -> Node | None:
        """The first node, in execution order, whose output holds a NaN or Inf (needs stats)."""
        for node in self.nodes:
            if any(s is not None and s.nonfinite for s in node.stats):
                return node
        return None

    def node(self, node_id: str) -> Node:
        """The node with this id; :class:`LookupError` naming the nearest ids when there is none."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        near = difflib.get_close_matches(node_id, [n.node_id for n in self.nodes], n=3)
        hint = f"; did you mean {', '.join(map(repr, near))}?" if near else ""
        raise NodeNotFoundError(f"no node {node_id!r} in the trace of {self.model}{hint}")

    # -- views -----------------------------------------------------------------------

    def dumps(self) -> str:
        """The canonical snapshot text: deterministic, readable, one node per line."""
        from .canonical import dumps

        return dumps(self)

    def summary(self) -> str:
        """A TorchLens-style log of the forward pass."""
        from .log import format_summary

        return format_summary(self)

    def table(self, *, depth: int | None = None) -> str:
        """A torchinfo-style table: one row per module down to ``depth`` levels, then the totals."""
        from .log import format_table

        return format_table(self, depth=depth)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<Trace of {self.model}: {len(self.op_nodes)} ops, {len(self.modules)} modules>"

    def render(self, path: str, **options: Any) -> str:
        """Draw this graph to ``path`` (``.svg``, ``.png`` or ``.gv``); returns the file written."""
        from .render import render_trace

        return render_trace(self, path, **options)

    def diff(self, other: Trace) -> list[Change]:
        """The changes that turn ``self`` into ``other``."""
        from .differ import diff

        return diff(self, other)

    def with_tolerance(self, tolerance: Tolerance) -> Trace:
        return replace(self, tolerance=tolerance)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Trace):
            from .canonical import data_matches, to_data

            return data_matches(to_data(other), to_data(self), self.tolerance)
        # `trace == snapshot` with syrupy's plain fixture: the extension module, imported
        # only here, routes the assertion through the model-snapshot extension.
        from .extension import compare_with_snapshot

        return compare_with_snapshot(self, other)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    __hash__ = None  # type: ignore[assignment]
