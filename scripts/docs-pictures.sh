#!/usr/bin/env bash
# Refreshes the pictures README.md shows, from a run of the examples suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/examples.sh -q
cp lens-artifacts/examples/test_examples.py--test_reference_mlp.model.svg docs/model-picture.svg
cp lens-artifacts/examples/reference-change.diff.svg docs/diff-picture.svg
if [ -f lens-artifacts/examples/review-page.png ]; then
  cp lens-artifacts/examples/review-page.png docs/review-page.png
else
  echo "no Chromium: docs/review-page.png left as it was (apt-get install chromium to refresh it)" >&2
fi
