"""One order for interchangeable module calls, whatever order the forward ran them in.

A forward may run independent work in an order that depends on the process: transformers'
``for layer_type in set(config.layer_types): self.rotary_emb(x, position_ids, layer_type)``
iterates a set of strings, whose order follows ``PYTHONHASHSEED``, so one process calls
``rotary_emb`` first for ``full_attention`` and the next for ``sliding_attention``; the ids
``rotary_emb`` and ``rotary_emb:2`` swap between processes (and between pytest-xdist workers).

The rule, narrow on purpose so that no other snapshot changes: back-to-back calls of one module
from one caller that read the same activations, none reading another's results (they differ
only in parameters, buffers, constants or arguments), are put in the order of their content
and numbered in that order. Calls on different data (a shared encoder applied to two inputs)
keep the order the forward gave them, which is the program's. Independent operations written
inline in a forward (masks built in a loop over a set) are not reordered: their snapshot still
depends on the hash seed, which the README's known limits say.
"""

from __future__ import annotations

from dataclasses import replace

from .. import ids
from ..trace import Node


def canonical_calls(nodes: list[Node], call_parents: dict[str, str]) -> list[Node]:
    """``nodes`` with each run of interchangeable calls in content order, renumbered."""
    blocks = _call_blocks(nodes, call_parents)
    renamed: dict[str, str] = {}
    order = list(range(len(nodes)))
    for run in _runs(blocks, call_parents):
        spans = [blocks[scope] for scope in run]
        if not _interchangeable(nodes, run, spans):
            continue
        keys = [_content(nodes, scope, span) for scope, span in zip(run, spans)]
        ranked = sorted(range(len(run)), key=keys.__getitem__)
        if ranked == list(range(len(run))):
            continue
        start = spans[0][0]
        for position, index in enumerate(ranked):
            renamed[run[index]] = run[position]  # the call in content place `position` takes its number
        flat = [i for index in ranked for i in range(*spans[index])]
        order[start : start + len(flat)] = flat
    if not renamed:
        return nodes
    return [_renamed(nodes[i], renamed) for i in order]


def _call_blocks(nodes: list[Node], call_parents: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Each module call's nodes (its own and its sub-calls') as ``[start, end)``, where contiguous."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    count: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if not node.kind.in_forward:
            continue
        scope = node.scope
        while scope:
            first.setdefault(scope, index)
            last[scope] = index
            count[scope] = count.get(scope, 0) + 1
            scope = call_parents.get(scope, "")
    return {s: (first[s], last[s] + 1) for s in first if last[s] + 1 - first[s] == count[s]}


def _runs(blocks: dict[str, tuple[int, int]], call_parents: dict[str, str]) -> list[list[str]]:
    """Calls of one module from one caller, back to back in the node list, two or more."""
    runs: list[list[str]] = []
    by_start = sorted(blocks, key=lambda s: blocks[s][0])
    for scope in by_start:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and ids.scope_path(last) == ids.scope_path(scope)
            and call_parents.get(last) == call_parents.get(scope)
            and blocks[last][1] == blocks[scope][0]
        ):
            runs[-1].append(scope)
        else:
            runs.append([scope])
    return [run for run in runs if len(run) > 1]


def _interchangeable(nodes: list[Node], run: list[str], spans: list[tuple[int, int]]) -> bool:
    """Whether the calls read the same activations from outside and none reads another's."""
    outside: list[set[str]] = []
    for start, end in spans:
        made = {ref for node in nodes[start:end] for ref in node.refs}
        reads = {ref for node in nodes[start:end] for ref in node.inputs if ids.is_node_ref(ref)}
        outside.append(reads - made)
    produced = {ref for start, end in spans for node in nodes[start:end] for ref in node.refs}
    return all(reads == outside[0] and not reads & produced for reads in outside)


def _content(nodes: list[Node], scope: str, span: tuple[int, int]) -> str:
    """A call's nodes written without its own number: equal calls give equal text."""

    def local(ref: str) -> str:  # the call's own nodes without the call's number
        node_id, k = ids.split_output_ref(ref)
        own, name = ids.split_op_id(node_id)
        return repr((name, k)) if own == scope else ref

    parts = []
    for node in nodes[span[0] : span[1]]:
        local_refs = [local(ref) for ref in (node.node_id, *node.inputs)]
        parts.append(repr((node.op, local_refs, node.args, [str(spec) for spec in node.outputs])))
    return "\n".join(parts)


def _renamed(node: Node, renamed: dict[str, str]) -> Node:
    def rename(ref: str) -> str:
        node_id, k = ids.split_output_ref(ref)
        scope, name = ids.split_op_id(node_id)
        if scope not in renamed:
            return ref
        moved = ids.in_scope(renamed[scope], name)
        return moved if k is None else ids.output_ref(moved, k)

    node_id = rename(node.node_id)
    inputs = tuple(rename(ref) for ref in node.inputs)
    if node_id == node.node_id and inputs == node.inputs:
        return node
    return replace(node, node_id=node_id, inputs=inputs)
