import doctest

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import lowrank_gnn.linalg.householder as householder_module
from lowrank_gnn.linalg import (HouseholderOrthogonal, householder_orthonormal, householder_product,
                                householder_vectors)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def sequential_product(V, X):
    """Reference: ``H(v_1) ... H(v_m) X`` as m rank-one updates in float64, zero vectors skipped."""
    Y = X.double()
    for i in reversed(range(V.shape[-1])):
        v = V[..., :, i:i + 1].double()
        norm2 = (v * v).sum(dim=-2, keepdim=True)
        Y = Y - torch.where(norm2 > 0, 2 / norm2, torch.zeros_like(norm2)) * v @ (v.mT @ Y)
    return Y


def dense_product(V):
    """Reference: the explicit reflection matrices multiplied in float64."""
    d = V.shape[0]
    P = torch.eye(d, dtype=torch.float64)
    for i in range(V.shape[1]):
        v = V[:, i:i + 1].double()
        P = P @ (torch.eye(d, dtype=torch.float64) - 2 * v @ v.T / (v.T @ v))
    return P


def lapack_vectors(A):
    """``A``'s strictly lower part with LAPACK's implicit unit diagonal, and tau = 2 / ||v||^2."""
    V = A.tril(-1) + torch.eye(*A.shape[-2:], dtype=A.dtype, device=A.device)
    return V, 2 / (V * V).sum(dim=-2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d, m, c, block_size", [
    (1, 1, 3, None),
    (8, 8, 8, 1),       # one reflection per block: the sequential algorithm
    (8, 8, 3, 8),       # one block: the fully parallel UT transform
    (10, 10, 4, 3),     # 3 does not divide 10: the last block holds one reflection
    (12, 7, 5, 4),      # m < d, 4 does not divide 7
    (9, 5, 2, 100),     # block_size > m: one block
    (64, 64, 16, None),
    (70, 45, 33, 16),
])
def test_matches_sequential_and_dense_reference(device, dtype, d, m, c, block_size):
    gen = torch.Generator().manual_seed(d * 100 + m)
    V = torch.randn(d, m, generator=gen, dtype=dtype).to(device)
    X = torch.randn(d, c, generator=gen, dtype=dtype).to(device)
    out = householder_product(V, X, block_size=block_size)
    assert out.shape == (d, c) and out.dtype == dtype and out.device == X.device
    reference = sequential_product(V.cpu(), X.cpu())
    assert torch.allclose(out.cpu().double(), reference, atol=TOL[dtype] * 10, rtol=0)
    assert torch.allclose(dense_product(V.cpu()) @ X.cpu().double(), reference, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("block_size", [1, 5, 32])
def test_matrix_is_orthogonal_and_matches_torch_householder_product(dtype, block_size):
    torch.manual_seed(0)
    d, m = 40, 23
    A = torch.randn(d, m, dtype=dtype)
    V, tau = lapack_vectors(A)
    eye = torch.eye(d, dtype=dtype)
    P = householder_product(V, eye, block_size=block_size)
    assert torch.allclose(P.mT @ P, eye, atol=TOL[dtype] * 10)
    # torch's orgqr returns as many columns as A has: pad A with zero columns to get all d.
    full = torch.linalg.householder_product(torch.cat([A, torch.zeros(d, d - m, dtype=dtype)], 1), tau)
    assert torch.allclose(P, full, atol=TOL[dtype] * 10)
    assert torch.allclose(householder_product(V, torch.eye(d, m, dtype=dtype), block_size),
                          torch.linalg.householder_product(A, tau), atol=TOL[dtype] * 10)
    assert torch.allclose(householder_orthonormal(A, block_size=block_size),
                          torch.linalg.householder_product(A, tau), atol=TOL[dtype] * 10)


def test_the_scale_of_a_vector_does_not_matter():
    torch.manual_seed(1)
    V, X = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    scale = torch.tensor([1e-6, -3.0, 1.0, 1e4, -1e-2], dtype=torch.float64)
    assert torch.allclose(householder_product(V * scale, X, 2), householder_product(V, X, 2), atol=1e-12)


@pytest.mark.parametrize("block_size", [1, 3, 4, 7])
def test_gradcheck(block_size):
    torch.manual_seed(2)
    V = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    X = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, x: householder_product(v, x, block_size), (V, X))


