import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv

from lowrank_gnn.nn import ZCAWhitening


def correlated_features(n, channels, seed=0, dtype=torch.float64):
    """Features with a full-rank covariance and well-separated eigenvalues."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(channels, channels, generator=g, dtype=torch.float64)
    scales = torch.linspace(0.5, 3.0, channels, dtype=torch.float64)
    return ((torch.randn(n, channels, generator=g, dtype=torch.float64) * scales) @ mixing + 2.0).to(dtype)


def reference_zca(x, eps):
    """float64 ZCA with torch.linalg.eigh."""
    x = x.double()
    centered = x - x.mean(0)
    values, vectors = torch.linalg.eigh(centered.T @ centered / x.shape[0])
    return centered @ (vectors * (values + eps).rsqrt()) @ vectors.T


def test_repr_and_output_is_whitened_zca():
    norm = ZCAWhitening(4, eps=1e-8).double()
    assert str(norm) == "ZCAWhitening(4)"
    x = correlated_features(200, 4)
    out = norm(x)
    assert torch.allclose(out, reference_zca(x, 1e-8), atol=1e-10)
    assert torch.allclose(out.T @ out / 200, torch.eye(4, dtype=torch.float64), atol=1e-6)


def test_batch_equals_each_graph():
    norm = ZCAWhitening(3, track_running_stats=False).double()
    x = torch.cat([correlated_features(30, 3, seed=1), correlated_features(50, 3, seed=2)])
    batch = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(50, dtype=torch.long)])
    together = norm(x, batch)
    assert torch.allclose(together[:30], norm(x[:30]), atol=1e-12)
    assert torch.allclose(together[30:], norm(x[30:]), atol=1e-12)


def test_running_statistics_used_in_eval():
    norm = ZCAWhitening(3, momentum=0.5).double()
    x = correlated_features(100, 3, seed=3)
    norm(x)
    centered = x - x.mean(0)
    expected_cov = 0.5 * torch.eye(3, dtype=torch.float64) + 0.5 * centered.T @ centered / 100
    assert torch.allclose(norm.running_mean, 0.5 * x.mean(0))
    assert torch.allclose(norm.running_cov, expected_cov)
    norm.eval()
    new = correlated_features(10, 3, seed=4)
    values, vectors = torch.linalg.eigh(expected_cov)
    expected = (new - 0.5 * x.mean(0)) @ (vectors * (values + norm.eps).rsqrt()) @ vectors.T
    assert torch.allclose(norm(new), expected, atol=1e-10)
    norm.reset_parameters()
    assert torch.equal(norm.running_cov, torch.eye(3, dtype=torch.float64))


def test_graphs_without_nodes_do_not_enter_the_running_statistics():
    """An empty graph in the middle and one at the end (batch_size above the graphs present): the running
    statistics are the float64 mean of the two graphs' own means and covariances; no nodes: unchanged."""
    first, second = correlated_features(40, 3, seed=5), correlated_features(60, 3, seed=6)
    x = torch.cat([first, second])
    batch = torch.cat([torch.zeros(40, dtype=torch.long), torch.full((60,), 2)])
    norm = ZCAWhitening(3, momentum=1.0).double()
    norm(x, batch, batch_size=4)
    graphs = [first, second]
    expected_mean = sum(g.mean(0) for g in graphs) / 2
    expected_cov = sum(torch.cov(g.T, correction=0) for g in graphs) / 2
    assert torch.allclose(norm.running_mean, expected_mean, atol=1e-12)
    assert torch.allclose(norm.running_cov, expected_cov, atol=1e-12)
    before = norm.running_mean.clone(), norm.running_cov.clone()
    norm(x[:0], batch[:0], batch_size=2)
    assert torch.equal(norm.running_mean, before[0]) and torch.equal(norm.running_cov, before[1])


def test_gradcheck_on_separated_covariance_spectrum():
    norm = ZCAWhitening(3, track_running_stats=False).double()
    x = correlated_features(12, 3, seed=5).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: norm(v), (x,), fast_mode=True)


def test_finite_gradient_on_isotropic_features_where_eigh_is_not():
    """Columns of a Hadamard matrix: covariance exactly I (eigenvalue 1, three times)."""
    hadamard = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64)
    x = hadamard[:, 1:].repeat(3, 1).requires_grad_()
    weight = torch.randn(3, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    (ZCAWhitening(3, track_running_stats=False).double()(x) @ weight).pow(3).sum().backward()
    assert torch.isfinite(x.grad).all()

    x_ref = x.detach().clone().requires_grad_()
    (reference_zca(x_ref, 1e-5) @ weight).pow(3).sum().backward()
    assert not torch.isfinite(x_ref.grad).all()


def test_trains_inside_a_pyg_model_with_batches():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(40, 6, generator=g)
    x[:, 4] = x[:, 5] = x[:, 3]                           # duplicated features: eigenvalue 0, twice
    edge_index = torch.randint(0, 40, (2, 120), generator=g)
    batch = torch.arange(40) // 20
    y = torch.randint(0, 2, (40,), generator=g)
    torch.manual_seed(0)
    lin, norm, conv = torch.nn.Linear(6, 6), ZCAWhitening(6), GCNConv(6, 2)
    parameters = [*lin.parameters(), *conv.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=0.05)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = F.cross_entropy(conv(norm(lin(x), batch), edge_index), y)   # lin learns through the eigh
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in parameters)
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0]
    norm.eval()
    assert torch.isfinite(norm(x, batch)).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"eps": 0.0}, "eps must be a positive number"),
    ({"momentum": 1.5}, r"momentum must be a number in \[0, 1\]"),
    ({"backend_kwargs": {"method": "svd"}}, "method must be one of"),
])
def test_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ZCAWhitening(3, **kwargs)


def test_rejects_bad_input():
    norm = ZCAWhitening(3)
    with pytest.raises(ValueError, match=r"x must have shape \(num_nodes, in_channels=3\)"):
        norm(torch.zeros(5, 4))
    with pytest.raises(ValueError, match=r"batch must have shape \(num_nodes,\)"):
        norm(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or Inf"):
        norm(torch.full((5, 3), float("nan")))
