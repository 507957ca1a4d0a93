"""The review page and the CI job summary: what drifted, in pictures and change lists, not JSON.

Plain text in, text out: each :class:`Entry` is one model assertion that changed (or a
snapshot a pull request changed), and :func:`html` lays them out as one self-contained page
(inline CSS and SVG, no script, no font or file from the network, so it opens from a
downloaded artifact zip), :func:`markdown` as a GitHub Actions job summary. Every name that
comes from a model or a test id is escaped: a module called ``<script>`` is text.
"""

from __future__ import annotations

import base64
import html as _html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_XML_PROLOGUE = re.compile(r"^\s*(<\?xml[^>]*\?>\s*)?(<!DOCTYPE[^>]*>\s*)?(<!--.*?-->\s*)*", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Entry:
    """One model that changed: where, what, the picture, the files, and how to accept it."""

    test: str  # the test id, or the snapshot path for a reviewed pull request
    headline: str
    lines: tuple[str, ...] = ()  # the whole grouped change list
    picture: str = ""  # path of the diff picture (SVG or PNG), if one was drawn
    snapshot: str = ""  # the committed snapshot
    kept: str = ""  # the new snapshot kept beside the picture
    command: str = ""  # the command that accepts it
    status: str = "changed"  # changed, missing, added, removed, unreadable


@dataclass(frozen=True, slots=True)
class Counts:
    """How the session's model assertions came out."""

    traced: int = 0
    passed: int = 0
    changed: int = 0
    missing: int = 0
    extra: dict[str, int] = field(default_factory=dict)


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #1f2328; background: #fff; }
header { padding: 16px 24px; background: #f6f8fa; border-bottom: 1px solid #d0d7de; }
h1 { font-size: 20px; margin: 0 0 8px; }
.counts span { display: inline-block; margin-right: 16px; }
.counts b { font-size: 16px; }
nav ol { margin: 8px 0 0; padding-left: 20px; }
main { padding: 8px 24px 32px; }
section { border: 1px solid #d0d7de; border-radius: 6px; margin: 16px 0; padding: 12px 16px; }
section h2 { font-size: 16px; margin: 0 0 4px; word-break: break-all; }
.headline { color: #9a6700; margin: 0 0 8px; }
.status { font-size: 12px; border-radius: 10px; padding: 1px 8px; margin-left: 8px; background: #fff8c5; }
pre { background: #f6f8fa; padding: 8px 12px; white-space: pre-wrap; font-size: 12.5px; margin: 8px 0; }
.picture { margin: 8px 0; overflow: hidden; }
.picture svg, .picture img { max-width: 100%; height: auto; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 8px 0 0; }
dt { color: #59636e; } dd { margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
     word-break: break-all; }
code.command { background: #ddf4ff; padding: 2px 6px; border-radius: 4px; }
.none { color: #1a7f37; font-weight: 600; }
"""


def _e(text: object) -> str:
    return _html.escape(str(text), quote=True)


def _relative(path: str, page: Path) -> str:
    """``path`` as a link from the page's folder (the page and the pictures travel together)."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), page.resolve().parent)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_posix()


def _picture(path: str, page: Path) -> str:
    """The picture, inline (SVG) or embedded (PNG), fitted to the width, with a link to it alone."""
    file = Path(path)
    link = f'<p><a href="{_e(_relative(path, page))}">open the picture alone, at full size</a></p>'
    try:
        if file.suffix.lower() == ".svg":
            svg = _XML_PROLOGUE.sub("", file.read_text(encoding="utf-8"), count=1)
            if "<script" not in svg.lower() and svg.lstrip().startswith("<svg"):
                return f'<div class="picture">{svg}</div>{link}'
            data = base64.b64encode(file.read_bytes()).decode()
            return f'<div class="picture"><img alt="diff picture" src="data:image/svg+xml;base64,{data}"></div>{link}'
        data = base64.b64encode(file.read_bytes()).decode()
        return f'<div class="picture"><img alt="diff picture" src="data:image/png;base64,{data}"></div>{link}'
    except OSError:
        return f"<p>picture: {_e(path)} (not found beside this page)</p>"


def html(
    entries: Sequence[Entry], counts: Counts | None, *, page: Path, title: str = "Model snapshots"
) -> str:
    """The whole review page: counts and links in a header, then one section per entry."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
    ]
    if counts is not None:
        shown = {"models traced": counts.traced, "passed": counts.passed, "changed": counts.changed,
                 "missing": counts.missing, **counts.extra}  # fmt: skip
        parts.append('<div class="counts">')
        parts += [f"<span><b>{value}</b> {_e(name)}</span>" for name, value in shown.items()]
        parts.append("</div>")
    if entries:
        parts.append("<nav><ol>")
        parts += [
            f'<li><a href="#m{k}">{_e(entry.test)}</a> — {_e(entry.headline)}</li>'
            for k, entry in enumerate(entries)
        ]
        parts.append("</ol></nav>")
    else:
        parts.append('<p class="none">Every model matched its snapshot.</p>')
    parts.append("</header><main>")
    for k, entry in enumerate(entries):
        parts.append(
            f'<section id="m{k}"><h2>{_e(entry.test)}<span class="status">{_e(entry.status)}</span></h2>'
        )
        parts.append(f'<p class="headline">{_e(entry.headline)}</p>')
        if entry.lines:
            parts.append("<pre>" + "\n".join(_e(line) for line in entry.lines) + "</pre>")
        if entry.picture:
            parts.append(_picture(entry.picture, page))
        facts = [("snapshot", entry.snapshot), ("new snapshot", entry.kept)]
        rows = [f"<dt>{name}</dt><dd>{_e(value)}</dd>" for name, value in facts if value]
        if entry.command:
            rows.append(f'<dt>accept</dt><dd><code class="command">{_e(entry.command)}</code></dd>')
        if rows:
            parts.append("<dl>" + "".join(rows) + "</dl>")
        parts.append("</section>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _cell(text: str) -> str:
    """Text for one Markdown table cell: pipes escaped, HTML neutralised, on one line."""
    return _html.escape(text.replace("|", "\\|").replace("\n", " ").strip(), quote=False)


def markdown(entries: Sequence[Entry], counts: Counts | None, *, report: str = "", causes: int = 3) -> str:
    """A GitHub Actions job summary: a table of changed models, then where the report is."""
    lines = ["## Model snapshots", ""]
    if counts is not None:
        lines += [
            f"{counts.traced} traced, {counts.passed} passed, {counts.changed} changed, {counts.missing} missing",
            "",
        ]
    if entries:
        lines += ["| test | what changed | first causes |", "|---|---|---|"]
        for entry in entries:
            first = "<br>".join(_cell(line) for line in entry.lines[:causes])
            lines.append(f"| `{_cell(entry.test)}` | {_cell(entry.headline)} | {first} |")
        lines.append("")
    if report:
        lines.append(f"Report with every picture: `{report}` (in the `lens-artifacts` upload).")
    pictures = [entry.picture for entry in entries if entry.picture]
    if pictures:
        lines += ["", "Pictures: " + ", ".join(f"`{_cell(p)}`" for p in pictures)]
    return "\n".join(lines).rstrip() + "\n"
