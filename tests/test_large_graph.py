"""Large graphs: the sparse-only path, O(n) deflation, index overflow, messy input, the arxiv example."""
import runpy
import sys
from pathlib import Path

import pytest
import torch
from torch_geometric.nn import GCNConv
from torch_geometric.utils import coalesce, to_undirected

from lowrank_gnn.data import chung_lu_graph
from lowrank_gnn.eigen import ExactBackend
from lowrank_gnn.nn import LowRankGCNConv
from lowrank_gnn.operators import (ComponentDeflatedOperator, DeflatedOperator, DenseOperator, GraphOperator,
                                   component_eigenvectors, connected_components, deflate_components,
                                   normalized_adjacency)
from lowrank_gnn.operators.sparse import MAX_NUM_NODES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def planted_graph(num_nodes, mean_degree, blocks=3, inside=0.9, isolated=0, seed=0):
    """A stochastic block model (well-separated top eigenvalues, so ARPACK converges fast) plus isolated nodes.

    Edges are drawn with numpy-speed torch ops, one direction each (the layer symmetrises).
    """
    generator = torch.Generator().manual_seed(seed)
    m = num_nodes * mean_degree // 2
    size = num_nodes // blocks
    block = torch.randint(0, blocks, (m,), generator=generator)
    source = block * size + torch.randint(0, size, (m,), generator=generator)
    local = torch.rand(m, generator=generator) < inside
    target = torch.where(local, block * size + torch.randint(0, size, (m,), generator=generator),
                         torch.randint(0, blocks * size, (m,), generator=generator))
    return torch.stack([source, target]), num_nodes + isolated


def forbid_dense(monkeypatch):
    """Make every n x n (or n x c) densification on the operator path raise."""
    def refuse(*args, **kwargs):
        raise AssertionError("densified a large operator")

    monkeypatch.setattr(GraphOperator, "to_dense", refuse)
    monkeypatch.setattr(DeflatedOperator, "to_dense", refuse)
    monkeypatch.setattr(DenseOperator, "__init__", refuse)
    monkeypatch.setattr(ComponentDeflatedOperator, "basis", property(refuse))
    monkeypatch.setattr(ExactBackend, "_solve_dense", refuse)


# --- index arithmetic -------------------------------------------------------------------------

def test_int32_edge_index_is_promoted_before_the_int64_keys():
    n = 100_000  # row * n exceeds int32 from row = 21,475 on
    edge_index = torch.tensor([[99_999, 3, 50_000], [5, 99_998, 50_000]], dtype=torch.int32)
    op = GraphOperator(edge_index, torch.tensor([1.0, 2.0, 3.0]), n)
    assert op.row.tolist() == [3, 50_000, 99_999] and op.col.tolist() == [99_998, 50_000, 5]
    assert op.value.tolist() == [2.0, 3.0, 1.0]
    x = torch.zeros(n)
    x[5] = 1.0
    assert op.matmul(x)[99_999] == 1.0


def test_num_nodes_whose_square_overflows_int64_is_refused():
    edge_index = torch.tensor([[0], [1]])
    assert (MAX_NUM_NODES - 1) * MAX_NUM_NODES + MAX_NUM_NODES - 1 <= torch.iinfo(torch.int64).max
    with pytest.raises(ValueError, match=r"num_nodes must be at most 3037000499 \(got num_nodes=3037000500\)"):
        GraphOperator(edge_index, torch.ones(1), MAX_NUM_NODES + 1)


# --- messy input --------------------------------------------------------------------------------

def test_self_loops_duplicates_directed_edges_and_isolated_nodes_match_gcnconv():
    # self-loop (0, 0), duplicate (1, 2) twice, one-way edges (2, 3) and (4, 0), nodes 6 and 7 isolated
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 3, 4, 5, 3], [0, 2, 2, 1, 3, 4, 0, 4, 5]])
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5, 1.0, 0.7, 1.2, 0.9, 0.9], dtype=torch.float64)
    n = 8
    torch.manual_seed(0)
    x = torch.randn(n, 3, dtype=torch.float64)
    conv = LowRankGCNConv(3, 2, k=n).double()
    reference = GCNConv(3, 2).double()
    reference.lin.weight.data.copy_(conv.lin.weight.data)
    reference.bias.data.copy_(conv.bias.data)
    # what the layer documents: duplicate edges summed (as GCNConv's messages are), then the two
    # directions of each pair averaged, with a warning that the input was directed
    summed, total = coalesce(edge_index, weight, n, reduce="sum")
    undirected, merged = to_undirected(summed, total, n, reduce="mean")
    with pytest.warns(UserWarning, match="directed"):
        out = conv(x, edge_index, weight)
    assert torch.allclose(out, reference(x, undirected, merged), atol=1e-12)


