"""The library's one sparse format: a row-sorted CSR matrix with differentiable values."""
from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._validation import (check_edge_index, check_finite, check_floating, check_index_range, check_memory,
                           check_num_nodes, check_same_device)
from ..linalg.norms import frobenius_norm
from .base import Operator, check_operand, symmetry_tolerance

#: Largest ``n`` with ``n * n`` inside int64 (the (row, col) sort key): floor(sqrt(2**63 - 1)).
MAX_NUM_NODES = 3_037_000_499


#: Bytes a sparse operator needs per node at least (int64 CSR row pointers of A and A^T, and the
#: float degrees / self-loop entries of a normalized adjacency), and per stored entry (sort key,
#: order, row and column ids, value).
BYTES_PER_NODE = 24
BYTES_PER_ENTRY = 40


def check_graph_size(num_nodes: int, num_edges: int, device: torch.device, what: str) -> None:
    """Refuse, before anything is allocated, a graph whose declared size exceeds the int64 key range
    (:data:`MAX_NUM_NODES`) or the whole memory of ``device`` (e.g. a mistyped ``num_nodes``)."""
    if num_nodes > MAX_NUM_NODES:
        raise ValueError(f"num_nodes must be at most {MAX_NUM_NODES} (got num_nodes={num_nodes}): entries are keyed "
                         "as row * num_nodes + col in int64, and num_nodes**2 would overflow it")
    check_memory(BYTES_PER_NODE * (num_nodes + 1) + BYTES_PER_ENTRY * num_edges, device,
                 f"{what} with num_nodes={num_nodes} and {num_edges} edges",
                 "check num_nodes (it should be the number of nodes of the graph, edge_index.max() + 1 or more)")


def csr_tensor(crow: Tensor, col: Tensor, value: Tensor, shape: Tuple[int, int]) -> Tensor:
    """A ``torch.sparse_csr_tensor`` from an already sorted, deduplicated pattern (invariants unchecked)."""
    with warnings.catch_warnings():  # "CSR support is in beta": the ops used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, value, shape, check_invariants=False)


class _CSRMatmul(torch.autograd.Function):
    r"""``Y = B X`` for the CSR block ``B`` (``rows x width``) of a :class:`CSROperator`, whose values may
    require gradients.

    PyTorch's own CSR/COO matmul backward materialises a dense gradient for the values; here
    :math:`\partial L / \partial B_e = \langle \bar Y_{\mathrm{row}(e)}, X_{\mathrm{col}(e)} \rangle` is
    computed per stored entry, and :math:`\bar X = B^T \bar Y` with the transposed CSR pattern, so
    memory stays ``O(nnz * d)``.
    """

    @staticmethod
    def forward(ctx, value: Tensor, x: Tensor, op: "CSROperator") -> Tensor:
        ctx.op = op
        ctx.save_for_backward(value, x)
        crow, col, shape = op.block_pattern()
        return csr_tensor(crow, col, value, shape) @ x

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        value, x = ctx.saved_tensors
        op: CSROperator = ctx.op
        grad_value = grad_x = None
        _, col, (rows, width) = op.block_pattern()
        if ctx.needs_input_grad[0]:
            grad_value = (grad_out[op.row] * x[col]).sum(-1)
        if ctx.needs_input_grad[1]:
            crow, row, perm = op.block_transpose()
            grad_x = csr_tensor(crow, row, value[perm], (width, rows)) @ grad_out
        return grad_value, grad_x, None


