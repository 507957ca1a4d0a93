"""The install README gives works: a wheel built from the checkout holds the whole package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_module_the_plugin_entry_point_and_the_types(tmp_path: Path) -> None:
    # README: `pip wheel --no-deps -w dist ./pytest-modellens` (without build isolation here: no download)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("pytest_modellens-*-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pytest_modellens").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert "pytest_modellens/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert (
        "modellens = pytest_modellens.plugin" in text
        and "pytest-modellens = pytest_modellens.__main__:main" in text
    )
