"""Symmetric operators built from graphs (sparse) or tensors (dense)."""
from .base import (FROBENIUS_CANCELLATION, FROBENIUS_PROBES, ORTHONORMALITY_TOLERANCE, DeflatedOperator,
                   DeflatedOperatorBase, DenseOperator, Operator, as_operator, orthonormality_tolerance)
from .covariance import CovarianceOperator
from .graph import (ComponentDeflatedOperator, component_eigenvectors, connected_components, deflate_components,
                    laplacian, normalized_adjacency)
from .sparse import CSROperator, GraphOperator, SparsityPattern
from .structure import GraphStructure

__all__ = [
    "Operator",
    "CSROperator",
    "DeflatedOperatorBase",
    "FROBENIUS_PROBES",
    "FROBENIUS_CANCELLATION",
    "ORTHONORMALITY_TOLERANCE",
    "orthonormality_tolerance",
    "GraphOperator",
    "GraphStructure",
    "SparsityPattern",
    "DenseOperator",
    "CovarianceOperator",
    "DeflatedOperator",
    "ComponentDeflatedOperator",
    "as_operator",
    "normalized_adjacency",
    "laplacian",
    "connected_components",
    "component_eigenvectors",
    "deflate_components",
]
