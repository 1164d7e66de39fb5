r"""A symmetric graph operator split by rows across ranks.

Rank ``r`` stores the rows ``[b_r, b_{r+1})`` of :math:`A` (CSR, column indices global),
about ``nnz / P`` entries. A product with a row-distributed thin matrix,
:math:`(A U)_r = A_{r,:} U`, all-gathers :math:`U` (``n x k``) and multiplies the local
block: per rank ``O(nnz / P + n k)`` memory and ``(P - 1) n k / P`` elements sent. With
``exchange="halo"`` only the rows of :math:`U` that the local block references (its halo,
``h_r`` rows) are exchanged, by one all-to-all: ``O(nnz / P + (n_r + h_r) k)`` memory and the
halo rows sent, which a locality-preserving partition (METIS) makes much smaller than ``n``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .._validation import check_choice, check_finite, check_floating, check_index_dtype, check_same_device
from ..operators.base import DeflatedOperatorBase, symmetry_tolerance
from ..operators.sparse import CSROperator, SparsityPattern
from .comm import Communicator
from .partition import RowPartition


_WHOLE_MATRIX = ("a RowPartitionedOperator holds only this rank's rows of the matrix, so backends that need the "
                 "whole matrix (exact, stable, batched_dc) cannot use it; use "
                 "lowrank_gnn.distributed.DistributedAmortizedBackend (local_dense() gives the rows)")


class RowPartitionedOperator(CSROperator):
    r"""Rows ``[start, stop)`` of a symmetric sparse ``n x n`` operator, on one rank.

    A :class:`~lowrank_gnn.operators.CSROperator` (the operator protocol) for row-distributed
    vectors: :meth:`matmul` takes this rank's rows of ``X`` and returns this rank's rows of
    ``A X`` (one exchange of ``X``, see ``exchange``); :attr:`shape` is the global ``(n, n)``. Values are
    differentiable (gradients reach learnable edge weights on every rank). Checks
    (:meth:`check_finite`, :attr:`symmetric`) are collective, so all ranks raise together.
    Build it with :func:`partitioned_normalized_adjacency`.

    Args:
        row (LongTensor): local row of each stored entry, in ``[0, stop - start)``.
        col (LongTensor): global column, in ``[0, n)``.
        value (Tensor): the entries; duplicates are summed.
        partition (RowPartition): the node ranges of all ranks.
        comm (Communicator): rank, world size, collectives.
        degree (Tensor, optional): this rank's rows of the degrees of a normalized adjacency.
        exchange (str): how :meth:`matmul` obtains the other ranks' rows of ``X``: ``"allgather"``
            (all ``n`` rows) or ``"halo"`` (only the rows this block references, by one all-to-all
            planned on first use). (default: ``"allgather"``)

    Shapes:
        row, col, value ``(nnz_r,)``; degree ``(n_r,)``.
    """

    EXCHANGES = ("allgather", "halo")

    def __init__(self, row: Tensor, col: Tensor, value: Tensor, partition: RowPartition, comm: Communicator,
                 degree: Optional[Tensor] = None, exchange: str = "allgather") -> None:
        self.exchange = check_choice("exchange", exchange, self.EXCHANGES)
        partition.check_world_size(comm.world_size)
        self.partition, self.comm = partition, comm
        self.start, self.stop = partition.range(comm.rank)
        self.num_nodes = partition.num_nodes
        self.num_local_rows = self.stop - self.start
        pattern = SparsityPattern(torch.stack([row.long(), col.long()]), self.num_nodes, num_rows=self.num_local_rows)
        self.row, self.col, self.crow = pattern.row, pattern.col, pattern.crow
        self.value = pattern.store(value)  # sorted, duplicates summed
        self.degree = degree
        self._transpose: Optional[Tuple[Tensor, Tensor, Tensor]] = None
        self._symmetric: Optional[bool] = None
        self._frobenius: Optional[Tensor] = None
        self._halo: Optional[dict] = None

    def _halo_plan(self) -> dict:
        """Which rows to send to and receive from each rank (collective, once per operator)."""
        if self._halo is None:
            comm, start = self.comm, self.start
            needed = torch.unique(self.col)
            remote = needed[(needed < start) | (needed >= self.stop)]                     # sorted global ids
            bounds = torch.tensor(self.partition.bounds[1:], device=self.device)
            owner = torch.searchsorted(bounds, remote, right=True)
            recv_sizes = torch.bincount(owner, minlength=comm.world_size).tolist()
            send_sizes = comm.exchange_sizes(recv_sizes, self.device)
            requested = comm.all_to_all_blocks(remote, recv_sizes, send_sizes)             # ids others need
            inside = (self.col >= start) & (self.col < self.stop)
            column = torch.where(inside, self.col - start,
                                 self.num_local_rows + torch.searchsorted(remote, self.col))
            self._halo = {"send_index": requested - start, "send_sizes": send_sizes, "recv_sizes": recv_sizes,
                          "column": column, "width": self.num_local_rows + remote.numel()}
        return self._halo

    @property
    def halo_size(self) -> int:
        """``h_r``: rows of other ranks this block references (plans the halo exchange; collective)."""
        return self._halo_plan()["width"] - self.num_local_rows

    def block_columns(self) -> Tuple[Tensor, int]:
        """Column of each stored entry in the exchanged ``X`` and its number of rows ``m``."""
        if self.exchange == "allgather":
            return self.col, self.num_nodes
        plan = self._halo_plan()
        return plan["column"], plan["width"]

    def block_pattern(self) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """``(crow, column, (n_r, m))`` of the local block in the exchanged ``X`` (see :meth:`gather`)."""
        col, width = self.block_columns()
        return self.crow, col, (self.num_local_rows, width)

    def block_transpose(self) -> Tuple[Tensor, Tensor, Tensor]:
        """(crow, local row, perm) of the block's transpose ``(m, n_r)``."""
        if self._transpose is None:
            col, width = self.block_columns()
            perm = torch.argsort(col * self.num_local_rows + self.row)
            crow = torch.zeros(width + 1, dtype=torch.long, device=self.device)
            crow[1:] = torch.bincount(col, minlength=width).cumsum(0)
            self._transpose = (crow, self.row[perm], perm)
        return self._transpose

    def gather(self, x: Tensor) -> Tensor:
        """The rows of ``x`` the local block needs, differentiable: ``(n_r, d) -> (m, d)``
        (all ``n`` rows in global order, or this rank's rows followed by its halo)."""
        if self.exchange == "allgather":
            return self.comm.all_gather_rows(x, self.partition.sizes)
        plan = self._halo_plan()
        received = self.comm.all_to_all_rows(x[plan["send_index"]], plan["send_sizes"], plan["recv_sizes"])
        return torch.cat([x, received])

    def matmul(self, x: Tensor) -> Tensor:
        """This rank's rows of ``A X`` from this rank's rows of ``X`` (collective).

        Shapes:
            x ``(n_r,)`` or ``(n_r, d)``; returns the same.
        """
        if x.dim() not in (1, 2) or x.shape[0] != self.num_local_rows:
            raise ValueError(f"x must hold this rank's rows, shape (n_r,) or (n_r, d) with n_r={self.num_local_rows} "
                             f"(got shape {tuple(x.shape)})")
        columns = x.unsqueeze(-1) if x.dim() == 1 else x
        out = self.multiply_block(self.gather(columns.to(self.dtype)))
        return out.squeeze(-1) if x.dim() == 1 else out

    def local_dense(self) -> Tensor:
        """The dense local block ``(n_r, n)`` (small graphs, tests)."""
        dense = self.value.new_zeros(self.num_local_rows * self.num_nodes)
        dense = dense.index_put((self.row * self.num_nodes + self.col,), self.value)
        return dense.view(self.num_local_rows, self.num_nodes)

    def to_dense(self) -> Tensor:
        """Raises: no rank holds the whole matrix (:meth:`local_dense` gives this rank's rows)."""
        raise ValueError(_WHOLE_MATRIX)

    def to_scipy(self):
        """Raises, as :meth:`to_dense`."""
        raise ValueError(_WHOLE_MATRIX)

    @torch.no_grad()
    def frobenius_norm(self) -> Tensor:
        """:math:`\\|A\\|_F` of the whole operator (collective on the first call, then cached; detached)."""
        if self._frobenius is None:
            # squares summed in float64, so that float32 entries above ~1e19 or below ~1e-19 neither
            # overflow nor underflow (float64 holds the square of every float32)
            squares = self.comm.all_reduce_(self.value.detach().double().square().sum().reshape(1))
            self._frobenius = squares[0].sqrt().to(self.value.dtype)
        return self._frobenius

    def check_finite(self) -> None:
        """Raise on every rank if any rank's entries contain NaN/Inf (collective)."""
        bad = (~torch.isfinite(self.value.detach())).sum().to(torch.float64).reshape(1)
        self.comm.all_reduce_(bad)
        if bad.item():
            check_finite(f"the operator's block on rank {self.comm.rank}", self.value.detach())
            raise ValueError(f"the operator's values contain {int(bad.item())} NaN/Inf entries on other ranks; "
                             f"clean the input first")

    @property
    def symmetric(self) -> bool:
        r"""Randomised check of :math:`A = A^T` (collective): :math:`x^T A y = y^T A x` for fixed
        random ``x, y``, to ``sqrt(n)`` times :func:`~lowrank_gnn.operators.base.symmetry_tolerance`
        of :math:`\|A\|_F \|x\| \|y\|` (rounding of an ``n``-term dot product grows like ``sqrt(n)``).
        Exact transposition would need every rank's cut entries; for a non-symmetric ``A`` this
        test fails with probability 1 over the draw.
        """
        if self._symmetric is None:
            with torch.no_grad():
                generator = torch.Generator().manual_seed(0)
                probes = torch.randn(self.num_nodes, 2, generator=generator, dtype=torch.float64)
                probes = probes[self.start:self.stop].to(dtype=self.dtype, device=self.device)
                product = self.matmul(probes)
                sums = torch.stack([(probes[:, 0] * product[:, 1]).sum(), (probes[:, 1] * product[:, 0]).sum(),
                                    probes.square().sum()]).to(torch.float64)
                self.comm.all_reduce_(sums)
                tolerance = self.num_nodes ** 0.5 * symmetry_tolerance(self.dtype)
                scale = float(self.frobenius_norm()) * float(sums[2]) + torch.finfo(torch.float64).tiny
                self._symmetric = abs(float(sums[0] - sums[1])) <= tolerance * scale
        return self._symmetric

    def __repr__(self) -> str:
        return (f"RowPartitionedOperator(num_nodes={self.num_nodes}, rows=[{self.start}, {self.stop}), "
                f"nnz_local={self.nnz}, rank={self.comm.rank}/{self.comm.world_size})")


