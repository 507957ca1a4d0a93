"""One order for interchangeable work, whatever order the forward ran it in.

A forward may run independent work in an order that depends on the process: transformers'
``for layer_type in set(config.layer_types): self.rotary_emb(x, position_ids, layer_type)``
iterates a set of strings, whose order follows ``PYTHONHASHSEED``, so one process calls
``rotary_emb`` first for ``full_attention`` and the next for ``sliding_attention``; the ids
``rotary_emb`` and ``rotary_emb:2`` swap between processes (and between pytest-xdist workers).
Its mask functions do the same with operations written inline (``create_masks_for_generate``
builds one mask per layer type in the set's order), so ``where`` and ``where:2`` swap.

Four rules, narrow on purpose so that no other snapshot changes:

- Module calls: back-to-back calls of one module from one caller that read the same
  activations, none reading another's results (they differ only in parameters, buffers,
  constants or arguments), are put in the order of their content and numbered in that order.
- Inline blocks: a run of operations directly in one module call (no module call or tensor
  ``if`` between them) splits into the pieces no operation of the run joins by data.
  Neighbouring pieces that read the same activations from before the run, start and end with
  the same op and write nothing they did not make are put in the order of their content
  (numbers compared as numbers, so a loop over a ``range`` keeps its order) and their
  operations numbered in that order.
- Loops whose body is a call for one element and inline operations for another: calls of one
  module from one caller that read the same activations, none reading another's results, with
  runs of the caller's own operations between them that read none of their results
  (``self.rotary_emb(x.float() if kind == "indexed" else x, position_ids, kind)``), become those
  runs, then the calls in content order and numbered so, with any run that reads just what the
  calls read moved after them. So does the end of the run just before such calls (one call
  will do) where it reads just what they read, the caller made that earlier, and no operation of
  the caller after them reads its or their results (beam: ``compute_attention_scaling(position_ids)``
  for one layer type, ``self.rotary_emb(x, position_ids, layer_type)`` for the other): the calls,
  then it. Neither order of such a loop is the program's; this one keeps the runs before the
  calls whole, so the inline rule still sees the blocks of the loop before them.
- Checks: where a loop's body for one element is only a check (``if (mask == 1).all()``: the
  operations a tensor ``if`` reads, then the ``if``) and for another a block of inline
  operations that reads the same activations, the blocks that ran just before the check go
  after its ``if``: the order the forward gives when the check runs first. Work after an ``if``
  never moves before it, since it may be the branch the ``if`` chose.

Work on different data (a shared encoder applied to two inputs), work that reads another's
results, independent lines that do not look alike, blocks that a later operation of the same
run combines, and inline work beside a call that the forward goes on to combine keep the order
the forward gave them, which is the program's. Not covered: blocks that read a tensor made
earlier in the same run, a loop body whose inline work after its call reads other activations
than the call, inline work of several bodies of one loop that does not look alike (it keeps
the order it ran in), and a check with two or more blocks of a loop after its ``if`` that do not
look alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from .. import ids
from ..trace import Node, NodeKind
from .writes import writes


def canonical_calls(nodes: list[Node], call_parents: dict[str, str]) -> list[Node]:
    """``nodes`` with interchangeable calls, then interchangeable inline blocks, in content order."""
    # Each node's scope, read once per list of nodes: the rules below ask it of every node
    # several times, and a list is cheaper to index than the id is to split.
    scopes = _scopes(nodes)
    blocks = _call_blocks(nodes, call_parents, scopes)
    ordered = _canonical_module_calls(nodes, call_parents, blocks)
    if ordered is not nodes:  # calls moved: their places with them
        scopes = _scopes(ordered)
        blocks = _call_blocks(ordered, call_parents, scopes)
    mixed = _canonical_mixed(ordered, call_parents, blocks, scopes)
    checked = _canonical_checks(mixed)
    if checked is not ordered:
        scopes = _scopes(checked)
    return _canonical_blocks(checked, scopes)


def _scopes(nodes: list[Node]) -> list[str | None]:
    """Each node's scope (:attr:`Node.scope`), None for an input or output."""
    split = ids.split_op_id
    outside = (NodeKind.INPUT, NodeKind.OUTPUT)
    return [None if node.kind in outside else split(node.node_id)[0] for node in nodes]


