import warnings
from math import comb

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.utils import to_dense_batch

from lowrank_gnn.eigen import ExactBackend
from lowrank_gnn.nn import SpectralFilterConv
from lowrank_gnn.nn.conv import BernsteinFilter, ChebyshevFilter, MLPFilter
from lowrank_gnn.operators import laplacian, normalized_adjacency
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.transforms import AddEigenpairs

GRAPH = disjoint_union(cycle_graph(5), path_graph(4), complete_graph(3))  # repeated eigenvalues, 3 components
N = GRAPH.num_nodes


def dense_adjacency(graph=GRAPH):
    weight = torch.ones(graph.edge_index.shape[1], dtype=torch.float64)
    return normalized_adjacency(graph.edge_index, weight, graph.num_nodes).to_dense()


def full_eigenpairs(matrix):
    values, vectors = torch.linalg.eigh(matrix)
    return vectors, values


def randomize(conv, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return conv


def test_repr_and_defaults():
    conv = SpectralFilterConv(16, 32)
    assert str(conv) == "SpectralFilterConv(16, 32, filter='chebyshev')"
    assert isinstance(conv.filter, ChebyshevFilter) and conv.filter.channels == 1 and conv.lin_root is not None
    assert str(conv.filter) == "ChebyshevFilter(order=3, interval=(-1.0, 1.0), channels=1)"
    assert SpectralFilterConv(4, 6, filter="mlp", per_channel=True).filter.channels == 6


@pytest.mark.parametrize("family", [ChebyshevFilter, BernsteinFilter, MLPFilter])
def test_filters_start_near_all_pass_and_have_the_right_shape(family):
    response = family(channels=3).double()(torch.linspace(-1, 1, 7, dtype=torch.float64).view(1, 7))
    assert response.shape == (1, 7, 3)
    if family is not MLPFilter:  # the polynomial bases are initialised to exactly g = 1
        assert torch.allclose(response, torch.ones_like(response), atol=1e-12)


def matrix_chebyshev(a, theta):
    t_prev, t_cur = torch.eye(a.shape[0], dtype=a.dtype), a
    out = theta[0] * t_prev + theta[1] * t_cur
    for j in range(2, len(theta)):
        t_prev, t_cur = t_cur, 2 * a @ t_cur - t_prev
        out = out + theta[j] * t_cur
    return out


def matrix_bernstein(a, theta):
    t, identity = (a + torch.eye(a.shape[0], dtype=a.dtype)) / 2, torch.eye(a.shape[0], dtype=a.dtype)
    order = len(theta) - 1
    power = torch.linalg.matrix_power
    return sum(theta[j] * comb(order, j) * power(t, j) @ power(identity - t, order - j)
               for j in range(order + 1))


@pytest.mark.parametrize("family, reference", [("chebyshev", matrix_chebyshev), ("bernstein", matrix_bernstein)])
def test_full_rank_polynomial_filter_equals_the_matrix_polynomial(family, reference):
    torch.manual_seed(0)
    a = dense_adjacency()
    vectors, values = full_eigenpairs(a)  # the filter output is basis-invariant: any eigh basis works
    conv = randomize(SpectralFilterConv(4, 3, filter=family, filter_kwargs={"order": 4}, root_weight=False,
                                        bias=False).double())
    x = torch.randn(N, 4, dtype=torch.float64)
    expected = reference(a, conv.filter.weight[:, 0]) @ x @ conv.lin.weight.T
    assert torch.allclose(conv(x, vectors, values), expected, atol=1e-10)


def test_mlp_filter_equals_the_dense_spectral_reference_on_the_laplacian():
    torch.manual_seed(0)
    lap = laplacian(GRAPH.edge_index, torch.ones(GRAPH.edge_index.shape[1], dtype=torch.float64), N).to_dense()
    values, vectors = torch.linalg.eigh(lap)
    conv = SpectralFilterConv(4, 3, filter="mlp", interval=(0.0, 2.0), bias=False).double()
    x = torch.randn(N, 4, dtype=torch.float64)
    response = conv.filter(values)[:, 0]
    expected = vectors @ torch.diag(response) @ vectors.T @ x @ conv.lin.weight.T + conv.lin_root(x)
    assert torch.allclose(conv(x, vectors, values), expected, atol=1e-10)


def test_deflated_eigenpairs_plus_component_block_equal_the_full_filter():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        data = AddEigenpairs(k=N, deflate_components=True)(Data(edge_index=GRAPH.edge_index, num_nodes=N))
    finally:
        torch.set_default_dtype(previous)
    torch.manual_seed(0)
    conv = randomize(SpectralFilterConv(4, 3, filter_kwargs={"order": 3}, root_weight=False).double())
    x = torch.randn(N, 4, dtype=torch.float64)
    out = conv(x, data.eigvecs, data.eigvals, eig_mask=data.eig_mask,
               component_vector=data.eig_component_vector, component_index=data.eig_component_index)
    expected = matrix_chebyshev(dense_adjacency(), conv.filter.weight[:, 0]) @ x @ conv.lin.weight.T + conv.bias
    assert torch.allclose(out, expected, atol=1e-10)


def test_per_channel_filters_apply_one_response_per_output_channel():
    torch.manual_seed(0)
    vectors, values = full_eigenpairs(dense_adjacency())
    conv = randomize(SpectralFilterConv(4, 2, filter="bernstein", per_channel=True, root_weight=False,
                                        bias=False).double())
    x = torch.randn(N, 4, dtype=torch.float64)
    h = x @ conv.lin.weight.T
    for c in range(2):
        expected = matrix_bernstein(dense_adjacency(), conv.filter.weight[:, c]) @ h[:, c]
        assert torch.allclose(conv(x, vectors, values)[:, c], expected, atol=1e-10)


def small_graphs():
    """Different sizes, one node, no edges, fewer than k nodes, two components."""
    empty = torch.empty(2, 0, dtype=torch.long)
    graphs = [Data(edge_index=cycle_graph(6).edge_index, num_nodes=6), Data(edge_index=empty, num_nodes=1),
              Data(edge_index=path_graph(3).edge_index, num_nodes=3), Data(edge_index=empty, num_nodes=2),
              Data(edge_index=disjoint_union(path_graph(4), complete_graph(3)).edge_index, num_nodes=7)]
    generator = torch.Generator().manual_seed(0)
    for g in graphs:
        g.x = torch.randn(g.num_nodes, 3, generator=generator)
    return graphs


@pytest.mark.parametrize("deflate", [False, True])
@pytest.mark.parametrize("family", ["chebyshev", "mlp"])
def test_batch_equals_each_graph_alone(deflate, family):
    transform = AddEigenpairs(k=4, deflate_components=deflate)
    graphs = [transform(g) for g in small_graphs()]
    batch = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    conv = randomize(SpectralFilterConv(3, 5, filter=family))

    def call(d, batch_vector):
        extra = (d.eig_component_vector, d.eig_component_index) if deflate else (None, None)
        return conv(d.x, d.eigvecs, d.eigvals, batch_vector, d.eig_mask, *extra)

    out = call(batch, batch.batch)
    for b, graph in enumerate(graphs):
        assert torch.allclose(out[batch.batch == b], call(graph, None), atol=1e-5)


def test_ptr_equals_batch_and_describes_empty_graphs():
    transform = AddEigenpairs(k=4)
    graphs = [transform(g) for g in small_graphs()]
    batch = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    conv = randomize(SpectralFilterConv(3, 5))
    out = conv(batch.x, batch.eigvecs, batch.eigvals, batch.batch, batch.eig_mask)
    assert torch.equal(conv(batch.x, batch.eigvecs, batch.eigvals, eig_mask=batch.eig_mask, ptr=batch.ptr), out)
    assert torch.equal(conv(batch.x, batch.eigvecs, batch.eigvals, batch.batch, batch.eig_mask, ptr=batch.ptr), out)
    # an empty graph between the first and the second: one more row of eigenvalues, same node outputs
    ptr = torch.cat([batch.ptr[:2], batch.ptr[1:]])
    eigvals = torch.cat([batch.eigvals[:1], torch.zeros(1, 4), batch.eigvals[1:]])
    eig_mask = torch.cat([batch.eig_mask[:1], torch.zeros(1, 4, dtype=torch.bool), batch.eig_mask[1:]])
    assert torch.allclose(conv(batch.x, batch.eigvecs, eigvals, eig_mask=eig_mask, ptr=ptr), out, atol=1e-6)
    with pytest.raises(ValueError, match="batch and ptr describe different graphs"):
        conv(batch.x, batch.eigvecs, eigvals, batch.batch, eig_mask, ptr=ptr)
    with pytest.raises(ValueError, match="eigvals has 5 rows but ptr describes 6 graph"):
        conv(batch.x, batch.eigvecs, batch.eigvals, eig_mask=batch.eig_mask, ptr=ptr)
    with pytest.raises(ValueError, match="ptr must start at 0"):
        conv(batch.x, batch.eigvecs, batch.eigvals, eig_mask=batch.eig_mask, ptr=batch.ptr[1:])


def test_no_mixing_between_graphs():
    """Changing one graph's features leaves every other graph's output unchanged."""
    graphs = [AddEigenpairs(k=3)(g) for g in small_graphs()]
    batch = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    conv = randomize(SpectralFilterConv(3, 2, root_weight=False))
    before = conv(batch.x, batch.eigvecs, batch.eigvals, batch.batch, batch.eig_mask)
    x = batch.x.clone()
    x[batch.batch == 0] += 10.0
    after = conv(x, batch.eigvecs, batch.eigvals, batch.batch, batch.eig_mask)
    assert torch.equal(after[batch.batch != 0], before[batch.batch != 0])
    assert not torch.allclose(after[batch.batch == 0], before[batch.batch == 0])


def test_gradcheck_in_features_and_filter_weights():
    torch.manual_seed(0)
    vectors, values = full_eigenpairs(dense_adjacency())
    vectors, values = vectors[:, -5:], values[-5:]
    conv = SpectralFilterConv(3, 2, filter="chebyshev").double()
    x = torch.randn(N, 3, dtype=torch.float64, requires_grad=True)

    assert torch.autograd.gradcheck(lambda x: conv(x, vectors, values), (x,))
    theta = torch.randn(4, 1, dtype=torch.float64, requires_grad=True)
    filter_only = ChebyshevFilter(order=3).double()
    assert torch.autograd.gradcheck(
        lambda t: (vectors * torch.func.functional_call(filter_only, {"weight": t}, (values,))[:, 0]) @ vectors.T,
        (theta,))


def test_gradients_reach_edge_weights_through_an_eigen_backend():
    """Eigenpairs from any backend: U g(L) U^T is gauge-invariant, so gradcheck applies (path: simple spectrum)."""
    graph = path_graph(7)
    half = torch.linspace(0.5, 1.5, graph.edge_index.shape[1] // 2, dtype=torch.float64).requires_grad_()
    x = torch.randn(7, 3, dtype=torch.float64)
    conv = randomize(SpectralFilterConv(3, 2, filter="bernstein", root_weight=False).double())
    backend = ExactBackend(k=4)

    def fn(w):
        pairs = backend(normalized_adjacency(graph.edge_index, w.repeat(2), 7))
        return conv(x, pairs.eigenvectors, pairs.eigenvalues)

    assert torch.autograd.gradcheck(fn, (half,))


def test_learns_a_target_filter_on_a_mini_batch():
    """Fit y = U diag(lambda^2) U^T x on three graphs at once: a Chebyshev filter of order 2 can."""
    torch.manual_seed(0)
    graphs = [Data(edge_index=g.edge_index, num_nodes=g.num_nodes, x=torch.randn(g.num_nodes, 1))
              for g in (path_graph(7), cycle_graph(5), disjoint_union(path_graph(3), complete_graph(4)))]
    data = next(iter(DataLoader([AddEigenpairs(k=5)(g) for g in graphs], batch_size=3)))
    basis, mask = to_dense_batch(data.eigvecs, data.batch)
    x, _ = to_dense_batch(data.x, data.batch)
    target = (basis @ (data.eigvals.pow(2).unsqueeze(-1) * (basis.mT @ x)))[mask]
    conv = SpectralFilterConv(1, 1, filter_kwargs={"order": 2}, root_weight=False, bias=False)
    optimizer = torch.optim.Adam(conv.parameters(), lr=0.05)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = F.mse_loss(conv(data.x, data.eigvecs, data.eigvals, data.batch, data.eig_mask), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-2 * losses[0]


VECTORS, VALUES = full_eigenpairs(dense_adjacency().float())


@pytest.mark.parametrize("make_input, error, match", [
    (lambda: dict(x=torch.full((N, 3), float("nan"))), ValueError, "x contains NaN"),
    (lambda: dict(x=torch.randn(N)), ValueError, r"x must have shape \(num_nodes"),
    (lambda: dict(eigvecs=VECTORS[:5]), ValueError, r"eigvecs must have shape \(num_nodes, k\) = \(12, k\)"),
    (lambda: dict(eigvecs=VECTORS.double()), TypeError, "eigvecs has dtype torch.float64"),
    (lambda: dict(eigvals=VALUES[:4]), ValueError, r"eigvals must have shape \(num_graphs, k\) with k=12"),
    (lambda: dict(batch=torch.zeros(N - 1, dtype=torch.long), eigvals=VALUES.view(1, -1)), ValueError,
     r"batch must have one entry per node"),
    (lambda: dict(batch=torch.arange(N).flip(0), eigvals=VALUES.view(1, -1)), ValueError, "batch must be sorted"),
    (lambda: dict(batch=torch.ones(N, dtype=torch.long), eigvals=VALUES.view(1, -1)), ValueError,
     "eigvals has 1 rows but batch describes 2 graph"),
    (lambda: dict(batch=torch.zeros(N, dtype=torch.long), eigvals=VALUES.repeat(2, 1)), ValueError,
     "eigvals has 2 rows but batch describes 1 graph"),
    (lambda: dict(batch=torch.zeros(N), eigvals=VALUES.view(1, -1)), ValueError, "batch must be an integer vector"),
    (lambda: dict(eig_mask=torch.ones(1, 3, dtype=torch.bool)), ValueError, "eig_mask must be a bool tensor"),
    (lambda: dict(component_vector=torch.ones(N)), ValueError, "component_vector and component_index go together"),
    (lambda: dict(component_vector=torch.ones(N), component_index=torch.full((N,), N)), ValueError,
     r"component_index entries must lie in \[0, num_nodes\)"),
    (lambda: dict(component_vector=torch.full((N,), float("nan")), component_index=torch.zeros(N, dtype=torch.long)),
     ValueError, "component_vector contains NaN"),
    (lambda: dict(component_vector=torch.ones(N), component_index=torch.zeros(N)), TypeError,
     "component_index must have an integer dtype"),
    (lambda: dict(component_vector=torch.ones(N), component_index=torch.zeros(N, dtype=torch.bool)), TypeError,
     "component_index must have an integer dtype"),
])
def test_bad_input(make_input, error, match):
    kwargs = dict(x=torch.randn(N, 3), eigvecs=VECTORS, eigvals=VALUES)
    kwargs.update(make_input())
    with pytest.raises(error, match=match):
        SpectralFilterConv(3, 2)(**kwargs)


def test_bad_construction():
    with pytest.raises(ValueError, match="filter must be a SpectralFilter or one of 'chebyshev', 'bernstein', 'mlp'"):
        SpectralFilterConv(3, 2, filter="fourier")
    for interval in ((1.0, -1.0), (0.0, float("inf")), (float("nan"), 1.0), (0.0, True), (0.0,)):
        with pytest.raises(ValueError, match=r"interval must be a pair \(low, high\) of finite numbers"):
            SpectralFilterConv(3, 2, interval=interval)
    with pytest.raises(ValueError, match="order must be a positive integer"):
        SpectralFilterConv(3, 2, filter_kwargs={"order": 0})
    with pytest.raises(ValueError, match="channels=3; a layer with out_channels=2 needs 1 or 2"):
        SpectralFilterConv(3, 2, filter=MLPFilter(channels=3))
    with pytest.raises(ValueError, match="cannot be applied"):
        SpectralFilterConv(3, 2, filter=MLPFilter(), filter_kwargs={"hidden": 4})


def test_a_user_polynomial_basis_plugs_into_the_layer():
    """PolynomialFilter is the extension point: a monomial basis gives g(l) = sum_j theta_j t^j."""
    from lowrank_gnn.nn.conv import PolynomialFilter

    class MonomialFilter(PolynomialFilter):
        def reset_parameters(self):
            with torch.no_grad():
                self.weight.copy_(torch.arange(1.0, self.order + 2).unsqueeze(-1))

        def basis(self, eigenvalues):
            t = self.unit(eigenvalues).unsqueeze(-1)
            return t.pow(torch.arange(self.order + 1, dtype=t.dtype, device=t.device))

    monomial = MonomialFilter(order=2, interval=(0.0, 2.0))
    monomial.reset_parameters()
    values = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    t = values / 2
    assert torch.allclose(monomial.double()(values)[:, 0], 1 + 2 * t + 3 * t ** 2)
    assert "order=2, interval=(0.0, 2.0)" in repr(monomial)
    vectors, eigenvalues = full_eigenpairs(dense_adjacency())
    adjacency_monomial = MonomialFilter(order=2)  # the adjacency's spectrum: the default interval (-1, 1)
    conv = SpectralFilterConv(3, 2, filter=adjacency_monomial, root_weight=False, bias=False).double()
    x = torch.randn(N, 3, dtype=torch.float64)
    expected = vectors @ torch.diag(adjacency_monomial(eigenvalues)[:, 0]) @ vectors.T @ conv.lin(x)
    assert torch.allclose(conv(x, vectors, eigenvalues), expected, atol=1e-10)


def test_compiles_with_fullgraph_on_a_batch_and_equals_eager():
    from torch_geometric.data import Batch, Data

    from lowrank_gnn.transforms import AddEigenpairs

    torch.manual_seed(0)
    transform = AddEigenpairs(k=4)
    graphs = [transform(Data(x=torch.randn(n, 3), edge_index=cycle_graph(n).edge_index, num_nodes=n))
              for n in (3, 7, 9)]
    batch = Batch.from_data_list(graphs)
    conv = SpectralFilterConv(3, 4)
    args = (batch.x, batch.eigvecs, batch.eigvals, batch.batch, batch.eig_mask)
    compiled = torch.compile(conv, fullgraph=True, backend="eager")  # value checks run in eager mode only
    assert torch.allclose(compiled(*args), conv(*args), atol=1e-6)
    with_ptr = dict(x=batch.x, eigvecs=batch.eigvecs, eigvals=batch.eigvals, eig_mask=batch.eig_mask, ptr=batch.ptr)
    assert torch.allclose(compiled(**with_ptr), conv(*args), atol=1e-6)


def test_eigenvalues_beyond_the_interval_are_clamped_with_one_warning_per_layer():
    laplacian_values = 1.0 - VALUES  # the normalized Laplacian's spectrum, in [0, 2]
    conv = SpectralFilterConv(3, 2)
    x = torch.randn(N, 3)
    with pytest.warns(UserWarning, match=r"eigvals lie in \[.*1.229\], beyond the filter's interval=\(-1.0, 1.0\)"):
        conv(x, VECTORS, laplacian_values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conv(x, VECTORS, laplacian_values)                      # once per layer
        SpectralFilterConv(3, 2, interval=(0.0, 2.0))(x, VECTORS, laplacian_values)
        SpectralFilterConv(3, 2)(x, VECTORS, VALUES * (1 + 1e-6))  # rounding beyond an end is no warning
        padded = torch.cat([VALUES, torch.full((1,), 5.0)])          # padding beyond the interval is masked out
        mask = torch.cat([torch.ones(N, dtype=torch.bool), torch.zeros(1, dtype=torch.bool)])
        SpectralFilterConv(3, 2)(x, torch.cat([VECTORS, torch.zeros(N, 1)], 1), padded, eig_mask=mask.view(1, -1))
