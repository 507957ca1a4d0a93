#!/usr/bin/env bash
# The test suite: unit tests and end-to-end plugin tests, two workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests -n 2 "$@"
