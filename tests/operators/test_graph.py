import math

import pytest
import torch
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import get_laplacian, to_dense_adj

from lowrank_gnn.eigen import ExactBackend
from lowrank_gnn.operators import (ComponentDeflatedOperator, DeflatedOperator, DenseOperator, GraphOperator,
                                   component_eigenvectors, connected_components, deflate_components, laplacian,
                                   normalized_adjacency, orthonormality_tolerance)
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph


def dense(edge_index, weight, n):
    return to_dense_adj(edge_index, edge_attr=weight, max_num_nodes=n)[0]


GRAPH = disjoint_union(cycle_graph(5), path_graph(4), complete_graph(3))
ROW, COL = GRAPH.edge_index
WEIGHT = 0.5 + ((ROW * COL) % 7 + ROW + COL).float() / 10  # symmetric in (row, col)


@pytest.mark.parametrize("add_self_loops", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_normalized_adjacency_matches_gcn_norm(add_self_loops, weighted):
    weight = WEIGHT if weighted else None
    op = normalized_adjacency(GRAPH.edge_index, weight, GRAPH.num_nodes, add_self_loops=add_self_loops)
    index, value = gcn_norm(GRAPH.edge_index, weight, GRAPH.num_nodes, add_self_loops=add_self_loops)
    assert torch.allclose(op.to_dense(), dense(index, value, GRAPH.num_nodes), atol=1e-6)
    assert op.symmetric and op.shape == (12, 12)


@pytest.mark.parametrize("normalization", [None, "sym", "rw"])
def test_laplacian_matches_get_laplacian(normalization):
    op = laplacian(GRAPH.edge_index, WEIGHT, GRAPH.num_nodes, normalization=normalization)
    index, value = get_laplacian(GRAPH.edge_index, WEIGHT, normalization, num_nodes=GRAPH.num_nodes)
    assert torch.allclose(op.to_dense(), dense(index, value, GRAPH.num_nodes), atol=1e-6)
    assert op.symmetric == (normalization != "rw")


def test_laplacian_spectrum_matches_closed_form():
    op = laplacian(GRAPH.edge_index, num_nodes=GRAPH.num_nodes, normalization=None)
    values = torch.linalg.eigvalsh(op.to_dense().double())
    assert torch.allclose(values, GRAPH.laplacian_eigenvalues, atol=1e-6)


def test_isolated_nodes_give_zeros_not_nan():
    edge_index = torch.tensor([[0, 1], [1, 0]])
    op = normalized_adjacency(edge_index, num_nodes=4, add_self_loops=False)
    matrix = op.to_dense()
    assert torch.isfinite(matrix).all() and matrix[2:].abs().sum() == 0
    out = op.matmul(torch.ones(4, 3))
    assert torch.isfinite(out).all() and out[2:].abs().sum() == 0


def test_matmul_and_to_dense_agree_and_are_differentiable():
    weight = WEIGHT.double().requires_grad_()
    x = torch.randn(GRAPH.num_nodes, 3, dtype=torch.float64, requires_grad=True)

    def via_matmul(w, x):
        return normalized_adjacency(GRAPH.edge_index, w, GRAPH.num_nodes).matmul(x)

    def via_dense(w, x):
        return normalized_adjacency(GRAPH.edge_index, w, GRAPH.num_nodes).to_dense() @ x

    assert torch.allclose(via_matmul(weight, x), via_dense(weight, x))
    assert torch.autograd.gradcheck(via_matmul, (weight, x))
    vector = torch.randn(GRAPH.num_nodes, dtype=torch.float64)
    assert torch.allclose(normalized_adjacency(GRAPH.edge_index, weight, GRAPH.num_nodes).matmul(vector),
                          via_dense(weight, vector.unsqueeze(-1)).squeeze(-1))


def test_matmul_gradient_on_directed_pattern_uses_the_transpose():
    edge_index = torch.tensor([[0, 0, 1], [1, 2, 2]])
    weight = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda w, x: laplacian(edge_index, w, 3, normalization=None).matmul(x), (weight, x))


