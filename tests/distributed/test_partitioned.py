"""One graph split by nodes over 2 gloo processes: results equal the single-process run (float64)."""
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from lowrank_gnn.distributed import (Communicator, DistributedAmortizedBackend, PartitionedLowRankGCNConv, RowPartition,
                                     data_parallel, load_checkpoint, partition_graph, partitioned_deflate_components,
                                     partitioned_normalized_adjacency, save_checkpoint)
from lowrank_gnn.eigen import AmortizedBackend
from lowrank_gnn.nn import LowRankGCNConv
from lowrank_gnn.operators import deflate_components, normalized_adjacency
from lowrank_gnn.testing.distributed import run_distributed

N, K, F_IN, CLASSES, STEPS = 40, 4, 5, 3, 3
UNEVEN = (6, 34)
TOL = 1e-10


def make_graph():
    """A random graph on 34 nodes plus a 4-cycle and 2 isolated nodes (3+ components,
    two of them spanning both ranks under the even split), symmetric edge weights."""
    generator = torch.Generator().manual_seed(0)
    edges = torch.randint(0, 34, (2, 80), generator=generator)
    edges = edges[:, edges[0] != edges[1]]
    cycle = torch.tensor([[34, 35, 36, 37], [35, 36, 37, 34]])
    edge_index = torch.cat([edges, cycle], dim=1)
    low, high = edge_index.min(0).values, edge_index.max(0).values
    weight = 0.5 + ((low * 7 + high * 13) % 10).double() / 10  # a function of the unordered pair
    x = torch.randn(N, F_IN, generator=generator, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (N,), generator=generator)
    return edge_index, weight, x, y


def split(world_size, sizes):
    edge_index, weight, x, y = make_graph()
    membership = None if sizes is None else torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return partition_graph(edge_index, N, num_parts=world_size, membership=membership, edge_weight=weight), x, y


def train_steps(model, conv, x, edge_index, edge_weight, y, num_train, world_size, steps):
    """SGD with momentum on (sum of local cross-entropies / num_train + aux loss); data_parallel sums the
    ranks' gradients. (Adam would amplify rounding differences of near-zero gradient entries by up
    to lr / eps, so it does not reproduce the single-process run to 1e-10, only to ~1e-6.)"""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    outputs, losses = [], []
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(x, edge_index, edge_weight)
        loss = F.cross_entropy(out, y, reduction="sum") / num_train + conv.aux_loss
        loss.backward()
        optimizer.step()
        outputs.append(out.detach())
        losses.append(loss.detach())
    return outputs, losses, optimizer


