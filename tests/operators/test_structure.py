import warnings

import pytest
import torch
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import get_laplacian, to_dense_adj, to_undirected

from lowrank_gnn.eigen import ExactBackend
from lowrank_gnn.operators import GraphStructure, deflate_components, laplacian, normalized_adjacency
from lowrank_gnn.operators.sparse import SparsityPattern
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph

GRAPH = disjoint_union(cycle_graph(5), path_graph(4), complete_graph(3))
N = GRAPH.num_nodes
# a self-loop (3, 3) twice, a duplicate (0, 1), a one-way edge 9 -> 2 (across two components)
MESSY = torch.cat([GRAPH.edge_index, torch.tensor([[3, 0, 9, 3], [3, 1, 2, 3]])], 1)


def dense(edge_index, weight, n):
    return to_dense_adj(edge_index, edge_attr=weight, max_num_nodes=n)[0]


def weights(edge_index, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.rand(edge_index.shape[1], dtype=torch.float64, generator=generator) + 0.5
    loops = ((edge_index[0] == 3) & (edge_index[1] == 3)).nonzero().squeeze(-1)
    return weight.index_fill(0, loops, float(weight[loops[0]])) if loops.numel() else weight  # copies agree


@pytest.mark.parametrize("add_self_loops", [True, False])
@pytest.mark.parametrize("improved", [True, False])
def test_normalized_adjacency_is_gcn_norm_on_messy_input(add_self_loops, improved):
    """Duplicates summed, an existing self-loop kept, a directed edge as given: exactly gcn_norm."""
    weight = weights(MESSY)
    op = GraphStructure(MESSY, N).normalized_adjacency(weight, add_self_loops=add_self_loops, improved=improved)
    index, value = gcn_norm(MESSY, weight, N, improved=improved, add_self_loops=add_self_loops)
    assert torch.allclose(op.to_dense(), dense(index, value, N), atol=1e-14)
    assert not op.symmetric  # the one-way edge


@pytest.mark.parametrize("normalization", [None, "sym", "rw"])
def test_laplacian_is_get_laplacian_on_messy_input(normalization):
    weight = weights(MESSY)
    op = GraphStructure(MESSY, N).laplacian(weight, normalization)
    index, value = get_laplacian(MESSY, weight, normalization, num_nodes=N)
    assert torch.allclose(op.to_dense(), dense(index, value, N), atol=1e-14)


def test_operators_of_one_structure_share_its_pattern_and_match_fresh_builds():
    structure = GraphStructure(MESSY, N)
    first = structure.normalized_adjacency(weights(MESSY, 0))
    for seed in (1, 2):
        weight = weights(MESSY, seed)
        op = structure.normalized_adjacency(weight)
        assert op.row is first.row and op.crow is first.crow  # no new sort
        assert torch.allclose(op.to_dense(), normalized_adjacency(MESSY, weight, N).to_dense(), atol=1e-15)
        lap = structure.laplacian(weight, None)
        assert lap.row is first.row
        assert torch.allclose(lap.to_dense(), laplacian(MESSY, weight, N, normalization=None).to_dense(), atol=1e-15)


@pytest.mark.parametrize("build", ["normalized_adjacency", "laplacian"])
def test_gradients_reach_every_input_edge(build):
    structure = GraphStructure(MESSY, N)
    x = torch.randn(N, 2, dtype=torch.float64)
    weight = weights(MESSY).requires_grad_()
    assert torch.autograd.gradcheck(lambda w: getattr(structure, build)(w).matmul(x), (weight,))


def test_symmetrized_adjacency_averages_the_given_directions_and_warns():
    edge_index = torch.tensor([[0, 1, 1, 2, 3, 3], [1, 0, 2, 1, 4, 4]])  # 0-1 both ways, 1-2 both, 3 -> 4 twice
    weight = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.5, 0.25], dtype=torch.float64)
    structure = GraphStructure(edge_index, 5)
    assert not structure.undirected
    with pytest.warns(UserWarning, match="the graph is directed"):
        value = structure.adjacency(weight, symmetrize=True)
    op = GraphStructure(edge_index, 5).normalized_adjacency(weight, add_self_loops=False, normalize=False)
    expected = torch.zeros(5, 5, dtype=torch.float64)
    for (i, j), w in {(0, 1): 2.0, (1, 2): 2.0, (3, 4): 0.75}.items():  # mean of 1 and 3; 2; the summed one-way
        expected[i, j] = expected[j, i] = w
    from lowrank_gnn.operators import GraphOperator
    sym = GraphOperator.from_pattern(structure.pattern, value)
    assert torch.equal(sym.to_dense(), expected) and sym.symmetric
    assert torch.equal(op.to_dense(), dense(edge_index, weight, 5))  # without symmetrize: A as given


