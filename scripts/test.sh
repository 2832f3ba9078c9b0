#!/usr/bin/env bash
# Set up, lint, type-check, and run the whole test suite: fast tests and the slow real-model ones.
# Converted test models are cached in build/ inside this clone.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check npu_engine tests
.venv/bin/ruff format --check npu_engine tests
.venv/bin/mypy
.venv/bin/pytest -m "slow or not slow" "$@"
