"""PyG transforms that precompute eigenpairs onto ``Data`` objects (fixed graphs)."""
from .add_eigenpairs import AddEigenpairs

__all__ = ["AddEigenpairs"]
