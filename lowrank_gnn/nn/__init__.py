"""Layers that consume eigenpairs inside PyG models."""
from .aux_loss import total_aux_loss
from .conv import LowRankGCNConv, SpectralFilterConv, low_rank_propagate
from .pool import LatentPCAPool
from .svd_linear import SVDLinear
from .whitening import ZCAWhitening

__all__ = ["LowRankGCNConv", "SpectralFilterConv", "LatentPCAPool", "SVDLinear", "ZCAWhitening",
           "low_rank_propagate", "total_aux_loss"]
