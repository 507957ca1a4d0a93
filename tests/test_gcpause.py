"""The cyclic garbage collector is paused while a trace, a dump or a comparison runs, and put back."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

import pytest_modellens as lens
from pytest_modellens.errors import TraceError


class Watches(nn.Module):
    """Notes whether the collector runs while its forward does; raises when told to."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.fail = fail
        self.seen: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(gc.isenabled())
        if self.fail:
            raise RuntimeError("boom")
        return self.fc(x)


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_a_trace_runs_without_the_collector_and_puts_it_back(collector_on: None) -> None:
    model = Watches()
    lens.trace(model, torch.ones(1, 2), warmup=False)
    assert model.seen == [False]
    assert gc.isenabled()


def test_a_forward_that_raises_still_gets_the_collector_back(collector_on: None) -> None:
    model = Watches(fail=True)
    with pytest.raises(TraceError, match="boom"):
        lens.trace(model, torch.ones(1, 2), warmup=False)
    assert model.seen == [False]
    assert gc.isenabled()


def test_a_collector_the_caller_turned_off_stays_off(collector_on: None) -> None:
    gc.disable()
    model = Watches()
    lens.trace(model, torch.ones(1, 2), warmup=False)
    assert not gc.isenabled()


def test_dumps_and_compare_run_without_the_collector(
    collector_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_modellens import canonical, differ

    seen: list[tuple[str, bool]] = []
    to_data, match = canonical.to_data, differ.match

    def watched_to_data(trace: lens.Trace) -> dict:
        seen.append(("to_data", gc.isenabled()))
        return to_data(trace)

    def watched_match(old: lens.Trace, new: lens.Trace) -> object:
        seen.append(("match", gc.isenabled()))
        return match(old, new)

    monkeypatch.setattr(canonical, "to_data", watched_to_data)
    monkeypatch.setattr(differ, "to_data", watched_to_data)
    monkeypatch.setattr(differ, "match", watched_match)
    old, new = lens.trace(Watches(), torch.ones(1, 2)), lens.trace(nn.Linear(2, 3), torch.ones(1, 2))
    assert json.loads(old.dumps())["summary"]["ops"] == 1
    assert lens.diff(old, new)
    assert seen == [("to_data", False), ("to_data", False), ("to_data", False), ("match", False)]
    assert gc.isenabled()
    with pytest.raises(TypeError):
        lens.diff(old, 42)  # type: ignore[arg-type]
    assert gc.isenabled()


def test_pictures_are_built_without_the_collector(
    collector_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_modellens import picture

    seen: list[bool] = []
    make = picture.Graph

    def watched(*args: object, **kwargs: object) -> picture.Graph:
        seen.append(gc.isenabled())
        return make(*args, **kwargs)

    monkeypatch.setattr(picture, "Graph", watched)
    from pytest_modellens.differ import compare

    old = lens.trace(Watches(), torch.ones(1, 2), warmup=False)
    new = lens.trace(nn.Sequential(Watches(), nn.ReLU()), torch.ones(1, 2), warmup=False)
    picture.trace_graph(old)
    picture.diff_graph(compare(old, new))
    assert seen == [False, False]
    assert gc.isenabled()
