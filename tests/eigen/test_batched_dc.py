import pytest
import torch

from lowrank_gnn.eigen import BatchedDCBackend, batched_eigh, canonical_signs, resolve_eigen_backend
from lowrank_gnn.eigen.batched_dc import auto_method
from lowrank_gnn.linalg.tridiagonal import householder_tridiagonalize, tridiagonal_eigh
from lowrank_gnn.operators import DenseOperator, normalized_adjacency
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.testing.conformance import DEVICES, DTYPES, EigenBackendConformance, random_symmetric
from stress_matrices import FAMILIES, stress_batch  # tests/eigen is on sys.path (pytest rootdir-less import)

#: Accuracy bound, stated per dtype: residual ||AU - U diag(l)||_F / ||A||_F, ||U^T U - I||_max
#: and max |l - l_LAPACK| / ||A||_F are all at most ACCURACY_FACTOR * n * eps(dtype), i.e.
#: 16 n * 1.2e-7 in float32 and 16 n * 2.2e-16 in float64 (measured worst case: ~8 n eps at n = 3,
#: below 2 n eps from n = 8 on).
ACCURACY_FACTOR = 16.0


class TestBatchedDC(EigenBackendConformance):
    backend_name = "batched_dc"
    backend_kwargs = {"method": "dc"}


def accuracy(matrix: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor):
    """Per-matrix (residual, orthogonality, eigenvalue error), all relative to ||A||_F, in float64."""
    a, lam, u = matrix.double(), values.double(), vectors.double()
    n = a.shape[-1]
    norm = torch.linalg.matrix_norm(a).clamp_min(1e-300)
    residual = torch.linalg.matrix_norm(a @ u - u * lam.unsqueeze(-2)) / norm
    orthogonality = (u.mT @ u - torch.eye(n, dtype=torch.float64)).abs().amax((-2, -1))
    value_error = (lam - torch.linalg.eigvalsh(a)).abs().amax(-1) / norm
    return residual, orthogonality, value_error


def assert_accurate(matrix, values, vectors, what=""):
    assert bool(torch.isfinite(values).all() and torch.isfinite(vectors).all()), f"{what}: NaN/Inf in the result"
    assert bool((values[..., 1:] >= values[..., :-1]).all()), f"{what}: eigenvalues not ascending"
    n = matrix.shape[-1]
    bound = ACCURACY_FACTOR * n * torch.finfo(values.dtype).eps
    errors = accuracy(matrix, values, vectors)
    for name, error in zip(("residual", "orthogonality", "eigenvalue error"), errors, strict=True):
        worst = float(error.max())
        assert worst <= bound, f"{what}: {name} {worst:.3g} > {bound:.3g} (matrix {int(error.argmax())})"


# --------------------------------------------------------------------------- stress set
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_stress_set_matches_lapack(family, dtype):
    """12 families x 2 dtypes x 3 sizes x 7 matrices = 504 matrices in the default run."""
    for n in (1, 5, 33):
        matrix = stress_batch(family, 7, n, dtype, seed=0)
        values, vectors = batched_eigh(matrix)
        assert values.dtype == dtype and vectors.dtype == dtype
        assert_accurate(matrix, values, vectors, f"{family}, n={n}, {dtype}")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_stress_set_thousands(dtype):
    """12 families x 9 sizes x 64 matrices x 2 seeds = 13,824 matrices per dtype."""
    for family in FAMILIES:
        for n in (1, 2, 3, 4, 7, 16, 31, 64, 100):
            for seed in (1, 2):
                matrix = stress_batch(family, 64, n, dtype, seed=seed)
                assert_accurate(matrix, *batched_eigh(matrix), f"{family}, n={n}, seed={seed}")


def test_large_batch_has_no_nans():
    """Many matrices of mixed kinds in one batch (the published code's NaN report)."""
    parts = [stress_batch(family, 24, 10, torch.float32, seed=5) for family in FAMILIES]
    matrix = torch.cat(parts)[torch.randperm(24 * len(FAMILIES), generator=torch.Generator().manual_seed(0))]
    assert_accurate(matrix, *batched_eigh(matrix), "mixed batch")


# --------------------------------------------------------------------------- deflation
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_repeated_eigenvalues_give_orthonormal_eigenspace(dtype):
    # K_6 Laplacian: 0 once and 6 five times; identity blocks; a disconnected graph.
    graphs = [complete_graph(6), disjoint_union(cycle_graph(4), cycle_graph(4))]
    for graph in graphs:
        a = torch.zeros(graph.num_nodes, graph.num_nodes, dtype=dtype)
        a[graph.edge_index[0], graph.edge_index[1]] = 1.0
        laplacian = torch.diag(a.sum(-1)) - a
        values, vectors = batched_eigh(laplacian)
        assert_accurate(laplacian, values, vectors, graph.name)
        assert torch.allclose(values.double(), graph.laplacian_eigenvalues, atol=1e-5)
        # Projector onto the top eigenspace matches LAPACK's (basis-invariant).
        multiplicity = int((graph.laplacian_eigenvalues == graph.laplacian_eigenvalues[-1]).sum())
        ref_values, ref_vectors = torch.linalg.eigh(laplacian.double())
        mine, theirs = vectors[:, -multiplicity:].double(), ref_vectors[:, -multiplicity:]
        assert torch.allclose(mine @ mine.T, theirs @ theirs.T, atol=1e-5)


