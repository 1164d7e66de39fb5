import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor

from lowrank_gnn.eigen import ExactBackend
from lowrank_gnn.nn import LowRankGCNConv, total_aux_loss
from lowrank_gnn.operators import deflate_components, normalized_adjacency
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph

GRAPH = disjoint_union(cycle_graph(5), path_graph(4), complete_graph(3))
N = GRAPH.num_nodes
ROW, COL = GRAPH.edge_index
WEIGHT = (0.5 + ((ROW * COL) % 7 + ROW + COL) / 10.0).double()  # symmetric in (row, col)


def gcn_twin(conv: LowRankGCNConv) -> GCNConv:
    ref = GCNConv(conv.in_channels, conv.out_channels).double()
    ref.lin.weight.data.copy_(conv.lin.weight.data)
    ref.bias.data.copy_(conv.bias.data)
    return ref


def test_repr_and_defaults():
    conv = LowRankGCNConv(16, 32, k=8)
    assert str(conv) == "LowRankGCNConv(16, 32, k=8)"
    assert isinstance(conv.backend, ExactBackend) and conv.backend.k == 8 and conv.deflate_components


@pytest.mark.parametrize("deflate", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_full_rank_reproduces_gcnconv(deflate, weighted):
    torch.manual_seed(0)
    x = torch.randn(N, 4, dtype=torch.float64)
    conv = LowRankGCNConv(4, 3, k=N, deflate_components=deflate).double()
    weight = WEIGHT if weighted else None
    expected = gcn_twin(conv)(x, GRAPH.edge_index, weight)
    assert torch.allclose(conv(x, GRAPH.edge_index, weight), expected, atol=1e-12)


@pytest.mark.parametrize("to_sparse", [to_torch_coo_tensor, to_torch_csr_tensor])
def test_sparse_adjacency_formats_give_the_same_output(to_sparse):
    torch.manual_seed(0)
    x = torch.randn(N, 4, dtype=torch.float64)
    conv = LowRankGCNConv(4, 3, k=5).double()
    adj = to_sparse(GRAPH.edge_index, WEIGHT, size=N)
    assert torch.allclose(conv(x, adj), conv(x, GRAPH.edge_index, WEIGHT), atol=1e-12)


def test_low_rank_output_is_component_means_plus_top_k():
    torch.manual_seed(0)
    x = torch.randn(N, 4, dtype=torch.float64)
    conv = LowRankGCNConv(4, 3, k=2, bias=False).double()
    op = deflate_components(normalized_adjacency(GRAPH.edge_index, WEIGHT, N))
    values, vectors = torch.linalg.eigh(op.to_dense())
    top = vectors[:, -2:] @ torch.diag(values[-2:]) @ vectors[:, -2:].T
    expected = (op.basis @ op.basis.T + top) @ (x @ conv.lin.weight.T)
    assert torch.allclose(conv(x, GRAPH.edge_index, WEIGHT), expected, atol=1e-10)


def test_root_weight_adds_a_self_term():
    torch.manual_seed(0)
    x = torch.randn(N, 4)
    conv = LowRankGCNConv(4, 3, k=3, root_weight=True)
    plain = LowRankGCNConv(4, 3, k=3)
    plain.load_state_dict({k: v for k, v in conv.state_dict().items() if "lin_root" not in k})
    assert torch.allclose(conv(x, GRAPH.edge_index), plain(x, GRAPH.edge_index) + conv.lin_root(x), atol=1e-6)


class CountingBackend(ExactBackend):
    calls = 0

    def solve(self, op):
        CountingBackend.calls += 1
        return super().solve(op)


def test_cached_computes_eigenpairs_once_and_reset_clears_the_cache():
    CountingBackend.calls = 0
    conv = LowRankGCNConv(4, 3, k=3, backend=CountingBackend(k=3), cached=True)
    x = torch.randn(N, 4)
    first = conv(x, GRAPH.edge_index)
    assert torch.equal(conv(x, GRAPH.edge_index), first) and CountingBackend.calls == 1
    conv.reset_parameters()
    conv(x, GRAPH.edge_index)
    assert CountingBackend.calls == 2
    uncached = LowRankGCNConv(4, 3, k=3, backend=CountingBackend(k=3))
    uncached(x, GRAPH.edge_index), uncached(x, GRAPH.edge_index)
    assert CountingBackend.calls == 4


def test_cached_refuses_learnable_edge_weights():
    conv = LowRankGCNConv(4, 3, k=3, cached=True)
    with pytest.raises(ValueError, match="silently stop the gradient"):
        conv(torch.randn(N, 4), GRAPH.edge_index, WEIGHT.float().requires_grad_())


def test_gradients_reach_edge_weights_and_match_finite_differences():
    # path graph: simple spectrum, so the exact dense backward is well defined
    edge_index = path_graph(7).edge_index
    half = torch.linspace(0.5, 1.5, edge_index.shape[1] // 2, dtype=torch.float64).requires_grad_()
    x = torch.randn(7, 3, dtype=torch.float64)
    conv = LowRankGCNConv(3, 2, k=3).double()
    assert torch.autograd.gradcheck(lambda w: conv(x, edge_index, w.repeat(2)), (half,))


def test_trains_inside_a_pyg_style_model():
    torch.manual_seed(0)
    x = torch.randn(N, 5)
    y = torch.tensor([0] * 5 + [1] * 4 + [2] * 3)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = LowRankGCNConv(-1, 8, k=4, root_weight=True)  # lazy in_channels
            self.conv2 = LowRankGCNConv(8, 3, k=4)

        def forward(self, x, edge_index):
            return self.conv2(self.conv1(x, edge_index).relu(), edge_index)

    model = Net()
    model(x, GRAPH.edge_index)  # materialise the lazy weights before building the optimizer
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x, GRAPH.edge_index), y) + total_aux_loss(model)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert total_aux_loss(model) == 0.0  # the exact backend has no auxiliary loss


