"""Aligning two graphs: which old node is which new node, which module was renamed.

A node id names the place of an op, but inserting a child into an ``nn.Sequential``
renumbers every later sibling (``blocks.6`` becomes ``blocks.7``). So nodes are first
aligned in execution order with :class:`difflib.SequenceMatcher` over signatures that
ignore numbering (kind, op, module path with numbers blanked, module class); module
renames are read off the aligned pairs, and the rest is paired by id and by place.

difflib's search for the longest common run is quadratic in the length of what it is
given, and worse where the same signature repeats (every step of a loop, every block of
a deep stack): a 20k-op loop with an op changed in every step took minutes. So it only
sees stretches small enough for it; a longer stretch is first cut at anchors, signatures
that occur once on each side, kept in order (patience diffing), and a long stretch with
no anchor left is one unaligned region, paired by id and place like any other.

Numbered runs (``blocks.6..11``) are found here too, for the change list's renames and
the picture's folded boxes alike.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from difflib import SequenceMatcher
from typing import Any, TypeVar

from . import ids
from .changes import Matching
from .trace import Node, NodeKind, Trace

_NUMBER = re.compile(r"(?<![^.])\d+(?![^.])")
_Key = Callable[[Node], Any]  # what nodes are grouped by when paired in order
T = TypeVar("T")


def _module_paths(nodes: Sequence[Node]) -> list[str]:
    """Each node's module path (``Node.module_path``), read off its id once per node."""
    outside = (NodeKind.INPUT, NodeKind.OUTPUT)
    return ["" if node.kind in outside else ids.node_path(node.node_id) for node in nodes]


def _signatures(nodes: Sequence[Node], paths: list[str], classes: dict[str, str]) -> list[tuple[str, ...]]:
    """What aligns a node, blind to numbering: kind, op, module path with numbers blanked, class."""
    blanked: dict[str, str] = {}  # the steps of a loop share a few paths: each blanked once
    found: list[tuple[str, ...]] = []
    for node, path in zip(nodes, paths):
        kind = node.kind
        if kind is NodeKind.INPUT or kind is NodeKind.OUTPUT:
            found.append((kind.value, node.node_id))
            continue
        blind = blanked.get(path)
        if blind is None:
            blind = blanked[path] = _NUMBER.sub("#", path)
        found.append((kind.value, node.op, blind, classes.get(path, "")))
    return found


def _module_renames(paths: Counter[tuple[str, str]]) -> dict[str, str]:
    """Old module path -> new one, by majority of the matched nodes in and under it.

    ``paths`` counts the matched pairs of nodes by their (old, new) module paths, in the
    order the pairs were made: a graph has far fewer pairs of paths than pairs of nodes.
    """
    votes: dict[tuple[str, str], int] = {}  # (old path, new path) -> votes, in the order first seen
    for (old_path, new_path), count in paths.items():
        a, b = ids.ancestors(old_path), ids.ancestors(new_path)
        if len(a) != len(b):  # wrapped into a new container: a move, not a rename
            continue
        for vote in zip(a, b):
            votes[vote] = votes.get(vote, 0) + count
    # Each old path's most voted new one; of equals, the first seen.
    best: dict[str, tuple[str, int]] = {}
    for (path, target), count in votes.items():
        if path and (path not in best or count > best[path][1]):
            best[path] = (target, count)
    # Two old modules cannot become one new module: the better supported claim wins.
    claims: dict[str, tuple[int, str]] = {}
    for path, (target, count) in best.items():
        if target not in claims or count > claims[target][0]:
            claims[target] = (count, path)
    return {path: target for target, (_, path) in claims.items() if path != target}


#: The most work difflib is given for one stretch: (candidate pairs + length) * length,
#: about 50 ms in its worst case (the same two signatures alternating on both sides).
DIFFLIB_WORK = 5_000_000

Block = tuple[bool, int, int, int, int]  # (equal, old start, old end, new start, new end)


