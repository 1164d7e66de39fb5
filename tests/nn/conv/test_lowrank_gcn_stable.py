"""LowRankGCNConv with the stable backend: learnable edge weights through repeated eigenvalues."""
import os

import pytest
import torch
import torch.nn.functional as F

from lowrank_gnn.eigen import StableBackend
from lowrank_gnn.nn import LowRankGCNConv
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph


def undirected(edge_index):
    """``[edges, reversed edges]``: one learnable weight per undirected edge keeps the operator symmetric."""
    upper = edge_index[:, edge_index[0] < edge_index[1]]
    return torch.cat([upper, upper.flip(0)], dim=1)


def edge_weights(logits):
    weight = 2 * torch.sigmoid(logits)   # positive, 1 at logits = 0
    return torch.cat([weight, weight])


def disconnected_task(*graphs, seed=0):
    graph = disjoint_union(*graphs)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(graph.num_nodes, 5, generator=g)
    y = torch.randint(0, 3, (graph.num_nodes,), generator=g)
    return undirected(graph.edge_index), x, y


#: Six components: eigenvalue 1 of the normalized adjacency six times, cut by k = 4.
SIX_COMPONENTS = (cycle_graph(6), cycle_graph(6), path_graph(5), path_graph(7), complete_graph(4), cycle_graph(8))


def gradients_after_one_step(backend, **kwargs):
    edge_index, x, y = disconnected_task(*SIX_COMPONENTS)
    torch.manual_seed(0)
    conv = LowRankGCNConv(5, 3, k=4, backend=backend, deflate_components=False, **kwargs)
    logits = torch.zeros(edge_index.shape[1] // 2, requires_grad=True)
    F.cross_entropy(conv(x, edge_index, edge_weights(logits)), y).backward()
    return logits.grad


def train(backend, edge_index, x, y, k, steps, lr=0.05, **kwargs):
    torch.manual_seed(0)
    conv = LowRankGCNConv(x.shape[1], int(y.max()) + 1, k=k, backend=backend, **kwargs)
    logits = torch.zeros(edge_index.shape[1] // 2, requires_grad=True)
    optimizer = torch.optim.Adam([logits, *conv.parameters()], lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(conv(x, edge_index, edge_weights(logits)), y)
        loss.backward()
        assert torch.isfinite(logits.grad).all(), f"non-finite edge-weight gradient at step {len(losses)}"
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses, logits.detach()


def test_exact_backend_gives_non_finite_edge_weight_gradients_here():
    """The failure the stable backend fixes: top-4 of a 6-fold eigenvalue 1, exact eigh backward."""
    grad = gradients_after_one_step("exact", backend_kwargs={"method": "dense"})
    assert not torch.isfinite(grad).all()


@pytest.mark.parametrize("method", ["taylor", "power_iteration"])
def test_stable_backend_trains_edge_weights_through_repeated_eigenvalue(method):
    edge_index, x, y = disconnected_task(*SIX_COMPONENTS)
    losses, logits = train("stable", edge_index, x, y, k=4, steps=25, deflate_components=False,
                           backend_kwargs={"method": method, "forward_method": "dense"})
    assert losses[-1] < 0.9 * losses[0]
    assert float(logits.abs().max()) > 0.5   # the edge weights did move (Adam, lr 0.05, 25 steps)


def test_stable_sparse_path_with_deflation_matches_dense_path():
    """Deflated operator (exact eigenvalue-1 block) + ARPACK + Lanczos partial backward vs full eigh.

    Random edge weights: no repeated eigenvalue left after deflation, so both paths pick the same pairs.
    """
    edge_index, x, y = disconnected_task(path_graph(5), path_graph(7), cycle_graph(9), complete_graph(4))
    start = 0.5 * torch.randn(edge_index.shape[1] // 2, generator=torch.Generator().manual_seed(1),
                              dtype=torch.float64)
    grads = []
    for forward_method in ("dense", "sparse"):
        torch.manual_seed(0)
        conv = LowRankGCNConv(5, 3, k=4, backend="stable", backend_kwargs={"forward_method": forward_method},
                              deflate_components=True).double()
        logits = start.clone().requires_grad_()
        F.cross_entropy(conv(x.double(), edge_index, edge_weights(logits)), y).backward()
        grads.append(logits.grad)
    assert torch.isfinite(grads[1]).all()
    assert torch.allclose(grads[1], grads[0], atol=1e-8 * float(grads[0].abs().max()))


@pytest.mark.slow
def test_cora_without_deflation_exact_fails_stable_trains():
    """Cora: eigenvalue 1 has multiplicity 78; the top-16 block is all eigenvalue 1 (~1.7 s per dense eigh)."""
    from lowrank_gnn.data import load_planetoid

    root = os.environ.get("LOWRANK_GNN_DATA")
    data = load_planetoid("Cora", root=root)[0]
    mask = data.train_mask
    edge_index, x, y = undirected(data.edge_index), data.x, data.y

    torch.manual_seed(0)
    conv = LowRankGCNConv(x.shape[1], 7, k=16, backend="exact", backend_kwargs={"method": "dense"},
                          deflate_components=False)
    logits = torch.zeros(edge_index.shape[1] // 2, requires_grad=True)
    F.cross_entropy(conv(x, edge_index, edge_weights(logits))[mask], y[mask]).backward()
    assert not torch.isfinite(logits.grad).all()

    torch.manual_seed(0)
    conv = LowRankGCNConv(x.shape[1], 7, k=16, backend="stable", backend_kwargs={"forward_method": "dense"},
                          deflate_components=False)
    logits = torch.zeros(edge_index.shape[1] // 2, requires_grad=True)
    optimizer = torch.optim.Adam([logits, *conv.parameters()], lr=0.05)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = F.cross_entropy(conv(x, edge_index, edge_weights(logits))[mask], y[mask])
        loss.backward()
        assert torch.isfinite(logits.grad).all()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_k_larger_than_the_graph_is_clamped_for_the_stable_backend_by_name():
    edge_index = path_graph(6).edge_index
    x = torch.randn(6, 5, dtype=torch.float64)
    torch.manual_seed(0)
    stable = LowRankGCNConv(5, 3, k=8, backend="stable", backend_kwargs={"degree": 5}).double()
    torch.manual_seed(0)
    exact = LowRankGCNConv(5, 3, k=8).double()
    assert torch.allclose(stable(x, edge_index), exact(x, edge_index), atol=1e-12)
    pairs, _ = stable.eigenpairs(edge_index, None, 6, torch.float64)
    assert pairs.eigenvalues.shape == (6,)   # min(k, num_nodes)


def test_backends_that_cannot_be_clamped_say_so():
    edge_index, x = path_graph(6).edge_index, torch.randn(6, 5)
    with pytest.raises(ValueError, match="backend='amortized' learns a basis of k=8 columns.*use k <= 6"):
        LowRankGCNConv(5, 3, k=8, backend="amortized")(x, edge_index)
    with pytest.raises(ValueError, match="backend instance StableBackend is fixed to k=8; give the backend by name"):
        LowRankGCNConv(5, 3, k=8, backend=StableBackend(8))(x, edge_index)
