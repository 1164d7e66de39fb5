r"""Collectives with autograd, byte counting and clear errors: the only place that calls
:mod:`torch.distributed`.

Everything the distributed pieces of the library exchange goes through a
:class:`Communicator`: the thin ``n x k`` basis (all-gather of row blocks), ``k x k`` or
``k``-sized reductions, and small checks. Each call adds to :attr:`Communicator.stats` the
bytes **sent per rank** under the bandwidth-optimal ring algorithms (the convention of
nccl-tests' "bus bandwidth"):

============================  ==========================================
collective                    bytes sent per rank
============================  ==========================================
all-gather of blocks of b     :math:`(P - 1)\, b`
all-to-all                    the rows sent to other ranks
reduce-scatter of m in all    :math:`(P - 1)\, m / P`
all-reduce of m               :math:`2 (P - 1)\, m / P`
broadcast of m                :math:`m` (an upper bound, pipelined tree)
============================  ==========================================

**Gradients.** The differentiable collectives follow one convention: the training objective
is the *sum over ranks* of the losses each rank backpropagates. So the backward of an
all-reduce-sum is an all-reduce-sum of the incoming gradients, and the backward of an
all-gather is a reduce-scatter (each rank receives the sum, over ranks, of the gradients
with respect to its block). A replicated parameter's full gradient is then the sum of its
per-rank gradients (``DistributedDataParallel`` averages, i.e. divides that sum by ``P``).

**Failures.** A collective that fails (a peer died or the process group's ``timeout``
expired) raises :class:`CollectiveError` naming the collective, the rank and the world size,
instead of the backend's bare message; set ``timeout=`` in
:func:`torch.distributed.init_process_group` to bound how long a rank waits for a dead peer.

With ``world_size == 1`` (or without an initialised process group) every collective is the
identity and nothing is counted, so the same code runs in one process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor


class CollectiveError(RuntimeError):
    """A collective failed on this rank: a peer failed, exited, or did not arrive in time."""


@dataclass
class CommStats:
    """Bytes sent per rank and number of calls, per collective name (see the module docstring)."""

    bytes: Dict[str, int] = field(default_factory=dict)
    calls: Dict[str, int] = field(default_factory=dict)

    def add(self, name: str, num_bytes: float) -> None:
        self.bytes[name] = self.bytes.get(name, 0) + int(round(num_bytes))
        self.calls[name] = self.calls.get(name, 0) + 1

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def reset(self) -> None:
        self.bytes.clear()
        self.calls.clear()


class Communicator:
    r"""Rank, world size and counted collectives of one process group.

    Args:
        group (ProcessGroup, optional): the group to communicate in. Give the partitioned
            operator its own group (``torch.distributed.new_group()``) when the model is also
            wrapped in ``DistributedDataParallel``, so that the two never interleave on one
            group. (default: the default group, or a single process when
            :mod:`torch.distributed` is not initialised)

    Example:
        >>> import torch
        >>> from lowrank_gnn.distributed import Communicator
        >>> comm = Communicator()   # the default group, or one process without init_process_group
        >>> comm.all_reduce(torch.ones(3, requires_grad=True)).shape   # differentiable
        torch.Size([3])
        >>> comm.world_size, comm.stats.total_bytes
        (1, 0)
    """

    def __init__(self, group: Optional["dist.ProcessGroup"] = None) -> None:
        self.group = group
        self.distributed = dist.is_available() and dist.is_initialized()
        if group is not None and not self.distributed:
            raise ValueError("group was given but torch.distributed is not initialised; call "
                             "torch.distributed.init_process_group first")
        self.rank = dist.get_rank(group) if self.distributed else 0
        self.world_size = dist.get_world_size(group) if self.distributed else 1
        self.stats = CommStats()

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, world_size={self.world_size})"

    # -- error handling ------------------------------------------------------------------
    def _run(self, name: str, call, *args, **kwargs) -> None:
        try:
            call(*args, group=self.group, **kwargs)
        except RuntimeError as error:  # DistBackendError is a RuntimeError
            raise CollectiveError(
                f"{name} failed on rank {self.rank} of world_size={self.world_size}: another rank failed, "
                f"exited or did not reach this collective within the process group's timeout "
                f"(init_process_group(timeout=...)). "
                f"Check the other ranks' logs for the first error. Backend message: {error}") from error

    # -- plain (non-differentiable) collectives ---------------------------------------------
    def all_reduce_(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """In-place all-reduce (``op`` = ``"sum"``, ``"max"`` or ``"min"``) without autograd."""
        if self.world_size > 1:
            reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
            self.stats.add("all_reduce", 2 * (self.world_size - 1) / self.world_size * _nbytes(tensor))
            self._run("all_reduce", dist.all_reduce, tensor, op=reduce_op)
        return tensor

    def all_gather_blocks(self, block: Tensor, sizes: Sequence[int]) -> List[Tensor]:
        """All ranks' blocks (rank ``r``'s has ``sizes[r]`` rows), without autograd.

        Gloo needs equal shapes, so blocks are padded to the largest (the padding is sent and
        counted).

        Shapes:
            block ``(sizes[rank], *rest)``; returns ``world_size`` tensors ``(sizes[r], *rest)``.
        """
        if self.world_size == 1:
            return [block]
        rows = max(sizes)
        padded = block.new_zeros((rows, *block.shape[1:]))
        padded[: block.shape[0]] = block
        out = [torch.empty_like(padded) for _ in range(self.world_size)]
        self.stats.add("all_gather", (self.world_size - 1) * _nbytes(padded))
        self._run("all_gather", dist.all_gather, out, padded.contiguous())
        return [part[:size] for part, size in zip(out, sizes, strict=True)]

    def reduce_scatter_blocks(self, full: Tensor, sizes: Sequence[int]) -> Tensor:
        """Sum over ranks of ``full``, of which this rank keeps its row block; without autograd.

        Shapes:
            full ``(sum(sizes), *rest)``; returns ``(sizes[rank], *rest)``.
        """
        if self.world_size == 1:
            return full
        rows = max(sizes)
        pieces = list(torch.split(full, list(sizes)))
        padded = [piece.new_zeros((rows, *full.shape[1:])) for piece in pieces]
        for pad, piece in zip(padded, pieces, strict=True):
            pad[: piece.shape[0]] = piece
        out = torch.empty_like(padded[0])
        self.stats.add("reduce_scatter", (self.world_size - 1) * _nbytes(padded[0]))
        self._run("reduce_scatter", dist.reduce_scatter, out, padded)
        return out[: sizes[self.rank]]

    def all_to_all_blocks(self, tensor: Tensor, send_sizes: Sequence[int], recv_sizes: Sequence[int]) -> Tensor:
        """Rows ``[sum(send_sizes[:r]), ...)`` of ``tensor`` go to rank ``r``; without autograd.

        Shapes:
            tensor ``(sum(send_sizes), *rest)``; returns ``(sum(recv_sizes), *rest)``, grouped by source rank.
        """
        if self.world_size == 1:
            return tensor
        out = tensor.new_empty((sum(recv_sizes), *tensor.shape[1:]))
        row_bytes = tensor[:1].numel() * tensor.element_size() if tensor.dim() > 1 else tensor.element_size()
        self.stats.add("all_to_all", (sum(send_sizes) - send_sizes[self.rank]) * row_bytes)
        self._run("all_to_all", dist.all_to_all_single, out, tensor.contiguous(),
                  output_split_sizes=list(recv_sizes), input_split_sizes=list(send_sizes))
        return out

    def exchange_sizes(self, send_sizes: Sequence[int], device: Optional[torch.device] = None) -> List[int]:
        """How many rows each rank will send to this one, given how many this one sends to each
        (``device``: where the backend communicates, e.g. the GPU for NCCL)."""
        sizes = torch.tensor(list(send_sizes), dtype=torch.long, device=device)
        return [int(v) for v in self.all_to_all_blocks(sizes, [1] * self.world_size, [1] * self.world_size)]

    def broadcast_(self, tensor: Tensor, src: int = 0) -> Tensor:
        """In-place broadcast from rank ``src`` (a rank of this group) without autograd."""
        if self.world_size > 1:
            self.stats.add("broadcast", _nbytes(tensor))
            source = dist.get_global_rank(self.group, src) if self.group is not None else src
            self._run("broadcast", dist.broadcast, tensor, src=source)
        return tensor

    def barrier(self) -> None:
        if self.world_size > 1:
            self._run("barrier", dist.barrier)

    # -- differentiable collectives ---------------------------------------------------------
    def all_reduce(self, tensor: Tensor) -> Tensor:
        """Sum over ranks, differentiable (backward: all-reduce-sum of the gradients)."""
        if self.world_size == 1:
            return tensor
        return _AllReduceSum.apply(tensor, self)

    def all_gather_rows(self, block: Tensor, sizes: Sequence[int]) -> Tensor:
        """Concatenate every rank's row block, differentiable (backward: reduce-scatter).

        Shapes:
            block ``(sizes[rank], *rest)``; returns ``(sum(sizes), *rest)``.
        """
        if self.world_size == 1:
            return block
        return _AllGatherRows.apply(block, self, tuple(sizes))

    def all_to_all_rows(self, rows: Tensor, send_sizes: Sequence[int], recv_sizes: Sequence[int]) -> Tensor:
        """:meth:`all_to_all_blocks` with autograd (backward: the reverse exchange)."""
        if self.world_size == 1:
            return rows
        return _AllToAllRows.apply(rows, self, tuple(send_sizes), tuple(recv_sizes))


class _AllToAllRows(torch.autograd.Function):
    """Rows sent to other ranks. The adjoint of a permutation of rows between ranks is the reverse
    exchange: each received row's gradient goes back to the rank (and row) that sent it."""

    @staticmethod
    def forward(ctx, rows: Tensor, comm: Communicator, send_sizes, recv_sizes) -> Tensor:
        ctx.comm, ctx.send_sizes, ctx.recv_sizes = comm, send_sizes, recv_sizes
        return comm.all_to_all_blocks(rows, send_sizes, recv_sizes)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return ctx.comm.all_to_all_blocks(grad.contiguous(), ctx.recv_sizes, ctx.send_sizes), None, None, None


