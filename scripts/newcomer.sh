#!/usr/bin/env bash
# A new user's first hour, checked: clone this repository's HEAD into a temporary folder, take
# the README's "Two lines" from README.md itself, and run them there in order: line 1 (install
# + the main job), line 2 (install + the tests), then line 1 again.
#
#   bash scripts/newcomer.sh                                      # line 1 with the test config (.test/config/)
#   NEWCOMER_CONFIG=config/config.yaml bash scripts/newcomer.sh   # the real main job (~18 min on 2 cores)
#
# Line 1 runs verbatim; only a Snakemake profile named by SNAKEMAKE_PROFILE chooses its config
# file (the tiny one by default, so that CI can afford it). Line 2 then runs after line 1 has
# rewritten results/tables/ in the clone, which is what a new user's machine looks like: a test
# that read the working tree's tables instead of the committed ones failed exactly there.
# While it runs, the editable install of ncaflow points at the clone; at the end it points here
# again. The data mirror is passed on ($NCAFLOW_DATA_MIRROR, else ../shared/data).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
config=${NEWCOMER_CONFIG:-.test/config/config.yaml}

# The two commands of the README's "## Two lines" block, comments stripped.
mapfile -t lines < <(
    awk '/^## Two lines/{on=1; next} on && /^## /{exit} on && /^bash scripts\/install.sh/' \
        "$root/README.md" | sed 's/[[:space:]]*#.*$//'
)
if [[ ${#lines[@]} -ne 2 || ${lines[0]} != *snakemake* || ${lines[1]} != *pytest* ]]; then
    echo "newcomer: README.md's 'Two lines' block should hold the main-job line, then the test line" >&2
    exit 2
fi

mirror=${NCAFLOW_DATA_MIRROR:-$root/../shared/data}
if [[ -d $mirror ]]; then
    export NCAFLOW_DATA_MIRROR=$(cd "$mirror" && pwd)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ncaflow-newcomer.XXXXXX")
restore() {
    local rc=$?
    echo "newcomer: pointing the editable install back at $root" >&2
    (cd "$root" && python -m pip install --quiet --no-deps -e . >/dev/null) ||
        echo "newcomer: could not restore the editable install: run 'pip install -e $root'" >&2
    rm -rf "$work"
    exit "$rc"
}
trap restore EXIT

git clone --quiet "$root" "$work/ncaflow"
mkdir "$work/profile"
printf 'configfile:\n  - %s\n' "$config" >"$work/profile/config.yaml"

run_line() {  # $1: which line, $2: the command; the profile reaches the main job's line only
    if [[ $2 == *snakemake* ]]; then
        echo "::: newcomer, $1 (config $config): $2"
        (cd "$work/ncaflow" && SNAKEMAKE_PROFILE=$work/profile bash -euo pipefail -c "$2")
    else
        echo "::: newcomer, $1: $2"
        (cd "$work/ncaflow" && env -u SNAKEMAKE_PROFILE bash -euo pipefail -c "$2")
    fi
}
start=$SECONDS
run_line "line 1" "${lines[0]}"
echo "::: newcomer: line 1 took $((SECONDS - start)) s"
run_line "line 2" "${lines[1]}"
run_line "line 1 again" "${lines[0]}"
echo "::: newcomer: both lines passed in a fresh clone, in order ($((SECONDS - start)) s)"
