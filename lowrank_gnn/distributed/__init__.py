"""Multi-process training with :mod:`torch.distributed`.

Two modes (see the README section "Distributed training"):

* **Datasets of many graphs** (``SpectralFilterConv``, ``LatentPCAPool``): plain
  ``DistributedDataParallel``; backend state is per graph, the weights are replicated, which
  :func:`check_replicated` verifies, and :func:`save_checkpoint` / :func:`load_checkpoint`
  resume on any number of ranks.
* **One large graph split by nodes**: :func:`partition_graph` gives each rank a contiguous node
  range; :class:`RowPartitionedOperator` holds that rank's rows of the operator,
  :class:`DistributedAmortizedBackend` tracks its eigenpairs exchanging only the thin ``n x k``
  basis and ``k x k`` factors, and :class:`PartitionedLowRankGCNConv` trains on it.

Every collective goes through a :class:`Communicator`, which counts the bytes sent.
"""
from .backend import (DistributedAmortizedBackend, PartitionedBasis, PartitionedRows, partitioned_canonical_signs,
                      tsqr_orthonormalize)
from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from .comm import CollectiveError, CommStats, Communicator
from .conv import PartitionedLowRankGCNConv
from .operator import (PartitionedComponentDeflatedOperator, RowPartitionedOperator, partitioned_connected_components,
                       partitioned_deflate_components, partitioned_normalized_adjacency)
from .parallel import check_replicated, data_parallel
from .partition import PartitionedGraph, RowPartition, partition_graph

__all__ = [
    "Communicator",
    "CommStats",
    "CollectiveError",
    "RowPartition",
    "PartitionedGraph",
    "partition_graph",
    "RowPartitionedOperator",
    "partitioned_normalized_adjacency",
    "partitioned_connected_components",
    "PartitionedComponentDeflatedOperator",
    "partitioned_deflate_components",
    "DistributedAmortizedBackend",
    "PartitionedBasis",
    "PartitionedRows",
    "tsqr_orthonormalize",
    "partitioned_canonical_signs",
    "PartitionedLowRankGCNConv",
    "save_checkpoint",
    "load_checkpoint",
    "check_replicated",
    "data_parallel",
    "CHECKPOINT_FORMAT",
]