def _canonical_module_calls(
    nodes: list[Node], call_parents: dict[str, str], blocks: dict[str, tuple[int, int]]
) -> list[Node]:
    """``nodes`` with each run of interchangeable calls in content order, renumbered (``nodes`` itself if none)."""
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
    return [_renamed(nodes[i], lambda node_id: _moved_call(node_id, renamed)) for i in order]


def _call_blocks(
    nodes: list[Node], call_parents: dict[str, str], scopes: list[str | None]
) -> dict[str, tuple[int, int]]:
    """Each module call's nodes (its own and its sub-calls') as ``[start, end)``, where contiguous."""
    # Each scope's own nodes first, then each call's span and count given to its caller, callees
    # before callers (a call is entered after its caller): per node one step, not a walk up the calls.
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    count: dict[str, int] = {}
    for index, scope in enumerate(scopes):
        if scope is None:
            continue
        if scope not in first:
            first[scope] = index
        last[scope] = index + 1
        count[scope] = count.get(scope, 0) + 1
    for scope in reversed(call_parents):
        caller = call_parents[scope]
        if scope not in first or not caller:
            continue
        if caller in first:
            first[caller] = min(first[caller], first[scope])
            last[caller] = max(last[caller], last[scope])
            count[caller] += count[scope]
        else:
            first[caller], last[caller], count[caller] = first[scope], last[scope], count[scope]
    first.pop("", None)
    return {s: (first[s], last[s]) for s in first if last[s] - first[s] == count[s]}


def _runs(blocks: dict[str, tuple[int, int]], call_parents: dict[str, str]) -> list[list[str]]:
    """Calls of one module from one caller, back to back in the node list, two or more."""
    runs: list[list[str]] = []
    # A call before the calls inside it that start where it starts: else a caller whose first
    # node is its first callee's would sit between that callee and the next call of it.
    by_start = sorted(blocks, key=lambda s: (blocks[s][0], -blocks[s][1]))
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
    """Whether the calls read the same activations from outside and none reads another's.

    Call by call, stopping at the first that differs: in most runs (the steps of a loop) the
    second call already reads the first's results.
    """
    is_node_ref = ids.is_node_ref
    first: set[str] | None = None
    produced: set[str] = set()
    for start, end in spans:
        block = nodes[start:end]
        made = {ref for node in block for ref in node.refs}
        reads = {ref for node in block for ref in node.inputs if ref not in made and is_node_ref(ref)}
        if reads & produced or (first is not None and reads != first):
            return False
        first = reads if first is None else first
        produced |= made
    return True


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


@dataclass(frozen=True, slots=True)
class _Unit:
    """Operations written directly in a caller (a run, or the end of one), or one call of a child module."""

    start: int
    end: int
    call: str  # the call's scope; "" for inline operations (the root is never a call)
    reads: frozenset[str]  # the activations it reads from before it
    made: frozenset[str]
    movable: bool  # writes only what it made; a call: reads an activation and calls nothing itself


@dataclass(frozen=True, slots=True)
class _Loop:
    """Calls of one module on the same activations, and the inline work between and before them."""

    calls: list[_Unit]
    between: list[_Unit]  # the runs between the calls
    leader: _Unit | None  # the end of the run before the first call that reads just what the calls read


