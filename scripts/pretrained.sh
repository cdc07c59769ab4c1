#!/usr/bin/env bash
# Fetch the pretrained weights of the default config with DVC and make Snakemake
# treat them as up to date, so that the next `snakemake` trains nothing and only
# regenerates tables, figures, animations and C headers.
#
#   bash scripts/pretrained.sh [extra snakemake arguments, e.g. --cores 4]
#
# 1. dvc pull results/models.dvc   weights, histories and metrics, checked against their MD5s
# 2. snakemake datasets           the data, through the workflow's own rules (mirror or download)
# 3. snakemake --touch              DVC restores files with new timestamps; mark the pulled
#                                   models and metrics as newer than the data they came from
set -euo pipefail
cd "$(dirname "$0")/.."

# --force: results/models becomes exactly the pretrained set (local changes there are replaced)
dvc pull --force results/models.dvc
# DVC checks what it downloads (verify = true) but not its local cache: check the
# weights against the SHA-256 that each model.json records
if ! dvc status results/models.dvc | grep -q "up to date" || ! ncaflow check results/models; then
    dvc status results/models.dvc >&2
    echo "pretrained.sh: the pulled models do not match their checksums (a damaged file)." >&2
    echo "Remove them and the local DVC cache (rm -rf results/models .dvc/cache), then run this script again." >&2
    exit 1
fi

snakemake --cores all "$@" datasets
mapfile -t metrics < <(find results/models -name metrics.json | sort)
if [ "${#metrics[@]}" -eq 0 ]; then
    echo "pretrained.sh: no metrics.json under results/models after the pull" >&2
    exit 1
fi
snakemake --cores 1 "$@" --touch "${metrics[@]}" >/dev/null
echo "pretrained.sh: ${#metrics[@]} pretrained models are up to date; run: snakemake --cores all"
