#!/usr/bin/env bash
# Set up, lint, type-check, and run the whole test suite: fast tests and the slow real-model ones.
# Converted test models are cached in build/ inside this clone.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check npu_engine tests
.venv/bin/ruff format --check npu_engine tests
.venv/bin/mypy
# The Code Mode page's tests drive a real headless Chromium: Debian's, installed when missing
# (as root, as CI runs; anyone else is told, and those tests skip saying why).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing chromium and chromium-driver for the page's tests"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "note: chromium and chromium-driver are missing, so the page's tests skip" \
            "(sudo apt-get install chromium chromium-driver)"
    fi
fi
.venv/bin/pytest -m "slow or not slow" "$@"
