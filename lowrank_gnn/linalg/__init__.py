"""Numerical kernels with no notion of graphs: overflow-free norms, orthonormalisation, Householder
products, tridiagonal eigensolvers, extremal eigenpairs of dense symmetric batches and of sparse symmetric
matrices of small bandwidth, block Krylov bases.

The eigen backends (:mod:`lowrank_gnn.eigen`) and the orthonormal parametrisations of
:mod:`lowrank_gnn.nn` build on these; this package imports nothing from the rest of
``lowrank_gnn`` except its argument checks.
"""
from .banded import BAND_MAX_FRACTION, BAND_METHODS, BAND_MIN_SIZE, band_pays, sparse_eigh_extremal
from .householder import (DEFAULT_BLOCK_SIZE, HouseholderOrthogonal, householder_orthonormal, householder_product,
                          householder_vectors)
from .krylov import KRYLOV_BREAKDOWN_EPS, KrylovBasis, block_krylov
from .norms import frobenius_norm
from .partial_eigh import EXTREMAL_METHODS, SUBSET_MAX_FRACTION, SUBSET_MIN_SIZE, eigh_extremal, subset_pays
from .qr import CHOLESKY_QR_ACCEPT, CHOLESKY_QR_ONE_PASS, qr_orthonormalize
from .tridiagonal import apply_reflectors, householder_tridiagonalize, solve_secular, tridiagonal_eigh

__all__ = [
    "frobenius_norm",
    "qr_orthonormalize",
    "CHOLESKY_QR_ACCEPT",
    "CHOLESKY_QR_ONE_PASS",
    "householder_product",
    "householder_orthonormal",
    "householder_vectors",
    "HouseholderOrthogonal",
    "DEFAULT_BLOCK_SIZE",
    "householder_tridiagonalize",
    "apply_reflectors",
    "tridiagonal_eigh",
    "solve_secular",
    "eigh_extremal",
    "subset_pays",
    "EXTREMAL_METHODS",
    "SUBSET_MIN_SIZE",
    "SUBSET_MAX_FRACTION",
    "sparse_eigh_extremal",
    "band_pays",
    "BAND_METHODS",
    "BAND_MIN_SIZE",
    "BAND_MAX_FRACTION",
    "block_krylov",
    "KrylovBasis",
    "KRYLOV_BREAKDOWN_EPS",
]
