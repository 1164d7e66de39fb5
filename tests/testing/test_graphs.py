"""The reference graphs of lowrank_gnn.testing: valid inputs at every size, clear errors otherwise."""
import pytest
import torch

from lowrank_gnn.operators import laplacian
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph


@pytest.mark.parametrize("make, n", [(path_graph, 0), (path_graph, 1), (path_graph, 2), (complete_graph, 0),
                                     (complete_graph, 1), (complete_graph, 2), (cycle_graph, 3)])
def test_small_reference_graphs_have_a_2_by_num_edges_edge_index_and_their_spectrum(make, n):
    graph = make(n)
    assert graph.edge_index.shape[0] == 2 and graph.edge_index.dtype == torch.long
    assert graph.num_nodes == n and graph.laplacian_eigenvalues.shape == (n,)
    if n:
        dense = laplacian(graph.edge_index, num_nodes=n, normalization=None).to_dense().double()
        torch.testing.assert_close(torch.linalg.eigvalsh(dense), graph.laplacian_eigenvalues)


def test_a_union_with_edge_free_parts_keeps_their_nodes_and_spectra():
    graph = disjoint_union(path_graph(1), complete_graph(3), path_graph(1))
    assert graph.num_nodes == 5 and graph.edge_index.shape == (2, 6)
    dense = laplacian(graph.edge_index, num_nodes=5, normalization=None).to_dense().double()
    torch.testing.assert_close(torch.linalg.eigvalsh(dense), graph.laplacian_eigenvalues)


@pytest.mark.parametrize("make", [path_graph, cycle_graph, complete_graph])
def test_reference_graphs_refuse_a_negative_or_non_integer_size(make):
    with pytest.raises(ValueError, match=r"n must be at least 0 \(got n=-1\)"):
        make(-1)
    with pytest.raises(TypeError, match=r"n must be an integer \(got n=2.0"):
        make(2.0)


@pytest.mark.parametrize("n, what", [(2, "a doubled edge"), (1, "a self-loop"), (0, "no graph")])
def test_cycle_graph_needs_three_nodes_and_names_the_alternative(n, what):
    with pytest.raises(ValueError, match=rf"n >= 3 nodes \(got n={n}: it would be {what}\); use path_graph\({n}\)"):
        cycle_graph(n)


def test_disjoint_union_refuses_no_graphs_and_other_arguments():
    with pytest.raises(ValueError, match="at least one graph"):
        disjoint_union()
    with pytest.raises(TypeError, match="argument 1 is a Tensor"):
        disjoint_union(path_graph(2), torch.ones(2, 2))
