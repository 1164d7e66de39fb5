"""Every operator class passes the operator protocol's conformance suite (float64 dense references).

The row-distributed operators run on one rank: every collective is the identity and the rank
holds all rows (their cross-rank rows, products and gradients on two ranks are checked against
the single-process operators in tests/distributed/test_partitioned.py).
"""
import pytest
import torch

from lowrank_gnn.distributed import (Communicator, RowPartition, RowPartitionedOperator, partitioned_deflate_components,
                                     partitioned_normalized_adjacency)

from lowrank_gnn.operators import (DeflatedOperator, DenseOperator, GraphOperator, deflate_components,
                                   normalized_adjacency)
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.testing.conformance import OperatorCase, OperatorConformance, random_symmetric

#: three components of sizes 5, 4 and 3: repeated eigenvalue 1 of the normalized adjacency
GRAPH = disjoint_union(cycle_graph(5), path_graph(4), complete_graph(3))
SIZES = (5, 4, 3)


def pair_weights(edge_index, variant):
    """Positive weights, a function of the unordered pair (symmetric) unless ``variant="asymmetric"``."""
    low, high = edge_index.min(0).values, edge_index.max(0).values
    weight = 0.5 + ((low * 7 + high * 13) % 10).double() / 10
    if variant == "asymmetric":
        weight = weight + 0.25 * (edge_index[0] > edge_index[1]).double()
    if variant == "nan":
        weight[3] = float("nan")
    return weight


def scatter_dense(edge_index, weight, n):
    """The matrix with entries ``weight`` at ``edge_index`` (repeated pairs summed), float64."""
    return weight.new_zeros(n, n).index_put((edge_index[0], edge_index[1]), weight, accumulate=True)


def gcn_dense(edge_index, weight, n):
    r""":math:`\hat D^{-1/2} (A + I) \hat D^{-1/2}` with column-sum degrees (as ``gcn_norm``), no self-loops given."""
    a = scatter_dense(edge_index, weight, n) + torch.eye(n, dtype=weight.dtype, device=weight.device)
    inv_sqrt = a.sum(0).pow(-0.5)
    return inv_sqrt[:, None] * a * inv_sqrt[None, :]


def component_projector(edge_index, weight, n):
    """:math:`\\sum_C v_C v_C^T` with :math:`v_C = D^{1/2} 1_C / \\|D^{1/2} 1_C\\|`, D the degrees of gcn_dense."""
    a = scatter_dense(edge_index, weight, n) + torch.eye(n, dtype=weight.dtype, device=weight.device)
    root = a.sum(0).sqrt()
    labels = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES)).to(weight.device)
    indicator = (labels[:, None] == torch.arange(len(SIZES), device=weight.device)).to(weight.dtype)
    vectors = root[:, None] * indicator
    vectors = vectors / vectors.norm(dim=0)
    return vectors @ vectors.mT


def graph_edges(variant, device):
    edge_index = GRAPH.edge_index
    if variant == "asymmetric":  # a directed graph: drop one direction of an edge
        edge_index = edge_index[:, 1:]
    return edge_index.to(device)


class TestDenseOperator(OperatorConformance):
    def make_case(self, dtype, device, variant):
        matrix = random_symmetric(7, seed=5)
        if variant == "asymmetric":
            matrix[0, 1] += 1.0
        if variant == "nan":
            matrix[2, 3] = matrix[3, 2] = float("nan")
        leaf = matrix.to(dtype=dtype, device=device).clone().requires_grad_()
        return OperatorCase(DenseOperator(leaf), matrix.to(device), leaf=leaf, dense_of=lambda m: m)


class TestBatchedDenseOperator(OperatorConformance):
    has_scipy = False  # ARPACK takes one matrix

    def make_case(self, dtype, device, variant):
        matrix = random_symmetric(6, 3, seed=6)
        if variant == "asymmetric":
            matrix[1, 0, 1] += 1.0
        if variant == "nan":
            matrix[2, 1, 4] = float("nan")
        leaf = matrix.to(dtype=dtype, device=device).clone().requires_grad_()
        return OperatorCase(DenseOperator(leaf), matrix.to(device), leaf=leaf, dense_of=lambda m: m)


class TestGraphOperator(OperatorConformance):
    """Built directly, with a repeated (row, col) pair whose values are summed."""

    def make_case(self, dtype, device, variant):
        edge_index = GRAPH.edge_index
        edge_index = torch.cat([edge_index, edge_index[:, :1], edge_index[:, :1].flip(0)], dim=1).to(device)
        weight = pair_weights(edge_index.cpu(), variant).to(device)
        leaf = weight.to(dtype).clone().requires_grad_()
        op = GraphOperator(edge_index, leaf, GRAPH.num_nodes)
        return OperatorCase(op, scatter_dense(edge_index, weight, GRAPH.num_nodes), leaf=leaf,
                            dense_of=lambda w: scatter_dense(edge_index, w, GRAPH.num_nodes))


