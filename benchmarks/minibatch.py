"""Training step on mini-batches of graphs: LowRankGCNConv (per-graph eigenpairs) against GCNConv, same run.

For each dataset (TU MUTAG / PROTEINS / ENZYMES) and batch size, two graph classifiers with the
same architecture (conv -> ReLU -> conv -> global mean pool -> linear) train on the same
batches; one uses ``GCNConv``, the other ``LowRankGCNConv(k=16)`` with ``batch=``, so that
every graph of a batch gets its own ``min(16, n_g)`` eigenpairs, all solved in one batched
``eigh``. The two steps (forward, backward, Adam) alternate batch by batch (interleaved, so
machine load hits both alike) in one thread; the script prints the median step time of each
and their ratio, and writes ``benchmarks/results/minibatch.md`` and ``.csv``.

Example::

    python benchmarks/minibatch.py --steps 30
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
from lowrank_gnn.nn import LowRankGCNConv

RESULTS = Path(__file__).resolve().parent / "results"


class Classifier(torch.nn.Module):
    def __init__(self, conv, in_channels: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.low_rank = conv is LowRankGCNConv
        self.conv1, self.conv2 = conv(in_channels, hidden), conv(hidden, hidden)
        self.head = torch.nn.Linear(hidden, classes)

    def forward(self, data):
        extra = {"batch": data.batch} if self.low_rank else {}
        h = self.conv1(data.x, data.edge_index, **extra).relu()
        h = self.conv2(h, data.edge_index, **extra).relu()
        return self.head(global_mean_pool(h, data.batch))


def step(model, optimizer, data) -> float:
    start = time.perf_counter()
    optimizer.zero_grad()
    F.cross_entropy(model(data), data.y).backward()
    optimizer.step()
    return time.perf_counter() - start


def run(name: str, batch_size: int, steps: int, hidden: int) -> dict:
    dataset = load_tu(name)
    torch.manual_seed(0)
    models = {label: Classifier(conv, dataset.num_features, hidden, dataset.num_classes)
              for label, conv in (("gcn", GCNConv), ("lowrank", LowRankGCNConv))}
    optimizers = {label: torch.optim.Adam(model.parameters(), lr=0.01) for label, model in models.items()}
    times = {label: [] for label in models}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    done = 0
    while done < steps + 1:
        for data in loader:
            for label in (("gcn", "lowrank") if done % 2 == 0 else ("lowrank", "gcn")):
                elapsed = step(models[label], optimizers[label], data)
                if done > 0:  # step 0 warms up both
                    times[label].append(elapsed)
            done += 1
            if done >= steps + 1:
                break
    gcn, lowrank = statistics.median(times["gcn"]), statistics.median(times["lowrank"])
    return {"dataset": name, "batch_size": batch_size, "steps": steps, "gcn_ms": 1e3 * gcn,
            "lowrank_ms": 1e3 * lowrank, "ratio": lowrank / gcn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["MUTAG", "PROTEINS", "ENZYMES"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model and cell")
    parser.add_argument("--hidden", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [run(name, size, args.steps, args.hidden) for name in args.datasets for size in args.batch_sizes]
    load = os.getloadavg()
    lines = [f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread, "
             f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", "",
             "| dataset | batch | GCNConv step (ms) | LowRankGCNConv k=16 step (ms) | ratio |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['batch_size']} | {r['gcn_ms']:.2f} | {r['lowrank_ms']:.2f} | {r['ratio']:.2f}x |"
              for r in rows]
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "minibatch.md").write_text("\n".join(lines) + "\n")
    with open(RESULTS / "minibatch.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
