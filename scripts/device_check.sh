#!/usr/bin/env bash
# One command for an accelerator check: CUDA test cases + short CUDA benchmarks -> one JSON file.
# Usage: scripts/device_check.sh [--device cuda|cpu] [--quick] [--out FILE]   (see benchmarks/device_check.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec python benchmarks/device_check.py "$@"
