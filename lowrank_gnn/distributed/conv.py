"""LowRankGCNConv on a graph split by nodes across ranks."""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch
from torch import Tensor

from .._validation import check_choice
from ..eigen import EigenPairs
from ..nn.conv.lowrank_gcn_conv import LowRankGCNConv
from .backend import DistributedAmortizedBackend
from .comm import Communicator
from .operator import (PartitionedComponentDeflatedOperator, RowPartitionedOperator, partitioned_deflate_components,
                       partitioned_normalized_adjacency)
from .partition import RowPartition

PartitionedOperator = Union[RowPartitionedOperator, PartitionedComponentDeflatedOperator]


class PartitionedLowRankGCNConv(LowRankGCNConv):
    r""":class:`~lowrank_gnn.nn.LowRankGCNConv` on one rank's nodes of a row-partitioned graph.

    The layer computes :math:`X' = (P_0 + U \operatorname{diag}(\lambda) U^T) X \Theta
    [+ X\Theta_{\mathrm{root}}] + b` like the single-process layer, with every node-level
    tensor split by rows: this rank passes its rows of ``x`` and the edges of its nodes, and
    gets its rows of the output. The eigenpairs come from a
    :class:`~lowrank_gnn.distributed.DistributedAmortizedBackend` on the
    :func:`~lowrank_gnn.distributed.partitioned_normalized_adjacency`; :math:`U^T X \Theta`
    (``k x d``) is all-reduced, and the per-component block :math:`P_0` sums only the
    components that span ranks. With the same seed and weights the output equals rows
    ``[start, stop)`` of the single-process layer with ``backend="amortized"``.

    The graph must already be undirected with symmetric weights, as
    :func:`~lowrank_gnn.distributed.partition_graph` returns it (the single-process layer
    symmetrises itself; across ranks that would need every cut edge's partner).

    Args:
        in_channels (int): input features.
        out_channels (int): output features.
        k (int): number of eigenpairs.
        partition (RowPartition): node ranges of all ranks.
        comm (Communicator, optional): the process group for the operator's collectives.
            (default: ``Communicator()``)
        backend_kwargs (dict, optional): options of :class:`DistributedAmortizedBackend`
            (``which``, ``loss``, ``eta``, ``seed``).
        deflate_components (bool): apply the eigenvalue-1 block exactly. (default: ``True``)
        cache_operator (bool): build the partitioned operator (degrees, connected components,
            symmetry check) once and reuse it: for a fixed graph, it removes about ``10 n``
            numbers of communication per step (``benchmarks/distributed.py``). The eigenpairs are
            still updated at every call (the basis trains). Refused when ``edge_weight``
            requires grad. (default: ``False``)
        exchange (str): ``"allgather"`` (the ``n x k`` basis) or ``"halo"`` (only the rows each
            rank's block references); see :class:`~lowrank_gnn.distributed.RowPartitionedOperator`.
            (default: ``"allgather"``)
        root_weight (bool): add a self term. (default: ``False``)
        add_self_loops (bool): as in ``GCNConv``. (default: ``True``)
        bias (bool): learn an additive bias. (default: ``True``)

    Shapes:
        - **input:** x ``(n_r, F_in)``, edge_index ``(2, E_r)`` (rows in this rank's range,
          global ids), edge_weight ``(E_r,)`` *(optional)*
        - **output:** ``(n_r, F_out)``

    Example:
        >>> import torch
        >>> from lowrank_gnn.distributed import Communicator, PartitionedLowRankGCNConv, partition_graph
        >>> from lowrank_gnn.testing import cycle_graph
        >>> data, comm = cycle_graph(40), Communicator()   # here one process: rank 0 of 1
        >>> graph = partition_graph(data.edge_index, data.num_nodes, num_parts=comm.world_size)
        >>> conv = PartitionedLowRankGCNConv(16, 7, k=8, partition=graph.partition, comm=comm)
        >>> x = torch.randn(40, 16)
        >>> conv(graph.node_slice(x, comm.rank), graph.part(comm.rank)[0]).shape
        torch.Size([40, 7])
    """

    def __init__(self, in_channels: int, out_channels: int, k: int, partition: RowPartition,
                 comm: Optional[Communicator] = None, backend_kwargs: Optional[Dict[str, Any]] = None,
                 deflate_components: bool = True, cache_operator: bool = False, exchange: str = "allgather",
                 root_weight: bool = False,
                 add_self_loops: bool = True, bias: bool = True) -> None:
        comm = comm if comm is not None else Communicator()
        backend = DistributedAmortizedBackend(k, partition, comm, **(backend_kwargs or {}))
        super().__init__(in_channels, out_channels, k=k, backend=backend, deflate_components=deflate_components,
                         root_weight=root_weight, cached=False, add_self_loops=add_self_loops, bias=bias)
        self.partition, self.comm = partition, comm
        self.cache_operator = cache_operator
        self.exchange = check_choice("exchange", exchange, RowPartitionedOperator.EXCHANGES)
        self._operator_cache: Optional[PartitionedOperator] = None

    def reset_parameters(self) -> None:
        """Reset weights and clear the operator cache."""
        super().reset_parameters()
        self._operator_cache = None

    def _operator(self, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int, dtype: torch.dtype):
        start, stop = self.partition.range(self.comm.rank)
        if num_nodes != stop - start:
            raise ValueError(f"x must hold this rank's {stop - start} nodes [{start}, {stop}) "
                             f"(got {num_nodes} rows)")
        if self.cache_operator and self._operator_cache is not None:
            return self._operator_cache
        if self.cache_operator and edge_weight is not None and edge_weight.requires_grad:
            raise ValueError("cache_operator=True would freeze the operator and silently stop the gradient to "
                             "edge_weight; use cache_operator=False with learnable edge weights")
        op = partitioned_normalized_adjacency(edge_index, edge_weight, self.partition, self.comm,
                                              add_self_loops=self.add_self_loops, dtype=dtype,
                                              exchange=self.exchange)
        result: PartitionedOperator = partitioned_deflate_components(op) if self.deflate_components else op
        if self.cache_operator:
            self._operator_cache = result
        return result

    def spectral_propagate(self, pairs: EigenPairs, h: Tensor, deflated) -> Tensor:
        vectors, values = pairs.eigenvectors, pairs.eigenvalues
        out = vectors @ (values.unsqueeze(-1) * self.comm.all_reduce(vectors.mT @ h))
        if deflated is not None:
            out = out + deflated.project(h)
        return out


__all__ = ["PartitionedLowRankGCNConv"]
