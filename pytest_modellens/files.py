"""Reading and writing snapshot files so that nothing is ever lost: never raise or block on read, atomic writes.

Used by the syrupy extension for the snapshots themselves, and by the command line's
``accept`` for the files it applies; no third-party import.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from .errors import ModelLensError

#: The manifest a failing run writes beside each new snapshot it keeps in the artifacts
#: directory: which snapshot it belongs to and the SHA-256 of the one it was compared with.
MANIFEST_SCHEMA = "pytest-modellens-kept/1"
MANIFEST_SUFFIX = ".manifest.json"


class SnapshotWriteError(ModelLensError, OSError):
    """A snapshot file could not be written; the one on disk, if any, is as it was."""


class Unreadable(str):
    """What a snapshot file that cannot be read as text reads as: empty text with a reason."""

    problem: str

    def __new__(cls, problem: str) -> Unreadable:  # noqa: PYI034 - a plain str subclass, never subclassed
        self = super().__new__(cls, "")
        self.problem = problem
        return self


def _display(location: str) -> str:
    try:
        return os.path.relpath(location)
    except ValueError:  # another drive on Windows
        return location


def read_snapshot_file(location: str) -> str | None:
    """The text of a snapshot file; None where there is none; :class:`Unreadable` where it is not text."""
    path = Path(location)
    try:
        info = path.stat()  # follows a link: what would be read
    except FileNotFoundError:
        if path.is_symlink():
            return Unreadable(f"it is a link to {os.readlink(path)}, which does not exist")
        return None
    except OSError as error:
        return Unreadable(f"it cannot be looked at ({error.strerror or error})")
    if stat.S_ISDIR(info.st_mode):
        return Unreadable("it is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        return Unreadable("it is not a regular file (a FIFO, socket or device); it is not opened")
    try:
        raw = path.read_bytes()
    except OSError as error:
        return Unreadable(f"it cannot be read ({error.strerror or error})")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Unreadable("it is UTF-16 text; snapshots are UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return Unreadable(f"it is not UTF-8 text (byte {error.start} is 0x{raw[error.start]:02x})")


def write_snapshot_file(location: str, text: str) -> None:
    """Write ``text`` to ``location`` atomically, replacing (never writing through) a link there."""
    path = Path(location)
    folder = path.parent
    shown = _display(location)
    if path.is_dir() and not path.is_symlink():
        try:
            path.rmdir()  # an empty directory in the way; a full one is the user's
        except OSError:
            raise SnapshotWriteError(
                f"could not write {shown}: a directory with files in it is in the way; move it and rerun"
            ) from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise SnapshotWriteError(f"could not write {shown}: {error.strerror or error}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _file_mode(path))
        os.replace(temporary, path)  # replaces a link itself, not what it points to
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise SnapshotWriteError(
            f"could not write {shown}: {error.strerror or error}; the old snapshot is kept"
        ) from None
    except BaseException:  # Ctrl-C mid-write: no temporary file left behind either
        Path(temporary).unlink(missing_ok=True)
        raise


def _file_mode(path: Path) -> int:
    """The mode of the file being replaced, else what a plain ``open`` would give."""
    try:
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):
            return stat.S_IMODE(info.st_mode)
    except OSError:
        pass
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