def _canonical_mixed(
    nodes: list[Node],
    call_parents: dict[str, str],
    blocks: dict[str, tuple[int, int]],
    scopes: list[str | None],
) -> list[Node]:
    """``nodes`` with each loop over calls in one order: other work, the calls by content, work on their inputs."""
    if not _may_loop(nodes, call_parents, blocks, scopes):
        return nodes  # the usual case, told cheaply: no loop of calls to look at
    loops = list(_loops(nodes, call_parents, blocks))
    if not loops:
        return nodes
    renamed: dict[str, str] = {}
    order = list(range(len(nodes)))
    for loop in loops:
        calls = loop.calls
        keys = [_content(nodes, call.call, (call.start, call.end)) for call in calls]
        ranked = [calls[index] for index in sorted(range(len(calls)), key=keys.__getitem__)]
        for call, place in zip(ranked, calls):
            renamed[call.call] = place.call  # the call in content place `place` takes its number
        reads = calls[0].reads
        before = [run for run in loop.between if run.reads != reads]
        after = [run for run in (loop.leader, *loop.between) if run is not None and run.reads == reads]
        flat = [i for unit in (*before, *ranked, *after) for i in range(unit.start, unit.end)]
        start = (loop.leader or calls[0]).start
        order[start : start + len(flat)] = flat
    return [_renamed(nodes[i], lambda node_id: _moved_call(node_id, renamed)) for i in order]


def _may_loop(
    nodes: list[Node],
    call_parents: dict[str, str],
    blocks: dict[str, tuple[int, int]],
    scopes: list[str | None],
) -> bool:
    """Whether the loop rule may find anything: a cheap test of what :func:`_loops` needs.

    It moves only calls with no module call inside them that read an activation; and either two
    such calls of one module from one caller read the same activations, or an operation of the
    caller in the run just before one reads what it reads (the leader of a single call).
    """
    op = NodeKind.OP
    scope_path = ids.scope_path
    modules = {scope: (call_parents.get(scope, ""), scope_path(scope)) for scope in blocks}
    calls: dict[tuple[str, str], int] = {}
    for key in modules.values():
        calls[key] = calls.get(key, 0) + 1
    seen: set[tuple[tuple[str, str], frozenset[str]]] = set()
    for scope, (start, end) in blocks.items():
        key = modules[scope]
        caller = key[0]
        inline_before = start > 0 and scopes[start - 1] == caller and nodes[start - 1].kind is op
        if calls[key] < 2 and not inline_before:
            continue
        # A call of a leaf module (a loop's cell): its reads alone, without `_made_and_read`'s set of
        # what it made (a cell's two output references each time; about 20 us on a 20-step loop).
        if end - start == 1:  # a node never reads its own outputs
            if scopes[start] != scope:
                continue
            reads = frozenset(filter(ids.is_node_ref, nodes[start].inputs))
        else:
            if any(scopes[index] != scope for index in range(start, end)):
                continue
            reads = _made_and_read(nodes[start:end])[1]
        if not reads:
            continue
        if (key, reads) in seen:
            return True
        seen.add((key, reads))
        before = start - 1
        while before >= 0 and scopes[before] == caller and nodes[before].kind is op:
            if not reads.isdisjoint(nodes[before].inputs):
                return True
            before -= 1
    return False


def _loops(
    nodes: list[Node], call_parents: dict[str, str], blocks: dict[str, tuple[int, int]]
) -> Iterator[_Loop]:
    """Each loop over calls with inline work to put in place (calls back to back alone are the call rule's).

    From a call: the later calls of its module that read the same activations, with the runs
    between them that read none of their results; and the end of the run before it that reads
    just what the calls read and that nothing between them reads.
    """
    for units in _stretches(nodes, call_parents, blocks):
        index = 0
        while index < len(units):
            first = units[index]
            if not first.call or not first.movable:
                index += 1
                continue
            path = ids.scope_path(first.call)
            calls, between, pending = [first], [], []
            made = set(first.made)
            for unit in units[index + 1 :]:
                if not unit.call:
                    if not unit.movable or unit.reads & made:
                        break
                    pending.append(unit)
                elif unit.movable and unit.reads == first.reads and ids.scope_path(unit.call) == path:
                    calls.append(unit)
                    between += pending
                    pending = []
                    made |= unit.made
                else:
                    break
            end = index + len(calls) + len(between)
            leader = _leader(nodes, units, index, end)
            if between or leader is not None:
                yield _Loop(calls, between, leader)
            index = end