def test_node_count_must_cover_edge_index():
    edge_index = torch.tensor([[0, 1, 5], [1, 0, 0]])
    conv = LowRankGCNConv(3, 2, k=2)
    with pytest.raises(ValueError, match=r"edge_index entries must lie in \[0, num_nodes\) = \[0, 4\)"):
        conv(torch.randn(4, 3), edge_index)
    assert conv(torch.randn(9, 3), edge_index).shape == (9, 2)  # extra nodes are isolated nodes


# --- per-component deflation in O(n) ------------------------------------------------------------

@pytest.mark.parametrize("add_self_loops", [True, False])
def test_component_deflation_matches_the_dense_basis(add_self_loops):
    edge_index = torch.tensor([[0, 1, 2, 4, 5], [1, 2, 0, 5, 6]])
    weight = torch.tensor([1.0, 0.5, 2.0, 1.5, 0.3], dtype=torch.float64, requires_grad=True)
    n = 10  # nodes 3, 7, 8, 9 isolated
    undirected, merged = to_undirected(edge_index, weight, n)
    op = normalized_adjacency(undirected, merged, n, add_self_loops=add_self_loops)
    deflated = deflate_components(op)
    dense = DeflatedOperator(op, component_eigenvectors(connected_components(op)[1], op.degree),
                             torch.ones(deflated.num_components, dtype=torch.float64))
    assert deflated.num_components == (6 if add_self_loops else 2)
    assert torch.equal(deflated.basis, dense.basis)
    x = torch.randn(n, 3, dtype=torch.float64)
    assert torch.allclose(deflated.project(x), dense.project(x), atol=1e-14)
    assert torch.allclose(deflated.matmul(x[:, 0]), dense.matmul(x[:, 0]), atol=1e-14)
    assert torch.allclose(torch.as_tensor(deflated.to_scipy() @ x.detach().numpy()), dense.to_dense() @ x,
                          atol=1e-14)
    assert torch.allclose(deflated.basis_rayleigh_quotients(), dense.basis_rayleigh_quotients(), atol=1e-14)

    def projector(w):
        u, m = to_undirected(edge_index, w, n)
        return deflate_components(normalized_adjacency(u, m, n, add_self_loops=add_self_loops)).project(x)

    assert torch.autograd.gradcheck(projector, (weight,))


def test_deflation_with_a_million_components_stays_linear():
    # 1,000,000 isolated nodes (plus a triangle): the dense (n, c) basis would hold 1e12 numbers (4 TB)
    n = 1_000_003
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    undirected = to_undirected(edge_index, num_nodes=n)
    deflated = deflate_components(normalized_adjacency(undirected, num_nodes=n))
    assert deflated.num_components == 1_000_001
    x = torch.randn(n, 2)
    projected = deflated.project(x)
    # an isolated node with its self-loop is its own component: v = e_i, so V V^T x = x there
    assert torch.allclose(projected[3:], x[3:])
    assert torch.allclose(projected[:3], x[:3].mean(0).expand(3, 2), atol=1e-6)  # triangle: constant vector
    assert torch.allclose(deflated.matmul(x)[3:], torch.zeros(n - 3, 2))


# --- the sparse-only path -----------------------------------------------------------------------

def check_sparse_layer(monkeypatch, num_nodes, backend, backend_kwargs, isolated):
    edge_index, n = planted_graph(num_nodes, mean_degree=10, isolated=isolated)
    x = torch.randn(n, 4)
    learnable = backend in ("stable", "amortized")  # both differentiate the eigenpairs in the edge weights
    weight = torch.ones(edge_index.shape[1], requires_grad=learnable)
    conv = LowRankGCNConv(4, 3, k=2, backend=backend, backend_kwargs=backend_kwargs)
    forbid_dense(monkeypatch)
    pairs, deflated = conv.eigenpairs(edge_index, weight, n)  # operator + eigen backend, as forward() runs them
    out = conv(x, edge_index, weight, eigenpairs=(pairs, deflated))
    out.square().sum().backward()
    assert out.shape == (n, 3) and torch.isfinite(out).all()
    assert torch.isfinite(conv.lin.weight.grad).all()
    if learnable:
        assert torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0
    assert deflated.num_components > isolated  # each isolated node is a component of its own
    vectors, values = pairs.eigenvectors.detach(), pairs.eigenvalues.detach()
    residual = (deflated.matmul(vectors) - vectors * values).norm(dim=0)
    assert (residual < 1e-3).all(), residual  # eigenpairs of the deflated operator, at ARPACK's tol
    assert (values > 0.5).all()  # the planted blocks' eigenvalues, not the deflated ones (0)


def test_lowrank_gcn_conv_stays_sparse_at_200k_nodes(monkeypatch):
    # A dense float32 operator at this size would be 160 GB; isolated nodes give 20,000 components.
    # The stable backend runs the exact backend's sparse (ARPACK) forward and adds a sparse backward.
    check_sparse_layer(monkeypatch, 180_000, "stable", {"tol": 1e-6, "krylov_dim": 8}, isolated=20_000)


