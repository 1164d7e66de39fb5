"""LowRankGCNConv on mini-batches of graphs and on neighbour-sampled subgraphs."""
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GCNConv

from lowrank_gnn.nn import LowRankGCNConv
from lowrank_gnn.nn.conv.batch_spectrum import SIZE_CLASS_RATIO
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph


def random_graph(n, p, seed):
    """A random undirected graph with symmetric random weights (simple spectrum, almost surely)."""
    generator = torch.Generator().manual_seed(seed)
    upper = torch.triu(torch.rand(n, n, generator=generator) < p, diagonal=1)
    row, col = upper.nonzero().t()
    weight = torch.rand(row.numel(), generator=generator, dtype=torch.float64) + 0.5
    edge_index = torch.cat([torch.stack([row, col]), torch.stack([col, row])], 1)
    x = torch.randn(n, 5, generator=generator, dtype=torch.float64)
    return Data(x=x, edge_index=edge_index, edge_weight=weight.repeat(2), num_nodes=n)


GRAPHS = [random_graph(n, 0.5, seed) for seed, n in enumerate([7, 3, 9, 1, 6])]  # 3 and 1: fewer nodes than k


def layer(**kwargs):
    torch.manual_seed(0)
    return LowRankGCNConv(5, 4, **kwargs).double()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("options", [{"k": 4}, {"k": 4, "deflate_components": False}, {"k": 20},
                                     {"k": 4, "backend": "batched_dc"}, {"k": 4, "backend": "stable"},
                                     {"k": 3, "backend_kwargs": {"which": "smallest"}},
                                     {"k": 4, "root_weight": True}])
def test_batch_equals_each_graph_alone(weighted, options):
    conv = layer(**options)
    batch = Batch.from_data_list(GRAPHS)
    weight = batch.edge_weight if weighted else None
    out = conv(batch.x, batch.edge_index, weight, batch=batch.batch)
    alone = torch.cat([conv(g.x, g.edge_index, g.edge_weight if weighted else None) for g in GRAPHS])
    assert torch.allclose(out, alone, atol=1e-10)
    assert torch.allclose(conv(batch.x, batch.edge_index, weight, ptr=batch.ptr), out, atol=1e-14)


@pytest.mark.parametrize("ratio, expected", [
    (1.5, [(1, 5, 5), (2, 12, 12), (1, 17, 17), (1, 26, 26), (1, 40, 40)]),   # 5 | 9 12 | 17 | 26 | 40
    (1.2, [(1, 5, 5), (1, 9, 9), (1, 12, 12), (1, 17, 17), (1, 26, 26), (1, 40, 40)]),
    (2.0, [(2, 9, 9), (2, 17, 17), (2, 40, 40)]),                             # 5 9 | 12 17 | 26 40
])
def test_graphs_of_very_different_sizes_are_solved_in_size_classes(monkeypatch, ratio, expected):
    """Sizes 5 .. 40 with k=4: size classes (each one batched call) plus graphs applied directly."""
    monkeypatch.setitem(SIZE_CLASS_RATIO, "cpu", ratio)
    graphs = [random_graph(n, 0.3, 100 + n) for n in (40, 5, 9, 3, 26, 12, 17)]
    calls = []
    conv = layer(k=4)
    original = conv.backend.solve
    conv.backend.solve = lambda op: calls.append(tuple(op.shape)) or original(op)
    batch = Batch.from_data_list(graphs)
    out = conv(batch.x, batch.edge_index, batch.edge_weight, batch=batch.batch)
    assert sorted(calls) == sorted(expected)  # the 3-node graph (3 <= k) is applied directly
    conv.backend.solve = original
    alone = torch.cat([conv(g.x, g.edge_index, g.edge_weight) for g in graphs])
    assert torch.allclose(out, alone, atol=1e-10)


def test_a_graph_does_not_depend_on_the_rest_of_its_batch():
    conv = layer(k=4)
    first = Batch.from_data_list(GRAPHS[:3])
    second = Batch.from_data_list([GRAPHS[0], random_graph(12, 0.4, 99), GRAPHS[2]])
    out1 = conv(first.x, first.edge_index, batch=first.batch)
    out2 = conv(second.x, second.edge_index, batch=second.batch)
    assert torch.allclose(out1[:7], out2[:7], atol=1e-10) and torch.allclose(out1[-9:], out2[-9:], atol=1e-10)


