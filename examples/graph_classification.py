"""Graph classification on TU datasets: LatentPCAPool against PyG's mean / add pooling.

Same GIN backbone for every readout (3 GINConv layers with 2-layer MLPs and batch norm,
32 hidden units), then the readout, then Linear-ReLU-Dropout(0.5)-Linear. Adam (lr 0.01),
batch size 64, 20 epochs (short, to keep the full run affordable on 2 busy CPU cores). 10-fold
stratified cross-validation with a fixed seed (the same folds and the same initial weights for
every readout). Two numbers per row:

* "final": test-fold accuracy after the last epoch, mean ± std over folds (no model selection);
* "GIN protocol": the epoch with the best accuracy averaged over the 10 test folds, as in
  Xu et al. (ICLR 2019), which selects the epoch on the test folds and is therefore optimistic.

    python examples/graph_classification.py --threads 1     # MUTAG, PROTEINS, ENZYMES; 10 folds
    python examples/graph_classification.py --quick         # MUTAG, 3 folds, 5 epochs (smoke test)
    python examples/graph_classification.py --datasets MUTAG --pool pca --k 1 2 4 --epochs 100

The table of docs/benchmarks/graph_classification.md comes from the first command with its defaults.
"""
import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GINConv, global_add_pool, global_mean_pool

from example_utils import add_threads_argument, progress, set_threads, write_csv
from lowrank_gnn.data import load_tu
from lowrank_gnn.nn import LatentPCAPool, total_aux_loss


class Net(nn.Module):
    def __init__(self, in_channels, hidden, num_classes, pool, k, backend, layers=3):
        super().__init__()
        self.convs = nn.ModuleList()
        for i in range(layers):
            mlp = nn.Sequential(nn.Linear(in_channels if i == 0 else hidden, hidden), nn.BatchNorm1d(hidden),
                                nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
            self.convs.append(GINConv(mlp, train_eps=True))
        if pool == "pca":
            self.pool = LatentPCAPool(hidden, k=k, backend=backend)
            readout = self.pool.out_channels
        else:
            self.pool = {"mean": global_mean_pool, "add": global_add_pool}[pool]
            readout = hidden
        self.head = nn.Sequential(nn.Linear(readout, hidden), nn.ReLU(), nn.Dropout(0.5),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x, edge_index, batch, num_graphs):
        for conv in self.convs:
            x = conv(x, edge_index)
        return self.head(self.pool(x, batch, num_graphs))


def stratified_folds(y, folds, seed):
    """Fold id per graph: each class shuffled with a fixed seed and dealt round-robin."""
    generator = torch.Generator().manual_seed(seed)
    fold_of = torch.empty_like(y)
    order = torch.cat([(y == c).nonzero().view(-1)[torch.randperm(int((y == c).sum()), generator=generator)]
                       for c in y.unique()])
    fold_of[order] = torch.arange(y.numel()) % folds
    return fold_of


@torch.no_grad()
def accuracy(model, loader):
    model.eval()
    correct = total = 0
    for data in loader:
        pred = model(data.x, data.edge_index, data.batch, data.num_graphs).argmax(-1)
        correct += int((pred == data.y).sum())
        total += data.num_graphs
    return correct / total


def run_fold(dataset, train_idx, test_idx, args, pool, k, seed):
    torch.manual_seed(seed)
    model = Net(dataset.num_features, args.hidden, dataset.num_classes, pool, k, args.backend)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    train_loader = DataLoader(dataset[train_idx], batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(dataset[test_idx], batch_size=256)
    curve, train_seconds = [], 0.0
    for _ in progress(range(args.epochs), total=args.epochs, desc=f"fold seed {seed}"):
        model.train()
        start = time.perf_counter()
        for data in train_loader:
            optimizer.zero_grad()
            out = model(data.x, data.edge_index, data.batch, data.num_graphs)
            loss = F.cross_entropy(out, data.y) + total_aux_loss(model)
            loss.backward()
            optimizer.step()
        train_seconds += time.perf_counter() - start
        curve.append(accuracy(model, test_loader))
    return curve, train_seconds / args.epochs


def main():
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["MUTAG", "PROTEINS", "ENZYMES"], help="TU datasets")
    parser.add_argument("--pool", nargs="+", default=["mean", "add", "pca"], choices=["mean", "add", "pca"],
                        help="readouts: global mean / add pooling, LatentPCAPool")
    parser.add_argument("--k", nargs="+", type=int, default=[2], help="principal directions (pca)")
    parser.add_argument("--backend", default="exact", help="eigen backend of LatentPCAPool")
    parser.add_argument("--folds", type=int, default=10, help="stratified cross-validation folds")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs per fold")
    parser.add_argument("--hidden", type=int, default=32, help="hidden channels")
    parser.add_argument("--batch-size", type=int, default=64, help="graphs per mini-batch")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and initial weights")
    parser.add_argument("--root", default=None, help="data root (None: lowrank_gnn.data.data_root())")
    parser.add_argument("--csv", default=None, help="write the results table to this CSV file")
    parser.add_argument("--quick", action="store_true", help="MUTAG, 3 folds, 5 epochs")
    add_threads_argument(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.quick:
        args.datasets, args.folds, args.epochs = ["MUTAG"], 3, 5
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.folds} folds, {args.epochs} epochs, "
          f"hidden {args.hidden}, batch {args.batch_size}, lr {args.lr}, seed {args.seed}")
    rows = []
    for name in args.datasets:
        dataset = load_tu(name, root=args.root)
        y = torch.cat([data.y for data in dataset])
        fold_of = stratified_folds(y, args.folds, args.seed)
        print(f"{name}: {len(dataset)} graphs, {dataset.num_features} features, {dataset.num_classes} classes")
        configs = [(p, None) for p in args.pool if p != "pca"] + [("pca", k) for k in args.k if "pca" in args.pool]
        for pool, k in configs:
            curves, epoch_seconds = [], []
            for fold in range(args.folds):
                test_idx = (fold_of == fold).nonzero().view(-1)
                train_idx = (fold_of != fold).nonzero().view(-1)
                curve, seconds = run_fold(dataset, train_idx, test_idx, args, pool, k, args.seed + fold)
                curves.append(curve)
                epoch_seconds.append(seconds)
            final = [100 * c[-1] for c in curves]
            mean_curve = [statistics.mean(c[e] for c in curves) for e in range(args.epochs)]
            best = max(range(args.epochs), key=lambda e: mean_curve[e])
            at_best = [100 * c[best] for c in curves]
            label = {"mean": "global_mean_pool", "add": "global_add_pool"}.get(pool, f"LatentPCAPool k={k}")
            row = {"dataset": name, "readout": label, "final_mean": statistics.mean(final),
                   "final_std": statistics.stdev(final), "gin_mean": statistics.mean(at_best),
                   "gin_std": statistics.stdev(at_best), "gin_epoch": best + 1,
                   "epoch_ms": 1e3 * statistics.mean(epoch_seconds)}
            rows.append(row)
            print(f"  {label:22s} final {row['final_mean']:.1f} ± {row['final_std']:.1f}   GIN protocol "
                  f"{row['gin_mean']:.1f} ± {row['gin_std']:.1f} (epoch {best + 1})   {row['epoch_ms']:.0f} ms/epoch")
    print("\n| dataset | readout | accuracy, final epoch (%) | accuracy, GIN protocol (%) | time per epoch (ms) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['readout']} | {r['final_mean']:.1f} ± {r['final_std']:.1f} | "
              f"{r['gin_mean']:.1f} ± {r['gin_std']:.1f} | {r['epoch_ms']:.0f} |")
    if args.csv:
        write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