class CSROperator(Operator):
    r"""Rows of a sparse ``n x n`` matrix stored as a row-sorted CSR block with differentiable values.

    The part that :class:`GraphOperator` (all ``n`` rows) and the row-distributed
    :class:`~lowrank_gnn.distributed.RowPartitionedOperator` (one rank's rows) share: the stored
    entries :attr:`row`, :attr:`col`, :attr:`crow`, :attr:`value` of ``num_nodes`` columns, the
    protocol's :attr:`shape` / :attr:`dtype` / :attr:`device`, :attr:`nnz`, and
    :meth:`multiply_block`, the product of the stored block with its one autograd rule. A subclass
    describes its block (:meth:`block_pattern`, :meth:`block_transpose`).
    """

    row: Tensor
    col: Tensor
    crow: Tensor
    value: Tensor
    num_nodes: int

    @property
    def shape(self) -> torch.Size:
        """``(n, n)``: the whole matrix, also for an operator holding only some of its rows."""
        return torch.Size((self.num_nodes, self.num_nodes))

    @property
    def dtype(self) -> torch.dtype:
        return self.value.dtype

    @property
    def device(self) -> torch.device:
        return self.value.device

    @property
    def nnz(self) -> int:
        """Number of stored entries (held by this operator: this rank's, for a row-distributed one)."""
        return self.value.numel()

    @abstractmethod
    def block_pattern(self) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """``(crow, column, (rows, width))`` of the stored block ``B``: the column of each entry in the
        ``X`` that :meth:`multiply_block` takes, which has ``width`` rows."""

    @abstractmethod
    def block_transpose(self) -> Tuple[Tensor, Tensor, Tensor]:
        """``(crow, column, perm)`` of ``B^T`` (``width x rows``): ``B^T.values == B.values[perm]``."""

    def multiply_block(self, x: Tensor) -> Tensor:
        """``B X``, differentiable in :attr:`value` and ``x`` with ``O(nnz d)`` memory.

        Shapes:
            x ``(width, d)`` (see :meth:`block_pattern`); returns ``(rows, d)``.
        """
        return _CSRMatmul.apply(self.value, x, self)


#: Sort keys below this fit in int32, whose sort is about twice as fast as int64's.
INT32_MAX = torch.iinfo(torch.int32).max