def align(a: Sequence[Any], b: Sequence[Any]) -> list[Block]:
    """Equal runs and the unaligned regions between them, in order, covering ``a`` and ``b``.

    What difflib would find on small inputs (and on large ones whose change is one
    stretch, after the common head and tail are set aside); near-linear on any input.
    """
    found: list[Block] = []
    stack = [(0, len(a), 0, len(b))]
    while stack:
        alo, ahi, blo, bhi = stack.pop()
        # The common head and tail are aligned as they are.
        head = alo
        while head < ahi and head - alo + blo < bhi and a[head] == b[head - alo + blo]:
            head += 1
        tail = 0
        while tail < min(ahi - head, bhi - blo - (head - alo)) and a[ahi - 1 - tail] == b[bhi - 1 - tail]:
            tail += 1
        middle = (head, ahi - tail, blo + head - alo, bhi - tail)
        inner = _inner_blocks(a, b, *middle)
        if inner is None:  # too big for difflib: cut at anchors, align each piece the same way
            pieces = _between_anchors(a, b, *middle)
            if pieces is None:
                inner = [(False, *middle)]
            else:
                inner = []
                stack.extend(reversed(pieces))  # popped in order; equal anchors come in between
        blocks: list[Block] = []
        if head > alo:
            blocks.append((True, alo, head, blo, blo + head - alo))
        blocks += inner
        if tail:
            blocks.append((True, ahi - tail, ahi, bhi - tail, bhi))
        found += blocks
    return _in_order(found)


def _inner_blocks(
    a: Sequence[Any], b: Sequence[Any], alo: int, ahi: int, blo: int, bhi: int
) -> list[Block] | None:
    """difflib's blocks of ``a[alo:ahi]`` against ``b[blo:bhi]``; None when that is too much work for it."""
    if alo == ahi and blo == bhi:
        return []
    if alo == ahi or blo == bhi:
        return [(False, alo, ahi, blo, bhi)]
    counts = Counter(a[alo:ahi])
    length = (ahi - alo) + (bhi - blo)
    candidates = sum(counts[sig] for sig in b[blo:bhi])
    if (candidates + length) * length > DIFFLIB_WORK:
        return None
    matcher = SequenceMatcher(
        None, a[alo:ahi], b[blo:bhi],
        autojunk=False,  # repeated ops (view, add) are the substance here, not junk
    )  # fmt: skip
    return [
        (tag == "equal", alo + i1, alo + i2, blo + j1, blo + j2)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
    ]


def _between_anchors(
    a: Sequence[Any], b: Sequence[Any], alo: int, ahi: int, blo: int, bhi: int
) -> list[tuple[int, int, int, int]] | None:
    """The stretches between anchors, and each anchor as a stretch of its own; None without anchors.

    An anchor is a signature found exactly once on each side; of those, the longest run
    that is in the same order on both sides is kept (patience sorting, O(n log n)).
    """
    once_a = _positions_of_unique(a, alo, ahi)
    once_b = _positions_of_unique(b, blo, bhi)
    candidates = [(i, once_b[sig]) for sig, i in once_a.items() if sig in once_b]
    candidates.sort()
    anchors = _longest_increasing(candidates)
    if not anchors:
        return None
    pieces = []
    previous_a, previous_b = alo, blo
    for i, j in anchors:
        pieces.append((previous_a, i, previous_b, j))
        pieces.append((i, i + 1, j, j + 1))
        previous_a, previous_b = i + 1, j + 1
    pieces.append((previous_a, ahi, previous_b, bhi))
    return pieces


def _positions_of_unique(items: Sequence[Any], lo: int, hi: int) -> dict[Any, int]:
    """Position of every item that occurs once in ``items[lo:hi]``."""
    seen: dict[Any, int] = {}
    repeated = set()
    for position in range(lo, hi):
        item = items[position]
        if item in seen:
            repeated.add(item)
        else:
            seen[item] = position
    return {item: position for item, position in seen.items() if item not in repeated}