def partitioned_worker(rank, world_size, sizes, checkpoint_path):
    graph, x, y = split(world_size, sizes)
    edge_index, weight = graph.part(rank)
    x_local, y_local = graph.node_slice(x, rank), graph.node_slice(y, rank)
    comm = Communicator(dist.new_group())  # the operator's own group, apart from DDP's

    # operator rows and gradients of a product to the edge weights and to X
    weight = weight.clone().requires_grad_()
    op = partitioned_normalized_adjacency(edge_index, weight, graph.partition, comm)
    probe = torch.linspace(-1, 1, x_local.numel(), dtype=torch.float64).view_as(x_local)
    x_grad = x_local.clone().requires_grad_()
    (probe * op.matmul(x_grad)).sum().backward()
    symmetric = op.symmetric

    # the same product with the halo exchange: only referenced rows travel
    halo_weight = graph.part(rank)[1].clone().requires_grad_()
    halo_op = partitioned_normalized_adjacency(edge_index, halo_weight, graph.partition, comm, exchange="halo")
    halo_x = x_local.clone().requires_grad_()
    (probe * halo_op.matmul(halo_x)).sum().backward()
    halo = {"weight_grad": halo_weight.grad, "x_grad": halo_x.grad, "halo_size": halo_op.halo_size,
            "bytes": comm.stats.bytes.get("all_to_all", 0)}

    # backend variants: pairs, aux loss and basis gradient
    variants = {}
    deflated = partitioned_deflate_components(partitioned_normalized_adjacency(edge_index, graph.part(rank)[1],
                                                                               graph.partition, comm))
    deflated.frobenius_norm()
    step_bytes = {}
    for which, loss in (("largest", "brockett"), ("magnitude", "convex"), ("smallest", "trace"),
                        ("magnitude", "trace")):
        backend = DistributedAmortizedBackend(K, graph.partition, comm, which=which, loss=loss, seed=3)
        backend.initialize(deflated)
        comm.stats.reset()
        pairs = backend(deflated)
        step_bytes.setdefault("forward", dict(comm.stats.bytes))
        # eigenvalues are replicated: each rank adds 1/world_size of their term (sum over ranks)
        ((pairs.eigenvalues ** 2).sum() / world_size + (probe[:, :K] * pairs.eigenvectors).sum()
         + pairs.aux_loss).backward()
        step_bytes.setdefault("step", dict(comm.stats.bytes))
        variants[(which, loss)] = (pairs.eigenvalues.detach(), pairs.eigenvectors.detach(), pairs.aux_loss.detach(),
                                   backend.basis.weight.grad.clone(), backend.diagnostics.residual)

    # the layer under DDP, a few optimiser steps
    torch.manual_seed(0)
    conv = PartitionedLowRankGCNConv(F_IN, CLASSES, K, graph.partition, comm, backend_kwargs={"seed": 5},
                                     root_weight=True).double()
    model = data_parallel(conv)
    outputs, losses, optimizer = train_steps(model, conv, x_local, edge_index, graph.part(rank)[1], y_local, N,
                                             world_size, STEPS)
    shard = conv.state_dict()
    basis, lin = conv.backend.basis.weight.detach().clone(), conv.lin.weight.detach().clone()
    save_checkpoint(checkpoint_path, model, optimizer, comm, steps=STEPS)
    more, _, _ = train_steps(model, conv, x_local, edge_index, graph.part(rank)[1], y_local, N, world_size, 1)

    # the same training with the operator built once (fixed graph): same outputs, less traffic
    torch.manual_seed(0)
    cached = PartitionedLowRankGCNConv(F_IN, CLASSES, K, graph.partition, comm, backend_kwargs={"seed": 5},
                                       root_weight=True, cache_operator=True).double()
    comm.stats.reset()
    cached_outputs, _, _ = train_steps(data_parallel(cached), cached, x_local, edge_index, graph.part(rank)[1],
                                       y_local, N, world_size, STEPS)
    cached_bytes = comm.stats.total_bytes
    comm.stats.reset()
    torch.manual_seed(0)
    uncached = PartitionedLowRankGCNConv(F_IN, CLASSES, K, graph.partition, comm, backend_kwargs={"seed": 5},
                                         root_weight=True).double()
    train_steps(data_parallel(uncached), uncached, x_local, edge_index, graph.part(rank)[1], y_local, N, world_size,
                STEPS)
    uncached_bytes = comm.stats.total_bytes
    torch.manual_seed(0)
    halo_conv = PartitionedLowRankGCNConv(F_IN, CLASSES, K, graph.partition, comm, backend_kwargs={"seed": 5},
                                          root_weight=True, exchange="halo").double()
    halo["outputs"], _, _ = train_steps(data_parallel(halo_conv), halo_conv, x_local, edge_index, graph.part(rank)[1],
                                        y_local, N, world_size, STEPS)
    return {"dense": op.local_dense().detach(), "weight_grad": weight.grad, "x_grad": x_grad.grad,
            "symmetric": symmetric, "variants": variants, "outputs": outputs, "losses": losses,
            "basis": basis, "lin": lin, "after_resume_step": more[0], "shard": shard, "bytes": step_bytes,
            "cached_outputs": cached_outputs, "cached_bytes": cached_bytes, "uncached_bytes": uncached_bytes,
            "halo": halo, "num_shared": deflated.num_shared}


