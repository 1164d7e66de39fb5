"""Contiguous row blocks of the nodes, one per rank, and splitting a graph into them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.utils import to_undirected

from .._validation import check_positive_int


class RowPartition:
    r"""Node ranges ``[bounds[r], bounds[r + 1])`` owned by ranks ``0 <= r < P``.

    Parts may be uneven (e.g. from a graph partitioner); each must hold at least one node.

    Args:
        bounds (sequence of int): ``0 = b_0 < b_1 < ... < b_P = n``.

    Example:
        >>> from lowrank_gnn.distributed import RowPartition
        >>> RowPartition.even(10, 3).sizes
        (4, 3, 3)
        >>> RowPartition.from_sizes([2, 8]).bounds
        (0, 2, 10)
    """

    def __init__(self, bounds: Sequence[int]) -> None:
        bounds = tuple(int(b) for b in bounds)
        if len(bounds) < 2 or bounds[0] != 0 or any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)):
            raise ValueError(f"bounds must be strictly increasing from 0, one part per rank, each part with at "
                             f"least one node (got bounds={bounds})")
        self.bounds = bounds

    @classmethod
    def even(cls, num_nodes: int, world_size: int) -> "RowPartition":
        """Near-equal parts: the first ``num_nodes % world_size`` parts get one node more."""
        num_nodes, world_size = check_positive_int("num_nodes", num_nodes), check_positive_int("world_size", world_size)
        if world_size > num_nodes:
            raise ValueError(f"world_size must be <= num_nodes so that every rank owns a node "
                             f"(got world_size={world_size}, num_nodes={num_nodes})")
        base, extra = divmod(num_nodes, world_size)
        return cls.from_sizes([base + (r < extra) for r in range(world_size)])

    @classmethod
    def from_sizes(cls, sizes: Sequence[int]) -> "RowPartition":
        sizes = [int(s) for s in sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"sizes must be positive, one per rank (got sizes={sizes})")
        bounds = [0]
        for size in sizes:
            bounds.append(bounds[-1] + size)
        return cls(bounds)

    @property
    def num_nodes(self) -> int:
        return self.bounds[-1]

    @property
    def world_size(self) -> int:
        return len(self.bounds) - 1

    @property
    def sizes(self) -> Tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.bounds, self.bounds[1:], strict=False))

    def range(self, rank: int) -> Tuple[int, int]:
        """``(start, stop)`` of ``rank``'s nodes."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank must lie in [0, {self.world_size}) (got rank={rank})")
        return self.bounds[rank], self.bounds[rank + 1]

    def check_world_size(self, world_size: int) -> None:
        if world_size != self.world_size:
            raise ValueError(f"the partition has {self.world_size} part(s) {self.sizes} but the process group has "
                             f"world_size={world_size}; partition the graph into world_size parts")

    def __eq__(self, other) -> bool:
        return isinstance(other, RowPartition) and other.bounds == self.bounds

    def __repr__(self) -> str:
        return f"RowPartition(num_nodes={self.num_nodes}, sizes={self.sizes})"


@dataclass
class PartitionedGraph:
    """A graph relabelled so that each part is a contiguous node range (see :func:`partition_graph`).

    Attributes:
        partition (RowPartition): the node ranges.
        node_order (Tensor): ``(n,)``; new node ``i`` is original node ``node_order[i]``.
        edge_index (Tensor): ``(2, E)`` undirected, in new ids, sorted by row.
        edge_weight (Tensor, optional): ``(E,)``.
    """

    partition: RowPartition
    node_order: Tensor
    edge_index: Tensor
    edge_weight: Optional[Tensor]

    def part(self, rank: int) -> Tuple[Tensor, Optional[Tensor]]:
        """``rank``'s stored entries: all edges whose row (``edge_index[0]``) it owns, global ids.

        Shapes:
            returns ``(2, E_rank)`` and ``(E_rank,)`` (or ``None``).
        """
        start, stop = self.partition.range(rank)
        lo, hi = torch.searchsorted(self.edge_index[0], torch.tensor([start, stop], device=self.edge_index.device))
        weight = None if self.edge_weight is None else self.edge_weight[lo:hi]
        return self.edge_index[:, lo:hi], weight

    def node_slice(self, tensor: Tensor, rank: int) -> Tensor:
        """Rows of a node-level tensor (original node order) that ``rank`` owns, in new order."""
        start, stop = self.partition.range(rank)
        return tensor[self.node_order[start:stop]]


