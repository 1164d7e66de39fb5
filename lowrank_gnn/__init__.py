"""lowrank_gnn: low-rank spectral graph neural networks for PyTorch Geometric.

The main names are importable from here (``from lowrank_gnn import LowRankGCNConv``); each
is loaded from its package on first use, so ``import lowrank_gnn`` itself stays cheap.
:mod:`lowrank_gnn.distributed`, :mod:`lowrank_gnn.data` and :mod:`lowrank_gnn.testing` are
imported explicitly.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, List

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # lowrank_gnn.nn
    "LowRankGCNConv",
    "SpectralFilterConv",
    "LatentPCAPool",
    "SVDLinear",
    "ZCAWhitening",
    "AmortizedSVD",
    "NuclearNormRegularizer",
    "total_aux_loss",
    # lowrank_gnn.transforms
    "AddEigenpairs",
    "LaplacianEigenvectorPE",
    "precompute_eigenpairs",
    # lowrank_gnn.eigen
    "EigenPairs",
    "EigenBackend",
    "ExactBackend",
    "StableBackend",
    "AmortizedBackend",
    "BatchedDCBackend",
    "batched_eigh",
    "resolve_eigen_backend",
    # lowrank_gnn.operators
    "GraphStructure",
    "GraphOperator",
    "DenseOperator",
    "normalized_adjacency",
    "laplacian",
    # lowrank_gnn.linalg
    "householder_product",
    "HouseholderOrthogonal",
    "qr_orthonormalize",
]

#: Where the names above are looked up, lightest first (each package imports the ones before it).
_PACKAGES = ("lowrank_gnn.linalg", "lowrank_gnn.operators", "lowrank_gnn.eigen", "lowrank_gnn.transforms",
             "lowrank_gnn.nn")

if TYPE_CHECKING:
    from .eigen import (AmortizedBackend, BatchedDCBackend, EigenBackend, EigenPairs, ExactBackend, StableBackend,
                        batched_eigh, resolve_eigen_backend)
    from .linalg import HouseholderOrthogonal, householder_product, qr_orthonormalize
    from .nn import (AmortizedSVD, LatentPCAPool, LowRankGCNConv, NuclearNormRegularizer, SpectralFilterConv,
                     SVDLinear, ZCAWhitening, total_aux_loss)
    from .operators import DenseOperator, GraphOperator, GraphStructure, laplacian, normalized_adjacency
    from .transforms import AddEigenpairs, LaplacianEigenvectorPE, precompute_eigenpairs


def __getattr__(name: str) -> Any:
    if name in __all__:
        for package in map(importlib.import_module, _PACKAGES):
            if name in package.__all__:
                value = getattr(package, name)
                globals()[name] = value
                return value
    raise AttributeError(f"module 'lowrank_gnn' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
