"""Every operator class passes the operator protocol's conformance suite (float64 dense references).

The row-distributed operators run on one rank: every collective is the identity and the rank
holds all rows (their cross-rank rows, products and gradients on two ranks are checked against
the single-process operators in tests/distributed/test_partitioned.py).
"""
import pytest
import torch

from lowrank_gnn.distributed import (Communicator, RowPartition, RowPartitionedOperator, partitioned_deflate_components,
                                     partitioned_normalized_adjacency)

from lowrank_gnn.operators import (CovarianceOperator, DeflatedOperator, DenseOperator, GraphOperator,
                                   deflate_components, normalized_adjacency)
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.testing.conformance import OperatorCase, OperatorConformance, random_symmetric

#: three components of sizes 5, 4 and 3: repeated eigenvalue 1 of the normalized adjacency
GRAPH = disjoint_union(cycle_graph(5), path_graph(4), complete_graph(3))
SIZES = (5, 4, 3)
N = GRAPH.num_nodes


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


def weighted_case(edge_index, variant, dtype, device, build, reference):
    """The operator ``build(w)`` on the pair weights ``w`` of ``edge_index``, differentiable in them,
    with its float64 ``reference(w)``."""
    weight = pair_weights(edge_index.cpu(), variant).to(device)
    leaf = weight.to(dtype).clone().requires_grad_()
    return OperatorCase(build(leaf), reference(weight), leaf=leaf, dense_of=reference)


def matrix_case(matrix, variant, dtype, device, build, reference=lambda m: m):
    """The operator ``build(M)`` on a dense ``matrix`` made non-symmetric or NaN by ``variant``,
    differentiable in it, with its float64 ``reference(M)``."""
    matrix = matrix.clone()
    entry = (0,) * (matrix.dim() - 2)
    if variant == "asymmetric":
        matrix[(*entry, 0, 1)] += 1.0
    if variant == "nan":
        matrix[(*entry, 2, 3)] = matrix[(*entry, 3, 2)] = float("nan")
    leaf = matrix.to(dtype=dtype, device=device).clone().requires_grad_()
    return OperatorCase(build(leaf), reference(matrix.to(device)), leaf=leaf, dense_of=reference)


def with_repeated_pair(edge_index, device):
    """``edge_index`` with its first undirected edge stored twice (both directions): summed values."""
    return torch.cat([edge_index, edge_index[:, :1], edge_index[:, :1].flip(0)], dim=1).to(device)


def deflated_reference(edge_index):
    def reference(weight):
        return gcn_dense(edge_index, weight, N) - component_projector(edge_index, weight, N)
    return reference


def graph_edges(variant, device):
    edge_index = GRAPH.edge_index
    if variant == "asymmetric":  # a directed graph: drop one direction of an edge
        edge_index = edge_index[:, 1:]
    return edge_index.to(device)


class TestDenseOperator(OperatorConformance):
    def make_case(self, dtype, device, variant):
        return matrix_case(random_symmetric(7, seed=5), variant, dtype, device, DenseOperator)


class TestBatchedDenseOperator(OperatorConformance):
    has_scipy = False  # ARPACK takes one matrix

    def make_case(self, dtype, device, variant):
        return matrix_case(random_symmetric(6, 3, seed=6), variant, dtype, device, DenseOperator)


def covariance_reference(samples):
    """``torch.cov`` of each batch entry's rows (samples), float64: independent of the operator."""
    flat = samples.reshape(-1, *samples.shape[-2:])
    return torch.stack([torch.cov(entry.mT) for entry in flat]).reshape(*samples.shape[:-2], *samples.shape[-1:] * 2)


def samples_case(shape, variant, dtype, device, seed):
    """A :class:`CovarianceOperator` of Gaussian samples (``variant="nan"``: one NaN sample), differentiable
    in them. It is symmetric by construction, so there is no ``"asymmetric"`` variant."""
    samples = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if variant == "nan":
        samples[(0,) * (len(shape) - 2) + (2, 3)] = float("nan")
    leaf = samples.to(dtype=dtype, device=device).clone().requires_grad_()
    return OperatorCase(CovarianceOperator(leaf), covariance_reference(samples.to(device)), leaf=leaf,
                        dense_of=covariance_reference)


class TestCovarianceOperator(OperatorConformance):
    variants = ("symmetric", "nan")

    def make_case(self, dtype, device, variant):
        return samples_case((12, 7), variant, dtype, device, seed=7)


