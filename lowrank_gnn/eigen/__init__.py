"""Eigen backends: one interface, several published solvers."""
from .base import WHICH, EigenBackend, EigenPairs, canonical_signs, order_indices, select_eigenpairs
from .batched_dc import BatchedDCBackend, batched_eigh
from .exact import ExactBackend
from .householder import HouseholderOrthogonal, householder_orthonormal, householder_product, householder_vectors
from .stable import StableBackend
from .registry import BACKENDS, resolve_eigen_backend

__all__ = [
    "WHICH",
    "EigenPairs",
    "EigenBackend",
    "ExactBackend",
    "StableBackend",
    "BatchedDCBackend",
    "batched_eigh",
    "BACKENDS",
    "resolve_eigen_backend",
    "canonical_signs",
    "order_indices",
    "select_eigenpairs",
    "householder_product",
    "householder_orthonormal",
    "householder_vectors",
    "HouseholderOrthogonal",
]