def test_full_rank_batch_equals_gcnconv():
    conv = layer(k=64)
    ref = GCNConv(5, 4).double()
    ref.lin.weight.data.copy_(conv.lin.weight.data)
    batch = Batch.from_data_list(GRAPHS)
    assert torch.allclose(conv(batch.x, batch.edge_index, batch.edge_weight, batch=batch.batch),
                          ref(batch.x, batch.edge_index, batch.edge_weight), atol=1e-10)


def test_empty_graphs_inside_a_batch():
    conv = layer(k=4)
    empty = Data(x=torch.zeros(0, 5, dtype=torch.float64), edge_index=torch.empty(2, 0, dtype=torch.long),
                 edge_weight=torch.zeros(0, dtype=torch.float64), num_nodes=0)
    batch = Batch.from_data_list([empty, GRAPHS[0], empty, GRAPHS[1], empty])
    out = conv(batch.x, batch.edge_index, batch.edge_weight, ptr=batch.ptr)
    alone = torch.cat([conv(g.x, g.edge_index, g.edge_weight) for g in GRAPHS[:2]])
    assert torch.allclose(out, alone, atol=1e-10)
    nothing = Batch.from_data_list([empty, empty])
    assert conv(nothing.x, nothing.edge_index, ptr=nothing.ptr).shape == (0, 4)


def test_gradients_reach_edge_weights_and_features_in_a_batch():
    conv = layer(k=3)
    batch = Batch.from_data_list(GRAPHS[:3])
    weight = batch.edge_weight.clone().requires_grad_()
    x = batch.x.clone().requires_grad_()
    conv(x, batch.edge_index, weight, batch=batch.batch).pow(2).sum().backward()
    assert torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
    alone_weight = GRAPHS[0].edge_weight.clone().requires_grad_()
    conv(GRAPHS[0].x, GRAPHS[0].edge_index, alone_weight).pow(2).sum().backward()
    assert torch.allclose(weight.grad[:alone_weight.numel()], alone_weight.grad, atol=1e-8)


def cycles(weights):
    """Cycles of 12 and 14 nodes with the same weight on both directions of an edge (cycle_graph lists
    the edges i -> i + 1, then their reverses)."""
    generator = torch.Generator().manual_seed(0)
    graphs = []
    for n in (12, 14):
        weight = torch.ones(n, dtype=torch.float64) if weights == "unit" else \
            torch.rand(n, generator=generator, dtype=torch.float64) + 0.5
        graphs.append(Data(x=torch.randn(n, 5, generator=generator, dtype=torch.float64),
                           edge_index=cycle_graph(n).edge_index, edge_weight=weight.repeat(2), num_nodes=n))
    return graphs


@pytest.mark.parametrize("weights", ["unit", "random"])
def test_stable_backend_solves_a_batch_whose_graphs_repeat_kept_eigenvalues(weights):
    """Unit-weight cycles repeat their eigenvalues in pairs and k = 4 keeps such pairs whole, where
    the exact backward divides by zero gaps (NaN in float32); the stable backend batches and its
    edge-weight gradients are finite. Inside an exact tie its gradient depends on the basis the
    solver returned, and below its damping threshold (relative_gap times the padded matrix's largest
    eigenvalue magnitude) on that scale, so a graph's gradient equals its own alone only where its
    gaps are wider (random weights)."""
    graphs = cycles(weights)
    batch = Batch.from_data_list(graphs)
    conv = layer(k=4, backend="stable")
    weight = batch.edge_weight.clone().requires_grad_()
    conv(batch.x, batch.edge_index, weight, batch=batch.batch).pow(2).sum().backward()
    assert torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
    if weights == "random":
        start = 0
        for graph in graphs:
            alone = graph.edge_weight.clone().requires_grad_()
            conv(graph.x, graph.edge_index, alone).pow(2).sum().backward()
            assert torch.allclose(weight.grad[start:start + alone.numel()], alone.grad, atol=1e-10)
            start += alone.numel()