def _leader(nodes: list[Node], units: list[_Unit], index: int, end: int) -> _Unit | None:
    """The end of the run before the loop ``units[index:end]`` that reads just what its calls read.

    Only where the caller made what they read earlier in the stretch, and no inline operation
    after the loop reads its results or the leader's: work that the forward goes on to combine
    (``mixes = linear(x, w); rsqrt = self.norm(x); mixes * rsqrt``) keeps its order.
    """
    if index == 0 or units[index - 1].call:
        return None
    run, reads = units[index - 1], units[index].reads
    leader = _suffix_reading(nodes, run, reads)
    made_before = {ref for unit in units[: index - 1] for ref in unit.made} | run.made
    if leader is None or not reads <= made_before:
        return None
    results = set(leader.made).union(*(unit.made for unit in units[index:end]))
    if any(unit.reads & results for unit in units[end:] if not unit.call):
        return None
    if any(unit.reads & leader.made for unit in units[index:end]):
        return None
    return leader


def _suffix_reading(nodes: list[Node], run: _Unit, reads: frozenset[str]) -> _Unit | None:
    """The shortest end of ``run`` that reads just ``reads`` from before it, when one does and may move."""
    made: set[str] = set()
    read: set[str] = set()
    for start in range(run.end - 1, run.start - 1, -1):
        node = nodes[start]
        made.update(node.refs)
        read.difference_update(node.refs)
        read.update(ref for ref in node.inputs if ids.is_node_ref(ref) and ref not in made)
        if read == reads:
            leader = _unit(nodes, start, run.end, "")
            return leader if leader.movable else None
    return None


def _stretches(
    nodes: list[Node], call_parents: dict[str, str], blocks: dict[str, tuple[int, int]]
) -> Iterator[list[_Unit]]:
    """Each caller's runs of inline operations and calls of its child modules, in order.

    A condition, or a call whose nodes are not contiguous, ends a stretch.
    """
    starts = {(call_parents.get(scope, ""), start): scope for scope, (start, _) in blocks.items()}
    op = NodeKind.OP
    for caller in dict.fromkeys(caller for caller, _ in starts):  # in the order of the calls, not a set's
        if caller and caller not in blocks:
            continue
        index, end = blocks[caller] if caller else (0, len(nodes))
        units: list[_Unit] = []
        run = index
        while index <= end:
            if index < end and nodes[index].kind is op and nodes[index].scope == caller:
                index += 1
                continue
            if run < index:
                units.append(_unit(nodes, run, index, ""))
            call = starts.get((caller, index))
            if call is not None:
                units.append(_unit(nodes, *blocks[call], call))
                index = blocks[call][1]
            else:
                if len(units) > 1:
                    yield units
                units = []
                index += 1
            run = index


def _made_and_read(block: list[Node]) -> tuple[frozenset[str], frozenset[str]]:
    """What a block's nodes make, and the activations they read from before it."""
    is_node_ref = ids.is_node_ref
    if len(block) == 1:  # a call of a leaf module (a loop's cell): a node never reads its own outputs
        node = block[0]
        return frozenset(node.refs), frozenset(ref for ref in node.inputs if is_node_ref(ref))
    made = frozenset(ref for node in block for ref in node.refs)
    return made, frozenset(
        ref for node in block for ref in node.inputs if ref not in made and is_node_ref(ref)
    )


def _unit(nodes: list[Node], start: int, end: int, call: str) -> _Unit:
    block = nodes[start:end]
    made, reads = _made_and_read(block)
    movable = not any(_writes_outside(node, made) for node in block)
    if call:
        movable = movable and bool(reads) and all(node.scope == call for node in block)
    return _Unit(start, end, call, reads, made, movable)


