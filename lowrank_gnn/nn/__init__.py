"""Layers that consume eigenpairs inside PyG models."""
from .aux_loss import total_aux_loss
from .conv import BatchSpectrum, LowRankGCNConv, SpectralFilterConv, low_rank_propagate
from .nuclear_norm import AmortizedSVD, NuclearNormRegularizer, SingularTriplets
from .polar_tracker import PolarTracker
from .pool import LatentPCAPool
from .svd_linear import SVDLinear
from .whitening import ZCAWhitening

__all__ = ["LowRankGCNConv", "BatchSpectrum", "SpectralFilterConv", "LatentPCAPool", "SVDLinear", "ZCAWhitening",
           "AmortizedSVD", "SingularTriplets", "NuclearNormRegularizer", "PolarTracker", "low_rank_propagate",
           "total_aux_loss"]
