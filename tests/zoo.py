"""A zoo of small models that use PyTorch the way people do, for the tracer's tests.

Each :class:`Case` builds its model and inputs from a fixed seed, on the CPU; move both
with :func:`to_device` to trace them elsewhere (``scripts/compare_devices.py`` does).
Models that make tensors inside forward put them on the inputs' device, as portable
code does. The structure flags each model must show are written next to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

Built = tuple[nn.Module, tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class Case:
    """One zoo model: how to build it, and the structure flags its trace must show."""

    name: str
    make: Callable[[], Built]
    recurrent: bool = False
    branching: bool = False
    conditional: bool = False
    passes: int = 1
    #: Draws from the global RNG of its device: statistics differ from device to device.
    random: bool = False

    def build(self) -> Built:
        """The model, its positional and its keyword inputs, the same on every call."""
        torch.manual_seed(0)
        return self.make()


def to_device(value: Any, device: torch.device | str) -> Any:
    """``value`` with every tensor inside it (nested containers, dataclasses) moved to ``device``."""
    if isinstance(value, (Tensor, nn.Module)):
        return value.to(device)
    if isinstance(value, tuple):
        return (
            type(value)(*(to_device(v, device) for v in value))
            if hasattr(value, "_fields")
            else tuple(to_device(v, device) for v in value)
        )
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


# -- plain layers, written three ways ---------------------------------------------------


class FunctionalMLP(nn.Module):
    """Parameters held directly; the forward is torch.nn.functional calls only."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(16, 8) * 0.3)
        self.b1 = nn.Parameter(torch.zeros(16))
        self.w2 = nn.Parameter(torch.randn(4, 16) * 0.3)

    def forward(self, x: Tensor) -> Tensor:
        hidden = F.gelu(F.linear(x, self.w1, self.b1))
        hidden = F.layer_norm(hidden, (16,))
        return F.log_softmax(F.linear(hidden, self.w2), dim=-1)


class InPlace(nn.Module):
    """In-place ops on activations: ``relu_``, ``add_``, ``*=``, ``ReLU(inplace=True)``, ``x[i] = v``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)
        h.relu_()
        h.add_(1.0)
        h *= 0.5
        h = self.act(h - 1.0)
        h[:, 0] = 0.0
        return h.clamp_(max=2.0)


class ViewsAndIndexing(nn.Module):
    """Views, reshapes, transposes, slices, boolean and integer indexing, writes through ``[]``."""

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        flat = x.view(2, 12).reshape(6, 4).t().contiguous()
        strided = x.transpose(1, 2).permute(0, 2, 1)[:, 1:, ::2]
        picked = x[0, :, -1] + x[..., 0].sum(0)
        mask = x > 0
        masked_mean = x[mask].mean()
        gathered = x[:, torch.tensor([2, 0], device=x.device)]
        written = torch.zeros_like(x)
        written[:, 0] = x[:, 1]
        written[mask] = 1.0
        left, right = x.chunk(2, dim=2)
        first, *_ = x.unbind(1)
        tiled = first.unsqueeze(0).expand(3, -1, -1).flatten(0, 1)
        return flat, strided, picked, masked_mean, gathered, written, left - right, tiled


class CreatesTensors(nn.Module):
    """Tensors made inside forward: factories, a seeded generator, numpy, literals."""

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[-1]
        positions = torch.arange(n, dtype=x.dtype, device=x.device)
        generator = torch.Generator().manual_seed(7)  # the same numbers on every device
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        table = torch.from_numpy(np.linspace(0.0, 1.0, n, dtype=np.float32)).to(x.device)
        scale = torch.tensor([0.5], device=x.device)
        y = (x + positions + table + 0.1 * noise) * scale
        y = y @ torch.eye(n, device=x.device) + x.new_ones(n) + torch.full_like(x, 2.0)
        padding = torch.zeros(x.shape[0], 1, device=x.device)
        return torch.cat([y, padding], dim=1)


@dataclass
class NestedOutput:
    """A dataclass result, as libraries return them."""

    logits: Tensor
    hidden: tuple[Tensor, Tensor]
    extras: dict[str, Any]


class NestedIO(nn.Module):
    """Several inputs and outputs: nested tuples, lists and dicts, keyword arguments, a dataclass.

    ``proj`` runs on two inputs: two passes of its weights, so the trace counts as recurrent.
    """

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(
        self,
        image: Tensor,
        pair: tuple[Tensor, list[Tensor]],
        features: dict[str, Any],
        *,
        scale: float = 1.0,
        bias: Tensor | None = None,
    ) -> NestedOutput:
        a, (b, c) = pair
        h1 = self.proj(image) * scale + features["x"]
        h2 = self.proj(a + b - c) + features["nested"]["y"]
        if bias is not None:
            h2 = h2 + bias
        return NestedOutput(logits=h1 + h2, hidden=(h1, h2), extras={"pair": [a, c], "none": None, "n": 3})


# -- state: buffers, shared parameters, modules used twice --------------------------------


class BufferModel(nn.Module):
    """BatchNorm (running statistics in train, read-only in eval) and buffers written in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("ema", torch.zeros(4))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn(self.conv(x)))
        channel_means = y.mean(dim=(0, 2, 3))
        self.steps += 1
        self.ema.mul_(0.9).add_(channel_means, alpha=0.1)
        return y * self.ema.view(1, -1, 1, 1)