def _canonical_checks(nodes: list[Node]) -> list[Node]:
    """``nodes`` with the blocks of a loop that ran before a check moved after its ``if``.

    A check is the operations a tensor ``if`` reads, at the end of a run of one call's inline
    operations. Blocks just before it in the run are bodies of one loop with it where each reads
    just the activations the check reads, none reads another's results and the ``if`` reads only
    what the check made (``create_recurrent_attention_mask`` is only ``if (mask == 1).all()``
    for one layer type, beside another's full mask). Those go after the ``if``: the order a
    forward that runs the check first gives them already. Work after an ``if`` never moves
    before it, since it may be the branch the ``if`` chose.
    """
    condition = NodeKind.CONDITION
    if not any(node.kind is condition for node in nodes):
        return nodes  # the usual case, told cheaply
    renamed: dict[str, str] = {}
    order = list(range(len(nodes)))
    for index, node in enumerate(nodes):
        if node.kind is not condition:
            continue
        moved = _bodies_before_check(nodes, index)
        if moved is None:
            continue
        (start, check) = moved
        flat = [*range(check, index + 1), *range(start, check)]
        order[start : index + 1] = flat
        renamed.update(_renumbered([nodes[i].node_id for i in flat]))
    if not renamed:
        return nodes
    return [_renamed(nodes[i], lambda node_id: renamed.get(node_id, node_id)) for i in order]


def _bodies_before_check(nodes: list[Node], index: int) -> tuple[int, int] | None:
    """Where the loop bodies before the check of the ``if`` ``nodes[index]`` start, and where the check starts."""
    op = NodeKind.OP
    scope = nodes[index].scope
    start = index
    while start > 0 and nodes[start - 1].kind is op and nodes[start - 1].scope == scope:
        start -= 1
    if index - start < 2:
        return None
    pieces = _pieces(nodes, start, index)
    (check, _), likeness = pieces[-1]
    if likeness is None or len(pieces) < 2:
        return None
    reads = likeness[0]
    made = _made_and_read(nodes[check:index])[0]
    if not made.issuperset(nodes[index].inputs):
        return None  # the `if` reads more than the check made: it joins other work
    first = check
    for (block_start, block_end), block_likeness in reversed(pieces[:-1]):
        if block_likeness is None or block_likeness[0] != reads:
            break  # (a block before the check cannot read what it made; the check reads none of theirs)
        first = block_start
    return None if first == check else (first, check)


def _canonical_blocks(nodes: list[Node], scopes: list[str | None]) -> list[Node]:
    """``nodes`` with each group of interchangeable inline blocks in content order, renumbered."""
    renamed: dict[str, str] = {}
    order = list(range(len(nodes)))
    for start, end in _direct_runs(nodes, scopes):
        if _one_piece(nodes, start, end):
            continue  # the usual run (a loop body's `tanh(fc(x) + h)`): nothing to put in order
        for group in _interchangeable_blocks(nodes, start, end):
            keys = [_block_content(nodes, block) for block in group]
            ranked = sorted(range(len(group)), key=keys.__getitem__)
            if ranked == list(range(len(group))):
                continue
            flat = [i for index in ranked for i in range(*group[index])]
            order[group[0][0] : group[-1][1]] = flat
            renamed.update(_renumbered([nodes[i].node_id for i in flat]))
    if not renamed:
        return nodes
    return [_renamed(nodes[i], lambda node_id: renamed.get(node_id, node_id)) for i in order]


def _direct_runs(nodes: list[Node], scopes: list[str | None]) -> list[tuple[int, int]]:
    """Each run ``[start, end)`` of two or more operations in one module call, none in a sub-call.

    A condition ends a run: what follows an ``if`` on a tensor depends on it, though no data says so.
    """
    op = NodeKind.OP
    calls = [scope if node.kind is op else None for node, scope in zip(nodes, scopes)]  # None: no operation
    runs: list[tuple[int, int]] = []
    start = 0
    for index in range(1, len(nodes) + 1):
        if index < len(nodes) and calls[index] is not None and calls[index] == calls[start]:
            continue
        if index - start > 1 and calls[start] is not None:
            runs.append((start, index))
        start = index
    return runs


