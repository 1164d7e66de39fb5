import pytest
import torch

from lowrank_gnn.eigen import ExactBackend, resolve_eigen_backend
from lowrank_gnn.operators import deflate_components, laplacian, normalized_adjacency
from lowrank_gnn.testing import assert_eigenpairs_close, complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.testing.conformance import EigenBackendConformance


class TestExactDense(EigenBackendConformance):
    backend_name = "exact"
    backend_kwargs = {"method": "dense"}


class TestExactSparse(EigenBackendConformance):
    backend_name = "exact"
    backend_kwargs = {"method": "sparse"}
    supports_batch = False
    supports_full_spectrum = False


def test_auto_picks_dense_below_threshold_and_sparse_above():
    backend = ExactBackend(k=2, dense_max_nodes=10)
    small = normalized_adjacency(path_graph(10).edge_index)
    large = normalized_adjacency(path_graph(11).edge_index)
    assert backend.uses_dense_path(small) and not backend.uses_dense_path(large)
    assert backend.uses_dense_path(torch.eye(50).expand(2, 50, 50))  # batches are dense


def test_sparse_path_is_reproducible_run_to_run():
    graph = disjoint_union(cycle_graph(30), path_graph(40))
    op = normalized_adjacency(graph.edge_index)
    backend = ExactBackend(k=4, method="sparse")
    first, second = backend(op), backend(op)
    assert torch.equal(first.eigenvalues, second.eigenvalues)
    assert torch.equal(first.eigenvectors, second.eigenvectors)


def test_sparse_path_eigenvalue_gradient_matches_dense():
    edge_index = path_graph(15).edge_index
    grads = []
    for method in ("dense", "sparse"):
        weight = torch.linspace(0.5, 1.5, edge_index.shape[1] // 2, dtype=torch.float64).requires_grad_()
        op = normalized_adjacency(edge_index, weight.repeat(2))  # same weight both directions
        pairs = ExactBackend(k=3, which="smallest", method=method)(op)
        (pairs.eigenvalues * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum().backward()
        grads.append(weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-8)


def test_sparse_path_refuses_eigenvector_gradient():
    weight = torch.ones(path_graph(15).edge_index.shape[1], requires_grad=True)
    op = normalized_adjacency(path_graph(15).edge_index, weight)
    pairs = ExactBackend(k=3, method="sparse")(op)
    with pytest.raises(RuntimeError, match="differentiates eigenvalues only"):
        pairs.eigenvectors.pow(3).sum().backward()


def test_dense_path_gradcheck_on_gauge_invariant_output():
    torch.manual_seed(0)
    edge_index = path_graph(6).edge_index
    weight = (torch.rand(edge_index.shape[1], dtype=torch.float64) + 0.5).requires_grad_()

    def projector(w):
        w = (w + w.view(2, -1).flip(0).reshape(-1)) / 2  # tie both directions: stays symmetric
        pairs = ExactBackend(k=2, method="dense")(normalized_adjacency(edge_index, w))
        return pairs.eigenvectors @ torch.diag(pairs.eigenvalues) @ pairs.eigenvectors.T

    assert torch.autograd.gradcheck(projector, (weight,))


def test_sparse_path_rejects_batches_and_full_spectrum():
    with pytest.raises(ValueError, match="unbatched"):
        ExactBackend(k=2, method="sparse")(torch.eye(4).expand(2, 4, 4).contiguous())
    with pytest.raises(ValueError, match="k < n"):
        ExactBackend(k=4, method="sparse")(torch.eye(4))


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "lanczos"}, "method must be one of"),
    ({"tol": -1.0}, "tol must be >= 0"),
    ({"dense_max_nodes": 0}, "dense_max_nodes must be a positive integer"),
])
def test_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExactBackend(k=2, **kwargs)


