"""Seed the data root from ../shared/datasets when it exists (offline machines, CI)."""
from pathlib import Path

import pytest

from lowrank_gnn.data import data_root, seed_data_root

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def planetoid_root() -> Path:
    """The data root with Cora and CiteSeer raw files; skips when they cannot be had."""
    seed_data_root(SHARED_DATASETS)
    root = data_root()
    if not (root / "Cora" / "raw" / "ind.cora.graph").is_file():
        pytest.skip(f"Cora raw files are neither in {root} nor in {SHARED_DATASETS}")
    return root