def _one_piece(nodes: list[Node], start: int, end: int) -> bool:
    """Whether data joins all of ``[start, end)`` into one piece, told without :func:`_joined`.

    It does where each operation reads the one just before it, and that one reads an activation
    itself: an operation that reads none (a factory such as ``zeros``) is not joined to its
    readers by :func:`_joined` on that alone, so a run holding one takes the full rule.
    """
    is_node_ref = ids.is_node_ref
    for index in range(start + 1, end):
        previous = nodes[index - 1]
        inputs = nodes[index].inputs
        if len(previous.outputs) <= 1:
            if previous.node_id not in inputs:
                return False
        elif not any(ref in inputs for ref in previous.refs):
            return False
        if not any(map(is_node_ref, previous.inputs)):
            return False
    return True


def _interchangeable_blocks(nodes: list[Node], start: int, end: int) -> list[list[tuple[int, int]]]:
    """Groups of neighbouring blocks in ``[start, end)`` that no data joins and that look alike."""
    groups: list[list[tuple[int, int]]] = []
    previous: Likeness | None = None
    for block, likeness in _pieces(nodes, start, end):
        if likeness is not None and likeness == previous:
            groups[-1].append(block)
        else:
            groups.append([block])
        previous = likeness
    return [group for group in groups if len(group) > 1]


Likeness = tuple[frozenset[str], str, str]
"""What interchangeable blocks share: the activations they read from before, their first and last op."""


def _pieces(nodes: list[Node], start: int, end: int) -> list[tuple[tuple[int, int], Likeness | None]]:
    """The run's pieces as ``[start, end)`` blocks, in order, each with its likeness.

    A piece is the smallest block that holds whole the sets of operations data joins (a value
    computed and never read, such as an unused index, interleaves its set with another's).
    Blocks from one loop body share their first and last op and what they read; independent
    lines of a forward (``a = x.view(...)``, ``b = x.transpose(...)``) seldom do, so requiring
    it keeps the forward's order there. A piece that reads no activation, or writes a tensor it
    did not make, has no likeness: it is never moved.
    """
    pieces: list[tuple[tuple[int, int], Likeness | None]] = []
    for first, last in _blocks(_joined(nodes, start, end)):
        block = nodes[first : last + 1]
        made = {ref for node in block for ref in node.refs}
        reads = frozenset(
            ref for node in block for ref in node.inputs if ids.is_node_ref(ref) and ref not in made
        )
        movable = reads and not any(_writes_outside(node, made) for node in block)
        pieces.append(((first, last + 1), (reads, block[0].op, block[-1].op) if movable else None))
    return pieces


def _blocks(joined: list[list[int]]) -> list[tuple[int, int]]:
    """``(first, last)`` of the sets of indices (by first index), merged where their spans overlap."""
    blocks: list[tuple[int, int]] = []
    for indices in joined:
        if blocks and indices[0] <= blocks[-1][1]:
            blocks[-1] = (blocks[-1][0], max(blocks[-1][1], indices[-1]))
        else:
            blocks.append((indices[0], indices[-1]))
    return blocks


