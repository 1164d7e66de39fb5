"""LowRankGCNConv at k >= num_nodes against PyG's GCNConv, case by case as PyG tests GCNConv.

The cases follow torch_geometric's test/nn/conv/test_gcn_conv.py (repr, every adjacency format,
caching, decomposed layers, sparse features, static graphs, flow), each compared with GCNConv
itself, plus the inputs where a low-rank layer could differ silently: duplicates, self-loops,
isolated nodes, improved, normalize=False, weights.
"""
import copy
import warnings

import pytest
import torch
from torch_geometric import EdgeIndex
from torch_geometric.nn import GCNConv
from torch_geometric.utils import to_torch_coo_tensor, to_torch_csc_tensor, to_torch_csr_tensor

import torch_geometric.typing
from lowrank_gnn.nn import LowRankGCNConv

# PyG's graph: a star 0 - {1, 2, 3}, both directions
EDGE_INDEX = torch.tensor([[0, 0, 0, 1, 2, 3], [1, 2, 3, 0, 0, 0]])
TOL = {torch.float64: 1e-10, torch.float32: 1e-6}  # float32: PyG's own tolerance


def pair(in_channels=16, out_channels=32, dtype=torch.float64, **kwargs):
    """A LowRankGCNConv and a GCNConv with the same weights."""
    torch.manual_seed(0)
    ours = LowRankGCNConv(in_channels, out_channels, **kwargs).to(dtype)
    options = {key: value for key, value in kwargs.items() if key not in ("k", "backend", "deflate_components")}
    ref = GCNConv(in_channels, out_channels, **options).to(dtype)
    ref.lin.weight.data.copy_(ours.lin.weight.data)
    if ref.bias is not None:
        ref.bias.data.uniform_()
        ours.bias.data.copy_(ref.bias.data)
    return ours, ref


def symmetric_weight(edge_index, dtype=torch.float64):
    row, col = edge_index
    return (0.5 + ((row * col) % 5 + row + col) / 7.0).to(dtype)


def test_repr_and_default_k():
    conv = LowRankGCNConv(16, 32)
    assert str(conv) == "LowRankGCNConv(16, 32, k=16)"
    assert str(LowRankGCNConv(16, 32, k=8)) == "LowRankGCNConv(16, 32, k=8)"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gcn_conv_every_adjacency_format(dtype):
    """PyG's test_gcn_conv: edge_index, CSC adj_t with and without values, EdgeIndex; all equal to GCNConv."""
    x = torch.randn(4, 16, dtype=dtype)
    value = symmetric_weight(EDGE_INDEX, dtype)
    ours, ref = pair(dtype=dtype)
    expected, weighted = ref(x, EDGE_INDEX), ref(x, EDGE_INDEX, value)
    out = ours(x, EDGE_INDEX)
    assert out.shape == (4, 32) and torch.allclose(out, expected, atol=TOL[dtype])
    assert torch.allclose(ours(x, EDGE_INDEX, value), weighted, atol=TOL[dtype])
    adjacency = {"csc": to_torch_csc_tensor, "csr": to_torch_csr_tensor, "coo": to_torch_coo_tensor}
    for to_sparse in adjacency.values():
        adj = to_sparse(EDGE_INDEX, size=(4, 4))
        adj_weighted = to_sparse(EDGE_INDEX, value, size=(4, 4))
        assert torch.allclose(ours(x, adj.t()), expected, atol=TOL[dtype])
        assert torch.allclose(ours(x, adj_weighted.t()), weighted, atol=TOL[dtype])
    edge_index = EdgeIndex(EDGE_INDEX, sparse_size=(4, 4))
    assert torch.allclose(ours(x, edge_index), expected, atol=TOL[dtype])