def test_gradcheck_with_respect_to_one_argument_only():
    torch.manual_seed(3)
    V = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    X = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: householder_product(v, X.detach(), 3), (V,))
    assert torch.autograd.gradcheck(lambda x: householder_product(V.detach(), x, 3), (X,))


@pytest.mark.parametrize("product", ["householder_product", "householder_orthonormal"])
def test_a_second_derivative_is_a_clear_error(product):
    V = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    out = householder_product(V, torch.eye(7, 2, dtype=torch.float64)) if product == "householder_product" \
        else householder_orthonormal(V)
    (grad,) = torch.autograd.grad(out.pow(3).sum(), V, create_graph=True)
    with pytest.raises(RuntimeError, match=r"the Householder product's backward .* is first-order only.*detach W"):
        grad.sum().backward()


def test_gradient_matches_autograd_through_the_sequential_product():
    torch.manual_seed(4)
    V = torch.randn(30, 30, dtype=torch.float64, requires_grad=True)
    X = torch.randn(30, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 8, dtype=torch.float64)
    (householder_product(V, X, 8) * weight).sum().backward()
    ours = V.grad.clone(), X.grad.clone()
    V.grad = X.grad = None
    (sequential_product(V, X) * weight).sum().backward()
    assert torch.allclose(ours[0], V.grad, atol=1e-10) and torch.allclose(ours[1], X.grad, atol=1e-10)


def test_batched_and_broadcast_inputs_match_per_item_results():
    torch.manual_seed(5)
    V = torch.randn(3, 9, 6, dtype=torch.float64)
    X = torch.randn(3, 9, 4, dtype=torch.float64)
    out = householder_product(V, X, 4)
    for i in range(3):
        assert torch.allclose(out[i], householder_product(V[i], X[i], 4), atol=1e-13)
    shared = householder_product(V[0], X, 4)  # one V broadcast over a batch of X
    assert shared.shape == (3, 9, 4)
    assert torch.allclose(shared[2], householder_product(V[0], X[2], 4), atol=1e-13)
    V0 = V[0, :, :4].clone().requires_grad_()
    Xb = X[:2, :, :2].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v, x: householder_product(v, x, 3), (V0, Xb))


@pytest.mark.parametrize("zero_columns", [[0], [2], [5], [1, 2, 3], [0, 1, 2, 3, 4, 5]])
def test_zero_vectors_are_identity_reflections_with_zero_gradient(zero_columns):
    torch.manual_seed(6)
    V = torch.randn(8, 6, dtype=torch.float64)
    V[:, zero_columns] = 0
    X = torch.randn(8, 3, dtype=torch.float64)
    kept = [i for i in range(6) if i not in zero_columns]
    expected = householder_product(V[:, kept], X, 2) if kept else X
    V.requires_grad_()
    out = householder_product(V, X, 4)
    assert torch.allclose(out, expected, atol=1e-13)
    out.pow(3).sum().backward()
    assert torch.isfinite(V.grad).all()
    assert (V.grad[:, zero_columns] == 0).all()
    if kept:  # the non-zero vectors still get their exact gradient
        def partial(v_kept):
            full = torch.zeros(8, 6, dtype=torch.float64).index_copy(1, torch.tensor(kept), v_kept)
            return householder_product(full, X, 4)
        assert torch.autograd.gradcheck(partial, (V.detach()[:, kept].clone().requires_grad_(),))


def test_float32_agrees_with_float64_at_size_256():
    torch.manual_seed(7)
    V = torch.randn(256, 256, dtype=torch.float64)
    X = torch.randn(256, 32, dtype=torch.float64)
    error = householder_product(V.float(), X.float()).double() - householder_product(V, X)
    assert error.abs().max() < 1e-4 * X.abs().max()


