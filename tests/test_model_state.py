"""No trace leaves a trace: every way a forward can change its model is put back, or refused first.

Each case traces three times; after each trace the model (values, tensor objects, submodules,
flags), its inputs, the RNGs and torch's global hook tables are as before, and the three
snapshots are the same bytes.
"""

from __future__ import annotations

import random
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from unchanged import assert_unchanged, observe

import pytest_modellens as lens
from pytest_modellens.tracer import state as state_module

# Forwards here write their parameters on purpose; that they are warned of is tested in test_warmup.py.
pytestmark = pytest.mark.filterwarnings("ignore::pytest_modellens.ModelStateWarning")


class Writes(nn.Module):
    """A Linear and two buffers, and a forward that does ``write`` to them before it runs."""

    def __init__(self, write: Callable[[Writes, Tensor], None]) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.register_buffer("count", torch.zeros(3))
        self.register_buffer("scale", torch.ones(3))
        self.write = write

    def forward(self, x: Tensor) -> Tensor:
        self.write(self, x)
        return self.fc(x) * self.scale + self.count


def _new_parameter(m: Writes, x: Tensor) -> None:
    m.fc.weight = nn.Parameter(torch.full((3, 3), 2.0))


def _new_submodule(m: Writes, x: Tensor) -> None:
    m.fc = nn.Linear(3, 3)


WRITES: dict[str, Callable[[Writes, Tensor], None]] = {
    # parameters
    "weight.data.add_": lambda m, x: m.fc.weight.data.add_(1),
    "weight.data =": lambda m, x: setattr(m.fc.weight, "data", m.fc.weight.data * 2),
    "weight = Parameter": _new_parameter,
    "nn.init.normal_": lambda m, x: nn.init.normal_(m.fc.weight),
    "weight.mul_ under no_grad": lambda m, x: torch.no_grad()(lambda: m.fc.weight.mul_(3))(),
    # buffers, nine ways
    "buffer +=": lambda m, x: m.count.add_(1),
    "buffer = buffer + 1": lambda m, x: setattr(m, "count", m.count + 1),
    "buffer.copy_": lambda m, x: m.count.copy_(x[0]),
    "buffer[0] =": lambda m, x: m.count.__setitem__(0, 5.0),
    "add(out=buffer)": lambda m, x: torch.add(m.count, 1, out=m.count),
    "buffer.data.fill_": lambda m, x: m.count.data.fill_(3),
    "through a view": lambda m, x: m.count.view(-1)[1:].add_(1),
    "buffer.data =": lambda m, x: setattr(m.count, "data", torch.full((3,), 7.0)),
    "register_buffer": lambda m, x: m.register_buffer("added", torch.ones(1)),
    "register_buffer, not persistent": lambda m, x: m.fc.register_buffer("added", x[0], persistent=False),
    "a buffer made not persistent": lambda m, x: m.register_buffer("count", m.count, persistent=False),
    # the module tree
    "a new submodule": _new_submodule,
    "a new attribute module": lambda m, x: setattr(m, "extra", nn.ReLU()),
    "train()": lambda m, x: m.train(not m.training),
}


@pytest.mark.parametrize("name", WRITES)
def test_every_write_to_the_model_is_put_back(name: str) -> None:
    torch.manual_seed(0)
    model = Writes(WRITES[name]).eval()
    x = torch.randn(2, 3)
    before = observe(model, x)
    texts = []
    for attempt in range(3):
        texts.append(lens.trace(model, x).dumps())
        assert_unchanged(before, observe(model, x), f"{name}, trace {attempt + 1}")
    assert texts[0] == texts[1] == texts[2]


def test_batch_norm_running_statistics_are_put_back_without_copying_every_buffer() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).train()
    model.register_buffer("big", torch.zeros(1000, 1000))  # never written: never copied
    x = torch.randn(8, 3)
    before = observe(model, x)
    lens.trace(model, x)
    assert_unchanged(before, observe(model, x))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_a_scripted_module_that_writes_its_buffers_is_put_back() -> None:
    scripted = torch.jit.script(nn.BatchNorm1d(4).train())
    model = nn.Sequential(nn.Linear(3, 4), scripted)
    x = torch.randn(8, 3)
    before = observe(model, x)
    lens.trace(model, x)
    assert_unchanged(before, observe(model, x))