class SharedWeights(nn.Module):
    """Tied input and output embeddings, and one block called twice (its weights run two passes)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.block(self.block(self.embed(tokens))))


class LoopCell(nn.Module):
    """An Elman-style cell applied in a Python loop over the sequence: one pass of the cell per step.

    Each state feeds only the next step: a chain, with no branching.
    """

    def __init__(self, size: int = 6) -> None:
        super().__init__()
        self.cell = nn.Linear(2 * size, size)
        self.out = nn.Linear(size, 2)

    def forward(self, sequence: Tensor) -> Tensor:
        h = torch.zeros(sequence.shape[1], sequence.shape[2], device=sequence.device)
        for step in sequence:  # iterating a tensor: one unbind, then a tensor per step
            h = torch.tanh(self.cell(torch.cat([step, h], dim=-1)))
        return self.out(h)


class ModelCallsModel(nn.Module):
    """A model that runs another model it owns, and a module it only holds in a plain list.

    The unregistered module has no parameters, so ``.to(device)`` (which cannot see it) still
    leaves a working model; tests/test_tracer.py covers outside modules with parameters.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = FunctionalMLP()
        self.helpers = [nn.Softmax(dim=-1)]  # not registered: a module living outside the tree

    def forward(self, x: Tensor) -> Tensor:
        return self.helpers[0](self.backbone(x).exp())


# -- recurrent layers --------------------------------------------------------------------


class PackedLSTM(nn.Module):
    """A bidirectional two-layer LSTM over packed variable-length sequences."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(10, 2)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        packed = pack_padded_sequence(
            x, lengths.cpu(), batch_first=True, enforce_sorted=False
        )  # lengths live on the CPU
        out, (h, _c) = self.lstm(packed)
        padded, _ = pad_packed_sequence(out, batch_first=True)
        return self.head(padded), h


class GRUAndRNN(nn.Module):
    """A bidirectional GRU feeding a ReLU RNN, with an explicit initial state."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(4, 6, bidirectional=True)
        self.rnn = nn.RNN(12, 3, nonlinearity="relu")

    def forward(self, x: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
        y, _ = self.gru(x)
        return self.rnn(y, h0)


# -- attention ----------------------------------------------------------------------------


class Attention(nn.Module):
    """nn.MultiheadAttention with masks, and scaled_dot_product_attention called directly."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.qkv = nn.Linear(8, 24)

    def forward(self, x: Tensor, padding: Tensor) -> tuple[Tensor, Tensor]:
        causal = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device), 1)
        attended, weights = self.mha(x, x, x, key_padding_mask=padding, attn_mask=causal)
        q, k, v = self.qkv(attended).view(x.shape[0], x.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return out.transpose(1, 2).reshape(x.shape), weights


class Seq2SeqTransformer(nn.Module):
    """nn.TransformerEncoder and nn.TransformerDecoder with padding and causal masks."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 2, enable_nested_tensor=False
        )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True), 1
        )

    def forward(self, src: Tensor, tgt: Tensor, src_padding: Tensor) -> Tensor:
        memory = self.encoder(src, src_key_padding_mask=src_padding)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1], device=tgt.device)
        return self.decoder(tgt, memory, tgt_mask=causal, memory_key_padding_mask=src_padding)