def single_process_reference(graph, x, y):
    """The same computations in one process with the library's single-process classes."""
    index, weight = graph.edge_index, graph.edge_weight.clone().requires_grad_()
    x, y = x[graph.node_order], y[graph.node_order]
    op = normalized_adjacency(index, weight, N)
    probe_parts = []
    for rank in range(graph.partition.world_size):
        start, stop = graph.partition.range(rank)
        probe_parts.append(torch.linspace(-1, 1, (stop - start) * F_IN, dtype=torch.float64).view(stop - start, F_IN))
    probe = torch.cat(probe_parts)
    x_grad = x.clone().requires_grad_()
    (probe * op.matmul(x_grad)).sum().backward()
    variants = {}
    deflated = deflate_components(normalized_adjacency(index, graph.edge_weight, N))
    for which, loss in (("largest", "brockett"), ("magnitude", "convex"), ("smallest", "trace"),
                        ("magnitude", "trace")):
        backend = AmortizedBackend(K, which=which, loss=loss, seed=3)
        pairs = backend(deflated)
        ((pairs.eigenvalues ** 2).sum() + (probe[:, :K] * pairs.eigenvectors).sum() + pairs.aux_loss).backward()
        variants[(which, loss)] = (pairs.eigenvalues.detach(), pairs.eigenvectors.detach(), pairs.aux_loss.detach(),
                                   backend.basis.weight.grad.clone(), backend.diagnostics.residual)
    torch.manual_seed(0)
    conv = LowRankGCNConv(F_IN, CLASSES, k=K, backend="amortized", backend_kwargs={"seed": 5},
                          root_weight=True).double()
    outputs, losses, optimizer = train_steps(conv, conv, x, index, graph.edge_weight, y, N, 1, STEPS)
    return {"dense": op.to_dense().detach(), "weight_grad": weight.grad, "x_grad": x_grad.grad, "variants": variants,
            "outputs": outputs, "losses": losses, "basis": conv.backend.basis.weight.detach(),
            "lin": conv.lin.weight.detach(), "conv": conv, "optimizer": optimizer, "x": x, "y": y}


def close(a, b, tol=TOL):
    return torch.allclose(a, b, atol=tol, rtol=0)


