"""pytest wiring: options, the ``model_trace`` fixture and the reporting hooks.

Only wiring lives here: the options are :mod:`.settings`'s, the words of a failure
:mod:`.report`'s, the files it leaves :mod:`.artifacts`'s. torch is imported when a test
first asks for ``model_trace`` (by the tracer package, never here), so a run that never
uses the plugin pays nothing for it being installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import settings as _settings
from .artifacts import ArtifactLog, display
from .lifecycle import SnapshotLife, label
from .settings import Settings, settings_key
from .trace import Trace

current_item_key = pytest.StashKey[pytest.Item]()


def pytest_addoption(parser: pytest.Parser) -> None:
    _settings.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[settings_key] = settings = _settings.from_config(config)
    config.pluginmanager.register(ArtifactLog(), "modellens-artifacts")
    config.pluginmanager.register(SnapshotLife(config, prune=settings.prune), "modellens-snapshots")
    if getattr(config.option, "default_extension", "") is None:
        # syrupy's amber, less its claim on files it does not own (see extension.py).
        config.option.default_extension = "pytest_modellens.extension.AmberSnapshotExtension"
    if settings.update:
        # Writing and counting are syrupy's machinery; deleting is never part of an update
        # (syrupy's own cleanup off too, for the other snapshots of the suite).
        config.option.update_snapshots = True
        config.option.no_cleanup = True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    item.config.stash[current_item_key] = item
    try:
        return (yield)
    finally:
        del item.config.stash[current_item_key]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" or (report.skipped and report.when == "setup"):
        from .extension import owned_locations, used_locations

        if "snapshot" in getattr(item, "fixturenames", ()):
            used = used_locations(item) if report.when == "call" else []
            kept = owned_locations(item) if report.skipped else []
            label(report, used=used, kept=kept, root=item.config.rootpath.resolve())
    return report


@pytest.fixture
def model_trace(request: pytest.FixtureRequest) -> Iterator[Callable[..., Trace]]:
    """Trace a model: ``model_trace(model, *args, stats=None, rtol=None, atol=None, depth=None, **kwargs)``.

    Compare the result with syrupy's ``snapshot``: ``assert model_trace(net, x) == snapshot``.
    ``stats`` and ``depth`` default to ``--lens-stats`` and ``--lens-depth`` (or their ini keys);
    ``leaf_modules`` and ``flops`` are :func:`pytest_modellens.trace`'s.
    torch's, NumPy's and Python's RNGs are seeded (``--lens-seed``, default 0) before the test body runs, so
    weights made in the test are the same on every run, and restored afterwards.
    """
    from .tracer import seeded, trace

    settings = request.config.stash[settings_key]

    def model_trace(
        model: Any,
        /,
        *args: Any,
        stats: bool | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        depth: int | None = None,
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
            depth=settings.depth if depth is None else depth,
            **kwargs,
        )
        if settings.pictures:
            from .artifacts import draw_model_picture

            draw_model_picture(request.node, result, settings)
        return result

    with seeded(settings.seed):
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
            item = config.stash.get(current_item_key, None)
            # Not a firstresult hook: pytest shows the first non-empty explanation.
            return [_failure_lines(item, left, right, config.stash[settings_key])]
    return result


def _failure_lines(item: pytest.Item | None, trace: Trace, snapshot: Any, settings: Settings) -> list[str]:
    """The message for ``trace == snapshot`` that failed: what syrupy saw, compared and drawn."""
    from . import report
    from .artifacts import draw_diff
    from .canonical import loads
    from .differ import compare
    from .errors import SnapshotFormatError
    from .extension import last_result, unreadable_problem

    result = last_result(snapshot)
    if result is None:
        return ["model snapshot ? could not be compared"]
    name, location = result.snapshot_name, display(result.snapshot_location)
    if result.exception is not None:
        return report.not_compared(name, location, result.exception)
    if result.recalled_data is None:
        return report.missing(name, location)
    problem = unreadable_problem(result.recalled_data)
    if problem is not None:
        return report.unreadable(name, location, problem)
    try:
        old = loads(str(result.recalled_data), source="the file")
        comparison = compare(old, trace, tolerance=trace.tolerance)
    except SnapshotFormatError as error:
        return report.unreadable(name, location, str(error))
    except Exception as error:  # noqa: BLE001 - the test failed either way; say so, not a traceback
        return report.not_listed(name, location, error)
    return report.changed(name, location, comparison, draw_diff(item, comparison, settings))
