#!/usr/bin/env bash
# The optional catalogue group (marker `catalogue`): the transformers catalogue
# (tests/test_catalogue.py) on a fixed sample by default (CI, about 40 s), every architecture
# with LENS_CATALOGUE=all (9 to 16 minutes on 2 shared cores), or the architectures named with
# LENS_CATALOGUE=bert,gpt2; and a few diffusers models (tests/test_diffusers.py, about 20 s of
# CPU time). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# diffusers and the packages it imports that the test extra lacks, pinned and without their own
# requirements, so pip never reaches for another torch. The rest (huggingface_hub, numpy,
# safetensors, filelock, regex, idna) come with transformers; importlib_metadata is only
# imported on Python before 3.8.
DIFFUSERS=(diffusers==0.42.1 requests==2.34.2 urllib3==2.8.0 charset-normalizer==3.5.3
  certifi==2026.10.19.post1 Pillow==13.0.0)
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "${DIFFUSERS[@]}" \
  || echo "diffusers could not be installed: tests/test_diffusers.py will be skipped" >&2
# scipy: the losses some transformers models build in their constructor (eomt, videomt) import it.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps scipy==1.17.1 \
  || echo "scipy could not be installed: the models that need it will be skipped" >&2
exec .venv/bin/python -m pytest tests/test_catalogue.py tests/test_diffusers.py -m catalogue -n 0 -q -rfs "$@"
