"""The first trace of a model equals later ones, whatever the forward caches on its first call."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from unchanged import assert_unchanged, observe

import pytest_modellens as lens


class CachesOnFirstCall(nn.Module):
    """Builds a table on its first forward and reads it from then on (as lru-cached helpers do)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.table: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            self.table = torch.arange(4.0).cos()
        return self.linear(x) + self.table


class GrowsACache:
    def __init__(self) -> None:
        self.keys = torch.zeros(1, 2)


class AppendsToItsCache(nn.Module):
    def forward(self, x: torch.Tensor, cache: GrowsACache) -> torch.Tensor:
        cache.keys = torch.cat([cache.keys, x])
        return cache.keys.sum(0)


def test_the_first_trace_equals_the_later_ones() -> None:
    model, x = CachesOnFirstCall(), torch.randn(2, 4)
    texts = [lens.trace(model, x).dumps() for _ in range(3)]
    assert texts[0] == texts[1] == texts[2]
    fresh = CachesOnFirstCall()
    fresh.load_state_dict(model.state_dict())
    assert lens.trace(fresh, x).dumps() == texts[0], "a model never called traces as a warm one"


def test_without_warmup_the_first_call_shows() -> None:
    model, x = CachesOnFirstCall(), torch.randn(2, 4)
    first = lens.trace(model, x, warmup=False)
    assert "cos" in {node.op for node in first.op_nodes}
    assert "cos" not in {node.op for node in lens.trace(model, x, warmup=False).op_nodes}


def test_the_warmup_changes_nothing_the_caller_has() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5)).train()
    x = torch.randn(8, 4)
    before = observe(model, x)
    lens.trace(model, x, stats=True)
    assert_unchanged(before, observe(model, x))


def test_an_object_the_forward_grows_is_grown_once() -> None:
    cache = GrowsACache()
    trace = lens.trace(AppendsToItsCache(), torch.ones(1, 2), cache)
    assert cache.keys.shape == (2, 2), "the trace's forward grew it, the warm-up grew a copy"
    assert trace.node("cat").inputs == ("input:cache.keys", "input:x")


def test_a_forward_that_writes_its_parameters_is_named() -> None:
    class Rescales(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.fc.weight.data.mul_(0.5)
            return self.fc(x)

    model = Rescales()
    weight = model.fc.weight.clone()
    with pytest.warns(
        lens.ModelStateWarning, match=r"Rescales wrote 1 parameter\(s\) in place \(fc.weight\)"
    ):
        lens.trace(model, torch.ones(1, 2))
    assert torch.equal(model.fc.weight, weight)


def test_a_forward_that_writes_only_buffers_gives_no_warning() -> None:
    model = nn.BatchNorm1d(3).train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lens.trace(model, torch.randn(4, 3))
