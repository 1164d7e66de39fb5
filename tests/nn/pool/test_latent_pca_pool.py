import pytest
import torch
from torch_geometric.nn import global_mean_pool

from lowrank_gnn.eigen import AmortizedBackend, EigenPairs, ExactBackend
from lowrank_gnn.nn import LatentPCAPool, total_aux_loss

SIZES = [7, 1, 4, 12]  # includes a one-node graph and a graph with fewer nodes than d


def embeddings(d=5, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(SIZES), d, generator=generator, dtype=dtype)
    batch = torch.repeat_interleave(torch.arange(len(SIZES)), torch.tensor(SIZES))
    return x, batch


def reference(x, k):
    """The documented representation from a float64 eigh of the plain covariance (no ridge)."""
    x = x.double()
    mean = x.mean(0)
    centered = x - mean
    cov = centered.T @ centered / x.shape[0]
    _, vectors = torch.linalg.eigh(cov)
    axes = vectors.flip(-1)[:, :k]
    spread = (centered @ axes).pow(2).mean(0)
    return torch.cat([mean, (spread[:, None] * axes.abs().T).flatten()])


class FlippingBackend(ExactBackend):
    """Exact eigenpairs with every other eigenvector negated (a valid, non-canonical sign choice)."""

    def solve(self, op):
        pairs = super().solve(op)
        signs = torch.tensor([(-1.0) ** j for j in range(self.k)], dtype=pairs.eigenvectors.dtype)
        return EigenPairs(pairs.eigenvalues, pairs.eigenvectors * signs)


class LossyBackend(ExactBackend):
    def solve(self, op):
        pairs = super().solve(op)
        return EigenPairs(pairs.eigenvalues, pairs.eigenvectors, aux_loss=pairs.eigenvalues.sum())


def test_repr_shapes_and_defaults():
    pool = LatentPCAPool(5, k=2)
    assert str(pool) == "LatentPCAPool(5, k=2, backend=ExactBackend)" and pool.out_channels == 15
    x, batch = embeddings()
    assert pool(x, batch).shape == (4, 15)
    assert pool.aux_loss is None


def test_matches_the_documented_representation_per_graph():
    x, batch = embeddings()
    out = LatentPCAPool(5, k=2)(x, batch)
    assert torch.allclose(out[:, :5], global_mean_pool(x, batch), atol=1e-12)
    for b in (0, 3):  # graphs with a simple covariance spectrum
        # the ridge moves the axes by ~1e-4 of the mean variance over the gap
        assert torch.allclose(out[b], reference(x[batch == b], 2), atol=1e-3)


def test_batch_equals_each_graph_alone():
    x, batch = embeddings()
    pool = LatentPCAPool(5, k=3)
    out = pool(x, batch)
    for b in range(len(SIZES)):
        assert torch.allclose(out[b], pool(x[batch == b])[0], atol=1e-10)


def test_invariant_to_node_order_within_each_graph():
    x, batch = embeddings()
    pool = LatentPCAPool(5, k=2)
    generator = torch.Generator().manual_seed(1)
    perm = torch.cat([torch.nonzero(batch == b).view(-1)[torch.randperm(s, generator=generator)]
                      for b, s in enumerate(SIZES)])
    assert torch.allclose(pool(x[perm], batch), pool(x, batch), atol=1e-10)