class TestNormalizedAdjacency(OperatorConformance):
    variants = ("symmetric", "asymmetric")  # NaN edge weights are refused when the operator is built

    def make_case(self, dtype, device, variant):
        edge_index = graph_edges(variant, device)
        weight = pair_weights(edge_index.cpu(), variant).to(device)
        leaf = weight.to(dtype).clone().requires_grad_()
        op = normalized_adjacency(edge_index, leaf, GRAPH.num_nodes)
        return OperatorCase(op, gcn_dense(edge_index, weight, GRAPH.num_nodes), leaf=leaf,
                            dense_of=lambda w: gcn_dense(edge_index, w, GRAPH.num_nodes))


class TestDeflatedOperator(OperatorConformance):
    def make_case(self, dtype, device, variant):
        matrix = random_symmetric(7, seed=7)
        if variant == "asymmetric":
            matrix[0, 1] += 1.0
        if variant == "nan":
            matrix[2, 3] = matrix[3, 2] = float("nan")
        basis, _ = torch.linalg.qr(torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
        values = torch.tensor([0.7, -1.3], dtype=torch.float64)
        removed = (basis * values) @ basis.mT
        leaf = matrix.to(dtype=dtype, device=device).clone().requires_grad_()
        op = DeflatedOperator(DenseOperator(leaf), basis.to(dtype=dtype, device=device),
                              values.to(dtype=dtype, device=device))
        removed = removed.to(device)
        return OperatorCase(op, matrix.to(device) - removed, leaf=leaf, dense_of=lambda m: m - removed)


class TestComponentDeflatedOperator(OperatorConformance):
    variants = ("symmetric", "asymmetric")

    def make_case(self, dtype, device, variant):
        edge_index = graph_edges(variant, device)
        weight = pair_weights(edge_index.cpu(), variant).to(device)
        leaf = weight.to(dtype).clone().requires_grad_()
        op = deflate_components(normalized_adjacency(edge_index, leaf, GRAPH.num_nodes))

        def dense_of(w):
            return gcn_dense(edge_index, w, GRAPH.num_nodes) - component_projector(edge_index, w, GRAPH.num_nodes)

        return OperatorCase(op, dense_of(weight), leaf=leaf, dense_of=dense_of)


PARTITION = RowPartition.even(GRAPH.num_nodes, 1)


class TestRowPartitionedOperator(OperatorConformance):
    has_dense = has_scipy = False  # no rank holds the whole matrix

    def make_case(self, dtype, device, variant):
        edge_index = GRAPH.edge_index
        edge_index = torch.cat([edge_index, edge_index[:, :1], edge_index[:, :1].flip(0)], dim=1).to(device)
        weight = pair_weights(edge_index.cpu(), variant).to(device)  # with a repeated pair, summed
        leaf = weight.to(dtype).clone().requires_grad_()
        op = RowPartitionedOperator(edge_index[0], edge_index[1], leaf, PARTITION, Communicator())
        return OperatorCase(op, scatter_dense(edge_index, weight, GRAPH.num_nodes), leaf=leaf,
                            dense_of=lambda w: scatter_dense(edge_index, w, GRAPH.num_nodes))


class TestPartitionedComponentDeflatedOperator(OperatorConformance):
    has_dense = has_scipy = False

    def make_case(self, dtype, device, variant):
        edge_index = graph_edges(variant, device)
        weight = pair_weights(edge_index.cpu(), variant).to(device)
        leaf = weight.to(dtype).clone().requires_grad_()
        op = partitioned_deflate_components(partitioned_normalized_adjacency(edge_index, leaf, PARTITION,
                                                                             Communicator()))

        def dense_of(w):
            return gcn_dense(edge_index, w, GRAPH.num_nodes) - component_projector(edge_index, w, GRAPH.num_nodes)

        return OperatorCase(op, dense_of(weight), leaf=leaf, dense_of=dense_of)


def test_partitioned_deflation_has_no_dense_basis_methods():
    """It shares DeflatedOperatorBase (project, matmul) with the single-process deflations, not the
    dense-basis methods of DeflatedOperator that it could not provide."""
    case = TestPartitionedComponentDeflatedOperator().make_case(torch.float64, "cpu", "symmetric")
    for name in ("basis", "values", "basis_rayleigh_quotients"):
        assert not hasattr(case.operator, name)
    with pytest.raises(ValueError, match="only this rank's rows"):
        case.operator.to_dense()
