"""torch.compile against eager for a LowRankGCNConv training step, same run, interleaved, one thread.

A two-layer GCN on Cora (``LowRankGCNConv(k=16, cached=True)``: the eigenpairs are computed
once, then every step is two low-rank propagations, compiled with ``fullgraph=True``) and a
graph classifier on MUTAG mini-batches (``batch=``, per-graph eigenpairs: each layer's per-graph
propagation, solve included, runs eagerly, one graph break per layer call; the rest is
compiled). Prints the median step time of each mode and the ratio.

Example::

    python benchmarks/compile.py --steps 30
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_mean_pool

from lowrank_gnn.data import load_planetoid, load_tu
from lowrank_gnn.nn import LowRankGCNConv


class NodeModel(torch.nn.Module):
    def __init__(self, in_channels: int, classes: int) -> None:
        super().__init__()
        self.conv1 = LowRankGCNConv(in_channels, 16, k=16, cached=True)
        self.conv2 = LowRankGCNConv(16, classes, k=16, cached=True)

    def forward(self, x, edge_index, batch=None):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


class GraphModel(torch.nn.Module):
    def __init__(self, in_channels: int, classes: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = LowRankGCNConv(in_channels, 32), LowRankGCNConv(32, 32)
        self.head = torch.nn.Linear(32, classes)

    def forward(self, x, edge_index, batch):
        h = self.conv2(self.conv1(x, edge_index, batch=batch).relu(), edge_index, batch=batch).relu()
        return self.head(global_mean_pool(h, batch))


def timed_step(model, optimizer, inputs, target, mask) -> float:
    start = time.perf_counter()
    optimizer.zero_grad()
    F.cross_entropy(model(*inputs)[mask], target).backward()
    optimizer.step()
    return time.perf_counter() - start


def compare(name, make_model, batches, steps, fullgraph) -> str:
    torch.manual_seed(0)
    eager = make_model()
    compiled_module = make_model()
    compiled_module.load_state_dict(eager.state_dict())
    compiled_module(*batches[0][0])  # one eager call fills the eigenpair cache (cached=True) before compiling
    compiled = torch.compile(compiled_module, fullgraph=fullgraph)
    models = {"eager": eager, "compiled": compiled}
    optimizers = {label: torch.optim.Adam(model.parameters(), lr=0.01) for label, model in models.items()}
    times = {label: [] for label in models}
    for step in range(steps + 2):  # two warm-up steps: the eager cache fill and the compilation
        inputs, target, mask = batches[step % len(batches)]
        for label in (("eager", "compiled") if step % 2 == 0 else ("compiled", "eager")):
            elapsed = timed_step(models[label], optimizers[label], inputs, target, mask)
            if step >= 2:
                times[label].append(elapsed)
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    return f"| {name} | {1e3 * e:.2f} | {1e3 * c:.2f} | {c / e:.2f}x |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cora = load_planetoid("Cora")[0]
    node_batches = [((cora.x, cora.edge_index), cora.y[cora.train_mask], cora.train_mask)]
    mutag = load_tu("MUTAG")
    graph_batches = [((b.x, b.edge_index, b.batch), b.y, slice(None))
                     for b in DataLoader(mutag, batch_size=32, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))]
    rows = [compare("Cora, cached, fullgraph=True", lambda: NodeModel(cora.num_features, 7), node_batches,
                    args.steps, True),
            compare("MUTAG batch 32, batch=", lambda: GraphModel(mutag.num_features, mutag.num_classes),
                    graph_batches, args.steps, False)]
    load = os.getloadavg()
    print(f"torch {torch.__version__}, 1 thread, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print("| model | eager step (ms) | compiled step (ms) | compiled / eager |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
