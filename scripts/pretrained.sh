#!/usr/bin/env bash
# Fetch the pretrained weights with DVC and make Snakemake treat them as up to date, so
# that the next `snakemake` trains nothing and only regenerates tables, figures,
# animations and C headers.
#
#   bash scripts/pretrained.sh [extra snakemake arguments, e.g. --cores 4]
#       the default config's models
#   bash scripts/pretrained.sh reference [extra snakemake arguments]
#       the README's reference results (config/paper.yaml: the reference runs, both
#       BreastMNIST sweeps, their re-evaluations and the ensembles); then
#       snakemake --cores all reference --configfile config/paper.yaml
#
# 1. dvc pull results/models.dvc   weights, histories and metrics, checked against their MD5s
# 2. snakemake datasets            the data, through the workflow's own rules (mirror or download)
# 3. snakemake --touch             DVC restores files with new timestamps; mark the pulled
#                                  models and metrics as newer than the data they came from
set -euo pipefail
cd "$(dirname "$0")/.."

config=() datasets=datasets metrics=evaluations
if [ "${1:-}" = reference ]; then
    shift
    config=(--configfile config/paper.yaml) datasets=reference_datasets
    metrics=reference_evaluations
fi

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
if [ -z "$(find results/models -name metrics.json -print -quit)" ]; then
    echo "pretrained.sh: no metrics.json under results/models after the pull" >&2
    exit 1
fi

snakemake --cores all "$@" "$datasets" ${config[@]+"${config[@]}"}
# every metrics file of the config's tasks (and, for `reference`, its evaluations and
# ensembles): the jobs that made them, and the trainings before them, are marked done
snakemake "$metrics" --cores 1 "$@" --touch --quiet all ${config[@]+"${config[@]}"} >/dev/null
next="snakemake --cores all"
[ "$metrics" = evaluations ] || next="$next reference ${config[*]}"
echo "pretrained.sh: the pulled models and metrics are up to date; run: $next"
