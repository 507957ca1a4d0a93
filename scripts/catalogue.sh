#!/usr/bin/env bash
# The transformers catalogue (tests/test_catalogue.py, marker `catalogue`): a fixed sample by
# default (CI, about 30 s), every architecture with LENS_CATALOGUE=all (9 to 16 minutes on
# 2 shared cores), or the architectures named with LENS_CATALOGUE=bert,gpt2. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests/test_catalogue.py -m catalogue -n 0 -q -rfs "$@"
