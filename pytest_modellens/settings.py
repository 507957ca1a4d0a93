"""The plugin's options: command-line flags and ini keys, merged and checked once per session.

Every option has an ini key for ``[tool.pytest.ini_options]``; the command line wins. A bad
value stops the run with :class:`pytest.UsageError` naming the option or key and the value.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .picture import PICTURE_FORMATS
from .trace import Tolerance


@dataclass(frozen=True, slots=True)
class Settings:
    """The plugin's options after command line and ini are merged and checked."""

    update: bool
    prune: bool
    artifacts_dir: Path
    stats: bool
    tolerance: Tolerance
    seed: int
    pictures: bool
    picture_format: str
    depth: int | None = None
    grad: bool = False
    report: Path | None = None  # the review page; None: <artifacts>/index.html when a model failed
    max_changes: int | None = None  # rows in a failure message; None: what fits pytest's cut, 0: all


settings_key = pytest.StashKey[Settings]()


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative number (got {text!r})") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number (got {text!r})")
    return value


#: torch's seeds are unsigned 64-bit integers.
MAX_SEED = 2**64 - 1


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number (got {text!r})") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**64 - 1 (got {text!r})")
    return value


_BOOLS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def _bool(text: str) -> bool:
    try:
        return _BOOLS[text.lower()]
    except KeyError:
        raise ValueError("expected true or false") from None


def _depth(text: str) -> int | None:
    """A level of at least 1; empty for every op."""
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of at least 1 (got {text!r}): 1 is the whole model as one node, "
            "2 each module the model's forward calls"
        )
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0 (got {text!r})")
    return value


def _picture_format(text: str) -> str:
    if text not in PICTURE_FORMATS:
        raise ValueError(f"expected one of {', '.join(PICTURE_FORMATS)}")
    return text


def add_options(parser: pytest.Parser) -> None:
    """The ``--lens-*`` options and ``lens_*`` ini keys."""
    group = parser.getgroup("modellens", "model snapshots (pytest-modellens)")
    group.addoption(
        "--lens-update",
        action="store_true",
        default=False,
        help="write missing and refresh changed model snapshots; deletes nothing",
    )
    group.addoption(
        "--lens-prune",
        action="store_true",
        default=False,
        help="remove model snapshots no test uses, after a complete session only (no -k, -x, failure or Ctrl-C)",
    )
    group.addoption(
        "--lens-artifacts",
        metavar="DIR",
        help="where diff pictures go (default: lens-artifacts/ under the rootdir)",
    )
    group.addoption(
        "--lens-stats",
        action="store_true",
        default=None,
        help="record activation statistics in every model snapshot",
    )
    group.addoption(
        "--lens-rtol",
        type=_non_negative_float,
        metavar="X",
        help="relative tolerance of statistics (default 1e-3)",
    )
    group.addoption(
        "--lens-atol",
        type=_non_negative_float,
        metavar="X",
        help="absolute tolerance of statistics (default 1e-5)",
    )
    group.addoption(
        "--lens-seed",
        type=_seed,
        metavar="N",
        help="seed of torch's, NumPy's and Python's RNGs in tests using model_trace (default 0)",
    )
    group.addoption(
        "--lens-pictures",
        action="store_true",
        default=None,
        help="also draw every traced model into the artifacts directory",
    )
    group.addoption("--lens-format", choices=PICTURE_FORMATS, help="picture format: svg (default) or png")
    group.addoption(
        "--lens-grad",
        action="store_true",
        default=None,
        help="trace with autograd on, for forwards that differentiate (torch.autograd.grad inside)",
    )
    group.addoption(
        "--lens-depth",
        type=_depth,
        metavar="N",
        help="snapshot module calls at level N as one node each (the model is level 1; default: every op)",
    )
    group.addoption(
        "--lens-report",
        metavar="PATH",
        help="write the review page here, also when every model passed "
        "(default: <artifacts>/index.html, after a session where a model changed)",
    )
    group.addoption(
        "--lens-max-changes",
        type=_non_negative_int,
        metavar="N",
        help="list N changes in a failure, 0 for all (default: what fits pytest's cut; all with -vv or in CI)",
    )
    parser.addini(
        "lens_artifacts",
        "directory for model diff pictures, relative to the rootdir",
        default="lens-artifacts",
    )
    parser.addini(
        "lens_stats", "record activation statistics in model snapshots (true/false)", default="false"
    )
    parser.addini("lens_rtol", "relative tolerance of activation statistics", default=str(Tolerance().rtol))
    parser.addini("lens_atol", "absolute tolerance of activation statistics", default=str(Tolerance().atol))
    parser.addini(
        "lens_seed", "seed of torch's, NumPy's and Python's RNGs in tests using model_trace", default="0"
    )
    parser.addini(
        "lens_pictures", "draw every traced model into the artifacts directory (true/false)", default="false"
    )
    parser.addini("lens_picture_format", "picture format: svg or png", default="svg")
    parser.addini("lens_report", "write the review page here, also when every model passed", default="")
    parser.addini("lens_grad", "trace with autograd on (true/false)", default="false")
    parser.addini(
        "lens_depth", "snapshot module calls at this level as one node each (empty: every op)", default=""
    )
    parser.addini(
        "lens_max_changes", "changes listed in a failure, 0 for all (default: what fits)", default=""
    )


def _ini(config: pytest.Config, name: str, convert: Callable[[str], Any]) -> Any:
    raw = config.getini(name)
    try:
        return convert(str(raw).strip())
    except (ValueError, argparse.ArgumentTypeError) as error:
        raise pytest.UsageError(
            f"ini key '{name}' {error}"
            if isinstance(error, argparse.ArgumentTypeError)
            else f"ini key '{name}' has a bad value {raw!r}: {error}"
        ) from None


def from_config(config: pytest.Config) -> Settings:
    """The session's settings: each option from the command line, else from its ini key."""
    option = config.option
    rtol = (
        option.lens_rtol if option.lens_rtol is not None else _ini(config, "lens_rtol", _non_negative_float)
    )
    atol = (
        option.lens_atol if option.lens_atol is not None else _ini(config, "lens_atol", _non_negative_float)
    )
    seed = option.lens_seed if option.lens_seed is not None else _ini(config, "lens_seed", _seed)
    artifacts = Path(option.lens_artifacts or config.getini("lens_artifacts"))
    report = option.lens_report or str(config.getini("lens_report")).strip()
    return Settings(
        update=option.lens_update,
        prune=option.lens_prune,
        artifacts_dir=artifacts if artifacts.is_absolute() else config.rootpath / artifacts,
        stats=option.lens_stats if option.lens_stats is not None else _ini(config, "lens_stats", _bool),
        tolerance=Tolerance(rtol=rtol, atol=atol),
        seed=seed,
        pictures=option.lens_pictures
        if option.lens_pictures is not None
        else _ini(config, "lens_pictures", _bool),
        picture_format=option.lens_format or _ini(config, "lens_picture_format", _picture_format),
        depth=option.lens_depth if option.lens_depth is not None else _ini(config, "lens_depth", _depth),
        grad=option.lens_grad if option.lens_grad is not None else _ini(config, "lens_grad", _bool),
        report=(Path(report) if Path(report).is_absolute() else config.rootpath / report) if report else None,
        max_changes=option.lens_max_changes
        if option.lens_max_changes is not None
        else _ini(config, "lens_max_changes", lambda text: _non_negative_int(text) if text else None),
    )
