import pytest
import torch

from lowrank_gnn.eigen import WHICH, ExactBackend, StableBackend, resolve_eigen_backend
from lowrank_gnn.eigen.stable import SHIFT_MARGIN, _damped_inverse
from lowrank_gnn.operators import normalized_adjacency
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.testing.conformance import EigenBackendConformance, random_symmetric

#: float64 relative agreement with torch.linalg.eigh's gradient on separated spectra
#: (``taylor``, every gap above ``relative_gap * max|lambda|``): rounding only.
GRAD_RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}


class TestStableDense(EigenBackendConformance):
    backend_name = "stable"
    backend_kwargs = {"forward_method": "dense"}


class TestStableSparse(EigenBackendConformance):
    backend_name = "stable"
    backend_kwargs = {"forward_method": "sparse"}
    supports_batch = False
    supports_full_spectrum = False


def undirected(graph):
    """``edge_index`` as ``[edges, reversed edges]``, so one weight per edge is ``torch.cat([p, p])``.

    Weights shared by both directions keep the operator symmetric under every perturbation, which
    is what an eigensolver's gradient is defined for.
    """
    upper = graph.edge_index[:, graph.edge_index[0] < graph.edge_index[1]]
    return torch.cat([upper, upper.flip(0)], dim=1)


def random_graph(n, p, seed):
    """Erdos-Renyi G(n, p), both directions of every edge, from a seeded generator."""
    upper = torch.triu(torch.rand(n, n, generator=torch.Generator().manual_seed(seed)) < p, diagonal=1)
    upper = upper.nonzero().t()
    return torch.cat([upper, upper.flip(0)], dim=1)


def varied_weights(edge_index, dtype=torch.float64):
    """Weights in [0.5, 1.5] that depend on the unordered endpoint pair, so the operator stays symmetric."""
    row, col = edge_index
    return 0.5 + ((row * col + row + col) % 11).to(dtype) / 10


def spectral_loss(pairs, mix):
    """A generic loss of eigenvalues and (sign-fixed) eigenvectors."""
    vectors = pairs.eigenvectors
    return ((vectors * pairs.eigenvalues.unsqueeze(-2)) @ vectors.mT * mix).sum() + vectors.pow(3).sum()


def matrix_gradient(backend, matrix, mix):
    matrix = matrix.detach().clone().requires_grad_()
    spectral_loss(backend(matrix), mix).backward()
    return matrix.grad


