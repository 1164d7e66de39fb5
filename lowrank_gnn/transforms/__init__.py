"""PyG transforms that precompute eigenpairs onto ``Data`` objects (fixed graphs), one graph or a whole dataset."""
from .add_eigenpairs import AddEigenpairs
from .laplacian_pe import LaplacianEigenvectorPE
from .precompute import precompute_eigenpairs

__all__ = ["AddEigenpairs", "LaplacianEigenvectorPE", "precompute_eigenpairs"]
