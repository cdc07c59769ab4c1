#!/usr/bin/env bash
# Create the peers' virtualenvs for the benchmark (idempotent: re-running is cheap).
#
#   benchmarks/.venv-ncalab  Python 3.11, torch==2.13.0 (CPU wheel), ncalab==0.5.1
#   benchmarks/.venv-cax     Python 3.12, cax==0.4.4 with jax (CPU)
#
# ncalab's own requirements would pull a CUDA build of torch and torchvision;
# it is installed with --no-deps after a CPU torch, plus the few packages that
# its NCA model code imports (see peers/ncalab_bench.py).
# Override the interpreters with PY311 / PY312.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PY311="${PY311:-python3.11}"
PY312="${PY312:-$HOME/.pyenv/versions/3.12.1/bin/python}"
[ -x "$PY312" ] || PY312=python3.12

ncalab="$here/.venv-ncalab"
if [ ! -x "$ncalab/bin/python" ] || ! "$ncalab/bin/python" -c "import torch, numpy" 2>/dev/null; then
    "$PY311" -m venv "$ncalab"
    "$ncalab/bin/pip" install -q --upgrade pip
    # CPU torch first, so nothing below can replace it with a CUDA build.
    # Set PIP_INDEX_URL / PIP_FIND_LINKS to your CPU wheel source if the default
    # index would give a CUDA build.
    "$ncalab/bin/pip" install -q "torch==2.13.0"
    # ncalab declares Requires-Python >= 3.12 but its model code runs on 3.11, where
    # the project's torch==2.13.0 CPU wheel is: ignore the marker, skip its deps.
    "$ncalab/bin/pip" install -q --no-deps --ignore-requires-python "ncalab==0.5.1"
    "$ncalab/bin/pip" install -q numpy
fi
# The ncalab wheels on PyPI (0.3 to 0.5.1) ship without the ncalab.models, data and
# training subpackages, so `import ncalab` fails and the runner reports the peer as
# n/a. With NCALAB_SRC pointing at a checkout of the NCALab repository, install that
# instead (still --no-deps; add whatever its imports then ask for).
if [ -n "${NCALAB_SRC:-}" ]; then
    "$ncalab/bin/pip" install -q --no-deps --ignore-requires-python -e "$NCALAB_SRC"
    # the distributions whose modules `import ncalab` loads (read off sys.modules), plus
    # matplotlib's contourpy, dateutil's six and pandas' tzdata; --no-deps, so that nothing
    # replaces the CPU torch
    "$ncalab/bin/pip" install -q --no-deps torchmetrics lightning-utilities packaging \
        safetensors matplotlib contourpy cycler fonttools kiwisolver pillow pyparsing \
        python-dateutil six scipy tqdm tensorboard protobuf absl-py pandas pytz tzdata click \
        pytorch-msssim
fi

cax="$here/.venv-cax"
if [ ! -x "$cax/bin/python" ] || ! "$cax/bin/python" -c "import cax, jax, optax" 2>/dev/null; then
    "$PY312" -m venv "$cax"
    "$cax/bin/pip" install -q --upgrade pip
    "$cax/bin/pip" install -q "cax==0.4.4" jax
fi
echo "peers ready: $ncalab $cax"
