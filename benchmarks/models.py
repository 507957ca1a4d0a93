"""The benchmark's models and their inputs, built deterministically and without downloads.

Each entry of :data:`MODELS` is a function ``build(device) -> (model, args)`` returning a
model in eval mode and the positional arguments of one forward pass. Weights are random
(seeded); nothing is fetched from the network. torchvision is not used: the ResNet-18
below is the standard [2, 2, 2, 2] layout of the examples' BasicBlock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

# The examples' reference network and ResNet block: the benchmark measures the models the
# documentation shows (run.py puts the checkout's root on sys.path).
from examples.models import BasicBlock, NeuralNetwork

Built = tuple[nn.Module, tuple[Any, ...]]


class ResNet18(nn.Module):
    """torchvision's resnet18 layout (11.7M parameters), written out without torchvision."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, inplanes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class LSTMCellLoop(nn.Module):
    """An ``nn.LSTMCell`` unrolled by a Python loop over 20 time steps, then a linear head."""

    def __init__(self, input_size: int = 32, hidden_size: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.cell = nn.LSTMCell(input_size, hidden_size)
        self.head = nn.Linear(hidden_size, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = x.new_zeros(x.shape[1], self.hidden_size)
        c = x.new_zeros(x.shape[1], self.hidden_size)
        for step in x:
            h, c = self.cell(step, (h, c))
        return self.head(h)


def build_mlp(device: str = "cpu") -> Built:
    with torch.device(device):
        return NeuralNetwork().eval(), (torch.randn(8, 2),)


def build_resnet18(device: str = "cpu") -> Built:
    with torch.device(device):
        return ResNet18().eval(), (torch.randn(1, 3, 224, 224),)


def build_transformer(device: str = "cpu") -> Built:
    with torch.device(device):
        layer = nn.TransformerEncoderLayer(d_model=256, nhead=8, dim_feedforward=1024, batch_first=True)
        # enable_nested_tensor=False: with no padding mask there is nothing to pack anyway,
        # and it silences the nested-tensor warning.
        model = nn.TransformerEncoder(layer, num_layers=6, enable_nested_tensor=False).eval()
        return model, (torch.randn(1, 128, 256),)


def build_lstm(device: str = "cpu") -> Built:
    with torch.device(device):
        return LSTMCellLoop().eval(), (torch.randn(20, 4, 32),)


def gpt2_config(**overrides: Any) -> Any:
    from transformers import GPT2Config

    options: dict[str, Any] = {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024}
    options.update(overrides)
    return GPT2Config(**options)


def build_gpt2(device: str = "cpu", **overrides: Any) -> Built:
    """GPT-2 small with its LM head (124M parameters), 64 tokens, from a config: no download."""
    from transformers import GPT2LMHeadModel

    config = gpt2_config(**overrides)
    with torch.device(device):
        model = GPT2LMHeadModel(config).eval()
        ids = torch.randint(
            0, config.vocab_size, (1, 64), generator=None if device == "meta" else _generator()
        )
    return model, (ids,)


def build_gpt2_xl_meta(device: str = "meta") -> Built:
    """GPT-2 XL-sized (1.5B parameters) on the meta device: structure only, no weights."""
    return build_gpt2(device, n_layer=48, n_embd=1600, n_head=25)


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def gpt2_with_inserted_layer(model: Any, *, at: int = 6) -> Any:
    """A copy of a GPT-2 model with one more transformer block, a copy of block ``at``, inserted there."""
    import copy

    changed = copy.deepcopy(model)
    blocks = changed.transformer.h
    blocks.insert(at, copy.deepcopy(blocks[at]))
    changed.config.n_layer += 1
    for index, block in enumerate(blocks):  # attention layers know their own index (KV cache)
        if hasattr(block.attn, "layer_idx"):
            block.attn.layer_idx = index
    return changed


# -- models of a size: how the cost grows ----------------------------------------------------


def chain(length: int, *, changed: int | None = None) -> nn.Sequential:
    """``length`` one-op modules in a row, of three classes in turn; ``changed``: that one a GELU."""
    kinds = (nn.ReLU, nn.Tanh, nn.Sigmoid)
    return nn.Sequential(*(nn.GELU() if k == changed else kinds[k % 3]() for k in range(length))).eval()


class StepCell(nn.Module):
    def __init__(self, width: int, act: str) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.act = act

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return getattr(torch, self.act)(self.fc(x) + h)


class StepLoop(nn.Module):
    """A cell of three ops (linear, add, activation) called once per step, then a linear head.

    ``scale`` multiplies the input first: changing it changes one op before the loop, which
    every step reads through ``unbind``.
    """

    def __init__(self, width: int = 4, act: str = "tanh", scale: float = 2.0) -> None:
        super().__init__()
        self.width, self.scale = width, scale
        self.cell = StepCell(width, act)
        self.head = nn.Linear(width, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.scale
        h = x.new_zeros(x.shape[1], self.width)
        for step in x:
            h = self.cell(step, h)
        return self.head(h)


def step_inputs(steps: int, width: int = 4) -> Tensor:
    return torch.randn(steps, 1, width, generator=_generator())


class BigBuffer(nn.Module):
    """A model holding a 500 MB buffer that its forward only reads a corner of (a lookup table)."""

    def __init__(self, megabytes: int = 500) -> None:
        super().__init__()
        self.register_buffer("table", torch.zeros(megabytes * 2**20 // 4))
        self.fc = nn.Linear(8, 8)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x) + self.table[:8]


MODELS: dict[str, tuple[str, Callable[..., Built]]] = {
    "mlp": ("reference MLP 2-4-1, batch 8", build_mlp),
    "resnet18": ("ResNet-18, 1x3x224x224", build_resnet18),
    "transformer": ("nn.TransformerEncoder 6 layers, d=256, 1x128 tokens", build_transformer),
    "lstm": ("LSTMCell loop, 20 steps, batch 4", build_lstm),
    "gpt2": ("GPT-2 small (LM head), 64 tokens", build_gpt2),
}


def build(name: str, device: str = "cpu") -> Built:
    torch.manual_seed(0)
    if name == "gpt2-xl-meta":
        return build_gpt2_xl_meta()
    return MODELS[name][1](device)