def test_asymmetric_weights_on_an_undirected_pattern_warn_and_symmetric_ones_do_not():
    structure = GraphStructure(GRAPH.edge_index, N)
    assert structure.undirected
    row, col = GRAPH.edge_index
    symmetric = (0.5 + (row * col) % 7 + row + col).double()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op = structure.normalized_adjacency(symmetric, symmetrize=True)
    assert torch.allclose(op.to_dense(), normalized_adjacency(GRAPH.edge_index, symmetric, N).to_dense(), atol=1e-15)
    skewed = symmetric.clone()
    skewed[0] += 1.0
    with pytest.warns(UserWarning, match="edge_weight is not symmetric"):
        op = structure.normalized_adjacency(skewed, symmetrize=True)
    merged_index, merged = to_undirected(GRAPH.edge_index, skewed, N, reduce="mean")
    assert torch.allclose(op.to_dense(), normalized_adjacency(merged_index, merged, N).to_dense(), atol=1e-15)
    assert op.symmetric


def test_unweighted_operators_are_built_once_per_options_and_dtype():
    structure = GraphStructure(GRAPH.edge_index, N)
    op = structure.normalized_adjacency(dtype=torch.float64)
    assert structure.normalized_adjacency(dtype=torch.float64) is op
    assert structure.normalized_adjacency(dtype=torch.float32) is not op
    assert structure.normalized_adjacency(dtype=torch.float64, improved=True) is not op
    ones = torch.ones(GRAPH.edge_index.shape[1], dtype=torch.float64)
    assert torch.equal(structure.normalized_adjacency(ones).to_dense(), op.to_dense())


def test_components_are_computed_once_per_structure(monkeypatch):
    import scipy.sparse.csgraph as csgraph

    calls = []
    original = csgraph.connected_components
    monkeypatch.setattr(csgraph, "connected_components", lambda *a, **k: calls.append(1) or original(*a, **k))
    structure = GraphStructure(GRAPH.edge_index, N)
    for seed in range(3):
        deflated = deflate_components(structure.normalized_adjacency(weights(GRAPH.edge_index, seed)))
        assert deflated.num_components == 3
    deflate_components(structure.normalized_adjacency(weights(GRAPH.edge_index), add_self_loops=False))
    assert len(calls) == 1  # zeros on the diagonal (no self-loops) do not connect anything
    weight = weights(GRAPH.edge_index)
    weight[:2] = 0.0  # 0 - 1 removed both ways: a zero entry, the components are searched again
    assert deflate_components(structure.normalized_adjacency(weight)).num_components == 3
    assert len(calls) == 2


def test_matches_notices_another_graph_and_in_place_edits():
    edge_index = GRAPH.edge_index.clone()
    structure = GraphStructure(edge_index, N)
    assert structure.matches(edge_index, N) and structure.matches(edge_index.clone(), N)
    assert not structure.matches(edge_index.flip(1), N)  # same edges, another order: slots would be wrong
    assert not structure.matches(edge_index, N + 1)
    edge_index[1, 0] = edge_index[1, 1]
    assert structure.edited and not structure.matches(edge_index, N)


def test_symmetric_solvers_still_reject_asymmetric_values():
    structure = GraphStructure(GRAPH.edge_index, N)
    weight = weights(GRAPH.edge_index)
    assert not structure.laplacian(weight, None).symmetric
    with pytest.raises(ValueError, match="needs a symmetric operator"):
        ExactBackend(k=2)(structure.laplacian(weight, None))


@pytest.mark.parametrize("edge_weight, error, match", [
    (torch.ones(3), ValueError, r"edge_weight must have shape \(num_edges,\) = \(4,\)"),
    (torch.ones(4, dtype=torch.long), TypeError, "floating-point"),
    (torch.tensor([1.0, float("nan"), 1.0, 1.0]), ValueError, "NaN or Inf"),
    (torch.tensor([1.0, -1.0, 1.0, 1.0]), ValueError, "non-negative"),
    (torch.ones(4, device="meta"), ValueError, "edge_weight is on meta but edge_index is on cpu"),
    ([1.0, 1.0, 1.0, 1.0], TypeError, "edge_weight must be a tensor"),
])
def test_bad_edge_weight(edge_weight, error, match):
    structure = GraphStructure(torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]))
    with pytest.raises(error, match=match):
        structure.normalized_adjacency(edge_weight)