class SparsityPattern:
    """The value-independent part of a :class:`GraphOperator`, shared by :meth:`GraphOperator.with_values`.

    Holds the sorted, deduplicated CSR structure (of all ``num_nodes`` rows, or of the first
    ``num_rows`` for a block of rows), where each input entry is stored, and (square patterns
    only; computed once, on first use) the transpose permutation and whether the pattern is
    symmetric, so that an operator with new values on the same graph is built and
    checked in ``O(nnz)`` without sorting again.

    Args:
        edge_index (LongTensor): the ``(2, nnz)`` entries, ids in ``[0, num_nodes)`` (rows in ``[0, num_rows)``).
        num_nodes (int): ``n >= 1``.
        num_rows (int, optional): the rows of a block of rows. (default: ``None``: all ``n``)
        check (bool): check the arguments (one pass over ``edge_index`` for the id range); ``False``
            only for ids already checked, as :class:`~lowrank_gnn.operators.GraphStructure` and
            :class:`~lowrank_gnn.operators.GraphOperator` do.
            (default: ``True``)
    """

    def __init__(self, edge_index: Tensor, num_nodes: int, num_rows: Optional[int] = None, *,
                 check: bool = True) -> None:
        if check:
            check_edge_index(edge_index)
            num_nodes = check_num_nodes(num_nodes)
            if num_rows is not None:
                num_rows = check_num_nodes(num_rows, "num_rows", minimum=0)
            check_index_range("edge_index[0]", edge_index[0], num_nodes if num_rows is None else num_rows,
                              "num_nodes" if num_rows is None else "num_rows")
            check_index_range("edge_index[1]", edge_index[1], num_nodes)
        n = num_nodes
        rows = n if num_rows is None else num_rows  # fewer for a block of rows (distributed operators)
        edge_index = edge_index.long()  # int32 input: row * n would wrap around in int32
        key = edge_index[0] * n + edge_index[1]
        if n * n <= INT32_MAX:
            key = key.int()  # half the bytes: the sort takes about half the time (42k keys: 1.2 ms against 2.6 ms)
        key, self.order = torch.sort(key)
        unique, inverse = torch.unique_consecutive(key, return_inverse=True)
        unique = unique.long()
        #: storage slot of each sorted input entry, or None when no (row, col) pair repeats
        self.inverse: Optional[Tensor] = inverse if unique.numel() != key.numel() else None
        self.num_nodes = n
        self.nnz = unique.numel()
        self.row = torch.div(unique, n, rounding_mode="floor")
        self.col = unique - self.row * n
        self.crow = torch.zeros(rows + 1, dtype=torch.long, device=edge_index.device)
        self.crow[1:] = torch.bincount(self.row, minlength=rows).cumsum(0)
        self._transpose: Optional[Tuple[Tensor, Tensor, Tensor]] = None
        self._symmetric: Optional[bool] = None
        self._mirror: Optional[Tuple[Tensor, Tensor]] = None
        #: connected components when every stored value is nonzero (a function of the pattern
        #: alone then); filled by :func:`~lowrank_gnn.operators.connected_components`
        self.components: Optional[Tuple[int, Tensor]] = None

    @property
    def num_entries(self) -> int:
        """Number of input entries (before duplicates are summed)."""
        return self.order.numel()

    def store(self, value: Tensor) -> Tensor:
        """Input-order values ``(num_entries,)`` -> stored values ``(nnz,)``, duplicates summed."""
        value = value[self.order]
        if self.inverse is not None:
            value = value.new_zeros(self.nnz).index_add(0, self.inverse, value)
        return value

    def transpose(self) -> Tuple[Tensor, Tensor, Tensor]:
        """(crow, col, perm) of ``A^T``: ``A^T.values == A.values[perm]``."""
        if self._transpose is None:
            # entries are sorted by (row, col): a stable sort by col orders them by (col, row)
            _, perm = torch.sort(self.col.int() if self.num_nodes <= INT32_MAX else self.col, stable=True)
            crow = torch.zeros(self.num_nodes + 1, dtype=torch.long, device=self.col.device)
            crow[1:] = torch.bincount(self.col, minlength=self.num_nodes).cumsum(0)
            self._transpose = (crow, self.row[perm], perm)
        return self._transpose

    def set_symmetric(self, mirror: Tensor) -> None:
        """Record a pattern known to be symmetric by construction, with ``mirror[s]`` the slot of the
        transpose of slot ``s``: :meth:`transpose` is then ``(crow, col, mirror)``, without a sort."""
        self._transpose = (self.crow, self.col, mirror)
        self._symmetric = True

    @property
    def symmetric(self) -> bool:
        """Whether ``(i, j)`` is stored exactly when ``(j, i)`` is (then entry ``e`` of ``A^T`` is entry ``e``
        of ``A``)."""
        if self._symmetric is None:
            crow, col, _ = self.transpose()
            self._symmetric = bool(torch.equal(crow, self.crow) and torch.equal(col, self.col))
        return self._symmetric

    def mirror(self) -> Tuple[Tensor, Tensor]:
        """Of a symmetric pattern: the entries above the diagonal and, at the same positions, the entries
        of their transposes, so that comparing values checks each off-diagonal pair once (half the
        gathers of comparing ``A`` with ``A^T`` entry by entry)."""
        if self._mirror is None:
            upper = torch.nonzero(self.row < self.col).squeeze(-1)
            lower = self.transpose()[2][upper]
            if self.nnz < 2 ** 31:  # int32 positions: half the index traffic of the two gathers
                upper, lower = upper.int(), lower.int()
            self._mirror = (upper, lower)
        return self._mirror


