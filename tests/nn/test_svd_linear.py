import doctest

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch_geometric.nn import GCNConv
from torch_geometric.utils import to_dense_adj

import lowrank_gnn.nn.svd_linear as svd_linear_module
from lowrank_gnn.nn import SVDLinear
from lowrank_gnn.testing import cycle_graph, disjoint_union, path_graph

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="CUDA not available"))]


def spectral_norm(weight):
    return torch.linalg.matrix_norm(weight.detach(), 2)


@pytest.mark.parametrize("kwargs, expected", [
    ({"max_singular_value": 1.0}, "SVDLinear(16, 32, max_singular_value=1.0)"),
    ({}, "SVDLinear(16, 32)"),
    ({"bias": False, "max_singular_value": 2, "min_singular_value": 0.5},
     "SVDLinear(16, 32, bias=False, max_singular_value=2.0, min_singular_value=0.5)"),
    ({"learn_singular_values": False, "init": "orthogonal", "block_size": 8},
     "SVDLinear(16, 32, learn_singular_values=False, init='orthogonal', block_size=8)"),
])
def test_repr(kwargs, expected):
    assert str(SVDLinear(16, 32, **kwargs)) == expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("in_features, out_features", [(16, 32), (32, 16), (7, 7), (1, 5)])
def test_shapes_and_svd_structure(device, in_features, out_features):
    torch.manual_seed(0)
    layer = SVDLinear(in_features, out_features, dtype=torch.float64, device=device)
    assert layer(torch.randn(10, in_features, dtype=torch.float64, device=device)).shape == (10, out_features)
    assert layer(torch.randn(2, 3, in_features, dtype=torch.float64, device=device)).shape == (2, 3, out_features)
    U, s, Vh = layer.svd()
    r = min(in_features, out_features)
    assert U.shape == (out_features, r) and s.shape == (r,) and Vh.shape == (r, in_features)
    eye = torch.eye(r, dtype=torch.float64, device=device)
    assert torch.allclose(U.T @ U, eye, atol=1e-12) and torch.allclose(Vh @ Vh.T, eye, atol=1e-12)
    assert torch.allclose(layer.weight, U @ torch.diag(s) @ Vh, atol=1e-12)
    reference = torch.linalg.svdvals(layer.weight.detach())  # float64 dense reference
    assert torch.allclose(s.detach().abs().sort(descending=True).values, reference, atol=1e-12)


def test_linear_init_reproduces_nn_linear():
    torch.manual_seed(1)
    reference = nn.Linear(16, 32, dtype=torch.float64)
    torch.manual_seed(1)
    layer = SVDLinear(16, 32, dtype=torch.float64)
    assert torch.allclose(layer.weight, reference.weight, atol=1e-12)
    assert torch.equal(layer.bias, reference.bias)
    x = torch.randn(5, 16, dtype=torch.float64)
    assert torch.allclose(layer(x), reference(x), atol=1e-12)


@pytest.mark.parametrize("in_features, out_features", [(16, 32), (32, 16)])
def test_orthogonal_init(in_features, out_features):
    torch.manual_seed(2)
    layer = SVDLinear(in_features, out_features, init="orthogonal", dtype=torch.float64)
    r = min(in_features, out_features)
    W = layer.weight
    gram = W.T @ W if out_features >= in_features else W @ W.T
    assert torch.allclose(gram, torch.eye(r, dtype=torch.float64), atol=1e-12)
    fixed = SVDLinear(in_features, out_features, init="orthogonal", max_singular_value=2.0,
                      learn_singular_values=False, dtype=torch.float64)
    assert torch.allclose(torch.linalg.svdvals(fixed.weight.detach()), torch.full((r,), 2.0, dtype=torch.float64))