def test_disconnected_graphs_in_a_batch_are_deflated_per_graph():
    conv = layer(k=2)
    graphs = []
    for seed, parts in enumerate([(cycle_graph(5), path_graph(3)), (complete_graph(4), path_graph(2))]):
        g = disjoint_union(*parts)
        graphs.append(Data(x=torch.randn(g.num_nodes, 5, dtype=torch.float64,
                                         generator=torch.Generator().manual_seed(seed)),
                           edge_index=g.edge_index, num_nodes=g.num_nodes))
    batch = Batch.from_data_list(graphs)
    out = conv(batch.x, batch.edge_index, batch=batch.batch)
    assert torch.allclose(out, torch.cat([conv(g.x, g.edge_index) for g in graphs]), atol=1e-10)


@pytest.mark.parametrize("add_self_loops", [True, False])
def test_connected_and_disconnected_graphs_in_one_size_class(add_self_loops):
    """One class of three 10-node graphs: connected, three components, and one with an isolated node."""
    conv = layer(k=3, add_self_loops=add_self_loops)
    parts = [(cycle_graph(10),), (cycle_graph(4), path_graph(3), complete_graph(3)), (cycle_graph(9), path_graph(1))]
    graphs = []
    for seed, pieces in enumerate(parts):
        g = disjoint_union(*pieces)
        graphs.append(Data(x=torch.randn(10, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)),
                           edge_index=g.edge_index, num_nodes=10))
    batch = Batch.from_data_list(graphs)
    spectrum = conv.eigenpairs(batch.edge_index, None, batch.num_nodes, torch.float64, batch=batch.batch)
    assert [tuple(c.operator.shape) for c in spectrum.classes] == [(3, 10, 10)]
    factors = spectrum.classes[0].factors
    assert factors.eigenvectors.shape == (3, 10, 3 + 3)     # k pairs and up to 3 component vectors per graph
    out = conv(batch.x, batch.edge_index, batch=batch.batch, eigenpairs=spectrum)
    assert torch.allclose(out, torch.cat([conv(g.x, g.edge_index) for g in graphs]), atol=1e-10)


# --- one solve shared between layers -----------------------------------------------------------

@pytest.mark.parametrize("options", [{"k": 4}, {"k": 4, "deflate_components": False}, {"k": 20},
                                     {"k": 4, "backend": "batched_dc"}])
def test_shared_batch_spectrum_equals_each_layer_solving_itself(options):
    graphs = GRAPHS + [random_graph(n, 0.3, 200 + n) for n in (13, 30)]
    batch = Batch.from_data_list(graphs)
    torch.manual_seed(1)
    first, second = LowRankGCNConv(5, 4, **options).double(), LowRankGCNConv(4, 3, **options).double()
    weight = batch.edge_weight.clone().requires_grad_()

    def model(shared):
        spectrum = first.eigenpairs(batch.edge_index, weight, batch.num_nodes, batch=batch.batch) if shared else None
        h = first(batch.x, batch.edge_index, weight, batch=batch.batch, eigenpairs=spectrum).relu()
        return second(h, batch.edge_index, weight, ptr=batch.ptr, eigenpairs=spectrum)

    out = model(shared=False)
    grads = torch.autograd.grad(out.pow(2).sum(), [weight, first.lin.weight, second.lin.weight])
    shared = model(shared=True)
    shared_grads = torch.autograd.grad(shared.pow(2).sum(), [weight, first.lin.weight, second.lin.weight])
    assert torch.allclose(shared, out, atol=1e-12)
    for a, b in zip(shared_grads, grads, strict=True):
        assert torch.allclose(a, b, atol=1e-9)
    spectrum = first.eigenpairs(batch.edge_index, None, batch.num_nodes, torch.float64, ptr=batch.ptr)
    solved = [c for c in spectrum.classes if c.pairs is not None]
    direct = [c for c in spectrum.classes if c.pairs is None]
    # the graphs with at most k nodes: one class applied directly; every other graph its own k eigenpairs
    sizes = batch.ptr.diff()
    assert len(direct) == int((sizes <= first.k).any())
    assert all(c.operator.shape[-1] <= first.k and c.factors is None for c in direct)
    for size_class in solved:
        assert size_class.operator.shape[-1] > first.k
        assert size_class.pairs.eigenvectors.shape[-1] == first.k
        assert size_class.operator.shape[0] == size_class.pairs.eigenvalues.shape[0] == size_class.graphs.numel()
        assert (sizes[size_class.graphs] > first.k).all()
    assert sorted(torch.cat([c.graphs for c in spectrum.classes]).tolist()) == list(range(len(graphs)))


