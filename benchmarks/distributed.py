"""Time per step and bytes communicated: one graph split by nodes over 1 vs 2 processes.

    python benchmarks/distributed.py            # n = 50,000, ~400,000 edges, k = 16 and 64
    python benchmarks/distributed.py --graph geometric   # a graph with locality (halo exchange)
    python benchmarks/distributed.py --quick    # n = 5,000

What is measured (all ranks on this machine, gloo over localhost, 1 torch thread per rank):
a training step of two PartitionedLowRankGCNConv layers (32 -> 16 -> 8 channels, root weight,
per-component deflation) sharing one amortized eigen solve, on a synthetic Chung-Lu graph
(power-law exponent 2.5; --graph geometric: a random geometric graph): forward, backward and an
SGD step, replicated weights summed by data_parallel. The operator is built once
(cache_operator=True, a fixed graph) unless --rebuild-operator is given (a graph that changes
every step). Time per step: median over the timed steps (after 2 untimed ones). Bytes: what the
Communicator counted on each rank per step (bytes *sent* per rank under ring algorithms, see
lowrank_gnn/distributed/comm.py), plus the DDP all-reduce of the replicated weights (computed
from their size, not counted by the wrappers). Rows: 1 process; 2 processes with the all-gather
exchange; 2 with the halo exchange, nodes split in their given order and along SciPy's reverse
Cuthill-McKee order (a cheap locality-preserving partition). On 2 shared cores the point is
correctness and the communication volume, not speed-up.

Projection to ogbn-papers100M sizes (n = 111,059,956 nodes, 1,615,685,872 edges): the bytes per
step measured at 2 ranks for k = 16 and 64 are fitted as a * n * k + b * n (per rank, divided by
the ring factor (P - 1)/P, float32 elements), and the time as bytes / (bandwidth of a pure n x k
all-gather measured here). Output: benchmarks/results/distributed[_geometric|_rebuild].{csv,log,png}
and distributed_projection[...].csv.
"""
import argparse
import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lowrank_gnn.data import chung_lu_graph
from lowrank_gnn.distributed import Communicator, PartitionedLowRankGCNConv, data_parallel, partition_graph
from lowrank_gnn.testing.distributed import run_distributed

RESULTS = Path(__file__).resolve().parent / "results"
PAPERS100M = (111_059_956, 1_615_685_872)


