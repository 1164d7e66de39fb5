"""The exact backend on deflated operators: ties the loss does not see in the dense backward, and
the sparse path on operators that are zero, or nearly zero, after deflation."""
import pytest
import torch

from lowrank_gnn.eigen import ExactBackend
from lowrank_gnn.operators import DeflatedOperator, DenseOperator, deflate_components, normalized_adjacency
from lowrank_gnn.testing import complete_graph, disjoint_union, path_graph


@pytest.mark.parametrize("uniform", [True, False])
def test_dense_backward_is_finite_where_a_kept_zero_ties_with_zeros_the_loss_ignores(uniform):
    # A path plus two isolated nodes without self-loops, deflated: eigenvalues 0.81, 0.31, then 0
    # three times (the two isolated nodes exactly, the deflated direction to rounding), so the
    # third kept pair ties with a discarded one (exactly with unit weights). The filter
    # U diag(lambda) U^T does not see vectors of eigenvalue 0: its gradient exists (the edge
    # weights never reach the isolated nodes) and equals that of k = 2, which stops above the tie.
    graph = path_graph(6)
    row, col = graph.edge_index
    _, slot = torch.unique(torch.minimum(row, col) * 6 + torch.maximum(row, col), return_inverse=True)
    pairs_of_nodes = int(slot.max()) + 1
    half = (torch.ones(pairs_of_nodes, dtype=torch.float64) if uniform
            else torch.linspace(0.6, 1.4, pairs_of_nodes, dtype=torch.float64)).requires_grad_()

    def filtered(w, k):
        op = deflate_components(normalized_adjacency(graph.edge_index, w[slot], 8, add_self_loops=False))
        pairs = ExactBackend(k=k, method="dense")(op)
        return pairs.eigenvectors @ torch.diag(pairs.eigenvalues) @ pairs.eigenvectors.T

    op = deflate_components(normalized_adjacency(graph.edge_index, half.detach()[slot], 8, add_self_loops=False))
    values = torch.linalg.eigvalsh(op.to_dense()).flip(0)
    assert values[1] > 0.1 and values[2:5].abs().max() < 1e-15 and values[5] < -0.1
    assert not uniform or values[2] == values[3] == 0                  # the kept third ties exactly
    probe = torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads = [torch.autograd.grad((filtered(half, k) * probe).sum(), half)[0] for k in (3, 2)]
    assert grads[0].isfinite().all()
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda w: filtered(w, 3), (half,))


@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude"])
@pytest.mark.parametrize("graph, k", [(complete_graph(6), 2), (complete_graph(60), 2),
                                      (disjoint_union(*[complete_graph(20)] * 5), 12)], ids=["K6", "K60", "5xK20"])
def test_sparse_path_on_a_deflated_operator_that_is_zero_to_rounding(graph, k, which):
    # a clique with self-loops is J / n: deflating its one vector leaves rounding, which ARPACK's
    # start vector may meet as an exact zero product ("starting vector is zero", K6) or not (K60,
    # 5 x K20), where the search for missed copies must not take a found pair again
    weight = torch.ones(graph.edge_index.shape[1], dtype=torch.float64)
    op = deflate_components(normalized_adjacency(graph.edge_index, weight, graph.num_nodes))
    pairs = ExactBackend(k, which=which, method="sparse")(op)
    dense = op.to_dense()
    assert pairs.eigenvalues.abs().max() < 1e-14
    torch.testing.assert_close(pairs.eigenvectors.T @ pairs.eigenvectors, torch.eye(k, dtype=torch.float64))
    assert (dense @ pairs.eigenvectors).abs().max() < 1e-14


@pytest.mark.parametrize("which", ["largest", "magnitude"])
def test_sparse_path_on_an_operator_of_rank_k(which):
    # J / 4 has one eigenvalue 1 and maps the rest of the space to 0, where the search's start
    # vector lies (ARPACK would stop: "starting vector is zero")
    graph = complete_graph(4)
    op = normalized_adjacency(graph.edge_index, torch.ones(12, dtype=torch.float64), num_nodes=4)
    pairs = ExactBackend(1, which=which, method="sparse")(op)
    torch.testing.assert_close(pairs.eigenvalues, torch.ones(1, dtype=torch.float64))


@pytest.mark.parametrize("size", [1e-9, 1e-6, 1e-2])
def test_sparse_path_on_a_nearly_fully_deflated_operator_matches_dense(size):
    # A = v v^T + size w w^T with v deflated: the norm's closed form cancels (to 0 at size 1e-9 for
    # most bases), and a zero test on that norm would return zeros; the eigenpair (size, w) must come back
    generator = torch.Generator().manual_seed(2)
    q = torch.linalg.qr(torch.randn(50, 2, dtype=torch.float64, generator=generator)).Q
    matrix = q[:, :1] @ q[:, :1].T + size * q[:, 1:] @ q[:, 1:].T
    op = DeflatedOperator(DenseOperator(matrix), q[:, :1].clone(), torch.ones(1, dtype=torch.float64))
    true = torch.linalg.matrix_norm(op.to_dense())
    assert 0.5 * true < op.frobenius_norm() < 1.5 * true
    pairs = ExactBackend(1, method="sparse")(op)
    torch.testing.assert_close(pairs.eigenvalues, torch.tensor([size], dtype=torch.float64), rtol=1e-6, atol=1e-15)
    assert abs(float(pairs.eigenvectors[:, 0] @ q[:, 1])) > 1 - 1e-6   # sign-invariant
