import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from lowrank_gnn.eigen import AmortizedBackend, ExactBackend, canonical_signs
from lowrank_gnn.operators import laplacian, normalized_adjacency
from lowrank_gnn.testing import assert_eigenpairs_close, complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.eigen import EigenPairs
from lowrank_gnn.transforms import AddEigenpairs, LaplacianEigenvectorPE


def graph_data(graph, **extra):
    return Data(edge_index=graph.edge_index, num_nodes=graph.num_nodes, **extra)


@pytest.mark.parametrize("operator, which", [("normalized_adjacency", "largest"), ("laplacian", "smallest"),
                                             ("normalized_adjacency", "magnitude")])
def test_eigenpairs_match_a_dense_reference(operator, which, float64_default):
    graph = path_graph(9)  # simple spectrum
    data = AddEigenpairs(k=4, operator=operator, which=which)(graph_data(graph))
    build = normalized_adjacency if operator == "normalized_adjacency" else laplacian
    dense = build(graph.edge_index, num_nodes=graph.num_nodes).to_dense().double()
    assert data.eigvals.shape == (1, 4) and data.eigvecs.shape == (9, 4) and bool(data.eig_mask.all())
    assert_eigenpairs_close(EigenPairs(data.eigvals[0], data.eigvecs), dense, 4, which)


def test_default_which_follows_the_operator():
    assert AddEigenpairs(3).which == "largest"
    assert AddEigenpairs(3, operator="laplacian").which == "smallest"
    assert str(AddEigenpairs(3, deflate_components=True)) == \
        "AddEigenpairs(k=3, operator='normalized_adjacency', which='largest', deflate_components=True)"


def test_deterministic_with_canonical_signs():
    graph = disjoint_union(cycle_graph(6), path_graph(5))  # repeated eigenvalues and two components
    transform = AddEigenpairs(k=6)
    first, second = transform(graph_data(graph)), transform(graph_data(graph))
    assert torch.equal(first.eigvecs, second.eigvecs) and torch.equal(first.eigvals, second.eigvals)
    assert torch.equal(canonical_signs(first.eigvecs), first.eigvecs)


def test_deflation_stores_the_component_block_exactly(float64_default):
    graph = disjoint_union(cycle_graph(5), path_graph(4), complete_graph(3))
    n, components = graph.num_nodes, 3
    data = AddEigenpairs(k=n, deflate_components=True)(graph_data(graph))
    # n - 3 informative pairs, the rest padded
    assert data.eig_mask.sum() == n - components and not data.eig_mask[0, n - components:].any()
    assert torch.equal(data.eigvecs[:, n - components:], torch.zeros(n, components))
    assert data.eig_component_index.tolist() == [0] * 5 + [5] * 4 + [9] * 3
    vector, index = data.eig_component_vector, data.eig_component_index
    block = (vector[:, None] * vector[None, :]) * (index[:, None] == index[None, :])
    op = normalized_adjacency(graph.edge_index, num_nodes=n)
    rebuilt = data.eigvecs @ torch.diag(data.eigvals[0]) @ data.eigvecs.T + block
    assert torch.allclose(rebuilt, op.to_dense().double(), atol=1e-12)
    # none of the returned pairs is a (spurious) deflated direction
    assert (data.eigvals[0, : n - components] > -1.0 - 1e-12).all()