# gradients on separated spectra -----------------------------------------------------------
@pytest.mark.parametrize("forward_method", ["dense", "sparse"])
@pytest.mark.parametrize("which", WHICH)
def test_gradcheck_gauge_invariant_output(which, forward_method):
    edge_index = undirected(path_graph(7))
    weight = (torch.rand(edge_index.shape[1] // 2, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64) + 0.5).requires_grad_()
    backend = StableBackend(3, which, forward_method=forward_method)

    def spectral_filter(w):
        pairs = backend(normalized_adjacency(edge_index, torch.cat([w, w])))
        vectors = pairs.eigenvectors
        return (vectors * torch.exp(pairs.eigenvalues)) @ vectors.T   # U diag(f(l)) U^T

    assert torch.autograd.gradcheck(spectral_filter, (weight,), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("which", WHICH)
@pytest.mark.parametrize("k", [1, 5, 20])
def test_taylor_matches_eigh_gradient_on_separated_spectra(k, which, dtype):
    matrix = random_symmetric(20, dtype=dtype, seed=5)   # gaps >= 0.5, max|l| ~ 10: above 1e-3 max|l|
    mix = torch.randn(20, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    reference = matrix_gradient(ExactBackend(k, which, method="dense"), matrix, mix)
    stable = matrix_gradient(StableBackend(k, which, forward_method="dense"), matrix, mix)
    assert (stable - reference).norm() <= GRAD_RTOL[dtype] * reference.norm()


def projector_loss(pairs, mix):
    """Constant on every repeated eigenvalue inside the k pairs: the one kind of loss whose gradient there
    the bounded backward gets exactly (see the module docstring: within a repeated eigenvalue the
    divided difference f'(lambda) of a non-constant f is dropped)."""
    vectors = pairs.eigenvectors
    return (vectors @ vectors.mT * mix).sum() + pairs.eigenvalues.sum()


@pytest.mark.parametrize("method", ["taylor", "power_iteration"])
@pytest.mark.parametrize("which", WHICH)
@pytest.mark.parametrize("case", ["path16-varied-weights", "cycle7+path9-unit-weights"])
def test_sparse_path_equals_dense_path_when_the_krylov_space_spans_the_complement(case, which, method):
    if case == "path16-varied-weights":   # simple spectrum: any loss
        graph, k, loss = path_graph(16), 4, spectral_loss
    else:   # eigenvalue 1 twice, the cycle's pairs: k is chosen so no pair is cut (spectrum checked)
        graph, loss = disjoint_union(cycle_graph(7), path_graph(9)), projector_loss
        k = 3 if which == "smallest" else 2   # smallest: -0.306, -0.267 (x2); largest/magnitude: 1 (x2)
    edge_index = undirected(graph)
    weight = varied_weights(edge_index[:, : edge_index.shape[1] // 2]) if loss is spectral_loss else \
        torch.ones(edge_index.shape[1] // 2, dtype=torch.float64)
    mix = torch.randn(16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    grads = []
    for forward_method in ("dense", "sparse"):
        w = weight.clone().requires_grad_()
        backend = StableBackend(k, which, method=method, forward_method=forward_method, krylov_dim=16)
        loss(backend(normalized_adjacency(edge_index, torch.cat([w, w]))), mix).backward()
        grads.append(w.grad)
    assert torch.allclose(grads[1], grads[0], rtol=0, atol=1e-9 * float(grads[0].abs().max()))


def test_sparse_path_with_a_small_krylov_space_is_close():
    """n - k = 196 complement directions, a 96-dimensional Krylov space: an approximation (measured 7e-6)."""
    edge_index = random_graph(200, 0.03, seed=0)
    weight = varied_weights(edge_index[:, : edge_index.shape[1] // 2])
    grads = []
    for forward_method in ("dense", "sparse"):
        w = weight.clone().requires_grad_()
        backend = StableBackend(4, forward_method=forward_method, krylov_dim=96)
        pairs = backend(normalized_adjacency(edge_index, torch.cat([w, w])))
        (pairs.eigenvectors * torch.arange(200.0, dtype=torch.float64)[:, None]).pow(2).sum().backward()
        grads.append(w.grad)
    assert (grads[1] - grads[0]).norm() <= 1e-4 * grads[0].norm()


@pytest.mark.parametrize("which", WHICH)
def test_sparse_path_on_a_dense_matrix_equals_dense_path(which):
    """Dense matrices are symmetrised on both paths: the same (symmetric) gradient per entry."""
    matrix = random_symmetric(24, seed=1)
    mix = torch.randn(24, 24, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    dense = matrix_gradient(StableBackend(3, which, forward_method="dense"), matrix, mix)
    sparse = matrix_gradient(StableBackend(3, which, forward_method="sparse"), matrix, mix)
    assert torch.allclose(sparse, dense, rtol=0, atol=1e-10 * float(dense.abs().max()))


def test_sparse_path_eigenvalue_gradient_equals_exact_backend():
    edge_index = path_graph(15).edge_index
    grads = []
    for backend in (ExactBackend(3, method="sparse"), StableBackend(3, forward_method="sparse")):
        w = torch.ones(edge_index.shape[1], dtype=torch.float64, requires_grad=True)
        (backend(normalized_adjacency(edge_index, w)).eigenvalues * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
        grads.append(w.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-10)


def test_batch_gradient_equals_each_matrix():
    batch = random_symmetric(8, 3, seed=6)
    mix = torch.randn(8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    backend = StableBackend(3, "magnitude")
    together = matrix_gradient(backend, batch, mix)
    for b in range(3):
        assert torch.allclose(together[b], matrix_gradient(backend, batch[b], mix), atol=1e-12)


# the power-iteration gradient ---------------------------------------------------------------
def test_power_iteration_equals_autograd_through_unrolled_iterations():
    """NeurIPS 2019: the gradient of N power-iteration steps on A - cI, started at the exact eigenvector."""
    matrix = random_symmetric(10, seed=7, gap=0.1)
    values = torch.linalg.eigvalsh(matrix)
    num_iterations = 30
    shift = values.min() - SHIFT_MARGIN * values.abs().max()
    mix = torch.randn(10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    a = matrix.clone().requires_grad_()
    start = StableBackend(1)(matrix).eigenvectors[:, 0]
    v = start
    for _ in range(num_iterations):
        v = (a - shift * torch.eye(10, dtype=torch.float64)) @ v
        v = v / v.norm()
    (v * mix).sum().backward()
    unrolled = (a.grad + a.grad.T) / 2

    a = matrix.clone().requires_grad_()
    pairs = StableBackend(1, method="power_iteration", num_iterations=num_iterations)(a)
    (pairs.eigenvectors[:, 0] * mix).sum().backward()
    assert torch.allclose(a.grad, unrolled, atol=1e-10)


def test_power_iteration_converges_to_exact_gradient():
    matrix = random_symmetric(12, seed=8)
    mix = torch.randn(12, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    reference = matrix_gradient(ExactBackend(4, method="dense"), matrix, mix)
    errors = [float((matrix_gradient(StableBackend(4, method="power_iteration", num_iterations=n), matrix, mix)
                     - reference).norm() / reference.norm()) for n in (10, 100, 3000)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-10


# repeated eigenvalues ---------------------------------------------------------------------------
def block_identity(dtype):
    """diag(2 I_3, 1, -1 I_2) in a random basis: exactly repeated eigenvalues, not a graph."""
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64))
    return ((q * torch.tensor([2.0, 2, 2, 1, -1, -1], dtype=torch.float64)) @ q.T).to(dtype)


@pytest.mark.parametrize("method", ["taylor", "power_iteration"])
@pytest.mark.parametrize("forward_method", ["dense", "sparse"])
@pytest.mark.parametrize("graph", [cycle_graph(10), complete_graph(6),
                                   disjoint_union(cycle_graph(5), cycle_graph(5), path_graph(4))],
                         ids=lambda g: g.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_finite_gradient_on_repeated_eigenvalues(graph, forward_method, method, dtype):
    w = torch.ones(graph.edge_index.shape[1], dtype=dtype, requires_grad=True)
    pairs = StableBackend(4, method=method, forward_method=forward_method)(normalized_adjacency(graph.edge_index, w))
    spectral_loss(pairs, 1.0).backward()
    assert torch.isfinite(w.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_exact_is_not_finite_where_stable_is(dtype):
    """The contrast this backend exists for: three components cut by k = 2."""
    graph = disjoint_union(cycle_graph(5), cycle_graph(5), path_graph(4))
    grads = {}
    for name in ("exact", "stable"):
        w = torch.ones(graph.edge_index.shape[1], dtype=dtype, requires_grad=True)
        pairs = resolve_eigen_backend(name, k=2)(normalized_adjacency(graph.edge_index, w))
        spectral_loss(pairs, 1.0).backward()
        grads[name] = w.grad
    assert not torch.isfinite(grads["exact"]).all()
    assert torch.isfinite(grads["stable"]).all()


@pytest.mark.parametrize("k", [3, 4])
def test_gradcheck_projector_at_exactly_repeated_eigenvalue(k):
    """U U^T over whole clusters is smooth at a repeated eigenvalue; exact eigh's backward is not finite."""
    base = block_identity(torch.float64)
    backend = StableBackend(k)

    def projector(x):
        vectors = backend(base + (x + x.T) / 2).eigenvectors
        return vectors @ vectors.T

    x = torch.zeros(6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(projector, (x,), fast_mode=True)


def test_taylor_bound_and_continuity():
    s = torch.tensor(0.5, dtype=torch.float64)
    gaps = torch.tensor([0.0, 1e-300, 1e-9, 0.25, 0.5 - 1e-12, 0.5, 0.7, 3.0], dtype=torch.float64)
    phi = _damped_inverse(gaps, s, num_terms=10)
    assert torch.isfinite(phi).all() and float(phi.max()) <= 10 / 0.5
    assert torch.allclose(phi[:3], torch.full((3,), 20.0, dtype=torch.float64))   # N / s at the tie
    assert torch.allclose(phi[4:], 1 / gaps[4:])                                  # exact from s on
    assert bool((phi[1:].diff() < 0).all())                                       # decreasing in the gap


# bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"method": "svd"}, "method must be one of 'taylor', 'power_iteration'"),
    ({"degree": -1}, "degree must be a non-negative integer"),
    ({"degree": 2.5}, "degree must be a non-negative integer"),
    ({"degree": True}, "degree must be a non-negative integer"),
    ({"method": "power_iteration", "num_iterations": 0}, "num_iterations must be a positive integer"),
    ({"method": "power_iteration", "degree": 3}, "degree applies to method='taylor' only"),
    ({"num_iterations": 10}, "num_iterations applies to method='power_iteration' only"),
    ({"relative_gap": 0.0}, r"relative_gap must be a number in \(0, 1\]"),
    ({"relative_gap": 1.5}, r"relative_gap must be a number in \(0, 1\]"),
    ({"krylov_dim": 0}, "krylov_dim must be a positive integer"),
    ({"forward_method": "lanczos"}, "forward_method must be one of 'auto', 'dense', 'sparse'"),
])
def test_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StableBackend(2, **kwargs)


@pytest.mark.parametrize("matrix, match", [
    (torch.eye(3), r"needs k < n \(got k=3, n=3\); use forward_method='dense' for all eigenpairs"),
    (torch.eye(4).expand(2, 4, 4), r"needs an unbatched \(n, n\) operator .*use forward_method='dense'"),
])
def test_sparse_forward_errors_name_forward_method(matrix, match):
    with pytest.raises(ValueError, match=match):
        StableBackend(3, forward_method="sparse")(matrix)


@pytest.mark.parametrize("forward_method", ["dense", "sparse"])
def test_double_backward_raises(forward_method):
    w = torch.ones(path_graph(8).edge_index.shape[1], dtype=torch.float64, requires_grad=True)
    pairs = StableBackend(2, forward_method=forward_method)(normalized_adjacency(path_graph(8).edge_index, w))
    (grad,) = torch.autograd.grad(pairs.eigenvectors.pow(3).sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match=r"the stable eigen backend's backward is first-order only.*"
                                           r"use torch.linalg.eigh itself"):
        grad.sum().backward()


def test_no_graph_without_gradients_and_repr():
    backend = resolve_eigen_backend("stable", k=3, which="smallest", method="power_iteration")
    pairs = backend(random_symmetric(6))
    assert not pairs.eigenvalues.requires_grad and pairs.aux_loss is None
    assert repr(backend).splitlines()[:3] == [
        "StableBackend(", "  k=3, which='smallest', method='power_iteration', num_iterations=100",
        "  (exact): ExactBackend(k=3, which='smallest', method='auto')"]