# -- control flow and custom code ---------------------------------------------------------


class ControlFlow(nn.Module):
    """Python ``if`` and ``while`` on tensor values."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)
        if h.mean() > 0:
            h = h * 2
        else:
            h = -h
        while h.abs().max() > 1:
            h = h / 2
        return torch.sigmoid(h)


class GradReverse(torch.autograd.Function):
    """Identity forward, negated gradient (domain-adversarial training)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: float) -> Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.weight * grad, None


class RoundSTE(torch.autograd.Function):
    """Rounding with a straight-through gradient (quantisation-aware training)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return torch.round(x * 4) / 4

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


class CustomFunctions(nn.Module):
    """Custom autograd Functions between ordinary layers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return RoundSTE.apply(GradReverse.apply(self.fc(x), 0.5))


class ScatterGather(nn.Module):
    """where, scatter, gather, einsum, topk and friends."""

    def forward(self, x: Tensor, index: Tensor) -> tuple[Tensor, ...]:
        positive = torch.where(x > 0, x, torch.zeros_like(x))
        rows, cols = torch.where(x > 1)
        scattered = torch.zeros(3, 5, device=x.device).scatter_(1, index, x[:, :2])
        added = torch.zeros(3, 5, device=x.device).scatter_add(1, index, torch.ones_like(x[:, :2]))
        gathered = torch.gather(x, 1, index)
        mixed = torch.einsum("ij,kj->ik", x, positive)
        top_values, top_indices = x.topk(2, dim=1)
        filled = x.masked_fill(x < 0, -1.0).cumsum(dim=1)
        return positive, rows + cols, scattered + added, gathered, mixed, top_values, top_indices, filled


