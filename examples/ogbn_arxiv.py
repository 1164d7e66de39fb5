"""Node classification on ogbn-arxiv with LowRankGCNConv (sparse eigenpairs), next to GCNConv.

ogbn-arxiv (169,343 nodes, 1,166,243 directed citation edges, 128 features, 40 classes) with
OGB's official time split, loaded by lowrank_gnn.data.load_ogb_node. The graph is directed:
it is symmetrised (to_undirected) before the symmetric eigensolver, as GCN practice on arxiv
does. 2 layers, dropout 0.5, Adam (lr 0.01, weight decay 5e-4); the reported test accuracy is
taken at the epoch of best validation accuracy.

LowRankGCNConv never forms an n x n matrix: the exact backend's sparse (ARPACK) path computes
the top-k eigenpairs of the normalized adjacency with its per-component eigenvalue-1 block
deflated, once per configuration, shared by both layers (the graph is fixed); a learnable
backend (--backend amortized) runs inside every forward instead.

    python examples/ogbn_arxiv.py                        # real data (needs the OGB files)
    python examples/ogbn_arxiv.py --synthetic            # same pipeline, synthetic graph of arxiv's size
    python examples/ogbn_arxiv.py --synthetic --backend amortized --model lowrank

Offline, the real run stops with a message saying where the raw files go. --synthetic runs the
same code on a Chung-Lu power-law graph with arxiv's node and edge counts, random features and
labels that depend on the graph (two propagation steps of a random linear map): its accuracies
say nothing about arxiv and are printed as SYNTHETIC. No real-data accuracy has been measured
for this example (no machine it ran on had the OGB files).
"""
import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv
from torch_geometric.utils import to_undirected

from example_utils import add_threads_argument, progress, set_threads
from lowrank_gnn.data import chung_lu_graph, load_ogb_node
from lowrank_gnn.nn import LowRankGCNConv, total_aux_loss
from lowrank_gnn.operators import normalized_adjacency

ARXIV_NODES, ARXIV_EDGES, ARXIV_FEATURES, ARXIV_CLASSES = 169_343, 1_166_243, 128, 40
#: Fractions of OGB's time split of arxiv (90,941 / 29,799 / 48,603 nodes).
ARXIV_SPLIT = (0.537, 0.176)


class Net(torch.nn.Module):
    def __init__(self, in_channels, hidden, out_channels, model, k, backend, root_weight, dropout):
        super().__init__()
        if model == "gcn":
            self.conv1 = GCNConv(in_channels, hidden, cached=True)
            self.conv2 = GCNConv(hidden, out_channels, cached=True)
        else:
            options = dict(k=k, backend=backend, root_weight=root_weight)
            self.conv1 = LowRankGCNConv(in_channels, hidden, **options)
            self.conv2 = LowRankGCNConv(hidden, out_channels, **options)
        self.dropout = dropout

    def forward(self, x, edge_index, eigenpairs=None):
        spectral = {} if eigenpairs is None else {"eigenpairs": eigenpairs}
        x = F.dropout(x, self.dropout, self.training)
        x = self.conv1(x, edge_index, **spectral).relu()
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, edge_index, **spectral)


def synthetic_arxiv(num_nodes, num_edges, seed=0):
    """A graph with arxiv's sizes: Chung-Lu edges (directed, like citations), features, labels, split."""
    generator = torch.Generator().manual_seed(seed)
    edge_index = chung_lu_graph(num_nodes, num_edges, seed=seed)
    x = torch.randn(num_nodes, ARXIV_FEATURES, generator=generator)
    op = normalized_adjacency(to_undirected(edge_index, num_nodes=num_nodes), num_nodes=num_nodes)
    signal = op.matmul(op.matmul(x @ torch.randn(ARXIV_FEATURES, ARXIV_CLASSES, generator=generator)))
    y = signal.argmax(-1)
    order = torch.randperm(num_nodes, generator=generator)
    cut = [int(f * num_nodes) for f in (ARXIV_SPLIT[0], ARXIV_SPLIT[0] + ARXIV_SPLIT[1])]
    split = {"train": order[: cut[0]], "valid": order[cut[0]: cut[1]], "test": order[cut[1]:]}
    return edge_index, x, y, split


def load(args):
    """(edge_index (directed), x, y, split, description)."""
    if args.synthetic:
        edge_index, x, y, split = synthetic_arxiv(args.synthetic_nodes, args.synthetic_edges, args.seed)
        return edge_index, x, y, split, (f"SYNTHETIC ogbn-arxiv-sized graph (Chung-Lu, exponent 2.5): "
                                         f"{args.synthetic_nodes} nodes, {args.synthetic_edges} directed edges")
    try:
        dataset = load_ogb_node("ogbn-arxiv", root=args.root)
    except (RuntimeError, ImportError) as error:
        sys.exit(f"error: {error}\n(run with --synthetic to exercise the pipeline on a synthetic graph of the "
                 "same size)")
    data = dataset[0]
    return data.edge_index, data.x, data.y.view(-1), dataset.get_idx_split(), \
        f"ogbn-arxiv: {data.num_nodes} nodes, {data.edge_index.shape[1]} directed edges"


