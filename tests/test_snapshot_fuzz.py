"""Hundreds of corrupted copies of a real snapshot: each fails saying where and what to do, and
``--lens-update`` repairs each one.

One pytester session holds a test per variant, so the whole fuzz is three pytest runs.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

VARIANTS = 200
TEST = """
import pytest
from reference import X, NeuralNetwork

@pytest.mark.parametrize("k", range({count}))
def test_variant(model_trace, snapshot, k):
    assert model_trace(NeuralNetwork(), X, stats=True) == snapshot
"""
OTHER_VALUES = [None, True, 0, -1, 1.5, "", "x", [], [1, "a"], {}, {"a": 1}, "float32[", 10**30]


def _json_paths(value: object, path: tuple = ()) -> list[tuple]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _json_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _json_paths(item, (*path, index))
    return found


def _set(data: object, path: tuple, value: object) -> None:
    for key in path[:-1]:
        data = data[key]  # type: ignore[index]
    data[path[-1]] = value  # type: ignore[index]


def _delete(data: object, path: tuple) -> None:
    for key in path[:-1]:
        data = data[key]  # type: ignore[index]
    del data[path[-1]]  # type: ignore[arg-type]


def corrupt(good: str, rng: random.Random) -> bytes:
    """One corrupted copy of the snapshot text ``good``."""
    how = rng.choice(["truncate", "flip", "type", "extra", "missing", "encoding", "duplicate"])
    raw = good.encode("utf-8")
    if how == "truncate":
        return raw[: rng.randrange(len(raw) - 1)]
    if how == "flip":
        data = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            data[at] ^= 1 << rng.randrange(8)
        return bytes(data)
    if how == "encoding":
        text = good.replace('"schema"', '"sch\u00e9ma"', rng.randint(0, 1))
        return text.encode(rng.choice(["utf-16", "utf-32", "latin-1", "utf-16-le"]), errors="replace")
    if how == "duplicate":
        return good.replace('"nodes": {', '"nodes": {\n    "output": {"kind": "output"},', 1).encode()
    data = json.loads(good)
    paths = [p for p in _json_paths(data) if p and p != ("schema",)]
    path = rng.choice(paths)
    if how == "type":
        _set(data, path, rng.choice(OTHER_VALUES))
    elif how == "extra":
        target = rng.choice([p for p in _json_paths(data) if isinstance(_get(data, p), dict)])
        _set(data, (*target, rng.choice(["extra", "kind", "op", "in", "zz"])), rng.choice(OTHER_VALUES))
    else:
        _delete(data, path)
    return json.dumps(data, indent=rng.choice([None, 2])).encode()


def _get(data: object, path: tuple) -> object:
    for key in path:
        data = data[key]  # type: ignore[index]
    return data


def test_every_corrupted_snapshot_names_its_file_and_the_repair(reference_suite: pytest.Pytester) -> None:
    reference_suite.makepyfile(test_fuzz=TEST.format(count=VARIANTS))
    assert reference_suite.runpytest("--lens-update", "-p", "no:randomly").ret == 0
    folder = reference_suite.path / "__snapshots__/test_fuzz"
    files = sorted(folder.glob("*.lens.json"))
    assert len(files) == VARIANTS
    good = files[0].read_bytes()
    rng = random.Random(20261201)
    for path in files:
        path.write_bytes(corrupt(good.decode(), rng))

    result = reference_suite.runpytest("-p", "no:randomly", "-rf")
    output = result.stdout.str()
    assert "Traceback" not in output and "INTERNALERROR" not in output
    failed = set(re.findall(r"FAILED test_fuzz.py::test_variant\[(\d+)\]", output))
    assert len(failed) >= VARIANTS * 0.9, f"only {len(failed)} of {VARIANTS} variants were noticed"
    # Every failure names its own snapshot file and the repair, never a raw exception.
    for k in failed:
        block = output.split(f"test_variant[{k}] ", 1)[-1]
        assert f"__snapshots__/test_fuzz/test_variant[{k}].lens.json" in block, k
    assert output.count("accept with: pytest --lens-update") >= len(failed)
    for raw_error in ("could not be compared", "KeyError", "TypeError", "AttributeError"):
        assert raw_error not in output

    result = reference_suite.runpytest("--lens-update", "-p", "no:randomly")
    assert result.ret == 0, result.stdout.str()[-2000:]
    # Each damaged file is written anew; one that still held the same data (laid out otherwise) may stay.
    for path in files:
        if path.name.removeprefix("test_variant[").partition("]")[0] in failed:
            assert path.read_bytes() == good, f"--lens-update did not repair {path.name}"
        else:
            assert json.loads(path.read_bytes()) == json.loads(good), f"{path.name} passed with other data"
    assert reference_suite.runpytest("-p", "no:randomly").ret == 0
    assert not [p for p in folder.iterdir() if not p.name.endswith(".lens.json")], "temporary files were left"


def test_the_fuzz_makes_every_kind_of_damage() -> None:
    good = Path(__file__).with_name("__snapshots__") / "test_zoo" / "test_snapshot[attention].lens.json"
    rng = random.Random(1)
    variants = {corrupt(good.read_text(), rng) for _ in range(200)}
    assert len(variants) > 150
