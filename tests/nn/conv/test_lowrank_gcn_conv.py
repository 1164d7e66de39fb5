import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csr_tensor

from lowrank_gnn.eigen import EigenPairs, ExactBackend
from lowrank_gnn.nn import LowRankGCNConv, low_rank_propagate, total_aux_loss
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


def test_cached_refuses_a_backend_with_learned_state():
    """The amortized basis is trained at every step; a cache would hold pairs whose graph reaches back to
    the basis of the first step, so the second backward failed inside autograd."""
    with pytest.raises(ValueError, match="cached=True computes the eigenpairs once.*use cached=False"):
        LowRankGCNConv(4, 3, k=3, backend="amortized", cached=True)


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


@pytest.mark.parametrize("k", [3, 16])  # 16 >= N: the cache holds the operator applied directly
def test_cached_refuses_learnable_edge_weights_also_once_filled(k):
    conv = LowRankGCNConv(4, 3, k=k, cached=True)
    x, weight = torch.randn(N, 4), WEIGHT.float().requires_grad_()
    with pytest.raises(ValueError, match="silently stop the gradient"):
        conv(x, GRAPH.edge_index, weight)
    conv(x, GRAPH.edge_index)  # fills the cache
    with pytest.raises(ValueError, match="silently stop the gradient"):
        conv(x, GRAPH.edge_index, weight)
    with pytest.raises(ValueError, match="silently stop the gradient"):
        conv.eigenpairs(GRAPH.edge_index, weight, N)


