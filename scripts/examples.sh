#!/usr/bin/env bash
# The examples suite: traces each example model, checks it against its committed
# snapshot, and draws every model's picture into lens-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest examples --lens-pictures "$@"