def _check_local_graph(edge_index: Tensor, edge_weight: Optional[Tensor], partition: RowPartition,
                       comm: Communicator) -> Tensor:
    partition.check_world_size(comm.world_size)
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        shape = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index).__name__
        raise ValueError(f"edge_index must be a LongTensor of shape (2, num_local_edges) (got {shape})")
    check_index_dtype("edge_index", edge_index)
    start, stop = partition.range(comm.rank)
    index = edge_index.long()
    if index.numel() and (int(index[0].min()) < start or int(index[0].max()) >= stop):
        raise ValueError(f"rank {comm.rank} owns rows [{start}, {stop}): every edge_index[0] must lie there "
                         f"(got min {int(index[0].min())}, max {int(index[0].max())}); give each rank the edges of "
                         f"its own nodes, e.g. PartitionedGraph.part(rank)")
    if index.numel() and (int(index[1].min()) < 0 or int(index[1].max()) >= partition.num_nodes):
        raise ValueError(f"edge_index[1] must lie in [0, num_nodes) = [0, {partition.num_nodes}) "
                         f"(got min {int(index[1].min())}, max {int(index[1].max())})")
    if edge_weight is not None:
        check_floating("edge_weight", edge_weight)
        check_same_device("edge_weight", edge_weight, "edge_index", edge_index)
        if edge_weight.shape != (index.shape[1],):
            raise ValueError(f"edge_weight must have shape (num_local_edges,) = ({index.shape[1]},) "
                             f"(got {tuple(edge_weight.shape)})")
        if bool((edge_weight.detach() < 0).any()):
            raise ValueError(f"normalized adjacency needs non-negative edge weights "
                             f"(got min edge_weight={float(edge_weight.min()):.4g} on rank {comm.rank})")
    return index