def test_tridiagonal_with_zero_couplings_and_equal_diagonal():
    """Every pole equal and every weight zero: pure deflation, identity eigenvectors."""
    values, vectors = tridiagonal_eigh(torch.full((2, 7), 3.0, dtype=torch.float64),
                                       torch.zeros(2, 6, dtype=torch.float64))
    assert torch.equal(values, torch.full((2, 7), 3.0, dtype=torch.float64))
    assert torch.allclose(vectors.mT @ vectors, torch.eye(7, dtype=torch.float64).expand(2, 7, 7))


def test_householder_reduction_is_similarity():
    a = random_symmetric(9, 3, seed=7)
    diagonal, off, _, _ = householder_tridiagonalize(a)
    t = torch.diag_embed(diagonal) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    assert torch.allclose(torch.linalg.eigvalsh(t), torch.linalg.eigvalsh(a), atol=1e-12)


# --------------------------------------------------------------------------- functional API
def test_batched_eigh_contract_matches_torch():
    a = random_symmetric(6, 2, 3, seed=8)
    values, vectors = batched_eigh(a)
    ref_values, ref_vectors = torch.linalg.eigh(a)
    assert values.shape == (2, 3, 6) and vectors.shape == (2, 3, 6, 6)
    assert torch.allclose(values, ref_values, atol=1e-12)
    assert torch.allclose((vectors * ref_vectors).sum(-2).abs(), torch.ones(2, 3, 6, dtype=torch.float64))


def test_non_symmetric_input_is_symmetrised():
    a = random_symmetric(5, seed=9)
    skew = torch.triu(torch.ones(5, 5, dtype=torch.float64), 1)
    values, _ = batched_eigh(a + skew - skew.T)
    assert torch.allclose(values, torch.linalg.eigvalsh(a), atol=1e-12)


@pytest.mark.parametrize("method", ["dc", "lapack", "auto"])
def test_methods_agree(method):
    a = random_symmetric(7, 4, seed=10)
    values, vectors = batched_eigh(a, method=method)
    assert_accurate(a, values, vectors, method)


def test_auto_method_is_lapack_on_cpu_and_dc_for_small_n_elsewhere():
    assert auto_method(torch.zeros(3, 3)) == "lapack"
    assert auto_method(torch.zeros(2, 64, 64, device="meta")) == "dc"
    assert auto_method(torch.zeros(2, 65, 65, device="meta")) == "lapack"


# --------------------------------------------------------------------------- gradients
def test_gradcheck_gauge_invariant_output():
    a = random_symmetric(4, 2, seed=11).requires_grad_()

    def function(x):
        values, vectors = batched_eigh(x)
        return vectors @ torch.diag_embed(torch.tanh(values)) @ vectors.mT

    assert torch.autograd.gradcheck(function, (a,))


def test_gradcheck_eigenvalues_and_backend_top_k_projector():
    a = random_symmetric(5, seed=12).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: batched_eigh(x)[0], (a,))
    backend = BatchedDCBackend(k=2, which="largest", method="dc")

    def projector(x):
        pairs = backend((x + x.mT) / 2)  # gradcheck perturbs entries one at a time
        return pairs.eigenvectors @ pairs.eigenvectors.mT

    assert torch.autograd.gradcheck(projector, (a,))