def test_duplicate_edges_are_summed():
    edge_index = torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0]])
    op = laplacian(edge_index, num_nodes=2, normalization=None)
    assert torch.equal(op.to_dense(), torch.tensor([[2.0, -2.0], [-2.0, 2.0]]))


def test_directed_graph_is_not_symmetric():
    op = normalized_adjacency(torch.tensor([[0, 1], [1, 2]]), num_nodes=3)
    assert not op.symmetric


def test_operator_follows_input_dtype():
    op = normalized_adjacency(GRAPH.edge_index, WEIGHT.double(), GRAPH.num_nodes)
    assert op.dtype == torch.float64 and op.to_dense().dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_operator_stays_on_the_input_device():
    op = normalized_adjacency(GRAPH.edge_index.cuda(), WEIGHT.cuda(), GRAPH.num_nodes)
    assert op.device.type == "cuda" and op.matmul(torch.ones(12, 2, device="cuda")).device.type == "cuda"


def test_components_and_their_eigenvectors():
    op = normalized_adjacency(GRAPH.edge_index, WEIGHT, GRAPH.num_nodes)
    count, labels = connected_components(op)
    assert count == 3 and labels.tolist() == [0] * 5 + [1] * 4 + [2] * 3
    basis = component_eigenvectors(labels, op.degree)
    assert torch.allclose(basis.T @ basis, torch.eye(3), atol=1e-6)
    assert torch.allclose(op.matmul(basis), basis, atol=1e-6)  # eigenvalue 1


def test_deflation_removes_exactly_the_eigenvalue_one_block():
    op = normalized_adjacency(GRAPH.edge_index, WEIGHT.double(), GRAPH.num_nodes)
    deflated = deflate_components(op)
    assert isinstance(deflated, DeflatedOperator)
    full = torch.linalg.eigvalsh(op.to_dense())
    rest = torch.linalg.eigvalsh(deflated.to_dense())
    # three eigenvalues 1 become three zeros; the rest of the spectrum is unchanged
    expected = torch.cat([full[:-3], torch.zeros(3, dtype=torch.float64)]).sort().values
    assert torch.allclose(rest, expected, atol=1e-10)
    x = torch.randn(GRAPH.num_nodes, 2, dtype=torch.float64)
    assert torch.allclose(deflated.matmul(x), deflated.to_dense() @ x)
    assert torch.allclose(torch.as_tensor(deflated.to_scipy() @ x.numpy()), deflated.to_dense() @ x)


@pytest.mark.parametrize("eigenvalue", [-2.0, 0.5])
def test_deflation_can_move_the_block_to_a_chosen_eigenvalue(eigenvalue):
    op = normalized_adjacency(GRAPH.edge_index, WEIGHT.double(), GRAPH.num_nodes)
    moved = torch.linalg.eigvalsh(deflate_components(op, eigenvalue=eigenvalue).to_dense())
    full = torch.linalg.eigvalsh(op.to_dense())
    expected = torch.cat([full[:-3], torch.full((3,), eigenvalue, dtype=torch.float64)]).sort().values
    assert torch.allclose(moved, expected, atol=1e-10)


def test_deflation_skips_zero_degree_nodes_without_self_loops():
    op = normalized_adjacency(torch.tensor([[0, 1], [1, 0]]), num_nodes=3, add_self_loops=False)
    assert deflate_components(op).basis.shape == (3, 1)


def test_deflation_needs_a_normalized_adjacency():
    with pytest.raises(ValueError, match="built by normalized_adjacency"):
        deflate_components(laplacian(GRAPH.edge_index, num_nodes=GRAPH.num_nodes))


