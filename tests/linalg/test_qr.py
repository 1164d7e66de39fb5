"""The CholeskyQR factor functions' input checks and their wide projections (linalg.qr)."""
import pytest
import torch

from lowrank_gnn.linalg import cholesky_qr, q_factor, q_projection, qr_orthonormalize


def _householder_q(weight):
    q, r = torch.linalg.qr(weight)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def test_q_projection_of_a_block_with_other_column_count_matches_autograd_through_householder_qr():
    """B with m != k columns: Q^T B is (k, m) and its W-gradient is that of LAPACK's QR under autograd."""
    generator = torch.Generator().manual_seed(0)
    for shape, m in (((40, 3), 5), ((2, 30, 4), 1)):
        weight = torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)
        other = torch.randn(*shape[:-1], m, generator=generator, dtype=torch.float64)
        probe = torch.randn(*shape[:-2], shape[-1], m, generator=generator, dtype=torch.float64)
        got = q_projection(weight, cholesky_qr(weight), other)
        expected = _householder_q(weight).mT @ other
        assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-12)
        (grad,) = torch.autograd.grad((got * probe).sum(), weight)
        (reference,) = torch.autograd.grad((expected * probe).sum(), weight)
        assert torch.allclose(grad, reference, atol=1e-11)


def test_factors_of_another_matrix_are_refused_saying_how_to_fix():
    weight = torch.randn(50, 3, dtype=torch.float64, requires_grad=True)
    factors = cholesky_qr(weight)
    other_weight = torch.randn(60, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=r"shape \(50, 3\).*pass factors=cholesky_qr\(weight\)"):
        q_factor(other_weight, factors)
    with pytest.raises(ValueError, match="pass factors=cholesky_qr"):
        q_projection(other_weight, factors, torch.randn(60, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="QRFactors"):
        q_factor(weight, None)


def test_q_projection_refuses_a_block_of_other_rows_and_one_that_needs_a_gradient():
    weight = torch.randn(50, 3, dtype=torch.float64, requires_grad=True)
    factors = cholesky_qr(weight)
    with pytest.raises(ValueError, match=r"other must have shape \(\*batch, n, m\)"):
        q_projection(weight, factors, torch.randn(40, 3, dtype=torch.float64))
    needs_grad = torch.randn(50, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=r"pass other.detach\(\)"):
        q_projection(weight, factors, needs_grad)
    # held constant on purpose: detached it is taken, and without grad mode it is taken as it is
    assert q_projection(weight, factors, needs_grad.detach()).shape == (3, 3)
    with torch.no_grad():
        assert q_projection(weight, factors, needs_grad).shape == (3, 3)


def test_qr_orthonormalize_refuses_a_vector_other_dtypes_non_finite_and_wide_weights():
    weight = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"weight.unsqueeze\(-1\)"):
        qr_orthonormalize(weight[:, 0])
    with pytest.raises(TypeError, match=r"weight must have a floating-point dtype.* weight.float\(\)"):
        qr_orthonormalize(weight.long())
    with pytest.raises(TypeError, match="float32 or float64 only"):
        qr_orthonormalize(weight.half())
    with pytest.raises(ValueError, match=r"weight contains NaN or Inf \(first at index \(4, 1\)"):
        qr_orthonormalize(weight.index_put((torch.tensor(4), torch.tensor(1)), torch.tensor(float("nan")).double()))
    with pytest.raises(ValueError, match=r"k <= n .* transpose a wide matrix first"):
        qr_orthonormalize(weight.T)
    q, diagonal = qr_orthonormalize(torch.zeros(10, 0))   # no columns: still an (n, 0) basis
    assert q.shape == (10, 0) and diagonal.shape == (0,)


def test_cholesky_qr_refuses_dtypes_and_vectors_but_keeps_none_for_non_finite_or_wide_weights():
    weight = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(TypeError, match="weight must have a floating-point dtype"):
        cholesky_qr(weight.long())
    with pytest.raises(TypeError, match="float32 or float64 only"):
        cholesky_qr(weight.half())
    with pytest.raises(ValueError, match=r"weight.unsqueeze\(-1\)"):
        cholesky_qr(weight[:, 0])
    assert cholesky_qr(torch.full_like(weight, float("nan"))) is None and cholesky_qr(weight.T) is None


def test_q_projection_of_one_block_shared_by_a_batch_of_weights_matches_the_expanded_block():
    """other (n, m) with weight (B, n, k): the same value and W-gradient as other expanded to (B, n, m)."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(4, 10, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    other = torch.randn(10, 2, generator=generator, dtype=torch.float64)
    probe = torch.randn(4, 3, 2, generator=generator, dtype=torch.float64)
    factors = cholesky_qr(weight)
    shared = q_projection(weight, factors, other)
    expanded = q_projection(weight, factors, other.expand(4, 10, 2))
    assert torch.allclose(shared, expanded, atol=1e-14)
    (grad_shared,) = torch.autograd.grad((shared * probe).sum(), weight)
    (grad_expanded,) = torch.autograd.grad((expanded * probe).sum(), weight)
    assert torch.allclose(grad_shared, grad_expanded, atol=1e-13)
    with pytest.raises(ValueError, match="broadcasts to its batch"):
        q_projection(weight, factors, torch.randn(3, 10, 2, dtype=torch.float64))   # would enlarge nothing: 3 != 4
