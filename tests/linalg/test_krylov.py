import pytest
import torch

from lowrank_gnn.linalg import KRYLOV_BREAKDOWN_EPS, block_krylov
from lowrank_gnn.operators import normalized_adjacency
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.testing.conformance import random_symmetric

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]
#: orthonormality and agreement with the float64 reference, per dtype
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def graph_matrix(graph):
    weight = torch.ones(graph.edge_index.shape[1], dtype=torch.float64)
    return normalized_adjacency(graph.edge_index, weight, graph.num_nodes).to_dense()


def gaussian(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def krylov_reference(matrix, start, steps, deflate=None):
    """Orthonormal basis of span{B, PAB, ..., (PA)^r B} in float64 from the explicit Krylov matrix."""
    matrix, block = matrix.double(), start.double()
    project = torch.eye(matrix.shape[-1], dtype=torch.float64)
    if deflate is not None:
        project = project - deflate.double() @ deflate.double().mT
    block = project @ block
    blocks = [block]
    for _ in range(steps):
        block = project @ (matrix @ block)
        blocks.append(block)
    q, _ = torch.linalg.qr(torch.cat(blocks, -1))
    return q


def assert_orthonormal(q, tol):
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)
    assert (q.mT @ q - eye).abs().max() <= tol


def assert_same_span(q, reference, tol):
    """Sign- and rotation-invariant: equal orthogonal projectors."""
    q, reference = q.double(), reference.double()
    assert (q @ q.mT - reference @ reference.mT).abs().max() <= tol


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("steps", [0, 1, 3])
def test_basis_spans_the_block_krylov_space_and_projects_the_operator(steps, dtype, device):
    matrix = random_symmetric(40, dtype=dtype, seed=1).to(device)
    start = gaussian(40, 3, seed=2, dtype=dtype).to(device)
    calls = []

    def matmul(x):
        calls.append(x.shape[-1])
        return matrix @ x

    krylov = block_krylov(matmul, start, steps)
    q = krylov.basis
    assert q.shape == (40, 3 * (steps + 1)) and bool(krylov.kept.all()) and len(calls) == steps + 1
    assert_orthonormal(q, TOL[dtype])
    assert_same_span(q.cpu(), krylov_reference(matrix.cpu(), start.cpu(), steps), 1e3 * TOL[dtype])
    expected = q.double().mT @ matrix.double() @ q.double()
    assert (krylov.projection.double() - expected).abs().max() <= TOL[dtype] * float(matrix.abs().max()) * 10
    assert torch.equal(krylov.projection, krylov.projection.mT)


def test_an_exhausted_space_ends_early_with_the_spectrum_of_the_start_vector():
    """diag(0..5) from a vector touching every eigenvector: the space is all of R^6 after 6 blocks."""
    matrix = torch.diag(torch.arange(6.0, dtype=torch.float64))
    calls = []
    krylov = block_krylov(lambda x: calls.append(1) or matrix @ x, torch.ones(6, 1, dtype=torch.float64), steps=10)
    assert krylov.basis.shape == (6, 6) and len(calls) == 6
    assert_orthonormal(krylov.basis, 1e-13)
    assert torch.allclose(torch.linalg.eigvalsh(krylov.projection), torch.arange(6.0, dtype=torch.float64), atol=1e-12)


def test_repeated_eigenvalues_of_a_cycle_give_one_krylov_direction_per_distinct_eigenvalue():
    """C_12: eigenvalues (1 + 2 cos(2 pi j / 12)) / 3, j = 0..11, 7 distinct: a single start vector spans 7 dims."""
    matrix = graph_matrix(cycle_graph(12))
    angles = 2 * torch.pi * torch.arange(12, dtype=torch.float64) / 12
    distinct = torch.unique(torch.round((1 + 2 * torch.cos(angles)) / 3, decimals=10))
    krylov = block_krylov(matrix.__matmul__, gaussian(12, 1, seed=3), steps=20)
    assert krylov.basis.shape == (12, distinct.numel())
    assert_orthonormal(krylov.basis, 1e-13)
    assert torch.allclose(torch.linalg.eigvalsh(krylov.projection), distinct, atol=1e-10)


