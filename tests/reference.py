"""The reference network of the TorchLens tutorial this project grew out of, for the tests.

pytester runs write this file next to their test files (see ``SOURCE``), so every test
traces the very same network.
"""

from pathlib import Path

import torch
from torch import nn


class NeuralNetwork(nn.Module):
    def __init__(self, input_size=2, hidden_size=4, output_size=1):
        super().__init__()
        self.input_to_hidden = nn.Linear(input_size, hidden_size)
        self.hidden_to_output = nn.Linear(hidden_size, output_size)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        hidden = self.sigmoid(self.input_to_hidden(x))
        return self.sigmoid(self.hidden_to_output(hidden))


X = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float32)

SOURCE = Path(__file__).read_text()
