"""CovarianceOperator: torch.cov's matrix, symmetric by construction, finiteness from its diagonal.

The operator protocol itself is checked by the conformance suite (tests/operators/test_conformance.py).
"""
import pytest
import torch

from lowrank_gnn.eigen import AmortizedBackend, ExactBackend
from lowrank_gnn.operators import CovarianceOperator, DenseOperator
from lowrank_gnn.testing.conformance import DTYPES


def samples(*shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("correction", [0, 1, 3])
def test_matrix_is_torch_cov(dtype, correction):
    x = samples(20, 6, dtype=dtype)
    op = CovarianceOperator(x, correction=correction)
    assert op.shape == (6, 6) and op.dtype == dtype
    torch.testing.assert_close(op.matrix, torch.cov(x.mT, correction=correction))


def test_batched_matrix_is_torch_cov_per_entry():
    x = samples(2, 3, 15, 4)
    op = CovarianceOperator(x)
    assert op.shape == (2, 3, 4, 4)
    for b in range(2):
        for c in range(3):
            torch.testing.assert_close(op.matrix[b, c], torch.cov(x[b, c].mT))


def test_gradient_to_the_samples():
    x = samples(9, 4).requires_grad_()
    weights = samples(4, 4, seed=1)
    assert torch.autograd.gradcheck(lambda s: (weights * CovarianceOperator(s).matrix).sum(), (x,))
    (weights * CovarianceOperator(x).matrix).sum().backward()
    expected = torch.autograd.grad((weights * torch.cov(x.mT)).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_eigenpairs_are_those_of_the_dense_covariance(dtype):
    """Every backend gives the same pairs on the operator as on torch.cov's matrix (float64 reference,
    sign-invariant: the projector U U^T)."""
    x = samples(40, 12, seed=2)
    reference = torch.linalg.eigh(torch.cov(x.mT))
    top = reference.eigenvectors[:, -3:]
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    op = CovarianceOperator(x.to(dtype))
    for backend in (ExactBackend(3), AmortizedBackend(3, init="exact").to(dtype)):
        pairs = backend(op)
        torch.testing.assert_close(pairs.eigenvalues.double(), reference.eigenvalues.flip(0)[:3],
                                   atol=tolerance, rtol=tolerance)
        vectors = pairs.eigenvectors.double()
        torch.testing.assert_close(vectors @ vectors.mT, top @ top.mT, atol=10 * tolerance, rtol=0)


def test_symmetric_by_construction():
    op = CovarianceOperator(samples(8, 5))
    assert op.symmetric is True
    op.check_finite()  # finite samples pass


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("batched", [False, True])
def test_non_finite_sample_is_rejected_with_its_index(bad, batched):
    x = samples(2, 10, 4) if batched else samples(10, 4)
    index = (1, 6, 2) if batched else (6, 2)
    x[index] = bad
    op = CovarianceOperator(x)
    with pytest.raises(ValueError, match=r"x \(the covariance's samples\) contains NaN or Inf \(first at index "
                                         + str(index).replace("(", r"\(").replace(")", r"\)")):
        op.check_finite()
    for backend in (ExactBackend(2), AmortizedBackend(2).double()):
        with pytest.raises(ValueError, match="contains NaN or Inf"):
            backend(op)


def test_overflowing_covariance_is_rejected():
    x = torch.tensor([[3e19, 0.0], [-3e19, 1.0], [0.0, 2.0]])  # finite samples, variance 9e38 > float32's max
    with pytest.raises(ValueError, match="overflows torch.float32.*x.double"):
        CovarianceOperator(x).check_finite()
    CovarianceOperator(x.double()).check_finite()  # float64 holds it


def test_large_finite_variances_pass_the_full_check():
    """A diagonal above the bound of the one-reduction test (max / (2 (m - c))) is checked entry by entry."""
    a = 1.1e19  # float32: variance 2 a^2 = 2.4e38 is finite, above max / 2 = 1.7e38
    op = CovarianceOperator(torch.tensor([[a, a], [-a, -a]]))
    assert float(op.matrix.diagonal().amin()) > torch.finfo(torch.float32).max / 2
    assert bool(torch.isfinite(op.matrix).all())
    op.check_finite()


def test_non_symmetric_tensor_still_rejected():
    """The fast path is the operator's own: a plain tensor is still checked (and rejected when asymmetric
    or non-finite) by every backend."""
    a = samples(6, 6)
    for backend in (ExactBackend(2), AmortizedBackend(2).double()):
        with pytest.raises(ValueError, match="needs a symmetric operator"):
            backend(a)
        symmetric = (a + a.mT) / 2
        symmetric[1, 2] = symmetric[2, 1] = float("nan")
        with pytest.raises(ValueError, match="NaN or Inf"):
            backend(DenseOperator(symmetric))


@pytest.mark.parametrize("x, correction, error, match", [
    ([[1.0, 2.0]], 1, ValueError, "more samples than correction: x has m=1"),
    (torch.zeros(0, 3), 0, ValueError, "m=0"),
    (torch.ones(3), 1, ValueError, r"shape \(\*batch, m, n\)"),
    (torch.ones(3, 2), -1, ValueError, "correction must be a non-negative integer"),
    (torch.ones(3, 2), True, ValueError, "correction must be a non-negative integer"),
    (torch.ones(3, 2), 1.0, ValueError, "correction must be a non-negative integer"),
    (torch.ones(3, 2, dtype=torch.long), 1, TypeError, "floating-point"),
    ("samples", 1, TypeError, "must be a torch.Tensor"),
])
def test_bad_arguments(x, correction, error, match):
    if isinstance(x, list):
        x = torch.tensor(x)
    with pytest.raises(error, match=match):
        CovarianceOperator(x, correction=correction)


@pytest.mark.parametrize("edit", ["nan_entry", "asymmetric_entry", "replaced"])
def test_edited_matrix_is_checked_in_full(edit):
    """The shortcuts hold for the computed covariance only: an in-place edit or a new tensor is checked."""
    op = CovarianceOperator(samples(30, 5))
    if edit == "nan_entry":
        op.matrix[0, 3] = float("nan")
        with pytest.raises(ValueError, match="NaN or Inf"):
            ExactBackend(k=2)(op)
    elif edit == "asymmetric_entry":
        assert op.symmetric
        op.matrix[2, 3] += 5.0
        assert not op.symmetric
        with pytest.raises(ValueError, match="needs a symmetric operator"):
            ExactBackend(k=2)(op)
    else:
        matrix = op.matrix.clone()
        matrix[1, 0] += 1.0
        op.matrix = matrix
        assert not op.symmetric