def rcm_membership(edge_index, num_nodes, world_size):
    """Contiguous parts of the reverse Cuthill-McKee order (SciPy): a cheap locality-preserving split."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    index = edge_index.numpy()
    adjacency = sp.csr_matrix((np.ones(index.shape[1]), (index[0], index[1])), shape=(num_nodes, num_nodes))
    order = torch.as_tensor(reverse_cuthill_mckee(adjacency + adjacency.T, symmetric_mode=True).astype(np.int64))
    position = torch.empty_like(order)
    position[order] = torch.arange(num_nodes)
    return position * world_size // num_nodes


def geometric_graph(num_nodes, num_edges, seed=0):
    """Random geometric graph in the unit square (radius for ~2 num_edges / num_nodes neighbours), nodes
    numbered by x coordinate: a graph with locality, like meshes and road networks."""
    import numpy as np
    from scipy.spatial import cKDTree

    points = np.random.default_rng(seed).random((num_nodes, 2))
    points = points[np.argsort(points[:, 0])]
    radius = (2 * num_edges / num_nodes / (np.pi * num_nodes)) ** 0.5
    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
    return torch.as_tensor(pairs.T.astype(np.int64))


class TwoLayers(torch.nn.Module):
    """32 -> 16 -> 8 channels, one eigen solve shared by both layers."""

    def __init__(self, k, partition, comm, cache_operator, exchange):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = PartitionedLowRankGCNConv(32, 16, k, partition, comm, root_weight=True,
                                               cache_operator=cache_operator, exchange=exchange)
        self.conv2 = PartitionedLowRankGCNConv(16, 8, k, partition, comm, root_weight=True)

    def forward(self, x, edge_index):
        pairs = self.conv1.eigenpairs(edge_index, None, x.shape[0])
        h = self.conv1(x, edge_index, eigenpairs=pairs).relu()
        return self.conv2(h, edge_index, eigenpairs=pairs), pairs[0].aux_loss


def worker(rank, world_size, num_nodes, num_edges, k, steps, cache_operator, exchange, order, kind):
    edge_index = (chung_lu_graph if kind == "chung-lu" else geometric_graph)(num_nodes, num_edges, seed=0)
    membership = rcm_membership(edge_index, num_nodes, world_size) if order == "rcm" else None
    graph = partition_graph(edge_index, num_nodes, num_parts=world_size, membership=membership)
    local_edges, _ = graph.part(rank)
    generator = torch.Generator().manual_seed(1)
    x = graph.node_slice(torch.randn(num_nodes, 32, generator=generator), rank)
    y = graph.node_slice(torch.randint(0, 8, (num_nodes,), generator=generator), rank)
    comm = Communicator(dist.new_group() if world_size > 1 else None)
    torch.manual_seed(0)
    net = TwoLayers(k, graph.partition, comm, cache_operator, exchange)
    net.conv1.eigenpairs(local_edges, None, x.shape[0])  # size the basis before wrapping
    model = data_parallel(net) if world_size > 1 else net  # called through DDP: replicated grads summed
    replicated = sum(p.numel() * p.element_size() for name, p in net.named_parameters() if "basis" not in name)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    times, sent = [], []
    for step in range(steps + 2):
        comm.stats.reset()
        start = time.perf_counter()
        optimizer.zero_grad()
        out, aux_loss = model(x, local_edges)
        loss = F.cross_entropy(out, y, reduction="sum") / num_nodes + aux_loss
        loss.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
            sent.append(dict(comm.stats.bytes))
    # bandwidth of the dominant collective alone: an all-gather of the n x k float32 basis
    block = torch.randn(graph.partition.sizes[rank], k)
    comm.stats.reset()
    start = time.perf_counter()
    for _ in range(5):
        comm.all_gather_rows(block, graph.partition.sizes)
    gather_seconds = (time.perf_counter() - start) / 5
    gather_bytes = comm.stats.total_bytes / 5
    ddp_bytes = 2 * (world_size - 1) / world_size * replicated
    operator = net.conv1._operator(local_edges, None, x.shape[0]).base
    halo = operator.halo_size if exchange == "halo" else num_nodes - x.shape[0]
    return {"seconds": statistics.median(times), "bytes": {key: statistics.median(s.get(key, 0) for s in sent)
                                                          for key in sent[0]},
            "ddp_bytes": ddp_bytes, "gather_seconds": gather_seconds, "gather_bytes": gather_bytes,
            "stored_edges": local_edges.shape[1], "halo_fraction": halo / num_nodes}


def main():
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--edges", type=int, default=400_000)
    parser.add_argument("--k", type=int, nargs=2, default=[16, 64], help="two ranks for the fit a*n*k + b*n")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rebuild-operator", action="store_true",
                        help="rebuild the partitioned operator every step (a graph that changes) instead of caching it")
    parser.add_argument("--graph", choices=["chung-lu", "geometric"], default="chung-lu",
                        help="power-law random graph (no locality) or random geometric graph (locality)")
    parser.add_argument("--quick", action="store_true", help="n = 5,000, 40,000 edges, 5 steps")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.edges, args.steps = 5_000, 40_000, 5
    print(f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, gloo on localhost, "
          f"1 thread per rank; {args.graph} graph n={args.nodes}, {args.edges} edges; {args.steps} timed steps; "
          f"operator {'rebuilt every step' if args.rebuild_operator else 'built once (cache_operator=True)'}")
    rows = []
    configs = [(1, "allgather", "given"), (2, "allgather", "given"), (2, "halo", "given"), (2, "halo", "rcm")]
    for k in args.k:
        for world_size, exchange, order in configs:
            results = [r.value for r in run_distributed(worker, world_size, timeout=1800, collective_timeout=600,
                                                        args=(args.nodes, args.edges, k, args.steps,
                                                              not args.rebuild_operator, exchange, order,
                                                              args.graph))]
            seconds = max(r["seconds"] for r in results)
            per_rank = max(sum(r["bytes"].values()) for r in results)
            row = {"k": k, "world_size": world_size, "exchange": exchange, "partition": order,
                   "ms_per_step": 1e3 * seconds, "operator_MB_per_rank": per_rank / 1e6,
                   "all_gather_MB": max(r["bytes"].get("all_gather", 0) for r in results) / 1e6,
                   "reduce_scatter_MB": max(r["bytes"].get("reduce_scatter", 0) for r in results) / 1e6,
                   "all_to_all_MB": max(r["bytes"].get("all_to_all", 0) for r in results) / 1e6,
                   "all_reduce_MB": max(r["bytes"].get("all_reduce", 0) for r in results) / 1e6,
                   "ddp_MB": results[0]["ddp_bytes"] / 1e6,
                   "halo_fraction": max(r["halo_fraction"] for r in results) if world_size > 1 else 0.0,
                   "gather_GBps": (results[0]["gather_bytes"] / results[0]["gather_seconds"] / 1e9
                                   if world_size > 1 else float("nan")),
                   "max_stored_edges": max(r["stored_edges"] for r in results)}
            rows.append(row)
            print(f"k={k:3d} P={world_size} {exchange:9s} {order:5s}: {row['ms_per_step']:8.1f} ms/step, operator "
                  f"collectives {row['operator_MB_per_rank']:.2f} MB/rank/step (all-gather {row['all_gather_MB']:.2f},"
                  f" reduce-scatter {row['reduce_scatter_MB']:.2f}, all-to-all {row['all_to_all_MB']:.2f}, "
                  f"all-reduce {row['all_reduce_MB']:.2f}), DDP {row['ddp_MB']:.3f} MB, stored edges/rank "
                  f"{row['max_stored_edges']}, halo {100 * row['halo_fraction']:.0f}% of n")
    # fit bytes/rank/step at P = 2 as (a n k + b n) * (P - 1) / P with float32 elements
    two = [r for r in rows if r["world_size"] == 2 and r["exchange"] == "allgather"]
    ring = 1 / 2
    (k1, y1), (k2, y2) = [(r["k"], r["operator_MB_per_rank"] * 1e6 / ring / args.nodes / 4) for r in two]
    a = (y2 - y1) / (k2 - k1)          # n x k exchanges per step
    b = y1 - a * k1                    # n-sized exchanges per step (degrees, component labels, probes)
    suffix = ("_rebuild" if args.rebuild_operator else "") + ("_geometric" if args.graph == "geometric" else "")
    bandwidth = statistics.mean(r["gather_GBps"] for r in two) * 1e9
    print(f"\nfit: bytes/rank/step = 4 * (P-1)/P * n * ({a:.2f} k + {b:.2f}); measured all-gather bandwidth "
          f"{bandwidth / 1e9:.2f} GB/s per rank (localhost)")
    print("\n| k | P | exchange | partition | rows received (% of n) | ms / step | operator MB sent / rank / step | "
          "all-gather / reduce-scatter / all-to-all / all-reduce MB | DDP weights MB | time / (P=1) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        base = next(r for r in rows if r["k"] == row["k"] and r["world_size"] == 1)
        print(f"| {row['k']} | {row['world_size']} | {row['exchange']} | {row['partition']} | "
              f"{100 * row['halo_fraction']:.0f} | {row['ms_per_step']:.1f} | {row['operator_MB_per_rank']:.2f} | "
              f"{row['all_gather_MB']:.2f} / {row['reduce_scatter_MB']:.2f} / {row['all_to_all_MB']:.2f} / "
              f"{row['all_reduce_MB']:.2f} | {row['ddp_MB']:.3f} | {row['ms_per_step'] / base['ms_per_step']:.2f} |")
    n, edges = PAPERS100M
    print(f"\nProjection, ogbn-papers100M size (n={n:,}, {edges:,} edges), float32, all-gather exchange, from "
          f"the fit above (the halo exchange sends the halo fraction of it, which depends on the partition):")
    print("| k | P | GB sent / rank / step | s / step at the measured bandwidth | local CSR entries / rank |")
    print("|---|---|---|---|---|")
    projection = []
    for k in (16, 64):
        for world_size in (8, 64):
            volume = 4 * (world_size - 1) / world_size * n * (a * k + b)
            entry = {"k": k, "world_size": world_size, "GB_per_rank_step": volume / 1e9,
                     "seconds": volume / bandwidth, "entries_per_rank": (2 * edges + n) / world_size}
            projection.append(entry)
            print(f"| {k} | {world_size} | {entry['GB_per_rank_step']:.1f} | {entry['seconds']:.1f} | "
                  f"{entry['entries_per_rank']:.2e} |")
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"distributed{suffix}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(RESULTS / f"distributed_projection{suffix}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(projection[0]) + ["a_nk", "b_n", "bandwidth_GBps"])
        writer.writeheader()
        for entry in projection:
            writer.writerow({**entry, "a_nk": a, "b_n": b, "bandwidth_GBps": bandwidth / 1e9})
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for k in args.k:
            mine = [r for r in rows if r["k"] == k and r["exchange"] == "allgather"]
            axes[0].plot([r["world_size"] for r in mine], [r["ms_per_step"] for r in mine], "o-", label=f"k={k}")
            axes[1].bar([f"k={k}"], [next(r for r in mine if r["world_size"] == 2)["operator_MB_per_rank"]])
        axes[0].set(xlabel="processes", ylabel="ms / step", xticks=[1, 2], title="time per step")
        axes[0].legend()
        axes[1].set(ylabel="MB sent / rank / step", title="communication at P = 2")
        figure.tight_layout()
        figure.savefig(RESULTS / f"distributed{suffix}.png", dpi=120)
    except ImportError:
        print("matplotlib not installed: no PNG")


if __name__ == "__main__":
    main()