def test_batch_spectrum_is_checked_against_the_batch():
    conv = layer(k=4)
    spectrum = conv.eigenpairs(BATCH.edge_index, None, BATCH.num_nodes, torch.float64, batch=BATCH.batch)
    other = Batch.from_data_list([GRAPHS[1], GRAPHS[0]])
    with pytest.raises(ValueError, match="BatchSpectrum of another mini-batch"):
        conv(other.x, other.edge_index, batch=other.batch, eigenpairs=spectrum)
    with pytest.raises(ValueError, match="pass the same batch= or ptr="):
        conv(BATCH.x, BATCH.edge_index, eigenpairs=spectrum)
    single = conv.eigenpairs(BATCH.edge_index, None, BATCH.num_nodes, torch.float64)
    with pytest.raises(ValueError, match="eigenpairs must be the BatchSpectrum"):
        conv(BATCH.x, BATCH.edge_index, batch=BATCH.batch, eigenpairs=single)
    with pytest.raises(ValueError, match="use cached=False"):
        layer(k=4, cached=True).eigenpairs(BATCH.edge_index, None, BATCH.num_nodes, batch=BATCH.batch)


@pytest.mark.parametrize("spectrum_k, layer_k, match", [
    (8, 3, "BatchSpectrum of a layer with k=8 but this layer has k=3"),       # 12, 15 nodes: 8 pairs each
    (3, 8, "BatchSpectrum of a layer with k=3 but this layer has k=8"),
    (12, 3, "BatchSpectrum of a layer with k >= 12 .* this layer has k=3"),   # the 12-node graph applied directly
])
def test_batch_spectrum_of_another_k_is_refused(spectrum_k, layer_k, match):
    graphs = [random_graph(n, 0.4, 300 + n) for n in (12, 15)]
    batch = Batch.from_data_list(graphs)
    spectrum = layer(k=spectrum_k).eigenpairs(batch.edge_index, None, batch.num_nodes, torch.float64,
                                              batch=batch.batch)
    conv = layer(k=layer_k)
    with pytest.raises(ValueError, match=match):
        conv(batch.x, batch.edge_index, batch=batch.batch, eigenpairs=spectrum)
    # a spectrum whose graphs all have at most k nodes is the operators themselves: any k >= them takes it
    small = Batch.from_data_list(GRAPHS[:2])   # 7 and 3 nodes
    direct = layer(k=9).eigenpairs(small.edge_index, None, small.num_nodes, torch.float64, batch=small.batch)
    shared = layer(k=7)(small.x, small.edge_index, batch=small.batch, eigenpairs=direct)
    assert torch.allclose(shared, layer(k=7)(small.x, small.edge_index, batch=small.batch), atol=1e-12)


@pytest.mark.parametrize("k", [3, 20])   # solved classes, and only graphs applied directly
def test_batch_spectrum_of_another_dtype_is_a_clear_error(k):
    spectrum = layer(k=k).eigenpairs(BATCH.edge_index, None, BATCH.num_nodes, torch.float32, batch=BATCH.batch)
    with pytest.raises(TypeError, match=r"eigenpairs has dtype torch.float32 but x has dtype torch.float64.*"
                                        r"torch.float64, batch=batch\)"):
        layer(k=k)(BATCH.x, BATCH.edge_index, batch=BATCH.batch, eigenpairs=spectrum)


# --- bad input ---------------------------------------------------------------------------------

BATCH = Batch.from_data_list(GRAPHS[:2])


