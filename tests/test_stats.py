"""Activation statistics: opt-in, tolerant, and pointing at the first bad value."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from reference import SOURCE
from torch import nn

import pytest_modellens as lens

STATS_TEST = textwrap.dedent(
    """
    import os

    import torch
    from reference import X, NeuralNetwork


    def test_reference(model_trace, snapshot):
        net = NeuralNetwork()  # seeded by the fixture: the same weights on every run
        with torch.no_grad():
            net.hidden_to_output.weight += float(os.environ.get("LENS_NUDGE", "0"))
            if os.environ.get("LENS_NAN"):
                net.hidden_to_output.weight[0, 1] = float("nan")
        assert model_trace(net, X, stats=True) == snapshot
    """
)
SNAPSHOT = Path("__snapshots__/test_net/test_reference.lens.json")


@pytest.fixture
def stats_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(reference=SOURCE, test_net=STATS_TEST)
    assert pytester.runpytest("--lens-update").ret == 0
    return pytester


def test_a_real_change_in_one_layer_fails_naming_its_node_and_statistic(
    stats_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stats_suite.runpytest().ret == 0, "weights must be the same on every run"
    monkeypatch.setenv("LENS_NUDGE", "1e-2")
    result = stats_suite.runpytest("-vv")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*hidden_to_output/linear*mean*"])
    result.stdout.no_fnmatch_line("*input_to_hidden/linear*")  # that layer did not move


def test_float_noise_passes_and_does_not_rewrite_the_file(
    stats_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (stats_suite.path / SNAPSHOT).read_bytes()
    monkeypatch.setenv("LENS_NUDGE", "1e-7")
    assert stats_suite.runpytest().ret == 0
    result = stats_suite.runpytest("--lens-update")
    assert result.ret == 0
    result.stdout.no_fnmatch_line("*updated*")
    assert (stats_suite.path / SNAPSHOT).read_bytes() == before


def test_a_nan_names_the_first_node_that_produced_it(
    stats_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LENS_NAN", "1")
    result = stats_suite.runpytest("-vv")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*first NaN/Inf: hidden_to_output/linear*"])


def test_statistics_are_opt_in(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
        import torch
        from torch import nn

        def test_plain(model_trace, snapshot):
            assert model_trace(nn.Linear(2, 2), torch.ones(1, 2)) == snapshot
        """
    )
    assert pytester.runpytest("--lens-update").ret == 0
    plain = pytester.path / "__snapshots__/test_plain/test_plain.lens.json"
    assert "stats" not in json.loads(plain.read_text())

    # --lens-stats turns them on for every trace: the old snapshot no longer matches.
    result = pytester.runpytest("--lens-stats")
    assert result.ret == 1
    assert pytester.runpytest("--lens-stats", "--lens-update").ret == 0
    assert json.loads(plain.read_text())["stats"]["linear"].keys() == {
        "mean",
        "std",
        "min",
        "max",
        "nan",
        "inf",
    }


def test_statistics_values_are_float64_and_rounded() -> None:
    x = torch.tensor([[1.0, 2.0, float("nan"), float("inf")]])
    trace = lens.trace(nn.Identity(), x, stats=True)
    stats = json.loads(trace.dumps())["stats"]["input:input"]
    assert stats == {"mean": 1.5, "std": 0.5, "min": 1.0, "max": 2.0, "nan": 1, "inf": 1}

    trace = lens.trace(nn.Identity(), torch.full((3,), 1 / 3, dtype=torch.float64), stats=True)
    assert json.loads(trace.dumps())["stats"]["input:input"]["mean"] == 0.333333


def test_tolerances_decide_what_counts_as_equal() -> None:
    net = nn.Linear(3, 3)
    x = torch.randn(4, 3)
    old = lens.loads(lens.trace(net, x, stats=True).dumps())
    with torch.no_grad():
        net.weight += 1e-3
    assert lens.trace(net, x, stats=True, rtol=0.5, atol=0.1) == old
    assert (lens.trace(net, x, stats=True, rtol=0, atol=1e-9) == old) is False


def test_statistics_on_the_meta_device_are_refused() -> None:
    with torch.device("meta"):
        net = nn.Linear(2, 2)
    with pytest.raises(
        lens.TraceError, match="statistics need tensor values.*meta device.*without stats=True"
    ):
        lens.trace(net, torch.ones(1, 2, device="meta"), stats=True)


def _values() -> list[torch.Tensor]:
    """Tensors of every kind a forward makes, finite or not, for the two ways statistics are taken."""
    torch.manual_seed(0)
    base = torch.randn(5, 7) * 100
    found = [base, base.t(), base[:, ::2], base.expand(3, 5, 7), torch.tensor(3.5), torch.tensor([-0.0, 0.0])]
    found += [base.to(dtype) for dtype in (torch.float16, torch.bfloat16, torch.float64)]
    found += [
        (base * 1e3).to(dtype) for dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
    ]
    found += [torch.tensor([2**62, -(2**61), 7]), base > 0, torch.randn(4, dtype=torch.complex64)]
    for bad in (float("nan"), float("inf"), float("-inf")):
        for dtype in (torch.float32, torch.float16, torch.float64):
            holed = base.clone().to(dtype)
            holed[1, 2] = bad
            found.append(holed)
    found += [torch.full((3,), float("nan")), torch.tensor([float("inf"), float("-inf")])]
    return found


@pytest.mark.parametrize("index", range(len(_values())))
def test_the_quick_statistics_equal_the_masked_ones(index: int) -> None:
    from pytest_modellens.tracer.describe import _masked_stats, compute_stats

    tensor = _values()[index]
    values = tensor.abs() if tensor.is_complex() else tensor
    assert compute_stats(tensor) == _masked_stats(values.to(torch.float64))


def test_a_tensor_handed_back_unchanged_keeps_its_statistics_and_one_written_in_place_gets_new_ones() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 8)
            self.drop = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.drop(self.fc(x))  # in eval, dropout returns the very tensor it was given
            return y.relu_()  # the same tensor again, now written

    torch.manual_seed(0)
    trace = lens.trace(Net().eval(), torch.randn(16, 3), stats=True)
    fc, drop, relu, out = (trace.node(i).stats[0] for i in ("fc/linear", "drop/dropout", "relu_", "output"))
    assert fc is not None and relu is not None
    assert drop == fc and fc.min is not None and fc.min < 0
    assert relu.min == 0.0 and relu != fc and out == relu