@pytest.mark.parametrize("V, X, block_size, error, match", [
    (torch.ones(4, 2, dtype=torch.int64), torch.ones(4, 3), None, TypeError, "V must have a floating-point dtype"),
    (torch.ones(4, 2), torch.ones(4, 3, dtype=torch.int32), None, TypeError, "X must have a floating-point dtype"),
    (torch.ones(4, 2), torch.ones(4, 3, dtype=torch.float64), None, TypeError, "X has dtype torch.float64"),
    (torch.ones(4), torch.ones(4, 3), None, ValueError, r"V must have shape \(\*batch, d, m\)"),
    (torch.ones(4, 2), torch.ones(4), None, ValueError, r"X must have shape \(\*batch, d, c\)"),
    (torch.ones(4, 5), torch.ones(4, 3), None, ValueError, "1 <= m <= d .* d=4, m=5"),
    (torch.ones(4, 0), torch.ones(4, 3), None, ValueError, "1 <= m <= d .* d=4, m=0"),
    (torch.ones(4, 2), torch.ones(5, 3), None, ValueError, "X must have d=4 rows"),
    (torch.ones(2, 4, 2), torch.ones(3, 4, 3), None, ValueError, "batch dimensions of V and X must broadcast"),
    (torch.ones(4, 2), torch.ones(4, 3), 0, ValueError, "block_size must be a positive integer"),
    (torch.ones(4, 2), torch.ones(4, 3), -2, ValueError, "block_size must be a positive integer"),
    (torch.ones(4, 2), torch.ones(4, 3), 2.0, ValueError, "block_size must be a positive integer"),
    ("not a tensor", torch.ones(4, 3), None, TypeError, "V must be a torch.Tensor"),
])
def test_bad_input(V, X, block_size, error, match):
    with pytest.raises(error, match=match):
        householder_product(V, X, block_size=block_size)