def test_deflation_with_many_components_never_builds_the_dense_component_basis(monkeypatch):
    """A path plus 20,000 isolated nodes (each its own component): the (n, c) basis would be
    n * c = 4e8 numbers; the O(n) deflated operator is used instead (densifying it is patched to fail)."""
    from lowrank_gnn.operators import ComponentDeflatedOperator

    def refuse(self):
        raise AssertionError("the dense (n, c) component basis was built")
    monkeypatch.setattr(ComponentDeflatedOperator, "basis", property(refuse))
    isolated = 20_000
    graph = path_graph(6)
    data = AddEigenpairs(k=2, deflate_components=True)(Data(edge_index=graph.edge_index, num_nodes=6 + isolated))
    assert data.eig_component_vector.shape == (6 + isolated,)
    assert torch.allclose(data.eig_component_vector[6:], torch.ones(isolated))  # self-loop: v = e_i
    assert data.eig_component_index[6:].tolist() == list(range(6, 6 + isolated))
    path = normalized_adjacency(graph.edge_index, num_nodes=6).to_dense().double()
    expected = torch.linalg.eigvalsh(path).flip(0)[1:3]  # below the path's own eigenvalue 1
    assert torch.allclose(data.eigvals[0].double(), expected, atol=1e-5)
    assert data.eigvecs[6:].abs().max() < 1e-6


def test_small_graphs_are_padded_and_masked():
    single = Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=1)
    data = AddEigenpairs(k=4)(single)
    assert data.eig_mask.tolist() == [[True, False, False, False]]
    assert torch.allclose(data.eigvals, torch.tensor([[1.0, 0, 0, 0]]))
    assert torch.allclose(data.eigvecs.abs().sum(), torch.tensor(1.0))
    deflated = AddEigenpairs(k=4, deflate_components=True)(single.clone())
    assert not deflated.eig_mask.any() and torch.allclose(deflated.eig_component_vector, torch.ones(1))
    empty_edges = torch.empty(2, 0, dtype=torch.long)
    no_edges = AddEigenpairs(k=2, operator="laplacian")(Data(edge_index=empty_edges, num_nodes=3))
    assert no_edges.eigvecs.shape == (3, 2) and no_edges.eig_mask.all()


def test_collation_keeps_each_graphs_eigenpairs_together():
    single_node = Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=1)
    graphs = [graph_data(path_graph(3)), graph_data(cycle_graph(6)), graph_data(complete_graph(2)), single_node]
    transform = AddEigenpairs(k=4, deflate_components=True)
    singles = [transform(g.clone()) for g in graphs]
    batch = next(iter(DataLoader([transform(g.clone()) for g in graphs], batch_size=len(graphs))))
    assert batch.eigvecs.shape == (12, 4) and batch.eigvals.shape == (4, 4)
    for b, single in enumerate(singles):
        nodes = batch.batch == b
        assert torch.equal(batch.eigvecs[nodes], single.eigvecs)
        assert torch.equal(batch.eigvals[b], single.eigvals[0]) and torch.equal(batch.eig_mask[b], single.eig_mask[0])
        assert torch.equal(batch.eig_component_index[nodes], single.eig_component_index + int(batch.ptr[b]))
    assert batch.eig_mask.sum(1).tolist() == [2, 4, 1, 0]


def test_uses_edge_weight_and_accepts_a_matching_backend_instance():
    graph = path_graph(6)
    weight = torch.linspace(0.5, 2.0, graph.edge_index.shape[1] // 2).repeat(2)
    weighted = AddEigenpairs(k=2, backend=ExactBackend(k=2))(graph_data(graph, edge_weight=weight))
    plain = AddEigenpairs(k=2)(graph_data(graph))
    assert not torch.allclose(weighted.eigvals, plain.eigvals)
    expected = torch.linalg.eigvalsh(normalized_adjacency(graph.edge_index, weight.double()).to_dense())
    assert torch.allclose(weighted.eigvals[0].double(), expected.flip(0)[:2], atol=1e-6)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(k=0), ValueError, "k must be a positive integer"),
    (dict(k=2, operator="adjacency"), ValueError, "operator must be one of 'normalized_adjacency', 'laplacian'"),
    (dict(k=2, which="top"), ValueError, "which must be one of"),
    (dict(k=2, operator="laplacian", deflate_components=True), ValueError, "needs operator='normalized_adjacency'"),
    (dict(k=2, which="magnitude", deflate_components=True), ValueError, "which='largest' or 'smallest'"),
    (dict(k=2, backend="eig"), ValueError, "backend must be an EigenBackend or one of"),
    (dict(k=2, backend=ExactBackend(k=3)), ValueError, "instance has k=3"),
    (dict(k=2, backend=ExactBackend(k=2), backend_kwargs={"method": "dense"}), ValueError, "cannot be applied"),
])
def test_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        AddEigenpairs(**kwargs)


