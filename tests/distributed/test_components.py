"""Connected components of a graph split over 2 ranks, where every edge crosses the cut."""
import torch

from lowrank_gnn.distributed import (Communicator, partition_graph, partitioned_connected_components,
                                     partitioned_deflate_components, partitioned_normalized_adjacency)
from lowrank_gnn.eigen import operator_frobenius_norm
from lowrank_gnn.operators import connected_components, deflate_components, normalized_adjacency
from lowrank_gnn.testing.distributed import run_distributed

N = 17  # a path on 0..11 (12 nodes), isolated 12 and 13, a triangle 14-15-16


def graph():
    path = torch.stack([torch.arange(11), torch.arange(1, 12)])
    triangle = torch.tensor([[14, 15, 16], [15, 16, 14]])
    edge_index = torch.cat([path, triangle], dim=1)
    membership = torch.arange(N) % 2  # alternating ranks: the path zigzags across the cut 11 times
    x = torch.randn(N, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return partition_graph(edge_index, N, membership=membership), x


def worker(rank, world_size):
    split, x = graph()
    comm = Communicator()
    op = partitioned_normalized_adjacency(split.part(rank)[0], None, split.partition, comm, dtype=torch.float64)
    labels = partitioned_connected_components(op)
    deflated = partitioned_deflate_components(op)
    return labels, deflated.project(split.node_slice(x, rank)), deflated.num_components, deflated.frobenius_norm()


def test_components_and_projection_match_single_process():
    results = [r.value for r in run_distributed(worker, 2, timeout=30)]
    split, x = graph()
    op = normalized_adjacency(split.edge_index, torch.ones(split.edge_index.shape[1], dtype=torch.float64), N)
    count, labels = connected_components(op)
    deflated = deflate_components(op)
    distributed_labels = torch.cat([r[0] for r in results])
    # same partition of the nodes into components (labels differ: smallest global id vs SciPy's numbering)
    assert count == 4 == len(distributed_labels.unique())
    pairs = labels.unsqueeze(0) == labels.unsqueeze(1)
    assert torch.equal(pairs, distributed_labels.unsqueeze(0) == distributed_labels.unsqueeze(1))
    assert torch.allclose(torch.cat([r[1] for r in results]), deflated.project(x[split.node_order]), atol=1e-12)
    for r in results:
        assert r[2] == deflated.num_components
        assert torch.allclose(r[3], operator_frobenius_norm(deflated), atol=1e-12)