@pytest.mark.parametrize("n, k", [(1, 1), (5, 5), (9, 4), (11, 10)])
def test_householder_orthonormal_is_orthonormal_and_differentiable(n, k):
    torch.manual_seed(8)
    V = torch.randn(n, k, dtype=torch.float64, requires_grad=True)
    U = householder_orthonormal(V, block_size=3)
    assert U.shape == (n, k)
    assert torch.allclose(U.T @ U, torch.eye(k, dtype=torch.float64), atol=1e-12)
    U.sum().backward()
    assert (V.grad.triu() == 0).all()  # the diagonal and the upper part are not read
    assert torch.autograd.gradcheck(lambda v: householder_orthonormal(v, block_size=3), (V,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, k", [(6, 6), (6, 3), (20, 7)])
def test_householder_vectors_invert_householder_orthonormal(device, n, k):
    gen = torch.Generator().manual_seed(n + k)
    A = torch.randn(n, k, generator=gen, dtype=torch.float64).to(device)
    Q, R = torch.linalg.qr(A)
    Q = Q * torch.sign(R.diagonal())  # the Q factor with a positive diagonal of R
    for target in (Q, -Q, Q * torch.tensor([1.0, -1.0] * k, dtype=Q.dtype, device=device)[:k]):
        V, signs = householder_vectors(target)
        assert (V.triu() == 0).all() and set(signs.tolist()) <= {1.0, -1.0}
        assert torch.allclose(householder_orthonormal(V, signs), target, atol=1e-12)
    # A full-rank matrix that is not orthonormal maps to its Q factor.
    V, signs = householder_vectors(A)
    assert torch.allclose(householder_orthonormal(V, signs), Q, atol=1e-12)


@pytest.mark.parametrize("n, k", [(4, 4), (7, 3)])
def test_householder_vectors_of_the_identity_use_signs(n, k):
    # LAPACK needs no reflection here (tau = 0); the unit-diagonal vector is a sign flip.
    eye = torch.eye(n, k, dtype=torch.float64)
    for target in (eye, -eye):
        V, signs = householder_vectors(target)
        assert torch.equal(householder_orthonormal(V, signs), target)
        V.requires_grad_()
        U = householder_orthonormal(V, signs)
        U.pow(2).mul(torch.arange(n * k, dtype=torch.float64).view(n, k)).sum().backward()
        assert torch.isfinite(V.grad).all()


def test_householder_orthonormal_batched():
    torch.manual_seed(9)
    V = torch.randn(2, 3, 8, 5, dtype=torch.float64)
    signs = torch.randint(0, 2, (2, 3, 5)).double() * 2 - 1
    U = householder_orthonormal(V, signs)
    assert torch.allclose(U[1, 2], householder_orthonormal(V[1, 2], signs[1, 2]), atol=1e-13)
    back, back_signs = householder_vectors(U)
    assert torch.allclose(householder_orthonormal(back, back_signs), U, atol=1e-12)


def test_householder_orthonormal_bad_input():
    with pytest.raises(ValueError, match=r"1 <= k <= n .* V.shape=\(3, 5\)"):
        householder_orthonormal(torch.randn(3, 5))
    with pytest.raises(TypeError, match="floating-point"):
        householder_orthonormal(torch.ones(5, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="signs must have shape"):
        householder_orthonormal(torch.randn(5, 3), torch.ones(4))
    with pytest.raises(ValueError, match=r"Q must have shape \(\*batch, n, k\)"):
        householder_vectors(torch.randn(3, 5))


@pytest.mark.parametrize("in_features, out_features", [(4, 6), (6, 4), (5, 5)])
def test_parametrization_keeps_weights_orthonormal_during_training(in_features, out_features):
    torch.manual_seed(10)
    layer = nn.Linear(in_features, out_features, dtype=torch.float64)
    initial = layer.weight.detach().clone()
    parametrize.register_parametrization(layer, "weight", HouseholderOrthogonal(block_size=2))
    # Registration projects the weight onto its orthonormal QR factor (positive diagonal of R).
    tall = initial if out_features >= in_features else initial.T
    Q, R = torch.linalg.qr(tall)
    Q = Q * torch.sign(R.diagonal())
    expected = Q if out_features >= in_features else Q.T
    assert torch.allclose(layer.weight, expected, atol=1e-12)
    small = min(in_features, out_features)
    gram = layer.weight.T @ layer.weight if out_features >= in_features else layer.weight @ layer.weight.T
    assert torch.allclose(gram, torch.eye(small, dtype=torch.float64), atol=1e-12)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    x, target = torch.randn(32, in_features, dtype=torch.float64), torch.randn(32, out_features, dtype=torch.float64)
    before = layer.weight.detach().clone()
    for _ in range(10):
        optimizer.zero_grad()
        loss = (layer(x) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        weight = layer.weight
        gram = weight.T @ weight if out_features >= in_features else weight @ weight.T
        assert torch.allclose(gram, torch.eye(small, dtype=torch.float64), atol=1e-12)
    assert not torch.allclose(layer.weight, before, atol=1e-3)  # the weight did move


def test_parametrization_assignment_and_state_dict_round_trip():
    torch.manual_seed(11)
    layer = nn.Linear(3, 5)
    parametrize.register_parametrization(layer, "weight", HouseholderOrthogonal())
    target = -torch.eye(5, 3)  # needs the sign buffer
    layer.weight = target
    assert torch.allclose(layer.weight, target, atol=1e-6)
    copy = nn.Linear(3, 5)
    parametrize.register_parametrization(copy, "weight", HouseholderOrthogonal())
    copy.load_state_dict(layer.state_dict())
    assert torch.equal(copy.weight, layer.weight)
    assert "parametrizations.weight.0.signs" in layer.state_dict()
    assert str(HouseholderOrthogonal(block_size=8)) == "HouseholderOrthogonal(block_size=8)"


def test_docstring_examples():
    result = doctest.testmod(householder_module, extraglobs={"torch": torch, "nn": nn})
    assert result.attempted >= 3 and result.failed == 0
