#!/usr/bin/env bash
# The test suite: unit tests, end-to-end plugin tests and the examples, two workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests examples -n 2 "$@"