@pytest.mark.skipif(not torch_geometric.typing.WITH_TORCH_SPARSE, reason="torch_sparse is not installed")
def test_sparse_tensor_adjacency():
    from torch_geometric.typing import SparseTensor

    x = torch.randn(4, 16, dtype=torch.float64)
    ours, ref = pair()
    adj = SparseTensor.from_edge_index(EDGE_INDEX, sparse_sizes=(4, 4))
    assert torch.allclose(ours(x, adj.t()), ref(x, EDGE_INDEX), atol=1e-10)
    ours.cached = True
    ours(x, adj.t())
    assert ours._cached_adj_t is not None


def test_cached_state_is_inspectable_and_reused_across_formats():
    x = torch.randn(4, 16, dtype=torch.float64)
    ours, ref = pair()
    expected = ref(x, EDGE_INDEX)
    ours.cached = True  # switched on after construction, as PyG's test does
    ours(x, EDGE_INDEX)
    index, value = ours._cached_edge_index
    ref_index, ref_value = GCNConv(16, 32, cached=True).double(), None
    ref_index(x, EDGE_INDEX)
    ref_index, ref_value = ref_index._cached_edge_index
    dense = torch.zeros(4, 4, dtype=torch.float64).index_put_((index[0], index[1]), value, accumulate=True)
    ref_dense = torch.zeros(4, 4, dtype=torch.float64).index_put_((ref_index[0], ref_index[1]), ref_value,
                                                                  accumulate=True)
    assert torch.allclose(dense, ref_dense, atol=1e-12)  # the same normalized adjacency GCNConv caches
    # 4 <= k nodes: the operator itself is cached and applied, no eigenpairs are computed
    assert ours._cached_eigenpairs is None and torch.allclose(ours._cached_operator, ref_dense, atol=1e-12)
    pairs, deflated = ours.eigenpairs(EDGE_INDEX, None, 4, torch.float64)  # all 4 eigenpairs, cached too
    assert pairs.eigenvectors.shape == (4, 4) and ours._cached_eigenpairs[0] is pairs
    assert torch.allclose(ours(x, EDGE_INDEX), expected, atol=1e-10)
    assert torch.allclose(ours(x, to_torch_csc_tensor(EDGE_INDEX, size=(4, 4)).t()), expected, atol=1e-10)
    with pytest.raises(ValueError, match="cached=True reuses the eigenpairs of the first graph"):
        ours(torch.randn(5, 16, dtype=torch.float64), torch.tensor([[0, 4], [4, 0]]))
    ours.reset_parameters()
    assert ours._cached_eigenpairs is None and ours._cached_operator is None and ours._cached_edge_index is None


@pytest.mark.parametrize("k", [2, 16])  # 2: through eigenpairs; 16 >= 4 nodes: the operator applied directly
def test_decomposed_layers_give_the_same_output(k):
    x = torch.randn(4, 16)
    conv = LowRankGCNConv(16, 32, k=k)
    decomposed = copy.deepcopy(conv)
    decomposed.decomposed_layers = 2
    calls = []
    original = decomposed.spectral_propagate
    decomposed.spectral_propagate = lambda pairs, h, deflated: calls.append(h.shape) or original(pairs, h, deflated)
    assert torch.allclose(conv(x, EDGE_INDEX), decomposed(x, EDGE_INDEX), atol=1e-6)
    if k == 2:
        assert calls == [torch.Size([4, 16]), torch.Size([4, 16])]  # two chunks of the 32 features


def test_sparse_input_features():
    x = torch.sparse_coo_tensor(indices=torch.tensor([[0, 0], [0, 1]]), values=torch.tensor([1.0, 1.0]),
                                size=torch.Size([4, 16]))
    ours, ref = pair(dtype=torch.float32)
    out = ours(x, EDGE_INDEX)
    assert out.shape == (4, 32) and torch.allclose(out, ref(x, EDGE_INDEX), atol=1e-6)


def test_static_graph_with_3d_features():
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    ours, ref = pair()
    out = ours(x, EDGE_INDEX)
    assert out.shape == (3, 4, 32) and torch.allclose(out, ref(x, EDGE_INDEX), atol=1e-10)
    node_first = LowRankGCNConv(16, 32, node_dim=0).double()
    node_first.load_state_dict(ours.state_dict())
    assert torch.allclose(node_first(x.transpose(0, 1), EDGE_INDEX), out.transpose(0, 1), atol=1e-10)


