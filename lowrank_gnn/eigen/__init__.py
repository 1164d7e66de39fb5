"""Eigen backends: one interface, several published solvers."""
from .amortized import ORTHOGONALIZATIONS, AmortizedBackend, AmortizedBasis
from .base import WHICH, EigenBackend, EigenPairs, canonical_signs, order_indices, select_eigenpairs
from .batched_dc import BatchedDCBackend, batched_eigh
from .diagnostics import EigenDiagnostics, operator_frobenius_norm, relative_residual, subspace_angle
from .exact import ExactBackend
from .stable import StableBackend
from .registry import BACKENDS, resolve_eigen_backend
from .rows import LocalRows

__all__ = [
    "WHICH",
    "EigenPairs",
    "EigenBackend",
    "ExactBackend",
    "StableBackend",
    "BatchedDCBackend",
    "batched_eigh",
    "AmortizedBackend",
    "AmortizedBasis",
    "LocalRows",
    "ORTHOGONALIZATIONS",
    "EigenDiagnostics",
    "operator_frobenius_norm",
    "relative_residual",
    "subspace_angle",
    "BACKENDS",
    "resolve_eigen_backend",
    "canonical_signs",
    "order_indices",
    "select_eigenpairs",
]