def test_registry_lists_valid_names_and_passes_instances_through():
    with pytest.raises(ValueError, match="one of 'exact'"):
        resolve_eigen_backend("arpack", k=2)
    backend = ExactBackend(k=2)
    assert resolve_eigen_backend(backend) is backend
    with pytest.raises(ValueError, match="cannot be applied"):
        resolve_eigen_backend(backend, k=3)
    assert repr(resolve_eigen_backend("exact", k=16)) == "ExactBackend(k=16, which='largest', method='auto')"


def test_dense_backward_ignores_ties_among_discarded_eigenvalues():
    # Deflated normalized adjacency of a disconnected graph: the discarded spectrum holds
    # exactly repeated eigenvalues (zeros from the deflation and from the clique), the two
    # kept ones are simple: only gaps to the kept pairs may enter the backward.
    graph = disjoint_union(path_graph(5), path_graph(7), complete_graph(4))
    row, col = graph.edge_index
    _, slot = torch.unique(torch.minimum(row, col) * graph.num_nodes + torch.maximum(row, col),
                           return_inverse=True)
    half = torch.linspace(0.6, 1.4, int(slot.max()) + 1, dtype=torch.float64).requires_grad_()

    def operator(w):
        return deflate_components(normalized_adjacency(graph.edge_index, w[slot], graph.num_nodes))

    values = torch.linalg.eigvalsh(operator(half.detach()).to_dense())
    assert (values[:-2].diff() == 0).any() or (values[:-2].diff().abs() < 1e-12).any()
    assert values[-1] - values[-2] > 1e-3 and values[-2] - values[-3] > 1e-3

    def projector(w):
        pairs = ExactBackend(k=2, method="dense")(operator(w))
        return pairs.eigenvectors @ torch.diag(pairs.eigenvalues) @ pairs.eigenvectors.T

    assert torch.autograd.gradcheck(projector, (half,))


@pytest.mark.parametrize("n", [40, 200])        # a full eigh sliced; LAPACK's subset solver (k <= n / 10)
@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_dense_path_without_gradient_keeps_k_pairs_equal_to_the_differentiable_path(n, which):
    generator = torch.Generator().manual_seed(n)
    matrix = torch.randn(2, n, n, dtype=torch.float64, generator=generator)
    matrix = matrix + matrix.mT
    backend = ExactBackend(k=16, which=which, method="dense")
    fast = backend(matrix)                                   # no gradient needed: only the k pairs
    full = backend(matrix.clone().requires_grad_())          # the differentiable full eigh
    assert fast.eigenvectors.shape == (2, n, 16) and not fast.eigenvalues.requires_grad
    assert torch.allclose(fast.eigenvalues, full.eigenvalues.detach(), atol=1e-10)
    # same vectors, same canonical signs (the spectrum of a random matrix is simple)
    assert torch.allclose(fast.eigenvectors, full.eigenvectors.detach(), atol=1e-8)
    reference = torch.linalg.eigvalsh(matrix)
    expected = reference.flip(-1)[..., :16] if which == "largest" else reference[..., :16]
    assert torch.allclose(fast.eigenvalues, expected, atol=1e-10)


@pytest.mark.parametrize("graph", [disjoint_union(*[path_graph(50)] * 30),
                                   disjoint_union(*[cycle_graph(40)] * 5, path_graph(300)), cycle_graph(400)],
                         ids=["30 paths", "cycles and a path", "one cycle"])
@pytest.mark.parametrize("operator, which", [(laplacian, "smallest"), (normalized_adjacency, "largest"),
                                             (laplacian, "magnitude")])
def test_sparse_path_finds_every_copy_of_repeated_eigenvalues(graph, operator, which):
    """ARPACK's single-vector Lanczos misses copies of repeated eigenvalues (one per component for a
    disconnected graph's extreme eigenvalue, pairs on a cycle); the search in the complement of the
    found pairs adds them: the k values and eigenspaces equal the float64 dense reference's."""
    weight = torch.ones(graph.edge_index.shape[1], dtype=torch.float64)
    op = operator(graph.edge_index, weight, num_nodes=graph.num_nodes)
    assert op.dtype == torch.float64
    pairs = ExactBackend(12, which, method="sparse")(op)
    assert_eigenpairs_close(pairs, op.to_dense(), 12, which, rtol=1e-10)



