"""The shared conventions of lowrank_gnn.eigen.base, on inputs built to hit their edge cases."""
import torch

from lowrank_gnn.eigen.base import SIGN_PIVOT_PREFIX, canonical_signs, select_eigenpairs


def test_canonical_signs_finds_pivots_inside_and_beyond_the_searched_prefix():
    n = SIGN_PIVOT_PREFIX * 4
    vectors = torch.zeros(n, 4, dtype=torch.float64)
    vectors[:, 0] = torch.linspace(-1, 0.5, n)                # pivot at row 0 (negative): flipped
    vectors[3, 1], vectors[n - 1, 1] = -0.05, 1.0             # -0.05 < 0.1 * 1: pivot is the last row
    vectors[n - 2, 2], vectors[n - 1, 2] = -1.0, 1.0          # beyond the prefix, first of a tie: flipped
    expected = vectors * torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64)  # column 3 is zero: kept
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
