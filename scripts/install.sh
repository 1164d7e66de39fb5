#!/usr/bin/env bash
# Install lowrank_gnn for development (extras: test, bench, docs, dev) and seed the data root.
#
# torch is installed first and on its own: with no torch present, a bare
# `pip install torch` (or the `torch>=2.4` requirement of this package) pulls
# the newest CUDA build, gigabytes of it. TORCH_SPEC picks the build instead
# (default: the CPU wheel torch==2.13.0). An already installed torch that
# satisfies the package's requirement is kept as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if ! python -c 'import sys, torch; v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 4))' 2>/dev/null; then
    python -m pip install "$TORCH_SPEC"
fi
python -m pip install -e ".[test,bench,docs,dev]"
# Offline machines: copy the raw dataset files from ../shared/datasets (if present)
# into the project's data root. Nothing is written into the source folder.
python -m lowrank_gnn.data seed ../shared/datasets
