#!/usr/bin/env bash
# Install ncaflow and everything its workflow and tests use into the current Python.
#
# torch is installed first and pinned (2.13.0, CPU): pip then keeps it, instead of
# letting a dependency pull a multi-GB CUDA build. medmnist goes in with --no-deps
# because it asks for an unpinned torchvision, which ncaflow never imports; its
# real needs are ncaflow's own dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet --no-deps "medmnist==3.0.2"
python -m pip install --quiet -e ".[test,workflow,dev]"
python -c "import ncaflow, medmnist, torch; print('ncaflow', ncaflow.__version__, '| torch', torch.__version__)"
