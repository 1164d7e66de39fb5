"""Graph convolutions that consume eigenpairs."""
from .filters import (FILTERS, BernsteinFilter, ChebyshevFilter, MLPFilter, PolynomialFilter, SpectralFilter,
                      resolve_filter)
from .batch_spectrum import BatchSpectrum, SizeClass
from .lowrank_gcn_conv import LowRankGCNConv, low_rank_propagate
from .spectral_filter_conv import SpectralFilterConv

__all__ = [
    "LowRankGCNConv",
    "BatchSpectrum",
    "SizeClass",
    "low_rank_propagate",
    "SpectralFilterConv",
    "SpectralFilter",
    "PolynomialFilter",
    "ChebyshevFilter",
    "BernsteinFilter",
    "MLPFilter",
    "FILTERS",
    "resolve_filter",
]