def partitioned_normalized_adjacency(edge_index: Tensor, edge_weight: Optional[Tensor], partition: RowPartition,
                                     comm: Communicator, add_self_loops: bool = True,
                                     dtype: Optional[torch.dtype] = None,
                                     exchange: str = "allgather") -> RowPartitionedOperator:
    r"""This rank's rows of :math:`\hat A = \hat D^{-1/2}(A + I)\hat D^{-1/2}` (GCN normalisation).

    Equals rows ``[start, stop)`` of :func:`~lowrank_gnn.operators.normalized_adjacency` for an
    undirected graph: the degrees are column sums as in ``gcn_norm``, summed over ranks by one
    all-reduce of ``n`` numbers (differentiable, so edge-weight gradients cross ranks).

    Args:
        edge_index (LongTensor): this rank's stored entries ``(i, j)``, ``i`` in its range
            (both directions of every edge across ranks: see :func:`partition_graph`).
        edge_weight (Tensor, optional): their non-negative weights. (default: all ones)
        partition (RowPartition): the node ranges.
        comm (Communicator): the process group.
        add_self_loops (bool): add missing self-loops with weight 1. (default: ``True``)
        dtype (torch.dtype, optional): dtype of unit weights when ``edge_weight`` is ``None``.
            (default: ``torch.get_default_dtype()``)
        exchange (str): ``"allgather"`` or ``"halo"`` (see :class:`RowPartitionedOperator`).
            (default: ``"allgather"``)

    Shapes:
        edge_index ``(2, E_r)``, edge_weight ``(E_r,)``.
    """
    index = _check_local_graph(edge_index, edge_weight, partition, comm)
    start, stop = partition.range(comm.rank)
    if edge_weight is None:
        edge_weight = torch.ones(index.shape[1], dtype=dtype or torch.get_default_dtype(), device=index.device)
    row, col, weight = index[0] - start, index[1], edge_weight
    if add_self_loops:  # as torch_geometric.utils.add_remaining_self_loops, on the local nodes
        loop = row + start == col
        loop_weight = weight.new_ones(stop - start)
        loop_weight = loop_weight.index_put((row[loop],), weight[loop])
        keep = ~loop
        local = torch.arange(stop - start, device=index.device)
        row, col = torch.cat([row[keep], local]), torch.cat([col[keep], local + start])
        weight = torch.cat([weight[keep], loop_weight])
    # gcn_norm's degree is the column sum; each rank holds part of every column: all-reduce
    full = comm.all_reduce(weight.new_zeros(partition.num_nodes).index_add(0, col, weight))
    inv_sqrt = full.pow(-0.5)
    inv_sqrt = torch.where(torch.isinf(inv_sqrt), torch.zeros_like(inv_sqrt), inv_sqrt)  # degree 0: zero row
    value = inv_sqrt[row + start] * weight * inv_sqrt[col]
    return RowPartitionedOperator(row, col, value, partition, comm, degree=full[start:stop], exchange=exchange)


