"""The shared conventions of lowrank_gnn.eigen.base, on inputs built to hit their edge cases."""
import pytest
import torch

from lowrank_gnn.eigen.base import (
    SIGN_PIVOT_PREFIX,
    SIGN_WHOLE_COLUMN_ROWS,
    canonical_signs,
    order_indices,
    select_eigenpairs,
    sign_factors,
)


@pytest.mark.parametrize("n, columns", [
    (SIGN_WHOLE_COLUMN_ROWS, 4),      # short columns: searched whole at once
    (SIGN_WHOLE_COLUMN_ROWS + 8, 4),  # not tall: the head, then each column without a pivot there
    (1056, 4),                        # tall (n > 16 k): the whole block at once
    (1056, 80),                       # long, not tall: the head, then each missing column
])
def test_canonical_signs_finds_pivots_inside_and_beyond_the_searched_prefix(n, columns):
    vectors = torch.zeros(n, columns, dtype=torch.float64)
    vectors[:, 0] = torch.linspace(-1, 0.5, n)                # pivot at row 0 (negative): flipped
    vectors[3, 1], vectors[n - 1, 1] = -0.05, 1.0             # -0.05 < 0.1 * 1: pivot is the last row
    vectors[n - 2, 2], vectors[n - 1, 2] = -1.0, 1.0          # beyond the prefix, first of a tie: flipped
    signs = torch.ones(columns, dtype=torch.float64)
    signs[0] = signs[2] = -1.0
    expected = vectors * signs  # column 3 (and any further) is zero: kept
    assert torch.equal(canonical_signs(vectors), expected)
    batch = torch.stack([vectors, -vectors])
    assert torch.equal(canonical_signs(batch), torch.stack([expected, expected]))


def test_select_eigenpairs_in_order_or_not_gives_the_same_pairs():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(2, 30, 4, generator=generator, dtype=torch.float64)
    values = torch.tensor([[3.0, 2.0, 1.0, -4.0], [1.0, 2.0, 3.0, 0.0]], dtype=torch.float64)
    permutation = torch.tensor([2, 0, 3, 1])
    for which in ("largest", "smallest", "magnitude"):
        in_order = select_eigenpairs(values, vectors, 4, which)
        shuffled = select_eigenpairs(values[:, permutation], vectors[:, :, permutation], 4, which)
        assert torch.equal(in_order[0], shuffled[0]) and torch.equal(in_order[1], shuffled[1])
    ordered, signed = select_eigenpairs(values[:1], vectors[:1], 4, "largest")  # the identity-order shortcut
    assert torch.equal(ordered, values[:1]) and torch.equal(signed, canonical_signs(vectors[:1]))


def test_select_eigenpairs_shortcuts_match_the_general_sort():
    """Strictly monotone values take a flip or no reordering; ties and magnitude take the sort."""
    generator = torch.Generator().manual_seed(1)
    vectors = torch.randn(3, 12, 5, generator=generator, dtype=torch.float64)
    ascending = torch.tensor([[-2.0, -1.0, 0.0, 1.0, 4.0], [0.0, 1.0, 2.0, 3.0, 5.0], [-5.0, -4.0, -3.0, 2.0, 3.0]],
                             dtype=torch.float64)
    tied = ascending.clone()
    tied[1, 2] = tied[1, 1]                                     # one exact tie: the stable sort keeps index order
    for values in (ascending, ascending.flip(-1), tied):
        for which in ("largest", "smallest", "magnitude"):
            for k in (5, 2):
                index = order_indices(values, which)[..., :k]
                expected_vectors = canonical_signs(vectors.gather(-1, index.unsqueeze(-2).expand(3, 12, k)))
                got_values, got_vectors = select_eigenpairs(values, vectors, k, which)
                assert torch.equal(got_values, values.gather(-1, index))
                assert torch.equal(got_vectors, expected_vectors)


def test_canonical_signs_of_an_empty_batch_and_of_columns_without_a_head_pivot():
    assert canonical_signs(torch.zeros(0, 4, 3)).shape == (0, 4, 3)
    vectors = torch.zeros(2, SIGN_WHOLE_COLUMN_ROWS + 3, 2)
    vectors[0, -1, 0], vectors[1, -2, 1], vectors[1, 0, 0] = -1.0, -2.0, 3.0   # pivots past the head in two columns
    signed = canonical_signs(vectors)
    assert signed[0, -1, 0] == 1.0 and signed[1, -2, 1] == 2.0 and signed[1, 0, 0] == 3.0
    assert torch.equal(signed[0, :, 1], vectors[0, :, 1])                        # zero column kept