def shared_eigenpairs(edge_index, num_nodes, args):
    """Eigenpairs of the fixed graph, once for both layers and all runs (backends without learnable state)."""
    probe = LowRankGCNConv(1, 1, k=args.k, backend=args.backend)
    if any(True for _ in probe.backend.parameters()):
        return None, 0.0
    start = time.perf_counter()
    eigenpairs = probe.eigenpairs(edge_index, None, num_nodes)
    return eigenpairs, time.perf_counter() - start


def run(edge_index, x, y, split, num_classes, args, model_name, seed, eigenpairs, label):
    torch.manual_seed(seed)
    model = Net(x.shape[1], args.hidden, num_classes, model_name, args.k, args.backend, args.root_weight,
                args.dropout)
    inputs = (x, edge_index) if eigenpairs is None else (x, edge_index, eigenpairs)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    best_val = test_at_best = 0.0
    start = time.perf_counter()
    for _ in progress(range(1, args.epochs + 1), total=args.epochs, desc=f"{label} seed {seed}"):
        model.train()
        optimizer.zero_grad()
        out = model(*inputs)
        loss = F.cross_entropy(out[split["train"]], y[split["train"]]) + total_aux_loss(model)
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            pred = model(*inputs).argmax(-1)
        val, test = (float((pred[split[p]] == y[split[p]]).float().mean()) for p in ("valid", "test"))
        if val >= best_val:
            best_val, test_at_best = val, test
    return best_val, test_at_best, (time.perf_counter() - start) / args.epochs


def main():
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--synthetic", action="store_true",
                        help="run on a synthetic graph of arxiv's size instead of the real data")
    parser.add_argument("--synthetic-nodes", type=int, default=ARXIV_NODES, help="nodes of the synthetic graph")
    parser.add_argument("--synthetic-edges", type=int, default=ARXIV_EDGES, help="edges of the synthetic graph")
    parser.add_argument("--model", nargs="+", default=["gcn", "lowrank"], choices=["lowrank", "gcn"],
                        help="layers to compare")
    parser.add_argument("--k", type=int, default=64, help="eigenpairs per layer (lowrank)")
    parser.add_argument("--backend", default="exact", help="eigen backend name (exact: ARPACK at this size)")
    parser.add_argument("--root-weight", action="store_true", help="add a self term X Theta_root")
    parser.add_argument("--runs", type=int, default=1, help="seeds per model")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs per run")
    parser.add_argument("--hidden", type=int, default=128, help="hidden channels")
    parser.add_argument("--dropout", type=float, default=0.5, help="dropout before each layer")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="Adam weight decay")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic graph")
    parser.add_argument("--root", default=None, help="data root (None: lowrank_gnn.data.data_root())")
    add_threads_argument(parser)
    args = parser.parse_args()
    set_threads(args.threads)

    edge_index, x, y, split, description = load(args)
    num_nodes, num_classes = x.shape[0], int(y.max()) + 1
    edge_index = to_undirected(edge_index, num_nodes=num_nodes)  # citations are directed; eigh needs symmetry
    tag = "SYNTHETIC " if args.synthetic else ""
    print(f"{description}; {edge_index.shape[1]} edges after symmetrising; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for model_name in args.model:
        label = "GCNConv" if model_name == "gcn" else f"LowRankGCNConv k={args.k} ({args.backend})"
        eigenpairs, eigen_s = shared_eigenpairs(edge_index, num_nodes, args) if model_name == "lowrank" \
            else (None, 0.0)
        if eigen_s:
            print(f"{label}: eigenpairs computed once in {eigen_s:.1f} s (shared by both layers and all runs)")
        results = [run(edge_index, x, y, split, num_classes, args, model_name, seed, eigenpairs, label)
                   for seed in range(args.runs)]
        val, test = (100 * statistics.mean(r[i] for r in results) for i in (0, 1))
        epoch_s = statistics.mean(r[2] for r in results)
        print(f"{tag}{label}: test accuracy {test:.1f}% (val {val:.1f}%) over {args.runs} run(s), "
              f"{epoch_s:.2f} s per epoch")
        rows.append((label, val, test, epoch_s, eigen_s))
    print(f"\n| {tag}model | val acc (%) | test acc (%) | time per epoch (s) | one-off eigen time (s) |"
          "\n|---|---|---|---|---|")
    for label, val, test, epoch_s, eigen_s in rows:
        print(f"| {label} | {val:.1f} | {test:.1f} | {epoch_s:.2f} | {eigen_s:.1f} |")
    if args.synthetic:
        print("(SYNTHETIC data: random features, graph-derived labels; these numbers are not ogbn-arxiv results)")


if __name__ == "__main__":
    main()