class GraphOperator(CSROperator):
    """A sparse ``n x n`` matrix built from a graph, differentiable in its values.

    Entries are stored once, sorted by (row, column), as CSR; duplicate ``(row, col)``
    pairs are summed. Gradients flow from :meth:`matmul` and :meth:`to_dense` back to
    ``value`` (and so to learnable edge weights). Build it with
    :func:`~lowrank_gnn.operators.normalized_adjacency` or
    :func:`~lowrank_gnn.operators.laplacian` rather than directly; for new values on the
    same graph use :meth:`with_values`, which skips the sort.

    Args:
        edge_index (LongTensor): positions of the stored entries.
        value (Tensor): their values (floating point).
        num_nodes (int): ``n``.
        degree (Tensor, optional): the weighted degrees of a normalized adjacency, kept so
            that closed-form eigenvectors (one per connected component) can be formed.

    Shapes:
        edge_index ``(2, nnz)``, value ``(nnz,)``, degree ``(n,)``.
    """

    def __init__(self, edge_index: Tensor, value: Tensor, num_nodes: int,
                 degree: Optional[Tensor] = None) -> None:
        edge_index = check_edge_index(edge_index)
        n = check_num_nodes(num_nodes)
        check_graph_size(n, edge_index.shape[1], edge_index.device, "GraphOperator")
        check_floating("value", value)
        if value.shape != (edge_index.shape[1],):
            raise ValueError(f"value must have shape (num_entries,) = ({edge_index.shape[1]},), one per column of "
                             f"edge_index (got value.shape={tuple(value.shape)})")
        check_same_device("value", value, "edge_index", edge_index)
        check_index_range("edge_index", edge_index, n)
        if degree is not None and (not isinstance(degree, Tensor) or degree.shape != (n,)):
            got = tuple(degree.shape) if isinstance(degree, Tensor) else type(degree).__name__
            raise ValueError(f"degree must have shape (num_nodes,) = ({n},) (got {got})")
        self._set(SparsityPattern(edge_index, n, check=False), value, degree)

    def _set(self, pattern: SparsityPattern, value: Tensor, degree: Optional[Tensor], stored: bool = False) -> None:
        self._pattern = pattern
        self.row, self.col, self.crow = pattern.row, pattern.col, pattern.crow
        self.num_nodes = pattern.num_nodes
        self.value = value if stored else pattern.store(value)
        self.degree = degree
        self._symmetric: Optional[bool] = None
        self._frobenius: Optional[Tensor] = None
        self._checked_values: Optional[Tuple[int, int]] = None  # the values the two caches above belong to

    @classmethod
    def from_pattern(cls, pattern: SparsityPattern, value: Tensor, degree: Optional[Tensor] = None) -> "GraphOperator":
        """An operator on ``pattern`` whose values are given in storage order, one per stored entry.

        Used by :class:`~lowrank_gnn.operators.GraphStructure`, which computes stored values
        itself; ``value`` has shape ``(pattern.nnz,)``.
        """
        new = cls.__new__(cls)
        new._set(pattern, value, degree, stored=True)
        return new

    def with_values(self, value: Tensor, degree: Optional[Tensor] = None) -> "GraphOperator":
        """The same graph with new values, in ``O(nnz)``: no sort, and a cheaper symmetry check.

        ``value`` is given per entry of the ``edge_index`` this operator was built from, in
        the same order (repeated pairs are summed again). The sorted structure, the
        transpose permutation and the structural half of :attr:`symmetric` are shared
        with this operator, so checking the new one compares values only (each off-diagonal
        pair once).
        Made for hand-built operators whose weights change every step.

        Args:
            value (Tensor): the new values, floating point, on the operator's device.
            degree (Tensor, optional): see the class. (default: ``None``)

        Shapes:
            value ``(num_entries,)`` (the ``edge_index`` given at construction had
            ``num_entries`` columns), degree ``(n,)``.
        """
        check_floating("value", value)
        if value.shape != (self._pattern.num_entries,):
            raise ValueError(f"value must have shape (num_entries,) = ({self._pattern.num_entries},), one per entry "
                             f"of the edge_index this operator was built from (got {tuple(value.shape)})")
        if value.device != self.device:
            raise ValueError(f"value is on {value.device} but the operator is on {self.device}; "
                             f"move it with .to({str(self.device)!r})")
        new = GraphOperator.__new__(GraphOperator)
        new._set(self._pattern, value, degree)
        return new

    def block_pattern(self) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        return self.crow, self.col, (self.num_nodes, self.num_nodes)

    def block_transpose(self) -> Tuple[Tensor, Tensor, Tensor]:
        return self._pattern.transpose()

    def matmul(self, x: Tensor) -> Tensor:
        """``A @ x`` for ``x`` of shape ``(n,)`` or ``(n, d)``."""
        check_operand(x, self.num_nodes)
        columns = x.unsqueeze(-1) if x.dim() == 1 else x
        out = self.multiply_block(columns.to(self.dtype))
        return out.squeeze(-1) if x.dim() == 1 else out

    def to_dense(self) -> Tensor:
        dense = self.value.new_zeros(self.num_nodes * self.num_nodes)
        dense = dense.index_put((self.row * self.num_nodes + self.col,), self.value)
        return dense.view(self.num_nodes, self.num_nodes)

    def to_scipy(self):
        """A SciPy CSR matrix (float64, detached) for ARPACK.

        Its arrays are copies: on the CPU in float64, ``.numpy()`` would share memory with
        the operator (and with every operator on the same pattern), and an in-place SciPy
        method such as ``eliminate_zeros()`` would corrupt them.
        """
        import scipy.sparse as sp

        return sp.csr_matrix((self.value.detach().cpu().double().numpy().copy(), self.col.cpu().numpy().copy(),
                              self.crow.cpu().numpy().copy()), shape=tuple(self.shape))

    def _values_unchanged(self) -> bool:
        """Whether :attr:`value` is the tensor, at the version, that the cached checks were computed on.

        The symmetry and the norm are computed once per operator and reused by every later
        forward; an in-place edit of ``value`` (its version counter moves) or a new tensor assigned
        to it clears them, so a stale ``True`` is never returned.
        """
        key = (id(self.value), self.value._version)
        if self._checked_values != key:
            self._symmetric, self._frobenius, self._checked_values = None, None, key
            return False
        return True

    def _symmetric_by_construction(self) -> None:
        """Record that the values are symmetric to rounding because of how they were computed (only
        :class:`~lowrank_gnn.operators.GraphStructure` calls this, where it knows so): :attr:`symmetric` is
        then ``True`` without comparing values, until :attr:`value` is edited in place or replaced."""
        self._values_unchanged()  # the caches now belong to the current values
        self._symmetric = True

    @torch.no_grad()
    def frobenius_norm(self) -> Tensor:
        """Exact: the norm of the stored values (duplicates are summed on construction). Computed once
        (while the values are unchanged) and shared with :meth:`check_finite`."""
        if not self._values_unchanged() or self._frobenius is None:
            self._frobenius = frobenius_norm(self.value, dim=-1)
        return self._frobenius

    def check_finite(self) -> None:
        # the norm of the values is finite iff they are (it neither overflows nor underflows), and the
        # eigen backends need it anyway: one pass for both
        if self.nnz and not bool(torch.isfinite(self.frobenius_norm())):
            check_finite("the operator's values (edge weights after normalisation)", self.value.detach())

    @property
    def symmetric(self) -> bool:
        """``True`` iff the pattern is symmetric and ``A_ij == A_ji`` to :func:`symmetry_tolerance`.

        The pattern half is computed once per graph (a sort, shared by :meth:`with_values`);
        the value half compares each off-diagonal pair once, ``O(nnz)``, once per operator and
        again only after its values change (an in-place edit of :attr:`value`). An operator that
        :class:`~lowrank_gnn.operators.GraphStructure` builds from values symmetric by construction
        (``symmetrize=True``, unit weights, or :meth:`~lowrank_gnn.operators.GraphStructure.undirected_edge_weight`)
        skips the value half until its values change.
        """
        if not self._values_unchanged() or self._symmetric is None:
            symmetric = self._pattern.symmetric
            if symmetric and self.nnz:
                value = self.value.detach()
                low, high = torch.aminmax(value)  # max |A_ij|; one pass (vector_norm(ord=inf) is several times slower)
                scale = torch.maximum(high, -low).clamp_min(torch.finfo(self.dtype).tiny)
                upper, lower = self._pattern.mirror()
                # index_select: several times faster than advanced indexing for a 1-D gather on the CPU
                error = (value.index_select(0, upper).sub_(value.index_select(0, lower)).abs_().amax()
                         if upper.numel() else value.new_zeros(()))
                symmetric = bool(error <= symmetry_tolerance(self.dtype) * scale)
            self._symmetric = symmetric
        return self._symmetric

    def __repr__(self) -> str:
        return (f"GraphOperator(num_nodes={self.num_nodes}, nnz={self.nnz}, dtype={self.dtype}, "
                f"device={self.device})")