@pytest.mark.parametrize("call, match", [
    (lambda conv: conv(BATCH.x, BATCH.edge_index, batch=BATCH.batch.flip(0)), "batch must be sorted"),
    (lambda conv: conv(BATCH.x, BATCH.edge_index, batch=BATCH.batch[:-1]), "one entry per node"),
    (lambda conv: conv(BATCH.x, BATCH.edge_index, batch=BATCH.batch.double()), "integer vector"),
    (lambda conv: conv(BATCH.x, BATCH.edge_index, batch=BATCH.batch, ptr=torch.tensor([0, 3, 10])),
     "batch and ptr describe different graphs"),
    (lambda conv: conv(BATCH.x, BATCH.edge_index, ptr=torch.tensor([0, 5, 3, 10])), "never decrease"),
    (lambda conv: conv(BATCH.x, BATCH.edge_index, ptr=torch.tensor([0, 4])), "end at num_nodes=10"),
    (lambda conv: conv(BATCH.x.expand(2, 10, 5), BATCH.edge_index, batch=BATCH.batch), "static graph"),
    (lambda conv: conv(BATCH.x, torch.tensor([[0, 8], [8, 0]]), batch=BATCH.batch), "connects nodes of different"),
])
def test_bad_batch_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(layer(k=4))


def test_backends_and_options_that_cannot_batch_say_what_to_use():
    with pytest.raises(ValueError, match="use backend='exact', 'stable' or 'batched_dc'"):
        layer(k=2, backend="amortized")(BATCH.x, BATCH.edge_index, batch=BATCH.batch)
    with pytest.raises(ValueError, match="use cached=False for mini-batches"):
        layer(k=2, cached=True)(BATCH.x, BATCH.edge_index, batch=BATCH.batch)
    with pytest.raises(ValueError, match="which='magnitude' cannot be padded"):
        layer(k=2, backend_kwargs={"which": "magnitude"})(BATCH.x, BATCH.edge_index, batch=BATCH.batch)
    with pytest.raises(ValueError, match="fewer than k=8.*backend='exact'"):
        layer(k=8, backend="amortized")(GRAPHS[1].x, GRAPHS[1].edge_index)  # 3 nodes: a learnt 8-column basis


# --- neighbour sampling --------------------------------------------------------------------------

def sample_neighbors(edge_index, num_nodes, seeds, num_neighbors, generator):
    """A pure-torch NeighborLoader: the seeds first, then each hop's sampled nodes; edges among them, relabelled.

    Returns ``(n_id, edge_index, batch_size)`` in NeighborLoader's layout (``n_id[:batch_size]`` are the seeds).
    """
    row, col = edge_index
    n_id, frontier = seeds.clone(), seeds.clone()
    for fanout in num_neighbors:
        picked = []
        for node in frontier.tolist():
            neighbours = row[col == node]
            order = torch.randperm(neighbours.numel(), generator=generator)[:fanout]
            picked.append(neighbours[order])
        new = torch.cat(picked) if picked else frontier.new_empty(0)
        new = new[~torch.isin(new, n_id)].unique()
        n_id, frontier = torch.cat([n_id, new]), new
    local = torch.full((num_nodes,), -1, dtype=torch.long)
    local[n_id] = torch.arange(n_id.numel())
    keep = (local[row] >= 0) & (local[col] >= 0)
    return n_id, torch.stack([local[row[keep]], local[col[keep]]]), seeds.numel()


def test_neighbour_sampled_subgraphs_with_k_clamped_per_subgraph():
    graph = random_graph(40, 0.08, 7)
    generator = torch.Generator().manual_seed(0)
    conv = layer(k=18)
    ref = GCNConv(5, 4).double()
    ref.lin.weight.data.copy_(conv.lin.weight.data)
    sizes = set()
    for seeds in torch.arange(40).split(4):
        n_id, edge_index, batch_size = sample_neighbors(graph.edge_index, 40, seeds, [3, 2], generator)
        x = graph.x[n_id]
        out = conv(x, edge_index)[:batch_size]
        sizes.add(n_id.numel())
        assert out.shape == (batch_size, 4) and torch.isfinite(out).all()
        if n_id.numel() <= 18:  # k >= the subgraph: exactly GCNConv on it
            assert torch.allclose(out, ref(x, edge_index)[:batch_size], atol=1e-10)
    assert min(sizes) <= 18 < max(sizes)  # both regimes were sampled
