#!/usr/bin/env bash
# Put together the NCALab source tree that the benchmarks measure (peers/NCALAB_SOURCE.md):
#
#   bash benchmarks/peers/ncalab_tree.sh NCALAB_GIT_DIR NCALAB_0.5.1_WHEEL OUT_DIR
#
# NCALAB_GIT_DIR: a clone (or bare mirror) of the NCALab repository with its history;
# the wheel gives the top-level modules. OUT_DIR/ncalab is then importable with
# OUT_DIR on sys.path (setup_peers_offline.sh does that), or pip-installable with
# NCALAB_SRC=OUT_DIR bash benchmarks/setup_peers.sh.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 NCALAB_GIT_DIR NCALAB_WHEEL OUT_DIR" >&2; exit 2; }
git_dir=$1 wheel=$2 out=$3
[ -e "$out/ncalab" ] && { echo "$out/ncalab exists: remove it or pick another OUT_DIR" >&2; exit 2; }
mkdir -p "$out"
python3 - "$wheel" "$out" <<'EOF'
import sys, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("ncalab/") and name.endswith(".py"):
            z.extract(name, out)
EOF
take() {  # take COMMIT PATH... (paths under ncalab/)
    local commit=$1; shift
    for p in "$@"; do
        mkdir -p "$out/ncalab/$(dirname "$p")"
        git --git-dir="$git_dir" show "$commit:ncalab/$p" >"$out/ncalab/$p"
    done
}
take 6bf7fe67 models/basicNCA/abstractNCA.py models/basicNCA/abstractNCAhead.py \
    models/applications/growing/growingNCA.py \
    models/applications/classification/classificationNCA.py \
    models/applications/segmentation/__init__.py \
    models/applications/segmentation/binarysegmentationNCA.py models/wrappers/cascadeNCA.py
take ed2ea64a models/basicNCA/__init__.py models/basicNCA/basicNCAperception.py \
    models/basicNCA/mlpNCArule.py models/applications/classification/classificationNCAhead.py \
    models/applications/depth/depthNCA.py training/__init__.py training/traininghistory.py \
    uncertainty/uncertainty_estimator.py search/search.py
take bb39e708 models/basicNCA/abstractNCArule.py
take 75b432ac training/trainer.py
take 0c55e1a7 models/__init__.py models/applications/__init__.py \
    models/applications/classification/__init__.py models/applications/depth/__init__.py \
    models/applications/growing/__init__.py models/wrappers/__init__.py
take 9815080c visualization/__init__.py
take 0db00b34 visualization/visualization.py
take 0eb4c7f3 visualization/animation.py training/pool.py training/kfold.py
take 3fa2c652 training/earlystopping.py
for p in data/__init__.py data/growingncadataset.py; do
    take 77ee0cd3 "$p" 2>/dev/null || take 2fbe2431 "$p"
done
take fdb87c49 search/__init__.py
take fda9ac8a uncertainty/__init__.py
# the two edits of NCALAB_SOURCE.md
sed -i 's/intepret_range_parameter/interpret_range_parameter/g' \
    "$out/ncalab/models/basicNCA/abstractNCA.py"
sed -i '/from \.depth import \*/d' "$out/ncalab/visualization/__init__.py"
cat >"$out/pyproject.toml" <<'EOF'
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "ncalab"
version = "0.5.1"

[tool.setuptools.packages.find]
include = ["ncalab*"]
EOF
echo "NCALab tree in $out"
