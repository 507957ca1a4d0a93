"""Interchangeable module calls get one order and numbering, whatever order the forward ran them in."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import pytest_modellens as lens


class Rotary(nn.Module):
    """One table per attention kind, as transformers' rotary embeddings keep them."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("full_inv_freq", torch.arange(4.0))
        self.register_buffer("sliding_inv_freq", torch.arange(4.0) / 2)

    def forward(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        return x * getattr(self, f"{kind}_inv_freq")


class PerKind(nn.Module):
    """Calls ``rotary`` once per kind, in the order given (a set's order, in transformers)."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        super().__init__()
        self.rotary = Rotary()
        self.kinds = kinds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tables = {kind: self.rotary(x, kind) for kind in self.kinds}
        return tables["full"] - tables["sliding"]


class Siamese(nn.Module):
    def __init__(self, *, swapped: bool) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.swapped = swapped

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.swapped:
            eb, ea = self.encoder(b), self.encoder(a)
        else:
            ea, eb = self.encoder(a), self.encoder(b)
        return ea - eb


def test_calls_that_differ_only_in_buffers_get_the_same_snapshot_in_either_order() -> None:
    x = torch.randn(2, 4)
    one = lens.trace(PerKind(("full", "sliding")), x)
    other = lens.trace(PerKind(("sliding", "full")), x)
    assert one.dumps() == other.dumps()
    assert one.node("rotary/mul").inputs == ("input:x", "buffer:rotary.full_inv_freq")
    assert one.node("sub").inputs == ("rotary/mul", "rotary:2/mul")


class Decoder(nn.Module):
    """A submodule whose forward starts with the calls: its first node is its first callee's."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        super().__init__()
        self.per_kind = PerKind(kinds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.per_kind(x)


def test_calls_at_the_start_of_their_callers_call_are_put_in_order_too() -> None:
    # transformers' gemma4: the decoder's first node is its rotary embedding's, so the caller's
    # call and the first callee's start at one place; the callee's next call must still follow it.
    x = torch.randn(2, 4)
    one = lens.trace(nn.Sequential(Decoder(("full", "sliding"))), x)
    other = lens.trace(nn.Sequential(Decoder(("sliding", "full"))), x)
    assert one.dumps() == other.dumps()


def test_calls_on_different_data_keep_the_forwards_order() -> None:
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    plain = lens.trace(Siamese(swapped=False), a, b)
    swapped = lens.trace(Siamese(swapped=True), a, b)
    assert plain.node("encoder/linear").inputs[0] == "input:a"
    assert swapped.node("encoder/linear").inputs[0] == "input:b"


#: Under these hash seeds ``set(LAYER_TYPES)`` iterates in both orders (the test checks it).
LAYER_TYPES = ("full_attention", "sliding_attention")
HASH_SEEDS = ("0", "1")


def _mask(attention_mask: torch.Tensor, kind: str) -> torch.Tensor:
    """A causal mask built inline, as transformers' mask functions build them: no module call."""
    rows = torch.arange(attention_mask.shape[-1])
    allowed = rows[None, :] <= rows[:, None]
    if kind == "sliding_attention":
        allowed = allowed & (rows[:, None] - rows[None, :] < 2)
    allowed = allowed[None] & attention_mask.bool()[:, None, :]
    return torch.where(allowed, 0.0, float("-inf"))


class InlineMasks(nn.Module):
    """Builds one mask per layer type in the order ``kinds`` iterates, inline in its forward."""

    def __init__(self, kinds: Iterable[str] | None = None) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.kinds = kinds

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kinds = set(LAYER_TYPES) if self.kinds is None else self.kinds
        masks = {kind: _mask(attention_mask, kind) for kind in kinds}
        scores = self.proj(x) @ x.transpose(1, 2)
        return (scores + masks["full_attention"]).softmax(-1) + (scores + masks["sliding_attention"]).softmax(
            -1
        )


class ChainedMasks(nn.Module):
    """The second mask is built from the first: the two blocks depend on each other."""

    def forward(self, attention_mask: torch.Tensor) -> torch.Tensor:
        full = attention_mask.bool()[:, None, :] & torch.ones(4, 4, dtype=torch.bool).tril()
        sliding = full & torch.ones(4, 4, dtype=torch.bool).triu(-1)
        return torch.where(full, 0.0, -1.0) + torch.where(sliding, 0.0, -1.0)


MASK_INPUTS = (torch.ones(2, 4, 4), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))

DUMP = """
import sys
sys.path.insert(0, sys.argv[1])
import pytest_modellens as lens
from test_order import InlineMasks, LAYER_TYPES, MASK_INPUTS
print(list(set(LAYER_TYPES)))
print(lens.trace(InlineMasks(), *MASK_INPUTS).dumps())
"""


def test_inline_blocks_run_in_a_hash_seed_order_give_the_same_snapshot_bytes() -> None:
    runs = [
        subprocess.run(
            [sys.executable, "-c", DUMP, str(Path(__file__).parent)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in HASH_SEEDS
    ]
    orders = [run.splitlines()[0] for run in runs]
    assert orders[0] != orders[1], f"the hash seeds {HASH_SEEDS} iterate the set in one order: {orders}"
    assert runs[0].split("\n", 1)[1] == runs[1].split("\n", 1)[1]


def test_inline_blocks_on_the_same_data_are_put_in_content_order_and_numbered_so() -> None:
    one = lens.trace(InlineMasks(LAYER_TYPES), *MASK_INPUTS)
    other = lens.trace(InlineMasks(LAYER_TYPES[::-1]), *MASK_INPUTS)
    assert one.dumps() == other.dumps()
    # Numbered in the order they are listed, so that `and:2` is read after `and`.
    numbers: dict[str, list[str]] = {}
    for node in one.op_nodes:
        numbers.setdefault(node.op, []).append(node.node_id)
    assert numbers["where"] == ["where", "where:2"]
    assert numbers["and"] == ["and", *(f"and:{n}" for n in range(2, len(numbers["and"]) + 1))]


class MasksFromOneFull(nn.Module):
    """Each mask starts from one ``torch.full`` made before the loop, as gemma4's mask functions do."""

    def __init__(self, kinds: Iterable[str]) -> None:
        super().__init__()
        self.kinds = kinds

    def forward(self, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base = torch.full((4, 4), 1.0)
        masks = {kind: _mask(attention_mask, kind) + base for kind in self.kinds}
        return masks["full_attention"], masks["sliding_attention"]  # read by what the model feeds


def test_blocks_that_read_one_tensor_made_before_them_are_put_in_content_order() -> None:
    one = lens.trace(MasksFromOneFull(LAYER_TYPES), MASK_INPUTS[1])
    other = lens.trace(MasksFromOneFull(LAYER_TYPES[::-1]), MASK_INPUTS[1])
    assert one.dumps() == other.dumps()


def test_blocks_that_read_each_other_keep_the_forwards_order() -> None:
    trace = lens.trace(ChainedMasks(), MASK_INPUTS[1])
    ops = [node.node_id for node in trace.op_nodes]
    assert ops.index("and:2") > ops.index("and")
    assert trace.node("and:2").inputs[0] == "and"


class TwoLines(nn.Module):
    """Two independent lines on the same input that do not look alike: the program's order stays."""

    def __init__(self, *, swapped: bool) -> None:
        super().__init__()
        self.swapped = swapped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swapped:
            b = x.transpose(0, 1).sum(0)
            a = x.view(-1).relu()
        else:
            a = x.view(-1).relu()
            b = x.transpose(0, 1).sum(0)
        return a.sum() + b.sum()


def test_independent_lines_that_differ_in_their_ends_keep_the_forwards_order() -> None:
    x = torch.randn(3, 3)
    plain = [node.op for node in lens.trace(TwoLines(swapped=False), x).op_nodes]
    swapped = [node.op for node in lens.trace(TwoLines(swapped=True), x).op_nodes]
    assert plain[:4] == ["view", "relu", "transpose", "sum"]
    assert swapped[:4] == ["transpose", "sum", "view", "relu"]


class RangeLoop(nn.Module):
    """Alike blocks from a loop over a range: already one order, which the numbers keep."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([(x + i).relu() for i in range(12)]).sum(0)


def test_blocks_from_a_loop_over_a_range_keep_the_loops_order() -> None:
    trace = lens.trace(RangeLoop(), torch.randn(3))
    added = [dict(node.args)["1"] for node in trace.op_nodes if node.op == "add"]
    assert added == list(range(12))


class PositionRotary(nn.Module):
    """Reads the positions and a table per kind; of the hidden states only their dtype, as transformers' do."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("sliding_attention_inv_freq", torch.arange(4.0))
        self.register_buffer("indexed_attention_inv_freq", torch.arange(2.0))

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, kind: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions[..., None].float() * getattr(self, f"{kind}_inv_freq")
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


class Layer(nn.Module):
    """A decoder layer: what the loops made is read here, by calls, not inline in the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, table: Any) -> torch.Tensor:
        scale = table if isinstance(table, torch.Tensor) else table[0].sum() + table[1].sum()
        return self.proj(x) * scale + mask.sum()


class _KindsLoop(nn.Module):
    """A rotary module and two layers; the forward loops over ``kinds`` in the order given."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        super().__init__()
        self.rotary = PositionRotary()
        self.layers = nn.ModuleList([Layer(), Layer()])
        self.kinds = kinds


class ScaledOrRotary(_KindsLoop):
    """Beam's loop: one layer type's work is inline (a scale from the positions), the other's a call."""

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1]).unsqueeze(0)
        masks = {kind: _mask(attention_mask, kind) for kind in self.kinds}
        tables: dict[str, Any] = {}
        for kind in self.kinds:
            if kind == "full_attention":
                tables[kind] = torch.exp(0.1 * torch.log1p((positions.float() + 1) / 2048))[:, :, None]
            else:
                tables[kind] = self.rotary(x, positions, kind)
        for layer, kind in zip(self.layers, LAYER_TYPES):
            x = layer(x, masks[kind], tables[kind])
        return x


def test_an_inline_block_and_a_call_run_in_either_order_give_the_same_snapshot() -> None:
    x = torch.randn(2, 4, 4)
    one = lens.trace(ScaledOrRotary(LAYER_TYPES), x, MASK_INPUTS[1])
    other = lens.trace(ScaledOrRotary(LAYER_TYPES[::-1]), x, MASK_INPUTS[1])
    assert one.dumps() == other.dumps()
    ops = [node.node_id for node in one.op_nodes]
    # The call first, then the inline work on its inputs: the masks before them stay one run.
    assert ops.index("rotary/cos") < ops.index("log1p") < ops.index("layers.0/mul")
    assert [node.node_id for node in one.op_nodes if node.op == "where"] == ["where", "where:2"]


class PreparedOrNot(_KindsLoop):
    """dots3's loop: the call's argument is prepared inline for one kind only, so the calls are not back to back."""

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1]).unsqueeze(0)
        tables = {
            kind: self.rotary(x.float() if kind == "indexed_attention" else x, positions, kind)
            for kind in self.kinds
        }
        for layer, kind in zip(self.layers, ("indexed_attention", "sliding_attention")):
            x = layer(x, attention_mask, tables[kind])
        return x


