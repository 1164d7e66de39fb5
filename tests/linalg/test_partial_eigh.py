import numpy as np
import pytest
import torch

from lowrank_gnn.linalg import SUBSET_MIN_SIZE, eigh_extremal, subset_pays
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]
METHODS = ["subset", "full", "auto"]
TOL = {torch.float32: 1e-4, torch.float64: 1e-11}


def dense_laplacian(graph, dtype=torch.float64):
    """The combinatorial Laplacian ``D - A`` of a reference graph, dense."""
    n = graph.num_nodes
    adjacency = torch.zeros(n, n, dtype=dtype)
    adjacency[graph.edge_index[0], graph.edge_index[1]] = 1.0
    return torch.diag(adjacency.sum(1)) - adjacency


def random_symmetric(n, *batch, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, n, n, generator=gen, dtype=torch.float64)
    return ((a + a.mT) / 2).to(dtype)


def reference(matrix, k, which):
    """float64 numpy eigh: the ``k`` wanted values in the documented order, and their vectors."""
    values, vectors = np.linalg.eigh(matrix.double().cpu().numpy())
    if which == "largest":
        values, vectors = values[::-1], vectors[:, ::-1]
    return values[:k], vectors[:, :k]


def check_pairs(matrix, values, vectors, k, which, dtype, subspace=True):
    """Values against float64 numpy, residual, orthonormality, and (when the ``k`` pairs end in a
    spectral gap) the projector ``U U^T`` against the reference's: sign- and basis-invariant."""
    ref_values, ref_vectors = reference(matrix, k, which)
    scale = max(1.0, float(np.abs(np.linalg.eigvalsh(matrix.double().cpu().numpy())).max()))
    tol = TOL[dtype] * scale
    u = vectors.double().cpu().numpy()
    a = matrix.double().cpu().numpy()
    assert values.shape == (k,) and vectors.shape == (matrix.shape[-1], k)
    assert values.dtype == dtype and vectors.dtype == dtype
    np.testing.assert_allclose(values.double().cpu().numpy(), ref_values, atol=tol, rtol=0)
    assert np.abs(a @ u - u * values.double().cpu().numpy()).max() < 10 * tol
    np.testing.assert_allclose(u.T @ u, np.eye(k), atol=10 * TOL[dtype], rtol=0)
    if subspace:
        np.testing.assert_allclose(u @ u.T, ref_vectors @ ref_vectors.T, atol=100 * tol, rtol=0)


