"""frobenius_norm: the plain norm where its squares are representable, rescaled where they are not."""
import math

import pytest
import torch

from lowrank_gnn.linalg import frobenius_norm


def reference(x, dim=(-2, -1)):
    return torch.linalg.vector_norm(x.double(), dim=dim)


@pytest.mark.parametrize("scale", [1.0, 1e30, 1e-30, 1e-42])
def test_no_overflow_or_underflow_in_float32(scale):
    x = torch.tensor([[3.0, 4.0], [0.0, 12.0]]) * scale  # norm 13 * scale; 1e-42 is subnormal
    norm = frobenius_norm(x)
    assert norm.dtype == torch.float32 and norm.shape == ()
    assert math.isclose(float(norm), float(reference(x)), rel_tol=1e-5 if scale > 1e-40 else 1e-2)


def test_batched_with_one_entry_out_of_range():
    """The rescaled path is taken for the whole batch when one entry needs it; every entry stays exact."""
    x = torch.stack([torch.ones(3, 3), torch.full((3, 3), 1e25), torch.full((3, 3), 1e-25)])
    torch.testing.assert_close(frobenius_norm(x).double(), reference(x), rtol=1e-6, atol=0)
    torch.testing.assert_close(frobenius_norm(x[:1]).double(), reference(x[:1]), rtol=1e-6, atol=0)


def test_other_dims_and_detached():
    x = torch.randn(4, 5, 6, dtype=torch.float64, requires_grad=True)
    norm = frobenius_norm(x, dim=-1)
    assert norm.shape == (4, 5) and not norm.requires_grad
    torch.testing.assert_close(norm, reference(x.detach(), dim=-1))


def test_non_finite_and_empty():
    x = torch.ones(2, 2)
    x[0, 1] = float("nan")
    assert math.isnan(float(frobenius_norm(x)))
    x[0, 1] = float("inf")
    assert not math.isfinite(float(frobenius_norm(x)))  # the callers check finiteness first
    assert frobenius_norm(torch.zeros(0, 3)).shape == ()
    assert float(frobenius_norm(torch.zeros(3, 3))) == 0.0


def test_frobenius_norm_refuses_integer_input_and_a_missing_dimension():
    with pytest.raises(TypeError, match=r"x must have a floating-point dtype.* x.float\(\)"):
        frobenius_norm(torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"dim=\(-2, -1\) is not a dimension of x, which has shape \(10,\); pass dim="):
        frobenius_norm(torch.ones(10))
    assert float(frobenius_norm(torch.full((4,), 2.0), dim=-1)) == 4.0