@torch.no_grad()
def partitioned_connected_components(op: RowPartitionedOperator) -> Tensor:
    """Each local node's component, labelled by the smallest global node id in it (collective).

    Components inside the local block come from SciPy; labels then spread across cut edges
    (minimum over neighbours, then over the local component) until no rank changes, one
    all-gather of the ``n`` labels per round. The rounds are bounded by the number of cut edges
    on the shortest paths inside a component (small for a locality-preserving partition; the
    diameter in the worst case, e.g. a path whose nodes alternate between ranks).

    Shapes:
        returns ``(n_r,)`` int64 global labels.
    """
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    start, n_r = op.start, op.num_local_rows
    nonzero = op.value != 0
    row, col = op.row[nonzero], op.col[nonzero]
    inside = (col >= start) & (col < op.stop)
    entries = (row[inside].cpu().numpy(), (col[inside] - start).cpu().numpy())
    block = sp.coo_matrix((np.ones(int(inside.sum())), entries), shape=(n_r, n_r))
    _, local_component = connected_components(block, directed=True, connection="weak")
    local_component = torch.as_tensor(local_component, dtype=torch.long, device=op.device)
    count = int(local_component.max()) + 1

    def settle(labels: Tensor) -> Tensor:  # minimum label over each local component
        lowest = labels.new_full((count,), op.num_nodes).scatter_reduce(0, local_component, labels, "amin")
        return lowest[local_component]

    labels = settle(torch.arange(start, op.stop, device=op.device))
    while True:
        full = torch.cat(op.comm.all_gather_blocks(labels, op.partition.sizes))
        updated = labels.scatter_reduce(0, row, full[col], "amin")
        updated = settle(updated)
        changed = (updated != labels).sum().to(torch.float64).reshape(1)
        labels = updated
        if not op.comm.all_reduce_(changed).item():
            return labels