def test_backend_by_name_with_options_and_instance_checks():
    conv = LowRankGCNConv(4, 3, k=3, backend="exact", backend_kwargs={"which": "magnitude", "method": "sparse"})
    assert conv.backend.which == "magnitude" and conv.backend.method == "sparse"
    with pytest.raises(ValueError, match="k=5 eigenpairs but the layer has k=3"):
        LowRankGCNConv(4, 3, k=3, backend=ExactBackend(k=5))
    with pytest.raises(ValueError, match="cannot be applied"):
        LowRankGCNConv(4, 3, k=3, backend=ExactBackend(k=3), backend_kwargs={"which": "smallest"})
    with pytest.raises(ValueError, match="backend must be an EigenBackend or one of"):
        LowRankGCNConv(4, 3, k=3, backend="eig")


@pytest.mark.parametrize("make_input, error, match", [
    (lambda: (torch.randn(N, 4), GRAPH.edge_index, None, 20), ValueError, r"k must satisfy 1 <= k <= n=12"),
    (lambda: (torch.full((N, 4), float("nan")), GRAPH.edge_index, None, 3), ValueError, "x contains NaN"),
    (lambda: (torch.randn(N), GRAPH.edge_index, None, 3), ValueError, r"x must have shape \(num_nodes"),
    (lambda: (torch.randn(5, 4), GRAPH.edge_index, None, 3), ValueError, r"\[0, num_nodes\) = \[0, 5\)"),
    (lambda: (torch.randn(N, 4), GRAPH.edge_index, WEIGHT, 3), TypeError, "edge_weight has dtype torch.float64"),
    (lambda: (torch.randn(0, 4), torch.empty(2, 0, dtype=torch.long), None, 3), ValueError, "graph is empty"),
])
def test_bad_input(make_input, error, match):
    x, edge_index, weight, k = make_input()
    with pytest.raises(error, match=match):
        LowRankGCNConv(4, 3, k=k)(x, edge_index, weight)


def test_graph_without_edges_is_a_linear_layer():
    x = torch.randn(4, 3)
    conv = LowRankGCNConv(3, 2, k=4)
    assert torch.allclose(conv(x, torch.empty(2, 0, dtype=torch.long)), conv.lin(x) + conv.bias, atol=1e-6)


def test_device_mismatch_is_reported():
    x = torch.randn(N, 4, device="meta")
    with pytest.raises(ValueError, match="edge_index is on cpu but x is on meta"):
        LowRankGCNConv(4, 3, k=3)(x, GRAPH.edge_index)
    with pytest.raises(ValueError, match="edge_weight is on meta but x is on cpu"):
        LowRankGCNConv(4, 3, k=3)(torch.randn(N, 4), GRAPH.edge_index, WEIGHT.float().to("meta"))


