#!/usr/bin/env bash
# Install ncaflow and everything its workflow and tests use into the current Python.
#
# torch is installed first and pinned (2.13.0): pip then keeps it, instead of letting a
# dependency pull another build. Which build comes depends on pip's index: the default
# index's Linux wheel bundles CUDA (multi-GB); for the CPU-only build, point pip at
# PyTorch's CPU wheel index first (PIP_EXTRA_INDEX_URL or PIP_INDEX_URL; this project's
# machines get the CPU build from their pip configuration). medmnist goes in last, with
# --no-deps, because it asks for an unpinned torchvision, which ncaflow never imports; its
# real needs are ncaflow's own dependencies. Installed last and without its dependencies,
# it leaves pip nothing to check, so a fresh install prints no "medmnist requires
# torchvision" ERROR; a later `pip install` may print it: harmless (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet --no-warn-conflicts -e ".[test,workflow,dev]"
python -m pip install --quiet --no-deps "medmnist==3.0.2"
python -c "import ncaflow, medmnist, torch; print('ncaflow', ncaflow.__version__, '| torch', torch.__version__)"