def _train(layer, steps, dtype, seed=3, gain=3.0, check=None):
    """Adam on a regression whose target map has spectral norm ~gain * 2, so it pulls every
    singular value up (or, with gain=0, down)."""
    torch.manual_seed(seed)
    x = torch.randn(64, layer.in_features, dtype=dtype)
    target = x @ (gain * torch.randn(layer.out_features, layer.in_features, dtype=dtype)).T / layer.in_features ** 0.5
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (layer(x) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if check is not None:
            check(layer)
    return losses


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("init", ["linear", "orthogonal"])
def test_spectral_norm_stays_within_the_bound_every_training_step(dtype, init):
    bound = 1.0
    norms = []

    def check(layer):
        norm = spectral_norm(layer.weight)
        norms.append(norm.item())
        assert norm <= bound

    torch.manual_seed(4)
    layer = SVDLinear(16, 32, max_singular_value=bound, init=init, dtype=dtype)
    assert spectral_norm(layer.weight) <= bound
    losses = _train(layer, 25, dtype, check=check)
    assert losses[-1] < losses[0]
    assert max(norms) > 0.95 * bound  # the training did press against the bound
    # Control: the same training without the bound leaves it, so the check above can fail.
    torch.manual_seed(4)
    free = SVDLinear(16, 32, init=init, dtype=dtype)
    _train(free, 25, dtype)
    assert spectral_norm(free.weight) > 1.5 * bound


def test_both_bounds_hold_when_training_pulls_singular_values_to_zero():
    torch.manual_seed(5)
    layer = SVDLinear(12, 8, min_singular_value=0.5, max_singular_value=1.5, dtype=torch.float64)

    def check(layer):
        s = torch.linalg.svdvals(layer.weight.detach())
        assert s.max() <= 1.5 and s.min() >= 0.5

    _train(layer, 30, torch.float64, gain=0.0, check=check)
    assert layer.singular_values.min() < 0.6  # pulled towards the lower bound


def test_fixed_singular_values_do_not_change_but_the_vectors_do():
    torch.manual_seed(6)
    layer = SVDLinear(10, 6, init="orthogonal", max_singular_value=0.5, learn_singular_values=False)
    assert "raw_singular_values" not in dict(layer.named_parameters())
    before_s, before_w = layer.singular_values.clone(), layer.weight.detach().clone()
    _train(layer, 10, torch.float32)
    assert torch.equal(layer.singular_values, before_s)
    assert torch.allclose(torch.linalg.svdvals(layer.weight.detach()), torch.full((6,), 0.5), atol=1e-5)
    assert not torch.allclose(layer.weight, before_w, atol=1e-3)


def test_gradcheck_through_the_layer():
    torch.manual_seed(7)
    layer = SVDLinear(5, 4, max_singular_value=2.0, block_size=2, dtype=torch.float64)
    names = [name for name, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for _, p in layer.named_parameters())
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)

    def run(x, *values):
        return functional_call(layer, dict(zip(names, values, strict=True)), (x,))

    assert torch.autograd.gradcheck(run, (x, *params))


def test_state_dict_round_trip_and_reset_parameters():
    torch.manual_seed(8)
    layer = SVDLinear(6, 9, max_singular_value=1.0)
    _train(layer, 3, torch.float32)
    copy = SVDLinear(6, 9, max_singular_value=1.0)
    copy.load_state_dict(layer.state_dict())
    assert {"left_signs", "right_signs"} <= set(layer.state_dict())
    assert torch.equal(copy.weight, layer.weight)
    copy.reset_parameters()
    assert not torch.allclose(copy.weight, layer.weight, atol=1e-3)
    assert layer.double().weight.dtype == torch.float64


def test_as_the_linear_map_of_a_gcn_conv():
    graph = disjoint_union(path_graph(5), cycle_graph(4))
    torch.manual_seed(9)
    conv = GCNConv(16, 32)
    conv.lin = SVDLinear(16, 32, bias=False, max_singular_value=1.0)
    conv.reset_parameters()  # PyG calls lin.reset_parameters()
    nn.init.normal_(conv.bias)
    x = torch.randn(graph.num_nodes, 16)
    out = conv(x, graph.edge_index)
    # Dense reference: D^-1/2 (A + I) D^-1/2 X W^T + b.
    adjacency = to_dense_adj(graph.edge_index, max_num_nodes=graph.num_nodes)[0] + torch.eye(graph.num_nodes)
    d = adjacency.sum(1).rsqrt()
    expected = (d[:, None] * adjacency * d[None, :]) @ x @ conv.lin.weight.T + conv.bias
    assert torch.allclose(out, expected, atol=1e-5)
    optimizer = torch.optim.Adam(conv.parameters(), lr=0.05)
    target = torch.randn(graph.num_nodes, 32) * 5
    for _ in range(10):
        optimizer.zero_grad()
        (conv(x, graph.edge_index) - target).pow(2).mean().backward()
        assert conv.lin.left_vectors.grad.abs().sum() > 0
        optimizer.step()
        assert spectral_norm(conv.lin.weight) <= 1.0


@pytest.mark.parametrize("kwargs, error, match", [
    ({"in_features": 0}, ValueError, "in_features must be a positive integer"),
    ({"max_singular_value": -1.0}, ValueError, r"max_singular_value must be > 0 \(got max_singular_value=-1.0\)"),
    ({"max_singular_value": float("nan")}, ValueError, "max_singular_value must be a finite number"),
    ({"min_singular_value": 0.5}, ValueError, "min_singular_value needs max_singular_value"),
    ({"min_singular_value": 2.0, "max_singular_value": 1.0}, ValueError,
     "0 <= min_singular_value < max_singular_value"),
    ({"init": "xavier"}, ValueError, "init must be one of 'linear', 'orthogonal'"),
    ({"block_size": 0}, ValueError, "block_size must be a positive integer"),
])
def test_bad_arguments(kwargs, error, match):
    arguments = {"in_features": 4, "out_features": 3, **kwargs}
    with pytest.raises(error, match=match):
        SVDLinear(**arguments)


def test_docstring_example():
    result = doctest.testmod(svd_linear_module, extraglobs={"torch": torch})
    assert result.attempted >= 2 and result.failed == 0
