"""``DistributedDataParallel`` for models with partitioned bases, and a check that replicas agree."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import partitioned_bases, unwrap
from .comm import Communicator


def _sum_gradients_hook(process_group, bucket):  # unannotated: DDP checks annotations literally
    """DDP communication hook: all-reduce the bucket *without* dividing by the world size."""
    group = process_group if process_group is not None else dist.group.WORLD
    work = dist.all_reduce(bucket.buffer(), group=group, async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


def data_parallel(model: nn.Module, **ddp_kwargs: Any) -> nn.parallel.DistributedDataParallel:
    """``DistributedDataParallel`` for a model with row-partitioned layers: gradients are *summed*.

    The objective of the partitioned layers is the sum over ranks of the losses each rank
    backpropagates (every rank computes the loss of its own nodes), and the collectives'
    backward already delivers to each rank its share of that sum. So replicated parameters
    need the *sum* of the ranks' gradients (a communication hook replaces DDP's average), and
    each :class:`~lowrank_gnn.distributed.PartitionedBasis`, which differs by design on every
    rank (and in shape, with uneven partitions), is left out of DDP: its gradient is complete
    on its own rank. Give the partitioned operator its own process group
    (``Communicator(dist.new_group())``), so that its collectives never share a group with
    DDP's gradient all-reduces. As with any DDP model, call the *wrapper* (``model(x, ...)``):
    DDP synchronises gradients only for calls through its forward, and calling the wrapped
    layers directly leaves each rank with its own replicas (:func:`check_replicated` catches it).

    Args:
        model (nn.Module): the model (lazy parameters other than partitioned bases must be
            materialised first, as DDP requires).
        **ddp_kwargs: passed to ``DistributedDataParallel``.

    Example:
        >>> import torch
        >>> import torch.distributed as dist
        >>> from lowrank_gnn.distributed import Communicator, PartitionedLowRankGCNConv, data_parallel, partition_graph
        >>> from lowrank_gnn.testing import cycle_graph
        >>> from lowrank_gnn.testing.distributed import run_distributed
        >>> def train(rank, world_size):   # the body of a script started by torchrun
        ...     graph = partition_graph(cycle_graph(20).edge_index, 20, num_parts=world_size)
        ...     comm = Communicator(dist.new_group())   # the operator's own group, apart from DDP's
        ...     conv = PartitionedLowRankGCNConv(4, 2, k=4, partition=graph.partition, comm=comm)
        ...     x, edges = graph.node_slice(torch.ones(20, 4), rank), graph.part(rank)[0]
        ...     _ = conv(x, edges)               # sizes this rank's rows of the basis first
        ...     model = data_parallel(conv)
        ...     loss = model(x, edges).square().sum() / 20 + conv.aux_loss  # local sum / global count
        ...     loss.backward()
        ...     return rank
        >>> [result.value for result in run_distributed(train, world_size=2)]
        [0, 1]
    """
    ignore = [f"{name}.weight" if name else "weight" for name, _ in partitioned_bases(model)]
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
    wrapped = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
    wrapped.register_comm_hook(ddp_kwargs.get("process_group"), _sum_gradients_hook)
    return wrapped


@torch.no_grad()
def check_replicated(model: nn.Module, comm: Optional[Communicator] = None, atol: float = 0.0) -> None:
    """Raise unless every rank holds the same parameters and buffers as rank 0 (collective).

    What ``DistributedDataParallel`` promises for replicated state (including an amortized
    basis inside a replicated model, e.g. ``LatentPCAPool(backend="amortized")``); partitioned
    bases, which differ by design, are skipped. Sends every replicated tensor once.

    Args:
        model (nn.Module): optionally wrapped in ``DistributedDataParallel``.
        comm (Communicator, optional): (default: ``Communicator()``)
        atol (float): allowed absolute difference. (default: ``0.0``: bitwise equal)
    """
    comm = comm if comm is not None else Communicator()
    model = unwrap(model)
    skip = {id(basis.weight) for _, basis in partitioned_bases(model)}
    tensors = [(name, t) for name, t in list(model.named_parameters()) + list(model.named_buffers())
               if id(t) not in skip and not isinstance(t, nn.parameter.UninitializedParameter)]
    differences = []
    for _, tensor in tensors:
        reference = comm.broadcast_(tensor.detach().clone(), src=0)
        differences.append((reference.double() - tensor.detach().double()).abs().max() if tensor.numel() else
                           torch.zeros((), dtype=torch.float64))
    worst = comm.all_reduce_(torch.stack(differences) if differences else torch.zeros(0, dtype=torch.float64), "max")
    bad = [(name, float(d)) for (name, _), d in zip(tensors, worst, strict=True) if float(d) > atol]
    if bad:
        listed = ", ".join(f"{name} (max |diff| {d:.3g})" for name, d in bad[:5])
        raise ValueError(f"{len(bad)} replicated tensor(s) differ between ranks beyond atol={atol}: {listed}. "
                         f"Wrap the model in DistributedDataParallel (it broadcasts rank 0's state and averages "
                         f"gradients), and materialise lazy parameters with one forward pass before wrapping it")


__all__ = ["data_parallel", "check_replicated"]
