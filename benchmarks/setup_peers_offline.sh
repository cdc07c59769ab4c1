#!/usr/bin/env bash
# Set up the peers for benchmarks/run.py on a GPU machine without internet, from carried files:
#
#   bash benchmarks/setup_peers_offline.sh WHEEL_DIR NCALAB_TREE
#
# WHEEL_DIR holds cax-0.4.4 and pytorch_msssim wheels (any platform: both are pure Python);
# NCALAB_TREE is the NCALab source tree of peers/ncalab_tree.sh. The machine's own Python
# must already have a CUDA torch (NCALab) and a CUDA jax, flax and optax (CAX), as the lent
# GPU machines do. Instead of virtualenvs (a venv made from a venv does not see the image's
# packages) it writes benchmarks/.venv-ncalab/bin/python and .venv-cax/bin/python as small
# wrappers of that Python with the peer's packages first on PYTHONPATH: run.py's PEERS.
# Override the Python with PYTHON=...
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 WHEEL_DIR NCALAB_TREE" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
wheels=$(cd "$1" && pwd) tree=$(cd "$2" && pwd)
py=$(command -v "${PYTHON:-python3}")
[ -d "$tree/ncalab" ] || { echo "$tree has no ncalab/: build it with peers/ncalab_tree.sh" >&2; exit 2; }

wrap() {  # wrap NAME SITE_DIR
    local venv="$here/.venv-$1"
    mkdir -p "$venv/bin"
    printf '#!/bin/sh\nPYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}" exec "%s" "$@"\n' "$2" "$py" \
        >"$venv/bin/python"
    chmod 0755 "$venv/bin/python"
}
install() {  # install SITE_DIR WHEEL_GLOB...
    local site=$1; shift
    mkdir -p "$site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$@"
}

site="$here/.venv-ncalab/site"
install "$site" "$wheels"/pytorch_msssim-*.whl
wrap ncalab "$site:$tree"
site="$here/.venv-cax/site"
install "$site" "$wheels"/cax-*.whl
wrap cax "$site"

"$here/.venv-ncalab/bin/python" -c "from ncalab import GrowingNCAModel; import torch; print('ncalab ok, torch', torch.__version__, torch.cuda.is_available())"
"$here/.venv-cax/bin/python" -c "import cax, jax; print('cax ok, jax', jax.__version__, jax.devices())"