def test_a_start_on_one_component_of_a_disconnected_graph_stays_on_it():
    graph = disjoint_union(path_graph(5), cycle_graph(6), complete_graph(4))   # nodes 0-4, 5-10, 11-14
    matrix = graph_matrix(graph)
    start = torch.zeros(15, 2, dtype=torch.float64)
    start[:5] = gaussian(5, 2, seed=4)
    krylov = block_krylov(matrix.__matmul__, start, steps=6)
    assert krylov.basis.shape == (15, 5)                         # the path's 5 nodes, no more
    assert krylov.basis[5:].abs().max() <= 1e-14
    reference = torch.linalg.eigvalsh(graph_matrix(path_graph(5)))
    assert torch.allclose(torch.linalg.eigvalsh(krylov.projection), reference, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_deflation_keeps_the_space_in_the_complement(dtype):
    """P A on the complement of the top-3 eigenvectors: the Ritz values of the full space are the rest."""
    matrix = graph_matrix(path_graph(12))
    values, vectors = torch.linalg.eigh(matrix)
    deflate = vectors[:, -3:].to(dtype)
    start = gaussian(12, 2, seed=5, dtype=dtype)
    krylov = block_krylov(matrix.to(dtype).__matmul__, start, steps=10, deflate=deflate)
    assert krylov.basis.shape == (12, 9)
    assert (deflate.mT @ krylov.basis).abs().max() <= TOL[dtype]
    assert_orthonormal(krylov.basis, TOL[dtype])
    assert torch.allclose(torch.linalg.eigvalsh(krylov.projection).double(), values[:-3], atol=10 * TOL[dtype])
    assert_same_span(krylov.basis, krylov_reference(matrix, start, 10, deflate)[:, :9], 100 * TOL[dtype])


def test_zero_and_dependent_start_columns_are_dropped():
    matrix = random_symmetric(20, seed=6)
    v = gaussian(20, 1, seed=7)
    start = torch.cat([v, torch.zeros_like(v), 2 * v, v * (1 + 1e-17)], -1)   # rank one
    krylov = block_krylov(matrix.__matmul__, start, steps=3)
    assert krylov.basis.shape == (20, 4)
    assert_orthonormal(krylov.basis, 1e-13)
    assert_same_span(krylov.basis, krylov_reference(matrix, v, 3), 1e-10)


def test_a_start_in_the_deflated_space_gives_an_empty_basis():
    """Start columns inside span(deflate) are rounding after the projection: nothing is left."""
    _, vectors = torch.linalg.eigh(random_symmetric(10, seed=8))
    deflate = vectors[:, :4]
    krylov = block_krylov(random_symmetric(10, seed=8).__matmul__, deflate @ gaussian(4, 3, seed=9), steps=4,
                          deflate=deflate)
    assert krylov.basis.shape == (10, 0) and krylov.projection.shape == (0, 0)


@pytest.mark.parametrize("dtype,ratio", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=str)
def test_directions_far_below_the_largest_but_above_rounding_are_kept_orthonormal(dtype, ratio):
    """Singular values 1 and `ratio`, mixed in both columns: the Gram matrix (ratio^2 against 1) cannot
    resolve the small direction, yet it is far above rounding. The basis keeps it, orthonormal to rounding."""
    assert ratio > 5 * KRYLOV_BREAKDOWN_EPS * torch.finfo(dtype).eps
    q, _ = torch.linalg.qr(gaussian(30, 2, seed=10))
    rotation = torch.tensor([[1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64) / 2 ** 0.5
    start = (q @ torch.diag(torch.tensor([1.0, ratio], dtype=torch.float64)) @ rotation).to(dtype)
    krylov = block_krylov(random_symmetric(30, dtype=dtype, seed=11).__matmul__, start, steps=0)
    assert krylov.basis.shape == (30, 2)
    assert_orthonormal(krylov.basis, TOL[dtype])
    basis = krylov.basis
    assert (start - basis @ (basis.mT @ start)).norm() <= 10 * torch.finfo(dtype).eps * start.norm()


@pytest.mark.parametrize("scale,dtype", [(1e30, torch.float32), (1e-30, torch.float32), (1e150, torch.float64),
                                         (1e-150, torch.float64)], ids=str)
def test_any_scale_of_operator_and_start_that_the_dtype_holds(scale, dtype):
    """Squares of these entries over- or underflow: the basis and projection are those of the unit problem."""
    matrix = random_symmetric(24, seed=12)
    start = gaussian(24, 2, seed=13)
    unit = block_krylov(matrix.__matmul__, start, steps=3)
    scaled = (matrix * scale).to(dtype)
    krylov = block_krylov(scaled.__matmul__, (start * scale).to(dtype), steps=3)
    assert bool(torch.isfinite(krylov.basis).all()) and bool(torch.isfinite(krylov.projection).all())
    assert krylov.basis.shape == unit.basis.shape
    assert_same_span(krylov.basis, unit.basis, 1e3 * TOL[dtype])
    assert torch.allclose(torch.linalg.eigvalsh(krylov.projection.double()) / scale,
                          torch.linalg.eigvalsh(unit.projection), rtol=0, atol=1e2 * TOL[dtype] * 10)


def test_a_gram_matrix_that_would_overflow_is_rescaled():
    """A B_0 ~ 1e-10 sets the unit of the images; the next one, projected, is 1e20 e_3: 1e30 units, whose
    square overflows float32. The space is all of R^3, with A's eigenvalues as Ritz values."""
    matrix = torch.tensor([[1e-20, 0.0, 0.0], [0.0, 1e20, 1e20], [0.0, 1e20, 1.0]])
    start = torch.tensor([[1.0], [1e-30], [0.0]])
    krylov = block_krylov(matrix.__matmul__, start, steps=3)
    assert bool(torch.isfinite(krylov.basis).all()) and bool(torch.isfinite(krylov.projection).all())
    assert krylov.basis.shape == (3, 3)
    assert_orthonormal(krylov.basis, 1e-6)
    ritz = torch.linalg.eigvalsh(krylov.projection.double())
    assert torch.allclose(ritz, torch.linalg.eigvalsh(matrix.double()), rtol=0, atol=1e-6 * 1e20)


def test_max_dim_truncates_the_last_block_to_its_largest_directions():
    matrix = random_symmetric(30, seed=14)
    start = gaussian(30, 4, seed=15)
    krylov = block_krylov(matrix.__matmul__, start, steps=5, max_dim=10)
    assert krylov.basis.shape == (30, 10)
    assert_orthonormal(krylov.basis, 1e-13)
    assert_same_span(krylov.basis[:, :8], krylov_reference(matrix, start, 1), 1e-10)   # two whole blocks
    assert block_krylov(matrix.__matmul__, start, steps=5, max_dim=0).basis.shape == (30, 0)


def test_start_orthonormal_uses_the_start_as_it_is():
    matrix = random_symmetric(20, seed=16)
    start, _ = torch.linalg.qr(gaussian(20, 3, seed=17))
    krylov = block_krylov(matrix.__matmul__, start, steps=2, start_orthonormal=True)
    assert torch.equal(krylov.basis[:, :3], start)
    assert_same_span(krylov.basis, krylov_reference(matrix, start, 2), 1e-10)


def test_batch_entries_drop_directions_separately_as_zero_columns():
    matrix = torch.stack([random_symmetric(12, seed=18), random_symmetric(12, seed=19)])
    start = gaussian(2, 12, 3, seed=20)
    start[0, :, 2] = 0                                     # entry 0: a zero column, entry 1: three directions
    krylov = block_krylov(matrix.__matmul__, start, steps=2)
    assert krylov.basis.shape == (2, 12, 9)
    assert krylov.kept.sum(-1).tolist() == [6, 9]
    assert krylov.basis[0][:, ~krylov.kept[0]].abs().max() == 0
    for entry in range(2):
        own = block_krylov(matrix[entry].__matmul__, start[entry], steps=2)
        assert_same_span(krylov.basis[entry][:, krylov.kept[entry]], own.basis, 1e-10)
        kept = krylov.kept[entry]
        assert torch.allclose(torch.linalg.eigvalsh(krylov.projection[entry][kept][:, kept]),
                              torch.linalg.eigvalsh(own.projection), atol=1e-12)


@pytest.mark.parametrize("kwargs,match", [
    ({"steps": -1}, r"steps must be a non-negative integer \(got steps=-1\)"),
    ({"steps": 1.5}, r"steps must be a non-negative integer"),
    ({"steps": 2, "max_dim": -3}, r"max_dim must be a non-negative integer or None \(got max_dim=-3\)"),
    ({"steps": 2, "deflate": torch.zeros(7, 2, dtype=torch.float64)}, r"deflate must have shape \(\*batch, n, m\)"),
])
def test_bad_arguments_are_refused_with_the_argument_named(kwargs, match):
    matrix = random_symmetric(6, seed=21)
    with pytest.raises(ValueError, match=match):
        block_krylov(matrix.__matmul__, gaussian(6, 2), **kwargs)


def test_a_start_that_is_not_a_floating_block_is_refused():
    with pytest.raises(ValueError, match="start"):
        block_krylov(lambda x: x, torch.ones(5), steps=1)
    with pytest.raises((ValueError, TypeError), match="start"):
        block_krylov(lambda x: x, torch.ones(5, 2, dtype=torch.long), steps=1)