def test_calls_with_inline_work_between_them_give_the_same_snapshot_in_either_order() -> None:
    x = torch.randn(2, 4, 4)
    kinds = ("indexed_attention", "sliding_attention")
    one = lens.trace(PreparedOrNot(kinds), x, MASK_INPUTS[1])
    other = lens.trace(PreparedOrNot(kinds[::-1]), x, MASK_INPUTS[1])
    assert one.dumps() == other.dumps()
    ops = [node.node_id for node in one.op_nodes]
    assert ops.index("float") < ops.index("rotary/getitem") < ops.index("rotary:2/getitem")


class Combined(nn.Module):
    """Inline work and a call on the same tensor that the forward then combines: not a loop."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.weight = nn.Parameter(torch.randn(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1).float()
        mixes = torch.nn.functional.linear(flat, self.weight)
        return mixes * self.norm(flat)


def test_inline_work_and_a_call_that_the_forward_combines_keep_the_forwards_order() -> None:
    ops = [node.node_id for node in lens.trace(Combined(), torch.randn(2, 4)).op_nodes]
    assert ops.index("linear") < ops.index("norm/layer_norm") < ops.index("mul")


class CheckedOrMasked(nn.Module):
    """lfm3's masks: for one layer type only a check (``if (mask == 1).all()``), for the other a full mask."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.kinds = kinds

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        masks: dict[str, Any] = {}
        for kind in self.kinds:
            if kind == "conv":
                masks[kind] = None if (attention_mask == 1).all() else attention_mask
            else:
                masks[kind] = _mask(attention_mask, kind)
        scores = self.proj(x) @ x.transpose(1, 2)
        return (scores + masks["full_attention"]).softmax(-1)