class TestBatchedCovarianceOperator(OperatorConformance):
    variants = ("symmetric", "nan")
    has_scipy = False  # ARPACK takes one matrix

    def make_case(self, dtype, device, variant):
        return samples_case((3, 10, 6), variant, dtype, device, seed=8)


class TestGraphOperator(OperatorConformance):
    """Built directly, with a repeated (row, col) pair whose values are summed."""

    def make_case(self, dtype, device, variant):
        edge_index = with_repeated_pair(GRAPH.edge_index, device)
        return weighted_case(edge_index, variant, dtype, device, lambda w: GraphOperator(edge_index, w, N),
                             lambda w: scatter_dense(edge_index, w, N))


class TestNormalizedAdjacency(OperatorConformance):
    variants = ("symmetric", "asymmetric")  # NaN edge weights are refused when the operator is built

    def make_case(self, dtype, device, variant):
        edge_index = graph_edges(variant, device)
        return weighted_case(edge_index, variant, dtype, device, lambda w: normalized_adjacency(edge_index, w, N),
                             lambda w: gcn_dense(edge_index, w, N))


class TestDeflatedOperator(OperatorConformance):
    def make_case(self, dtype, device, variant):
        basis, _ = torch.linalg.qr(torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
        values = torch.tensor([0.7, -1.3], dtype=torch.float64)
        removed = ((basis * values) @ basis.mT).to(device)

        def build(matrix):
            return DeflatedOperator(DenseOperator(matrix), basis.to(dtype=dtype, device=device),
                                    values.to(dtype=dtype, device=device))

        return matrix_case(random_symmetric(7, seed=7), variant, dtype, device, build, lambda m: m - removed)


class TestComponentDeflatedOperator(OperatorConformance):
    variants = ("symmetric", "asymmetric")

    def make_case(self, dtype, device, variant):
        edge_index = graph_edges(variant, device)
        return weighted_case(edge_index, variant, dtype, device,
                             lambda w: deflate_components(normalized_adjacency(edge_index, w, N)),
                             deflated_reference(edge_index))


PARTITION = RowPartition.even(N, 1)


class TestRowPartitionedOperator(OperatorConformance):
    has_dense = has_scipy = False  # no rank holds the whole matrix

    def make_case(self, dtype, device, variant):
        edge_index = with_repeated_pair(GRAPH.edge_index, device)
        return weighted_case(edge_index, variant, dtype, device,
                             lambda w: RowPartitionedOperator(edge_index[0], edge_index[1], w, PARTITION,
                                                              Communicator()),
                             lambda w: scatter_dense(edge_index, w, N))


class TestPartitionedComponentDeflatedOperator(OperatorConformance):
    has_dense = has_scipy = False

    def make_case(self, dtype, device, variant):
        edge_index = graph_edges(variant, device)
        return weighted_case(edge_index, variant, dtype, device,
                             lambda w: partitioned_deflate_components(
                                 partitioned_normalized_adjacency(edge_index, w, PARTITION, Communicator())),
                             deflated_reference(edge_index))


def test_partitioned_deflation_has_no_dense_basis_methods():
    """It shares DeflatedOperatorBase (project, matmul) with the single-process deflations, not the
    dense-basis methods of DeflatedOperator that it could not provide."""
    case = TestPartitionedComponentDeflatedOperator().make_case(torch.float64, "cpu", "symmetric")
    for name in ("basis", "values", "basis_rayleigh_quotients"):
        assert not hasattr(case.operator, name)
    with pytest.raises(ValueError, match="only this rank's rows"):
        case.operator.to_dense()


@pytest.mark.parametrize("scale", [1e25, 1e-25])
def test_row_partitioned_frobenius_norm_holds_float32_extremes(scale):
    edge_index = GRAPH.edge_index
    weight = torch.rand(edge_index.shape[1], generator=torch.Generator().manual_seed(0)) + 0.5
    op = RowPartitionedOperator(edge_index[0], edge_index[1], (weight * scale).float(), PARTITION, Communicator())
    expected = (weight.double() * scale).norm()
    assert torch.isfinite(op.frobenius_norm()) and op.frobenius_norm() > 0
    assert torch.allclose(op.frobenius_norm().double(), expected, rtol=1e-5, atol=0)
