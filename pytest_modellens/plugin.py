"""pytest wiring: options, ini keys, the ``model_trace`` fixture and the reporting hooks.

Only wiring lives here. torch is imported when a test first asks for ``model_trace``,
so a run that never uses the plugin pays nothing for it being installed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .report import ARTIFACT_PROPERTY
from .trace import Tolerance, Trace

PICTURE_FORMATS = ("svg", "png")


@dataclass(frozen=True, slots=True)
class Settings:
    """The plugin's options after command line and ini are merged and checked."""

    update: bool
    artifacts_dir: Path
    stats: bool
    tolerance: Tolerance
    seed: int
    pictures: bool
    picture_format: str


settings_key = pytest.StashKey[Settings]()
current_item_key = pytest.StashKey[pytest.Item]()


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative number (got {text!r})") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number (got {text!r})")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("modellens", "model snapshots (pytest-modellens)")
    group.addoption(
        "--lens-update",
        action="store_true",
        default=False,
        help="write missing and refresh changed snapshots (syrupy's --snapshot-update)",
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
        type=int,
        metavar="N",
        help="seed of torch's RNGs in tests using model_trace (default 0)",
    )
    group.addoption(
        "--lens-pictures",
        action="store_true",
        default=None,
        help="also draw every traced model into the artifacts directory",
    )
    group.addoption("--lens-format", choices=PICTURE_FORMATS, help="picture format: svg (default) or png")
    parser.addini(
        "lens_artifacts",
        "directory for model diff pictures, relative to the rootdir",
        default="lens-artifacts",
    )
    parser.addini("lens_stats", "record activation statistics in model snapshots", type="bool", default=False)
    parser.addini("lens_rtol", "relative tolerance of activation statistics", default=str(Tolerance().rtol))
    parser.addini("lens_atol", "absolute tolerance of activation statistics", default=str(Tolerance().atol))
    parser.addini("lens_seed", "seed of torch's RNGs in tests using model_trace", default="0")
    parser.addini(
        "lens_pictures", "draw every traced model into the artifacts directory", type="bool", default=False
    )
    parser.addini("lens_picture_format", "picture format: svg or png", default="svg")


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


def _picture_format(text: str) -> str:
    if text not in PICTURE_FORMATS:
        raise ValueError(f"expected one of {', '.join(PICTURE_FORMATS)}")
    return text


def _settings(config: pytest.Config) -> Settings:
    option = config.option
    rtol = (
        option.lens_rtol if option.lens_rtol is not None else _ini(config, "lens_rtol", _non_negative_float)
    )
    atol = (
        option.lens_atol if option.lens_atol is not None else _ini(config, "lens_atol", _non_negative_float)
    )
    seed = option.lens_seed if option.lens_seed is not None else _ini(config, "lens_seed", int)
    artifacts = Path(option.lens_artifacts or config.getini("lens_artifacts"))
    return Settings(
        update=option.lens_update,
        artifacts_dir=artifacts if artifacts.is_absolute() else config.rootpath / artifacts,
        stats=option.lens_stats if option.lens_stats is not None else bool(config.getini("lens_stats")),
        tolerance=Tolerance(rtol=rtol, atol=atol),
        seed=seed,
        pictures=option.lens_pictures
        if option.lens_pictures is not None
        else bool(config.getini("lens_pictures")),
        picture_format=option.lens_format or _ini(config, "lens_picture_format", _picture_format),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[settings_key] = settings = _settings(config)
    config.pluginmanager.register(_ArtifactLog(), "modellens-artifacts")
    if settings.update:
        # Updating is syrupy's own machinery: writes, counts in the report, cleanup.
        config.option.update_snapshots = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    item.config.stash[current_item_key] = item
    try:
        return (yield)
    finally:
        del item.config.stash[current_item_key]


@pytest.fixture
def model_trace(request: pytest.FixtureRequest) -> Iterator[Callable[..., Trace]]:
    """Trace a model: ``model_trace(model, *args, stats=None, rtol=None, atol=None, **kwargs)``.

    Compare the result with syrupy's ``snapshot``: ``assert model_trace(net, x) == snapshot``.
    torch's RNGs are seeded (``--lens-seed``, default 0) before the test body runs, so
    weights made in the test are the same on every run, and restored afterwards.
    """
    import torch

    from .tracer import trace

    settings = request.config.stash[settings_key]

    def model_trace(
        model: Any,
        /,
        *args: Any,
        stats: bool | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        **kwargs: Any,
    ) -> Trace:
        __tracebackhide__ = True
        tolerance = settings.tolerance.overridden(rtol=rtol, atol=atol)
        result = trace(
            model,
            *args,
            stats=settings.stats if stats is None else stats,
            rtol=tolerance.rtol,
            atol=tolerance.atol,
            **kwargs,
        )
        if settings.pictures:
            from .report import draw_model_picture

            draw_model_picture(request.node, result, settings)
        return result

    with torch.random.fork_rng():  # CPU and every CUDA device: manual_seed seeds them all
        torch.manual_seed(settings.seed)
        yield model_trace


@pytest.fixture
def lens_artifacts(request: pytest.FixtureRequest) -> Path:
    """The artifacts directory (``--lens-artifacts``), created: a place for pictures of your own."""
    path = request.config.stash[settings_key].artifacts_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.hookimpl(wrapper=True)
def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> Any:
    result = yield
    if op == "==" and isinstance(left, Trace):
        from .extension import is_snapshot_assertion

        if is_snapshot_assertion(right):
            from .report import failure_lines

            item = config.stash.get(current_item_key, None)
            # Not a firstresult hook: pytest shows the first non-empty explanation.
            return [failure_lines(item, left, right, config.stash[settings_key])]
    return result


class _ArtifactLog:
    """Collects the pictures named in test reports, on the xdist controller too."""

    def __init__(self) -> None:
        # Keyed, because the call and teardown reports of a test carry the same properties.
        self.artifacts: dict[tuple[str, str], None] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == ARTIFACT_PROPERTY:
                self.artifacts[report.nodeid, str(value)] = None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.artifacts:
            terminalreporter.section("model diffs")
            for nodeid, path in self.artifacts:
                terminalreporter.line(f"{nodeid}: {path}")
