"""Graph convolutions that consume eigenpairs."""
from .lowrank_gcn_conv import LowRankGCNConv, low_rank_propagate

__all__ = ["LowRankGCNConv", "low_rank_propagate"]
