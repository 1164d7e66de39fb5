"""Eigen backends: one interface, several published solvers."""
from .amortized import ORTHOGONALIZATIONS, AmortizedBackend, AmortizedBasis, qr_orthonormalize
from .base import WHICH, EigenBackend, EigenPairs, canonical_signs, order_indices, select_eigenpairs
from .diagnostics import EigenDiagnostics, operator_frobenius_norm, relative_residual, subspace_angle
from .exact import ExactBackend
from .registry import BACKENDS, resolve_eigen_backend

__all__ = [
    "WHICH",
    "EigenPairs",
    "EigenBackend",
    "ExactBackend",
    "AmortizedBackend",
    "AmortizedBasis",
    "ORTHOGONALIZATIONS",
    "qr_orthonormalize",
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
