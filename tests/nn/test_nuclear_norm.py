import pytest
import torch

from lowrank_gnn.nn import AmortizedSVD, NuclearNormRegularizer, total_aux_loss


def converge(module, matrix, steps=600, lr=0.05):
    """Adam on the basis loss alone (the matrix is fixed)."""
    module(matrix)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        out = module(matrix)
        aux = out.aux_loss if hasattr(out, "aux_loss") else module.aux_loss
        aux.backward()
        optimizer.step()


@pytest.mark.parametrize("shape", [(14, 9), (9, 14)])
def test_nuclear_norm_value_and_gradient_match_svd_at_convergence(shape):
    matrix = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    reg = NuclearNormRegularizer(strength=0.3)
    converge(reg, matrix)
    x = matrix.clone().requires_grad_()
    value = reg(x)
    value.backward()
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    assert torch.allclose(value.detach(), 0.3 * s.sum(), rtol=1e-10)
    assert torch.allclose(x.grad, 0.3 * u @ vh, atol=1e-8)  # the exact (sub)gradient U V^T
    reference = matrix.clone().requires_grad_()
    (0.3 * torch.linalg.matrix_norm(reference, ord="nuc")).backward()
    assert torch.allclose(x.grad, reference.grad, atol=1e-8)


def test_penalty_gradient_reaches_the_matrix_only_and_aux_loss_the_bases_only():
    matrix = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    reg = NuclearNormRegularizer()
    value = reg(matrix)
    grads = torch.autograd.grad(value, [matrix, *reg.parameters()], allow_unused=True)
    assert grads[0] is not None and all(g is None for g in grads[1:])
    grads = torch.autograd.grad(reg.aux_loss, [matrix, *reg.parameters()], allow_unused=True)
    assert grads[0] is None and all(g is not None and g.abs().sum() > 0 for g in grads[1:])


def test_ky_fan_norm_with_rank_and_total_aux_loss_collects_it():
    matrix = torch.randn(10, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    reg = NuclearNormRegularizer(rank=3)
    converge(reg, matrix, steps=1500)
    assert torch.allclose(reg(matrix), torch.linalg.svdvals(matrix)[:3].sum(), rtol=1e-8)
    model = torch.nn.ModuleDict({"reg": reg})
    assert total_aux_loss(model) is reg.aux_loss


@pytest.mark.parametrize("orthogonalization", ["qr", "householder"])
def test_amortized_svd_matches_torch_svd(orthogonalization):
    matrix = torch.randn(12, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    svd = AmortizedSVD(k=3, orthogonalization=orthogonalization)
    svd(matrix)
    optimizer = torch.optim.LBFGS(svd.parameters(), max_iter=500, history_size=50, line_search_fn="strong_wolfe",
                                  tolerance_grad=0.0, tolerance_change=0.0)

    def closure():
        optimizer.zero_grad()
        aux = svd(matrix).aux_loss
        aux.backward()
        return aux

    optimizer.step(closure)
    left, values, right, _ = svd(matrix)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    assert torch.allclose(values.detach(), s[:3], atol=1e-8)
    approx = left.detach() @ torch.diag(values.detach()) @ right.detach().T
    assert torch.allclose(approx, u[:, :3] @ torch.diag(s[:3]) @ vh[:3], atol=1e-5)
    assert torch.allclose(left.detach().abs(), u[:, :3].abs(), atol=1e-5)  # sign-invariant, simple values


def test_batched_matrices_get_one_pair_of_bases_each():
    batch = torch.randn(2, 6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    reg = NuclearNormRegularizer()
    converge(reg, batch)
    assert reg.svd.left_basis.weight.shape == (2, 6, 4)
    assert torch.allclose(reg(batch), torch.linalg.svdvals(batch).sum(), rtol=1e-8)


def test_state_dict_round_trip_and_shape_change_error():
    matrix = torch.randn(5, 4, dtype=torch.float64)
    reg = NuclearNormRegularizer()
    reg(matrix)
    fresh = NuclearNormRegularizer(seed=9).double()  # the module's dtype, as for any nn.Module
    fresh.load_state_dict(reg.state_dict())
    assert torch.equal(fresh(matrix), reg(matrix))
    with pytest.raises(ValueError, match=r"W has shape \(5, 4\) but a matrix of shape \(6, 4\) needs \(6, 4\)"):
        reg(torch.randn(6, 4, dtype=torch.float64))


@pytest.mark.parametrize("make, match", [
    (lambda: NuclearNormRegularizer(strength=-1.0), "strength must be a number >= 0"),
    (lambda: NuclearNormRegularizer(eta=0), "eta must be a positive number"),
    (lambda: NuclearNormRegularizer(rank=0), "rank must be a positive integer"),
    (lambda: AmortizedSVD(loss="convex"), "loss must be one of 'brockett', 'trace'"),
])
def test_rejects_bad_options(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_rejects_bad_input():
    reg = NuclearNormRegularizer(rank=4)
    with pytest.raises(ValueError, match=r"rank must satisfy 1 <= rank <= min\(m, n\)=3 \(got rank=4\)"):
        reg(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"shape \(\*batch, m, n\)"):
        reg(torch.randn(5))
    with pytest.raises(ValueError, match="NaN or Inf"):
        reg(torch.full((3, 3), float("nan")))
    with pytest.raises(TypeError, match="floating-point"):
        reg(torch.ones(3, 3, dtype=torch.long))