class MixedDtypes(nn.Module):
    """Half, bfloat16, integer and boolean tensors, and the casts between them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.fc(x)
        half = (h.half() * 2).float()
        brain = h.to(torch.bfloat16).relu().to(torch.float32)
        buckets = (h * 10).long().clamp(0, 9)
        flags = (buckets % 2).bool() & (h > 0)
        double = half.double() + brain.type_as(half)
        return double, buckets.float().mean(dim=1), flags.sum(dim=1)


class NoGradInside(nn.Module):
    """``torch.no_grad()`` and ``detach()`` inside forward (a target network, a stop-gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.online = nn.Linear(4, 4)
        self.target = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            target = self.target(x)
        return F.mse_loss(self.online(x), target.detach())


class VAE(nn.Module):
    """A variational autoencoder in training mode: dropout and the reparameterisation trick draw
    from the global RNG, which the trace must leave as it found it."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2))
        self.mu = nn.Linear(16, 2)
        self.log_var = nn.Linear(16, 2)
        self.decoder = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 8), nn.Sigmoid())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.encoder(x)
        mu, log_var = self.mu(h), self.log_var(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        return self.decoder(z), mu, log_var


class ResNetish(nn.Module):
    """Convolutions, batch norm, pooling and a residual connection (a tensor read twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(self.stem(x), 2)
        x = F.relu(x + self.block(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class SignalAndMisc(nn.Module):
    """Layers people reach for: embeddings, group norm, conv1d/transposed conv, FFT, interpolation,
    weight-normed linear, pixel shuffle, padding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(12, 8, padding_idx=0)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.up = nn.ConvTranspose1d(8, 4, 2, stride=2)
        self.fc = nn.utils.parametrizations.weight_norm(nn.Linear(9, 4))
        self.shuffle = nn.PixelShuffle(2)
        self.dropout = nn.Dropout(0.1)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        h = self.embed(tokens).transpose(1, 2)
        h = self.dropout(F.silu(self.norm(self.conv(h))))
        h = self.up(h)
        spectrum = torch.fft.rfft(h, dim=-1).abs()
        wave = F.interpolate(spectrum, size=9, mode="linear", align_corners=False)
        image = F.pad(self.fc(wave).view(2, 16, 1, 1), (0, 1, 0, 1)).view(2, 16, 2, 2)
        return wave, self.shuffle(image)


# -- the zoo ------------------------------------------------------------------------------


def _nested_io() -> Built:
    pair = (torch.randn(2, 4), [torch.randn(2, 4), torch.randn(2, 4)])
    features = {"x": torch.randn(2, 4), "nested": {"y": torch.randn(4)}}
    return NestedIO(), (torch.randn(2, 4), pair, features), {"scale": 0.5, "bias": torch.randn(4)}


ZOO = [
    Case("functional_mlp", lambda: (FunctionalMLP(), (torch.randn(3, 8),), {})),
    Case("in_place", lambda: (InPlace(), (torch.randn(3, 8),), {})),
    Case("views_and_indexing", lambda: (ViewsAndIndexing(), (torch.randn(2, 3, 4),), {}), branching=True),
    Case("creates_tensors", lambda: (CreatesTensors(), (torch.randn(3, 4),), {}), branching=True),
    Case("nested_io", _nested_io, recurrent=True, branching=True, passes=2),
    Case("buffers_train", lambda: (BufferModel().train(), (torch.randn(2, 3, 6, 6),), {}), branching=True),
    Case("buffers_eval", lambda: (BufferModel().eval(), (torch.randn(2, 3, 6, 6),), {}), branching=True),
    Case(
        "shared_weights",
        lambda: (SharedWeights(), (torch.tensor([[1, 2, 3], [4, 5, 6]]),), {}),
        recurrent=True,
        passes=2,
    ),
    Case("loop_cell", lambda: (LoopCell(), (torch.randn(5, 2, 6),), {}), recurrent=True, passes=5),
    Case("model_calls_model", lambda: (ModelCallsModel(), (torch.randn(3, 8),), {})),
    Case(
        "packed_lstm",
        lambda: (PackedLSTM(), (torch.randn(3, 4, 3), torch.tensor([4, 2, 3])), {}),
        branching=True,
    ),
    Case("gru_and_rnn", lambda: (GRUAndRNN(), (torch.randn(5, 2, 4), torch.zeros(1, 2, 3)), {})),
    Case(
        "attention",
        lambda: (
            Attention().eval(),
            (torch.randn(2, 4, 8), torch.tensor([[False, False, False, True], [False, False, False, False]])),
            {},
        ),
        branching=True,
    ),
    Case(
        "transformer",
        lambda: (
            Seq2SeqTransformer().eval(),
            (
                torch.randn(2, 3, 8),
                torch.randn(2, 4, 8),
                torch.tensor([[False, False, True], [False, False, False]]),
            ),
            {},
        ),
        branching=True,
        conditional=True,  # the decoder checks whether its mask is the causal one
    ),
    Case(
        "control_flow",
        lambda: (ControlFlow(), (torch.randn(3, 4) * 4,), {}),
        conditional=True,
        branching=True,
    ),
    Case("custom_functions", lambda: (CustomFunctions(), (torch.randn(2, 4),), {})),
    Case(
        "scatter_gather",
        lambda: (ScatterGather(), (torch.randn(3, 5), torch.tensor([[0, 4], [1, 1], [3, 2]])), {}),
        branching=True,
    ),
    Case("mixed_dtypes", lambda: (MixedDtypes(), (torch.randn(3, 4),), {}), branching=True),
    Case("no_grad_inside", lambda: (NoGradInside(), (torch.randn(3, 4),), {}), branching=True),
    Case("vae", lambda: (VAE().train(), (torch.rand(4, 8),), {}), branching=True, random=True),
    Case("resnetish", lambda: (ResNetish().eval(), (torch.randn(2, 3, 8, 8),), {}), branching=True),
    Case(
        "signal_and_misc",
        lambda: (SignalAndMisc().eval(), (torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]),), {}),
        branching=True,
    ),
]
CASES = {case.name: case for case in ZOO}