def test_invariant_to_eigenvector_signs():
    x, batch = embeddings()
    flipped = LatentPCAPool(5, k=3, backend=FlippingBackend(k=3))
    assert torch.allclose(flipped(x, batch), LatentPCAPool(5, k=3)(x, batch), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_degenerate_graphs_give_finite_values_and_gradients(dtype):
    """One node, or identical embeddings: zero covariance, every eigenvalue tied."""
    x = torch.cat([torch.randn(1, 4), torch.ones(3, 4), torch.randn(5, 4)]).to(dtype).requires_grad_()
    batch = torch.tensor([0] + [1] * 3 + [2] * 5)
    out = LatentPCAPool(4, k=2)(x, batch)
    out.pow(2).sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.allclose(out[:2, 4:], torch.zeros(2, 8, dtype=dtype))  # no spread in a degenerate graph


def test_rank_deficient_graphs_train_without_exploding_gradients():
    """Graphs with fewer nodes than k + 1 (rank < k): the axes without variance get no large gradient."""
    torch.manual_seed(0)
    x = torch.randn(2 + 3 + 8, 16, requires_grad=True)
    batch = torch.tensor([0] * 2 + [1] * 3 + [2] * 8)
    out = LatentPCAPool(16, k=4)(x, batch)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().max() < 1e2 * (1 + out.detach().abs().max())


def test_gradcheck():
    x, batch = embeddings(d=4)
    x = x.requires_grad_()
    pool = LatentPCAPool(4, k=2)
    assert torch.autograd.gradcheck(lambda x: pool(x, batch), (x,))


def test_empty_graph_slot_and_size():
    x, batch = embeddings()
    out = LatentPCAPool(5, k=2)(x, batch, size=6)
    assert out.shape == (6, 15) and torch.equal(out[4:], torch.zeros(2, 15, dtype=out.dtype))


def test_backend_aux_loss_is_exposed():
    x, batch = embeddings()
    pool = LatentPCAPool(5, k=2, backend=LossyBackend(k=2))
    model = torch.nn.ModuleList([pool])
    pool(x, batch)
    assert pool.aux_loss is not None and torch.equal(total_aux_loss(model), pool.aux_loss)
    pool.reset_parameters()
    assert pool.aux_loss is None


@pytest.mark.parametrize("backend", ["amortized", AmortizedBackend(k=2)])
def test_a_backend_with_state_across_batches_is_refused(backend):
    with pytest.raises(ValueError, match=r"learns state across calls .*graph b of one batch is unrelated to graph b "
                                         r"of the next.*use backend='exact', 'stable' or 'batched_dc'"):
        LatentPCAPool(5, k=2, backend=backend)


@pytest.mark.parametrize("backend", ["stable", "batched_dc"])
def test_the_other_batched_backends_match_exact_on_batches_of_any_size(backend):
    pool, exact = LatentPCAPool(5, k=2, backend=backend), LatentPCAPool(5, k=2)
    for graphs in (len(SIZES), 2):   # a smaller last batch, as a DataLoader gives
        x, batch = embeddings()
        keep = batch < graphs
        assert torch.allclose(pool(x[keep], batch[keep]), exact(x[keep], batch[keep]), atol=1e-10)


def test_backend_by_name_and_instance_checks():
    assert LatentPCAPool(5, k=2, backend="exact", backend_kwargs={"method": "dense"}).backend.method == "dense"
    with pytest.raises(ValueError, match="the layer needs k=2, which='largest'"):
        LatentPCAPool(5, k=2, backend=ExactBackend(k=2, which="smallest"))
    with pytest.raises(ValueError, match="backend must be an EigenBackend or one of"):
        LatentPCAPool(5, k=2, backend="pca")
    with pytest.raises(ValueError, match=r"k must satisfy 1 <= k <= in_channels=5 \(got k=6\)"):
        LatentPCAPool(5, k=6)


@pytest.mark.parametrize("make_input, error, match", [
    (lambda x, b: (torch.full_like(x, float("nan")), b), ValueError, "x contains NaN"),
    (lambda x, b: (x[:, :4], b), ValueError, r"x must have shape \(num_nodes, in_channels\) = \(N, 5\)"),
    (lambda x, b: (x.long(), b), TypeError, "floating-point"),
    (lambda x, b: (x, b[:-1]), ValueError, "batch must have one entry per node"),
    (lambda x, b: (x, b.flip(0)), ValueError, "batch must be sorted"),
])
def test_bad_input(make_input, error, match):
    x, batch = embeddings()
    with pytest.raises(error, match=match):
        LatentPCAPool(5, k=2)(*make_input(x, batch))


def test_size_smaller_than_the_batch_is_rejected():
    x, batch = embeddings()
    with pytest.raises(ValueError, match=r"batch refers to graph 3 but only 2 graphs"):
        LatentPCAPool(5, k=2)(x, batch, size=2)