# Known spectra. ``k`` ends in a gap of the spectrum unless marked: then only values, residual and
# orthonormality are checked (the eigenspace of a repeated eigenvalue split by ``k`` is not unique).
KNOWN = [
    (path_graph(12), 4, "smallest", True),
    (path_graph(12), 3, "largest", True),
    (cycle_graph(10), 3, "smallest", True),     # 0, then a double eigenvalue
    (cycle_graph(10), 2, "smallest", False),    # splits the double eigenvalue
    (complete_graph(6), 1, "smallest", True),
    (complete_graph(6), 5, "largest", True),    # n with multiplicity n - 1: the whole eigenspace
    (disjoint_union(complete_graph(4), path_graph(5), cycle_graph(6)), 3, "smallest", True),  # 0 three times
    (disjoint_union(path_graph(30), cycle_graph(20), complete_graph(8), path_graph(16)), 4, "smallest", True),
    (disjoint_union(path_graph(30), cycle_graph(20), complete_graph(8), path_graph(16)), 6, "largest", False),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("graph, k, which, subspace", KNOWN, ids=lambda v: getattr(v, "name", str(v)))
def test_known_spectra(method, dtype, graph, k, which, subspace):
    matrix = dense_laplacian(graph, dtype)
    values, vectors = eigh_extremal(matrix, k, which, method=method)
    known = graph.laplacian_eigenvalues
    expected = known[:k] if which == "smallest" else known.flip(0)[:k]
    torch.testing.assert_close(values.double(), expected, atol=TOL[dtype] * float(known.max()), rtol=0)
    check_pairs(matrix, values, vectors, k, which, dtype, subspace)


@pytest.mark.parametrize("method", METHODS)
def test_null_space_of_a_disconnected_graph_is_spanned_by_the_components(method):
    parts = (path_graph(30), cycle_graph(20), complete_graph(8), path_graph(16))
    graph = disjoint_union(*parts)
    assert graph.num_nodes >= SUBSET_MIN_SIZE  # "auto" takes the subset solver here
    values, vectors = eigh_extremal(dense_laplacian(graph), len(parts), method=method)
    projector, start = torch.zeros(graph.num_nodes, graph.num_nodes, dtype=torch.float64), 0
    for part in parts:
        projector[start:start + part.num_nodes, start:start + part.num_nodes] = 1.0 / part.num_nodes
        start += part.num_nodes
    assert values.abs().max() < 1e-12
    torch.testing.assert_close(vectors @ vectors.T, projector, atol=1e-11, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("which", ["smallest", "largest"])
@pytest.mark.parametrize("n, k", [(1, 1), (5, 5), (20, 3), (90, 9)])
def test_random_batches_against_numpy(device, method, dtype, which, n, k):
    if device != "cpu" and method == "subset":
        pytest.skip("the subset solver is CPU-only")
    matrices = random_symmetric(n, 3, seed=n + k, dtype=dtype).to(device)
    values, vectors = eigh_extremal(matrices, k, which, method=method)
    assert values.shape == (3, k) and vectors.shape == (3, n, k) and values.device == matrices.device
    for b in range(3):
        check_pairs(matrices[b], values[b], vectors[b], k, which, dtype)
    order = values.diff(dim=-1)
    assert bool((order >= 0).all()) if which == "smallest" else bool((order <= 0).all())


def test_lower_triangle_is_read():
    matrix = random_symmetric(70, seed=3)
    garbage = matrix.tril() + torch.triu(torch.full_like(matrix, 1e3), diagonal=1)
    for method in METHODS:
        values, vectors = eigh_extremal(garbage, 5, method=method)
        check_pairs(matrix, values, vectors, 5, "smallest", torch.float64)


@pytest.mark.parametrize("n", [20, 100])
@pytest.mark.parametrize("which", ["smallest", "largest"])
def test_a_matrix_gets_the_same_bits_alone_and_in_any_batch(n, which):
    matrices = random_symmetric(n, 6, seed=n)
    values, vectors = eigh_extremal(matrices, 4, which)
    again = eigh_extremal(matrices, 4, which)
    assert torch.equal(values, again[0]) and torch.equal(vectors, again[1])
    for b in range(6):
        alone = eigh_extremal(matrices[b], 4, which)
        assert torch.equal(values[b], alone[0]) and torch.equal(vectors[b], alone[1])
    part = eigh_extremal(matrices[2:5], 4, which)
    assert torch.equal(values[2:5], part[0]) and torch.equal(vectors[2:5], part[1])


@pytest.mark.parametrize("n", [20, 100])
def test_check_finite_false_skips_only_the_check(n):
    matrices = random_symmetric(n, 3, seed=n)
    checked = eigh_extremal(matrices, 4)
    unchecked = eigh_extremal(matrices, 4, check_finite=False)
    assert torch.equal(checked[0], unchecked[0]) and torch.equal(checked[1], unchecked[1])
    bad = matrices.clone()
    bad[1, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        eigh_extremal(bad, 4)


def test_auto_takes_the_subset_solver_where_it_pays():
    assert subset_pays(SUBSET_MIN_SIZE, 6, torch.device("cpu"))
    assert not subset_pays(SUBSET_MIN_SIZE - 1, 1, torch.device("cpu"))
    assert not subset_pays(100, 11, torch.device("cpu"))    # k above the fraction
    assert not subset_pays(1000, 9, torch.device("meta"))   # not a CPU tensor
    for n, k in [(100, 9), (30, 3), (100, 20)]:
        matrix = random_symmetric(n, seed=k)
        expected = "subset" if subset_pays(n, k, matrix.device) else "full"
        auto, chosen = eigh_extremal(matrix, k), eigh_extremal(matrix, k, method=expected)
        assert torch.equal(auto[0], chosen[0]) and torch.equal(auto[1], chosen[1])


def test_batch_dimensions_and_empty_batches():
    matrices = random_symmetric(8, 2, 3, seed=1)
    values, vectors = eigh_extremal(matrices, 2, "largest", method="subset")
    assert values.shape == (2, 3, 2) and vectors.shape == (2, 3, 8, 2)
    full = eigh_extremal(matrices, 2, "largest", method="full")
    torch.testing.assert_close(values, full[0], atol=1e-12, rtol=0)
    for method in METHODS:
        values, vectors = eigh_extremal(torch.zeros(0, 8, 8), 3, method=method)
        assert values.shape == (0, 3) and vectors.shape == (0, 8, 3)


@pytest.mark.parametrize("which", ["smallest", "largest"])
def test_a_lapack_failure_falls_back_to_the_full_solve(monkeypatch, which):
    from scipy.linalg import get_lapack_funcs

    def failing(name, dtype):
        syevr = get_lapack_funcs(name, dtype=dtype)

        def call(array, **kwargs):
            w, z, found, isuppz, _ = syevr(array, **kwargs)
            return w, z, found, isuppz, 3  # LAPACK's "failed to converge"
        return call

    monkeypatch.setattr("scipy.linalg.get_lapack_funcs", failing)
    matrices = random_symmetric(30, 2, seed=4)
    values, vectors = eigh_extremal(matrices, 4, which, method="subset")
    for b in range(2):
        check_pairs(matrices[b], values[b], vectors[b], 4, which, torch.float64)
    full = eigh_extremal(matrices, 4, which, method="full")
    assert torch.equal(values, full[0]) and torch.equal(vectors, full[1])


def test_bad_input_is_refused_with_a_clear_error():
    good = random_symmetric(6)
    with pytest.raises(ValueError, match=r"shape \(\*batch, n, n\)"):
        eigh_extremal(torch.zeros(4, 5), 2)
    with pytest.raises(ValueError, match=r"shape \(\*batch, n, n\)"):
        eigh_extremal(torch.zeros(4), 2)
    with pytest.raises(TypeError, match="floating-point"):
        eigh_extremal(torch.zeros(3, 3, dtype=torch.long), 1)
    with pytest.raises(TypeError, match="float16"):
        eigh_extremal(good.half(), 1)
    with pytest.raises(TypeError, match="floating-point"):
        eigh_extremal(good.to(torch.complex128), 1)
    for k in (0, 7, 2.0, True):
        with pytest.raises(ValueError, match=r"k must satisfy 1 <= k <= the matrix size n=6"):
            eigh_extremal(good, k)
    with pytest.raises(ValueError, match="which must be one of 'smallest', 'largest'"):
        eigh_extremal(good, 2, which="magnitude")
    with pytest.raises(ValueError, match="method must be one of 'auto', 'subset', 'full'"):
        eigh_extremal(good, 2, method="evr")
    with pytest.raises(ValueError, match="CPU tensors only"):
        eigh_extremal(torch.zeros(4, 4, device="meta"), 2, method="subset")
    with pytest.raises(ValueError, match="no gradient"):
        eigh_extremal(good.clone().requires_grad_(), 2)
    with torch.no_grad():
        assert eigh_extremal(good.clone().requires_grad_(), 2)[0].shape == (2,)
    bad = good.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        eigh_extremal(bad, 2)

