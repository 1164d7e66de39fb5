import os

import pytest
import torch
import torch.nn.functional as F

from lowrank_gnn.eigen import ExactBackend
from lowrank_gnn.nn import LowRankGCNConv, total_aux_loss
from lowrank_gnn.operators import deflate_components, normalized_adjacency
from lowrank_gnn.testing import cycle_graph, disjoint_union, path_graph


def two_community_graph():
    """Two 12-cycles with chords, joined by one edge, plus a separate 5-path; labels = community.

    Returns edge_index, symmetric random edge weights in [0.5, 1.5] (they break the graph's
    symmetries, so the top eigenvalues are simple), num_nodes and labels.
    """
    graph = disjoint_union(cycle_graph(12), cycle_graph(12), path_graph(5))
    half = graph.edge_index[:, graph.edge_index[0] < graph.edge_index[1]]
    half = torch.cat([half, torch.tensor([[0, 6], [12, 18], [3, 9], [15, 21], [11, 12]]).T], 1)
    weight = 0.5 + torch.rand(half.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0] * 12 + [1] * 12 + [0] * 5)
    return torch.cat([half, half.flip(0)], 1), torch.cat([weight, weight]), graph.num_nodes, y


def test_layer_output_matches_exact_at_the_converged_basis():
    """Warm-started (init="exact"), the amortized layer computes the exact layer's output."""
    edge_index, weight, n, _ = two_community_graph()
    x = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = LowRankGCNConv(3, 2, k=4, backend="exact").double()
    amortized = LowRankGCNConv(3, 2, k=4, backend="amortized", backend_kwargs={"init": "exact"}).double()
    amortized.load_state_dict(exact.state_dict(), strict=False)
    out = amortized(x, edge_index, weight)
    assert amortized.aux_loss is not None and amortized.aux_loss.requires_grad
    assert torch.allclose(out, exact(x, edge_index, weight), atol=1e-10)
    assert float(amortized.backend.diagnostics.residual) < 1e-12


def test_trains_end_to_end_with_learnable_edge_weights():
    torch.manual_seed(0)
    edge_index, _, n, y = two_community_graph()
    x = torch.randn(n, 4)
    edge_logit = torch.nn.Parameter(torch.zeros(edge_index.shape[1] // 2))  # one per undirected edge

    def edge_weight(logit):
        weight = 2 * torch.sigmoid(logit)
        return torch.cat([weight, weight])
    conv = LowRankGCNConv(4, 2, k=3, backend="amortized", backend_kwargs={"init": "exact", "eta": 10.0},
                          root_weight=True)
    model = torch.nn.ModuleDict({"conv": conv})
    conv(x, edge_index, edge_weight(edge_logit))  # first forward sizes the basis
    basis = list(conv.backend.parameters())  # its own, smaller step (see the README)
    rest = [p for p in model.parameters() if all(p is not b for b in basis)]
    optimizer = torch.optim.Adam([{"params": rest}, {"params": [edge_logit], "lr": 1e-2},
                                  {"params": basis, "lr": 1e-2}], lr=0.05)
    basis_before = conv.backend.basis.weight.detach().clone()
    for _ in range(60):
        optimizer.zero_grad()
        out = conv(x, edge_index, edge_weight(edge_logit))
        loss = F.cross_entropy(out, y) + total_aux_loss(model)
        loss.backward()
        optimizer.step()
    assert float((out.argmax(-1) == y).float().mean()) == 1.0
    assert edge_logit.grad.abs().sum() > 0 and not torch.equal(basis_before, conv.backend.basis.weight.detach())
    # the basis kept tracking the operator that the edge weights changed (by up to 30% here)
    op = deflate_components(normalized_adjacency(edge_index, edge_weight(edge_logit.detach()), n))
    exact = ExactBackend(k=3)(op).eigenvalues
    error = float((conv.backend(op).eigenvalues.detach() - exact).abs().max())
    assert error < 5e-2  # measured 2e-2: the price of one optimiser step per operator change
    assert float(conv.backend.diagnostics.residual) < 3e-2  # measured 1.1e-2
    assert "basis.weight" in "".join(conv.state_dict())


@pytest.mark.slow
def test_cora_amortized_matches_exact_accuracy():
    from lowrank_gnn.data import load_planetoid

    os.environ.setdefault("LOWRANK_GNN_DATA", "/work/main/datasets")
    data = load_planetoid("Cora")[0]
    accuracies = {}
    for backend in ("exact", "amortized"):
        torch.manual_seed(0)
        kwargs = {"init": "exact"} if backend == "amortized" else {}
        conv1 = torch.nn.Linear(data.num_features, 16)
        conv2 = LowRankGCNConv(16, 7, k=16, backend=backend, backend_kwargs=kwargs, root_weight=True,
                               cached=backend == "exact")  # fixed graph: exact once, amortized tracks
        model = torch.nn.ModuleList([conv1, conv2])
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02, weight_decay=5e-4)
        for _ in range(60):
            optimizer.zero_grad()
            h = F.dropout(F.relu(conv1(F.dropout(data.x, 0.5))), 0.5)
            out = conv2(h, data.edge_index)
            (F.cross_entropy(out[data.train_mask], data.y[data.train_mask]) + total_aux_loss(model)).backward()
            optimizer.step()
        with torch.no_grad():
            pred = conv2(F.relu(conv1(data.x)), data.edge_index).argmax(-1)
        accuracies[backend] = float((pred[data.test_mask] == data.y[data.test_mask]).float().mean())
    assert accuracies["amortized"] > 0.6
    assert abs(accuracies["amortized"] - accuracies["exact"]) <= 0.02, accuracies


def test_a_shared_amortized_solve_enters_total_aux_loss_once_from_the_layer_that_computed_it():
    """The README's pattern, spectrum = conv1.eigenpairs(...) passed to every layer: conv1 holds the
    eigen loss, conv2 holds None (even after a forward of its own), and the basis gets its gradient."""
    edge_index, weight, n, _ = two_community_graph()
    weight = weight.float()
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    conv1 = LowRankGCNConv(3, 4, k=3, backend="amortized")
    conv2 = LowRankGCNConv(4, 2, k=3, backend="amortized")
    model = torch.nn.ModuleList([conv1, conv2])
    conv2(torch.randn(n, 4), edge_index, weight)   # a solve of conv2's own, before the shared one
    spectrum = conv1.eigenpairs(edge_index, weight, n)
    h = conv1(x, edge_index, weight, eigenpairs=spectrum).relu()
    h = conv1(h[:, :3], edge_index, weight, eigenpairs=spectrum).relu()   # reused: still counted once
    out = conv2(h, edge_index, weight, eigenpairs=spectrum)
    eigen_loss = spectrum[0].aux_loss
    assert eigen_loss is not None and conv1.aux_loss is eigen_loss and conv2.aux_loss is None
    assert total_aux_loss(model) is eigen_loss
    basis = conv1.backend.basis.weight
    task = out.square().mean()
    expected = torch.autograd.grad(task + eigen_loss, basis, retain_graph=True)[0]
    got = torch.autograd.grad(task + total_aux_loss(model), basis, retain_graph=True)[0]
    task_only = torch.autograd.grad(task, basis)[0]
    assert torch.equal(got, expected) and not torch.allclose(got, task_only)