def test_a_check_and_a_block_beside_it_give_the_same_snapshot_in_either_order() -> None:
    x, mask = torch.randn(2, 4, 4), torch.ones(2, 4, dtype=torch.long)
    one = lens.trace(CheckedOrMasked(("conv", "full_attention")), x, mask)
    other = lens.trace(CheckedOrMasked(("full_attention", "conv")), x, mask)
    assert one.dumps() == other.dumps()
    # The order a forward that checks first gives: the check, its `if`, then the mask.
    ops = [node.node_id for node in one.nodes if node.kind.in_forward]
    assert ops.index("all") < ops.index("bool") < ops.index("where") < ops.index("proj/linear")


class CheckThenBranch(nn.Module):
    """Work before a check on the same tensor and work after its ``if`` that reads it too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = x + 1
        if (x > 0).all():
            return shifted * x.cos()
        return shifted


def test_the_work_after_an_if_never_moves_before_it() -> None:
    trace = lens.trace(CheckThenBranch(), torch.ones(2, 3))
    ops = [node.op for node in trace.nodes if node.kind.in_forward]
    # `add` ran before the check and may move after its `if`; `cos` ran after it and stays there.
    assert ops == ["gt", "all", "bool", "add", "cos", "mul"]
    assert lens.trace(CheckThenBranch(), torch.ones(2, 3)).dumps() == trace.dumps()


class CheckOnOther(nn.Module):
    """A check on another tensor than the block before it reads: not two bodies of one loop."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        shifted = x + 1
        if (mask == 1).all():
            return shifted
        return shifted * mask