def partition_graph(edge_index: Tensor, num_nodes: int, num_parts: Optional[int] = None,
                    membership: Optional[Tensor] = None, edge_weight: Optional[Tensor] = None) -> PartitionedGraph:
    r"""Relabel a graph into contiguous node ranges, one per rank, and symmetrise it.

    Without ``membership`` the nodes keep their order and are cut into ``num_parts`` near-equal
    ranges. With ``membership`` (the part of each node, e.g. from METIS through
    ``torch_geometric.loader.ClusterData`` or ``torch_geometric.distributed.Partitioner``),
    the nodes of part ``r`` become range ``r`` (uneven sizes are fine), keeping their order
    inside a part. The graph is made undirected as :class:`~lowrank_gnn.nn.LowRankGCNConv` does
    (``to_undirected(reduce="mean")``), so each rank's rows hold both directions of its edges.

    Args:
        edge_index (LongTensor): the graph.
        num_nodes (int): ``n``.
        num_parts (int, optional): number of parts (ranks) when ``membership`` is not given.
        membership (LongTensor, optional): part of each node, in ``[0, num_parts)``.
        edge_weight (Tensor, optional): edge weights.

    Shapes:
        edge_index ``(2, E)``, membership ``(n,)``, edge_weight ``(E,)``.

    Example:
        >>> import torch
        >>> from lowrank_gnn.distributed import partition_graph
        >>> from lowrank_gnn.testing import cycle_graph
        >>> data = cycle_graph(10)
        >>> graph = partition_graph(data.edge_index, data.num_nodes, num_parts=2)  # num_parts = world size
        >>> local_edges, _ = graph.part(1)          # rank 1: its rows, global node ids
        >>> graph.node_slice(torch.arange(10), 1)   # rank 1's nodes
        tensor([5, 6, 7, 8, 9])
    """
    num_nodes = check_positive_int("num_nodes", num_nodes)
    if membership is None:
        if num_parts is None:
            raise ValueError("give num_parts (near-equal ranges) or membership (the part of each node)")
        partition = RowPartition.even(num_nodes, num_parts)
        node_order = torch.arange(num_nodes, device=edge_index.device)
    else:
        if membership.shape != (num_nodes,) or membership.dtype not in (torch.long, torch.int):
            raise ValueError(f"membership must be an integer tensor of shape (num_nodes,) = ({num_nodes},) "
                             f"(got {membership.dtype}, shape {tuple(membership.shape)})")
        parts = int(membership.max()) + 1 if num_parts is None else check_positive_int("num_parts", num_parts)
        if int(membership.min()) < 0 or int(membership.max()) >= parts:
            raise ValueError(f"membership entries must lie in [0, num_parts) = [0, {parts}) "
                             f"(got min {int(membership.min())}, max {int(membership.max())})")
        sizes = torch.bincount(membership.long(), minlength=parts).tolist()
        if min(sizes) < 1:
            raise ValueError(f"every part must hold at least one node (got part sizes {sizes})")
        partition = RowPartition.from_sizes(sizes)
        node_order = torch.argsort(membership.long(), stable=True)
    new_id = torch.empty_like(node_order)
    new_id[node_order] = torch.arange(num_nodes, device=node_order.device)
    index, weight = to_undirected(new_id[edge_index.long()], edge_weight, num_nodes, reduce="mean")
    return PartitionedGraph(partition, node_order, index, weight)


__all__ = ["RowPartition", "PartitionedGraph", "partition_graph"]
