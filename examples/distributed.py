"""Multi-process training with torch.distributed: many small graphs, or one graph split by nodes.

    # one machine, 2 processes (gloo on CPU):
    torchrun --standalone --nproc_per_node=2 examples/distributed.py --mode graphs
    torchrun --standalone --nproc_per_node=2 examples/distributed.py --mode nodes
    # resume the graph-level run from its checkpoint, on any number of processes:
    torchrun --standalone --nproc_per_node=1 examples/distributed.py --mode graphs --resume
    # without torchrun it runs as one process (world_size 1)
    python examples/distributed.py --mode nodes

--mode graphs: MUTAG (TU), SpectralFilterConv on precomputed eigenpairs + LatentPCAPool, under
DistributedDataParallel with a DistributedSampler; rank 0 checkpoints every epoch
(save_checkpoint), --resume continues from it on any world size; test accuracy is all-reduced.

--mode nodes: Cora split by nodes into world_size contiguous ranges (partition_graph); each
rank holds its rows of the normalized adjacency (built once: cache_operator=True) and of the
amortized basis, and receives all n rows of the basis (--exchange allgather) or only the rows its
edges reference (--exchange halo); two
PartitionedLowRankGCNConv layers share one eigen solve; replicated weights are trained by
data_parallel (gradients summed). The basis is warmed up on the eigen loss alone first (the
distributed backend has no exact warm start). Prints the bytes each rank sent per step.

Across machines: set --backend nccl on GPUs (or gloo on CPUs), and start torchrun on every
machine with --nnodes, --node_rank, --master_addr, --master_port (see the README).
"""
import argparse
import datetime
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lowrank_gnn.distributed import (Communicator, PartitionedLowRankGCNConv, check_replicated, data_parallel,
                                     load_checkpoint, partition_graph, save_checkpoint)
from lowrank_gnn.nn import LatentPCAPool, SpectralFilterConv, total_aux_loss


def setup(args):
    """Process group from torchrun's environment (or a single process), bounded by --timeout."""
    if "RANK" in os.environ:
        dist.init_process_group(args.backend, timeout=datetime.timedelta(seconds=args.timeout))
        if args.backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    device = torch.device("cuda", torch.cuda.current_device()) if args.backend == "nccl" else torch.device("cpu")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1), device