def _joined(nodes: list[Node], start: int, end: int) -> list[list[int]]:
    """The indices in ``[start, end)`` split into the sets data joins (union-find), by first index.

    A factory (an operation that reads no activation: ``torch.full``, ``arange``) whose tensor
    several sets read joins none of them: blocks that each read one tensor made before them are
    as independent as blocks that each read an input (a loop over a set builds each kind of mask
    from one ``full`` made before it). A factory read by one set only belongs to it.
    """
    is_node_ref = ids.is_node_ref
    producer = {ref: index for index in range(start, end) for ref in nodes[index].refs}
    factory = {index for index in range(start, end) if not any(map(is_node_ref, nodes[index].inputs))}
    root = list(range(start, end))

    def find(index: int) -> int:
        while root[index - start] != index:
            root[index - start] = root[root[index - start] - start]
            index = root[index - start]
        return index

    def union(one: int, other: int) -> None:
        one, other = find(one), find(other)
        root[max(one, other) - start] = min(one, other)

    readers: dict[int, list[int]] = {}
    for index in range(start, end):
        for ref in nodes[index].inputs:
            made_by = producer.get(ref)
            if made_by is None:
                continue
            if made_by in factory:
                readers.setdefault(made_by, []).append(index)
            else:
                union(index, made_by)
    for made_by, read_by in readers.items():
        if len({find(index) for index in read_by}) == 1:
            union(made_by, read_by[0])
    members: dict[int, list[int]] = {}
    for index in range(start, end):
        members.setdefault(find(index), []).append(index)
    return [members[first] for first in sorted(members)]


def _writes_outside(node: Node, made: set[str] | frozenset[str]) -> bool:
    """Whether ``node`` writes a tensor from outside its block: moving it would move the write."""
    return writes(node.op, dict(node.args)) and bool(node.inputs) and node.inputs[0] not in made


def _block_content(nodes: list[Node], block: tuple[int, int]) -> tuple[Any, ...]:
    """A block's nodes with its own nodes by place: equal blocks give equal keys.

    Numbers compare as numbers, so blocks a loop over a ``range`` made keep the loop's order.
    """
    place = {nodes[index].node_id: f"<{index - block[0]}>" for index in range(*block)}

    def local(ref: str) -> str:
        node_id, k = ids.split_output_ref(ref)
        if node_id not in place:
            return ref
        return place[node_id] if k is None else ids.output_ref(place[node_id], k)

    return tuple(
        (
            node.op,
            tuple(map(local, node.inputs)),
            _sortable(node.args),
            tuple(map(str, node.outputs)),
            repr(node.stats),
        )
        for node in nodes[block[0] : block[1]]
    )


def _sortable(value: Any) -> tuple[Any, ...]:
    """``value`` as a key that compares with any other: by kind, then numbers as numbers."""
    if value is None:
        return (0,)
    if isinstance(value, (bool, int)) or isinstance(value, float) and not math.isnan(value):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, (list, tuple)):
        return (3, tuple(map(_sortable, value)))
    return (4, repr(value))


def _renumbered(node_ids: list[str]) -> dict[str, str]:
    """Old id to new for ``node_ids`` (one call's, in their new order): each op's numbers handed out in order."""
    numbers: dict[tuple[str, str], list[int]] = {}
    parsed = []
    for node_id in node_ids:
        scope, name = ids.split_op_id(node_id)
        op, n = ids.split_numbered_op(name)
        parsed.append((scope, op))
        numbers.setdefault((scope, op), []).append(n)
    for taken in numbers.values():
        taken.sort(reverse=True)
    return {
        node_id: ids.op_id(scope, op, numbers[scope, op].pop())
        for node_id, (scope, op) in zip(node_ids, parsed)
    }


def _moved_call(node_id: str, renamed: dict[str, str]) -> str:
    """``node_id`` in the call its call was renamed to."""
    scope, name = ids.split_op_id(node_id)
    return ids.in_scope(renamed[scope], name) if scope in renamed else node_id


def _renamed(node: Node, rename_id: Callable[[str], str]) -> Node:
    """``node`` with its id and the node ids it reads renamed by ``rename_id``."""

    def rename(ref: str) -> str:
        if not ids.is_node_ref(ref):
            return ref
        node_id, k = ids.split_output_ref(ref)
        moved = rename_id(node_id)
        return moved if k is None else ids.output_ref(moved, k)

    node_id = rename(node.node_id) if node.kind.in_forward else node.node_id
    inputs = tuple(rename(ref) for ref in node.inputs)
    if node_id == node.node_id and inputs == node.inputs:
        return node
    return replace(node, node_id=node_id, inputs=inputs)
