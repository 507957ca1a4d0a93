"""The transformers catalogue: every architecture traces, deterministically and without side effects.

Deselected by default (marker ``catalogue``). ``pytest tests/test_catalogue.py -m catalogue -n 0``
runs the fixed sample below (CI); with ``LENS_CATALOGUE=all`` every architecture the installed
transformers has (README: the command and its last counts). Each architecture is built from a
tiny config derived from its own (:mod:`catalogue`). One that cannot be built, or whose plain
forward does not run, is skipped with the reason; a failure names the architecture and the cause.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from unchanged import assert_unchanged, observe

import pytest_modellens as lens

catalogue = pytest.importorskip("catalogue")
pytest.importorskip("transformers")
# After the skips: it imports the catalogue builder, which needs transformers.
from catalogue_checks import HASH_SEEDS, check_meta, digest, digests_by_hash_seed

pytestmark = [pytest.mark.catalogue, pytest.mark.filterwarnings("ignore")]

#: A fixed sample: the architectures each defect was first seen on, then the common families.
SAMPLE = (
    "olmo3", "modernbert", "gemma3_text", "dinov3_vit", "levit", "big_bird", "ibert", "rwkv",
    "bert", "gpt2", "llama", "t5", "bart", "vit", "deit", "whisper", "wav2vec2", "mixtral",
    "mistral", "qwen2", "resnet", "convnext", "mamba", "distilbert", "roberta",
    "gemma3", "wav2vec2-conformer", "clip", "deepseek_v3", "qwen2_vl",
    "lfm3", "lara_mini", "qwen2_5_vl_vision", "lxmert", "smollm3", "swin",
)  # fmt: skip


def _selected() -> list[str]:
    """``LENS_CATALOGUE``: ``all``, or names separated by commas; the sample when it is not set."""
    every = catalogue.architectures()
    chosen = os.environ.get("LENS_CATALOGUE", "")
    if chosen == "all":
        return every
    if not chosen:
        return [name for name in SAMPLE if name in every]
    names = [name.strip() for name in chosen.split(",") if name.strip()]
    unknown = [name for name in names if name not in every]
    if unknown:
        raise pytest.UsageError(
            f"LENS_CATALOGUE names {unknown}, which the installed transformers has no model for; "
            "give 'all' or model types such as 'bert,gpt2'"
        )
    return names


@pytest.fixture(scope="module")
def dumps_by_seed() -> dict[str, dict[str, str]]:
    """The snapshot digest of each selected architecture, in one process per hash seed."""
    return digests_by_hash_seed("catalogue", _selected())


def _build(name: str, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    try:
        return catalogue.build(name, device)
    except catalogue.NotBuilt as error:
        pytest.skip(f"not built: {error}")


@pytest.mark.parametrize("name", _selected())
def test_architecture(name: str, dumps_by_seed: dict[str, dict[str, str]]) -> None:
    model, kwargs = _build(name)
    before = observe(model, kwargs)
    try:
        first = lens.trace(model, **kwargs).dumps()
    except lens.TraceError as error:
        why = catalogue.plain_forward(model, kwargs)
        if why is not None:
            pytest.skip(f"plain forward fails: {why}")
        raise AssertionError(f"{name}: the plain forward runs, the trace fails: {error}") from None
    assert_unchanged(before, observe(model, kwargs), f"{name}: the first trace")
    again = lens.trace(model, **kwargs).dumps()
    assert again == first, f"{name}: the second trace in one process differs from the first"
    assert_unchanged(before, observe(model, kwargs), f"{name}: the second trace")

    digests = {seed: dumps_by_seed[seed].get(name) for seed in HASH_SEEDS}
    assert len(set(digests.values())) == 1, f"{name}: snapshots differ between hash seeds {digests}"
    assert digests[HASH_SEEDS[0]] == digest(first), (
        f"{name}: the snapshot in a fresh process differs from this one's"
    )
    _check_meta(name, first)


def _check_meta(name: str, on_cpu: str) -> None:
    """The meta-device promise (:func:`catalogue_checks.check_meta`), where it builds on meta."""
    try:
        model, kwargs = catalogue.build(name, "meta")
    except (catalogue.NotBuilt, pytest.skip.Exception):
        return
    check_meta(name, on_cpu, model, kwargs)
