#!/usr/bin/env bash
# Train the four reference models from config/runs/ and evaluate them on their test splits.
#
#   bash scripts/reference_runs.sh OUT_DIR [DEVICE] [extra --set overrides applied to every run]
#
# Runs go in parallel (one process each); each writes OUT_DIR/<name>/ with the model,
# history.csv, tensorboard/ and metrics.json, then a summary table is printed.
# The README's result table was produced with this script (see there for the machine).
set -euo pipefail
out=${1:?usage: reference_runs.sh OUT_DIR [DEVICE] [KEY=VALUE ...]}
device=${2:-auto}
shift $(( $# >= 2 ? 2 : 1 ))
extra=()
for kv in "$@"; do extra+=(--set "$kv"); done
cd "$(dirname "$0")/.."
mkdir -p "$out"

run() {  # name config [--set ...]
    local name=$1 config=$2
    shift 2
    local start=$SECONDS
    python -m ncaflow.cli train --config "$config" --out "$out/$name" --set train.device="$device" \
        --set train.progress=false "$@" ${extra[@]+"${extra[@]}"} >"$out/$name.log" 2>&1
    python -m ncaflow.cli evaluate --model "$out/$name" --device "$(python -c "
from ncaflow.train import select_device; print(select_device('$device'))")" \
        --out "$out/$name/metrics.json" >>"$out/$name.log" 2>&1
    echo "$name: $((SECONDS - start)) s" >>"$out/$name.log"
}

run growing config/runs/growing.yaml &
run selfclass config/runs/selfclass.yaml &
run breastmnist config/runs/breastmnist.yaml &
run kvasir config/runs/kvasir.yaml &
wait

python - "$out" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
for metrics in sorted(out.glob("*/metrics.json")):
    m = json.loads(metrics.read_text())
    shown = {k: round(v, 4) for k, v in m.items() if k.startswith("test_") and isinstance(v, float)}
    print(f"{metrics.parent.name:12s} params={m['parameters']:>6d} {shown}")
PY
