"""Argument checks and shapes of the tridiagonal kernels, against torch.linalg.eigh (float64)."""
import re

import pytest
import torch

from lowrank_gnn.linalg import apply_reflectors, householder_tridiagonalize, tridiagonal_eigh


def _symmetric(*shape, seed=0):
    a = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a + a.mT


@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_the_pipeline_takes_unbatched_and_any_batch_shape(batch):
    a = _symmetric(*batch, 7, 7)
    diagonal, off, reflectors, taus = householder_tridiagonalize(a)
    assert diagonal.shape == (*batch, 7) and off.shape == (*batch, 6) and reflectors.shape == (*batch, 7, 7)
    values, vectors = tridiagonal_eigh(diagonal, off)
    assert values.shape == (*batch, 7) and vectors.shape == (*batch, 7, 7)
    torch.testing.assert_close(values, torch.linalg.eigvalsh(a))
    u = apply_reflectors(reflectors, taus, vectors)
    torch.testing.assert_close(a @ u, u * values.unsqueeze(-2))
    if batch == (3,):   # each matrix alone gives the batch's bits
        for i in range(3):
            assert torch.equal(tridiagonal_eigh(diagonal[i], off[i])[0], values[i])


def test_householder_tridiagonalize_reads_the_lower_triangle_as_eigh_does():
    a = torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)   # not symmetric
    diagonal, off, _, _ = householder_tridiagonalize(a)
    torch.testing.assert_close(tridiagonal_eigh(diagonal, off)[0], torch.linalg.eigvalsh(a))   # eigvalsh: lower


@pytest.mark.parametrize("where", [(0, 0), (3, 1), (5, 4), (5, 5)])
def test_householder_tridiagonalize_names_a_non_finite_entry_of_the_lower_triangle(where):
    a = _symmetric(6, 6)
    a[where] = float("nan")
    with pytest.raises(ValueError, match=re.escape(f"a contains NaN or Inf (first at index {where}")):
        householder_tridiagonalize(a)


def test_householder_tridiagonalize_refuses_other_dtypes_and_shapes():
    with pytest.raises(TypeError, match="a must have a floating-point dtype"):
        householder_tridiagonalize(torch.ones(5, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="float32 or float64 only"):
        householder_tridiagonalize(torch.eye(5, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"square matrices \(got a.shape=\(1, 7, 6\)\)"):
        householder_tridiagonalize(torch.ones(1, 7, 6))


def test_tridiagonal_eigh_refuses_non_finite_half_and_mismatched_input():
    d, e = torch.ones(1, 6), torch.ones(1, 5)
    with pytest.raises(ValueError, match=r"diagonal contains NaN or Inf \(first at index \(0, 2\)"):
        tridiagonal_eigh(d.index_fill(1, torch.tensor([2]), float("nan")), e)
    with pytest.raises(ValueError, match="off contains NaN or Inf"):
        tridiagonal_eigh(d, e.index_fill(1, torch.tensor([4]), float("inf")))
    with pytest.raises(TypeError, match="float32 or float64 only"):
        tridiagonal_eigh(d.half(), e.half())
    with pytest.raises(TypeError, match="off has dtype torch.float64 but diagonal has dtype torch.float32"):
        tridiagonal_eigh(d, e.double())
    for bad in (torch.ones(1, 4), torch.ones(1, 6), torch.ones(3, 5)):
        with pytest.raises(ValueError, match=r"off must have shape \(1, 5\)"):
            tridiagonal_eigh(d, bad)


def test_apply_reflectors_refuses_rows_dtype_and_batch_that_do_not_match():
    _, _, reflectors, taus = householder_tridiagonalize(_symmetric(1, 7, 7))
    with pytest.raises(ValueError, match=r"x.shape=\(1, 5, 2\)"):
        apply_reflectors(reflectors, taus, torch.randn(1, 5, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x.shape=\(7, 2\)"):   # unbatched x for batched reflectors
        apply_reflectors(reflectors, taus, torch.randn(7, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="x has dtype torch.float32 but reflectors has dtype torch.float64"):
        apply_reflectors(reflectors, taus, torch.randn(1, 7, 2))
    x = torch.randn(7, 2, dtype=torch.float64)
    assert torch.equal(apply_reflectors(reflectors[0], taus[0], x), apply_reflectors(reflectors, taus, x[None])[0])


def test_tridiagonal_eigh_without_the_finiteness_check_gives_the_same_pairs_and_skips_only_that_check():
    """check_finite=False (the reduction's own outputs, already checked) skips the pass over the entries only."""
    generator = torch.Generator().manual_seed(7)
    d = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    e = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    checked, unchecked = tridiagonal_eigh(d, e), tridiagonal_eigh(d, e, check_finite=False)
    assert torch.equal(checked[0], unchecked[0]) and torch.equal(checked[1], unchecked[1])
    with pytest.raises(ValueError, match=r"off must have shape"):
        tridiagonal_eigh(d, e[:, :4], check_finite=False)      # the shape checks still run