@pytest.mark.parametrize("build", [normalized_adjacency, laplacian])
@pytest.mark.parametrize("edge_index, kwargs, error, match", [
    (torch.tensor([[0, 5], [5, 0]]), {"num_nodes": 3}, ValueError, r"\[0, num_nodes\) = \[0, 3\)"),
    (torch.tensor([[0, -1], [1, 0]]), {"num_nodes": 3}, ValueError, "got min -1"),
    (torch.tensor([0, 1]), {}, ValueError, r"shape \(2, num_edges\)"),
    (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), {}, TypeError, "integer dtype"),
    (torch.empty(2, 0, dtype=torch.long), {}, ValueError, "graph is empty"),
    (torch.tensor([[0, 1], [1, 0]]), {"edge_weight": torch.tensor([1.0, float("nan")])}, ValueError, "NaN or Inf"),
    (torch.tensor([[0, 1], [1, 0]]), {"edge_weight": torch.tensor([1.0, -1.0])}, ValueError, "non-negative"),
    (torch.tensor([[0, 1], [1, 0]]), {"edge_weight": torch.tensor([1.0])}, ValueError, r"shape \(num_edges,\)"),
    (torch.tensor([[0, 1], [1, 0]]), {"edge_weight": torch.tensor([1, 1])}, TypeError, "floating-point"),
])
def test_bad_graph_input(build, edge_index, kwargs, error, match):
    with pytest.raises(error, match=match):
        build(edge_index, **kwargs)


def test_graph_without_edges_is_the_identity_with_self_loops():
    op = normalized_adjacency(torch.empty(2, 0, dtype=torch.long), num_nodes=3)
    assert torch.equal(op.to_dense(), torch.eye(3))


def test_unknown_laplacian_normalization():
    with pytest.raises(ValueError, match="normalization must be one of 'sym', 'rw', 'None'"):
        laplacian(GRAPH.edge_index, normalization="random_walk")


# --- new values on a known pattern ------------------------------------------------------------