def reference_signs(vectors):
    """The convention spelled out column by column: first entry with |u| >= 0.1 max|u| made positive."""
    out = vectors.clone()
    for block in out.reshape(-1, *out.shape[-2:]):
        for column in block.unbind(-1):  # views: negated in place
            large = torch.nonzero(column.abs() >= 0.1 * column.abs().max())
            if column.abs().max() > 0 and column[large[0, 0]] < 0:
                column.neg_()
    return out


def edge_case_block(batch, n, k, dtype, generator):
    """Random columns, and columns built to hit every branch of the pivot search (when k allows)."""
    vectors = torch.randn(*batch, n, k, generator=generator, dtype=dtype)
    tiny = torch.finfo(dtype).tiny * torch.finfo(dtype).eps               # the smallest subnormal
    threshold = torch.tensor(0.1, dtype=dtype) * 1.0                      # 0.1 max|u| for max|u| = 1
    cases = [torch.zeros(n, dtype=dtype)]                                 # zero column: kept
    if n >= 2:
        cases.append(torch.zeros(n, dtype=dtype).index_fill_(0, torch.tensor([1]), -tiny))  # 0.1 max|u| is 0
        cases.append(cases[-1].clone().index_fill_(0, torch.tensor([0]), -0.0))             # ...and -0.0 in row 0
    if n >= 3:
        column = torch.zeros(n, dtype=dtype)
        column[0], column[1], column[2] = -torch.nextafter(threshold, torch.zeros(())), threshold, 1.0
        cases += [column, column * torch.tensor([1.0] + [-1.0] * (n - 1), dtype=dtype)]    # |u_1| = 0.1 max|u|
    if n > SIGN_PIVOT_PREFIX + 1:
        column = torch.full((n,), 1e-3, dtype=dtype)
        column[-1], column[-2] = 1.0, -0.5                                 # pivot past the head, negative
        cases.append(column)
    for j, column in enumerate(cases[:k]):
        vectors[..., :, j] = column
    return vectors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_canonical_signs_of_short_and_long_blocks_match_the_convention_column_by_column(dtype):
    """Columns searched whole (n <= SIGN_WHOLE_COLUMN_ROWS), by a head and a second search, in both
    storage orders, batched or not: the same bits as the convention spelled out."""
    generator = torch.Generator().manual_seed(6)
    for n in (1, 2, 3, 8, SIGN_WHOLE_COLUMN_ROWS, SIGN_WHOLE_COLUMN_ROWS + 1, 40, 64):
        for k in sorted({1, min(n, 7), n}):
            for batch in ((), (3,), (2, 4)):                 # the sign search groups 1, 1 and 8 matrices
                vectors = edge_case_block(batch, n, k, dtype, generator)
                expected = reference_signs(vectors)
                for layout in (vectors, lapack_layout(vectors)):
                    signed = canonical_signs(layout)
                    assert torch.equal(signed, expected), (n, k, batch)
                    assert torch.equal(torch.signbit(signed), torch.signbit(expected)), (n, k, batch)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_canonical_signs_in_half_precision_match_the_convention(dtype):
    """Not an eigensolver dtype, but the convention still applies (thresholds in the block's dtype)."""
    generator = torch.Generator().manual_seed(7)
    for n in (5, SIGN_WHOLE_COLUMN_ROWS, 40):
        vectors = torch.randn(3, n, 6, generator=generator).to(dtype)
        vectors[0, :, 0] = 0.0
        vectors[1, :4, 1] = 1e-3
        for layout in (vectors, lapack_layout(vectors)):
            assert torch.equal(canonical_signs(layout), reference_signs(vectors)), n