def test_a_forward_that_writes_and_then_raises_is_put_back() -> None:
    def write_then_fail(m: Writes, x: Tensor) -> None:
        m.fc.weight.data.add_(1)
        m.count = m.count + 1
        m.fc = nn.Identity()
        raise RuntimeError("late failure")

    model = Writes(write_then_fail)
    x = torch.randn(2, 3)
    before = observe(model, x)
    with pytest.raises(lens.TraceError, match="late failure.*left unchanged"):
        lens.trace(model, x)
    assert_unchanged(before, observe(model, x))


def test_inputs_written_in_place_are_put_back() -> None:
    class WritesInput(nn.Module):
        def forward(self, x: Tensor, cache: dict[str, Tensor]) -> Tensor:
            x.data.mul_(2)
            cache["k"].add_(1)
            return x + cache["k"]

    model, x, cache = WritesInput(), torch.ones(2), {"k": torch.zeros(2)}
    before = observe(model, (x, cache))
    lens.trace(model, x, cache)
    assert_unchanged(before, observe(model, (x, cache)))


# -- torch's globals ------------------------------------------------------------------------


def test_no_global_hook_table_of_torch_grows() -> None:
    from torch.nn.modules import module as torch_module
    from unchanged import GLOBAL_HOOK_TABLES

    sizes = {name: len(getattr(torch_module, name, {})) for name in GLOBAL_HOOK_TABLES}
    for _ in range(3):
        lens.trace(nn.Linear(2, 2), torch.ones(2))
    assert {name: len(getattr(torch_module, name, {})) for name in GLOBAL_HOOK_TABLES} == sizes


def test_a_compiled_submodule_traces_under_warnings_as_errors() -> None:
    model = nn.Sequential(nn.Linear(2, 2), torch.compile(nn.ReLU(), backend="eager"))
    x = torch.randn(1, 2)
    model(x)  # compiled once, outside the trace
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = lens.trace(model, x)
    assert [node.op for node in trace.op_nodes] == ["linear", "relu"]


def test_the_recursion_a_model_can_do_is_not_cut_by_the_tracer() -> None:
    class Deep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Identity()

        def forward(self, x: Tensor, depth: int) -> Tensor:
            return self.inner(x) if depth == 0 else self(x + 1, depth - 1)

    model, x = Deep(), torch.zeros(1)

    def deepest(call: Callable[[int], Any]) -> int:
        low, high = 1, 5000
        while low < high:  # the deepest recursion that runs
            middle = (low + high + 1) // 2
            try:
                call(middle)
                low = middle
            except (RecursionError, lens.TraceError):
                high = middle - 1
        return low

    plain = deepest(lambda depth: model(x, depth))
    traced = deepest(lambda depth: lens.trace(model, x, depth))
    assert traced >= plain
    assert sys.getrecursionlimit() == 1000 or sys.getrecursionlimit() > 0  # left as it was (checked below)


def test_the_recursion_limit_is_left_as_it_was() -> None:
    limit = sys.getrecursionlimit()
    lens.trace(nn.Linear(2, 2), torch.ones(2))
    with pytest.raises(lens.TraceError):
        lens.trace(nn.Linear(2, 2), torch.ones(3))
    assert sys.getrecursionlimit() == limit


# -- outputs that must not collapse ---------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda a, b: {1: a, "1": b},
        lambda a, b: {"a.b": a, "a": {"b": b}},
    ],
    ids=["int-and-str-keys", "dotted-and-nested"],
)
def test_outputs_with_colliding_names_keep_every_tensor(make: Callable[[Tensor, Tensor], Any]) -> None:
    class Two(nn.Module):
        def forward(self, x: Tensor) -> Any:
            return make(x + 1, x * 2)

    trace = lens.trace(Two(), torch.ones(2))
    outputs = [node for node in trace.nodes if node.kind is lens.NodeKind.OUTPUT]
    assert len(outputs) == 2
    assert len({node.node_id for node in trace.nodes}) == len(trace.nodes)
    assert sorted(node.inputs[0] for node in outputs) == ["add", "mul"]
    assert lens.loads(trace.dumps()).dumps() == trace.dumps()


# -- forwards that need gradients ----------------------------------------------------------