def test_negative_weights_are_allowed_without_normalisation():
    structure = GraphStructure(torch.tensor([[0, 1], [1, 0]]))
    op = structure.normalized_adjacency(torch.tensor([-1.0, -1.0]), normalize=False)
    assert torch.equal(op.to_dense(), torch.tensor([[0.0, -1.0], [-1.0, 0.0]]))


def test_repr():
    assert repr(GraphStructure(torch.tensor([[0], [1]]), 3)) == (
        "GraphStructure(num_nodes=3, num_edges=1, nnz=5, undirected=False)")


def test_repeated_self_loops_keep_one_weight_as_gcn_norm():
    # node 0 has its self-loop twice (weights 6 and 7), node 2 once, (0, 1) is repeated
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 0, 0, 0, 1], [1, 0, 2, 1, 2, 0, 0, 1, 0]])
    weight = torch.tensor([1.0, 2.0, 3.0, 3.0, 5.0, 6.0, 7.0, 2.0, 1.0], dtype=torch.float64)
    ref_index, ref_value = gcn_norm(edge_index, weight, 5, add_self_loops=True)
    expected = torch.zeros(5, 5, dtype=torch.float64).index_put_((ref_index[1], ref_index[0]), ref_value,
                                                                 accumulate=True)
    op = GraphStructure(edge_index, 5).normalized_adjacency(weight)
    assert torch.allclose(op.to_dense(), expected, atol=1e-14, rtol=0)
    assert torch.allclose(op.to_dense()[0, 0], torch.tensor(7.0, dtype=torch.float64) / op.degree[0])


def test_the_mirror_of_every_slot_is_the_slot_of_its_transpose_without_a_sort():
    """Directed edges, duplicates and a self-loop: the structure's mirror is the pattern's transpose permutation."""
    edge_index = torch.tensor([[0, 1, 1, 2, 3, 3, 4], [1, 0, 2, 2, 0, 0, 1]])
    structure = GraphStructure(edge_index, 6)
    pattern = structure.pattern
    crow, col, perm = pattern.transpose()
    assert torch.equal(pattern.row[perm], pattern.col) and torch.equal(pattern.col[perm], pattern.row)
    assert torch.equal(crow, pattern.crow) and torch.equal(col, pattern.col) and pattern.symmetric
    assert torch.equal(perm, structure.mirror)
    # the same permutation as the sort-based transpose of the same pattern
    reference = SparsityPattern(torch.stack([pattern.row, pattern.col]), 6)
    assert torch.equal(reference.transpose()[2], perm)


def test_pair_weights_make_operators_symmetric_by_construction_until_edited():
    """undirected_edge_weight: both directions get their pair's weight, and the operators built from the returned
    tensor skip the value comparison (symmetric to rounding by construction); in-place edits, other tensors and
    one-way edges are checked as before."""
    edge_index = to_undirected(torch.tensor([[0, 0, 1, 2, 3], [1, 2, 2, 3, 4]]))
    structure = GraphStructure(edge_index)
    row, col = edge_index
    assert structure.num_pairs == 5
    assert torch.equal(structure.edge_pair[row < col], torch.arange(5))  # row-major order of (i, j), i < j
    pair_weight = torch.tensor([0.5, 2.0, 1.5, 3.0, 0.25], dtype=torch.float64, requires_grad=True)
    weight = structure.undirected_edge_weight(pair_weight)
    key = {(int(i), int(j)): float(w) for i, j, w in zip(row, col, weight.detach(), strict=True)}
    assert all(key[i, j] == key[j, i] for i, j in key)
    for build in (lambda w: structure.normalized_adjacency(w), lambda w: structure.laplacian(w),
                  lambda w: structure.laplacian(w, normalization=None),
                  lambda w: structure.normalized_adjacency(w, normalize=False)):
        op = build(weight)
        assert op._symmetric is True  # proved, not compared
        checked = build(weight.detach().clone())
        assert checked._symmetric is None and checked.symmetric  # the same values from the user: compared
        assert torch.allclose(op.to_dense(), checked.to_dense(), rtol=0, atol=0)
    assert structure.laplacian(weight, normalization="rw")._symmetric is None  # never proved
    op = structure.normalized_adjacency(weight)
    op.to_dense().sum().backward()
    assert pair_weight.grad is not None and bool((pair_weight.grad != 0).any())
    upper = int(((op.row == 0) & (op.col == 1)).nonzero())
    with torch.no_grad():
        op.value[upper] += 0.25  # the operator edited in place: compared again
    assert not op.symmetric
    with torch.no_grad():
        weight[0] = 7.0  # the weights edited in place: no longer a proof
    assert structure.normalized_adjacency(weight)._symmetric is None
    assert not structure.normalized_adjacency(weight).symmetric
    with pytest.raises(ValueError, match="needs a symmetric operator"):
        ExactBackend(2)(structure.normalized_adjacency(weight))
    with pytest.raises(ValueError, match=r"pair_weight must have shape \(num_pairs,\) = \(5,\)"):
        structure.undirected_edge_weight(torch.ones(4))