@pytest.mark.parametrize("k", [3, 16])
def test_cached_layer_cast_to_another_dtype_computes_its_cache_again(k):
    torch.manual_seed(0)
    x = torch.randn(N, 4)
    conv = LowRankGCNConv(4, 3, k=k, cached=True)
    conv(x, GRAPH.edge_index, WEIGHT.float())   # fills the cache in float32
    conv.double()
    fresh = LowRankGCNConv(4, 3, k=k).double()
    fresh.load_state_dict(conv.state_dict())
    out = conv(x.double(), GRAPH.edge_index, WEIGHT)
    assert out.dtype == torch.float64
    assert torch.allclose(out, fresh(x.double(), GRAPH.edge_index, WEIGHT), atol=1e-12)
    index, value = conv._cached_edge_index
    assert value.dtype == torch.float64
    conv.float()
    assert torch.allclose(conv(x, GRAPH.edge_index, WEIGHT.float()).double(), out, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("k", [3, 16])
def test_cached_layer_moved_to_another_device_computes_its_cache_there(k):
    torch.manual_seed(0)
    x = torch.randn(N, 4, dtype=torch.float64)
    conv = LowRankGCNConv(4, 3, k=k, cached=True, backend_kwargs={"method": "dense"}).double()
    expected = conv(x, GRAPH.edge_index)
    conv.cuda()
    out = conv(x.cuda(), GRAPH.edge_index.cuda())
    assert out.device.type == "cuda" and torch.allclose(out.cpu(), expected, atol=1e-10)


@pytest.mark.parametrize("k", [9, 16])  # k = n and the default k on a graph of fewer nodes
def test_graph_of_at_most_k_nodes_has_gcnconv_gradients_through_isolated_nodes(k):
    """A 6-cycle and 3 isolated nodes: the deflated operator's eigenvalue 0 repeats, so the eigh backward is
    NaN; the operator applied directly has GCNConv's output and edge-weight gradients."""
    torch.manual_seed(0)
    graph = disjoint_union(cycle_graph(6), path_graph(1), path_graph(1), path_graph(1))
    upper = graph.edge_index[:, graph.edge_index[0] < graph.edge_index[1]]
    edge_index = torch.cat([upper, upper.flip(0)], 1)           # one learnable weight per undirected edge
    x = torch.randn(graph.num_nodes, 3, dtype=torch.float64)
    conv = LowRankGCNConv(3, 2, k=k).double()
    ref = gcn_twin(conv)
    results = []
    for layer in (conv, ref):
        pair_weight = torch.linspace(0.5, 1.5, upper.shape[1], dtype=torch.float64).requires_grad_()
        out = layer(x, edge_index, pair_weight.repeat(2))
        out.pow(2).sum().backward()
        results.append((out.detach(), pair_weight.grad))
    (out, grad), (ref_out, ref_grad) = results
    assert torch.allclose(out, ref_out, atol=1e-12)
    assert torch.isfinite(grad).all() and torch.allclose(grad, ref_grad, atol=1e-10)
    pairs, _ = conv.eigenpairs(edge_index, None, graph.num_nodes, torch.float64)
    assert pairs.eigenvalues.shape == (graph.num_nodes,)   # eigenpairs() still returns all n pairs


@pytest.mark.parametrize("backend, options", [
    ("exact", {"method": "sparse"}), ("exact", {"dense_max_nodes": 4}), ("stable", {"forward_method": "sparse"}),
])
@pytest.mark.parametrize("k", [N, 16])   # k = n and k > n: all of the graph's eigenpairs
def test_k_is_clamped_also_with_an_arpack_forward(backend, options, k):
    """ARPACK needs k < n: all of a graph's eigenpairs come from the dense forward, the documented clamp."""
    torch.manual_seed(0)
    x = torch.randn(N, 4, dtype=torch.float64)
    conv = LowRankGCNConv(4, 3, k=k, backend=backend, backend_kwargs=options).double()
    pairs, deflated = conv.eigenpairs(GRAPH.edge_index, WEIGHT, N)
    assert pairs.eigenvalues.shape == (N,)
    rebuilt = pairs.eigenvectors @ torch.diag(pairs.eigenvalues) @ pairs.eigenvectors.T + (
        deflated.base.to_dense() - deflated.to_dense())
    assert torch.allclose(rebuilt, deflated.base.to_dense(), atol=1e-12)   # sign-invariant: U diag(l) U^T + P_0
    assert torch.allclose(conv(x, GRAPH.edge_index, WEIGHT), gcn_twin(conv)(x, GRAPH.edge_index, WEIGHT), atol=1e-12)
    assert torch.allclose(conv(x, GRAPH.edge_index, WEIGHT, eigenpairs=(pairs, deflated)),
                          conv(x, GRAPH.edge_index, WEIGHT), atol=1e-12)


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
    (lambda: (torch.full((N, 4), float("nan")), GRAPH.edge_index, None, 3), ValueError, "x contains NaN"),
    (lambda: (torch.randn(N), GRAPH.edge_index, None, 3), ValueError, r"x must have shape \(num_nodes"),
    (lambda: (torch.randn(5, 4), GRAPH.edge_index, None, 3), ValueError, r"\[0, num_nodes\) = \[0, 5\)"),
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
    with pytest.raises(ValueError, match="edge_weight is on meta but edge_index is on cpu"):
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
    with pytest.warns(UserWarning, match="edge_weight is not symmetric"):
        out = conv(x, GRAPH.edge_index, weight)
    assert torch.allclose(out, conv(x, GRAPH.edge_index, averaged), atol=1e-12)
    optimizer = torch.optim.SGD([weight], lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        with pytest.warns(UserWarning, match="edge_weight is not symmetric"):
            conv(x, GRAPH.edge_index, weight).pow(2).sum().backward()
        assert torch.isfinite(weight.grad).all() and torch.allclose(weight.grad, weight.grad[mirror])
        optimizer.step()


def test_one_way_edges_count_in_both_directions():
    x = torch.randn(3, 2, dtype=torch.float64)
    conv = LowRankGCNConv(2, 2, k=3).double()
    one_way = torch.tensor([[0, 1], [1, 2]])
    both_ways = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    with pytest.warns(UserWarning, match="the graph is directed"):
        out = conv(x, one_way)
    assert torch.allclose(out, conv(x, both_ways), atol=1e-12)


@pytest.mark.filterwarnings("ignore:the graph is directed")
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




def test_a_graph_seen_again_reuses_its_structure_and_stays_exact(monkeypatch):
    """Same edge_index, new weights every forward: equal to a fresh layer each time, while the sort
    (GraphStructure) and the component search run once; a zero weight or a new graph recomputes."""
    import scipy.sparse.csgraph as csgraph

    from lowrank_gnn.operators import GraphStructure

    builds, searches = [], []
    original_init, original_search = GraphStructure.__init__, csgraph.connected_components
    monkeypatch.setattr(GraphStructure, "__init__",
                        lambda self, *a, **k: builds.append(1) or original_init(self, *a, **k))
    monkeypatch.setattr(csgraph, "connected_components", lambda *a, **k: searches.append(1) or original_search(*a, **k))
    torch.manual_seed(0)
    edge_index = disjoint_union(cycle_graph(4), path_graph(3)).edge_index
    reverse = {(int(i), int(j)): e for e, (i, j) in enumerate(edge_index.t())}
    mirror = torch.tensor([reverse[(int(j), int(i))] for i, j in edge_index.t()])
    x = torch.randn(7, 3, dtype=torch.float64)
    conv = LowRankGCNConv(3, 2, k=3).double()
    for _ in range(3):
        weight = 0.5 + torch.rand(edge_index.shape[1], dtype=torch.float64)
        weight = weight * weight[mirror]  # symmetric
        out = conv(x, edge_index, weight)
    assert len(builds) == 1 and len(searches) == 1
    fresh = LowRankGCNConv(3, 2, k=3).double()
    fresh.load_state_dict(conv.state_dict())
    assert torch.allclose(out, fresh(x, edge_index.clone(), weight), atol=1e-12)
    builds.clear(), searches.clear()
    weight = weight.clone()
    row, col = edge_index
    weight[((row == 0) & (col == 1)) | ((row == 1) & (col == 0))] = 0.0  # 0 - 1 removed: the cycle stays connected
    conv(x, edge_index, weight)
    assert len(builds) == 0 and len(searches) == 1  # a zero entry: components searched again, no new sort
    conv(x, torch.tensor([[0, 2], [2, 0]]))
    assert len(builds) == 1


def test_an_unweighted_graph_builds_its_operator_once_per_dtype(monkeypatch):
    from lowrank_gnn.operators import GraphStructure

    calls = []
    original = GraphStructure.edge_values
    monkeypatch.setattr(GraphStructure, "edge_values", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    torch.manual_seed(0)
    edge_index = disjoint_union(cycle_graph(6), path_graph(3)).edge_index
    conv = LowRankGCNConv(3, 2, k=2).double()
    x = torch.randn(9, 3, dtype=torch.float64)
    out = conv(x, edge_index)
    assert torch.equal(conv(x, edge_index), out) and len(calls) == 1
    ones = torch.ones(edge_index.shape[1], dtype=torch.float64)
    assert torch.allclose(conv(x, edge_index, ones), out, atol=1e-12) and len(calls) == 2
    conv.float()
    out32 = conv(x.float(), edge_index)
    assert len(calls) == 3 and torch.allclose(out32.double(), out, atol=1e-5)
    pairs, _ = conv.eigenpairs(edge_index, None, 9)  # public call without weights: the default dtype
    assert pairs.eigenvalues.dtype == torch.get_default_dtype()


def deflated_spectrum(k=4):
    op = deflate_components(normalized_adjacency(GRAPH.edge_index, WEIGHT, N))
    return ExactBackend(k)(op), op


@pytest.mark.parametrize("deflate", [False, True])
def test_low_rank_propagate_takes_one_signal_or_columns_against_a_dense_reference(deflate):
    pairs, op = deflated_spectrum()
    deflated = op if deflate else None
    dense = pairs.eigenvectors @ torch.diag(pairs.eigenvalues) @ pairs.eigenvectors.T
    if deflate:
        dense = dense + (op.base.to_dense() - op.to_dense())  # the removed block P_0
    x = torch.randn(N, 3, dtype=torch.float64)
    assert torch.allclose(low_rank_propagate(pairs, x, deflated), dense @ x, atol=1e-12)
    out = low_rank_propagate(pairs, x[:, 0], deflated)
    assert out.shape == (N,)
    assert torch.allclose(out, dense @ x[:, 0], atol=1e-12)


@pytest.mark.parametrize("make_call, error, match", [
    (lambda p, op: (EigenPairs(p.eigenvalues[:1], p.eigenvectors), torch.randn(N, 2, dtype=torch.float64)),
     ValueError, r"pairs.eigenvalues must have shape \(k,\) = \(4,\)"),
    (lambda p, op: (p, torch.randn(N - 1, dtype=torch.float64)), ValueError,
     r"pairs.eigenvectors must have shape \(num_nodes, k\) = \(11, k\)"),
    (lambda p, op: (p, torch.randn(N, 2)), TypeError, "pairs.eigenvectors has dtype torch.float64 but x has"),
    (lambda p, op: (p, torch.randn(N, 2, 2, dtype=torch.float64)), ValueError, r"x must have shape \(num_nodes, d\)"),
    (lambda p, op: ((p.eigenvalues, p.eigenvectors), torch.randn(N, dtype=torch.float64)), TypeError,
     "pairs must be an EigenPairs"),
    (lambda p, op: (p, torch.randn(N, dtype=torch.float64), op.base), TypeError, "deflated must be the"),
    (lambda p, op: (EigenPairs(p.eigenvalues.float(), p.eigenvectors.float()), torch.randn(N),
                    op), TypeError, "deflated has dtype torch.float64 but x has dtype torch.float32"),
])
def test_low_rank_propagate_bad_input_names_the_argument(make_call, error, match):
    pairs, op = deflated_spectrum()
    with pytest.raises(error, match=match):
        low_rank_propagate(*make_call(pairs, op))


def test_precomputed_eigenpairs_are_checked_and_named():
    conv = LowRankGCNConv(4, 3, k=4).double()
    x = torch.randn(N, 4, dtype=torch.float64)
    spectrum = conv.eigenpairs(GRAPH.edge_index, WEIGHT, N)
    assert torch.equal(conv(x, GRAPH.edge_index, WEIGHT, eigenpairs=spectrum), conv(x, GRAPH.edge_index, WEIGHT))
    with pytest.raises(TypeError, match="not an EigenPairs alone"):
        conv(x, GRAPH.edge_index, WEIGHT, eigenpairs=spectrum[0])
    with pytest.raises(TypeError, match=r"got a tuple of \(Tensor, Tensor\)"):
        conv(x, GRAPH.edge_index, WEIGHT, eigenpairs=(spectrum[0].eigenvalues, spectrum[0].eigenvectors))
    single = conv.eigenpairs(GRAPH.edge_index, WEIGHT.float(), N)
    with pytest.raises(TypeError, match="eigenpairs has dtype torch.float32 but x has dtype torch.float64"):
        conv(x, GRAPH.edge_index, WEIGHT, eigenpairs=single)
    pairs = spectrum[0]
    with pytest.raises(ValueError, match=r"eigenvalues of shape \(1,\)"):
        conv(x, GRAPH.edge_index, WEIGHT, eigenpairs=(EigenPairs(pairs.eigenvalues[:1], pairs.eigenvectors), None))


@pytest.mark.parametrize("name", ["add_self_loops", "deflate_components", "root_weight"])
def test_boolean_flags_refuse_other_values(name):
    with pytest.raises(TypeError, match=f"{name} must be a bool"):
        LowRankGCNConv(4, 3, k=3, **{name: "no"})
    assert getattr(LowRankGCNConv(4, 3, k=3, **{name: False}), name if name != "root_weight" else "lin_root") in (
        False, None)


@pytest.mark.parametrize("to_sparse", [to_torch_coo_tensor, to_torch_csr_tensor])
@pytest.mark.parametrize("size", [N - 2, N + 2])
def test_a_sparse_adjacency_of_another_size_than_x_is_refused(to_sparse, size):
    adjacency = to_sparse(GRAPH.edge_index.flip(0), WEIGHT, size=(N, N))
    with pytest.raises(ValueError, match=rf"sparse adjacency has size \({N}, {N}\) but x has {size} nodes"):
        LowRankGCNConv(4, 3, k=3).double()(torch.randn(size, 4, dtype=torch.float64), adjacency)
