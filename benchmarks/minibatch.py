"""Training step on mini-batches of graphs: LowRankGCNConv (per-graph eigenpairs) against GCNConv, same run.

For each dataset (TU MUTAG / PROTEINS / ENZYMES) and batch size, three graph classifiers with
the same architecture (conv -> ReLU -> conv -> global mean pool -> linear) train on the same
batches: one with ``GCNConv``; one with ``LowRankGCNConv(k=16)`` called with ``batch=``, each
layer solving the batch itself (every graph its own ``min(16, n_g)`` eigenpairs, one batched
solve per size class); one with the same layers sharing one solve per batch
(``conv1.eigenpairs(..., batch=)`` passed to both layers as ``eigenpairs=``). Their steps
(forward, backward, Adam) are interleaved batch by batch, in rotating order, so machine load
hits all alike, in one thread. Beside them, the raw solves of the padded operators of the same
batch (no autograd) are timed: ``torch.linalg.eigh`` (all pairs) and ``eigh_extremal`` (the ``k``
wanted pairs, as the layer solves them when no gradient flows into the eigenpairs), the bounds
the eigendecomposition sets. The script prints the median times and their ratios to ``GCNConv``, and writes
``benchmarks/results/minibatch.md`` and ``.csv``.

Example::

    python benchmarks/minibatch.py --steps 30
    python benchmarks/minibatch.py --steps 30 --clock cpu --suffix _cpu
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GCNConv, global_mean_pool

from lowrank_gnn.data import load_tu
from lowrank_gnn.linalg import eigh_extremal
from lowrank_gnn.nn import LowRankGCNConv

RESULTS = Path(__file__).resolve().parent / "results"

#: ``wall``: elapsed time; ``cpu``: the calling thread's CPU time (one thread does all the work
#: here), which leaves out the time the thread waits for a core on a machine shared with other jobs.
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
CLOCK = "wall"


class Classifier(torch.nn.Module):
    """conv -> ReLU -> conv -> ReLU -> mean pool -> linear; ``shared``: one batched solve for both layers."""

    def __init__(self, conv, in_channels: int, hidden: int, classes: int, shared: bool = False) -> None:
        super().__init__()
        self.low_rank, self.shared = conv is LowRankGCNConv, shared
        self.conv1, self.conv2 = conv(in_channels, hidden), conv(hidden, hidden)
        self.head = torch.nn.Linear(hidden, classes)

    def forward(self, data):
        extra = {"batch": data.batch} if self.low_rank else {}
        if self.shared:
            extra["eigenpairs"] = self.conv1.eigenpairs(data.edge_index, None, data.num_nodes, data.x.dtype,
                                                        batch=data.batch)
        h = self.conv1(data.x, data.edge_index, **extra).relu()
        h = self.conv2(h, data.edge_index, **extra).relu()
        return self.head(global_mean_pool(h, data.batch))


def solve_only(conv: LowRankGCNConv, data) -> tuple:
    """The raw solves of the padded operators the layer solves for this batch (no autograd, no checks):
    ``torch.linalg.eigh`` (all pairs) and ``eigh_extremal`` (the ``k`` wanted pairs, as the layer solves them)."""
    with torch.no_grad():
        spectrum = conv.eigenpairs(data.edge_index, None, data.num_nodes, data.x.dtype, batch=data.batch)
        matrices = [size_class.operator for size_class in spectrum.classes if size_class.pairs is not None]
        start = CLOCKS[CLOCK]()
        for matrix in matrices:
            torch.linalg.eigh(matrix)
        middle = CLOCKS[CLOCK]()
        for matrix in matrices:
            eigh_extremal(matrix, conv.k, "largest")
        return middle - start, CLOCKS[CLOCK]() - middle


def step(model, optimizer, data) -> float:
    start = CLOCKS[CLOCK]()
    optimizer.zero_grad()
    F.cross_entropy(model(data), data.y).backward()
    optimizer.step()
    return CLOCKS[CLOCK]() - start


def run(name: str, batch_size: int, steps: int, hidden: int) -> dict:
    dataset = load_tu(name)
    torch.manual_seed(0)
    models = {label: Classifier(conv, dataset.num_features, hidden, dataset.num_classes, shared=shared)
              for label, conv, shared in (("gcn", GCNConv, False), ("lowrank", LowRankGCNConv, False),
                                          ("shared", LowRankGCNConv, True))}
    optimizers = {label: torch.optim.Adam(model.parameters(), lr=0.01) for label, model in models.items()}
    times: dict = {label: [] for label in (*models, "eigh", "partial")}
    order = list(models)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    done = 0
    while done < steps + 1:
        for data in loader:
            for label in order[done % 3:] + order[:done % 3]:  # rotate the order step by step
                elapsed = step(models[label], optimizers[label], data)
                if done > 0:  # step 0 warms up all
                    times[label].append(elapsed)
            if done > 0:
                full, partial = solve_only(models["shared"].conv1, data)
                times["eigh"].append(full)
                times["partial"].append(partial)
            done += 1
            if done >= steps + 1:
                break
    ms = {label: 1e3 * statistics.median(values) for label, values in times.items()}
    return {"dataset": name, "batch_size": batch_size, "steps": steps, "gcn_ms": ms["gcn"],
            "lowrank_ms": ms["lowrank"], "ratio": ms["lowrank"] / ms["gcn"], "shared_ms": ms["shared"],
            "shared_ratio": ms["shared"] / ms["gcn"], "eigh_ms": ms["eigh"], "eigh_ratio": ms["eigh"] / ms["gcn"],
            "partial_ms": ms["partial"], "partial_ratio": ms["partial"] / ms["gcn"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["MUTAG", "PROTEINS", "ENZYMES"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model and cell")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: the thread's CPU time (robust to other jobs on the machine)")
    parser.add_argument("--suffix", default="", help="results file name suffix, e.g. _cpu")
    args = parser.parse_args()
    global CLOCK
    CLOCK = args.clock
    torch.set_num_threads(1)
    start_load = os.getloadavg()
    rows = [run(name, size, args.steps, args.hidden) for name in args.datasets for size in args.batch_sizes]
    load = os.getloadavg()
    lines = [f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread, "
             f"load average {start_load[0]:.2f} (1 min) at the start, {load[0]:.2f} at the end, {args.clock} clock", "",
             "| dataset | batch | GCNConv step (ms) | LowRankGCNConv k=16, each layer solves (ms) | ratio "
             "| LowRankGCNConv k=16, one shared solve (ms) | ratio | raw batched eigh only (ms) | ratio "
             "| raw k-pair solve only (ms) | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['batch_size']} | {r['gcn_ms']:.2f} | {r['lowrank_ms']:.2f} | {r['ratio']:.2f}x "
              f"| {r['shared_ms']:.2f} | {r['shared_ratio']:.2f}x | {r['eigh_ms']:.2f} | {r['eigh_ratio']:.2f}x "
              f"| {r['partial_ms']:.2f} | {r['partial_ratio']:.2f}x |"
              for r in rows]
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"minibatch{args.suffix}.md").write_text("\n".join(lines) + "\n")
    with open(RESULTS / f"minibatch{args.suffix}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