def test_backends_that_do_not_solve_the_eigenproblem_are_refused():
    """The amortized backend returns its trained basis: on a graph solved once, its random start."""
    match = r"backend AmortizedBackend does not solve the eigenproblem.*'exact', 'stable' or 'batched_dc'"
    for make in (lambda: AddEigenpairs(k=3, operator="laplacian", backend="amortized"),
                 lambda: AddEigenpairs(k=3, backend=AmortizedBackend(k=3)),
                 lambda: LaplacianEigenvectorPE(k=2, backend="amortized")):
        with pytest.raises(ValueError, match=match):
            make()
    for backend in ("exact", "stable", "batched_dc"):
        out = AddEigenpairs(k=3, operator="laplacian", backend=backend)(graph_data(path_graph(30)))
        dense = laplacian(path_graph(30).edge_index, num_nodes=30).to_dense().double()
        assert torch.allclose(out.eigvals[0].double(), torch.linalg.eigvalsh(dense)[:3], atol=1e-5)


def test_rejects_bad_graphs():
    with pytest.raises(ValueError, match="pass the backend by name"):
        AddEigenpairs(k=3, backend=ExactBackend(k=3))(graph_data(path_graph(2)))
    with pytest.raises(ValueError, match="needs data.edge_index"):
        AddEigenpairs(k=2)(Data(num_nodes=3))
    with pytest.raises(ValueError, match=r"shape \(2, num_edges\)"):
        AddEigenpairs(k=2)(Data(edge_index=torch.tensor([0, 1]), num_nodes=2))
    weight = torch.ones(path_graph(4).edge_index.shape[1])
    weight[0] = float("nan")
    with pytest.raises(ValueError, match="edge_weight contains NaN"):
        AddEigenpairs(k=2)(graph_data(path_graph(4), edge_weight=weight))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_edge_weights_are_refused(dtype):
    weight = torch.ones(path_graph(4).edge_index.shape[1], dtype=dtype)
    match = rf"graph 0: data.edge_weight has dtype {dtype}.*pass data.edge_weight.float\(\)"
    with pytest.raises(TypeError, match=match):
        AddEigenpairs(k=2)(graph_data(path_graph(4), edge_weight=weight))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_default_dtype_is_refused(dtype, tmp_path):
    """The results are stored in the default dtype, which must be float32 or float64."""
    from lowrank_gnn.transforms import precompute_eigenpairs

    graphs = [graph_data(path_graph(5)), graph_data(cycle_graph(6))]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        match = rf"torch.get_default_dtype\(\) is {dtype}.*torch.set_default_dtype\(torch.float32\)"
        for run in (lambda: AddEigenpairs(k=2)(graphs[0].clone()),
                    lambda: LaplacianEigenvectorPE(k=2)(graphs[0].clone()),
                    lambda: precompute_eigenpairs(graphs, AddEigenpairs(k=2), cache_dir=tmp_path)):
            with pytest.raises(TypeError, match=match):
                run()
    finally:
        torch.set_default_dtype(previous)
    assert list(tmp_path.iterdir()) == []


def test_an_edge_index_of_another_dtype_is_named_in_the_message():
    with pytest.raises(TypeError, match=r"^graph 0: data.edge_index must have an integer dtype.*convert them with "
                                        r"data.edge_index.long\(\) after"):
        AddEigenpairs(k=2)(Data(edge_index=path_graph(4).edge_index.float(), num_nodes=4))
