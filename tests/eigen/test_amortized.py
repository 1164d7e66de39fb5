import warnings

import pytest
import torch

from lowrank_gnn.eigen import AmortizedBackend, ExactBackend, resolve_eigen_backend, subspace_angle
from lowrank_gnn.eigen.amortized import ORTHOGONALIZATIONS
from lowrank_gnn.linalg import qr_orthonormalize
from lowrank_gnn.operators import deflate_components, normalized_adjacency
from lowrank_gnn.testing import assert_eigenpairs_close, complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.testing.conformance import EigenBackendConformance, random_symmetric


class TestAmortizedConverged(EigenBackendConformance):
    """The suite on the converged basis: warm-started, then fit() to the tolerance.

    Convergence from a random start is tested separately below (it takes hundreds of
    L-BFGS evaluations per case, too slow to repeat over the whole suite).
    """

    backend_name = "amortized"
    backend_kwargs = {"init": "exact"}
    tolerances = {torch.float32: 1e-4, torch.float64: 1e-8}

    def solve(self, backend, op):
        tol = self.tolerances.get(getattr(op, "dtype", None))  # None for bad input: fit() rejects it
        backend.fit(op, steps=200, tol=None if tol is None else tol / 10)
        return backend(op)


class TestAmortizedHouseholderConverged(TestAmortizedConverged):
    """The same suite with U a product of Householder reflections (blocked WY form)."""

    backend_kwargs = {"init": "exact", "orthogonalization": "householder"}


class TestAmortizedRefined(EigenBackendConformance):
    """The suite on the refinement path: warm-started, then forwards with block Rayleigh-Ritz steps only."""

    backend_name = "amortized"
    backend_kwargs = {"init": "exact", "refine": 2}
    tolerances = {torch.float32: 1e-4, torch.float64: 1e-8}

    def solve(self, backend, op):
        with torch.no_grad():
            backend(op)
        return backend(op)


@pytest.mark.parametrize("loss", [
    "brockett", pytest.param("convex", marks=pytest.mark.slow), pytest.param("trace", marks=pytest.mark.slow)])
@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude"])
def test_converges_from_random_start(which, loss):
    torch.manual_seed(0)
    matrix = random_symmetric(16, dtype=torch.float64, seed=5, gap=1.0)
    backend = AmortizedBackend(k=3, which=which, loss=loss, init="random", seed=1)
    diagnostics = backend.fit(matrix, steps=3000, tol=1e-7)
    assert float(diagnostics.residual) <= 1e-7
    assert_eigenpairs_close(backend(matrix), matrix, 3, which, rtol=1e-6)


def test_registry_builds_it_with_options():
    backend = resolve_eigen_backend("amortized", k=16, which="smallest", loss="convex", eta=0.5)
    assert isinstance(backend, AmortizedBackend)
    assert ("k=16, which='smallest', loss='convex', eta=0.5, init='random', refine=0, orthogonalization='qr'"
            in repr(backend))
    assert ORTHOGONALIZATIONS == ("qr", "householder")


@pytest.mark.parametrize("kwargs, match", [
    ({"loss": "rayleigh"}, "loss must be one of 'brockett', 'convex', 'trace'"),
    ({"eta": 0.0}, "eta must be a positive number"),
    ({"eta": -1}, "eta must be a positive number"),
    ({"init": "zeros"}, "init must be one of 'random', 'exact'"),
    ({"orthogonalization": "householder_typo"}, "orthogonalization must be one of 'qr', 'householder'"),
    ({"seed": 1.5}, "seed must be an integer"),
])
def test_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AmortizedBackend(k=2, **kwargs)


def test_basis_is_sized_lazily_and_optimizer_made_before_first_forward_trains_it():
    backend = AmortizedBackend(k=2)
    assert not backend.basis.initialized and "uninitialized" in repr(backend)
    optimizer = torch.optim.Adam(backend.parameters(), lr=1e-2)
    matrix = random_symmetric(7, dtype=torch.float32, seed=0)
    pairs = backend(matrix)
    assert backend.basis.weight.shape == (7, 2)
    before = backend.basis.weight.detach().clone()
    pairs.aux_loss.backward()
    optimizer.step()
    assert not torch.equal(before, backend.basis.weight.detach())


@pytest.mark.parametrize("orthogonalization", ORTHOGONALIZATIONS)
def test_state_dict_resumes_the_same_basis(orthogonalization):
    matrix = random_symmetric(9, dtype=torch.float64, seed=2)
    trained = AmortizedBackend(k=3, orthogonalization=orthogonalization)
    trained.fit(matrix, steps=20)
    fresh = AmortizedBackend(k=3, seed=123, orthogonalization=orthogonalization).double()  # the module's dtype
    fresh.load_state_dict(trained.state_dict())
    first, second = trained(matrix), fresh(matrix)
    assert torch.equal(first.eigenvectors, second.eigenvectors)
    assert torch.equal(first.eigenvalues, second.eigenvalues)


def test_operator_size_change_is_a_clear_error_and_initialize_restarts():
    backend = AmortizedBackend(k=2)
    backend(random_symmetric(6))
    with pytest.raises(ValueError, match=r"W has shape \(6, 2\) but this operator needs \(7, 2\)"):
        backend(random_symmetric(7))
    with pytest.raises(ValueError, match=r"needs \(2, 6, 2\)"):
        backend(random_symmetric(6, 2))
    backend.initialize(random_symmetric(7))
    assert backend(random_symmetric(7)).eigenvectors.shape == (7, 2)