class InnerStep(nn.Module):
    """One MAML-style inner step: the gradient of a loss with respect to the weights."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x: Tensor) -> Tensor:
        loss = self.fc(x).pow(2).sum()
        (grad,) = torch.autograd.grad(loss, self.fc.weight, create_graph=True)
        return self.fc.weight - 0.1 * grad


def test_a_forward_that_needs_gradients_says_how_to_trace_it() -> None:
    with pytest.raises(lens.TraceError, match=r"grad=True"):
        lens.trace(InnerStep(), torch.randn(4, 3))


def test_grad_true_traces_a_forward_that_differentiates() -> None:
    model, x = InnerStep(), torch.randn(4, 3)
    before = observe(model, x)
    trace = lens.trace(model, x, grad=True)
    assert_unchanged(before, observe(model, x))
    assert model.fc.weight.grad is None
    assert "linear" in {node.op for node in trace.op_nodes}


def test_the_fixture_takes_grad_from_its_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_grad="""
        import torch
        from torch import nn

        class InnerStep(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 1)

            def forward(self, x):
                (grad,) = torch.autograd.grad(self.fc(x).sum(), self.fc.weight, create_graph=True)
                return self.fc.weight - grad

        def test_step(model_trace, snapshot):
            assert model_trace(InnerStep(), torch.ones(2, 3)) == snapshot
        """
    )
    result = pytester.runpytest("--lens-update")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*grad=True*"])
    assert pytester.runpytest("--lens-update", "--lens-grad").ret == 0
    pytester.makeini("[pytest]\nlens_grad = true\n")
    assert pytester.runpytest().ret == 0


class NumpyNoise(nn.Module):
    """Adds noise drawn from NumPy's global generator: ``draw`` says how."""

    def __init__(self, draw: Callable[[], Any]) -> None:
        super().__init__()
        self.draw = draw

    def forward(self, x: Tensor) -> Tensor:
        drawn = self.draw()
        return x + float(np.sum(drawn if drawn is not None else 0.0))


@pytest.mark.parametrize(
    ("before", "draw"),
    [
        pytest.param(lambda: None, lambda: 0.0, id="nothing drawn"),
        pytest.param(lambda: None, lambda: np.random.rand(3), id="uniforms"),
        pytest.param(lambda: None, lambda: np.random.normal(), id="one normal, a second one cached"),
        pytest.param(lambda: np.random.normal(), lambda: 0.0, id="a cached normal, nothing drawn"),
        pytest.param(lambda: np.random.normal(), lambda: np.random.normal(), id="the cached normal drawn"),
        pytest.param(lambda: np.random.seed(3), lambda: np.random.seed(4), id="reseeded in forward"),
    ],
)
def test_numpy_global_generator_is_put_back_in_full(
    before: Callable[[], Any], draw: Callable[[], Any]
) -> None:
    # The tracer reads NumPy's state cheaply and in full only where it may have changed: every
    # part of it (words, position, the legacy sampler's cached Gaussian) must come back.
    model, x = NumpyNoise(draw), torch.zeros(2)
    np.random.seed(0)
    before()
    untraced_then = np.random.get_state()
    expected = model(x)  # what the forward gives from this state
    np.random.set_state(untraced_then)
    for warmup in (True, False, False):
        seen = observe(model, (x,))
        lens.trace(model, x, warmup=warmup)
        assert_unchanged(seen, observe(model, (x,)))
    np.random.set_state(untraced_then)
    assert torch.equal(model(x), expected)


class PythonNoise(nn.Module):
    """Adds noise drawn from Python's global ``random`` generator: ``draw`` says how."""

    def __init__(self, draw: Callable[[], float]) -> None:
        super().__init__()
        self.draw = draw

    def forward(self, x: Tensor) -> Tensor:
        return x + self.draw()


@pytest.mark.parametrize(
    ("before", "draw"),
    [
        pytest.param(lambda: None, lambda: 0.0, id="nothing drawn"),
        pytest.param(lambda: None, lambda: random.random(), id="one uniform"),
        pytest.param(
            lambda: None, lambda: sum(random.random() for _ in range(700)), id="past a regeneration"
        ),
        pytest.param(lambda: None, lambda: random.gauss(), id="one normal, a second one cached"),
        pytest.param(lambda: random.gauss(), lambda: 0.0, id="a cached normal, nothing drawn"),
        pytest.param(lambda: random.gauss(), lambda: random.gauss(), id="the cached normal drawn"),
        pytest.param(lambda: None, lambda: random.seed(4) or 0.0, id="reseeded in forward"),
    ],
)
def test_python_global_generator_is_put_back_in_full(
    before: Callable[[], Any], draw: Callable[[], float]
) -> None:
    # Python's state is read raw and put back only where it changed: every part of it (words,
    # position, the cached Gaussian of random.gauss) must come back.
    model, x = PythonNoise(draw), torch.zeros(2)
    random.seed(0)
    before()
    untraced_then = random.getstate()
    expected = model(x)
    random.setstate(untraced_then)
    for warmup in (True, False, False):
        lens.trace(model, x, warmup=warmup)
        assert random.getstate() == untraced_then
    assert torch.equal(model(x), expected)