class PartitionedComponentDeflatedOperator(DeflatedOperatorBase):
    r"""This rank's rows of :math:`\hat A - P_0`, :math:`P_0 = \sum_C v_C v_C^T` (cf.
    :class:`~lowrank_gnn.operators.ComponentDeflatedOperator`), for row-distributed vectors.

    :math:`v_C = D^{1/2} 1_C / \|D^{1/2} 1_C\|`. Applying :math:`P_0` sums
    :math:`v_C^T x` over each component: components inside one rank are summed locally, and
    only the ``c_s`` components that span several ranks are all-reduced (``c_s x d`` numbers).
    Build it with :func:`partitioned_deflate_components`.

    Shapes:
        entries, labels ``(n_r,)`` (labels: local component ids); ``shared_slot`` ``(c_r,)``.
    """

    def __init__(self, base: RowPartitionedOperator, entries: Tensor, labels: Tensor, shared_slot: Tensor,
                 num_shared: int, num_components: int, value: float = 1.0) -> None:
        super().__init__(base)
        self.base: RowPartitionedOperator = base
        self.entries, self.labels = entries, labels
        self.shared_slot, self.num_shared = shared_slot, int(num_shared)
        self.num_components = int(num_components)
        self.value = float(value)
        self.comm, self.partition = base.comm, base.partition
        self._frobenius: Optional[Tensor] = None

    @property
    def num_local_rows(self) -> int:
        return self.base.num_local_rows

    def check_finite(self) -> None:
        self.base.check_finite()

    def to_dense(self) -> Tensor:
        return self.base.to_dense()  # raises: no rank holds the whole matrix

    def to_scipy(self):
        return self.base.to_scipy()  # raises, likewise

    def component_sums(self, x: Tensor) -> Tensor:
        """:math:`v_C^T x` for this rank's components (shared ones summed over ranks). ``(c_r, d)``."""
        count = int(self.shared_slot.numel())
        sums = x.new_zeros(count, x.shape[-1]).index_add(0, self.labels, self.entries.unsqueeze(-1) * x)
        if self.num_shared:
            shared = self.shared_slot >= 0
            buffer = x.new_zeros(self.num_shared, x.shape[-1]).index_copy(0, self.shared_slot[shared], sums[shared])
            total = self.comm.all_reduce(buffer)
            sums = sums.index_copy(0, shared.nonzero().view(-1), total[self.shared_slot[shared]])
        return sums

    def project(self, x: Tensor) -> Tensor:
        """This rank's rows of :math:`P_0 X` (collective when components span ranks)."""
        columns = x.unsqueeze(-1) if x.dim() == 1 else x
        out = self.value * self.entries.unsqueeze(-1) * self.component_sums(columns)[self.labels]
        return out.squeeze(-1) if x.dim() == 1 else out

    @torch.no_grad()
    def frobenius_norm(self) -> Tensor:
        r""":math:`\|A - \mu V V^T\|_F^2 = \|A\|_F^2 - 2\mu\, v^T A v + c \mu^2` with
        :math:`v = \sum_C v_C` (edges never join two components, so the cross terms vanish).
        Collective on the first call, then cached."""
        if self._frobenius is None:
            entries = self.entries.detach()
            cross = self.comm.all_reduce_((entries * self.base.matmul(entries).detach()).sum().reshape(1))
            squared = (self.base.frobenius_norm().square() - 2 * self.value * cross[0]
                       + self.num_components * self.value ** 2)
            self._frobenius = squared.clamp_min(0).sqrt()
        return self._frobenius


