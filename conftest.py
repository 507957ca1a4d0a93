"""Top-level conftest: lets `pytest` find the plugin from a source checkout, too.

An installed package registers the plugin through its `pytest11` entry point; this
file only matters when the package is not installed, e.g. `python -m pytest` from a
plain clone with PYTHONPATH set.
"""

import importlib.metadata

try:
    importlib.metadata.distribution("pytest-modellens")
except importlib.metadata.PackageNotFoundError:
    pytest_plugins = ["pytest_modellens.plugin"]