@pytest.fixture(scope="module", params=[None, UNEVEN], ids=["even", "uneven"])
def runs(request, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt") / "model.pt")
    results = [r.value for r in run_distributed(partitioned_worker, 2, args=(request.param, path), timeout=60)]
    graph, x, y = split(2, request.param)
    return results, single_process_reference(graph, x, y), graph, path


def test_operator_rows_and_gradients_match(runs):
    results, ref, graph, _ = runs
    assert close(torch.cat([r["dense"] for r in results]), ref["dense"])
    assert all(r["symmetric"] for r in results)
    assert close(torch.cat([r["x_grad"] for r in results]), ref["x_grad"])
    # every stored entry's weight gradient: degrees make it depend on all ranks' rows
    assert close(torch.cat([r["weight_grad"] for r in results]), ref["weight_grad"])


@pytest.mark.parametrize("variant", [("largest", "brockett"), ("magnitude", "convex"), ("smallest", "trace"),
                                     ("magnitude", "trace")])
def test_backend_matches_single_process(runs, variant):
    results, ref, _, _ = runs
    values, vectors, aux, grad, residual = ref["variants"][variant]
    for r in results:
        assert close(r["variants"][variant][0], values)
        assert close(r["variants"][variant][4], residual)
    assert close(torch.cat([r["variants"][variant][1] for r in results]), vectors)
    assert close(sum(r["variants"][variant][2] for r in results), aux)       # aux losses add up over ranks
    assert close(torch.cat([r["variants"][variant][3] for r in results]), grad)


def test_layer_training_matches_single_process(runs):
    results, ref, _, _ = runs
    for step in range(STEPS):
        assert close(torch.cat([r["outputs"][step] for r in results]), ref["outputs"][step])
        assert close(sum(r["losses"][step] for r in results), ref["losses"][step])
    assert close(torch.cat([r["basis"] for r in results]), ref["basis"])
    for r in results:  # replicated weights stay identical under DDP
        assert close(r["lin"], ref["lin"])


def test_communication_is_thin(runs):
    """One amortized step sends n x k (the basis), k x k (TSQR) and k-sized numbers, never n x n."""
    results, _, graph, _ = runs
    rows, p, b = max(graph.partition.sizes), 2, 8  # padded block rows, world size, bytes per float64
    ring = 2 * (p - 1) / p
    for r in results:
        forward, step, shared = r["bytes"]["forward"], r["bytes"]["step"], r["num_shared"]
        # all-gathers: the symmetry probes (2 columns), U for A U (k), the R factors (k x k), the sign pivots (k)
        assert forward["all_gather"] == (p - 1) * b * (rows * (2 + K) + K * K + K)
        # all-reduces: NaN checks of A and W (1 + 1), symmetry probe sums (3), eigenvalues, eigen-loss
        # quotients and column maxima (k each), P_0 of the components spanning ranks (shared x k), residual (1)
        assert forward["all_reduce"] == round(ring * b * (2 + 3 + 3 * K + shared * K + 1))
        # backward: reduce-scatters of the gradients of U (rows x k) and of the R factors (k x k),
        # all-reduces of the gradients of the eigenvalues, the quotients (k each) and P_0 (shared x k)
        assert step["reduce_scatter"] == (p - 1) * b * (rows * K + K * K)
        assert step["all_reduce"] - forward["all_reduce"] == round(ring * b * (2 * K + shared * K))


def test_halo_exchange_matches_all_gather(runs):
    results, ref, graph, _ = runs
    assert close(torch.cat([r["halo"]["x_grad"] for r in results]), ref["x_grad"])
    assert close(torch.cat([r["halo"]["weight_grad"] for r in results]), ref["weight_grad"])
    for step in range(STEPS):
        assert close(torch.cat([r["halo"]["outputs"][step] for r in results]), ref["outputs"][step])
    for rank, r in enumerate(results):
        other = graph.partition.sizes[1 - rank]
        assert 0 < r["halo"]["halo_size"] <= other
    # plan: the row count (one int64) and the ids of this rank's halo; forward: the rows the other rank
    # references; backward: the gradients of this rank's halo rows, back to their owner (float64)
    for rank, r in enumerate(results):
        mine, theirs = r["halo"]["halo_size"], results[1 - rank]["halo"]["halo_size"]
        assert r["halo"]["bytes"] == 8 + 8 * mine + 8 * F_IN * (theirs + mine)


def test_cached_operator_gives_the_same_steps_with_less_traffic(runs):
    results, ref, _, _ = runs
    for step in range(STEPS):
        assert close(torch.cat([r["cached_outputs"][step] for r in results]), ref["outputs"][step])
    for r in results:
        assert r["cached_bytes"] < 0.8 * r["uncached_bytes"]


def test_checkpoint_resumes_on_one_process(runs):
    """Saved on rank 0 of 2; resumed by the single-process layer and by the partitioned layer on 1 rank."""
    results, ref, graph, path = runs
    expected = torch.cat([r["after_resume_step"] for r in results])
    x, y, index, weight = ref["x"], ref["y"], graph.edge_index, graph.edge_weight
    torch.manual_seed(1)  # different initial weights: everything must come from the checkpoint
    single = LowRankGCNConv(F_IN, CLASSES, k=K, backend="amortized", backend_kwargs={"seed": 9},
                            root_weight=True).double()
    optimizer = torch.optim.SGD(single.parameters(), lr=0.1, momentum=0.9)
    assert load_checkpoint(path, single, optimizer)["world_size"] == 2
    out, _, _ = train_steps(single, single, x, index, weight, y, N, 1, 1)
    assert close(out[0], expected)

    one_rank = RowPartition.even(N, 1)
    conv = PartitionedLowRankGCNConv(F_IN, CLASSES, K, one_rank, backend_kwargs={"seed": 9}, root_weight=True).double()
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9)
    load_checkpoint(path, conv, optimizer)
    out, _, _ = train_steps(conv, conv, x, index, weight, y, N, 1, 1)
    assert close(out[0], expected)


def test_per_rank_shard_with_other_world_size_is_refused(runs):
    results, _, _, path = runs
    conv = PartitionedLowRankGCNConv(F_IN, CLASSES, K, RowPartition.even(N, 1), root_weight=True).double()
    with pytest.raises(ValueError, match=r"world_size=2 .* world_size=1"):
        conv.load_state_dict(results[0]["shard"])
    other_graph = PartitionedLowRankGCNConv(F_IN, CLASSES, K, RowPartition.even(N + 1, 1), root_weight=True).double()
    with pytest.raises(ValueError, match=f"has {N} rows but this run's partition has num_nodes={N + 1}"):
        load_checkpoint(path, other_graph)
