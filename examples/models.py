"""The example models: each is a small, complete version of a model people write every day.

They are documentation. ``test_examples.py`` snapshots each one with

    assert model_trace(net, x) == snapshot

and the committed snapshots under ``__snapshots__/`` show what the plugin records for it:
every operation with its module, shapes and parameters, and the structure flags
(recurrent, branching, conditional) in the summary.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class NeuralNetwork(nn.Module):
    """The reference network of the TorchLens tutorial: two layers and a shared sigmoid."""

    def __init__(self, input_size: int = 2, hidden_size: int = 4, output_size: int = 1) -> None:
        super().__init__()
        self.input_to_hidden = nn.Linear(input_size, hidden_size)
        self.hidden_to_output = nn.Linear(hidden_size, output_size)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.sigmoid(self.input_to_hidden(x))
        return self.sigmoid(self.hidden_to_output(hidden))


#: The four corners of the unit square, as in the tutorial.
XOR_INPUTS = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float32)


class NeuralNetworkWithReLU(NeuralNetwork):
    """The reference network after a change under review: wider, and a ReLU before the output."""

    def __init__(self) -> None:
        super().__init__(hidden_size=5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.sigmoid(self.input_to_hidden(x))
        return self.sigmoid(torch.relu(self.hidden_to_output(hidden)))


class AlexNet(nn.Module):
    """AlexNet's layout (five convolutions, three pools, a dropout classifier) scaled down to 32x32 images."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=5, stride=1, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(32, 48, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(48, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Linear(32 * 2 * 2, 64),
            nn.ReLU(inplace=True),
            nn.Dropout(p=0.5),
            nn.Linear(64, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions and a skip connection (1x1 when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet-style CNN: a stem, two stages of basic blocks, global pooling, a classifier."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2), BasicBlock(2 * width, 2 * width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class PositionalEncoding(nn.Module):
    """The sinusoidal position encoding of "Attention Is All You Need", kept as a buffer."""

    def __init__(self, d_model: int, max_len: int = 64) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(position * div_term)
        table[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("table", table)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.shape[1]]


class TransformerClassifier(nn.Module):
    """A Transformer encoder over token ids, mean-pooled over the real (unpadded) tokens."""

    def __init__(
        self, vocab_size: int = 100, d_model: int = 16, num_heads: int = 2, num_layers: int = 2
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.position = PositionalEncoding(d_model)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, 4 * d_model, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 2)

    def forward(self, tokens: Tensor) -> Tensor:
        padding = tokens == 0
        h = self.encoder(self.position(self.embed(tokens)), src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(h.dtype)
        return self.head((h * keep).sum(dim=1) / keep.sum(dim=1))


class LSTMLoop(nn.Module):
    """An LSTM cell stepped in a Python loop, feeding each prediction back in (a generator's decode loop).

    The cell runs once per step: the snapshot's summary says ``recurrent`` with as many
    passes as steps, and the node ids number the calls: ``cell:3/lstm_cell``.
    """

    def __init__(self, size: int = 4, hidden: int = 8) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(size, hidden)
        self.readout = nn.Linear(hidden, size)

    def forward(self, start: Tensor, steps: int = 5) -> Tensor:
        h = torch.zeros(start.shape[0], self.cell.hidden_size, device=start.device)
        c = torch.zeros_like(h)
        x, outputs = start, []
        for _ in range(steps):
            h, c = self.cell(x, (h, c))
            x = self.readout(h)
            outputs.append(x)
        return torch.stack(outputs, dim=1)


def tiny_gpt2() -> nn.Module:
    """GPT-2 from Hugging Face ``transformers``, two layers wide 32: the real code, no download."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=99, eos_token_id=99
    )
    return GPT2LMHeadModel(config).eval()