class GraphNet(nn.Module):
    def __init__(self, in_channels, hidden, classes):
        super().__init__()
        self.conv1 = SpectralFilterConv(in_channels, hidden, filter="chebyshev")
        self.conv2 = SpectralFilterConv(hidden, hidden, filter="chebyshev")
        self.pool = LatentPCAPool(hidden, k=2)
        self.head = nn.Sequential(nn.Linear(self.pool.out_channels, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, data):
        h = data.x
        for conv in (self.conv1, self.conv2):
            h = conv(h, data.eigvecs, data.eigvals, data.batch, data.eig_mask).relu()
        return self.head(self.pool(h, data.batch, data.num_graphs))


def run_graphs(args, rank, world_size, device):
    from torch.utils.data.distributed import DistributedSampler
    from torch_geometric.loader import DataLoader

    from lowrank_gnn.data import load_tu
    from lowrank_gnn.transforms import AddEigenpairs

    dataset = load_tu("MUTAG", transform=AddEigenpairs(k=8))  # per-graph eigenpairs: no shared backend state
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    train, test = dataset[order[:150]], dataset[order[150:]]
    torch.manual_seed(0)
    model = GraphNet(dataset.num_features, 32, dataset.num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    first_epoch = 0
    if args.resume and os.path.exists(args.checkpoint):
        first_epoch = load_checkpoint(args.checkpoint, model, optimizer, map_location=device)["epoch"]
        if rank == 0:
            print(f"resumed from {args.checkpoint} at epoch {first_epoch}")
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(model)
        check_replicated(model)
    sampler = DistributedSampler(train, world_size, rank, shuffle=True, seed=0) if world_size > 1 else None
    loader = DataLoader(train, batch_size=args.batch_size // world_size, sampler=sampler, shuffle=sampler is None)
    for epoch in range(first_epoch, first_epoch + args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        start = time.perf_counter()
        for data in loader:
            data = data.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data), data.y) + total_aux_loss(model)
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        counts = torch.zeros(2, dtype=torch.float64, device=device)  # test: each rank scores its share
        model.eval()
        with torch.no_grad():
            for data in DataLoader(test[rank::world_size], batch_size=64):
                data = data.to(device)
                counts += torch.tensor([(model(data).argmax(-1) == data.y).sum().item(), data.num_graphs],
                                       dtype=torch.float64, device=device)
        if world_size > 1:
            dist.all_reduce(counts)
        save_checkpoint(args.checkpoint, model, optimizer, epoch=epoch + 1)
        if rank == 0:
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  test acc {counts[0] / counts[1]:.3f}  "
                  f"{seconds * 1e3:.0f} ms/epoch  (world_size {world_size})")


class NodeNet(nn.Module):
    """Two PartitionedLowRankGCNConv layers sharing one eigen solve; called through DDP so that
    DDP synchronises the replicated weights (it only does for calls through its forward)."""

    def __init__(self, in_channels, classes, k, partition, comm, exchange):
        super().__init__()
        self.conv1 = PartitionedLowRankGCNConv(in_channels, 16, k, partition, comm, root_weight=True,
                                               cache_operator=True, exchange=exchange)  # fixed graph: build once
        self.conv2 = PartitionedLowRankGCNConv(16, classes, k, partition, comm, root_weight=True)

    def forward(self, x, edge_index):
        pairs = self.conv1.eigenpairs(edge_index, None, x.shape[0])  # one solve shared by both layers
        h = F.dropout(x, 0.5, self.training)
        h = F.dropout(self.conv1(h, edge_index, eigenpairs=pairs).relu(), 0.5, self.training)
        return self.conv2(h, edge_index, eigenpairs=pairs), pairs[0].aux_loss


def run_nodes(args, rank, world_size, device):
    from lowrank_gnn.data import load_planetoid

    data = load_planetoid("Cora")[0]
    graph = partition_graph(data.edge_index, data.num_nodes, num_parts=world_size)
    edge_index = graph.part(rank)[0].to(device)
    x, y = graph.node_slice(data.x, rank).to(device), graph.node_slice(data.y, rank).to(device)
    train, test = graph.node_slice(data.train_mask, rank).to(device), graph.node_slice(data.test_mask, rank).to(device)
    comm = Communicator(dist.new_group() if world_size > 1 else None)  # the operator's own group
    torch.manual_seed(args.seed)
    net = NodeNet(data.num_features, 7, args.k, graph.partition, comm, args.exchange).to(device)
    num_train = int(data.train_mask.sum())

    # warm-up: the basis alone on the eigen loss (Adam moves each rank's rows as in one process)
    basis = net.conv1.backend
    net.conv1.eigenpairs(edge_index, None, x.shape[0])  # sizes the basis
    warm = torch.optim.Adam([basis.basis.weight], lr=0.05)
    for _ in range(args.warmup):
        warm.zero_grad()
        net.conv1.eigenpairs(edge_index, None, x.shape[0])[0].aux_loss.backward()
        warm.step()
    if rank == 0:
        print(f"warm-up {args.warmup} steps: relative residual {basis.diagnostics.residual.item():.2e}")

    model = data_parallel(net) if world_size > 1 else net
    rest = [p for name, p in net.named_parameters() if ".basis." not in name]
    optimizer = torch.optim.Adam([{"params": rest, "weight_decay": 5e-4},
                                  {"params": [basis.basis.weight], "lr": 1e-3}], lr=0.01)
    comm.stats.reset()
    torch.manual_seed(1000 * args.seed + rank)  # independent dropout masks on each rank's rows
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        optimizer.zero_grad()
        out, aux_loss = model(x, edge_index)
        # the objective is the sum of the ranks' losses: local sum / global count; aux_loss is already split
        loss = F.cross_entropy(out[train], y[train], reduction="sum") / num_train + aux_loss
        loss.backward()
        optimizer.step()
    seconds = (time.perf_counter() - start) / args.epochs
    model.eval()
    with torch.no_grad():
        out, _ = model(x, edge_index)
        counts = torch.tensor([(out[test].argmax(-1) == y[test]).sum().item(), test.sum().item()],
                              dtype=torch.float64, device=device)
        comm.all_reduce_(counts)
    sent = comm.stats.total_bytes / (args.epochs + 1)
    check_replicated(model, comm)  # DDP kept the replicated weights identical (bitwise)
    print(f"rank {rank}: nodes [{graph.partition.range(rank)[0]}, {graph.partition.range(rank)[1]}), "
          f"{edge_index.shape[1]} stored edges, {sent / 1e6:.2f} MB sent per step by the operator's collectives")
    if rank == 0:
        print(f"Cora, k={args.k}, {args.epochs} epochs, world_size {world_size}: test accuracy "
              f"{counts[0] / counts[1]:.3f}, {seconds * 1e3:.0f} ms/step; replicas identical")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--mode", choices=["graphs", "nodes"], default="nodes",
                        help="graphs: MUTAG under DDP; nodes: Cora split by nodes across the ranks")
    parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo", help="torch.distributed backend")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a rank waits in a collective for a failed peer before raising")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (None: 20 in graphs mode, 200 in nodes mode)")
    parser.add_argument("--k", type=int, default=64, help="eigenpairs (nodes mode)")
    parser.add_argument("--exchange", choices=["allgather", "halo"], default="allgather",
                        help="rows of the basis each rank receives: all n, or only those its edges reference")
    parser.add_argument("--warmup", type=int, default=300, help="basis warm-up steps (nodes mode)")
    parser.add_argument("--batch-size", type=int, default=32, help="global batch (graphs mode)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights")
    parser.add_argument("--checkpoint", default="distributed_checkpoint.pt", help="checkpoint file (graphs mode)")
    parser.add_argument("--resume", action="store_true", help="resume from --checkpoint, on any number of ranks")
    args = parser.parse_args()
    args.epochs = args.epochs or (20 if args.mode == "graphs" else 200)
    torch.set_num_threads(1)  # one thread per rank: the ranks already share the cores
    (rank, world_size), device = setup(args)
    try:
        (run_graphs if args.mode == "graphs" else run_nodes)(args, rank, world_size, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
