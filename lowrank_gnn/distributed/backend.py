r"""The amortized eigen backend on a row-distributed operator.

The basis :math:`W` (``n x k``) is split by rows like the operator: rank ``r`` holds
:math:`W_r` (``n_r x k``). One step of :class:`~lowrank_gnn.eigen.AmortizedBackend` becomes

* :math:`U = \operatorname{QR}(W)` by TSQR (Demmel, Grigori, Hoemmen & Langou, "Communication-
  optimal parallel and sequential QR and LU factorizations", SIAM J. Sci. Comput. 2012): local
  :math:`W_r = Q_r R_r`, all-gather of the ``k x k`` factors :math:`R_r`, QR of their stack
  :math:`[R_0; \dots; R_{P-1}] = \tilde Q R` (redundantly on every rank), and
  :math:`U_r = Q_r \tilde Q_r`; as stable as Householder QR, unlike Cholesky-QR;
* :math:`(A U)_r` from one all-gather of :math:`U` (``n x k``);
* :math:`\lambda = \sum_r \operatorname{diag}(U_r^T (AU)_r)`: an all-reduce of ``k`` numbers.

So a step sends about :math:`n k + P k^2 + O(k)` elements per rank and stores
``nnz / P + n k`` numbers. The thin QR with :math:`\operatorname{diag}(R) > 0` is unique, so
with the same seed the distributed basis, eigenpairs and eigen loss equal the single-process
backend's to rounding, and Adam (elementwise) moves every rank's rows exactly as it would move
them in one process.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..eigen.amortized import AmortizedBackend, AmortizedBasis
from ..eigen.base import SIGN_PIVOT_FRACTION, EigenPairs
from ..eigen.diagnostics import EigenDiagnostics
from ..eigen.rows import LocalRows
from .comm import Communicator
from .operator import PartitionedComponentDeflatedOperator, RowPartitionedOperator
from .partition import RowPartition


def tsqr_orthonormalize(weight: Tensor, comm: Communicator) -> Tuple[Tensor, Tensor]:
    r"""Thin QR of a row-distributed ``W`` by TSQR, signs fixed so that ``diag(R) > 0`` (collective).

    Differentiable: the ``R_r`` are all-gathered with autograd, so the backward reduce-scatters
    their gradients (sum over ranks, see :mod:`~lowrank_gnn.distributed.comm`). A rank with fewer
    rows than ``k`` contributes a zero-padded ``R_r``.

    Shapes:
        weight ``(n_r, k)``; returns this rank's rows of ``U`` ``(n_r, k)`` and ``diag(R)`` ``(k,)``.
    """
    n_r, k = weight.shape
    local_q, local_r = torch.linalg.qr(weight)                  # (n_r, min(n_r, k)), (min(n_r, k), k)
    if n_r < k:
        local_q = torch.cat([local_q, local_q.new_zeros(n_r, k - n_r)], dim=1)
        local_r = torch.cat([local_r, local_r.new_zeros(k - n_r, k)], dim=0)
    stacked = comm.all_gather_rows(local_r, [k] * comm.world_size)   # (P k, k)
    outer_q, outer_r = torch.linalg.qr(stacked)
    vectors = local_q @ outer_q[comm.rank * k:(comm.rank + 1) * k]
    diagonal = torch.diagonal(outer_r)
    sign = torch.where(diagonal < 0, -1.0, 1.0).to(vectors.dtype).detach()
    return vectors * sign, diagonal * sign


def partitioned_canonical_signs(vectors: Tensor, comm: Communicator) -> Tensor:
    """:func:`~lowrank_gnn.eigen.canonical_signs` of row-distributed columns (collective).

    The pivot is the first entry, in global row order, with ``|u_i| >= 0.1 max|u|``: the
    column maxima are all-reduced, each rank reports the sign of its own first significant
    entry (0 if none), and the lowest rank with one decides. ``k`` and ``P x k`` numbers.

    Shapes:
        vectors ``(n_r, k)`` in and out.
    """
    magnitude = vectors.detach().abs()
    column_max = comm.all_reduce_(magnitude.amax(0).clone(), op="max")
    significant = magnitude >= SIGN_PIVOT_FRACTION * column_max
    pivot = significant.to(torch.uint8).argmax(0, keepdim=True)
    local_sign = torch.where(significant.any(0), torch.sign(vectors.detach().gather(0, pivot)[0]), 0.0)
    signs = torch.cat(comm.all_gather_blocks(local_sign.unsqueeze(0), [1] * comm.world_size))     # (P, k)
    sign = signs.gather(0, (signs != 0).to(torch.uint8).argmax(0, keepdim=True))[0]
    return vectors * torch.where(sign == 0, torch.ones_like(sign), sign)


class PartitionedRows(LocalRows):
    r"""The rows of an amortized basis split over the ranks of ``comm``
    (:mod:`lowrank_gnn.eigen.rows`): sums over rows are all-reduced (differentiably by
    :meth:`all_reduce`), the QR is :func:`tsqr_orthonormalize` and the signs
    :func:`partitioned_canonical_signs`. Every method is collective.

    Args:
        comm (Communicator): the process group.
    """

    where = " on some rank"

    def __init__(self, comm: Communicator) -> None:
        self.comm = comm
        self.world_size = comm.world_size

    def all_reduce(self, tensor: Tensor) -> Tensor:
        return self.comm.all_reduce(tensor)

    def all_reduce_(self, tensor: Tensor, op: str = "sum") -> Tensor:
        return self.comm.all_reduce_(tensor, op=op)

    def orthonormalize(self, weight: Tensor) -> Tuple[Tensor, Tensor]:
        return tsqr_orthonormalize(weight, self.comm)

    def qr_factors(self, weight: Tensor) -> None:
        """``None``: the QR of rows split over ranks is :meth:`orthonormalize` (TSQR)."""
        return None

    def canonical_signs(self, vectors: Tensor) -> Tensor:
        return partitioned_canonical_signs(vectors, self.comm)

    def __repr__(self) -> str:
        return f"PartitionedRows({self.comm!r})"


class PartitionedBasis(AmortizedBasis):
    r"""This rank's rows ``[start, stop)`` of the amortized basis :math:`W` (``n x k``).

    Initialised to the same Gaussian ``W`` as :class:`~lowrank_gnn.eigen.AmortizedBasis` with the
    same seed (rows of one ``n x k`` draw), orthonormalised by :func:`tsqr_orthonormalize`.
    Its ``state_dict`` is a per-rank *shard* and records the layout; loading a shard saved
    under another partition or world size raises. To move between numbers of ranks, use
    :func:`~lowrank_gnn.distributed.save_checkpoint` / :func:`~lowrank_gnn.distributed.load_checkpoint`,
    which gather and re-split the rows.

    Args:
        partition (RowPartition): the node ranges.
        comm (Communicator): the process group.
        seed (int): seed of the random initialisation. (default: ``0``)
    """

    def __init__(self, partition: RowPartition, comm: Communicator, seed: int = 0) -> None:
        super().__init__("qr", seed, rows=PartitionedRows(comm))
        partition.check_world_size(comm.world_size)
        self.partition, self.comm = partition, comm
        self.start, self.stop = partition.range(comm.rank)

    def layout(self) -> dict:
        return {"num_nodes": self.partition.num_nodes, "bounds": list(self.partition.bounds), "rank": self.comm.rank}

    def random(self, shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int) -> Tensor:
        """Rows ``[start, stop)`` of the ``n x k`` Gaussian draw with ``seed`` (``O(n k)`` transient)."""
        full = super().random((self.partition.num_nodes, shape[-1]), dtype, device, seed)
        return full[self.start:self.stop].clone()

    def get_extra_state(self) -> dict:
        return self.layout()

    def set_extra_state(self, state: dict) -> None:
        self._check_layout(state)

    def _check_layout(self, state: dict) -> None:
        if state == self.layout():
            return
        saved_world = len(state.get("bounds", [0])) - 1
        raise ValueError(
            f"this amortized basis shard was saved by rank {state.get('rank')} of world_size={saved_world} "
            f"(node bounds {tuple(state.get('bounds', ()))}, num_nodes={state.get('num_nodes')}), but this run is "
            f"rank {self.comm.rank} of world_size={self.comm.world_size} with bounds {self.partition.bounds}. "
            f"Per-rank state_dicts only reload under the same partition; save with "
            f"lowrank_gnn.distributed.save_checkpoint and load with load_checkpoint to resume on any number of ranks")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        layout = state_dict.get(prefix + "_extra_state")
        if layout is not None:
            self._check_layout(layout)  # before the weight is materialised with a foreign shape
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f"rows=[{self.start}, {self.stop}) of {self.partition.num_nodes}, {super().extra_repr()}"


class DistributedAmortizedBackend(AmortizedBackend):
    r"""Amortized eigendecomposition (Li et al., NeurIPS 2024) of a row-distributed operator.

    Same method, losses, ordering and sign convention as
    :class:`~lowrank_gnn.eigen.AmortizedBackend`; the operator is a
    :class:`~lowrank_gnn.distributed.RowPartitionedOperator` (or its deflated form) and every
    rank holds its rows of :math:`W`, :math:`U` and :math:`A U` (see the module docstring for
    the TSQR step and what is communicated). Returned eigenvalues ``(k,)`` are identical on every
    rank; eigenvectors are this rank's rows ``(n_r, k)``.

    **Losses across ranks.** The training objective is the sum over ranks of the losses each
    rank backpropagates (:mod:`~lowrank_gnn.distributed.comm`). So each rank's ``aux_loss`` is
    the global eigen loss divided by ``world_size``; the eigenvalues (all-reduced) carry
    gradients to every rank's rows of :math:`W` and to every rank's operator values.

    Every call is collective: all ranks must call the backend (and read nothing rank-specific
    in between). :attr:`diagnostics` is computed during the call, so reading it on one rank only
    is safe. ``init="exact"`` and :meth:`fit` (L-BFGS, whose line search would decide
    differently on each rank) are not available; train ``W`` with Adam, which acts elementwise
    and so reproduces the single-process run.

    Args:
        k (int): number of eigenpairs.
        partition (RowPartition): the node ranges of the operator.
        comm (Communicator, optional): the process group. (default: ``Communicator()``)
        which (str): ``"largest"``, ``"smallest"`` or ``"magnitude"``. (default: ``"largest"``)
        loss (str): ``"brockett"``, ``"convex"`` or ``"trace"``. (default: ``"brockett"``)
        eta (float): weight of the eigen loss. (default: ``1.0``)
        seed (int): seed of the random initialisation. (default: ``0``)

    Shapes:
        operator ``(n, n)`` split by rows; :attr:`basis.weight` ``(n_r, k)``.

    Example:
        >>> from lowrank_gnn.distributed import Communicator, DistributedAmortizedBackend, partition_graph
        >>> from lowrank_gnn.distributed import partitioned_normalized_adjacency
        >>> from lowrank_gnn.testing import path_graph
        >>> comm, data = Communicator(), path_graph(50)   # here one process: rank 0 of 1
        >>> graph = partition_graph(data.edge_index, data.num_nodes, num_parts=comm.world_size)
        >>> op = partitioned_normalized_adjacency(graph.part(comm.rank)[0], None, graph.partition, comm)
        >>> backend = DistributedAmortizedBackend(8, graph.partition, comm)
        >>> pairs = backend(op)
        >>> pairs.eigenvalues.shape, pairs.eigenvectors.shape   # eigenvectors: this rank's rows
        (torch.Size([8]), torch.Size([50, 8]))
    """

    def __init__(self, k: int, partition: RowPartition, comm: Optional[Communicator] = None,
                 which: str = "largest", loss: str = "brockett", eta: float = 1.0, seed: int = 0) -> None:
        super().__init__(k, which=which, loss=loss, eta=eta, init="random", seed=seed)
        if not isinstance(partition, RowPartition):
            raise TypeError(f"partition must be a RowPartition (got {type(partition).__name__})")
        self.comm = comm if comm is not None else Communicator()
        self.partition = partition
        self.basis = PartitionedBasis(partition, self.comm, seed)

    def basis_shape(self, op) -> Tuple[int, ...]:
        return (op.num_local_rows, self.k)

    def _check_operator(self, op) -> None:
        partitioned = isinstance(op, (RowPartitionedOperator, PartitionedComponentDeflatedOperator))
        if not partitioned or op.partition != self.partition:
            raise ValueError(f"{type(self).__name__} needs a row-partitioned operator with partition "
                             f"{self.partition} (from partitioned_normalized_adjacency); got {op!r}")

    @torch.no_grad()
    def initialize(self, op) -> None:
        """(Re)start the basis: this rank's rows of the seeded Gaussian ``W`` (collective-free)."""
        self._check_operator(op)
        super().initialize(op)

    def solve(self, op) -> EigenPairs:
        """The step of :class:`~lowrank_gnn.eigen.AmortizedBackend`, its sums over rows all-reduced (collective)."""
        self._check_operator(op)
        return super().solve(op)

    def fit(self, op, steps: int = 2000, tol: Optional[float] = None) -> EigenDiagnostics:
        raise ValueError("fit() runs L-BFGS, whose line search would take different decisions on each rank; "
                         "train the basis with Adam on pairs.aux_loss instead (Adam acts elementwise, so each "
                         "rank's rows move exactly as in one process)")

    def extra_repr(self) -> str:
        return (f"k={self.k}, which={self.which!r}, loss={self.loss!r}, eta={self.eta}, "
                f"rank={self.comm.rank}/{self.comm.world_size}")


__all__ = ["DistributedAmortizedBackend", "PartitionedBasis", "PartitionedRows", "tsqr_orthonormalize",
           "partitioned_canonical_signs"]
