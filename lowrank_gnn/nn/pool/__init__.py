"""Graph-level pooling layers built on eigendecompositions."""
from .latent_pca_pool import LatentPCAPool

__all__ = ["LatentPCAPool"]
