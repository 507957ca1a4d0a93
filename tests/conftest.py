"""Shared pieces of the test suite."""

from __future__ import annotations

import textwrap

import pytest
from reference import SOURCE

#: A test of the reference network, sized by an environment variable so a pytester run
#: can change the model between runs without editing the test file.
REFERENCE_TEST = textwrap.dedent(
    """
    import os

    from reference import X, NeuralNetwork


    def test_reference(model_trace, snapshot):
        net = NeuralNetwork(hidden_size=int(os.environ.get("LENS_HIDDEN", "4")))
        assert model_trace(net, X) == snapshot
    """
)


@pytest.fixture
def reference_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory holding the reference-network test as ``test_net.py``."""
    pytester.makepyfile(reference=SOURCE, test_net=REFERENCE_TEST)
    return pytester


@pytest.fixture(autouse=True)
def _not_an_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pytester's in-process runs look like plain runs when this suite runs under xdist.

    syrupy (like xdist itself) reads PYTEST_XDIST_WORKER to decide whether it is a worker,
    and an inner run would inherit the outer worker's variables.
    """
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
