"""LowRankGCNConv with PyG's tooling (Explainer, to_hetero) and torch.compile."""
import pytest
import torch
from torch_geometric.data import Batch, Data, HeteroData
from torch_geometric.explain import Explainer, GNNExplainer
from torch_geometric.nn import to_hetero

from lowrank_gnn.nn import LowRankGCNConv
from lowrank_gnn.testing import cycle_graph, disjoint_union, path_graph

GRAPH = disjoint_union(cycle_graph(6), path_graph(5))  # two components: edges 0..11 in the cycle


class Net(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.conv1 = LowRankGCNConv(3, 8, **kwargs)
        self.conv2 = LowRankGCNConv(8, 2, **kwargs)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


@pytest.mark.filterwarnings("ignore:edge_weight is not symmetric")  # a mask per directed edge
def test_gnn_explainer_edge_and_feature_masks():
    torch.manual_seed(0)
    x = torch.randn(GRAPH.num_nodes, 3)
    explainer = Explainer(Net(k=4), GNNExplainer(epochs=3), explanation_type="model", node_mask_type="attributes",
                          edge_mask_type="object",
                          model_config={"mode": "multiclass_classification", "task_level": "node",
                                        "return_type": "raw"})
    explanation = explainer(x, GRAPH.edge_index, index=2)
    edge_mask, node_mask = explanation.edge_mask, explanation.node_mask
    assert edge_mask.shape == (GRAPH.edge_index.shape[1],) and node_mask.shape == x.shape
    in_cycle = GRAPH.edge_index[0] < 6
    # the mask reaches node 2's output through the eigenpairs of its component, and only there
    assert (edge_mask[in_cycle] > 0).all() and (edge_mask[~in_cycle] == 0).all()
    assert (node_mask[:6] != 0).any() and (node_mask[6:] == 0).all()


def explain(model, x, index):
    torch.manual_seed(0)   # GNNExplainer draws its initial masks
    explainer = Explainer(model, GNNExplainer(epochs=5), explanation_type="model", edge_mask_type="object",
                          model_config={"mode": "multiclass_classification", "task_level": "node",
                                        "return_type": "raw"})
    return explainer(x, GRAPH.edge_index, index=index).edge_mask


@pytest.mark.filterwarnings("ignore:edge_weight is not symmetric")
@pytest.mark.parametrize("k", [4, 16])   # 16 >= 11 nodes: the operator applied directly
def test_explainer_on_a_filled_cache_explains_the_masked_graph_and_keeps_the_cache(k):
    torch.manual_seed(0)
    x = torch.randn(GRAPH.num_nodes, 3)
    cached, uncached = Net(k=k, cached=True), Net(k=k)
    uncached.load_state_dict(cached.state_dict())
    before = cached(x, GRAPH.edge_index)   # fills the caches (e.g. training)
    mask = explain(cached, x, index=2)
    assert torch.allclose(mask, explain(uncached, x, index=2), atol=1e-6)
    in_cycle = GRAPH.edge_index[0] < 6
    assert (mask[in_cycle] > 0).all() and (mask[~in_cycle] == 0).all()
    assert torch.equal(cached(x, GRAPH.edge_index), before)   # the cache still holds the unmasked graph


def test_explain_without_a_mask_is_a_clear_error():
    conv = LowRankGCNConv(3, 2)
    conv.explain = True
    with pytest.raises(ValueError, match="no edge mask was set"):
        conv(torch.randn(GRAPH.num_nodes, 3), GRAPH.edge_index)


def test_to_hetero_per_node_type_and_clear_error_on_bipartite_edges():
    torch.manual_seed(0)
    data = HeteroData()
    data["a"].x, data["b"].x = torch.randn(6, 3), torch.randn(5, 3)
    data["a", "to", "a"].edge_index = cycle_graph(6).edge_index
    data["b", "to", "b"].edge_index = path_graph(5).edge_index

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = LowRankGCNConv(3, 4, k=3, add_self_loops=False, normalize=True)

        def forward(self, x, edge_index):
            return self.conv(x, edge_index)

    model = to_hetero(One(), data.metadata())
    out = model(data.x_dict, data.edge_index_dict)
    assert set(out) == {"a", "b"}
    for node_type in ("a", "b"):
        conv = model.conv[f"{node_type}__to__{node_type}"]
        assert torch.allclose(out[node_type], conv(data[node_type].x, data[node_type, "to", node_type].edge_index))
    data["a", "to", "b"].edge_index = torch.tensor([[0, 1], [0, 1]])
    model = to_hetero(One(), data.metadata())
    with pytest.raises(ValueError, match="bipartite"):
        model(data.x_dict, data.edge_index_dict)


@pytest.mark.parametrize("mode, k", [("cached", 4), ("cached", 16), ("shared", 4)])  # 16: a cached operator
def test_compile_fullgraph_with_cached_or_shared_eigenpairs(mode, k):
    torch.manual_seed(0)
    x = torch.randn(GRAPH.num_nodes, 3)
    conv = LowRankGCNConv(3, 4, k=k, cached=(mode == "cached"))
    eigenpairs = conv.eigenpairs(GRAPH.edge_index, None, GRAPH.num_nodes, torch.float32)
    kwargs = {} if mode == "cached" else {"eigenpairs": eigenpairs}
    expected = conv(x, GRAPH.edge_index, **kwargs)  # eager; fills the cache in "cached" mode
    compiled = torch.compile(conv, fullgraph=True, backend="eager")
    assert torch.allclose(compiled(x, GRAPH.edge_index, **kwargs), expected, atol=1e-6)


@pytest.mark.parametrize("shared", [False, True])
def test_compile_batched_path_equals_eager_with_one_named_graph_break(shared):
    torch.manual_seed(0)
    graphs = [Data(x=torch.randn(n, 3), edge_index=cycle_graph(n).edge_index, num_nodes=n) for n in (3, 7, 9)]
    batch = Batch.from_data_list(graphs)
    conv = LowRankGCNConv(3, 4, k=4)
    kwargs = {"batch": batch.batch}
    if shared:
        kwargs["eigenpairs"] = conv.eigenpairs(batch.edge_index, None, batch.num_nodes, torch.float32,
                                               batch=batch.batch)
    compiled = torch.compile(conv, backend="eager")
    assert torch.allclose(compiled(batch.x, batch.edge_index, **kwargs), conv(batch.x, batch.edge_index, **kwargs),
                          atol=1e-6)
    # the per-graph propagation (shapes that depend on each batch's graph sizes) is the one eager region
    explanation = torch._dynamo.explain(conv)(batch.x, batch.edge_index, **kwargs)
    assert explanation.graph_break_count == 1
    assert "_batch_propagate" in str(explanation.break_reasons[0].reason)