def test_gradient_equals_torch_eigh_gradient():
    a = random_symmetric(8, 3, seed=13)
    weights = torch.randn(3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads = []
    for solver in (batched_eigh, torch.linalg.eigh):
        x = a.clone().requires_grad_()
        values, vectors = solver(x)
        loss = values.square().sum() + (vectors.abs() * weights).sum()   # sign-invariant
        loss.backward()
        grads.append((x.grad + x.grad.mT) / 2)
    assert torch.allclose(grads[0], grads[1], atol=1e-8)


# --------------------------------------------------------------------------- inputs
def test_backend_accepts_dense_operator_batches_and_graph_operators():
    batch = random_symmetric(10, 4, seed=14)
    backend = resolve_eigen_backend("batched_dc", k=3, which="smallest", method="dc")
    from_operator = backend(DenseOperator(batch))
    from_tensor = backend(batch)
    assert torch.equal(from_operator.eigenvectors, from_tensor.eigenvectors)
    op = normalized_adjacency(path_graph(7).edge_index, torch.ones(12, dtype=torch.float64))
    pairs = backend(op)
    ref = torch.linalg.eigvalsh(op.to_dense())[:3]
    assert torch.allclose(pairs.eigenvalues, ref, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_empty_batch_returns_empty_results(dtype):
    values, vectors = batched_eigh(torch.zeros(0, 4, 4, dtype=dtype))
    assert values.shape == (0, 4) and vectors.shape == (0, 4, 4) and values.dtype == dtype
    pairs = BatchedDCBackend(k=2, method="dc")(torch.zeros(0, 4, 4, dtype=dtype))
    assert pairs.eigenvalues.shape == (0, 2) and pairs.eigenvectors.shape == (0, 4, 2)


def test_n_equal_one():
    a = torch.tensor([[[2.5]], [[-1.0]], [[0.0]]])
    values, vectors = batched_eigh(a)
    assert torch.equal(values, a[..., 0]) and torch.equal(vectors, torch.ones(3, 1, 1))
    pairs = BatchedDCBackend(k=1, method="dc")(a)
    assert torch.equal(pairs.eigenvalues, a[..., 0])


def test_rejects_bad_input_with_clear_errors():
    with pytest.raises(ValueError, match=r"shape \(\*batch, n, n\)"):
        batched_eigh(torch.zeros(3, 4, 5))
    with pytest.raises(TypeError, match="floating-point"):
        batched_eigh(torch.eye(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        batched_eigh([[1.0]])
    with pytest.raises(ValueError, match="method must be one of 'auto', 'dc', 'lapack'"):
        batched_eigh(torch.eye(3), method="qr")
    with pytest.raises(ValueError, match="method must be one of"):
        BatchedDCBackend(k=2, method="jacobi")
    batch = random_symmetric(4, 5, seed=15)
    batch[3, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf in matrix \(3,\) of the batch"):
        batched_eigh(batch)
    with pytest.raises(ValueError, match=r"NaN or Inf in matrix \(3,\) of the batch"):
        BatchedDCBackend(k=2, method="dc")(batch)


def test_repr_and_registry():
    backend = resolve_eigen_backend("batched_dc", k=4)
    assert isinstance(backend, BatchedDCBackend)
    assert repr(backend) == "BatchedDCBackend(k=4, which='largest', method='auto')"


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_device(device):
    a = stress_batch("repeated", 8, 12, torch.float32).to(device)
    values, vectors = batched_eigh(a, method="dc")
    assert values.device.type == device
    assert_accurate(a.cpu(), values.cpu(), vectors.cpu(), device)


def test_auto_backend_is_lapack_plus_the_conventions_bit_for_bit():
    """On the CPU, method="auto" returns torch.linalg.eigh's pairs in `which` order with canonical signs."""
    a = random_symmetric(9, 6, seed=16).float()
    zeros = a.clone()
    zeros[1, 4, 2], zeros[1, 2, 4] = -0.0, 0.0          # equal entries whose bits differ: eigh reads the lower one
    nearly = a.clone()
    nearly[2, 0, 3] += 1e-7                             # symmetric within the tolerance: its symmetric part is solved
    for matrix, solved in ((a, a), (a.mT.contiguous(), a), (zeros, zeros), (nearly, (nearly + nearly.mT) / 2)):
        values, vectors = torch.linalg.eigh(solved)
        for which, order in (("largest", torch.arange(8, -1, -1)), ("smallest", torch.arange(9))):
            for k in (9, 3):
                index = order[:k]
                pairs = BatchedDCBackend(k=k, which=which, method="auto")(matrix)
                assert torch.equal(pairs.eigenvalues, values[..., index])
                assert torch.equal(pairs.eigenvectors, canonical_signs(vectors[..., index].contiguous()))


def test_auto_backend_gradient_with_repeated_eigenvalues_matches_finite_differences():
    """The LAPACK path's backward (kept pairs only) is finite and right when discarded eigenvalues repeat."""
    generator = torch.Generator().manual_seed(17)
    q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=generator))[0]
    a = (q * torch.tensor([3.0, 2.0, 0.5, 0.5, 0.5, -1.0], dtype=torch.float64)) @ q.mT
    a = ((a + a.mT) / 2).requires_grad_()
    backend = BatchedDCBackend(k=2, which="largest", method="auto")
    pairs = backend((a + a.mT) / 2)
    assert torch.allclose(pairs.eigenvalues, torch.tensor([3.0, 2.0], dtype=torch.float64), atol=1e-12)

    def projector(x):
        vectors = backend((x + x.mT) / 2).eigenvectors
        return vectors @ vectors.mT

    assert torch.autograd.gradcheck(projector, (a,))
    assert torch.autograd.gradcheck(lambda x: backend((x + x.mT) / 2).eigenvalues, (a,))
