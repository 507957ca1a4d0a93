"""From CI back to the working tree: accept the new snapshots a run kept, review the ones a branch changed.

``accept DIR`` applies the new snapshots a failing run kept in its artifacts directory (as
CI uploads it), each onto the snapshot it was compared with, and only while that file is
still what was compared: a snapshot edited since, or a path outside the rootdir, is named
and skipped. ``review [REF]`` lists every model snapshot changed between REF and the working
tree (git), prints each change list and writes the review page with their pictures, so a
reviewer reads pictures instead of JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .canonical import loads
from .errors import ModelLensError
from .files import MANIFEST_SCHEMA, MANIFEST_SUFFIX, read_snapshot_file, write_snapshot_file
from .page import Entry, html
from .trace import Trace

Say = Callable[[str], None]


class ReviewError(ModelLensError):
    """The review or accept step cannot run as asked (no git, no such ref, a bad folder)."""


@dataclass(frozen=True, slots=True)
class Kept:
    """One kept new snapshot and what it belongs to."""

    manifest: Path
    new: Path
    snapshot: str  # relative to the rootdir
    old_sha256: str | None
    test: str


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def kept_snapshots(folder: Path) -> list[Kept]:
    """Every kept snapshot in an artifacts folder, by manifest, in name order."""
    if not folder.is_dir():
        raise ReviewError(f"{folder} is not a folder; pass the artifacts folder a run left (lens-artifacts/)")
    found = []
    for manifest in sorted(folder.rglob(f"*{MANIFEST_SUFFIX}")):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            if data.get("schema") != MANIFEST_SCHEMA:
                raise ValueError(f"schema {data.get('schema')!r}")
            found.append(
                Kept(manifest, manifest.with_name(str(data["new"])), str(data["snapshot"]),
                     data.get("old_sha256"), str(data.get("test") or data["snapshot"]))
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ReviewError(f"{manifest} is not a kept-snapshot manifest ({error})") from None
    return found


def _changes(old: Trace | None, new: Trace) -> tuple[str, list[str]]:
    """Headline and whole change list from ``old`` to ``new`` (a new snapshot when there is no old)."""
    from .causes import explain
    from .differ import compare
    from .report import change_lines, headline

    if old is None:
        return "a new snapshot", [f"  + {new.model}: {len(new.op_nodes)} ops, {new.param_count:,} params"]
    comparison = compare(old, new)
    if not comparison.changes:
        return "no changes", []
    return headline(comparison.changes), change_lines(explain(comparison))


def accept(folder: Path, *, rootdir: Path, dry_run: bool, say: Say) -> int:
    """Apply the kept snapshots of ``folder`` under ``rootdir``; the exit status (2 if any was skipped)."""
    root = rootdir.resolve()
    skipped = 0
    entries = kept_snapshots(folder)
    if not entries:
        say(f"no kept snapshots in {folder} (a run keeps them only for model assertions that failed)")
        return 0
    for kept in entries:
        target = (root / kept.snapshot).resolve()
        if Path(kept.snapshot).is_absolute() or not target.is_relative_to(root):
            say(f"skipped {kept.snapshot}: it is outside {root}, and accept writes inside it only")
            skipped += 1
            continue
        if _sha256(target) != kept.old_sha256:
            say(
                f"skipped {kept.snapshot}: it changed since the run compared it "
                "(rerun the tests, or accept with pytest --lens-update)"
            )
            skipped += 1
            continue
        try:
            new = loads(kept.new.read_text(encoding="utf-8"), source=f"kept snapshot {kept.new}")
        except (OSError, UnicodeDecodeError) as error:
            raise ReviewError(f"cannot read {kept.new}: {error}") from None
        current = read_snapshot_file(str(target))
        old = loads(current, source=str(target)) if current else None
        headline, lines = _changes(old, new)
        say(f"{'would accept' if dry_run else 'accepted'} {kept.snapshot} ({kept.test}): {headline}")
        for line in lines:
            say(line)
        if not dry_run:
            write_snapshot_file(str(target), new.dumps())
    return 2 if skipped else 0


# -- review ---------------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ReviewError(f"git could not run ({error}); review needs git and a checkout") from None
    if done.returncode != 0:
        raise ReviewError(f"git {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def default_ref(cwd: Path) -> str:
    """The merge base with the default branch (``origin/HEAD``, ``main`` or ``master``), else ``HEAD``."""
    candidates = []
    try:
        candidates.append(_git("symbolic-ref", "--short", "refs/remotes/origin/HEAD", cwd=cwd).strip())
    except ReviewError:
        pass
    candidates += ["origin/main", "origin/master", "main", "master"]
    for branch in candidates:
        try:
            return _git("merge-base", "HEAD", branch, cwd=cwd).strip()
        except ReviewError:
            continue
    return "HEAD"


def _safe_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", path.removesuffix(".lens.json"))


def review(ref: str | None, *, cwd: Path, report: Path, say: Say) -> int:
    """Print the change list of every model snapshot changed since ``ref`` and write the page; 0."""
    root = Path(_git("rev-parse", "--show-toplevel", cwd=cwd).strip())
    ref = ref or default_ref(root)
    try:
        _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=root)
    except ReviewError:
        raise ReviewError(
            f"no commit {ref!r} in this clone; on a shallow clone fetch it first "
            f"(git fetch --depth=50 origin {ref}) or name another with `review REF`"
        ) from None
    changed = _git("diff", "--name-only", "--no-renames", ref, "--", "*.lens.json", cwd=root).split()
    changed += _git("ls-files", "--others", "--exclude-standard", "--", "*.lens.json", cwd=root).split()
    entries = []
    pictures = report.parent / "review"
    for path in sorted(set(changed)):
        entry = _review_one(path, ref, root, pictures)
        entries.append(entry)
        say(f"{path}: {entry.headline}")
        for line in entry.lines:
            say(line)
    if not entries:
        say(f"no model snapshot changed since {ref}")
    report.parent.mkdir(parents=True, exist_ok=True)
    write_snapshot_file(
        str(report), html(entries, None, page=report, title=f"Model snapshots changed since {ref}")
    )
    say(f"review page: {report}")
    return 0


def _review_one(path: str, ref: str, root: Path, pictures: Path) -> Entry:
    """What one changed snapshot file says changed, with its picture drawn."""
    try:
        old_text: str | None = _git("show", f"{ref}:{path}", cwd=root)
    except ReviewError:
        old_text = None  # added since ref
    new_text = read_snapshot_file(str(root / path))
    try:
        old = loads(old_text, source=f"{path} at {ref}") if old_text is not None else None
        new = loads(new_text, source=path) if new_text else None
    except ModelLensError as error:
        return Entry(path, "cannot be read", (f"  {error}",), snapshot=path, status="unreadable")
    if new is None:
        return Entry(path, "removed", (), snapshot=path, status="removed")
    headline, lines = _changes(old, new)
    picture = ""
    if old is not None:
        from .render import render_diff

        try:
            picture = render_diff(old, new, pictures / f"{_safe_name(path)}.svg")
        except ModelLensError as error:
            lines = [*lines, f"  picture not drawn: {error}"]
    return Entry(path, headline, tuple(lines), picture=picture, snapshot=path,
                 status="added" if old is None else "changed")  # fmt: skip
