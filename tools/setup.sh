#!/usr/bin/env bash
# Create .venv with the CPU build of torch and every pinned dependency. Idempotent; offline-safe once installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --disable-pip-version-check --upgrade pip
# torch first and pinned: a plain `torch` requirement would pull the CUDA build (several GB) on a CPU machine.
pip install -q --disable-pip-version-check torch==2.13.0
pip install -q --disable-pip-version-check -e ".[test]"
# open_flamingo's metadata pins torch==2.0.1 and open_clip; its model classes need neither (see models/flamingo.py).
pip install -q --disable-pip-version-check --no-deps open-flamingo==2.0.1 einops-exts==0.0.4
python -c "import torch, transformers, snakemake; print('torch', torch.__version__, '| transformers', transformers.__version__)"
