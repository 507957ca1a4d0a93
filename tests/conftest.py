"""Shared pieces of the test suite."""

from __future__ import annotations

import textwrap

import pytest

#: The reference network of the TorchLens tutorial, sized by environment variables so a
#: pytester run can change the model between runs without editing the test file.
REFERENCE_TEST = textwrap.dedent(
    """
    import os

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


    def test_reference(model_trace, snapshot):
        net = NeuralNetwork(hidden_size=int(os.environ.get("LENS_HIDDEN", "4")))
        assert model_trace(net, X) == snapshot
    """
)


@pytest.fixture
def reference_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory holding the reference-network test as ``test_net.py``."""
    pytester.makepyfile(test_net=REFERENCE_TEST)
    return pytester


@pytest.fixture(autouse=True)
def _not_an_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pytester's in-process runs look like plain runs when this suite runs under xdist.

    syrupy (like xdist itself) reads PYTEST_XDIST_WORKER to decide whether it is a worker,
    and an inner run would inherit the outer worker's variables.
    """
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
