"""Layers that consume eigenpairs inside PyG models."""
from .aux_loss import total_aux_loss
from .conv import LowRankGCNConv, low_rank_propagate
from .nuclear_norm import AmortizedSVD, NuclearNormRegularizer, SingularTriplets

__all__ = ["LowRankGCNConv", "low_rank_propagate", "total_aux_loss", "AmortizedSVD", "SingularTriplets",
           "NuclearNormRegularizer"]
