#!/usr/bin/env bash
# Create .venv-neural (COMET / xCOMET) from the pinned envs/neural_metrics.txt.
#   bash tools/neural_metrics_env.sh [VENV_DIR]
# The CPU torch wheel is taken from the PyTorch CPU index unless a local wheel of the pinned version is found by pip.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$here/.venv-neural}"
python="${PYTHON:-python3}"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade "pip<26"
# torch first, as the CPU build (2.13.0+cpu) so that nothing pulls the CUDA wheels: from the configured indexes /
# find-links if they have it (a local wheel directory: no network), else from the PyTorch CPU index
# (TORCH_INDEX_URL; "" = never).
torch_req="torch==${TORCH_VERSION:-2.13.0+cpu}"
index="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
"$venv/bin/python" -m pip install --quiet "$torch_req" 2>/dev/null \
  || "$venv/bin/python" -m pip install --quiet ${index:+--extra-index-url "$index"} "$torch_req"
"$venv/bin/python" -m pip install --quiet -r "$here/envs/neural_metrics.txt"
"$venv/bin/python" - <<'PY'
import comet, numpy, torch, transformers
print("neural metrics env ok:", "comet", comet.__version__, "numpy", numpy.__version__,
      "torch", torch.__version__, "transformers", transformers.__version__)
PY