def test_flow_target_to_source_is_the_flipped_graph():
    x = torch.randn(4, 16, dtype=torch.float64)
    ours, ref = pair()
    ref.flow = "target_to_source"
    ours.flow = "target_to_source"
    weight = symmetric_weight(EDGE_INDEX)
    assert torch.allclose(ours(x, EDGE_INDEX, weight), ref(x, EDGE_INDEX, weight), atol=1e-10)
    directed = torch.tensor([[0, 0, 0], [1, 2, 3]])  # PyG's test_gcn_conv_norm: flow + flip is the same graph
    with pytest.warns(UserWarning, match="the graph is directed"):
        out1 = ours(x, directed.flip(0))
    ours.flow = "source_to_target"
    assert torch.allclose(ours(x, directed), out1, atol=1e-12)  # the same graph: its operator is reused, no new warning


@pytest.mark.parametrize("case", ["duplicates", "repeated_self_loop", "self_loops", "isolated", "improved",
                                  "no_self_loops", "unnormalized",
                                  "no_bias"])
def test_equals_gcnconv_where_low_rank_could_differ(case):
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 3, 0, 4, 1], [1, 0, 2, 1, 3, 2, 4, 0, 1]])  # a self-loop at 1
    weight = symmetric_weight(edge_index)
    n, kwargs = 6, {}  # node 5 isolated
    if case == "duplicates":  # (0, 1) and (1, 0) twice with the same weights: summed by both layers
        edge_index = torch.cat([edge_index, torch.tensor([[0, 1], [1, 0]])], 1)
        weight = torch.cat([weight, torch.tensor([0.3, 0.3], dtype=torch.float64)])
    if case == "repeated_self_loop":  # (1, 1) again, same weight: GCNConv keeps one copy when adding self-loops
        edge_index = torch.cat([edge_index, torch.tensor([[1], [1]])], 1)
        weight = torch.cat([weight, weight[-1:]])
    kwargs = {"improved": {"improved": True}, "no_self_loops": {"add_self_loops": False},
              "unnormalized": {"normalize": False}, "no_bias": {"bias": False}}.get(case, {})
    x = torch.randn(n, 16, dtype=torch.float64)
    ours, ref = pair(k=n, **kwargs)
    ones = torch.ones(edge_index.shape[1], dtype=torch.float64)
    for w in (None, weight):
        # GCNConv ignores improved=True without edge weights (add_remaining_self_loops fills only given
        # weights); LowRankGCNConv always uses A + 2I, i.e. GCNConv with explicit unit weights
        expected = ref(x, edge_index, ones if (w is None and case == "improved") else w)
        assert torch.allclose(ours(x, edge_index, w), expected, atol=1e-10), w


def test_improved_differs_from_gcnconv_only_where_gcnconv_ignores_it():
    x = torch.randn(4, 16, dtype=torch.float64)
    ours, ref = pair(improved=True)
    plain = GCNConv(16, 32).double()
    plain.load_state_dict(ref.state_dict())
    assert torch.allclose(ref(x, EDGE_INDEX), plain(x, EDGE_INDEX))  # PyG's behaviour, pinned
    assert not torch.allclose(ours(x, EDGE_INDEX), plain(x, EDGE_INDEX), atol=1e-3)


def test_k_larger_than_the_graph_is_clamped():
    x = torch.randn(4, 16, dtype=torch.float64)
    ours, ref = pair(k=100)
    assert torch.allclose(ours(x, EDGE_INDEX), ref(x, EDGE_INDEX), atol=1e-10)
    pairs, _ = ours.eigenpairs(EDGE_INDEX, None, 4, torch.float64)
    assert pairs.eigenvalues.shape == (4,)


