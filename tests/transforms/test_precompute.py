import multiprocessing
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy
import torch
from torch_geometric.data import Batch, Data, InMemoryDataset
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import AddLaplacianEigenvectorPE, AddSelfLoops, ToSparseTensor
from torch_geometric.utils import to_edge_index

from lowrank_gnn.eigen import EigenPairs
from lowrank_gnn.linalg import BAND_MIN_SIZE
from lowrank_gnn.operators import laplacian, normalized_adjacency
from lowrank_gnn.testing import assert_eigenpairs_close, complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.transforms import AddEigenpairs, LaplacianEigenvectorPE, precompute_eigenpairs
from lowrank_gnn.transforms import cache as cache_module
from lowrank_gnn.transforms import packed as packed_module
from lowrank_gnn.eigen import canonical_signs
from lowrank_gnn.transforms.packed import canonical_signs_per_graph, dense_batches, normalized_edges, pack_graphs

EMPTY = torch.empty(2, 0, dtype=torch.long)


def as_data(graph, **extra):
    return Data(edge_index=graph.edge_index, num_nodes=graph.num_nodes, **extra)


def mixed_graphs():
    """Several graphs per size, with and without edge weights, self-loops, duplicate edges,
    isolated nodes, one-node, edgeless and empty graphs."""
    generator = torch.Generator().manual_seed(0)
    graphs = [as_data(path_graph(5)), as_data(cycle_graph(5)), as_data(complete_graph(5)),
              as_data(disjoint_union(cycle_graph(6), path_graph(3))), as_data(path_graph(9)),
              Data(edge_index=EMPTY, num_nodes=1), Data(edge_index=EMPTY, num_nodes=4),
              Data(edge_index=EMPTY, num_nodes=0), as_data(complete_graph(2))]
    for n in (5, 9, 12):
        graph = path_graph(n)
        half = torch.rand(graph.edge_index.shape[1] // 2, generator=generator, dtype=torch.float64) + 0.1
        graphs.append(as_data(graph, edge_weight=torch.cat([half, half])))
    loops = torch.tensor([[0, 1, 1, 2, 2, 0, 0], [1, 0, 2, 1, 2, 0, 0]])  # self-loops (one repeated), duplicates
    graphs.append(Data(edge_index=torch.cat([loops, torch.tensor([[0], [1]]), torch.tensor([[1], [0]])], 1),
                       num_nodes=5))
    big = disjoint_union(path_graph(150), cycle_graph(60))  # >= SUBSET_MIN_SIZE: LAPACK's subset solver
    large = disjoint_union(path_graph(BAND_MIN_SIZE), cycle_graph(100))  # sparse_eigh_extremal's band path
    graphs += [as_data(big), as_data(path_graph(210)), as_data(large)]
    return graphs


def per_graph(transform, graphs):
    return [transform(graph) for graph in graphs]


def assert_same(expected, got, names):
    assert len(expected) == len(got)
    for one, other in zip(expected, got, strict=True):
        for name in names:
            assert torch.equal(one[name], other[name]), name


CONFIGS = [dict(operator="laplacian"), dict(operator="normalized_adjacency"),
           dict(operator="normalized_adjacency", which="magnitude", add_self_loops=False),
           dict(operator="normalized_adjacency", deflate_components=True),
           dict(operator="laplacian", backend="batched_dc")]  # "auto": LAPACK on the CPU


@pytest.mark.parametrize("options", CONFIGS)
def test_dataset_pass_equals_the_per_graph_transform_bit_for_bit(options):
    transform = AddEigenpairs(k=4, **options)
    graphs = mixed_graphs()
    names = ["eigvecs", "eigvals", "eig_mask"] + (["eig_component_vector", "eig_component_index"]
                                                  if options.get("deflate_components") else [])
    assert_same(per_graph(transform, graphs), precompute_eigenpairs(graphs, transform), names)


@pytest.mark.parametrize("transform", [AddEigenpairs(k=4, operator="laplacian"), AddEigenpairs(k=4),
                                       LaplacianEigenvectorPE(k=3)], ids=repr)
def test_graphs_in_size_order_equal_the_per_graph_transform_bit_for_bit(transform):
    # every graph dense and the sizes non-decreasing: the solved buffers are the outputs, in place
    graphs = sorted([graph for graph in mixed_graphs() if 1 <= graph.num_nodes < BAND_MIN_SIZE],
                    key=lambda graph: graph.num_nodes)
    names = list(transform.node_level) + ([] if isinstance(transform, LaplacianEigenvectorPE)
                                          else ["eigvals", "eig_mask"])
    assert_same(per_graph(transform, graphs), precompute_eigenpairs(graphs, transform), names)
    shuffled = [graphs[i] for i in torch.randperm(len(graphs), generator=torch.Generator().manual_seed(0))]
    assert_same(per_graph(transform, shuffled), precompute_eigenpairs(shuffled, transform), names)


def test_the_transform_on_one_graph_refuses_directed_graphs_and_bad_weights():
    with pytest.raises(ValueError, match="graph 0 is not undirected"):
        AddEigenpairs(k=2)(Data(edge_index=torch.tensor([[0], [1]]), num_nodes=3))
    graph = cycle_graph(6)
    weight = torch.linspace(0.5, 2.0, graph.edge_index.shape[1] // 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="graph 0 is not undirected"):
        LaplacianEigenvectorPE(k=2)(as_data(graph, edge_weight=torch.cat([weight, 2 * weight])))
    directed = path_graph(BAND_MIN_SIZE).edge_index[:, :-1]  # on the band path
    with pytest.raises(ValueError, match="graph 0 is not undirected"):
        AddEigenpairs(k=2)(Data(edge_index=directed, num_nodes=BAND_MIN_SIZE))
    with pytest.raises(ValueError, match="graph 0: edge weights must be non-negative"):
        LaplacianEigenvectorPE(k=2)(as_data(path_graph(3), edge_weight=-torch.ones(4)))
    with pytest.raises(ValueError, match="graph 0: edge_index entries must lie in"):
        AddEigenpairs(k=2)(Data(edge_index=torch.tensor([[0], [5]]), num_nodes=2))


def test_divide_and_conquer_agrees_with_the_per_graph_transform_to_rounding():
    """The batched divide and conquer is not batch-invariant in the last bits (its products take other
    BLAS kernels for other batch sizes): the dataset pass agrees with the per-graph transform to
    rounding and is accurate."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        transform = AddEigenpairs(k=4, operator="laplacian", backend="batched_dc", backend_kwargs={"method": "dc"})
        graphs = [g for g in mixed_graphs() if g.num_nodes > 0]
        for single, data in zip(per_graph(transform, graphs), precompute_eigenpairs(graphs, transform), strict=True):
            assert torch.allclose(single.eigvals, data.eigvals, atol=1e-12, rtol=0)
            weight = data.edge_weight.double() if "edge_weight" in data else None
            dense = laplacian(data.edge_index, weight, data.num_nodes).to_dense().double()
            m = int(data.eig_mask.sum())
            assert_eigenpairs_close(EigenPairs(data.eigvals[0, :m], data.eigvecs[:, :m]), dense, m, "smallest")
    finally:
        torch.set_default_dtype(previous)


def test_float32_default_dtype_and_the_sparse_path_equal_the_transform():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        graphs = mixed_graphs()
        for transform in (AddEigenpairs(k=3, operator="laplacian"),
                          AddEigenpairs(k=3, backend_kwargs={"dense_max_nodes": 6})):  # > 6 nodes: ARPACK
            out = precompute_eigenpairs(graphs, transform)
            assert out[0].eigvecs.dtype == torch.float32
            assert_same(per_graph(transform, graphs), out, ["eigvecs", "eigvals", "eig_mask"])
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("operator, which", [("laplacian", "smallest"), ("normalized_adjacency", "largest")])
def test_results_match_a_float64_dense_reference(operator, which):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        graphs = [as_data(g) for g in (path_graph(7), cycle_graph(8), complete_graph(6),
                                       disjoint_union(path_graph(4), cycle_graph(4)), path_graph(230),
                                       disjoint_union(path_graph(BAND_MIN_SIZE), cycle_graph(100)))]  # band path
        for data in precompute_eigenpairs(graphs, AddEigenpairs(k=4, operator=operator, which=which)):
            build = laplacian if operator == "laplacian" else normalized_adjacency
            dense = build(data.edge_index, num_nodes=data.num_nodes).to_dense()
            assert_eigenpairs_close(EigenPairs(data.eigvals[0], data.eigvecs), dense, 4, which)
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("operator, add_self_loops", [("laplacian", True), ("normalized_adjacency", True),
                                                      ("normalized_adjacency", False)])
def test_dense_operators_equal_the_sparse_graph_operators(operator, add_self_loops):
    graphs = [g for g in mixed_graphs() if g.num_nodes == 5]
    packed = pack_graphs(graphs)
    (batch,) = dense_batches(packed, normalized_edges(packed, operator, add_self_loops), torch.arange(len(graphs)))
    dense = batch.operators
    assert torch.equal(batch.rows, torch.arange(packed.num_nodes.sum()))
    for b, g in enumerate(batch.graphs.tolist()):
        data = graphs[g]
        weight = (data.edge_weight if "edge_weight" in data else torch.ones(data.edge_index.shape[1])).double()
        if operator == "laplacian":
            expected = laplacian(data.edge_index, weight, 5).to_dense().double()
        else:
            expected = normalized_adjacency(data.edge_index, weight, 5, add_self_loops=add_self_loops).to_dense()
        assert torch.allclose(dense[b], expected.double(), atol=1e-15, rtol=0), g


def test_dense_batches_cut_at_max_entries_hold_the_same_operators():
    graphs = [g for g in mixed_graphs() if g.num_nodes > 0]
    packed = pack_graphs(graphs)
    entries, selected = normalized_edges(packed, "laplacian"), torch.arange(len(graphs))
    whole = {int(g): (b.operators[i], b.rows.view(-1, b.n)[i]) for b in dense_batches(packed, entries, selected)
             for i, g in enumerate(b.graphs)}
    small = list(dense_batches(packed, entries, selected, max_entries=60))  # 1-2 graphs of 5 nodes per batch
    assert max(b.graphs.numel() * b.n ** 2 for b in small if b.graphs.numel() > 1) <= 60
    assert sorted(int(g) for b in small for g in b.graphs) == sorted(whole)
    sizes = [b.n for b in small]
    assert sizes == sorted(sizes) and len(small) > len(set(sizes))  # size groups split into several batches
    for b in small:
        for i, g in enumerate(b.graphs.tolist()):
            assert torch.equal(b.operators[i], whole[g][0]) and torch.equal(b.rows.view(-1, b.n)[i], whole[g][1])


def test_symmetry_check_accepts_rounding_and_refuses_directed_weights():
    graph = path_graph(6)
    half = graph.edge_index.shape[1] // 2
    weight = torch.linspace(0.5, 2.0, half, dtype=torch.float64)
    rounded = torch.cat([weight, weight * (1 + 4 * torch.finfo(torch.float64).eps)])  # a few ulps apart
    graphs = [as_data(path_graph(4)), as_data(graph, edge_weight=rounded)]
    transform = AddEigenpairs(k=2, operator="laplacian")
    packed = pack_graphs(graphs)
    (batch,) = [b for b in dense_batches(packed, normalized_edges(packed, "laplacian"), torch.arange(2)) if b.n == 6]
    assert not torch.equal(batch.operators[0], batch.operators[0].mT)  # the tolerance comparison is reached
    assert_same(per_graph(transform, graphs), precompute_eigenpairs(graphs, transform), ["eigvecs", "eigvals"])
    directed = torch.cat([weight, 2 * weight])
    with pytest.raises(ValueError, match="graph 1 is not undirected"):
        precompute_eigenpairs([as_data(path_graph(4)), as_data(graph, edge_weight=directed)], transform)


def test_signs_per_graph_equal_canonical_signs_graph_by_graph():
    generator = torch.Generator().manual_seed(0)
    sizes = torch.tensor([3, 0, 1, 7, 300, 5])  # 300 rows: beyond canonical_signs' first search window
    vectors = torch.randn(int(sizes.sum()), 4, generator=generator, dtype=torch.float64)
    vectors[:3, 1] = torch.tensor([0.01, -1.0, 1.0])   # a tie in magnitude: the first one decides
    vectors[3:4, 2] = 0.0                               # a zero column
    vectors[11:311, 3] = 0.0
    vectors[300, 3] = -2.0                              # pivot past row 256
    out = canonical_signs_per_graph(vectors, sizes)
    start = 0
    for n in sizes.tolist():
        if n:
            assert torch.equal(out[start:start + n], canonical_signs(vectors[start:start + n]))
        start += n
    assert torch.equal(canonical_signs_per_graph(out, sizes), out)  # idempotent


def test_signs_per_graph_in_blocks_equal_one_block(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    sizes = torch.tensor([3, 0, 1, 7, 30, 5, 0, 2, 11, 4])
    vectors = torch.randn(int(sizes.sum()), 3, generator=generator, dtype=torch.float64)
    whole = canonical_signs_per_graph(vectors, sizes)
    for entries in (3, 20, 45):  # one row per block; blocks cut inside the 30-row graph; a few graphs each
        monkeypatch.setattr(packed_module, "SIGN_BLOCK_ENTRIES", entries)
        assert torch.equal(canonical_signs_per_graph(vectors, sizes), whole), entries
    start = 0
    for n in sizes.tolist():  # and each block's graphs get canonical_signs' signs
        assert torch.equal(whole[start:start + n], canonical_signs(vectors[start:start + n]))
        start += n


def test_signs_per_graph_keep_exact_row_ranks_beyond_the_dtype_precision():
    """float16 holds integers exactly only up to 2048: a pivot in a longer graph is still found exactly."""
    sizes = torch.tensor([3000, 4])
    vectors = torch.zeros(3004, 2, dtype=torch.float16)
    vectors[1, 0], vectors[2, 0] = -1.0, 1.0    # pivot row 1 (in float16 its rank 2999 would round to 3000)
    vectors[3000:, 1] = torch.tensor([0.05, 0.5, -1.0, 0.2], dtype=torch.float16)
    vectors[:3000, 1] = 0.01
    out = canonical_signs_per_graph(vectors, sizes)
    assert out[1, 0] == 1.0 and out[2, 0] == -1.0
    assert torch.equal(out[:3000], canonical_signs(vectors[:3000])) and torch.equal(out[3000:], vectors[3000:])


def test_empty_one_node_and_edgeless_graphs():
    graphs = [Data(edge_index=EMPTY, num_nodes=0), Data(edge_index=EMPTY, num_nodes=1),
              Data(edge_index=EMPTY, num_nodes=3)]
    out = precompute_eigenpairs(graphs, AddEigenpairs(k=2, operator="laplacian"))
    assert out[0].eigvecs.shape == (0, 2) and not out[0].eig_mask.any()
    assert out[1].eig_mask.tolist() == [[True, False]] and out[1].eigvals.tolist() == [[1.0, 0.0]]
    assert out[2].eig_mask.all() and torch.allclose(out[2].eigvals, torch.ones(1, 2))  # L = I without edges
    assert AddEigenpairs(k=2)(graphs[0].clone()).eigvecs.shape == (0, 2)


class GraphList(InMemoryDataset):
    """A collated in-memory dataset built from a list; ``root`` holds PyG's processed/ folder."""

    def __init__(self, graphs, root):
        super().__init__(root)
        self.data, self.slices = self.collate(graphs)

    @property
    def processed_file_names(self):
        return []

    def process(self):
        pass


def test_in_memory_dataset_is_read_from_its_storage_and_left_unchanged(tmp_path):
    graphs = [g for g in mixed_graphs() if g.num_nodes > 0 and "edge_weight" not in g]
    for g in graphs:
        g.x = torch.randn(g.num_nodes, 2)
    dataset = GraphList(graphs, root=str(tmp_path))
    transform = AddEigenpairs(k=3, operator="laplacian")
    out = precompute_eigenpairs(dataset, transform, cache_dir=False)
    assert isinstance(out, GraphList) and "eigvecs" not in dataset[0]
    assert_same(per_graph(transform, graphs), [out[i] for i in range(len(out))], ["eigvecs", "eigvals", "eig_mask"])
    view = dataset[1::2]
    assert_same(per_graph(transform, graphs[1::2]), list(precompute_eigenpairs(view, transform, cache_dir=False)),
                ["eigvecs", "eigvals"])
    batch = next(iter(DataLoader(out, batch_size=4)))
    assert batch.eigvecs.shape == (int(batch.ptr[-1]), 3) and batch.eigvals.shape == (4, 3)


def test_an_in_memory_dataset_is_solved_as_stored_and_a_sequence_as_it_yields(tmp_path):
    """dataset.transform is not applied to the stored graphs solved (as a pre_transform) and still runs
    on access; a list of the dataset's graphs holds the transformed graphs and is solved as such."""
    graphs = [as_data(g, x=torch.ones(g.num_nodes, 1)) for g in (path_graph(5), cycle_graph(6))]
    dataset = GraphList(graphs, root=str(tmp_path))
    dataset.transform = AddSelfLoops()  # changes the structure the eigenpairs are of
    transform = AddEigenpairs(k=3, add_self_loops=False)
    stored = precompute_eigenpairs(dataset, transform, cache_dir=False)
    yielded = precompute_eigenpairs(list(dataset), transform, cache_dir=False)
    for i, graph in enumerate(graphs):
        with_loops = AddSelfLoops()(graph.clone())
        assert torch.equal(stored[i].edge_index, with_loops.edge_index)  # the transform runs on access
        assert torch.equal(stored[i].eigvals, transform(graph.clone()).eigvals)
        assert torch.equal(yielded[i].eigvals, transform(with_loops.clone()).eigvals)
        assert not torch.equal(stored[i].eigvals, yielded[i].eigvals)


def test_one_graph_datasets_and_one_graph_views_equal_the_per_graph_transform(tmp_path):
    """PyG stores a dataset of one graph (Planetoid's Cora, a view dataset[i:i + 1]) without slices."""
    graphs = [as_data(g, x=torch.randn(g.num_nodes, 2)) for g in (path_graph(5), cycle_graph(6), complete_graph(4))]
    transform = AddEigenpairs(k=3, operator="laplacian")
    expected = per_graph(transform, [g.clone() for g in graphs])
    names = ["eigvecs", "eigvals", "eig_mask"]
    single = GraphList(graphs[1:2], root=str(tmp_path / "single"))
    assert single.slices is None
    out = precompute_eigenpairs(single, transform)
    assert isinstance(out, GraphList) and len(out) == 1 and "eigvecs" not in single[0]
    assert_same(expected[1:2], [out[0]], names)
    dataset = GraphList(graphs, root=str(tmp_path / "three"))
    for view, want in ((dataset[2:3], expected[2:3]), (dataset[[0]], expected[:1])):
        assert_same(want, list(precompute_eigenpairs(view, transform, cache_dir=False)), names)
    empty = precompute_eigenpairs(dataset[0:0], transform, cache_dir=False)
    assert isinstance(empty, GraphList) and len(empty) == 0


def test_laplacian_pe_matches_pyg_up_to_sign_and_pads_small_graphs():
    graphs = [as_data(path_graph(n)) for n in (12, 20, 120)]  # simple spectra; 120 takes PyG's ARPACK path
    ours = precompute_eigenpairs(graphs, LaplacianEigenvectorPE(k=3))
    torch.manual_seed(0)
    for mine, data in zip(ours, graphs, strict=True):
        reference = AddLaplacianEigenvectorPE(k=3, is_undirected=True)(data.clone()).laplacian_eigenvector_pe
        sign = torch.sign((mine.laplacian_eigenvector_pe * reference).sum(0))
        assert torch.allclose(mine.laplacian_eigenvector_pe, reference * sign, atol=1e-4)
    again = precompute_eigenpairs(graphs, LaplacianEigenvectorPE(k=3))  # deterministic, unlike PyG's random signs
    assert all(torch.equal(a.laplacian_eigenvector_pe, b.laplacian_eigenvector_pe)
               for a, b in zip(ours, again, strict=True))
    small = LaplacianEigenvectorPE(k=4, attr_name="pe")(as_data(path_graph(3)))
    assert small.pe.shape == (3, 4) and torch.equal(small.pe[:, 2:], torch.zeros(3, 2))
    dense = laplacian(path_graph(3).edge_index, num_nodes=3).to_dense()
    assert torch.allclose(dense @ small.pe[:, :2], small.pe[:, :2] * torch.linalg.eigvalsh(dense)[1:3].float(),
                          atol=1e-6)
    with pytest.raises(ValueError, match="attr_name must be a non-empty string"):
        LaplacianEigenvectorPE(k=2, attr_name=None)
    for swapped in (LaplacianEigenvectorPE(3, "laplacian_eigenvector_pe", True),  # PyG's signature, positionally
                    LaplacianEigenvectorPE(k=3, is_undirected=False),
                    LaplacianEigenvectorPE(3, is_undirected=np.True_)):
        assert torch.equal(swapped(graphs[0].clone()).laplacian_eigenvector_pe, ours[0].laplacian_eigenvector_pe)
    assert LaplacianEigenvectorPE(3, is_undirected=True).is_undirected
    directed = Data(edge_index=path_graph(4).edge_index[:, :3], num_nodes=4)
    for is_undirected in (False, True):  # symmetry is checked whatever the hint
        with pytest.raises(ValueError, match="not undirected"):
            LaplacianEigenvectorPE(k=2, is_undirected=is_undirected)(directed)
    with pytest.raises(TypeError, match="is_undirected must be a bool"):
        LaplacianEigenvectorPE(k=2, is_undirected="yes")
    with pytest.raises(TypeError, match="unexpected keyword argument 'which'"):
        LaplacianEigenvectorPE(k=2, which="SA")  # PyG passes **kwargs to SciPy's eigsh: not accepted


class Counting:
    """Wraps a transform's compute to count solves."""

    def __init__(self, transform, monkeypatch):
        self.calls = 0
        original = transform.compute

        def compute(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(transform, "compute", compute)


def test_cache_reloads_and_is_invalidated_by_every_key(tmp_path, monkeypatch):
    graphs = mixed_graphs()
    transform = AddEigenpairs(k=3, operator="laplacian")
    counter = Counting(transform, monkeypatch)
    first = precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)
    again = precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)
    assert counter.calls == 1 and len(list(tmp_path.iterdir())) == 1
    assert_same(first, again, ["eigvecs", "eigvals", "eig_mask"])

    def changed(index, **fields):
        copy = [g.clone() for g in graphs]
        for key, value in fields.items():
            copy[index][key] = value
        return copy
    variants = [changed(0, edge_index=path_graph(5).edge_index.flip(1)),            # edge order
                changed(9, edge_weight=graphs[9].edge_weight * 2),                  # weights
                changed(6, num_nodes=5),                                            # node count
                changed(0, edge_weight=torch.full((8,), 0.5, dtype=torch.float64))]  # a weight on an unweighted graph
    for variant in variants:
        before = counter.calls
        precompute_eigenpairs(variant, transform, cache_dir=tmp_path)
        assert counter.calls == before + 1
    for other in (AddEigenpairs(k=4, operator="laplacian"), AddEigenpairs(k=3, operator="normalized_adjacency"),
                  AddEigenpairs(k=3, operator="laplacian", which="largest"), LaplacianEigenvectorPE(k=2)):
        other_counter = Counting(other, monkeypatch)
        precompute_eigenpairs(graphs, other, cache_dir=tmp_path)
        assert other_counter.calls == 1
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        before = counter.calls
        assert precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)[0].eigvecs.dtype == torch.float64
        assert counter.calls == before + 1
    finally:
        torch.set_default_dtype(previous)
    monkeypatch.setattr(cache_module, "library_version", lambda: "99.0")
    before = counter.calls
    precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)
    assert counter.calls == before + 1
    monkeypatch.setattr(cache_module, "CACHE_FORMAT", cache_module.CACHE_FORMAT + 1)  # another solver path
    before = counter.calls
    precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)
    assert counter.calls == before + 1
    monkeypatch.setattr(scipy, "__version__", "0.1")  # another LAPACK for the subset, band and ARPACK paths
    before = counter.calls
    precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)
    assert counter.calls == before + 1


