import numpy as np
import pytest
import scipy.sparse
import torch

from lowrank_gnn.linalg import BAND_MAX_FRACTION, BAND_MIN_SIZE, band_pays, eigh_extremal, sparse_eigh_extremal
from lowrank_gnn.linalg import banded
from lowrank_gnn.testing import ReferenceGraph, complete_graph, cycle_graph, disjoint_union, path_graph

TOL = 1e-13


def sparse_laplacian(graph, weight=None, normalized=False):
    """``D - A`` (or ``I - D^-1/2 A D^-1/2``) of a reference graph as a SciPy CSR matrix, rows shuffled
    so that the band reordering has work to do."""
    n = graph.num_nodes
    row, col = graph.edge_index.numpy()
    values = np.ones(row.size) if weight is None else weight
    adjacency = scipy.sparse.csr_matrix((values, (row, col)), shape=(n, n))
    degree = np.asarray(adjacency.sum(1)).ravel()
    if normalized:
        scale = scipy.sparse.diags(np.where(degree > 0, degree, 1.0) ** -0.5)
        matrix = scipy.sparse.eye(n) - scale @ adjacency @ scale
    else:
        matrix = scipy.sparse.diags(degree) - adjacency
    order = np.random.default_rng(n).permutation(n)
    return scipy.sparse.csr_matrix(matrix)[order][:, order]


def undirected(pairs):
    index = torch.tensor(pairs).t()
    return torch.cat([index, index.flip(0)], 1)


def star_graph(n):
    """The star K_{1, n-1}: Laplacian eigenvalues 0, 1 (n - 2 times) and n."""
    values = torch.tensor([0.0] + [1.0] * (n - 2) + [float(n)], dtype=torch.float64)
    return ReferenceGraph(f"star{n}", undirected([(0, i) for i in range(1, n)]), n, values)


def reference(matrix, k, which):
    values, vectors = np.linalg.eigh(matrix.toarray())
    if which == "largest":
        values, vectors = values[::-1], vectors[:, ::-1]
    return values, vectors


def check_pairs(matrix, values, vectors, k, which, subspace=True):
    """Values against float64 numpy, residuals, orthonormality and, where the ``k`` pairs end in a
    spectral gap, the projector ``U U^T`` (sign- and basis-invariant)."""
    all_values, all_vectors = reference(matrix, k, which)
    scale = max(1.0, float(np.abs(all_values).max()))
    a, u, w = matrix.toarray(), vectors.numpy(), values.numpy()
    assert values.dtype == vectors.dtype == torch.float64 and vectors.shape == (matrix.shape[0], k)
    np.testing.assert_allclose(w, all_values[:k], atol=TOL * scale, rtol=0)
    assert np.linalg.norm(a @ u - u * w, axis=0).max() < TOL * scale
    np.testing.assert_allclose(u.T @ u, np.eye(k), atol=TOL, rtol=0)
    if subspace:
        ref = all_vectors[:, :k]
        np.testing.assert_allclose(u @ u.T, ref @ ref.T, atol=1e-11, rtol=0)


# (graph, k, which, whether k ends in a gap of the spectrum)
KNOWN = [
    (path_graph(40), 5, "smallest", True),
    (path_graph(40), 4, "largest", True),
    (cycle_graph(30), 3, "smallest", True),     # 0, then a double eigenvalue
    (cycle_graph(30), 2, "smallest", False),    # splits the double eigenvalue: taken whole, then cut
    (cycle_graph(30), 5, "largest", True),
    (complete_graph(7), 1, "smallest", True),
    (complete_graph(7), 6, "largest", True),    # n with multiplicity n - 1
    (star_graph(25), 3, "largest", False),      # 25 once, then 1 with multiplicity 23
    (disjoint_union(complete_graph(4), path_graph(5), cycle_graph(6)), 3, "smallest", True),  # 0 three times
    (disjoint_union(*[path_graph(6)] * 12), 9, "smallest", False),  # 0 twelve times, k = 9 splits it
]


@pytest.mark.parametrize("graph, k, which, subspace", KNOWN, ids=lambda v: getattr(v, "name", str(v)))
def test_known_spectra(graph, k, which, subspace):
    matrix = sparse_laplacian(graph)
    values, vectors = sparse_eigh_extremal(matrix, k, which, method="band")
    known = graph.laplacian_eigenvalues
    expected = known[:k] if which == "smallest" else known.flip(0)[:k]
    torch.testing.assert_close(values, expected, atol=TOL * float(known.max()), rtol=0)
    check_pairs(matrix, values, vectors, k, which, subspace)


@pytest.mark.parametrize("which", ["smallest", "largest"])
def test_weighted_normalized_laplacians_of_long_chains(which):
    """Contact-graph-like chains (each node joined to a few of its next neighbours, random weights),
    several components: the kind of matrix the band path is for."""
    generator = np.random.default_rng(0)
    pairs, offset = [], 0
    for n in (300, 200, 150):
        pairs += [(offset + i, offset + j) for i in range(n) for j in range(i + 1, min(n, i + 6))
                  if j == i + 1 or generator.random() < 0.4]
        offset += n
    graph = ReferenceGraph("chains", undirected(pairs), offset, torch.zeros(offset))  # spectrum unused
    half = generator.uniform(0.1, 2.0, len(pairs))
    matrix = sparse_laplacian(graph, np.concatenate([half, half]), normalized=True)
    values, vectors = sparse_eigh_extremal(matrix, 9, which, method="band")
    check_pairs(matrix, values, vectors, 9, which)