def test_empty_graph_gives_an_empty_output():
    ours, ref = pair()
    x = torch.randn(0, 16, dtype=torch.float64)
    empty = torch.empty(2, 0, dtype=torch.long)
    assert ours(x, empty).shape == ref(x, empty).shape == (0, 32)


def test_asymmetric_weights_are_symmetrised_with_a_warning_never_silently():
    x = torch.randn(4, 16, dtype=torch.float64)
    ours, ref = pair()
    weight = torch.rand(6, dtype=torch.float64) + 0.5
    mean = (weight + weight[[3, 4, 5, 0, 1, 2]]) / 2  # each edge with its reverse
    with pytest.warns(UserWarning, match="edge_weight is not symmetric"):
        out = ours(x, EDGE_INDEX, weight)
    assert torch.allclose(out, ref(x, EDGE_INDEX, mean), atol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours(x, EDGE_INDEX, mean)  # symmetric input: no warning


def test_options_that_cannot_be_honoured_raise():
    with pytest.raises(ValueError, match="aggr must be 'add'"):
        LowRankGCNConv(16, 32, aggr="mean")
    with pytest.raises(ValueError, match="add_self_loops=True needs normalize=True"):
        LowRankGCNConv(16, 32, add_self_loops=True, normalize=False)
    with pytest.raises(ValueError, match="deflate_components=True needs normalize=True"):
        LowRankGCNConv(16, 32, normalize=False, deflate_components=True)
    with pytest.raises(TypeError, match="k is keyword-only"):
        LowRankGCNConv(16, 32, 8)
    with pytest.raises(ValueError, match="flow"):
        LowRankGCNConv(16, 32, flow="both")
    with pytest.raises(ValueError, match="does not support|bipartite"):
        LowRankGCNConv(16, 32)((torch.randn(4, 16), torch.randn(4, 16)), EDGE_INDEX)
    conv = LowRankGCNConv(16, 32)
    with pytest.raises(ValueError, match="passes no per-edge messages"):
        conv.register_message_forward_hook(lambda *args: None)


def test_propagate_hooks_run_around_the_spectral_propagation():
    x = torch.randn(4, 16)
    conv = LowRankGCNConv(16, 32)
    seen = []
    conv.register_propagate_forward_pre_hook(lambda module, inputs: seen.append(inputs[2]["x"].shape))
    handle = conv.register_propagate_forward_hook(lambda module, inputs, out: out * 0)
    assert torch.allclose(conv(x, EDGE_INDEX), conv.bias.expand(4, 32))
    assert seen == [torch.Size([4, 32])]
    handle.remove()
    assert not torch.allclose(conv(x, EDGE_INDEX), conv.bias.expand(4, 32))


@pytest.mark.parametrize("make_input, error, match", [
    (lambda: (torch.randn(4, 16), EDGE_INDEX.float()), TypeError, "edge_index must have an integer dtype"),
    (lambda: (torch.randn(4, 16), EDGE_INDEX.t()), ValueError, r"shape \(2, num_edges\).*transposed"),
    (lambda: (torch.randn(4, 8), EDGE_INDEX), ValueError, "in_channels=16"),
    (lambda: (torch.randn(4, 16, dtype=torch.float64), EDGE_INDEX), TypeError, "x has dtype torch.float64"),
    (lambda: (torch.randint(0, 2, (4, 16)), EDGE_INDEX), TypeError, "x must have a floating-point dtype"),
    (lambda: (torch.randn(4, 16), EDGE_INDEX, torch.ones(5)), ValueError,
     r"edge_weight must have shape \(num_edges,\)"),
    (lambda: (torch.randn(4, 16), to_torch_coo_tensor(EDGE_INDEX), torch.ones(6)), ValueError,
     "edge_weight must be None"),
])
def test_bad_input_names_the_argument(make_input, error, match):
    with pytest.raises(error, match=match):
        LowRankGCNConv(16, 32)(*make_input())


def test_k_must_be_positive():
    for k in (0, -3, 2.5):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            LowRankGCNConv(16, 32, k=k)