@pytest.mark.parametrize("change", ["threads", "cpu_capability", "numpy", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
                                    "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"])
def test_cache_is_invalidated_by_the_blas_setup(tmp_path, monkeypatch, change):
    """Thread counts and instruction sets change the order of floating-point sums, hence the
    results (by O(1) within a repeated eigenvalue or at a sign pivot), as does NumPy's LAPACK."""
    graphs = [as_data(path_graph(6)), as_data(cycle_graph(7))]
    transform = AddEigenpairs(k=3, operator="laplacian")
    counter = Counting(transform, monkeypatch)
    precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)
    previous = torch.get_num_threads()
    try:
        if change == "threads":
            torch.set_num_threads(previous + 1)
        elif change == "cpu_capability":
            monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "OTHER")
        elif change == "numpy":
            monkeypatch.setattr(np, "__version__", "0.1")
        else:  # read by the BLAS libraries at start-up only: a process started with it set
            monkeypatch.setenv(change, os.environ.get(change, "") + "7")
        precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)
    finally:
        torch.set_num_threads(previous)
    assert counter.calls == 2 and len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("transform", [AddEigenpairs(k=4), AddEigenpairs(k=3, deflate_components=True),
                                       LaplacianEigenvectorPE(k=3, attr_name="pe")], ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_specs_describe_what_compute_returns(transform, dtype):
    """The cache accepts a file only with these shapes and dtypes, so they must be the computed ones."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        graphs = mixed_graphs()
        outputs = transform.compute(pack_graphs(graphs))
        specs = transform.output_specs(sum(g.num_nodes for g in graphs), len(graphs))
    finally:
        torch.set_default_dtype(previous)
    assert {name: (tuple(value.shape), value.dtype) for name, value in outputs.items()} == specs


def cache_path_of(folder):
    (path,) = [p for p in folder.iterdir() if p.suffix == ".pt"]
    return path


EDITS = {"wrong_shape": lambda stored: stored.update(eigvecs=stored["eigvecs"][:-1]),
         "missing_columns": lambda stored: stored.update(eigvecs=stored["eigvecs"][:, :2]),
         "uint8_mask": lambda stored: stored.update(eig_mask=stored["eig_mask"].to(torch.uint8)),
         "int64_eigvals": lambda stored: stored.update(eigvals=stored["eigvals"].long()),
         "float64_eigvecs": lambda stored: stored.update(eigvecs=stored["eigvecs"].double()),
         "sparse_eigvals": lambda stored: stored.update(eigvals=stored["eigvals"].to_sparse()),
         "nan_eigvecs": lambda stored: stored["eigvecs"].fill_(float("nan")),
         "missing_entry": lambda stored: stored.pop("eig_mask"),
         "other_version": lambda stored: stored.update(lowrank_gnn="0.0.1")}


def view_of_a_larger_storage(tensor):
    larger = torch.zeros(tensor.shape[0] + 100, *tensor.shape[1:], dtype=tensor.dtype)
    larger[:tensor.shape[0]] = tensor
    return larger[:tensor.shape[0]]


#: Foreign files at the right name, each with the words of the warning that refuses it.
FOREIGN = {"format_tensor": (lambda stored: stored.update(format=torch.tensor([3, 3])), "not this library's"),
           "version_tensor": (lambda stored: stored.update(lowrank_gnn=torch.tensor([1, 2])), "not this library's"),
           "key_tensor": (lambda stored: stored.update(key=torch.tensor([1, 2])), "content key"),
           "no_digests": (lambda stored: stored.__delitem__("digests"), "no digests"),
           "meta_eigvecs": (lambda stored: stored.update(eigvecs=torch.empty(stored["eigvecs"].shape, device="meta")),
                            "on meta"),
           "requires_grad": (lambda stored: stored.update(eigvecs=stored["eigvecs"].clone().requires_grad_()),
                             "requires grad"),
           "non_contiguous": (lambda stored: stored.update(eigvecs=stored["eigvecs"].t().contiguous().t()), "a view"),
           "view_of_a_larger_storage": (lambda stored: stored.update(eigvecs=view_of_a_larger_storage(
               stored["eigvecs"])), "a view"),
           "expanded": (lambda stored: stored.update(eigvals=stored["eigvals"][:1].expand_as(stored["eigvals"])),
                        "a view"),
           "negative_bit": (lambda stored: stored.update(eigvecs=torch._neg_view(-stored["eigvecs"])),
                            "lazy negation"),
           "list_payload": (lambda stored: [stored], "holds a list")}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pickled_code", *EDITS, *FOREIGN])
def test_a_bad_cache_file_is_recomputed_with_a_warning(tmp_path, damage):
    graphs = mixed_graphs()
    transform = AddEigenpairs(k=3, operator="laplacian")
    expected = precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)
    path = cache_path_of(tmp_path)
    content = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a cache file")
    elif damage == "truncated":
        path.write_bytes(content[: len(content) // 2])
    elif damage in EDITS:
        stored = torch.load(path, weights_only=True)
        EDITS[damage](stored)
        torch.save(stored, path)
    elif damage in FOREIGN:
        edit, match = FOREIGN[damage]
        stored = torch.load(path, weights_only=True)
        edited = edit(stored)
        torch.save(stored if edited is None else edited, path)
    else:
        marker = tmp_path / "code_ran"
        torch.save({"payload": Exploit(str(marker))}, path)
    with pytest.warns(UserWarning, match="ignoring the") as caught:
        got = precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)
    if damage in FOREIGN:
        assert any(FOREIGN[damage][1] in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert_same(expected, got, ["eigvecs", "eigvals", "eig_mask"])
    assert all(a.eig_mask.dtype == torch.bool and a.eigvals.dtype == b.eigvals.dtype
               for a, b in zip(expected, got, strict=True))
    if damage == "pickled_code":
        assert not (tmp_path / "code_ran").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file was rewritten: a clean load now
        precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)


@pytest.mark.parametrize("name", ["eigvecs", "eig_mask"])
def test_a_cache_file_corrupted_in_place_is_recomputed_with_a_warning(tmp_path, name):
    """Bytes flipped inside a tensor's record load without error (torch.load does not check the
    archive's CRCs) and pass every shape, dtype and finiteness check; the digest catches them."""
    graphs = mixed_graphs()
    transform = AddEigenpairs(k=3, operator="laplacian")
    expected = precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)
    path = cache_path_of(tmp_path)
    content = bytearray(path.read_bytes())
    record = torch.cat([data[name] for data in expected]).numpy().tobytes()
    at = bytes(content).find(record)
    assert at >= 0 and bytes(content).find(record, at + 1) < 0
    content[at + 3] ^= 0x40 if name == "eigvecs" else 0x01  # an exponent bit of eigvecs[0, 0]; eig_mask[0, 0]
    path.write_bytes(bytes(content))
    corrupted = torch.load(path, weights_only=True)[name]
    assert not torch.equal(corrupted, torch.cat([data[name] for data in expected]))
    assert not corrupted.is_floating_point() or bool(torch.isfinite(corrupted).all())
    with pytest.warns(UserWarning, match=f"its '{name}' entry does not match its digest"):
        got = precompute_eigenpairs(graphs, transform, cache_dir=tmp_path)
    assert_same(expected, got, ["eigvecs", "eigvals", "eig_mask"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file was rewritten: a clean load now
        assert_same(expected, precompute_eigenpairs(graphs, transform, cache_dir=tmp_path),
                    ["eigvecs", "eigvals", "eig_mask"])


def test_a_cache_folder_that_cannot_be_searched_warns_and_still_returns_results(tmp_path, monkeypatch):
    """EACCES on every path inside the folder (another user's folder without the x bit), simulated
    so that it also holds when the tests run as root: stat, open and os.open fail there."""
    import builtins
    folder = tmp_path / "cache"
    folder.mkdir()
    inside = str(folder) + os.sep

    def refusing(real):
        def call(path, *args, **kwargs):
            if isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(inside):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real(path, *args, **kwargs)
        return call
    for module, name in ((os, "stat"), (os, "open"), (builtins, "open")):
        monkeypatch.setattr(module, name, refusing(getattr(module, name)))
    graphs = [as_data(path_graph(5)), as_data(cycle_graph(6))]
    transform = AddEigenpairs(k=2)
    with pytest.warns(UserWarning) as caught:
        out = precompute_eigenpairs(graphs, transform, cache_dir=folder)
    messages = [str(w.message) for w in caught]
    assert any("ignoring the unreadable cache file" in m and "PermissionError" in m for m in messages), messages
    assert any("could not write the cache file" in m for m in messages), messages
    assert_same(per_graph(transform, graphs), out, ["eigvecs", "eigvals", "eig_mask"])


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_an_unwritable_cache_folder_warns_and_still_returns_results(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    graphs = mixed_graphs()
    transform = AddEigenpairs(k=2)
    with pytest.warns(UserWarning, match="could not write the cache file"):
        out = precompute_eigenpairs(graphs, transform, cache_dir=blocker / "cache")
    assert_same(per_graph(transform, graphs), out, ["eigvecs"])
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        if os.access(readonly, os.W_OK):
            pytest.skip("running with permissions that ignore a read-only folder (root)")
        with pytest.warns(UserWarning, match="could not write the cache file"):
            precompute_eigenpairs(graphs, transform, cache_dir=readonly)
    finally:
        readonly.chmod(0o700)


WRITE_LIMITED = """
import resource, signal, sys, warnings
import torch
from torch_geometric.data import Data
from lowrank_gnn.testing import path_graph
from lowrank_gnn.transforms import AddEigenpairs, precompute_eigenpairs
graphs = [Data(edge_index=path_graph(300).edge_index, num_nodes=300)]
expected = AddEigenpairs(k=8)(graphs[0].clone()).eigvecs
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))  # writes past 4 KiB fail, as on a full disk
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = precompute_eigenpairs(graphs, AddEigenpairs(k=8), cache_dir=sys.argv[1])
assert torch.equal(out[0].eigvecs, expected)
assert any("could not write the cache file" in str(w.message) for w in caught), [str(w.message) for w in caught]
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_datasets_without_edges_are_cached(tmp_path):
    """A dataset with no edges at all (empty graphs, graphs without edges, no graph) hashes empty arrays."""
    transform = AddEigenpairs(k=3, operator="laplacian")
    for graphs in ([], [Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=0)],
                   [Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=5)]):
        folder = tmp_path / str(len(graphs) + sum(g.num_nodes for g in graphs))
        first = precompute_eigenpairs(graphs, transform, cache_dir=folder)
        again = precompute_eigenpairs(graphs, transform, cache_dir=folder)
        assert len(first) == len(graphs)
        assert all(torch.equal(a.eigvecs, b.eigvecs) for a, b in zip(first, again, strict=True))


def test_a_cache_write_that_fails_part_way_warns_and_leaves_no_file(tmp_path):
    """torch.save raises a RuntimeError (not an OSError) when the file system refuses more bytes."""
    result = subprocess.run([sys.executable, "-c", WRITE_LIMITED, str(tmp_path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []  # the temporary file was removed


def fill_cache(folder, queue, barrier):
    graphs = mixed_graphs() * 50
    barrier.wait(timeout=60)  # both start solving, hence writing, at the same time
    out = precompute_eigenpairs(graphs, AddEigenpairs(k=3, operator="laplacian"), cache_dir=folder)
    queue.put(torch.cat([d.eigvecs for d in out]).numpy())


def test_two_processes_filling_the_cache_at_once(tmp_path):
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    queue, barrier = context.Queue(), context.Barrier(2)
    workers = [context.Process(target=fill_cache, args=(str(tmp_path), queue, barrier)) for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert np.array_equal(results[0], results[1])
    assert [p.suffix for p in tmp_path.iterdir()] == [".pt"]  # no temporary file left behind
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reloaded = precompute_eigenpairs(mixed_graphs() * 50, AddEigenpairs(k=3, operator="laplacian"),
                                         cache_dir=tmp_path)
    assert np.array_equal(torch.cat([d.eigvecs for d in reloaded]).numpy(), results[0])


def test_cache_files_are_named_after_their_transform(tmp_path):
    graphs = [as_data(path_graph(4)), as_data(cycle_graph(5))]
    precompute_eigenpairs(graphs, LaplacianEigenvectorPE(k=2), cache_dir=tmp_path)
    precompute_eigenpairs(graphs, AddEigenpairs(k=3, operator="laplacian"), cache_dir=tmp_path)  # the same solve
    names = sorted(path.name.split("_")[0] for path in tmp_path.iterdir())
    assert names == ["addeigenpairs", "laplacianeigenvectorpe"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_cache_files_get_the_umask_default_mode_as_pyg_files_do(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        precompute_eigenpairs([as_data(path_graph(4))], AddEigenpairs(k=2), cache_dir=tmp_path)
    finally:
        os.umask(previous)
    assert (cache_path_of(tmp_path).stat().st_mode & 0o777) == mode


def test_default_cache_folder_is_the_processed_dir(tmp_path):
    graphs = [as_data(path_graph(4)), as_data(cycle_graph(5))]
    for g in graphs:
        g.x = torch.ones(g.num_nodes, 1)
    dataset = GraphList(graphs, root=str(tmp_path))
    precompute_eigenpairs(dataset, AddEigenpairs(k=2))
    assert len(list((tmp_path / "processed").glob("addeigenpairs_*.pt"))) == 1
    before = sorted(tmp_path.rglob("*"))
    assert len(precompute_eigenpairs(graphs, AddEigenpairs(k=3))) == 2  # a list: no folder, no cache
    assert sorted(tmp_path.rglob("*")) == before


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="graph 1: edge_index entries must lie in"):
        precompute_eigenpairs([as_data(path_graph(3)), Data(edge_index=torch.tensor([[0], [5]]), num_nodes=2)],
                              AddEigenpairs(k=2))
    with pytest.raises(ValueError, match="graph 1 is not undirected"):
        precompute_eigenpairs([as_data(path_graph(3)), Data(edge_index=torch.tensor([[0], [1]]), num_nodes=3)],
                              AddEigenpairs(k=2))
    directed = path_graph(BAND_MIN_SIZE).edge_index[:, :-1]  # one reverse edge missing, on the band path
    with pytest.raises(ValueError, match="graph 1 is not undirected"):
        precompute_eigenpairs([as_data(path_graph(3)), Data(edge_index=directed, num_nodes=BAND_MIN_SIZE)],
                              AddEigenpairs(k=2))
    weight = torch.ones(4)
    weight[1] = float("nan")
    with pytest.raises(ValueError, match="graph 0: edge_weight contains NaN"):
        precompute_eigenpairs([as_data(path_graph(3), edge_weight=weight)], AddEigenpairs(k=2))
    with pytest.raises(ValueError, match="graph 0: edge weights must be non-negative"):
        precompute_eigenpairs([as_data(path_graph(3), edge_weight=-torch.ones(4))], AddEigenpairs(k=2))
    for bad in (float("inf"), -float("inf")):
        weight = torch.ones(4)
        weight[2] = bad
        with pytest.raises(ValueError, match="graph 1: edge_weight contains NaN or Inf"):
            precompute_eigenpairs([as_data(path_graph(3)), as_data(path_graph(3), edge_weight=weight)],
                                  AddEigenpairs(k=2))
    with pytest.raises(ValueError, match="graph 2: edge_index entries must lie in"):
        precompute_eigenpairs([as_data(path_graph(3)), as_data(path_graph(2)),
                               Data(edge_index=torch.tensor([[0, -1], [-1, 0]]), num_nodes=2)], AddEigenpairs(k=2))
    with pytest.raises(ValueError, match="graph 1 has no edge_index"):
        precompute_eigenpairs([as_data(path_graph(3)), Data(num_nodes=2)], AddEigenpairs(k=2))
    with pytest.raises(TypeError, match="transform must be an AddEigenpairs"):
        precompute_eigenpairs([as_data(path_graph(3))], lambda data: data)
    with pytest.raises(ValueError, match="cache_dir=True needs a dataset with a processed_dir"):
        precompute_eigenpairs([as_data(path_graph(3))], AddEigenpairs(k=2), cache_dir=True)
    with pytest.raises(TypeError, match="cache_dir must be a folder path"):
        precompute_eigenpairs([as_data(path_graph(3))], AddEigenpairs(k=2), cache_dir=3)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")  # torch, from PyG's ToSparseTensor
def test_messages_for_the_wrong_container_adj_t_graphs_and_overflowing_degrees(tmp_path):
    graph = as_data(path_graph(4))
    with pytest.raises(TypeError, match=r"or an InMemoryDataset \(got a Data\); pass \[data\]"):
        precompute_eigenpairs(graph, AddEigenpairs(k=2))
    with pytest.raises(TypeError, match=r"\(got a DataBatch\); pass batch.to_data_list\(\)"):
        precompute_eigenpairs(Batch.from_data_list([graph, graph]), AddEigenpairs(k=2))
    with pytest.raises(TypeError, match=r"graph 0 is a Batch of 2 graphs \(a DataLoader yields these\)"):
        precompute_eigenpairs(DataLoader([graph] * 4, batch_size=2), AddEigenpairs(k=2))
    for item in ({"edge_index": graph.edge_index}, "graph"):
        with pytest.raises(TypeError, match=r"graph 0 is a (dict|str), not a torch_geometric.data.Data"):
            precompute_eigenpairs([item], AddEigenpairs(k=2))
    with pytest.raises(ValueError, match=r"graph 0 has no edge_index.*only a graph that has no edges at all"):
        AddEigenpairs(k=2)(Data(num_nodes=3))
    sparse = [ToSparseTensor()(as_data(g, x=torch.ones(g.num_nodes, 1))) for g in (path_graph(4), cycle_graph(5))]
    fix = r"ToSparseTensor\(remove_edge_index=False\).*to_edge_index\(data.adj_t\)"
    with pytest.raises(ValueError, match=r"graph 1 holds its edges as a sparse adj_t .*" + fix):
        precompute_eigenpairs([graph, sparse[1]], AddEigenpairs(k=2))
    with pytest.raises(ValueError, match=r"this dataset's graphs hold their edges as a sparse adj_t .*" + fix):
        precompute_eigenpairs(GraphList(sparse, root=str(tmp_path)), AddEigenpairs(k=2), cache_dir=False)
    converted = Data(num_nodes=5)
    converted.edge_index, converted.edge_weight = to_edge_index(sparse[1].adj_t)  # the fix the message gives
    assert torch.equal(AddEigenpairs(k=2)(converted).eigvals, AddEigenpairs(k=2)(as_data(cycle_graph(5))).eigvals)
    huge = as_data(path_graph(3), edge_weight=torch.full((4,), 1e308, dtype=torch.float64))  # finite, sum is not
    for operator in ("laplacian", "normalized_adjacency"):
        with pytest.raises(ValueError, match=r"graph 1: the weighted degree of node 1 overflows float64"):
            precompute_eigenpairs([graph, huge], AddEigenpairs(k=2, operator=operator))
    with pytest.raises(ValueError, match=r"device='meta' holds no values"):
        precompute_eigenpairs(Unreadable(), AddEigenpairs(k=2), cache_dir=False, device="meta")


@pytest.mark.parametrize("options", [dict(backend_kwargs={"dense_max_nodes": 2}), dict(backend="stable"),
                                     dict(backend_kwargs={"method": "sparse"})])
def test_a_directed_graph_solved_one_at_a_time_is_named(options):
    undirected = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
    directed = Data(edge_index=torch.tensor([[0, 1, 1], [1, 2, 0]]), num_nodes=3)  # 1 -> 2 without its reverse
    with pytest.raises(ValueError, match=r"^graph 3: \w+Backend needs a symmetric operator"):
        precompute_eigenpairs([undirected] * 3 + [directed, undirected], AddEigenpairs(k=2, **options))


class Unreadable:
    """A dataset that fails on any access: a check that reaches it did work before failing."""

    def __iter__(self):
        raise AssertionError("the dataset was read before the arguments were checked")


@pytest.mark.parametrize("device, match", [("cuda:999", r"device='cuda:999' is not available here"),
                                           ("gpu", "device must be a torch.device or a device string")])
def test_an_unavailable_device_is_refused_before_any_work(device, match):
    with pytest.raises(ValueError, match=match):
        precompute_eigenpairs(Unreadable(), AddEigenpairs(k=2), cache_dir=False, device=device)


def test_half_precision_weights_in_an_in_memory_dataset_are_refused(tmp_path):
    graphs = [as_data(graph, edge_weight=torch.ones(graph.edge_index.shape[1], dtype=torch.float16),
                      x=torch.ones(graph.num_nodes, 1)) for graph in (path_graph(4), cycle_graph(5))]
    with pytest.raises(TypeError, match="data.edge_weight has dtype torch.float16"):
        precompute_eigenpairs(GraphList(graphs, root=str(tmp_path)), AddEigenpairs(k=2), cache_dir=False)


def test_stored_edge_weights_of_another_shape_are_refused_as_in_a_list(tmp_path):
    """(E, 1) weights would broadcast to (E, E) in the operator entries: refused up front, naming graph 0."""
    graphs = [as_data(graph, edge_weight=torch.full((graph.edge_index.shape[1], 1), 2.0),
                      x=torch.ones(graph.num_nodes, 1)) for graph in (path_graph(4), cycle_graph(5))]
    message = r"graph 0: data.edge_weight must have shape \(num_edges,\) = \(6,\) \(got \(6, 1\)\)"
    with pytest.raises(ValueError, match=message):
        precompute_eigenpairs(graphs, AddEigenpairs(k=2), cache_dir=False)
    with pytest.raises(ValueError, match=message):
        precompute_eigenpairs(GraphList(graphs, root=str(tmp_path)), AddEigenpairs(k=2), cache_dir=False)


@pytest.mark.parametrize("operator, add_self_loops", [("laplacian", True), ("normalized_adjacency", False)])
def test_an_edge_into_a_node_without_edges_of_its_own_is_refused(operator, add_self_loops):
    """Its entry is 0 on both sides (the node's D^-1/2 is 0), so only the degree test sees the missing reverse."""
    directed = Data(edge_index=path_graph(12).edge_index[:, 1:], num_nodes=12)  # 1 -> 0, no edge out of 0
    if operator == "normalized_adjacency":  # degree by target: an edge out of a node that nothing enters
        directed = Data(edge_index=path_graph(12).edge_index[:, torch.arange(22) != 11], num_nodes=12)
    transform = AddEigenpairs(k=2, operator=operator, add_self_loops=add_self_loops)
    with pytest.raises(ValueError, match="graph 0 is not undirected"):
        transform(directed.clone())
    through_backend = AddEigenpairs(k=2, operator=operator, add_self_loops=add_self_loops, backend="stable")
    with pytest.raises(ValueError, match="graph 0 is not undirected"):  # solved one at a time, not densely
        through_backend(directed.clone())
    with pytest.raises(ValueError, match="graph 1 is not undirected"):
        precompute_eigenpairs([Data(edge_index=path_graph(3).edge_index, num_nodes=3), directed], transform)
    zero = Data(edge_index=torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]), edge_weight=torch.tensor([1.0, 1.0, 0.0, 0.0]),
                num_nodes=4)  # a symmetric edge of weight 0 between two otherwise isolated nodes is accepted
    assert transform(zero.clone()).eig_mask.all()


def test_pyg_edge_index_input_gives_the_plain_tensors_result():
    from torch_geometric import EdgeIndex

    edge_index = path_graph(6).edge_index
    wrapped = Data(edge_index=EdgeIndex(edge_index, sparse_size=(6, 6)), num_nodes=6)
    plain = Data(edge_index=edge_index, num_nodes=6)
    for transform in (AddEigenpairs(k=3), LaplacianEigenvectorPE(k=2)):
        name = "eigvecs" if isinstance(transform, AddEigenpairs) else "laplacian_eigenvector_pe"
        expected = transform(plain.clone())[name]
        assert torch.equal(transform(wrapped.clone())[name], expected)
        assert torch.equal(precompute_eigenpairs([wrapped, wrapped], transform)[1][name], expected)
