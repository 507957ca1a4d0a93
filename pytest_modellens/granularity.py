"""Snapshots at the level a team cares about: whole module calls as one node each.

``depth=N`` and ``leaf_modules`` turn an op-level :class:`~pytest_modellens.trace.Trace` into
one where some module calls are single ``module`` nodes (:data:`NodeKind.MODULE`). It is a
transformation of plain data: the tracer records every op as usual, then :func:`collapse`
folds the ops of each chosen call into one node.

Levels count module *calls*, the model itself being level 1: at ``depth=2`` each call the
model's forward makes (``transformer``, ``lm_head``) is one node, and only the ops the
model's own forward runs stay ops. Containers that are never called (``nn.ModuleList``)
are no level, so the blocks of a ``ModuleList`` are at their parent's level plus one.

A collapsed call keeps the location scheme of node ids: it is ``<scope>/<class>``
(``transformer.h.0/GPT2Block``, ``cell:3/LSTMCell``), so a change inside it reads as a
change of that node. Its inputs are what the call read from outside, in the order it first
read them (node outputs, other modules' parameters, constants; its own parameters and
buffers are counted in its module entry instead); its outputs are what was read of it
afterwards, in the order they were made. The module table keeps the collapsed module
(class, configuration, parameter and trainable counts, calls) and drops the modules
inside it; the parameter table keeps every tensor, as the state dict does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from . import ids
from .trace import Node, NodeKind, Stats, TensorSpec, Trace


def check_depth(depth: object) -> int | None:
    """``depth`` if it is None or an int of at least 1; ValueError saying so otherwise."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(
            f"'depth' must be an int of at least 1 or None (got {depth!r} that is a {type(depth).__name__}); "
            "1 is the whole model as one node, 2 each module its forward calls"
        )
    return depth


@dataclass(slots=True)
class _Unit:
    """One collapsed module call while it is being built."""

    scope: str
    node_id: str
    members: list[Node] = field(default_factory=list)
    outputs: dict[str, tuple[TensorSpec, Stats | None]] = field(default_factory=dict)


def _chain(scope: str, parents: Mapping[str, str]) -> list[str]:
    """The calls ``scope`` ran inside, outermost (the root, ``""``) first, ``scope`` last."""
    chain = [scope]
    while chain[-1]:
        chain.append(parents.get(chain[-1], ""))
    return chain[::-1]


def collapse(
    trace: Trace,
    *,
    parents: Mapping[str, str],
    depth: int | None = None,
    leaves: Collection[str] = (),
) -> Trace:
    """``trace`` with the calls at level ``depth`` and the calls of ``leaves`` (module paths) as one node each.

    ``parents`` maps each module call's scope (``cell:3``) to the scope it was called from
    (``""`` for the model's forward); the tracer records it. Where a call qualifies inside
    another that does, the outer one wins.
    """
    check_depth(depth)
    if depth is None and not leaves:
        return trace
    leaves = frozenset(leaves)
    classes = {m.path: m.class_name for m in trace.modules}
    unit_of: dict[str, str | None] = {}  # scope -> the scope of the call it is folded into

    def unit(scope: str) -> str | None:
        if scope not in unit_of:
            unit_of[scope] = next(
                (
                    call
                    for level, call in enumerate(_chain(scope, parents), start=1)
                    if (depth is not None and level >= depth) or ids.scope_path(call) in leaves
                ),
                None,
            )
        return unit_of[scope]

    units: dict[str, _Unit] = {}
    placed: list[Node | _Unit] = []  # the new graph in execution order, a unit where its first op was
    made_in: dict[str, _Unit] = {}  # reference of an inner tensor -> its unit
    for node in trace.nodes:
        scope = unit(node.scope) if node.kind.in_forward else None
        if scope is None:
            placed.append(node)
            continue
        entry = units.get(scope)
        if entry is None:
            path = ids.scope_path(scope)
            op = classes.get(path) or ids.leaf(path) or trace.model
            entry = units[scope] = _Unit(scope, ids.op_id(scope, op, 1))
            placed.append(entry)
        entry.members.append(node)
        for ref in node.refs:
            made_in[ref] = entry

    specs: dict[str, tuple[TensorSpec, Stats | None]] = {}
    for node in trace.nodes:
        for k, (ref, spec) in enumerate(zip(node.refs, node.outputs)):
            specs[ref] = (spec, node.stats[k] if node.stats else None)

    def read(ref: str, reader: _Unit | None) -> None:
        owner = made_in.get(ref)
        if owner is not None and owner is not reader:
            owner.outputs.setdefault(ref, specs[ref])

    for item in placed:
        for node in item.members if isinstance(item, _Unit) else [item]:
            for ref in node.inputs:
                read(ref, item if isinstance(item, _Unit) else None)
    renamed: dict[str, str] = {}
    for entry in units.values():
        # Outputs in the order they were made, not the order they were read.
        order = {ref: k for k, member in enumerate(entry.members) for ref in member.refs}
        entry.outputs = dict(sorted(entry.outputs.items(), key=lambda item: order[item[0]]))
        for k, ref in enumerate(entry.outputs):
            renamed[ref] = entry.node_id if len(entry.outputs) == 1 else ids.output_ref(entry.node_id, k)

    nodes = []
    for item in placed:
        if isinstance(item, Node):
            nodes.append(replace(item, inputs=tuple(renamed.get(ref, ref) for ref in item.inputs)))
        else:
            nodes.append(_module_node(item, renamed))
    collapsed = {ids.scope_path(scope) for scope in units}
    modules = tuple(
        m for m in trace.modules
        if not any(ids.is_within(m.path, outer) and m.path != outer for outer in collapsed)
    )  # fmt: skip
    return replace(trace, nodes=tuple(nodes), modules=modules)


def _module_node(entry: _Unit, renamed: dict[str, str]) -> Node:
    """The node of one collapsed call: what it read from outside, what was read of it."""
    path = ids.scope_path(entry.scope)
    inner = {ref for member in entry.members for ref in member.refs}
    inputs: dict[str, None] = {}
    for member in entry.members:
        for ref in member.inputs:
            if ref in inner:
                continue
            kind, name = ids.split_ref(ref)
            if kind in (ids.RefKind.PARAM, ids.RefKind.BUFFER) and ids.is_within(name, path):
                continue  # its own: counted in its module entry
            inputs.setdefault(renamed.get(ref, ref), None)
    outputs = list(entry.outputs.values())
    counted = [member.flops for member in entry.members if member.flops is not None]
    return Node(
        entry.node_id,
        NodeKind.MODULE,
        ids.split_op_id(entry.node_id)[1],
        tuple(inputs),
        (),
        tuple(spec for spec, _ in outputs),
        tuple(stats for _, stats in outputs) if any(m.stats for m in entry.members) else (),
        sum(counted) if counted else None,
    )