class _AllReduceSum(torch.autograd.Function):
    """``y = sum_r x_r`` on every rank. For the objective ``sum_r L_r(y)``,
    ``dL/dx_r = sum_s dL_s/dy``: the backward is the same all-reduce of the gradients."""

    @staticmethod
    def forward(ctx, tensor: Tensor, comm: Communicator) -> Tensor:
        ctx.comm = comm
        return comm.all_reduce_(tensor.clone())

    @staticmethod
    def backward(ctx, grad: Tensor):
        return ctx.comm.all_reduce_(grad.contiguous().clone()), None


class _AllGatherRows(torch.autograd.Function):
    """``Y = [X_0; ...; X_{P-1}]`` on every rank. For ``sum_s L_s(Y)``, rank ``r``'s block gets
    ``sum_s (dL_s/dY)[rows of r]``: a reduce-scatter of the gradients."""

    @staticmethod
    def forward(ctx, block: Tensor, comm: Communicator, sizes) -> Tensor:
        ctx.comm, ctx.sizes = comm, sizes
        return torch.cat(comm.all_gather_blocks(block.contiguous(), sizes))

    @staticmethod
    def backward(ctx, grad: Tensor):
        return ctx.comm.reduce_scatter_blocks(grad.contiguous(), ctx.sizes), None, None


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


__all__ = ["Communicator", "CommStats", "CollectiveError"]
