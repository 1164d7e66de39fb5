"""Disconnected graphs (eigenvalues repeated across components, isolated nodes) against float64 dense references."""
import pytest
import torch
from torch_geometric.data import Data

from lowrank_gnn.eigen import EigenPairs
from lowrank_gnn.linalg import BAND_MIN_SIZE
from lowrank_gnn.operators import laplacian, normalized_adjacency
from lowrank_gnn.testing import assert_eigenpairs_close, complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.transforms import AddEigenpairs, LaplacianEigenvectorPE, precompute_eigenpairs

EMPTY = torch.empty(2, 0, dtype=torch.long)


def with_isolated(graph, before, after):
    """``graph`` with ``before`` isolated nodes numbered first and ``after`` last."""
    return Data(edge_index=graph.edge_index + before, num_nodes=before + graph.num_nodes + after)


def disconnected_graphs():
    """Unions of paths, cycles and complete graphs (repeated eigenvalues within and across
    components), isolated nodes, components smaller than k, weights, a self-loop, and a graph
    with a component on the band solver's path."""
    weighted = path_graph(6)
    half = torch.linspace(0.5, 2.0, weighted.edge_index.shape[1] // 2, dtype=torch.float64)
    loop = disjoint_union(path_graph(3), path_graph(2))
    return [Data(edge_index=disjoint_union(path_graph(4), cycle_graph(6), complete_graph(3)).edge_index, num_nodes=13),
            with_isolated(disjoint_union(cycle_graph(5), path_graph(2)), 2, 1),
            Data(edge_index=EMPTY, num_nodes=3),
            Data(edge_index=disjoint_union(path_graph(4), path_graph(4), path_graph(4)).edge_index, num_nodes=12),
            Data(edge_index=torch.cat([weighted.edge_index, path_graph(3).edge_index + 6], 1), num_nodes=9,
                 edge_weight=torch.cat([half, half, torch.ones(4, dtype=torch.float64)])),
            Data(edge_index=torch.cat([loop.edge_index, torch.tensor([[4], [4]])], 1), num_nodes=5),
            Data(edge_index=disjoint_union(path_graph(BAND_MIN_SIZE), cycle_graph(40)).edge_index,
                 num_nodes=BAND_MIN_SIZE + 40),
            Data(edge_index=path_graph(7).edge_index, num_nodes=7)]  # connected, in the same dataset


def dense_operator(data, operator, add_self_loops=True):
    weight = data.edge_weight if "edge_weight" in data else None
    if operator == "laplacian":
        return laplacian(data.edge_index, weight, data.num_nodes).to_dense().double()
    return normalized_adjacency(data.edge_index, weight, data.num_nodes,
                                add_self_loops=add_self_loops).to_dense().double()


CASES = [("laplacian", "smallest", True), ("laplacian", "largest", True),
         ("normalized_adjacency", "largest", True), ("normalized_adjacency", "smallest", False),
         ("normalized_adjacency", "magnitude", False), ("normalized_adjacency", "magnitude", True)]


@pytest.mark.parametrize("operator, which, add_self_loops", CASES)
@pytest.mark.parametrize("k", [2, 5])
def test_disconnected_graphs_match_a_float64_dense_reference(operator, which, add_self_loops, k, float64_default):
    graphs = disconnected_graphs()
    transform = AddEigenpairs(k=k, operator=operator, which=which, add_self_loops=add_self_loops)
    for data in precompute_eigenpairs(graphs, transform):
        m = min(k, data.num_nodes)
        assert data.eig_mask.tolist() == [[True] * m + [False] * (k - m)]
        pairs = EigenPairs(data.eigvals[0, :m], data.eigvecs[:, :m])
        assert_eigenpairs_close(pairs, dense_operator(data, operator, add_self_loops), m, which)


def test_the_positional_encoding_of_a_disconnected_graph_matches_the_reference(float64_default):
    """LaplacianEigenvectorPE skips the first pair: here one of the repeated zeros."""
    data = with_isolated(disjoint_union(path_graph(5), cycle_graph(4)), 0, 0)
    pe = precompute_eigenpairs([data], LaplacianEigenvectorPE(k=3))[0].laplacian_eigenvector_pe
    dense = dense_operator(data, "laplacian")
    full = AddEigenpairs(k=4, operator="laplacian")(data.clone())
    assert torch.equal(pe, full.eigvecs[:, 1:])
    assert_eigenpairs_close(EigenPairs(full.eigvals[0], full.eigvecs), dense, 4, "smallest")


def test_a_directed_disconnected_graph_is_named():
    directed = Data(edge_index=torch.tensor([[0, 1, 3], [1, 0, 4]]), num_nodes=6)  # 3 -> 4 has no reverse
    with pytest.raises(ValueError, match="graph 1 is not undirected"):
        precompute_eigenpairs([Data(edge_index=path_graph(3).edge_index, num_nodes=3), directed], AddEigenpairs(k=2))