def test_k_larger_than_n_is_rejected_before_sizing_the_basis():
    backend = AmortizedBackend(k=5)
    with pytest.raises(ValueError, match=r"k must satisfy 1 <= k <= n=4 \(got k=5\)"):
        backend(random_symmetric(4))
    assert not backend.basis.initialized


def test_nan_in_operator_is_rejected():
    matrix = random_symmetric(5)
    matrix[1, 2] = matrix[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        AmortizedBackend(k=2)(matrix)


def test_nan_in_basis_is_a_clear_error():
    backend = AmortizedBackend(k=2)
    matrix = random_symmetric(5)
    backend(matrix)
    with torch.no_grad():
        backend.basis.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="W contains NaN or Inf.*initialize"):
        backend(matrix)


def test_rank_deficient_basis_is_repaired_and_converges():
    matrix = random_symmetric(10, dtype=torch.float64, seed=3, gap=1.0)
    backend = AmortizedBackend(k=3)
    backend(matrix)
    with torch.no_grad():
        backend.basis.weight[:, 2] = 2 * backend.basis.weight[:, 0]  # dependent column: QR breaks down
    with pytest.warns(RuntimeWarning, match="lost rank"):
        pairs = backend(matrix)
    vectors = pairs.eigenvectors.detach()
    assert torch.allclose(vectors.T @ vectors, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert bool(torch.isfinite(torch.autograd.grad(pairs.aux_loss, backend.basis.weight)[0]).all())
    backend.fit(matrix, steps=3000, tol=1e-8)
    assert_eigenpairs_close(backend(matrix), matrix, 3, "largest", rtol=1e-7)


def test_eigen_loss_updates_only_the_basis_and_outputs_reach_both():
    edge_index = path_graph(8).edge_index
    half = torch.rand(edge_index.shape[1] // 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weight = (half + 0.5).requires_grad_()
    backend = AmortizedBackend(k=2)
    # reference graphs list every edge forwards, then the same edges backwards
    pairs = backend(normalized_adjacency(edge_index, torch.cat([weight, weight])))
    aux_weight, aux_basis = torch.autograd.grad(pairs.aux_loss, (weight, backend.basis.weight), allow_unused=True,
                                                retain_graph=True)
    assert aux_weight is None and aux_basis.abs().sum() > 0
    out = (pairs.eigenvectors * pairs.eigenvalues).square().sum()
    out_weight, out_basis = torch.autograd.grad(out, (weight, backend.basis.weight))
    assert out_weight.abs().sum() > 0 and out_basis.abs().sum() > 0


def test_eigen_loss_gradient_equals_autograd_with_constant_operator():
    """The one-product surrogate gives the same gradient as differentiating g(A_const, U) directly."""
    matrix = random_symmetric(8, dtype=torch.float64, seed=6)
    for which in ("largest", "smallest", "magnitude"):
        for loss in AmortizedBackend.LOSSES:
            backend = AmortizedBackend(k=3, which=which, loss=loss, eta=0.7)
            grad = torch.autograd.grad(backend(matrix).aux_loss, backend.basis.weight)[0]
            vectors = backend.basis.orthonormal()
            quotients = (vectors * (matrix @ vectors)).sum(-2) / torch.linalg.matrix_norm(matrix)
            x = -quotients if which == "smallest" else quotients
            if which == "magnitude" and loss == "trace":
                direct = -(matrix @ vectors).square().sum() / torch.linalg.matrix_norm(matrix) ** 2
            else:
                x = x.square() if which == "magnitude" else x
                nu = torch.arange(3, 0, -1, dtype=torch.float64) / 3
                direct = -{"brockett": (nu * x).sum(), "convex": x.exp().sum(), "trace": x.sum()}[loss]
            expected = torch.autograd.grad(0.7 * direct, backend.basis.weight)[0]
            assert torch.allclose(grad, expected, atol=1e-12), (which, loss)


def test_gradcheck_of_gauge_invariant_output_in_the_operator():
    matrix = random_symmetric(6, dtype=torch.float64, seed=7)
    backend = AmortizedBackend(k=2)
    backend.fit(matrix, steps=500, tol=1e-10)

    def projector(a):
        pairs = backend((a + a.T) / 2)
        return pairs.eigenvectors @ torch.diag(pairs.eigenvalues) @ pairs.eigenvectors.T

    assert torch.autograd.gradcheck(projector, (matrix.clone().requires_grad_(),))


def test_diagnostics_match_dense_reference_and_track_subspace_motion():
    matrix = random_symmetric(12, dtype=torch.float64, seed=8)
    backend = AmortizedBackend(k=3)
    assert backend.diagnostics is None
    pairs = backend(matrix)
    first = backend.diagnostics
    assert first.subspace_angle is None
    vectors, values = pairs.eigenvectors.detach(), pairs.eigenvalues.detach()
    expected = torch.linalg.matrix_norm(matrix @ vectors - vectors * values) / torch.linalg.matrix_norm(matrix)
    assert torch.allclose(first.residual, expected, rtol=1e-10)
    backend(matrix)
    assert float(backend.diagnostics.subspace_angle) < 1e-7  # nothing moved
    backend.fit(matrix, steps=2000, tol=1e-6)
    assert float(backend.diagnostics.residual) <= 1e-6


def test_diagnostics_on_graph_operators_use_exact_frobenius_norm():
    from lowrank_gnn.eigen import operator_frobenius_norm
    from lowrank_gnn.operators import deflate_components

    graph = disjoint_union(cycle_graph(5), path_graph(4))
    op = normalized_adjacency(graph.edge_index, num_nodes=graph.num_nodes)
    assert torch.allclose(operator_frobenius_norm(op), torch.linalg.matrix_norm(op.to_dense()))
    deflated = deflate_components(op)
    assert torch.allclose(operator_frobenius_norm(deflated), torch.linalg.matrix_norm(deflated.to_dense()), atol=1e-6)


def test_subspace_angle_resolves_small_rotations():
    q, _ = torch.linalg.qr(torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    angle = 1e-6
    rotated = q.clone()
    rotated[:, 0] = q[:, 0] * torch.cos(torch.tensor(angle, dtype=torch.float64))
    orth = torch.linalg.qr(torch.cat([q, torch.randn(20, 1, dtype=torch.float64)], 1))[0][:, 3]
    rotated[:, 0] += orth * torch.sin(torch.tensor(angle, dtype=torch.float64))
    assert abs(float(subspace_angle(q, rotated)) - angle) < 1e-12
    assert float(subspace_angle(q, q @ torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0])) < 1e-12


def test_repeated_eigenvalue_cut_by_k_converges_as_a_subspace():
    """lambda_k = lambda_{k+1}: the span of the top block converges, the vectors inside it need not."""
    graph = disjoint_union(cycle_graph(6), path_graph(5), complete_graph(4))  # eigenvalue 1, three times
    op = normalized_adjacency(graph.edge_index, torch.ones(graph.edge_index.shape[1], dtype=torch.float64),
                              graph.num_nodes)
    backend = AmortizedBackend(k=2, init="random")
    # fit()'s default tol, sqrt(eps): below it the loss changes by less than float64 resolves
    # and L-BFGS stalls (at a few 1e-9 here, depending on rounding)
    assert float(backend.fit(op, steps=3000).residual) <= torch.finfo(torch.float64).eps ** 0.5
    pairs = backend(op)
    assert torch.allclose(pairs.eigenvalues.detach(), torch.ones(2, dtype=torch.float64), atol=1e-9)
    # that residual is relative to ||A||_F ~ 2.2; the assert scales by max |A_ij| = 1/2
    assert_eigenpairs_close(pairs, op.to_dense(), 2, "largest", rtol=1e-7)
    # the k vectors lie in the 3-dimensional eigenspace of eigenvalue 1, as close as Davis-Kahan
    # allows: ||sin Theta||_F <= ||A V - V diag(lambda)||_F / (1 - lambda_4), lambda_4 = 5/6
    dense = op.to_dense()
    top = ExactBackend(k=3, method="dense")(op).eigenvectors
    vectors, values = pairs.eigenvectors.detach(), pairs.eigenvalues.detach()
    bound = float(torch.linalg.matrix_norm(dense @ vectors - vectors * values)) / (1 - 5 / 6)
    assert float(torch.linalg.matrix_norm(vectors - top @ (top.T @ vectors))) <= bound


def test_batched_operator_has_one_basis_per_entry():
    batch = random_symmetric(8, 3, dtype=torch.float64, seed=9, gap=1.0)
    backend = AmortizedBackend(k=2)
    backend.fit(batch, steps=3000, tol=1e-8)
    assert backend.basis.weight.shape == (3, 8, 2)
    assert_eigenpairs_close(backend(batch), batch, 2, "largest", rtol=1e-7)


@pytest.mark.parametrize("orthogonalization", ORTHOGONALIZATIONS)
def test_tracks_a_drifting_operator_inside_training(orthogonalization):
    """The amortized regime: Adam on task + eigen loss, operator changing every step.

    The same learning rate works for both orthogonalisations (W's entries are O(1) in both).
    """
    torch.manual_seed(0)
    base = random_symmetric(30, dtype=torch.float64, seed=10, gap=0.5)
    drift = random_symmetric(30, dtype=torch.float64, seed=11) * 0.01
    backend = AmortizedBackend(k=4, init="exact", orthogonalization=orthogonalization)
    backend.initialize(base)
    optimizer = torch.optim.Adam(backend.parameters(), lr=2e-3)
    for step in range(150):
        matrix = base + drift * step / 150
        optimizer.zero_grad()
        pairs = backend(matrix)
        pairs.aux_loss.backward()
        optimizer.step()
    reference = torch.linalg.eigvalsh(matrix).flip(0)[:4]
    assert float((pairs.eigenvalues.detach() - reference).abs().max()) < 1e-3 * float(reference.abs().max())
    assert float(backend.diagnostics.residual) < 1e-2


def test_fit_rejects_bad_arguments():
    backend = AmortizedBackend(k=2)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        backend.fit(random_symmetric(5), steps=0)
    with pytest.raises(ValueError, match="tol must be > 0"):
        backend.fit(random_symmetric(5), tol=-1.0)


# -- orthogonalization="householder" ---------------------------------------------------------

@pytest.mark.parametrize("init", ["random", "exact"])
def test_householder_starts_from_the_same_basis_as_qr(init):
    matrix = random_symmetric(12, 2, dtype=torch.float64, seed=4, gap=1.0)
    qr = AmortizedBackend(k=3, init=init, seed=5)
    householder = AmortizedBackend(k=3, init=init, seed=5, orthogonalization="householder")
    assert torch.allclose(householder.basis.orthonormal() if householder.basis.initialized else
                          householder(matrix).eigenvectors, qr(matrix).eigenvectors, atol=1e-12)
    assert householder.basis.signs.shape == (2, 3)
    assert "orthogonalization='householder'" in repr(householder)


@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude"])
def test_householder_converges_from_random_start(which):
    matrix = random_symmetric(16, dtype=torch.float64, seed=5, gap=1.0)
    backend = AmortizedBackend(k=3, which=which, init="random", seed=1, orthogonalization="householder")
    diagnostics = backend.fit(matrix, steps=3000, tol=1e-7)
    assert float(diagnostics.residual) <= 1e-7
    assert_eigenpairs_close(backend(matrix), matrix, 3, which, rtol=1e-6)


def test_householder_basis_is_orthonormal_for_any_weight_without_repair():
    """No R^{-1}: W = 0 or W with dependent columns still gives an orthonormal U and finite
    gradients, so the rank repair of "qr" is never needed (and never warns)."""
    matrix = random_symmetric(10, dtype=torch.float64, seed=3, gap=1.0)
    backend = AmortizedBackend(k=3, orthogonalization="householder")
    backend(matrix)
    eye = torch.eye(3, dtype=torch.float64)
    for weight in (torch.zeros(10, 3, dtype=torch.float64), torch.ones(10, 3, dtype=torch.float64) * 1e3):
        with torch.no_grad():
            backend.basis.weight.copy_(weight)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pairs = backend(matrix)
        vectors = pairs.eigenvectors.detach()
        assert torch.allclose(vectors.T @ vectors, eye, atol=1e-12)
        assert bool(torch.isfinite(torch.autograd.grad(pairs.aux_loss, backend.basis.weight)[0]).all())


def test_householder_basis_gradient_matches_finite_differences():
    """d(aux_loss + task)/dW through W -> V = W / sqrt(n) -> U, against central differences."""
    matrix = random_symmetric(7, dtype=torch.float64, seed=6, gap=1.0)
    backend = AmortizedBackend(k=2, orthogonalization="householder")
    backend(matrix)
    weight = backend.basis.weight
    target = torch.randn(7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def objective():
        pairs = backend(matrix)
        vectors = pairs.eigenvectors
        return pairs.aux_loss + ((vectors * pairs.eigenvalues) @ vectors.T * target).sum()

    gradient = torch.autograd.grad(objective(), weight)[0]
    direction = torch.randn(weight.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).tril(-1)
    step = 1e-6
    start = weight.detach().clone()
    values = []
    with torch.no_grad():
        for sign in (1, -1):
            weight.copy_(start + sign * step * direction)
            values.append(float(objective()))
        weight.copy_(start)
    numeric = (values[0] - values[1]) / (2 * step)
    assert abs(float((gradient * direction).sum()) - numeric) <= 1e-6 * max(1.0, abs(numeric))


def test_householder_state_dict_loads_into_a_fresh_backend_and_moves_with_to():
    matrix = random_symmetric(6, dtype=torch.float32, seed=8)
    trained = AmortizedBackend(k=2, orthogonalization="householder", seed=3)
    trained(matrix)
    state = trained.state_dict()
    assert set(state) == {"basis.weight", "basis.signs"}
    fresh = AmortizedBackend(k=2, orthogonalization="householder").to(torch.float64)
    fresh.load_state_dict(state)  # a float32 checkpoint into a float64 module: the module's dtype wins
    assert fresh.basis.signs.dtype == fresh.basis.weight.dtype == torch.float64
    assert torch.allclose(fresh(matrix.double()).eigenvectors, trained(matrix).eigenvectors.double(), atol=1e-6)
    fresh.to(torch.float32)
    assert fresh.basis.signs.dtype == fresh.basis.weight.dtype == torch.float32


# --- the W -> U map -----------------------------------------------------------------------------

def test_cholesky_qr_path_equals_householder_qr_and_its_gradient():
    """CholeskyQR2 forward and the closed-form QR backward (qr_backward) against LAPACK QR under autograd."""
    from lowrank_gnn.linalg import cholesky_qr, qr_orthonormalize

    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(2, 50, 4, generator=generator, dtype=torch.float64)
              @ torch.diag(torch.tensor([1.0, 3.0, 0.1, 10.0], dtype=torch.float64))).requires_grad_()
    assert cholesky_qr(weight) is not None  # the fast path is the one under test
    vectors, diagonal = qr_orthonormalize(weight)
    q, r = torch.linalg.qr(weight)
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    assert torch.allclose(vectors, q * sign, atol=1e-13)
    assert torch.allclose(diagonal, torch.diagonal(r, dim1=-2, dim2=-1).abs(), atol=1e-12)
    probe = torch.randn(2, 50, 4, generator=generator, dtype=torch.float64)
    expected = torch.autograd.grad(((q * sign) * probe).sum(), weight)[0]
    assert torch.allclose(torch.autograd.grad((vectors * probe).sum(), weight)[0], expected, atol=1e-12)
    assert torch.autograd.gradcheck(lambda w: qr_orthonormalize(w)[0], (weight[0].detach().requires_grad_(),))


def test_nearly_orthonormal_basis_takes_one_cholesky_qr_pass_with_the_same_factor_and_gradient():
    """A W orthonormal up to a small perturbation (an amortized basis between steps): the first pass is
    kept as it is, and it is the QR factor and its gradient to rounding."""
    from lowrank_gnn.linalg import CHOLESKY_QR_ONE_PASS
    from lowrank_gnn.linalg import cholesky_qr

    generator = torch.Generator().manual_seed(3)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        basis, _ = torch.linalg.qr(torch.randn(2, 500, 6, generator=generator, dtype=torch.float64))
        weight = (basis * 500 ** 0.5 + 1e-3 * torch.randn(2, 500, 6, generator=generator, dtype=torch.float64))
        weight = weight.to(dtype).requires_grad_()
        vectors, inverse, _ = cholesky_qr(weight)
        lower = torch.linalg.cholesky(weight.detach().mT @ weight.detach())
        first = torch.linalg.solve_triangular(lower.mT, weight.detach(), upper=True, left=False)
        assert torch.allclose(vectors, first, rtol=0, atol=50 * torch.finfo(dtype).eps)   # one pass, not two
        assert torch.allclose(inverse @ lower.mT, torch.eye(6, dtype=dtype), atol=50 * torch.finfo(dtype).eps)
        gram_error = torch.linalg.matrix_norm(vectors.mT @ vectors - torch.eye(6, dtype=dtype))
        assert bool((gram_error <= CHOLESKY_QR_ONE_PASS * 6 ** 0.5 * torch.finfo(dtype).eps).all())
        q, r = torch.linalg.qr(weight.double())
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
        got, diagonal = qr_orthonormalize(weight)
        assert torch.allclose(got.double(), q, atol=tol)
        assert torch.allclose(diagonal.double(), torch.diagonal(r, dim1=-2, dim2=-1).abs(), rtol=tol)
        probe = torch.randn(2, 500, 6, generator=generator, dtype=torch.float64)
        expected = torch.autograd.grad((q * probe).sum(), weight)[0].double()
        assert torch.allclose(torch.autograd.grad((got * probe.to(dtype)).sum(), weight)[0].double(), expected,
                              atol=tol * expected.abs().max())


def test_cholesky_qr_path_is_first_order_only():
    """The closed-form backward has no graph of its own: a double backward says so instead of returning zeros."""
    weight = torch.randn(30, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    vectors, _ = qr_orthonormalize(weight)
    (grad,) = torch.autograd.grad(vectors.pow(3).sum(), weight, create_graph=True)
    with pytest.raises(RuntimeError, match=r"the closed-form QR backward .* is first-order only.*detach W"):
        grad.sum().backward()


def test_ill_conditioned_or_deficient_basis_falls_back_to_householder():
    from lowrank_gnn.linalg import cholesky_qr, qr_orthonormalize

    generator = torch.Generator().manual_seed(1)
    for dtype, smallest in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        weight = torch.randn(40, 3, generator=generator, dtype=torch.float64)
        weight[:, 2] = weight[:, 0] + smallest * weight[:, 2]  # cond ~ 1 / smallest: beyond CholeskyQR2
        weight = weight.to(dtype)
        assert cholesky_qr(weight) is None
        vectors, diagonal = qr_orthonormalize(weight)
        eye = torch.eye(3, dtype=dtype)
        assert torch.allclose(vectors.mT @ vectors, eye, atol=100 * torch.finfo(dtype).eps)
        assert bool((diagonal >= 0).all())


# --- refine: block Krylov Rayleigh-Ritz ------------------------------------------------------------

def separated_spectrum(dtype=torch.float64):
    """Eigenvalues 6, 5, 4 and -5.5, -4.5, -3.5 outside a bulk of 34 in [-1, 1]: every which has a gap."""
    generator = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=generator, dtype=torch.float64))
    values = torch.cat([torch.tensor([6.0, 5.0, 4.0, -5.5, -4.5, -3.5], dtype=torch.float64),
                        torch.linspace(-1, 1, 34, dtype=torch.float64)])
    return ((q * values) @ q.T).to(dtype)


@pytest.mark.parametrize("which,dtype,rtol", [
    ("largest", torch.float64, 1e-10), ("smallest", torch.float64, 1e-10), ("magnitude", torch.float64, 1e-10),
    ("largest", torch.float32, 1e-5), ("smallest", torch.float32, 1e-5),
    # float32 "magnitude" from this random start settles on {6, -5.5, -4.5} (documented): not run
])
def test_refine_alone_converges_from_a_random_start(which, dtype, rtol):
    matrix = separated_spectrum(dtype)
    backend = AmortizedBackend(k=3, which=which, refine=1)
    with torch.no_grad():
        for _ in range(100):  # no optimiser: each forward is one block Krylov step
            pairs = backend(matrix)
    assert_eigenpairs_close(pairs, matrix, 3, which, rtol=rtol)


@pytest.mark.parametrize("which", ["largest", "magnitude"])
def test_refine_writes_through_the_householder_parametrisation(which):
    """The refined basis is stored as Householder vectors (+ signs), so U is exactly the Ritz basis."""
    matrix = separated_spectrum(torch.float64)
    backend = AmortizedBackend(k=3, which=which, refine=1, orthogonalization="householder")
    with torch.no_grad():
        for _ in range(100):
            pairs = backend(matrix)
    assert_eigenpairs_close(pairs, matrix, 3, which, rtol=1e-10)
    assert torch.count_nonzero(backend.basis.weight.detach().triu()) == 0  # Householder layout


def test_refine_keeps_a_converged_basis_and_its_signs():
    """Converged: the residual block is rounding only, so every direction of it is dropped."""
    matrix = separated_spectrum()
    backend = AmortizedBackend(k=3, init="exact", refine=1)
    backend.initialize(matrix)
    before = backend.basis.weight.detach().clone()
    pairs = backend(matrix)
    assert_eigenpairs_close(pairs, matrix, 3, "largest", rtol=1e-12)
    assert torch.allclose(backend.basis.weight.detach(), before, atol=1e-10)


def test_refine_on_a_disconnected_graph_with_a_repeated_eigenvalue_cut_by_k():
    graph = disjoint_union(cycle_graph(6), path_graph(5), complete_graph(4))  # eigenvalue 1, three times
    op = normalized_adjacency(graph.edge_index, torch.ones(graph.edge_index.shape[1], dtype=torch.float64),
                              graph.num_nodes)
    for k in (2, 7):  # 2k = 14 of 15 nodes: the Krylov block nearly fills the space
        backend = AmortizedBackend(k=k, refine=2)
        with torch.no_grad():
            for _ in range(60):
                pairs = backend(op)
        assert float(backend.diagnostics.residual) < 1e-10
        assert_eigenpairs_close(pairs, op.to_dense(), k, "largest", rtol=1e-9)


def test_refine_converges_where_its_krylov_blocks_become_ill_conditioned():
    """float32, smallest, refine=8 on a sparse random graph (many components, deflated): near convergence the
    deeper blocks hold directions from O(1) down to rounding, beyond what a Gram matrix resolves (eigh failed)."""
    upper = torch.triu(torch.rand(200, 200, generator=torch.Generator().manual_seed(0)) < 0.02, 1).nonzero().t()
    edge_index = torch.cat([upper, upper.flip(0)], 1)
    op = deflate_components(normalized_adjacency(edge_index, torch.ones(edge_index.shape[1]), 200))
    backend = AmortizedBackend(k=8, which="smallest", refine=8, seed=1)
    with torch.no_grad():
        for _ in range(30):
            pairs = backend(op)
    dense = deflate_components(normalized_adjacency(edge_index, torch.ones(edge_index.shape[1], dtype=torch.float64),
                                                    200)).to_dense()
    assert_eigenpairs_close(pairs, dense, 8, "smallest", rtol=1e-4)


def test_refine_with_a_batch_has_one_basis_per_entry():
    batch = torch.stack([separated_spectrum(), -separated_spectrum()])
    backend = AmortizedBackend(k=3, refine=1)
    with torch.no_grad():
        for _ in range(100):
            pairs = backend(batch)
    assert_eigenpairs_close(pairs, batch, 3, "largest", rtol=1e-10)


def residual_after_drift(refine: int, k: int, train: bool, jitter: float = 0.0) -> float:
    """The basis's residual after 150 steps of a drifting operator (an Adam step on the eigen loss each if train)."""
    base = separated_spectrum()
    drift = random_symmetric(40, dtype=torch.float64, seed=11) * 0.05
    backend = AmortizedBackend(k=k, init="exact", refine=refine)
    backend.initialize(base)
    optimizer = torch.optim.Adam(backend.parameters(), lr=2e-3)
    for step in range(150):
        optimizer.zero_grad()
        pairs = backend(base + drift * step / 150 + drift.square() * (step % 2) * jitter)
        if train:
            pairs.aux_loss.backward()
            optimizer.step()
    return float(backend.diagnostics.residual)


def test_refine_tracks_a_drifting_operator_closer_than_the_gradient_alone():
    residuals = {refine: residual_after_drift(refine, k=4, train=True) for refine in (0, 1)}
    assert residuals[1] < residuals[0] / 10, residuals


@pytest.mark.parametrize("depth", [1, 3])
def test_refine_is_rayleigh_ritz_on_the_block_krylov_subspace(depth):
    """One forward with refine=r puts into W the top-k Ritz vectors of span[U, A U, ..., A^r U] (dense reference)."""
    matrix = random_symmetric(40, dtype=torch.float64, seed=5)
    start, _ = torch.linalg.qr(torch.randn(40, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64))
    backend = AmortizedBackend(k=3, refine=depth)
    backend.initialize(matrix)
    backend.basis.assign(start)
    with torch.no_grad():
        backend(matrix)
    krylov = torch.cat([torch.linalg.matrix_power(matrix, power) @ start for power in range(depth + 1)], -1)
    space, _ = torch.linalg.qr(krylov)
    values, vectors = torch.linalg.eigh(space.T @ matrix @ space)
    expected = space @ vectors[:, -3:].flip(-1)
    refined = backend.basis.orthonormal().detach()
    assert torch.allclose((refined * (matrix @ refined)).sum(0), values[-3:].flip(-1), atol=1e-10)
    assert torch.allclose((refined.T @ expected).abs(), torch.eye(3, dtype=torch.float64), atol=1e-8)  # up to sign


def test_a_deeper_krylov_refinement_tracks_a_drifting_operator_closer():
    residuals = {refine: residual_after_drift(refine, k=3, train=False, jitter=0.1) for refine in (1, 3)}
    assert residuals[3] < residuals[1] / 10, residuals


def test_refine_keeps_gradients_to_the_operator_and_the_basis():
    edge_index = path_graph(8).edge_index
    half = torch.rand(edge_index.shape[1] // 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weight = (half + 0.5).requires_grad_()
    backend = AmortizedBackend(k=2, refine=1)
    pairs = backend(normalized_adjacency(edge_index, torch.cat([weight, weight])))  # forwards, then backwards
    out = (pairs.eigenvectors * pairs.eigenvalues).square().sum()
    out_weight, out_basis = torch.autograd.grad(out, (weight, backend.basis.weight))
    assert out_weight.abs().sum() > 0 and out_basis.abs().sum() > 0


def test_refine_option_is_validated_and_fit_runs_without_it():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="refine must be a non-negative integer"):
            AmortizedBackend(k=2, refine=bad)
    backend = resolve_eigen_backend("amortized", k=3, refine=2)
    assert "refine=2" in repr(backend)
    matrix = separated_spectrum()
    assert float(backend.fit(matrix, steps=500).residual) <= 1e-7  # L-BFGS alone, near its sqrt(eps) floor
    assert backend.refine == 2


@pytest.mark.parametrize("orthogonalization", ORTHOGONALIZATIONS)
def test_checkpoint_loads_into_a_fresh_module_with_the_modules_dtype(orthogonalization):
    """model.to(...) then load_state_dict(checkpoint): W takes the module's dtype (and device), not the file's."""
    matrix = random_symmetric(6, dtype=torch.float32, seed=8)
    trained = AmortizedBackend(k=2, orthogonalization=orthogonalization)
    trained(matrix)
    fresh = AmortizedBackend(k=2, orthogonalization=orthogonalization).double()
    fresh.load_state_dict(trained.state_dict())
    assert fresh.basis.weight.dtype == torch.float64 and fresh.basis.weight.device == matrix.device
    assert torch.allclose(fresh(matrix.double()).eigenvectors, trained(matrix).eigenvectors.double(), atol=1e-6)


def test_eigen_loss_is_eta_times_the_brockett_cost_in_every_dtype():
    """aux_loss has the value -eta sum_i nu_i u_i^T A u_i / ||A||_F, also after the backend moves to
    another dtype (its Brockett weights follow)."""
    a = random_symmetric(9, seed=3)
    for eta in (1.0, 0.25):
        backend = AmortizedBackend(k=3, eta=eta, init="exact").float()
        for dtype in (torch.float32, torch.float64):
            backend = backend.to(dtype)
            matrix = a.to(dtype)
            pairs = backend(matrix)
            vectors = backend.basis.orthonormal().detach()
            quotients = ((matrix @ vectors) * vectors).sum(0)
            weights = torch.tensor([3.0, 2.0, 1.0], dtype=dtype) / 3
            expected = -eta * (weights * quotients).sum() / torch.linalg.matrix_norm(matrix)
            assert pairs.aux_loss.dtype == dtype
            torch.testing.assert_close(pairs.aux_loss, expected)


# --- the lean gradient-only step ---------------------------------------------------------------------

def test_q_projection_value_and_gradient_match_autograd_through_householder_qr():
    """Q^T B with B constant, and its W-gradient from the factored QR backward, against LAPACK QR under autograd."""
    from lowrank_gnn.linalg import cholesky_qr, q_projection, qr_backward

    generator = torch.Generator().manual_seed(4)
    for shape in ((60, 5), (3, 40, 4)):
        weight = torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)
        other = torch.randn(*shape, generator=generator, dtype=torch.float64)
        probe = torch.randn(*shape[:-2], shape[-1], shape[-1], generator=generator, dtype=torch.float64)
        factors = cholesky_qr(weight)
        assert factors is not None
        got = q_projection(weight, factors, other)
        q, r = torch.linalg.qr(weight)
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
        expected = q.mT @ other
        assert torch.allclose(got, expected, atol=1e-12)
        (grad,) = torch.autograd.grad((got * probe).sum(), weight)
        (reference,) = torch.autograd.grad((expected * probe).sum(), weight)
        assert torch.allclose(grad, reference, atol=1e-11)
        # the factored form is the plain QR backward of the formed gradient B H^T
        plain = qr_backward(factors.vectors, factors.inverse, other @ probe.mT)
        assert torch.allclose(grad, plain, atol=1e-12)


