"""lowrank_gnn: low-rank spectral graph neural networks for PyTorch Geometric."""
__version__ = "0.1.0"