def test_protein_graphs():
    """The largest graphs of PROTEINS, with their normalized Laplacians."""
    from lowrank_gnn.data import load_tu

    try:
        dataset = load_tu("PROTEINS")
    except Exception as error:  # no network and no seeded copy
        pytest.skip(f"PROTEINS not available: {error}")
    sizes = torch.tensor([dataset[i].num_nodes for i in range(len(dataset))])
    for index in sizes.argsort(descending=True)[:4].tolist():
        data = dataset[index]
        graph = ReferenceGraph("protein", data.edge_index, data.num_nodes, torch.zeros(data.num_nodes))
        matrix = sparse_laplacian(graph, normalized=True)
        values, vectors = sparse_eigh_extremal(matrix, 9, method="band")
        check_pairs(matrix, values, vectors, 9, "smallest", subspace=False)


def test_deterministic_and_equal_to_the_dense_path_where_auto_declines():
    matrix = sparse_laplacian(disjoint_union(path_graph(BAND_MIN_SIZE), cycle_graph(50)), normalized=True)
    first, second = sparse_eigh_extremal(matrix, 6), sparse_eigh_extremal(matrix, 6)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    check_pairs(matrix, *first, 6, "smallest", subspace=False)  # 0 twice, then a double eigenvalue of the cycle
    small = sparse_laplacian(cycle_graph(20))
    dense = torch.from_numpy(small.toarray())
    for method in ("auto", "dense"):  # 20 < BAND_MIN_SIZE: auto is the dense path
        values, vectors = sparse_eigh_extremal(small, 3, method=method)
        expected = eigh_extremal(dense, 3)
        assert torch.equal(values, expected[0]) and torch.equal(vectors, expected[1])


def test_a_huge_cluster_goes_to_the_dense_solver():
    """The identity: one eigenvalue of multiplicity n, far more than k; the dense solver answers."""
    matrix = scipy.sparse.identity(300, format="csr")
    values, vectors = sparse_eigh_extremal(matrix, 5, method="band")
    expected = eigh_extremal(torch.eye(300, dtype=torch.float64), 5)
    assert torch.equal(values, expected[0]) and torch.equal(vectors, expected[1])


def test_band_pays():
    n = BAND_MIN_SIZE
    assert band_pays(n, int(BAND_MAX_FRACTION * n)) and not band_pays(n, int(BAND_MAX_FRACTION * n) + 1)
    assert not band_pays(n - 1, 1)


def test_unconverged_pairs_fall_back_to_the_dense_solver(monkeypatch):
    """With a residual bound no pair can meet, every round fails and the dense solver answers."""
    monkeypatch.setattr(banded, "_RESIDUAL", 0.0)
    matrix = sparse_laplacian(path_graph(60))
    values, vectors = sparse_eigh_extremal(matrix, 4, method="band")
    expected = eigh_extremal(torch.from_numpy(matrix.toarray()), 4)
    assert torch.equal(values, expected[0]) and torch.equal(vectors, expected[1])


def test_only_the_lower_triangle_is_read():
    matrix = sparse_laplacian(path_graph(50))
    lower = scipy.sparse.tril(matrix, format="csr")
    for one, other in zip(sparse_eigh_extremal(matrix, 3, method="band"),
                          sparse_eigh_extremal(lower, 3, method="band"), strict=True):
        assert torch.equal(one, other)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("scale", [0.0, 1e-300, 1e300, 1.7e308])
def test_extreme_scales(scale):
    """Scaled by a power of two inside, so neither tiny nor huge entries over- or underflow."""
    diagonal = np.array([3.0, -1.0, 2.0, 0.5, -1.0]) * (scale / 3.0)
    off = np.full(4, scale / 30.0)
    matrix = scipy.sparse.diags([off, diagonal, off], [-1, 0, 1], format="csr")
    for which in ("smallest", "largest"):
        values, vectors = sparse_eigh_extremal(matrix, 2, which, method="band")
        expected = reference(matrix, 2, which)[0][:2]
        np.testing.assert_allclose(values.numpy(), expected, rtol=1e-13, atol=0)
        assert np.isfinite(vectors.numpy()).all()


def test_rejects_bad_input():
    matrix = sparse_laplacian(path_graph(10))
    with pytest.raises(TypeError, match="SciPy sparse matrix"):
        sparse_eigh_extremal(matrix.toarray(), 2)
    with pytest.raises(ValueError, match="square"):
        sparse_eigh_extremal(matrix[:, :9], 2)
    with pytest.raises(TypeError, match="float64"):
        sparse_eigh_extremal(matrix.astype(np.float32), 2)
    with pytest.raises(ValueError, match="k must satisfy"):
        sparse_eigh_extremal(matrix, 11)
    with pytest.raises(ValueError, match="which must be one of"):
        sparse_eigh_extremal(matrix, 2, which="magnitude")
    with pytest.raises(ValueError, match="method must be one of"):
        sparse_eigh_extremal(matrix, 2, method="lanczos")
    bad = matrix.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        sparse_eigh_extremal(bad, 2)
