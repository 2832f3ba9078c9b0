#!/usr/bin/env bash
# Create .venv and install npu-engine with its conversion, bench and developer extras. Safe to re-run:
# it does nothing when pyproject.toml has not changed since the last successful install.
# Each step says what it does and how long it took; pip's own lines are cut to the ones that say
# where it is (what it downloads, builds and installs), not its whole log.
set -euo pipefail
cd "$(dirname "$0")/.."

step() {
    local name=$1 started=$SECONDS
    shift
    echo "==> $name"
    "$@"
    echo "    done in $((SECONDS - started)) s"
}

# pip's progress, one line per package fetched or built; everything else it says (and every
# warning and error, on stderr) passes as it is.
pip_progress() {
    local status
    set +e
    .venv/bin/python -m pip install --progress-bar off "$@" |
        grep --line-buffered -E '^ *(Collecting|Building wheel|Successfully|Installing collected)' |
        sed -u -e 's/^ */    /'
    status=("${PIPESTATUS[@]}")
    set -e
    return "${status[0]}" # pip's status decides, not grep's
}

if [ ! -x .venv/bin/python ]; then
    step "creating .venv (Python $(python3 -c 'import sys; print(sys.version.split()[0])'))" python3 -m venv .venv
fi
stamp=".venv/.npu-engine-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then
    echo "==> .venv is up to date with pyproject.toml"
    exit 0
fi
step "upgrading pip" pip_progress --upgrade pip
# torch==2.13.0 is pinned in the [convert] extra: the CPU build. An unpinned torch would pull
# several GB of CUDA packages. llama-cpp-python ([bench]) is built from source the first time:
# about 5 of the first run's 6-15 minutes on 2 cores; pip's cache makes later installs quick.
step "installing npu-engine with its conversion, bench and developer extras (first time: 6-15 min, 1.9 GB)" \
    pip_progress -e ".[convert,bench,dev]"
# optimum-intel declares torchvision, and pip takes the registry's, built for CUDA torch: it
# stays, as a plain `pip install` leaves it, and the converter hides it (npu_engine/torch_stack.py).
rm -f .venv/.npu-engine-installed-*
touch "$stamp"
