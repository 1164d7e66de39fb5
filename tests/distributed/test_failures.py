"""Bad input across ranks: a failing or hanging rank, mismatched partitions, uneven parts."""
import os
import time

import pytest
import torch

from lowrank_gnn.distributed import (CollectiveError, Communicator, DistributedAmortizedBackend,
                                     PartitionedLowRankGCNConv, RowPartition, check_replicated, partition_graph,
                                     partitioned_normalized_adjacency)
from lowrank_gnn.testing.distributed import run_distributed

N = 12


def ring_edges():
    nodes = torch.arange(N)
    return torch.stack([nodes, (nodes + 1) % N])


def failing_worker(rank, world_size, mode):
    graph = partition_graph(ring_edges(), N, num_parts=world_size)
    comm = Communicator()
    op = partitioned_normalized_adjacency(graph.part(rank)[0], None, graph.partition, comm, dtype=torch.float64)
    backend = DistributedAmortizedBackend(3, graph.partition, comm)
    backend(op)  # step 1 completes on every rank
    if rank == 1:  # step 2: rank 1 fails before its collectives
        if mode == "raise":
            raise RuntimeError("injected failure on rank 1")
        if mode == "exit":
            os._exit(3)
        time.sleep(4.0)  # "hang": longer than the collective timeout below
        return "slept"
    start = time.perf_counter()
    try:
        backend(op)
    except CollectiveError as error:
        return ("CollectiveError", str(error), time.perf_counter() - start)
    return ("no error", "", time.perf_counter() - start)


@pytest.mark.parametrize("mode", ["raise", "exit", "hang"])
def test_failing_rank_stops_the_others_with_a_clear_error(mode):
    results = run_distributed(failing_worker, 2, args=(mode,), timeout=40, collective_timeout=2,
                              raise_errors=False)
    kind, message, seconds = results[0].value
    assert kind == "CollectiveError"
    assert "failed on rank 0 of world_size=2" in message and "timeout" in message
    assert seconds < 15  # bounded by the 2 s collective timeout (plus process noise), never a hang
    if mode == "raise":
        assert "injected failure on rank 1" in results[1].error


def replicated_worker(rank, world_size):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    check_replicated(model)  # same seed: identical
    if rank == 1:
        with torch.no_grad():
            model.bias[0] += 1e-3
    try:
        check_replicated(model)
    except ValueError as error:
        return str(error)
    return None


def test_check_replicated_detects_diverged_replicas():
    messages = [r.value for r in run_distributed(replicated_worker, 2, timeout=30)]
    assert all(m is not None and "bias (max |diff| 0.001)" in m for m in messages)  # raised on every rank


def mismatch_worker(rank, world_size):
    comm = Communicator()
    errors = []
    for bad in (lambda: partitioned_normalized_adjacency(ring_edges(), None, RowPartition.even(N, 3), comm),
                lambda: partitioned_normalized_adjacency(ring_edges(), None, RowPartition.even(N, 2), comm)):
        try:
            bad()
        except ValueError as error:
            errors.append(str(error))
    return errors


def test_partition_that_does_not_fit_the_run_is_refused():
    errors = run_distributed(mismatch_worker, 2, timeout=30)[0].value
    assert "3 part(s) (4, 4, 4) but the process group has world_size=2" in errors[0]
    assert "rank 0 owns rows [0, 6): every edge_index[0] must lie there" in errors[1]


def test_row_partition_validation():
    assert RowPartition.even(10, 3).sizes == (4, 3, 3)
    assert RowPartition.from_sizes([2, 8]).bounds == (0, 2, 10)
    with pytest.raises(ValueError, match=r"sizes must be positive, one per rank \(got sizes=\[3, 0\]\)"):
        RowPartition.from_sizes([3, 0])
    with pytest.raises(ValueError, match="world_size must be <= num_nodes"):
        RowPartition.even(2, 3)
    with pytest.raises(ValueError, match="strictly increasing from 0"):
        RowPartition([0, 5, 5])
    membership = torch.tensor([1, 0, 1, 1, 0, 1])
    graph = partition_graph(torch.tensor([[0, 1, 2], [1, 2, 3]]), 6, membership=membership)
    assert graph.partition.sizes == (2, 4)
    assert graph.node_order.tolist() == [1, 4, 0, 2, 3, 5]
    with pytest.raises(ValueError, match="every part must hold at least one node"):
        partition_graph(torch.tensor([[0], [1]]), 3, num_parts=3, membership=torch.tensor([0, 0, 2]))


def test_single_process_without_torch_distributed():
    """world_size 1 needs no process group: the same classes, every collective the identity."""
    comm = Communicator()
    assert (comm.rank, comm.world_size) == (0, 1)
    graph = partition_graph(ring_edges(), N, num_parts=1)
    op = partitioned_normalized_adjacency(graph.part(0)[0], None, graph.partition, comm, dtype=torch.float64)
    pairs = DistributedAmortizedBackend(3, graph.partition, comm)(op)
    assert pairs.eigenvectors.shape == (N, 3) and comm.stats.total_bytes == 0
    with pytest.raises(ValueError, match="2 part"):
        partitioned_normalized_adjacency(graph.part(0)[0], None, RowPartition.even(N, 2), comm)


def nonfinite_weight_worker(rank, world_size):
    graph = partition_graph(ring_edges(), N, num_parts=world_size)
    index = graph.part(rank)[0]
    weight = torch.ones(index.shape[1], dtype=torch.float64)
    if rank == 1:
        weight[3] = float("nan")
    op = partitioned_normalized_adjacency(index, weight, graph.partition, Communicator())
    try:
        DistributedAmortizedBackend(3, graph.partition, Communicator())(op)
    except ValueError as error:
        return str(error)
    return None


def test_a_nonfinite_edge_weight_on_one_rank_stops_every_rank():
    """The finiteness check of the operator is collective: both ranks raise, neither waits for the other."""
    messages = [r.value for r in run_distributed(nonfinite_weight_worker, 2, timeout=30)]
    assert "5 NaN/Inf entries on other ranks" in messages[0]
    assert "the operator's block on rank 1 contains NaN or Inf" in messages[1]


def test_edge_weight_on_another_device_than_edge_index_is_refused():
    graph = partition_graph(ring_edges(), N, num_parts=1)
    index = graph.part(0)[0]
    elsewhere = torch.ones(index.shape[1], dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="edge_weight is on meta but edge_index is on cpu"):
        partitioned_normalized_adjacency(index, elsewhere, graph.partition, Communicator())


def test_cache_operator_refuses_learnable_edge_weights():
    graph = partition_graph(ring_edges(), N, num_parts=1)
    conv = PartitionedLowRankGCNConv(2, 2, 3, graph.partition, cache_operator=True).double()
    weight = torch.ones(graph.edge_index.shape[1], dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="cache_operator=True would freeze the operator"):
        conv(torch.randn(N, 2, dtype=torch.float64), graph.edge_index, weight)