def test_eigen_loss_gradient_is_the_same_with_and_without_the_qr_factors(monkeypatch):
    """The q_projection path (CholeskyQR factors) and the general one (row sums, autograd through the QR)
    give the same quotients, loss and W-gradient, for every loss and which."""
    from lowrank_gnn.eigen.rows import LocalRows

    matrix = random_symmetric(40, dtype=torch.float64, seed=11)
    for loss in AmortizedBackend.LOSSES:
        for which in ("largest", "smallest", "magnitude"):
            results = []
            for fused in (True, False):
                if not fused:
                    monkeypatch.setattr(LocalRows, "qr_factors", lambda self, weight: None)
                backend = AmortizedBackend(k=3, which=which, loss=loss, seed=2).double()
                pairs = backend(matrix)
                (pairs.aux_loss + pairs.eigenvalues.sum()).backward()
                results.append((pairs.eigenvalues.detach(), pairs.aux_loss.detach(), backend.basis.weight.grad))
                monkeypatch.undo()
            for fast, general in zip(*results, strict=True):
                assert torch.allclose(fast, general, rtol=1e-10, atol=1e-12), (loss, which)


def test_rows_subclass_overriding_orthonormalize_has_it_used_instead_of_the_local_cholesky_qr():
    """A LocalRows subclass with its own orthonormalize (and the default qr_factors) has its QR called by the
    amortized step; LocalRows itself and a subclass that keeps LocalRows' QR still get the CholeskyQR factors."""
    from lowrank_gnn.eigen import LocalRows

    class CountingRows(LocalRows):
        calls = 0

        def orthonormalize(self, weight):
            type(self).calls += 1
            return qr_orthonormalize(weight)

    class PlainSubclass(LocalRows):
        pass

    weight = torch.randn(30, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert CountingRows().qr_factors(weight) is None
    assert LocalRows().qr_factors(weight) is not None and PlainSubclass().qr_factors(weight) is not None
    matrix = random_symmetric(30, dtype=torch.float64, seed=14)
    backend = AmortizedBackend(k=3, seed=1).double()
    backend.basis.rows = CountingRows()
    pairs = backend(matrix)
    assert CountingRows.calls >= 1
    _, factors = backend.basis.orthonormalize()
    assert factors is None
    assert torch.allclose(pairs.eigenvectors.mT @ pairs.eigenvectors, torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_factors_path_still_rejects_a_non_finite_basis_and_repairs_a_deficient_one():
    matrix = random_symmetric(20, dtype=torch.float64, seed=12)
    backend = AmortizedBackend(k=3).double()
    backend(matrix)
    vectors, factors = backend.basis.orthonormalize()
    assert factors is not None and torch.allclose(vectors, factors.vectors)  # the well-conditioned basis: CholeskyQR
    with torch.no_grad():
        backend.basis.weight[4, 1] = float("inf")
    with pytest.raises(ValueError, match="W contains NaN or Inf.*initialize"):
        backend(matrix)
    with torch.no_grad():
        backend.basis.weight.copy_(torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
        backend.basis.weight[:, 2] = backend.basis.weight[:, 0]
    with pytest.warns(RuntimeWarning, match="lost rank"):
        pairs = backend(matrix)
    assert torch.allclose(pairs.eigenvectors.mT @ pairs.eigenvectors, torch.eye(3, dtype=torch.float64), atol=1e-12)


def test_tracked_pairs_have_canonical_signs_and_are_a_fresh_tensor_when_the_basis_flips():
    """The pivot rows are reused from step to step (verified); the pairs keep the convention when a column of W
    changes sign or its pivot row moves, and are never the basis tensor the diagnostics keep."""
    from lowrank_gnn.eigen import canonical_signs

    generator = torch.Generator().manual_seed(5)
    matrix = random_symmetric(400, dtype=torch.float64, seed=13)  # tall: n > 16 k
    backend = AmortizedBackend(k=4, init="exact").double()
    first = backend(matrix).eigenvectors
    assert torch.equal(first, canonical_signs(first))
    for change in ("flip", "rotate", "none"):
        with torch.no_grad():
            if change == "flip":
                backend.basis.weight[:, 1:3] *= -1
            elif change == "rotate":  # moves pivots: mix in a random direction
                backend.basis.weight.add_(3.0 * torch.randn(400, 4, generator=generator, dtype=torch.float64))
        pairs = backend(matrix)
        assert torch.equal(pairs.eigenvectors, canonical_signs(pairs.eigenvectors)), change
        assert pairs.eigenvectors.data_ptr() != backend.basis.orthonormal().data_ptr()
        basis = backend.basis.orthonormal().detach()
        order = torch.argsort((basis * (matrix @ basis)).sum(0), descending=True)
        assert torch.allclose(pairs.eigenvectors.abs(), basis[:, order].abs(), atol=1e-12), change


def test_diagnostics_refuse_blocks_whose_shapes_do_not_agree():
    from lowrank_gnn.eigen import relative_residual
    q = torch.linalg.qr(torch.randn(8, 3, dtype=torch.float64))[0]
    with pytest.raises(ValueError, match=r"same \(\*batch, n\) \(got first.shape=\(8, 3\), second.shape=\(7, 3\)\)"):
        subspace_angle(q, q[:7])
    with pytest.raises(ValueError, match=r"second must have shape \(\*batch, n, k\)"):
        subspace_angle(q, q[:, 0])
    assert float(subspace_angle(q, q[:, :2])) < 1e-12        # a sub-basis: its span lies in the other's
    norm = torch.tensor(1.0, dtype=torch.float64)
    values = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"op_times_vectors.shape=\(8, 2\)"):
        relative_residual(q[:, :2], q, values, norm)
    with pytest.raises(ValueError, match=r"values.shape=\(2,\)"):
        relative_residual(q, q, values[:2], norm)
    assert float(relative_residual(q, q, values, norm)) < 1e-12