def test_per_direction_weights_are_averaged_so_learning_them_keeps_working():
    torch.manual_seed(0)
    x = torch.randn(N, 4, dtype=torch.float64)
    conv = LowRankGCNConv(4, 3, k=4).double()
    # one learnable weight per directed edge, the two directions different
    weight = (WEIGHT * (1 + 0.5 * torch.rand(WEIGHT.shape, dtype=torch.float64))).requires_grad_()
    reverse = {(int(i), int(j)): e for e, (i, j) in enumerate(GRAPH.edge_index.t())}
    mirror = torch.tensor([reverse[(int(j), int(i))] for i, j in GRAPH.edge_index.t()])
    averaged = ((weight + weight[mirror]) / 2).detach()
    assert not torch.allclose(weight.detach(), averaged)
    assert torch.allclose(conv(x, GRAPH.edge_index, weight), conv(x, GRAPH.edge_index, averaged), atol=1e-12)
    optimizer = torch.optim.SGD([weight], lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        conv(x, GRAPH.edge_index, weight).pow(2).sum().backward()
        assert torch.isfinite(weight.grad).all() and torch.allclose(weight.grad, weight.grad[mirror])
        optimizer.step()


def test_one_way_edges_count_in_both_directions():
    x = torch.randn(3, 2, dtype=torch.float64)
    conv = LowRankGCNConv(2, 2, k=3).double()
    one_way = torch.tensor([[0, 1], [1, 2]])
    both_ways = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    assert torch.allclose(conv(x, one_way), conv(x, both_ways), atol=1e-12)


def test_a_graph_seen_again_reuses_its_structure_and_stays_exact(monkeypatch):
    """Same edge_index, new weights every forward: the operator equals a fresh to_undirected +
    normalized_adjacency build each time, while the sort-based work (pattern, symmetry,
    components) runs once; a zero weight (a component may split) or a new graph recomputes."""
    import scipy.sparse.csgraph as csgraph
    from torch_geometric.utils import to_undirected

    calls = []
    original = csgraph.connected_components
    monkeypatch.setattr(csgraph, "connected_components", lambda *a, **k: calls.append(1) or original(*a, **k))
    torch.manual_seed(0)
    directed = torch.tensor([[0, 1, 1, 2, 3, 4, 5, 5], [1, 0, 2, 3, 4, 3, 6, 6]])  # one-way, two-way, repeated
    x = torch.randn(7, 3, dtype=torch.float64)
    conv = LowRankGCNConv(3, 2, k=3).double()
    for step in range(3):
        weight = 0.5 + torch.rand(directed.shape[1], dtype=torch.float64)
        index, merged = to_undirected(directed, weight, 7, reduce="mean")
        reference = LowRankGCNConv(3, 2, k=3).double()
        reference.load_state_dict(conv.state_dict())
        op = deflate_components(normalized_adjacency(index, merged, 7))
        assert torch.allclose(conv(x, directed, weight), reference(x, index, merged), atol=1e-12)
        assert torch.allclose(conv._operator(directed, weight, 7, torch.float64).to_dense(), op.to_dense(), atol=1e-12)
    graph = conv._graph
    assert conv._graph.structure is not None and len(calls) == 1 + 3 * 2  # conv once; each reference twice
    calls.clear()
    weight[3] = 0.0  # the one-way edge 2 -> 3: a zero entry, the graph splits into {0, 1, 2} and {3, ...}
    out = conv(x, directed, weight)
    assert conv._graph is graph and len(calls) == 1  # zeros present: components recomputed, not taken from the cache
    index, merged = to_undirected(directed, weight, 7, reduce="mean")
    assert torch.allclose(out, reference(x, index, merged), atol=1e-12)
    other = torch.tensor([[0, 2], [2, 0]])
    conv(x, other, torch.ones(2, dtype=torch.float64))
    assert conv._graph is not graph


def test_an_edge_index_edited_in_place_is_not_served_from_the_prepared_graph():
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64)
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    conv = LowRankGCNConv(3, 2, k=6).double()
    conv(x, edge_index)
    edge_index[1, 3] = 5  # rewired in place (e.g. an in-place edge dropout / rewiring step)
    fresh = LowRankGCNConv(3, 2, k=6).double()
    fresh.load_state_dict(conv.state_dict())
    assert torch.allclose(conv(x, edge_index), fresh(x, edge_index.clone()), atol=1e-12)


def test_an_unweighted_graph_builds_its_operator_once_per_dtype():
    """edge_weight=None: the unit-weight operator (normalisation and symmetry check included) is built at the
    first forward and reused; it equals explicit unit weights; a new dtype builds a new one."""
    torch.manual_seed(0)
    edge_index = disjoint_union(cycle_graph(6), path_graph(3)).edge_index
    conv = LowRankGCNConv(3, 2, k=2).double()
    x = torch.randn(9, 3, dtype=torch.float64)
    out = conv(x, edge_index)
    op = conv._graph.unit
    assert op.dtype == torch.float64 and op._symmetric is True  # checked once, cached on the operator
    assert torch.equal(conv(x, edge_index), out) and conv._graph.unit is op
    ones = torch.ones(edge_index.shape[1], dtype=torch.float64)
    assert torch.allclose(conv(x, edge_index, ones), out, atol=1e-12) and conv._graph.unit is op
    conv.float()
    out32 = conv(x.float(), edge_index)
    assert conv._graph.unit.dtype == torch.float32 and torch.allclose(out32.double(), out, atol=1e-5)
    pairs, _ = conv.eigenpairs(edge_index, None, 9)  # public call without weights: the default dtype
    assert pairs.eigenvalues.dtype == torch.get_default_dtype()