def test_pair_weights_prove_nothing_on_a_pattern_not_given_equally_often_both_ways():
    one_way = GraphStructure(torch.tensor([[0, 1, 1, 2, 0], [1, 0, 2, 1, 1]]), num_nodes=3)
    weight = one_way.undirected_edge_weight(torch.ones(one_way.num_pairs))
    op = one_way.normalized_adjacency(weight)
    assert op._symmetric is None  # (0, 1) given twice, (1, 0) once: checked, and it is not symmetric
    assert not op.symmetric
    with pytest.warns(UserWarning, match="the graph is directed"):
        directed = GraphStructure(torch.tensor([[0, 1], [1, 2]])).normalized_adjacency(symmetrize=True)
    assert directed._symmetric is True and directed.symmetric  # symmetrised: by construction


def test_the_combinatorial_laplacian_takes_signed_weights_as_get_laplacian():
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    weight = torch.tensor([-1.0, -1.0, 2.0, 2.0])
    ref_index, ref_value = get_laplacian(edge_index, weight, normalization=None, num_nodes=3)
    expected = to_dense_adj(ref_index, edge_attr=ref_value, max_num_nodes=3)[0]
    assert torch.equal(laplacian(edge_index, weight, normalization=None).to_dense(), expected)
    for normalization in ("sym", "rw"):   # D^{-1/2}, D^{-1}: the message says how signed weights can be used
        with pytest.raises(ValueError, match=r"non-negative for a normalised operator .* normalization=None"):
            laplacian(edge_index, weight, normalization=normalization)


@pytest.mark.parametrize("dtype, match", [
    (torch.float16, r"dtype=torch.float16\): .*half precision"),
    (torch.bfloat16, r"dtype=torch.bfloat16\)"),
    (torch.long, r"dtype=torch.int64\)"),
    ("float64", r"dtype='float64'\): .*pass dtype=torch.float64"),
])
def test_operators_without_weights_refuse_a_dtype_they_do_not_compute_in(dtype, match):
    structure = GraphStructure(cycle_graph(6).edge_index)
    for build in (lambda: structure.normalized_adjacency(dtype=dtype), lambda: structure.laplacian(dtype=dtype),
                  lambda: structure.adjacency(dtype=dtype)):
        with pytest.raises(TypeError, match=match):
            build()
    assert structure.normalized_adjacency(dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize("edge_index, num_nodes, error, match", [
    (torch.tensor([[0, 9], [9, 0]]), 3, ValueError, r"edge_index\[0\] entries must lie in \[0, num_nodes\) = \[0, 3\)"),
    (torch.tensor([[0, -1], [1, 0]]), 3, ValueError, r"edge_index\[0\] entries .* \(got min -1, max 0\)"),
    (torch.tensor([[0, 1], [1, 5]]), 3, ValueError, r"edge_index\[1\] entries must lie in \[0, num_nodes\)"),
    (torch.tensor([[0, 1], [1, 0]]).float(), 3, TypeError, "floating-point ids would be truncated"),
    (torch.tensor([[0, 1], [1, 0]]), 0, ValueError, r"num_nodes must be at least 1 \(got num_nodes=0\)"),
    (torch.tensor([0, 1]), 3, ValueError, r"edge_index must have shape \(2, num_edges\)"),
])
def test_sparsity_pattern_checks_its_arguments(edge_index, num_nodes, error, match):
    with pytest.raises(error, match=match):
        SparsityPattern(edge_index, num_nodes)


def test_sparsity_pattern_of_a_block_of_rows_checks_rows_against_num_rows():
    block = torch.tensor([[0, 1], [4, 2]])                    # rows 0..1 of a 5-node graph
    assert SparsityPattern(block, 5, num_rows=2).crow.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"edge_index\[0\] entries must lie in \[0, num_rows\) = \[0, 1\)"):
        SparsityPattern(block, 5, num_rows=1)
