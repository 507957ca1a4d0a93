"""pytest wiring: options, the ``model_trace`` fixture and the reporting hooks.

Only wiring lives here: the options are :mod:`.settings`'s, the words of a failure
:mod:`.report`'s, the files it leaves :mod:`.artifacts`'s. torch is imported when a test
first asks for ``model_trace`` (by the tracer package, never here), so a run that never
uses the plugin pays nothing for it being installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import settings as _settings
from .artifacts import OUTCOME_PROPERTY, REPORT_ATTRIBUTE, ArtifactLog, display, failures_of
from .lifecycle import SnapshotLife, label
from .settings import Settings, settings_key
from .trace import Trace

if TYPE_CHECKING:
    from .report import Screen

current_item_key = pytest.StashKey[pytest.Item]()


def pytest_addoption(parser: pytest.Parser) -> None:
    _settings.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[settings_key] = settings = _settings.from_config(config)
    config.pluginmanager.register(ArtifactLog(config, settings), "modellens-artifacts")
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
    tested = report.when == "call" or (report.skipped and report.when == "setup")
    if tested and "snapshot" in getattr(item, "fixturenames", ()):
        from .extension import outcomes, owned_locations, used_locations

        # What the session's snapshot files and review page are decided from, on any process.
        used = used_locations(item) if report.when == "call" else []
        kept = owned_locations(item) if report.skipped else []
        label(report, used=used, kept=kept, root=item.config.rootpath.resolve())
        if report.when == "call":
            report.user_properties.extend((OUTCOME_PROPERTY, outcome) for outcome in outcomes(item))
    if call.when == "call" and failures_of(item):
        # A plain attribute of the report: xdist sends it to the controller's summary.
        setattr(report, REPORT_ATTRIBUTE, failures_of(item))
    return report


@pytest.fixture
def model_trace(request: pytest.FixtureRequest) -> Iterator[Callable[..., Trace]]:
    """Trace a model: ``model_trace(model, *args, stats=None, rtol=None, atol=None, depth=None, grad=None, **kwargs)``.

    Compare the result with syrupy's ``snapshot``: ``assert model_trace(net, x) == snapshot``.
    ``stats``, ``depth`` and ``grad`` default to ``--lens-stats``, ``--lens-depth`` and
    ``--lens-grad`` (or their ini keys);
    ``leaf_modules`` and ``flops`` are :func:`pytest_modellens.trace`'s.
    torch's, NumPy's and Python's RNGs are seeded (``--lens-seed``, default 0) before the test
    body runs, so weights made in the test are the same on every run, and restored afterwards.
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
        grad: bool | None = None,
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
            grad=settings.grad if grad is None else grad,
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


def _screen(config: pytest.Config) -> Screen | None:
    """What pytest shows of an assertion message before cutting it; None where it shows all.

    pytest's own rule: nothing is cut under ``-vv`` or in CI (``CI`` or ``BUILD_NUMBER`` set),
    else ``truncation_limit_lines`` and ``truncation_limit_chars`` (8 and 640 unless set).
    """
    from .report import SCREEN_CHARS, SCREEN_LINES, Screen

    get_verbosity = getattr(config, "get_verbosity", None)
    verbosity = get_verbosity("assertions") if get_verbosity else config.option.verbose
    if verbosity >= 2 or any(os.environ.get(name) for name in ("CI", "BUILD_NUMBER")):
        return None
    limits = []
    for name, default in (("truncation_limit_lines", SCREEN_LINES), ("truncation_limit_chars", SCREEN_CHARS)):
        try:
            value = config.getini(name)
        except ValueError:  # a pytest without the key: its fixed defaults
            value = None
        limits.append(default if value in (None, "") else int(value))
    if not any(limits):
        return None
    return Screen(*(limit or 10**9 for limit in limits))


def _failure_lines(item: pytest.Item | None, trace: Trace, snapshot: Any, settings: Settings) -> list[str]:
    """The message for ``trace == snapshot`` that failed: what syrupy saw, compared and drawn.

    Every failure that has a new trace keeps it in the artifacts directory, and is listed
    again in the "model diffs" summary.
    """
    from . import report
    from .artifacts import Failure, accept_command, draw_diff, keep_snapshot, record_failure
    from .canonical import loads
    from .causes import explain
    from .differ import compare
    from .errors import SnapshotFormatError
    from .extension import last_result, unreadable_problem

    result = last_result(snapshot)
    if result is None:
        return ["model snapshot ? could not be compared"]
    name, location = result.snapshot_name, display(result.snapshot_location)
    if result.exception is not None:
        return report.not_compared(name, location, result.exception)
    step = report.NextStep(location, kept=keep_snapshot(item, trace, result.snapshot_location, settings),
                           command=accept_command(item))  # fmt: skip
    status, every = "changed", None
    if result.recalled_data is None:
        status, lines = "missing", report.missing(name, step)
    elif (problem := unreadable_problem(result.recalled_data)) is not None:
        status, lines = "unreadable", report.unreadable(name, step, problem)
    else:
        try:
            old = loads(str(result.recalled_data), source="the file")
            comparison = compare(old, trace, tolerance=trace.tolerance)
        except SnapshotFormatError as error:
            status, lines = "unreadable", report.unreadable(name, step, str(error))
        except Exception as error:  # noqa: BLE001 - the test failed either way; say so, not a traceback
            lines = report.not_listed(name, step, error)
        else:
            step = replace(step, picture=draw_diff(item, comparison, settings))
            limit = settings.max_changes
            lines = report.changed(
                name, comparison, step, limit=limit, screen=_screen(item.config) if item else None
            )
            every = report.change_lines(explain(comparison))  # the whole list, for the report page
    picture = step.picture.removeprefix("picture: ")
    whole = tuple(every if every is not None else lines[1 : len(lines) - len(step.lines())])
    record_failure(item, Failure(lines[0], location, picture, step.kept, step.command, status, whole))
    return lines