def test_canonical_signs_of_tall_blocks_match_the_convention_column_by_column():
    """Tall blocks (graph eigenvectors) take the folded column maximum and the whole-block pivot search."""
    generator = torch.Generator().manual_seed(2)
    n, k = 3000, 6  # n > 16 k, and not a multiple of the fold: a remainder of rows is reduced apart
    vectors = torch.randn(3, n, k, generator=generator, dtype=torch.float64) * 1e-3
    vectors[0, :, 0] = vectors[0, :, 0].abs()
    vectors[0, 2990, 0] = -1.0                             # largest entry in the remainder rows: pivot there
    vectors[1, 500, 1], vectors[1, 400, 1] = 1.0, -0.2     # pivot past the head, before the largest entry
    vectors[2, 2, 2] = -5.0                                # pivot inside the head
    vectors[2, :, 3] = 0.0                                 # zero column: kept
    vectors[0, :, 4] = vectors[0, :, 4].abs() * -1         # every entry negative: flipped
    vectors[2, :, 5] = vectors[2, :, 5].abs()
    vectors[2, 2500, 5] = -1.0                             # pivot far down the column
    signed = canonical_signs(vectors)
    assert torch.equal(signed, reference_signs(vectors))
    assert torch.equal(canonical_signs(vectors[0]), signed[0])                       # unbatched
    assert torch.equal(canonical_signs(vectors.mT.contiguous().mT), signed)          # column-major layout


def lapack_layout(vectors):
    """The same entries, stored column by column as ``torch.linalg.eigh`` returns them."""
    return vectors.mT.contiguous().mT


@pytest.mark.parametrize("batch", [(), (3,)])
def test_select_eigenpairs_on_lapack_layout_matches_the_general_path(batch):
    """Columns stored contiguously (eigh's output) take one signed copy of the kept columns, reversed
    by index_select where needed; it gives the same bits as the general path."""
    n = SIGN_WHOLE_COLUMN_ROWS + 6
    generator = torch.Generator().manual_seed(4)
    vectors = torch.randn(*batch, n, n, generator=generator, dtype=torch.float64)
    vectors[..., :SIGN_PIVOT_PREFIX, 1] = 1e-3                 # no pivot in the head: searched whole
    vectors[..., SIGN_PIVOT_PREFIX + 2, 1] = -1.0
    vectors[..., :, 2] = 0.0                                   # zero column: kept
    vectors[..., 0, 3] = -5.0                                  # negative pivot at row 0: flipped
    values = torch.arange(n, dtype=torch.float64).expand(*batch, n) - 3.5   # strictly ascending
    stored = lapack_layout(vectors)
    assert stored.stride(-2) == 1 and torch.equal(stored, vectors)
    for which in ("largest", "smallest"):
        for k in (n, 5, 1):
            index = order_indices(values, which)[..., :k]
            expected = canonical_signs(vectors.gather(-1, index.unsqueeze(-2).expand(*batch, n, k)))
            got_values, got_vectors = select_eigenpairs(values, stored, k, which)
            assert torch.equal(got_values, values.gather(-1, index))
            assert torch.equal(got_vectors, expected), (which, k)
            assert got_vectors.mT.is_contiguous()                  # still one contiguous column per eigenvector
    assert torch.equal(stored, vectors)                            # the input is not written to


def test_select_eigenpairs_on_lapack_layout_passes_gradients_with_the_signs():
    generator = torch.Generator().manual_seed(5)
    vectors = torch.randn(2, 7, 7, generator=generator, dtype=torch.float64)
    values = torch.linspace(-1, 1, 7, dtype=torch.float64).expand(2, 7)
    weights = torch.randn(2, 7, 3, generator=generator, dtype=torch.float64)
    grads = []
    for layout in (lapack_layout, torch.Tensor.contiguous):     # the signed copy, and the flip of the general path
        leaf = layout(vectors.clone()).requires_grad_()
        _, selected = select_eigenpairs(values, leaf, 3, "largest")
        (selected * weights).sum().backward()
        grads.append(leaf.grad)
    assert torch.equal(grads[0], grads[1])
    expected = torch.zeros_like(vectors)
    expected[..., 4:] = (weights * sign_factors(vectors[..., 4:].flip(-1))).flip(-1)
    assert torch.equal(grads[0], expected)