def partitioned_deflate_components(op: RowPartitionedOperator) -> PartitionedComponentDeflatedOperator:
    r"""The row-distributed :math:`\hat A - P_0` (collective; cf. :func:`~lowrank_gnn.operators.deflate_components`).

    ``op`` must come from :func:`partitioned_normalized_adjacency`. Components of zero degree
    get no vector, as in the single-process version.
    """
    if op.degree is None:
        raise ValueError("partitioned_deflate_components needs an operator built by partitioned_normalized_adjacency "
                         "(it uses its degrees)")
    comm = op.comm
    global_labels = partitioned_connected_components(op)
    roots, local = torch.unique(global_labels, return_inverse=True)                 # this rank's components
    # components present on several ranks: all-gather the (few, small) root lists once
    counts_per_rank = comm.all_gather_blocks(torch.tensor([roots.numel()], device=op.device), [1] * comm.world_size)
    sizes = [int(s) for s in torch.cat(counts_per_rank)]
    every = torch.cat(comm.all_gather_blocks(roots, sizes))
    unique, counts = torch.unique(every, return_counts=True)
    shared_roots = unique[counts > 1]
    if shared_roots.numel():
        position = torch.searchsorted(shared_roots, roots).clamp_max(shared_roots.numel() - 1)
        shared_slot = torch.where(shared_roots[position] == roots, position, torch.full_like(position, -1))
    else:
        shared_slot = torch.full_like(roots, -1)
    root = op.degree.clamp_min(0).sqrt()
    unit = PartitionedComponentDeflatedOperator(op, root, local, shared_slot, shared_roots.numel(), 0)
    norms = unit.component_sums(root.unsqueeze(-1)).squeeze(-1).sqrt()             # ||D^{1/2} 1_C||
    entries = root / norms.clamp_min(torch.finfo(root.dtype).tiny)[local]
    # count each kept component once, on the rank that owns its label (its smallest node id)
    mine = (roots >= op.start) & (roots < op.stop) & (norms.detach() > 0)
    kept = comm.all_reduce_(mine.to(torch.float64).sum().reshape(1))
    return PartitionedComponentDeflatedOperator(op, entries, local, shared_slot, shared_roots.numel(), int(kept.item()))


__all__ = ["RowPartitionedOperator", "partitioned_normalized_adjacency", "partitioned_connected_components",
           "PartitionedComponentDeflatedOperator", "partitioned_deflate_components"]
