"""Test helpers shipped with the package: reference graphs, asserts, conformance suite.

The conformance suite needs pytest: import it explicitly with
``from lowrank_gnn.testing.conformance import EigenBackendConformance``.
"""
from .asserts import TOLERANCES, assert_eigenpairs_close, assert_matches_reference_vectors
from .graphs import ReferenceGraph, complete_graph, cycle_graph, disjoint_union, path_graph, reference_graphs

__all__ = [
    "TOLERANCES",
    "assert_eigenpairs_close",
    "assert_matches_reference_vectors",
    "ReferenceGraph",
    "path_graph",
    "cycle_graph",
    "complete_graph",
    "disjoint_union",
    "reference_graphs",
]