def test_amortized_backend_stays_sparse_at_200k_nodes(monkeypatch):
    # Warm start by one sparse exact solve, then a forward with a block Rayleigh-Ritz refinement,
    # the CholeskyQR of W and the eigen loss: all O(nnz k) or O(n k^2), nothing n x n.
    check_sparse_layer(monkeypatch, 180_000, "amortized", {"init": "exact", "refine": 1}, isolated=20_000)


@pytest.mark.slow
def test_lowrank_gcn_conv_at_2m_nodes(monkeypatch):
    # a dense float32 matrix would take 16 TB
    check_sparse_layer(monkeypatch, 1_900_000, "exact", {"tol": 1e-6}, isolated=100_000)


# --- the synthetic generator and the examples ---------------------------------------------------

def test_chung_lu_graph_has_the_requested_counts_and_a_heavy_tail():
    edge_index = chung_lu_graph(19_717, 44_324, seed=1)
    assert edge_index.shape == (2, 44_324) and edge_index.dtype == torch.long
    assert (edge_index[0] != edge_index[1]).all()
    low, high = edge_index.min(0).values, edge_index.max(0).values
    assert torch.unique(low * 19_717 + high).numel() == 44_324  # each unordered pair once
    degree = torch.bincount(edge_index.flatten(), minlength=19_717).float()
    assert degree.max() > 20 * degree.mean()  # power law: hubs far above the mean
    assert torch.equal(chung_lu_graph(19_717, 44_324, seed=1), edge_index)


def test_chung_lu_graph_with_infinite_exponent_is_uniform():
    """exponent=inf: equal weights, G(n, m): degrees concentrate around the mean (Poisson), no hubs."""
    n, m = 20_000, 100_000
    edge_index = chung_lu_graph(n, m, exponent=float("inf"), seed=1)
    low, high = edge_index.min(0).values, edge_index.max(0).values
    assert torch.unique(low * n + high).numel() == m and (low != high).all()
    degree = torch.bincount(edge_index.flatten(), minlength=n).float()
    assert abs(degree.mean().item() - 10) < 1e-9 and abs(degree.var().item() - 10) < 0.5  # Poisson(10)
    assert degree.max() < 3 * degree.mean()


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_nodes=1, num_edges=1), "num_nodes must be an integer >= 2"),
    (dict(num_nodes=4, num_edges=7), r"num_edges must satisfy 1 <= num_edges <= n \(n - 1\) / 2 = 6"),
    (dict(num_nodes=4, num_edges=2, exponent=1.5), "exponent must be > 2"),
])
def test_chung_lu_graph_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        chung_lu_graph(**kwargs)


def run_example(monkeypatch, name, *argv):
    monkeypatch.setattr(sys, "argv", [name, *argv])
    monkeypatch.syspath_prepend(str(EXAMPLES))  # as `python examples/NAME.py` does, for example_utils
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_arxiv_example_runs_the_pipeline_on_a_synthetic_graph(monkeypatch, capsys):
    run_example(monkeypatch, "ogbn_arxiv.py", "--synthetic", "--synthetic-nodes", "6000", "--synthetic-edges",
                "24000", "--epochs", "1", "--hidden", "8", "--k", "4")
    out = capsys.readouterr().out
    assert "SYNTHETIC ogbn-arxiv-sized graph (Chung-Lu" in out
    assert "SYNTHETIC GCNConv: test accuracy" in out and "SYNTHETIC LowRankGCNConv k=4 (exact)" in out


@pytest.mark.parametrize("name,argv,files", [
    ("ogbn_arxiv.py", [], "edge.csv.gz"),
    ("planetoid.py", ["--dataset", "PubMed"], "ind.pubmed.graph"),
])
def test_examples_offline_exit_with_where_the_files_go(monkeypatch, tmp_path, capsys, name, argv, files):
    pytest.importorskip("ogb")

    def no_network(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr("ogb.nodeproppred.dataset_pyg.download_url", no_network)
    monkeypatch.setattr("ogb.nodeproppred.dataset_pyg.decide_download", lambda url: True)
    monkeypatch.setattr("torch_geometric.datasets.planetoid.fs.cp", no_network)
    with pytest.raises(SystemExit) as exit_info:
        run_example(monkeypatch, name, "--root", str(tmp_path), *argv)
    message = str(exit_info.value.code)
    assert message.startswith("error: could not load") and str(tmp_path) in message and files in message


@pytest.mark.parametrize("seed", ["a", -1, 1.5, True])
def test_chung_lu_graph_refuses_a_seed_that_is_not_a_non_negative_integer(seed):
    with pytest.raises(ValueError, match=rf"seed must be a non-negative integer \(got seed={seed!r}\)"):
        chung_lu_graph(10, 5, seed=seed)