def test_pivot_sign_factors_reuse_valid_pivots_and_search_again_otherwise():
    """Exact: the same factors and pivot rows as a full search, whatever pivots are passed in."""
    from lowrank_gnn.eigen.base import _first_significant_rows, pivot_sign_factors, sign_factors

    generator = torch.Generator().manual_seed(0)
    for trial in range(60):
        n = int(torch.randint(200, 1500, (1,), generator=generator))
        k = int(torch.randint(1, 10, (1,), generator=generator))
        vectors = torch.randn(n, k, generator=generator) * torch.rand(n, 1, generator=generator) ** 8  # localised
        if trial % 5 == 0:
            vectors[:, 0] = 0  # a zero column: pivot row 0, factor +1
        factors, pivots = pivot_sign_factors(vectors)
        assert torch.equal(factors, sign_factors(vectors))
        assert torch.equal(pivots, _first_significant_rows(vectors.abs()).squeeze(-2))
        moved = vectors + 0.5 * vectors.abs().amax(0) * torch.randn(n, k, generator=generator) * (
            torch.rand(n, 1, generator=generator) < 0.01)
        for guess in (pivots, torch.randint(0, n, (k,), generator=generator), torch.zeros(k, dtype=torch.long),
                      torch.full((k,), n - 1)):
            for block in (vectors, moved):
                got, rows = pivot_sign_factors(block, guess)
                assert torch.equal(got, sign_factors(block)), trial
                assert torch.equal(rows, _first_significant_rows(block.abs()).squeeze(-2)), trial
    small = torch.randn(20, 4, generator=generator)  # not tall, or batched: the plain convention, no pivots
    assert pivot_sign_factors(small)[1] is None and torch.equal(pivot_sign_factors(small)[0], sign_factors(small))
    batch = torch.randn(2, 300, 3, generator=generator)
    assert pivot_sign_factors(batch)[1] is None and torch.equal(pivot_sign_factors(batch)[0], sign_factors(batch))


@pytest.mark.parametrize("k, which, values, match", [
    (2, "bogus", 3, "which must be one of"),
    (5, "largest", 3, r"1 <= k <= the number of eigenpairs m=3 \(got k=5\)"),
    (-1, "largest", 3, r"got k=-1"),
    (0, "smallest", 3, r"got k=0"),
    (2.0, "smallest", 3, r"got k=2.0"),
    (2, "smallest", 2, r"eigenvalues.shape=\(2,\), eigenvectors.shape=\(3, 3\)"),  # 2 values, 3 columns
])
def test_select_eigenpairs_refuses_bad_k_which_and_unpaired_shapes(k, which, values, match):
    w, vectors = torch.tensor([1.0, 2.0, 3.0]), torch.eye(3)   # ascending: the fast path
    with pytest.raises(ValueError, match=match):
        select_eigenpairs(w[:values], vectors, k, which)


def test_select_eigenpairs_refuses_mismatched_batches_and_non_matrices():
    with pytest.raises(ValueError, match="must pair one value with each column"):
        select_eigenpairs(torch.ones(2, 3), torch.eye(3).expand(3, 3, 3), 1, "largest")
    with pytest.raises(ValueError, match=r"eigenvectors must have shape \(\*batch, n, k\)"):
        select_eigenpairs(torch.ones(3), torch.ones(3), 1, "largest")


def test_canonical_signs_refuses_a_single_vector_and_says_how_to_pass_it():
    with pytest.raises(ValueError, match=r"vectors.unsqueeze\(-1\)"):
        canonical_signs(torch.tensor([-1.0, 2.0]))
    assert torch.equal(canonical_signs(torch.tensor([-1.0, 2.0]).unsqueeze(-1)).squeeze(-1), torch.tensor([1.0, -2.0]))


def test_select_eigenpairs_broadcasts_one_row_of_eigenvalues_and_takes_numpy_integers():
    """Eigenvalues (m,) shared by eigenvectors (B, n, m) give the same pairs as the expanded eigenvalues."""
    import numpy

    generator = torch.Generator().manual_seed(5)
    vectors = torch.linalg.qr(torch.randn(3, 5, 5, generator=generator, dtype=torch.float64))[0]
    shared = torch.tensor([-1.0, 0.5, 2.0, 3.0, 4.0], dtype=torch.float64)
    for which in ("largest", "smallest", "magnitude"):
        got = select_eigenpairs(shared, vectors, numpy.int64(2), which)
        expected = select_eigenpairs(shared.expand(3, 5), vectors, 2, which)
        assert torch.equal(got[1], expected[1]) and torch.equal(got[0].expand(3, 2), expected[0])


def test_learns_state_is_true_for_a_backend_with_parameters_only():
    from lowrank_gnn.eigen import resolve_eigen_backend

    assert resolve_eigen_backend("amortized", k=2).learns_state
    assert not any(resolve_eigen_backend(name, k=2).learns_state for name in ("exact", "stable", "batched_dc"))