def _dense_backends():
    return [("exact", {"method": "dense"}), ("batched_dc", {"method": "dc"}), ("batched_dc", {"method": "lapack"}),
            ("stable", {"forward_method": "dense"})]


@pytest.mark.parametrize("name, options", _dense_backends())
def test_a_second_derivative_through_the_eigen_backward_is_a_clear_error(name, options):
    base = torch.randn(2, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    pairs = resolve_eigen_backend(name, k=3, **options)((base + base.mT) / 2)
    (grad,) = torch.autograd.grad(pairs.eigenvectors.pow(3).sum(), base, create_graph=True)
    with pytest.raises(RuntimeError, match=r"backward (\(backends 'exact' and 'batched_dc'\) )?is first-order only, "
                                           r"and a second derivative through it was requested.*torch.linalg.eigh"):
        grad.sum().backward()


@pytest.mark.parametrize("name, options", _dense_backends())
def test_create_graph_runs_where_the_second_pass_does_not_reach_the_eigen_backward(name, options):
    """A gradient penalty on other weights: create_graph=True, the eigen gradient itself exact (vs a plain
    first-order backward) and its second pass through the other weights only."""
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(7, 7, dtype=torch.float64, generator=generator, requires_grad=True)
    other = torch.randn(3, dtype=torch.float64, generator=generator, requires_grad=True)
    backend = resolve_eigen_backend(name, k=3, **options)

    def loss():
        return backend((base + base.mT) / 2).eigenvectors.pow(3).sum() + other.pow(3).sum()
    expected = torch.autograd.grad(loss(), base)[0]
    grad_base, grad_other = torch.autograd.grad(loss(), (base, other), create_graph=True)
    assert torch.allclose(grad_base, expected, atol=1e-12)
    (second,) = torch.autograd.grad(grad_other.sum(), other)
    assert torch.allclose(second, 6 * other.detach(), atol=1e-12)


@pytest.mark.parametrize("graph, operator", [(disjoint_union(*[complete_graph(2)] * 100), laplacian),
                                             (disjoint_union(*[complete_graph(3)] * 200), normalized_adjacency)],
                         ids=["100 edges, Laplacian", "200 triangles, normalized adjacency"])
@pytest.mark.parametrize("k", [1, 4])
def test_sparse_path_on_operators_with_two_distinct_eigenvalues(graph, operator, k):
    """Both operators have eigenvalues 0 and one other value only; ARPACK returned the other one for the
    smallest, exact 0: the shift by sqrt(eps) ||A||_F moves it off 0."""
    weight = torch.ones(graph.edge_index.shape[1], dtype=torch.float64)
    op = operator(graph.edge_index, weight, num_nodes=graph.num_nodes)
    pairs = ExactBackend(k, "smallest", method="sparse")(op)
    assert_eigenpairs_close(pairs, op.to_dense(), k, "smallest", rtol=1e-10)


def test_sparse_path_reports_an_arpack_failure_as_its_own_error(monkeypatch):
    """ARPACK's error 3 (no shifts could be applied) arises on operators that are zero to rounding, at
    random from ARPACK's own restart seed; the library's error says what to do."""
    import scipy.sparse.linalg
    from scipy.sparse.linalg import ArpackError

    def failing(*args, **kwargs):
        raise ArpackError(3)

    monkeypatch.setattr(scipy.sparse.linalg, "eigsh", failing)
    op = normalized_adjacency(path_graph(30).edge_index)
    with pytest.raises(RuntimeError, match="ARPACK failed on this operator.*use method='dense'"):
        ExactBackend(2, method="sparse")(op)
