"""Checks the optional catalogue group runs on every model, whichever library built it.

A builder module is one with ``build(name, device) -> (model, kwargs)``, seeded
(:mod:`catalogue` for transformers, :mod:`diffusers_models`). ``digests_by_hash_seed`` traces
its models in fresh processes, one per hash seed, as xdist workers would; ``check_meta`` holds
the meta-device promise: the CPU snapshot where the plain meta forward runs, else an error
that names the op.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from catalogue import plain_forward

import pytest_modellens as lens

#: Hash seeds under which a forward that loops over ``set(config.layer_types)`` runs its work
#: in more than one order: ``{"full_attention", "sliding_attention"}`` iterates in both orders
#: under 0 and 1, ``{"indexed_attention", "sliding_attention"}`` and ``{"full_attention",
#: "conv"}`` only under 2 differently from 0 and 1. Fewer seeds would leave such a model's
#: failure to chance: the test process's own seed, compared with them, is random.
HASH_SEEDS = ("0", "1", "2")

DUMP = """
import hashlib, importlib, json, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
import pytest_modellens as lens
builder = importlib.import_module(sys.argv[2])
for name in sys.argv[3:]:
    try:
        model, kwargs = builder.build(name)
        text = lens.trace(model, **kwargs).dumps()
        result = hashlib.sha256(text.encode()).hexdigest()
    except Exception as error:
        result = f"error: {type(error).__name__}"
    print(json.dumps([name, result]), flush=True)
"""


def digest(text: str) -> str:
    """What :data:`DUMP` prints for a snapshot: the digest of its bytes."""
    return hashlib.sha256(text.encode()).hexdigest()


#: Models per fresh process: memory a process keeps from the models it built goes with it, so
#: three processes side by side over the whole catalogue stay well inside the machine's memory.
CHUNK = 60


def digests_by_hash_seed(builder: str, names: list[str]) -> dict[str, dict[str, str]]:
    """The snapshot digest (or ``error: ...``) of each model, in fresh processes, one per hash seed at a time."""
    found: dict[str, dict[str, str]] = {seed: {} for seed in HASH_SEEDS}
    for first in range(0, len(names), CHUNK):
        chunk = names[first : first + CHUNK]
        runs = {seed: _start(builder, chunk, seed) for seed in HASH_SEEDS}
        for seed, run in runs.items():
            found[seed].update(_finish(builder, chunk, seed, run))
    return found


def _start(builder: str, names: list[str], seed: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", DUMP, str(Path(__file__).parent), builder, *names],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        # One thread each: the processes run side by side, and torch's threads spinning on
        # shared cores made them several times slower. Structure does not depend on it.
        env={**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"},
    )


def _finish(builder: str, names: list[str], seed: str, run: subprocess.Popen[str]) -> dict[str, str]:
    """What ``run`` printed; where it died, the model it died on says so and the rest go on in a new one."""
    out, _ = run.communicate(timeout=3600)
    done = dict(json.loads(line) for line in out.splitlines() if line.startswith("["))
    left = [name for name in names if name not in done]
    if left:
        done[left[0]] = f"error: the fresh process ended (exit status {run.returncode}) on it"
        if left[1:]:
            done.update(_finish(builder, left[1:], seed, _start(builder, left[1:], seed)))
    return done


def check_meta(name: str, on_cpu: str, model: torch.nn.Module, kwargs: dict[str, Any]) -> None:
    """On meta: the CPU snapshot where the plain meta forward runs, else an error naming the op."""
    if plain_forward(model, kwargs) is None:
        assert lens.trace(model, **kwargs).dumps() == on_cpu, (
            f"{name}: the meta snapshot differs from the CPU one"
        )
        return
    with pytest.raises(lens.TraceError) as raised:
        lens.trace(model, **kwargs)
    assert "in the operation" in str(raised.value), f"{name}: the meta failure names no op: {raised.value}"