def test_with_values_matches_a_fresh_operator_and_shares_the_structure():
    edge_index = torch.tensor([[0, 1, 1, 2, 0, 2, 0], [1, 0, 2, 1, 1, 0, 2]])  # (0, 1) twice: summed
    op = GraphOperator(edge_index, torch.ones(7, dtype=torch.float64), 3)
    value = torch.tensor([0.5, 1.5, 2.0, 2.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    new = op.with_values(value)
    fresh = GraphOperator(edge_index, value, 3)
    assert torch.equal(new.to_dense(), fresh.to_dense()) and new.row is op.row and new.crow is op.crow
    x = torch.randn(3, 2, dtype=torch.float64)
    assert torch.equal(new.matmul(x), fresh.matmul(x))
    assert new.symmetric and fresh.symmetric  # (0, 1) = 0.5 + 1.0 = (1, 0)


def test_with_values_bad_input():
    entries = GRAPH.edge_index.shape[1]
    op = GraphOperator(GRAPH.edge_index, torch.ones(entries), GRAPH.num_nodes)
    with pytest.raises(ValueError, match=rf"value must have shape \(num_entries,\) = \({entries},\)"):
        op.with_values(torch.ones(entries + 1))
    with pytest.raises(TypeError, match="value must have a floating-point dtype"):
        op.with_values(torch.ones(entries, dtype=torch.long))


def test_symmetry_check_catches_a_change_of_any_single_entry():
    """The value check compares each off-diagonal pair once (the entry above the diagonal with its mirror):
    perturbing any one stored entry, above or below the diagonal, is caught; diagonal entries never break symmetry."""
    first = normalized_adjacency(GRAPH.edge_index, WEIGHT.double(), GRAPH.num_nodes)
    assert first.symmetric
    for entry in range(first.nnz):
        value = first.value.detach().clone()
        value[entry] += 0.25
        changed = GraphOperator(torch.stack([first.row, first.col]), value, GRAPH.num_nodes)
        assert changed.symmetric == bool(first.row[entry] == first.col[entry]), entry
    loops = GraphOperator(torch.arange(3).repeat(2, 1), torch.tensor([1.0, -2.0, 3.0]), 3)  # diagonal only
    assert loops.symmetric


def test_cached_checks_follow_in_place_edits_of_the_values():
    """Symmetry and the norm are computed once per operator, and again after its values change in place
    (or are replaced): a stale answer is never returned; NaN is caught through the shared norm pass."""
    op = normalized_adjacency(GRAPH.edge_index, WEIGHT.double(), GRAPH.num_nodes)
    assert op.symmetric
    norm = op.frobenius_norm()
    assert torch.equal(norm, torch.linalg.vector_norm(op.value.detach()))
    upper = int(torch.nonzero(op.row < op.col)[0, 0])
    with torch.no_grad():
        op.value[upper] += 0.25                           # one entry above the diagonal: no longer symmetric
    assert not op.symmetric
    assert op.frobenius_norm() > norm
    with torch.no_grad():
        op.value[upper] -= 0.25
    assert op.symmetric and torch.allclose(op.frobenius_norm(), norm)
    op.check_finite()
    op.value = op.value.detach().clone()
    op.value[upper] = float("nan")                        # a new tensor, edited before any check ran on it
    with pytest.raises(ValueError, match="NaN or Inf"):
        op.check_finite()
    assert not op.symmetric


def test_connected_components_leave_a_float64_operator_with_zero_entries_intact():
    """Regression: to_scipy() shared memory with a CPU float64 operator, and the
    eliminate_zeros() of the component search compacted the operator's own arrays."""
    weight = WEIGHT.double().clone()
    weight[(ROW == 0) & (COL == 1)] = 0.0
    weight[(ROW == 1) & (COL == 0)] = 0.0
    op = normalized_adjacency(GRAPH.edge_index, weight, GRAPH.num_nodes)
    value, col, crow = op.value.clone(), op.col.clone(), op.crow.clone()
    count, _ = connected_components(op)
    assert count == 3  # cycle 0-1-2-3-4-0 minus the edge 0-1 is still connected
    assert torch.equal(op.value, value) and torch.equal(op.col, col) and torch.equal(op.crow, crow)
    assert op.symmetric


def test_dense_operator_checks_share_one_magnitude_pass_and_symmetrise_only_when_needed():
    from lowrank_gnn.operators import DenseOperator

    exact = torch.randn(3, 5, 5, dtype=torch.float64)
    exact = (exact + exact.mT) / 2
    op = DenseOperator(exact)
    assert op.symmetric and op.symmetrized() is exact                    # exactly symmetric: no copy
    assert torch.equal(op.largest_magnitude(), exact.abs().amax())
    nearly = exact.clone()
    nearly[0, 0, 1] += 1e-15
    op = DenseOperator(nearly)
    assert op.symmetric and torch.equal(op.symmetrized(), (nearly + nearly.mT) / 2)
    assert torch.equal(DenseOperator(exact.requires_grad_()).symmetrized(), exact)   # a copy: keeps the gradient rule
    huge = torch.full((4, 4), 3e38)                                       # finite, but its sum overflows float32
    DenseOperator(huge).check_finite()
    bad = huge.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf \(first at entry \(2, 1\)\)"):
        DenseOperator(bad).check_finite()


def test_dense_operator_asymmetry_pass_proves_finite_and_exactly_symmetric_or_takes_the_exact_checks():
    """``max |A - A^T| = 0`` (one pass) proves both checks; every other outcome takes the exact path."""
    from lowrank_gnn.operators import DenseOperator

    exact = torch.randn(4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    exact = (exact + exact.mT) / 2
    exact[1, 2, 3], exact[1, 3, 2] = -0.0, 0.0                 # equal, though their bits differ
    op = DenseOperator(exact)
    op.check_finite()                                           # the asymmetry pass alone...
    assert op._largest_magnitude is None                        # ...decides: no magnitude pass
    assert op.symmetric and op.symmetrized() is exact
    assert DenseOperator(exact).symmetrized() is not exact      # not yet checked: symmetrised
    checked = DenseOperator(exact)
    checked.check_finite()                                      # batched_eigh checks only finiteness, then symmetrises
    assert checked.symmetrized() is exact
    for value, where in ((math.inf, (2, 2)), (-math.inf, (0, 5)), (math.nan, (4, 4)), (math.nan, (1, 0))):
        bad = exact[0].clone()
        bad[where] = value
        if where[0] != where[1]:
            bad[where[::-1]] = value                            # symmetric non-finite pair: inf - inf is NaN
        with pytest.raises(ValueError, match=rf"NaN or Inf \(first at entry \({min(where)}, {max(where)}\)\)"):
            DenseOperator(bad).check_finite()
        lower = exact[0].clone()
        lower[where] = value                                    # one entry only
        with pytest.raises(ValueError, match="NaN or Inf"):
            DenseOperator(lower).check_finite()
    overflow = torch.zeros(3, 3)
    overflow[0, 1], overflow[1, 0] = 3e38, -3e38                # finite, but a_01 - a_10 overflows to inf
    op = DenseOperator(overflow)
    op.check_finite()
    assert not op.symmetric
    rounding = exact.clone()
    rounding[3, 0, 4] += 1e-15                                  # within the tolerance: symmetric, not exactly
    op = DenseOperator(rounding)
    op.check_finite()
    assert op.symmetric and torch.equal(op.symmetrized(), (rounding + rounding.mT) / 2)
    assert op._largest_magnitude is not None                    # the tolerance needed the magnitude
    asymmetric = exact.clone()
    asymmetric[0, 0, 1] += 1.0
    assert not DenseOperator(asymmetric).symmetric
    empty = DenseOperator(torch.zeros(0, 3, 3))
    empty.check_finite()
    assert empty.symmetric


def test_dense_operator_symmetrized_column_major_is_a_transpose_view_only_when_bits_agree():
    """``column_major=True`` gives the same entries stored column by column: A^T (a view) of a matrix
    equal to its transpose bit for bit, else the transpose of the computed symmetric part."""
    from lowrank_gnn.operators import DenseOperator

    exact = torch.randn(3, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    exact = (exact + exact.mT) / 2
    op = DenseOperator(exact)
    op.check_finite()
    view = op.symmetrized(column_major=True)
    assert view.stride(-2) == 1 and view.data_ptr() == exact.data_ptr() and torch.equal(view, exact)
    assert op.symmetrized() is exact                                       # the default layout is untouched
    assert DenseOperator(exact.mT).symmetrized(column_major=True).stride(-2) == 1   # already column-major
    zeros = exact.clone()
    zeros[1, 2, 3], zeros[1, 3, 2] = -0.0, 0.0                             # equal values, different bits
    op = DenseOperator(zeros)
    op.check_finite()
    assert op.symmetric and op.symmetrized(column_major=True) is zeros    # its transpose would read -0.0 as 0.0
    nearly = exact.clone()
    nearly[0, 0, 1] += 1e-15                                               # symmetric within the tolerance
    op = DenseOperator(nearly)
    assert op.symmetric
    part = op.symmetrized(column_major=True)
    assert part.stride(-2) == 1 and torch.equal(part, (nearly + nearly.mT) / 2)
    assert torch.equal(part.view(torch.int64), part.mT.view(torch.int64))  # the computed part: bit for bit
    graded = DenseOperator(exact.clone().requires_grad_())
    part = graded.symmetrized(column_major=True)
    part.sum().backward()
    assert part.stride(-2) == 1 and torch.equal(graded.matrix.grad, torch.ones_like(exact))


def test_dense_operator_checks_follow_in_place_edits_and_replacements():
    """A cached 'finite and symmetric' belongs to the matrix it was computed on, at its version."""
    op = DenseOperator(torch.eye(4, dtype=torch.float64))
    assert op.symmetric
    op.check_finite()
    assert op.symmetrized() is op.matrix          # exactly symmetric: no copy
    op.matrix[0, 1] = 3.0                          # in place: the version counter moves
    assert not op.symmetric
    assert op.symmetrized() is not op.matrix
    op.matrix[0, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        op.check_finite()
    op.matrix = torch.eye(4, dtype=torch.float64)  # a new tensor
    assert op.symmetric
    op.check_finite()


def test_dense_operator_matmul_checks_x_as_the_graph_operator_does():
    matrix = torch.eye(6, dtype=torch.float64) * 2
    op, graph = DenseOperator(matrix), normalized_adjacency(cycle_graph(6).edge_index)
    for operator in (op, graph):
        with pytest.raises(ValueError, match=r"x must have shape \(n,\).* with n=6 \(got x.shape=\(5, 2\)\)"):
            operator.matmul(torch.randn(5, 2))
        with pytest.raises(TypeError, match=r"x must have a floating-point dtype.* x.float\(\)"):
            operator.matmul(torch.ones(6, 2, dtype=torch.long))
    out = op.matmul(torch.ones(6, 2))                          # cast to the operator's dtype, as GraphOperator
    assert out.dtype == torch.float64 and torch.equal(out, torch.full((6, 2), 2.0, dtype=torch.float64))
    assert op.matmul(torch.ones(3, 6, 1)).shape == (3, 6, 1)   # a batch of blocks broadcasts, as with @
    batched = DenseOperator(matrix.expand(2, 6, 6))
    with pytest.raises(ValueError, match=r"batch \(3,\) does not broadcast against the operator's batch \(2,\)"):
        batched.matmul(torch.ones(3, 6, 1))


def test_deflated_operator_refuses_a_basis_of_another_dtype_and_wraps_a_tensor_base():
    matrix = torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64))
    basis = torch.eye(6, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"basis has dtype torch.float32 .* pass basis.to\(torch.float64\)"):
        DeflatedOperator(DenseOperator(matrix), basis.float(), torch.ones(2, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"values has dtype torch.float32"):
        DeflatedOperator(DenseOperator(matrix), basis, torch.ones(2))
    deflated = DeflatedOperator(matrix, basis, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert isinstance(deflated.base, DenseOperator)
    assert torch.equal(deflated.matmul(torch.ones(6, 1)).squeeze(-1), torch.tensor([0.0, 0, 3, 4, 5, 6]).double())


@pytest.mark.parametrize("labels, degree, error, match", [
    (torch.zeros(4), torch.ones(4), TypeError, "labels must have an integer dtype"),
    (torch.zeros(4, dtype=torch.long), torch.ones(3), ValueError, r"labels.shape=\(4,\), degree.shape=\(3,\)"),
    (torch.tensor([0, -1, 0, 0]), torch.ones(4), ValueError, r"labels entries must lie in \[0, n\)"),
    (torch.zeros(4, dtype=torch.long), -torch.ones(4), ValueError, "degree must be non-negative"),
    (torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long), TypeError, "degree must have a floating"),
    (torch.zeros(4, dtype=torch.long), torch.tensor([1.0, float("nan"), 1, 1]), ValueError, "degree contains NaN"),
])
def test_component_eigenvectors_checks_labels_and_degrees(labels, degree, error, match):
    with pytest.raises(error, match=match):
        component_eigenvectors(labels, degree)


def test_component_eigenvectors_without_any_positive_degree_is_an_empty_basis():
    assert component_eigenvectors(torch.tensor([0, 1, 2]), torch.zeros(3)).shape == (3, 0)   # isolated nodes
    op = deflate_components(normalized_adjacency(torch.empty(2, 0, dtype=torch.long), num_nodes=3,
                                                 add_self_loops=False))
    assert op.num_components == 0 and op.basis.shape == (3, 0)


def test_connected_components_of_a_dense_matrix_and_a_clear_error_otherwise():
    graph = disjoint_union(path_graph(3), path_graph(2), path_graph(1))
    sparse = normalized_adjacency(graph.edge_index, num_nodes=graph.num_nodes)
    count, labels = connected_components(sparse)
    for dense in (sparse.to_dense(), DenseOperator(sparse.to_dense())):
        dense_count, dense_labels = connected_components(dense)
        assert dense_count == count == 3 and torch.equal(dense_labels, labels)
    with pytest.raises(ValueError, match=r"one graph: a dense operator of shape \(n, n\)"):
        connected_components(sparse.to_dense().expand(2, 6, 6))
    with pytest.raises(TypeError, match=r"connected_components takes a GraphOperator .* \(got list\)"):
        connected_components([[1.0]])


@pytest.mark.parametrize("eigenvalue", ["x", float("nan"), float("inf"), None, True])
def test_deflate_components_refuses_an_eigenvalue_that_is_not_a_finite_number(eigenvalue):
    op = normalized_adjacency(cycle_graph(6).edge_index)
    with pytest.raises(ValueError, match=r"eigenvalue must be a finite real number"):
        deflate_components(op, eigenvalue=eigenvalue)


def test_deflate_components_takes_a_normalized_adjacency_only():
    with pytest.raises(TypeError, match=r"GraphOperator of normalized_adjacency \(got DenseOperator\)"):
        deflate_components(DenseOperator(torch.eye(3)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_deflated_operator_refuses_a_basis_that_is_not_orthonormal(dtype):
    # with this random basis the closed-form norm, which assumes orthonormal columns, gives 0 (true 6.3)
    op = normalized_adjacency(cycle_graph(8).edge_index, torch.ones(16, dtype=dtype), 8)
    basis = torch.randn(8, 2, dtype=dtype, generator=torch.Generator().manual_seed(0))
    values = torch.tensor([1.0, 0.5], dtype=dtype)
    with pytest.raises(ValueError, match=r"basis: the vectors are not orthonormal .* torch.linalg.qr\(basis\).Q"):
        DeflatedOperator(op, basis, values)
    q = torch.linalg.qr(basis).Q
    tolerance = orthonormality_tolerance(8, dtype)
    assert tolerance == 100 * math.sqrt(8) * torch.finfo(dtype).eps
    DeflatedOperator(op, q * (1 + tolerance / 4), values)           # |V^T V - I| about tolerance / 2: accepted
    with pytest.raises(ValueError, match=r"not orthonormal"):
        DeflatedOperator(op, q * (1 + tolerance), values)           # about 2 tolerance: refused
    with pytest.raises(ValueError, match=r"basis contains NaN or Inf \(first at index \(0, 1\)"):
        DeflatedOperator(op, q.index_fill(1, torch.tensor([1]), float("nan")), values)
    deflated = DeflatedOperator(op, q, values)
    dense = deflated.to_dense().double()
    torch.testing.assert_close(deflated.frobenius_norm().double(), torch.linalg.matrix_norm(dense),
                               rtol=1e-5, atol=0)


def test_deflated_operator_check_finite_covers_values():
    op = normalized_adjacency(cycle_graph(8).edge_index, num_nodes=8)
    basis = torch.linalg.qr(torch.randn(8, 2, generator=torch.Generator().manual_seed(0))).Q
    deflated = DeflatedOperator(op, basis, torch.tensor([float("nan"), 0.5]))
    with pytest.raises(ValueError, match=r"values contains NaN or Inf \(first at index \(0,\)"):
        deflated.check_finite()
    for method in ("dense", "sparse"):   # refused by name, not LAPACK's "failed to converge" or ARPACK's zeros
        with pytest.raises(ValueError, match=r"values contains NaN"):
            ExactBackend(3, method=method)(deflated)
    components = deflate_components(op)
    with pytest.raises(ValueError, match=r"value must be finite \(got value=inf\)"):
        ComponentDeflatedOperator(op, components.entries, components.labels, 1, value=math.inf).check_finite()


def test_component_deflated_operator_refuses_entries_without_unit_norm():
    graph = disjoint_union(path_graph(5), cycle_graph(4))
    op = normalized_adjacency(graph.edge_index, num_nodes=9)
    deflated = deflate_components(op)                                 # unit norms to rounding: accepted
    assert deflated.num_components == 2
    scaled = deflated.entries * torch.where(deflated.labels == 1, 1.5, 1.0)
    with pytest.raises(ValueError, match=r"entries: the vectors are not orthonormal .* unit norm"):
        ComponentDeflatedOperator(op, scaled, deflated.labels, 2)
    with pytest.raises(ValueError, match=r"entries contains NaN"):
        ComponentDeflatedOperator(op, deflated.entries.index_fill(0, torch.tensor([3]), math.nan), deflated.labels, 2)


def test_deflated_frobenius_norm_does_not_cancel_to_zero():
    # A = V diag(mu) V^T + E with a tiny E: the closed form cancels (to 0 in 123 of 200 seeds
    # at ||E|| = 1e-9); the estimate from products with the operator is within 50%
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        q = torch.linalg.qr(torch.randn(50, 3, dtype=torch.float64, generator=generator)).Q
        matrix = (q[:, :2] * torch.tensor([1.0, 0.7], dtype=torch.float64)) @ q[:, :2].T + 1e-9 * q[:, 2:] @ q[:, 2:].T
        deflated = DeflatedOperator(matrix, q[:, :2].clone(), torch.tensor([1.0, 0.7], dtype=torch.float64))
        true = torch.linalg.matrix_norm(deflated.to_dense())
        assert 0.5 * true < deflated.frobenius_norm() < 1.5 * true
