"""diffusers models from tiny configs trace deterministically and without side effects.

Part of the optional catalogue group (marker ``catalogue``, run by ``scripts/catalogue.sh``,
which installs diffusers); skipped with the reason when diffusers is not installed. The
models are in :mod:`diffusers_models`; the checks are the transformers catalogue's
(:mod:`catalogue_checks`, :mod:`unchanged`), plus a trace with statistics each and the
plugin's whole cycle on the VAE.
"""

from __future__ import annotations

from pathlib import Path

import diffusers_models
import pytest
import torch
from catalogue_checks import HASH_SEEDS, check_meta, digest, digests_by_hash_seed
from unchanged import assert_unchanged, observe, tensors

import pytest_modellens as lens

pytestmark = [pytest.mark.catalogue, pytest.mark.filterwarnings("ignore")]

by_name = pytest.mark.parametrize("name", diffusers_models.architectures())


@pytest.fixture(scope="module", autouse=True)
def _diffusers() -> None:
    """Skip when diffusers is missing; here rather than at import, so a plain run deselects quietly.

    It also imports diffusers before any pytester run: pytester drops the modules a run imported,
    and importing diffusers a second time registers a torch library twice, which torch refuses.
    """
    pytest.importorskip("diffusers", reason="diffusers is not installed: scripts/catalogue.sh installs it")


@pytest.fixture(scope="module")
def dumps_by_seed() -> dict[str, dict[str, str]]:
    """The snapshot digest of each model, in one fresh process per hash seed."""
    return digests_by_hash_seed("diffusers_models", diffusers_models.architectures())


@by_name
def test_traces_the_same_bytes_every_time_and_on_meta_and_leaves_everything_as_it_was(
    name: str, dumps_by_seed: dict[str, dict[str, str]]
) -> None:
    model, kwargs = diffusers_models.build(name)
    before = observe(model, kwargs)
    first = lens.trace(model, **kwargs).dumps()
    assert_unchanged(before, observe(model, kwargs), f"{name}: the first trace")
    assert lens.trace(model, **kwargs).dumps() == first, f"{name}: the second trace differs from the first"
    assert_unchanged(before, observe(model, kwargs), f"{name}: the second trace")

    digests = {seed: dumps_by_seed[seed].get(name) for seed in HASH_SEEDS}
    assert set(digests.values()) == {digest(first)}, (
        f"{name}: snapshots in fresh processes with hash seeds {HASH_SEEDS} differ from this one's: {digests}"
    )
    check_meta(name, first, *diffusers_models.build(name, "meta"))


@by_name
def test_statistics_describe_the_forwards_own_outputs_and_leave_everything_as_it_was(name: str) -> None:
    model, kwargs = diffusers_models.build(name)
    before = observe(model, kwargs)
    traced = lens.trace(model, stats=True, **kwargs)
    assert_unchanged(before, observe(model, kwargs), f"{name}: the trace with statistics")
    missing = [node.node_id for node in traced.op_nodes if None in node.stats]
    assert not missing, f"{name}: ops without statistics: {missing[:5]}"
    assert traced.first_nonfinite is None, f"{name}: NaN or Inf first in {traced.first_nonfinite}"

    # The RNG is as it was before the trace, so a plain forward now draws what the traced one drew.
    with torch.no_grad():
        plain = [t.double() for t in tensors(model(**kwargs))]
    recorded = [stats for node in traced.nodes if node.kind is lens.NodeKind.OUTPUT for stats in node.stats]
    assert len(recorded) == len(plain)
    for stats, tensor in zip(recorded, plain):
        for field, value in (("mean", tensor.mean()), ("min", tensor.min()), ("max", tensor.max())):
            assert lens.Tolerance().close(float(value), getattr(stats, field)), (
                f"{name}: the output's {field} is {float(value)}, the trace recorded {getattr(stats, field)}"
            )


USER_TEST = """
import os

import diffusers_models


def test_vae(model_trace, snapshot):
    model, kwargs = diffusers_models.build(os.environ.get("LENS_VAE", "AutoencoderKL"))
    assert model_trace(model, **kwargs) == snapshot
"""


def test_a_users_snapshot_of_the_vae_passes_until_the_forward_samples(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plugin's whole cycle on a diffusers model, with statistics: written, passing, failing."""
    pytester.syspathinsert(Path(__file__).parent)
    pytester.makepyfile(test_vae=USER_TEST)
    assert pytester.runpytest("--lens-update", "--lens-stats").ret == 0
    assert pytester.runpytest("--lens-stats").ret == 0

    monkeypatch.setenv("LENS_VAE", "AutoencoderKL-sampled")
    result = pytester.runpytest("--lens-stats")
    assert result.ret == 1
    # The draw from the posterior is the cause, named by its ops; the statistics that follow it are not rows.
    result.stdout.fnmatch_lines(
        [
            "*model snapshot test_vae changed: 4 nodes added*",
            "*<root>*ops*randn, to, mul, add*",
            "*accept with: pytest --lens-update*",
        ]
    )
