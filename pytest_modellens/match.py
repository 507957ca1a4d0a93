"""Aligning two graphs: which old node is which new node, which module was renamed.

A node id names the place of an op, but inserting a child into an ``nn.Sequential``
renumbers every later sibling (``blocks.6`` becomes ``blocks.7``). So nodes are first
aligned in execution order with :class:`difflib.SequenceMatcher` over signatures that
ignore numbering (kind, op, module path with numbers blanked, module class); module
renames are read off the aligned pairs, and the rest is paired by id and by place.

Numbered runs (``blocks.6..11``) are found here too, for the change list's renames and
the picture's folded boxes alike.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from . import ids
from .changes import Matching
from .trace import Node, NodeKind, Trace

_NUMBER = re.compile(r"(?<![^.])\d+(?![^.])")
_Key = Callable[[Node], Any]  # what nodes are grouped by when paired in order
T = TypeVar("T")


def _signature(node: Node, classes: dict[str, str]) -> tuple[str, ...]:
    if node.kind in (NodeKind.INPUT, NodeKind.OUTPUT):
        return (node.kind.value, node.node_id)
    path = node.module_path
    return (node.kind.value, node.op, _NUMBER.sub("#", path), classes.get(path, ""))


def _module_renames(pairs: dict[str, str], old: dict[str, Node], new: dict[str, Node]) -> dict[str, str]:
    """Old module path -> new one, by majority of the matched nodes in and under it."""
    votes: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for old_id, new_id in pairs.items():
        a, b = ids.ancestors(old[old_id].module_path), ids.ancestors(new[new_id].module_path)
        if len(a) != len(b):  # wrapped into a new container: a move, not a rename
            continue
        for old_path, new_path in zip(a, b):
            votes[old_path][new_path] += 1
    best = {path: counts.most_common(1)[0] for path, counts in votes.items() if path}
    # Two old modules cannot become one new module: the better supported claim wins.
    claims: dict[str, tuple[int, str]] = {}
    for path, (target, count) in best.items():
        if target not in claims or count > claims[target][0]:
            claims[target] = (count, path)
    return {path: target for target, (_, path) in claims.items() if path != target}


def match(old: Trace, new: Trace) -> Matching:
    """Pair the nodes of ``old`` with those of ``new``, and the modules renamed between them."""
    old_nodes = {node.node_id: node for node in old.nodes}
    new_nodes = {node.node_id: node for node in new.nodes}
    old_classes = {m.path: m.class_name for m in old.modules}
    new_classes = {m.path: m.class_name for m in new.modules}
    old_sigs = [_signature(n, old_classes) for n in old.nodes]
    new_sigs = [_signature(n, new_classes) for n in new.nodes]
    # The common head and tail are aligned as they are; the matcher, quadratic at worst,
    # only sees the middle where the change is.
    head, tail, limit = 0, 0, min(len(old_sigs), len(new_sigs))
    while head < limit and old_sigs[head] == new_sigs[head]:
        head += 1
    while tail < limit - head and old_sigs[-1 - tail] == new_sigs[-1 - tail]:
        tail += 1
    matcher = difflib.SequenceMatcher(
        None, old_sigs[head : len(old_sigs) - tail], new_sigs[head : len(new_sigs) - tail],
        autojunk=False,  # repeated ops (view, add) are the substance here, not junk
    )  # fmt: skip
    ends = [
        *zip(old.nodes[:head], new.nodes[:head]),
        *zip(old.nodes[len(old.nodes) - tail :], new.nodes[len(new.nodes) - tail :]),
    ]
    pairs = {o.node_id: n.node_id for o, n in ends}
    regions = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        old_part, new_part = old.nodes[head + i1 : head + i2], new.nodes[head + j1 : head + j2]
        if tag == "equal":
            pairs.update(zip((n.node_id for n in old_part), (n.node_id for n in new_part)))
        else:
            regions.append((old_part, new_part))
    aligned = Matching(dict(pairs), _module_renames(pairs, old_nodes, new_nodes))
    taken = set(pairs.values())

    def renamed_id(node: Node) -> str:
        """The id an old node has in the new names, by the renames the aligned runs show."""
        if not node.scope:
            return node.node_id
        return ids.op_id(aligned.scope(node.scope), ids.op_part(node.node_id), 1)

    def pair(old_node: Node, new_node: Node) -> None:
        pairs[old_node.node_id] = new_node.node_id
        taken.add(new_node.node_id)

    def pair_in_order(
        olds: Sequence[Node], news: Sequence[Node], old_key: _Key, new_key: _Key, *, equal: bool
    ) -> None:
        """Pair nodes of equal keys in order (only where both sides have as many, if ``equal``)."""
        groups: defaultdict[Any, tuple[list[Node], list[Node]]] = defaultdict(lambda: ([], []))
        for node in olds:
            if node.node_id not in pairs:
                groups[old_key(node)][0].append(node)
        for node in news:
            if node.node_id not in taken:
                groups[new_key(node)][1].append(node)
        for group_olds, group_news in groups.values():
            if len(group_olds) == len(group_news) or not equal:
                for old_node, new_node in zip(group_olds, group_news):
                    pair(old_node, new_node)

    # Inside an unaligned region: the same (renamed) id; else the same place, in order (an
    # op changed in place keeps its module and position, not its id); else the same op,
    # in order (a layer wrapped into a new container keeps its op).
    def old_place(node: Node) -> tuple[str, NodeKind]:
        return ids.split_op_id(renamed_id(node))[0], node.kind

    def op(node: Node) -> tuple[NodeKind, str]:
        return node.kind, node.op

    for old_part, new_part in regions:
        pair_in_order(old_part, new_part, renamed_id, lambda node: node.node_id, equal=False)
        pair_in_order(old_part, new_part, old_place, lambda node: (node.scope, node.kind), equal=True)
        pair_in_order(old_part, new_part, op, op, equal=False)
    # A node that moved (two ops swapped) is still itself when its id is free on both sides.
    for node in old.nodes:
        target = renamed_id(node)
        if node.node_id not in pairs and target in new_nodes and target not in taken:
            pair(node, new_nodes[target])
    # Pairs found inside regions tell of renames the aligned runs could not (fc -> proj).
    return Matching(pairs, _module_renames(pairs, old_nodes, new_nodes))


def numbered_runs(
    items: Sequence[T], path: Callable[[T], str], follows: Callable[[T, T], bool]
) -> list[list[T]]:
    """Split ``items`` into runs of numbered siblings: ``a.3``, ``a.4``, ... in a row.

    An item continues the run before it when its ``path`` is the next index under the
    same parent and ``follows(previous, item)`` agrees (same class, same shift...).
    """
    found: list[list[T]] = []
    for item in items:
        if found:
            previous = found[-1][-1]
            (p_parent, p_index), (parent, index) = (
                ids.split_numbered(path(previous)),
                ids.split_numbered(path(item)),
            )
            if (
                p_index is not None
                and index == p_index + 1
                and parent == p_parent
                and follows(previous, item)
            ):
                found[-1].append(item)
                continue
        found.append([item])
    return found


def rename_runs(renames: dict[str, str]) -> list[tuple[str, str]]:
    """Module renames as few ``(old, new)`` names: ``blocks.6..11 -> blocks.7..12`` for a renumbering."""
    top = [
        (path, target)
        for path, target in renames.items()
        if not (ids.parent(path) in renames and ids.join(renames[ids.parent(path)], ids.leaf(path)) == target)
    ]  # a child renamed with its parent follows from it

    def same_shift(previous: tuple[str, str], this: tuple[str, str]) -> bool:
        (p_new_parent, p_new), (new_parent, new) = (
            ids.split_numbered(previous[1]),
            ids.split_numbered(this[1]),
        )
        return (
            p_new is not None and new is not None and new_parent == p_new_parent
            and new - p_new == 1
        )  # fmt: skip

    return [
        (ids.run(run[0][0], run[-1][0]), ids.run(run[0][1], run[-1][1]))
        for run in numbered_runs(top, lambda pair: pair[0], same_shift)
    ]
