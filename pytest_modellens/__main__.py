"""Command line: look at snapshot files without running the tests.

    python -m pytest_modellens diff OLD.lens.json NEW.lens.json -o diff.svg [--every]
    python -m pytest_modellens show SNAPSHOT.lens.json -o model.svg [--depth N] [--rolled]
    python -m pytest_modellens accept lens-artifacts/ [--dry-run]
    python -m pytest_modellens review [REF] [--report lens-artifacts/review.html]
    python -m pytest_modellens show SNAPSHOT.lens.json --table [--table-depth N]

``diff`` prints the changes, causes first, as a failing test lists them (``--every``: each
change on its own line, consequences too); NEW may be the snapshot a failing run kept in
its artifacts directory. It exits 0 when there are none, 1 when there are (as
``diff`` does); both exit 2 on bad input (a missing file, a file that is not a model
snapshot or does not hold together, a picture that cannot be drawn or written), with a
message that says which; 1 never means anything but "they differ".
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .canonical import loads
from .errors import ModelLensError
from .trace import Trace

if TYPE_CHECKING:
    from .causes import Row
    from .changes import Change

USAGE_ERROR = 2


def _read(path: str) -> Trace:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ModelLensError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    return loads(text, source=f"snapshot file {path}")


def _at_least(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {minimum} (got {text!r})")
        return value

    return convert


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_modellens", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    diff = commands.add_parser("diff", help="list the changes between two snapshots and draw them")
    diff.add_argument("old", metavar="OLD", help="the old snapshot (.lens.json)")
    diff.add_argument("new", metavar="NEW", help="the new snapshot (.lens.json)")
    diff.add_argument("-o", "--output", metavar="FILE", help="write the diff picture (.svg, .png or .gv)")
    diff.add_argument(
        "-n", "--max-changes", type=_at_least(1), metavar="N", help="list at most N rows (default: all)"
    )
    diff.add_argument(
        "--every", action="store_true", help="list every change on its own line, consequences included"
    )
    diff.add_argument(
        "--hops", type=_at_least(0), default=2, metavar="K", help="on big graphs, keep K steps around changes"
    )
    show = commands.add_parser("show", help="print a snapshot's summary and draw its model")
    show.add_argument("snapshot", metavar="SNAPSHOT", help="the snapshot (.lens.json)")
    show.add_argument("-o", "--output", metavar="FILE", help="write the model picture (.svg, .png or .gv)")
    show.add_argument("--depth", type=_at_least(1), metavar="N", help="collapse modules nested deeper than N")
    show.add_argument("--rolled", action="store_true", help="draw a module called N times once, marked xN")
    show.add_argument(
        "--table", action="store_true", help="print a torchinfo-style table of the modules instead of the log"
    )
    show.add_argument(
        "--table-depth",
        type=_at_least(1),
        metavar="N",
        help="in the table, modules down to level N only (the model is level 1)",
    )
    accept = commands.add_parser(
        "accept", help="write the new snapshots a failing run kept onto their snapshots"
    )
    accept.add_argument("folder", metavar="DIR", help="the artifacts folder the run left (lens-artifacts/)")
    accept.add_argument("--dry-run", action="store_true", help="print what would be accepted, write nothing")
    accept.add_argument("--rootdir", metavar="DIR", default=".", help="the project's root (default: here)")
    review = commands.add_parser("review", help="list and draw the model snapshots changed since REF (git)")
    review.add_argument(
        "ref", metavar="REF", nargs="?", help="default: the merge base with the default branch"
    )
    review.add_argument(
        "--report", metavar="FILE", default="lens-artifacts/review.html", help="the page to write"
    )
    return parser


def _every(change: Change) -> Row:
    from .causes import Row

    return Row(*change.columns(), changes=(change,))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command in ("accept", "review"):
            from . import review

            if args.command == "accept":
                return review.accept(
                    Path(args.folder), rootdir=Path(args.rootdir), dry_run=args.dry_run, say=print
                )
            return review.review(args.ref, cwd=Path.cwd(), report=Path(args.report), say=print)
        if args.command == "show":
            trace = _read(args.snapshot)
            print(trace.table(depth=args.table_depth) if args.table else trace.summary())
            if args.output:
                from .render import render_trace

                print(f"picture: {render_trace(trace, args.output, depth=args.depth, rolled=args.rolled)}")
            return 0
        from .causes import explain
        from .differ import compare
        from .report import change_lines, headline, row_lines

        comparison = compare(_read(args.old), _read(args.new))
        changes = comparison.changes
        print(f"{args.old} -> {args.new}: {headline(changes) if changes else 'no changes'}")
        if args.every:
            lines = row_lines([_every(change) for change in changes][: args.max_changes])
        else:
            lines = change_lines(explain(comparison), limit=args.max_changes)
        for line in lines:
            print(line)
        if args.output:
            from .render import render_diff

            written = render_diff(
                comparison.old, comparison.new, args.output, comparison=comparison, hops=args.hops
            )
            print(f"picture: {written}")
        return 1 if changes else 0
    except ModelLensError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except OSError as error:  # a picture path that cannot be written, say
        where = f" {error.filename}" if error.filename else ""
        print(f"error: cannot write{where}: {error.strerror or error}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
