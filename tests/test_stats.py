"""Activation statistics: opt-in, tolerant, and pointing at the first bad value."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from reference import SOURCE
from torch import nn

import pytest_modellens as lens
from pytest_modellens.tracer.describe import _masked_stats, compute_stats

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


# -- tensors that are not plain dense ones ---------------------------------------------------


class Returns(nn.Module):
    """A model whose forward returns what ``make`` makes of its input."""

    def __init__(self, make: Any) -> None:
        super().__init__()
        self.make = make

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.make(x)


def _assert_close(found: lens.Stats, expected: lens.Stats, *, rel: float = 1e-12) -> None:
    """The same statistics up to float64 rounding (summing in another order moves the last bits)."""
    assert (found.nan, found.inf) == (expected.nan, expected.inf)
    for name in ("mean", "std", "min", "max"):
        assert getattr(found, name) == pytest.approx(getattr(expected, name), rel=rel, abs=1e-300), name


def _holed() -> torch.Tensor:
    """A mostly-zero tensor with negative, NaN and Inf values among its stored ones."""
    torch.manual_seed(0)
    dense = torch.randn(6, 4) * (torch.rand(6, 4) < 0.4)
    dense[1, 2], dense[4, 0] = float("nan"), float("-inf")
    return dense


def _uncoalesced() -> torch.Tensor:
    """A COO tensor that stores index (0, 1) twice: its dense value is the sum, 3.0."""
    return torch.sparse_coo_tensor([[0, 0, 1, 2], [1, 1, 0, 2]], [1.0, 2.0, -3.0, 0.5], (3, 4))


SPARSE = {
    "coo": lambda: _holed().to_sparse(),
    "coo-uncoalesced": _uncoalesced,
    "coo-hybrid": lambda: _holed().to_sparse(sparse_dim=1),
    "coo-no-stored-value": lambda: torch.zeros(3, 5).to_sparse(),
    "coo-nothing-implicit": lambda: torch.arange(1.0, 7.0).reshape(2, 3).to_sparse(),
    "coo-int": lambda: (_holed().nan_to_num(0, 0, 0) * 10).to(torch.int64).to_sparse(),
    "coo-complex": lambda: torch.complex(_holed().nan_to_num(0, 0, 0), torch.ones(6, 4)).to_sparse(),
    "csr": lambda: _holed().to_sparse_csr(),
    "csc": lambda: _holed().to_sparse_csc(),
    "bsr": lambda: _holed().to_sparse_bsr((2, 2)),
    "bsc": lambda: _holed().to_sparse_bsc((3, 2)),
}


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta", "ignore:Sparse invariant checks")
@pytest.mark.parametrize("make", SPARSE.values(), ids=SPARSE.keys())
def test_statistics_of_a_sparse_tensor_are_those_of_its_dense_values(make: Any) -> None:
    sparse = make()
    trace = lens.trace(nn.Identity(), sparse, stats=True)
    _assert_close(trace.node("input:input").stats[0], compute_stats(sparse.to_dense()))


def test_statistics_of_a_huge_sparse_tensor_are_taken_without_making_it_dense() -> None:
    n = 10**6  # dense, this is 4 TB
    sparse = torch.sparse_coo_tensor([[0, n - 1], [5, n - 1]], [3.0, -1.0], (n, n))
    found = lens.trace(nn.Identity(), sparse, stats=True).node("input:input").stats[0]
    mean = 2.0 / n**2
    _assert_close(found, lens.Stats(mean, math.sqrt(10.0 / n**2 - mean**2), -1.0, 3.0, 0, 0))


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_statistics_of_a_quantized_tensor_are_those_of_its_dequantized_values() -> None:
    x = torch.tensor([[0.5, -1.0, 2.3], [0.0, 7.1, -0.2]])
    for quantized in (
        torch.quantize_per_tensor(x, 0.1, 3, torch.quint8),
        torch.quantize_per_channel(x, torch.tensor([0.1, 0.05]), torch.tensor([0, 1]), 0, torch.qint8),
    ):
        found = lens.trace(nn.Identity(), quantized, stats=True).node("input:input").stats[0]
        assert found == compute_stats(quantized.dequantize())
        assert found != compute_stats(quantized.int_repr()), "the stored integers are not the values"


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
@pytest.mark.parametrize("layout", [torch.strided, torch.jagged], ids=["nested", "jagged"])
def test_statistics_of_a_nested_tensor_are_over_every_element_of_its_components(layout: torch.layout) -> None:
    parts = [torch.tensor([[1.0, float("nan")], [2.0, 3.0]]), torch.tensor([[-4.0, 5.0]])]
    nested = torch.nested.nested_tensor(parts, layout=layout)
    found = lens.trace(nn.Identity(), nested, stats=True).node("input:input").stats[0]
    assert found == compute_stats(torch.cat([part.flatten() for part in parts]))


def test_statistics_of_an_mkldnn_tensor_are_those_of_its_values() -> None:
    x = torch.randn(3, 4)
    assert lens.trace(nn.Identity(), x.to_mkldnn(), stats=True).node("input:input").stats[0] == compute_stats(
        x
    )


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: torch.zeros(1).expand(10**7, 10**6), lens.Stats(0.0, 0.0, 0.0, 0.0, 0, 0)),
        (
            lambda: torch.tensor([1.0, float("nan"), 3.0]).expand(10**7, 10**6, 3),
            lens.Stats(2.0, 1.0, 1.0, 3.0, 10**13, 0),
        ),
        (
            lambda: torch.tensor([[1.0], [float("-inf")], [4.0]]).expand(3, 10**7).expand(10**6, 3, 10**7),
            lens.Stats(2.5, 1.5, 1.0, 4.0, 0, 10**13),
        ),
    ],
    ids=["zeros", "nan-in-a-repeated-row", "inf-in-a-repeated-column"],
)
def test_statistics_of_a_huge_expanded_tensor_are_taken_on_what_it_repeats(
    make: Any, expected: lens.Stats
) -> None:
    found = lens.trace(Returns(lambda x: make()), torch.ones(1), stats=True).node("output").stats[0]
    _assert_close(found, expected)


def test_statistics_of_a_large_expanded_tensor_equal_the_dense_ones() -> None:
    torch.manual_seed(0)
    base = torch.randn(5, 1, 7)
    base[0, 0, 3] = float("inf")
    expanded = base.expand(5, 2**17, 7)  # larger than the size below which it is made dense
    # Summing 4.6 million float64 values rounds at about 1e-12 of the sum: the dense side's noise.
    _assert_close(compute_stats(expanded), compute_stats(expanded.contiguous()), rel=1e-9)


def test_statistics_that_cannot_be_taken_name_the_node_and_the_way_out() -> None:
    storage = torch.ones(11 * 10**6)
    overlapping = Returns(lambda x: x.as_strided((10**7, 10**6), (1, 1)))  # 4e13 values over 1e7
    with pytest.raises(
        lens.TraceError,
        match=r"statistics of 'as_strided' \(float32\[10000000, 1000000\]\) could not be taken.*"
        r"stats=False",
    ) as failure:
        lens.trace(overlapping, storage, stats=True)
    # The tracer's own failure, not one of the forward: said as such, not as "the forward raised".
    assert "forward pass" not in str(failure.value) and "model was left unchanged" in str(failure.value)
    assert lens.trace(overlapping, storage).node("as_strided").outputs[0].shape == (10**7, 10**6)
