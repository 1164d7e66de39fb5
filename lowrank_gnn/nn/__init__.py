"""Layers that consume eigenpairs inside PyG models."""
from .aux_loss import total_aux_loss
from .conv import LowRankGCNConv, low_rank_propagate
from .svd_linear import SVDLinear
from .whitening import ZCAWhitening

__all__ = ["LowRankGCNConv", "SVDLinear", "ZCAWhitening", "low_rank_propagate", "total_aux_loss"]