def test_python_generator_without_a_proven_layout_is_put_back_in_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Where the raw words cannot be proven against getstate (another interpreter, a generator
    # class of another layout), the full state is read and put back instead.
    from pytest_modellens.tracer import state

    monkeypatch.setattr(state, "_python_layouts", {type(random.getstate.__self__): None})
    random.seed(2)
    random.gauss()
    then = random.getstate()
    lens.trace(PythonNoise(lambda: random.gauss() + random.random()), torch.zeros(2))
    assert random.getstate() == then


def test_numpy_generator_replaced_by_another_bit_generator_is_put_back() -> None:
    original = np.random.mtrand._rand._bit_generator
    np.random.set_bit_generator(np.random.PCG64(5))
    try:
        model, x = NumpyNoise(lambda: np.random.rand(2)), torch.zeros(2)
        seen = observe(model, (x,))
        lens.trace(model, x)
        assert_unchanged(seen, observe(model, (x,)))
    finally:
        np.random.set_bit_generator(original)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("call", ["module", "functional", "torch.batch_norm"])
def test_normalisation_statistics_are_copied_only_when_updated(
    monkeypatch: pytest.MonkeyPatch, mode: str, call: str
) -> None:
    # An eval BatchNorm writes nothing: nothing of it is copied. In train mode its running
    # statistics are, and put back, in every way of calling it.
    norm = nn.BatchNorm1d(4).train(mode == "train")

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = norm

        def forward(self, x: Tensor) -> Tensor:
            n = self.norm
            training = self.training
            if call == "module":
                return n(x)
            if call == "functional":
                return nn.functional.batch_norm(x, n.running_mean, n.running_var, n.weight, n.bias, training)
            return torch.batch_norm(
                x, n.weight, n.bias, n.running_mean, n.running_var, training, 0.1, 1e-5, False
            )

    model = Net().train(mode == "train")
    copied: list[int] = []
    save = state_module.WriteGuard.save

    def counting(self: Any, tensors: Any) -> None:
        tensors = list(tensors)
        copied.extend(id(t) for t in tensors if id(t) not in self.saved)
        save(self, tensors)

    monkeypatch.setattr(state_module.WriteGuard, "save", counting)
    x = torch.randn(8, 4)
    before = observe(model, x)
    lens.trace(model, x, warmup=False)
    assert_unchanged(before, observe(model, x))
    statistics = {id(norm.running_mean), id(norm.running_var)}
    if call == "module":  # the module counts its batches too
        statistics.add(id(norm.num_batches_tracked))
    # The weights, which it does not write, are never copied; in eval mode nothing is.
    assert set(copied) == (statistics if mode == "train" else set())


def test_a_model_with_a_sparse_parameter_traces_and_is_left_unchanged() -> None:
    class SparseWeight(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.eye(3).to_sparse(), requires_grad=False)

        def forward(self, x: Tensor) -> Tensor:
            return torch.sparse.mm(self.weight, x)

    model, x = SparseWeight(), torch.randn(3, 2)
    before = observe(model, x)
    trace = lens.trace(model, x)
    assert_unchanged(before, observe(model, x))
    assert "sparse_coo" in trace.dumps()


def test_a_trace_whose_set_up_fails_leaves_torch_and_the_warning_filters_as_they_were(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The set-up fails half way (registering the second global hook): what it had done is
    # undone, and the error is the set-up's own, not one from undoing what was never done.
    import pytest_modellens.tracer as tracer_package

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no hooks here")

    monkeypatch.setattr(tracer_package, "register_module_forward_hook", refused)
    model, x = nn.Linear(2, 2), torch.randn(1, 2)
    before = observe(model, x)
    filters, limit = list(warnings.filters), sys.getrecursionlimit()
    with pytest.raises(RuntimeError, match="no hooks here"):
        lens.trace(model, x, warmup=False)
    assert_unchanged(before, observe(model, x))
    assert warnings.filters == filters and sys.getrecursionlimit() == limit