def test_a_block_that_reads_other_data_than_the_check_keeps_its_place() -> None:
    trace = lens.trace(CheckOnOther(), torch.ones(2, 3), torch.ones(2, 3))
    assert [node.op for node in trace.nodes if node.kind.in_forward] == ["add", "eq", "all", "bool"]


OUTSIDE = [nn.Linear(4, 4), nn.Linear(4, 4)]


class MasksBesideOutsideModules(InlineMasks):
    """Masks in the order given, after two modules outside the model's tree (ids ``<Linear#2>/...``)."""

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return super().forward(OUTSIDE[1](OUTSIDE[0](x)).chunk(2, -1)[1].repeat(1, 1, 2), attention_mask)


def test_blocks_are_put_in_order_beside_modules_outside_the_models_tree() -> None:
    one = lens.trace(MasksBesideOutsideModules(LAYER_TYPES), *MASK_INPUTS)
    other = lens.trace(MasksBesideOutsideModules(LAYER_TYPES[::-1]), *MASK_INPUTS)
    assert one.dumps() == other.dumps()
    assert [node.node_id for node in one.op_nodes][:3] == ["<Linear>/linear", "<Linear#2>/linear", "chunk"]
    assert lens.loads(one.dumps()).dumps() == one.dumps()


def test_a_run_told_one_piece_at_a_glance_is_one_piece_for_the_full_rule() -> None:
    """The shortcut for a chained run (a loop body) agrees with the union-find on every zoo model's runs."""
    from zoo import ZOO

    from pytest_modellens.tracer.order import _direct_runs, _one_piece, _pieces, _scopes

    told = 0
    for case in ZOO:
        model, args, kwargs = case.build()
        nodes = list(lens.trace(model, *args, **kwargs).nodes)
        for start, end in _direct_runs(nodes, _scopes(nodes)):
            if _one_piece(nodes, start, end):
                told += 1
                assert len(_pieces(nodes, start, end)) == 1, (case.name, nodes[start].node_id)
    assert told > 10  # the shortcut is taken, not only never wrong