def _longest_increasing(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest subsequence of ``pairs`` (sorted by first) whose seconds increase."""
    tails: list[int] = []  # tails[k]: index into pairs of the best run of length k + 1
    tail_values: list[int] = []
    before: list[int] = [-1] * len(pairs)
    for index, (_, j) in enumerate(pairs):
        k = bisect.bisect_left(tail_values, j)
        if k:
            before[index] = tails[k - 1]
        if k == len(tails):
            tails.append(index)
            tail_values.append(j)
        else:
            tails[k], tail_values[k] = index, j
    run = []
    index = tails[-1] if tails else -1
    while index != -1:
        run.append(pairs[index])
        index = before[index]
    return run[::-1]


def _in_order(blocks: list[Block]) -> list[Block]:
    """Blocks sorted by position, neighbouring equal runs joined, empty ones dropped."""
    joined: list[Block] = []
    for block in sorted(blocks, key=lambda block: (block[1], block[3])):
        if block[1] == block[2] and block[3] == block[4]:
            continue
        if joined and block[0] and joined[-1][0] and joined[-1][2] == block[1] and joined[-1][4] == block[3]:
            joined[-1] = (True, joined[-1][1], block[2], joined[-1][3], block[4])
        else:
            joined.append(block)
    return joined


def match(old: Trace, new: Trace) -> Matching:
    """Pair the nodes of ``old`` with those of ``new``, and the modules renamed between them."""
    new_nodes = {node.node_id: node for node in new.nodes}
    old_paths, new_paths = _module_paths(old.nodes), _module_paths(new.nodes)
    old_sigs = _signatures(old.nodes, old_paths, {m.path: m.class_name for m in old.modules})
    new_sigs = _signatures(new.nodes, new_paths, {m.path: m.class_name for m in new.modules})
    pairs: dict[str, str] = {}
    path_pairs: Counter[tuple[str, str]] = Counter()  # of the pairs, in the order they are made
    regions = []
    for equal, i1, i2, j1, j2 in align(old_sigs, new_sigs):
        old_part, new_part = old.nodes[i1:i2], new.nodes[j1:j2]
        if equal:
            pairs.update(zip((n.node_id for n in old_part), (n.node_id for n in new_part)))
            path_pairs.update(zip(old_paths[i1:i2], new_paths[j1:j2]))
        else:
            regions.append((old_part, new_part))
    aligned = Matching(dict(pairs), _module_renames(path_pairs))
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
        if node.node_id in pairs:
            continue
        target = renamed_id(node)
        if target in new_nodes and target not in taken:
            pair(node, new_nodes[target])
    if len(pairs) == len(aligned.nodes):
        return Matching(pairs, aligned.modules)
    # Pairs found inside regions tell of renames the aligned runs could not (fc -> proj).
    old_path_of = dict(zip((node.node_id for node in old.nodes), old_paths))
    new_path_of = dict(zip((node.node_id for node in new.nodes), new_paths))
    path_pairs.update(
        (old_path_of[old_id], new_path_of[new_id])
        for old_id, new_id in itertools.islice(pairs.items(), len(aligned.nodes), None)
    )  # pairs are only ever added: those after the aligned ones are the new ones
    return Matching(pairs, _module_renames(path_pairs))


def numbered_runs(
    items: Sequence[T], place: Callable[[T], tuple[Any, int | None]], follows: Callable[[T, T], bool]
) -> list[list[T]]:
    """Split ``items`` into runs of numbered items in a row: ``a.3``, ``a.4``, ... or ``cell:2``, ``cell:3``, ...

    ``place`` says where an item sits: ``(parent, index)``, the index None for an item
    that is not numbered (:func:`ids.split_numbered` of a path). An item continues the run
    before it when it is the next index under the same parent and ``follows(previous,
    item)`` agrees (same class, same shift...).
    """
    found: list[list[T]] = []
    for item in items:
        if found:
            previous = found[-1][-1]
            (p_parent, p_index), (parent, index) = place(previous), place(item)
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
        for run in numbered_runs(top, lambda pair: ids.split_numbered(pair[0]), same_shift)
    ]
