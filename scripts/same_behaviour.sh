#!/usr/bin/env bash
# Show that a refactor changed no behaviour (issue 11): the router's confusion matrices,
# `npu-engine plan` on the four inventories, and the HTTP exchanges of the server tests (timings
# and other run-to-run noise normalised, see scripts/behaviour/normalise.py) are captured for
# BASE_REF and HEAD_REF, each checked out in a temporary git worktree (without HEAD_REF: this
# working tree as it is, uncommitted changes included), and diffed. Prints the diff, then a
# one-line verdict; exits 0 only when identical (1: different, 2: could not capture).
#
# Usage: scripts/same_behaviour.sh BASE_REF [HEAD_REF]
#   BASE_REF may also be a capture folder made before (e.g. /work/golden-base): it is reused as is.
#   Either may also be a source tree (another worktree, with its build/): captured as it is.
# Environment: SAME_BEHAVIOUR_OUT=DIR keeps the captures in DIR (default: a new /tmp folder, printed);
#   NPU_HEAVY_LOCK=FILE is the lock the model-loading tests run under (default /tmp/npu-heavy.lock).
# About 3.5 minutes a side on 2 cores (the server tests take 3), plus any wait for the lock.
set -euo pipefail

clone=$(cd "$(dirname "$0")/.." && pwd)
python="$clone/.venv/bin/python"
behaviour="$clone/scripts/behaviour"
lock=${NPU_HEAVY_LOCK:-/tmp/npu-heavy.lock}

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 BASE_REF [HEAD_REF]" >&2
    exit 2
fi
out=${SAME_BEHAVIOUR_OUT:-$(mktemp -d /tmp/same-behaviour.XXXXXX)}
mkdir -p "$out"
trees=()

cleanup() {
    for tree in "${trees[@]}"; do
        git -C "$clone" worktree remove --force "$tree" || echo "warning: could not remove $tree" >&2
    done
}
trap cleanup EXIT

# capture NAME [REF]: capture REF (a commit, checked out in a temporary worktree; or a source tree,
# as it is), or else this working tree.
capture() {
    local name=$1 ref=${2:-} tree=$clone started=$SECONDS
    if [[ -n $ref && -d $ref/npu_engine ]]; then  # a source tree, e.g. another worktree: as it is
        tree=$(cd "$ref" && pwd)
        if [[ ! -e $tree/build ]]; then
            echo "error: $tree has no build/ (link it to $(readlink -f "$clone/build"))" >&2
            exit 2
        fi
    elif [[ -n $ref ]]; then
        if ! git -C "$clone" rev-parse --quiet --verify "$ref^{commit}" >/dev/null; then
            echo "error: $ref is not a commit here" >&2
            exit 2
        fi
        tree="$out/$name-tree"
        if [[ -e $tree ]]; then  # left by an interrupted run
            git -C "$clone" worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
            git -C "$clone" worktree prune
        fi
        git -C "$clone" worktree add --quiet --detach "$tree" "$ref"
        trees+=("$tree")
        ln -s "$(readlink -f "$clone/build")" "$tree/build"
        ln -s "$(readlink -f "$clone/.venv")" "$tree/.venv"
    fi
    echo "$name: capturing ${ref:-the working tree} ($tree)" >&2
    rm -rf "${out:?}/$name"
    "$python" "$behaviour/capture.py" --lock "$lock" "$tree" "$out/$name" || exit 2
    echo "$name: captured in $((SECONDS - started)) s" >&2
}

if [[ -d $1 && -f $1/http.jsonl ]]; then
    base=$(cd "$1" && pwd)
    echo "base: reusing the capture in $base" >&2
else
    capture base "$1"
    base="$out/base"
fi
capture head "${2:-}"
echo "captures: $base $out/head" >&2
"$python" "$behaviour/compare.py" "$base" "$out/head"
