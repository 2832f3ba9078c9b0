#!/usr/bin/env bash
# Create .venv and install npu-engine with its conversion, bench and developer extras. Safe to re-run:
# it does nothing when pyproject.toml has not changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=".venv/.npu-engine-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch==2.13.0 is pinned in the [convert] extra: the CPU build. An unpinned torch would pull
    # several GB of CUDA packages.
    .venv/bin/python -m pip install --quiet -e ".[convert,bench,dev]"
    # optimum-intel declares torchvision, and pip takes the registry's, built for CUDA torch: it
    # stays, as a plain `pip install` leaves it, and the converter hides it (npu_engine/torch_stack.py).
    rm -f .venv/.npu-engine-installed-*
    touch "$stamp"
fi
