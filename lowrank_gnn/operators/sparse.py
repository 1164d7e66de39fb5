"""The library's one sparse format: a row-sorted CSR matrix with differentiable values."""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._validation import check_finite
from .base import symmetry_tolerance

#: Largest ``n`` with ``n * n`` inside int64 (the (row, col) sort key): floor(sqrt(2**63 - 1)).
MAX_NUM_NODES = 3_037_000_499


def _csr_tensor(crow: Tensor, col: Tensor, value: Tensor, shape: torch.Size) -> Tensor:
    with warnings.catch_warnings():  # "CSR support is in beta": the ops used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, value, shape, check_invariants=False)


class _SparseMatmul(torch.autograd.Function):
    """``Y = A X`` for a CSR matrix ``A`` whose values may require gradients.

    PyTorch's own CSR/COO matmul backward materialises a dense ``n x n`` gradient for the
    values; here ``dL/dA_e = <dL/dY[row_e], X[col_e]>`` is computed per stored entry, and
    ``dL/dX = A^T dL/dY`` with the transposed CSR pattern, so memory stays ``O(nnz * d)``.
    """

    @staticmethod
    def forward(ctx, value: Tensor, x: Tensor, op: "GraphOperator") -> Tensor:
        ctx.op = op
        ctx.save_for_backward(value, x)
        return op._csr(value) @ x

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        value, x = ctx.saved_tensors
        op: GraphOperator = ctx.op
        grad_value = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_value = (grad_out[op.row] * x[op.col]).sum(-1)
        if ctx.needs_input_grad[1]:
            grad_x = op._csr_transposed(value) @ grad_out
        return grad_value, grad_x, None


class GraphOperator:
    """A sparse ``n x n`` matrix built from a graph, differentiable in its values.

    Entries are stored once, sorted by (row, column), as CSR; duplicate ``(row, col)``
    pairs are summed. Gradients flow from :meth:`matmul` and :meth:`to_dense` back to
    ``value`` (and so to learnable edge weights). Build it with
    :func:`~lowrank_gnn.operators.normalized_adjacency` or
    :func:`~lowrank_gnn.operators.laplacian` rather than directly.

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
        n = int(num_nodes)
        if n > MAX_NUM_NODES:
            raise ValueError(f"num_nodes must be at most {MAX_NUM_NODES} (got num_nodes={n}): entries are keyed "
                             "as row * num_nodes + col in int64, and num_nodes**2 would overflow it")
        edge_index = edge_index.long()  # int32 input: row * n would wrap around in int32
        key = edge_index[0] * n + edge_index[1]
        key, perm = torch.sort(key)
        unique, inverse = torch.unique_consecutive(key, return_inverse=True)
        value = value[perm]
        if unique.numel() != key.numel():
            value = value.new_zeros(unique.numel()).index_add(0, inverse, value)
        self.row = torch.div(unique, n, rounding_mode="floor")
        self.col = unique - self.row * n
        self.value = value
        self.num_nodes = n
        self.degree = degree
        self.crow = torch.zeros(n + 1, dtype=torch.long, device=value.device)
        self.crow[1:] = torch.bincount(self.row, minlength=n).cumsum(0)
        self._transpose: Optional[Tuple[Tensor, Tensor, Tensor]] = None
        self._symmetric: Optional[bool] = None

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.num_nodes, self.num_nodes))

    @property
    def dtype(self) -> torch.dtype:
        return self.value.dtype

    @property
    def device(self) -> torch.device:
        return self.value.device

    @property
    def nnz(self) -> int:
        return self.value.numel()

    def _csr(self, value: Tensor) -> Tensor:
        return _csr_tensor(self.crow, self.col, value, self.shape)

    def _transpose_pattern(self) -> Tuple[Tensor, Tensor, Tensor]:
        """(crow, col, perm) of ``A^T``: ``A^T.values == A.values[perm]``."""
        if self._transpose is None:
            n = self.num_nodes
            perm = torch.argsort(self.col * n + self.row)
            crow = torch.zeros(n + 1, dtype=torch.long, device=self.device)
            crow[1:] = torch.bincount(self.col, minlength=n).cumsum(0)
            self._transpose = (crow, self.row[perm], perm)
        return self._transpose

    def _csr_transposed(self, value: Tensor) -> Tensor:
        crow, col, perm = self._transpose_pattern()
        return _csr_tensor(crow, col, value[perm], self.shape)

    def matmul(self, x: Tensor) -> Tensor:
        """``A @ x`` for ``x`` of shape ``(n,)`` or ``(n, d)``."""
        if x.shape[0] != self.num_nodes or x.dim() not in (1, 2):
            raise ValueError(f"x must have shape (n,) or (n, d) with n={self.num_nodes} "
                             f"(got shape {tuple(x.shape)})")
        columns = x.unsqueeze(-1) if x.dim() == 1 else x
        out = _SparseMatmul.apply(self.value, columns.to(self.dtype), self)
        return out.squeeze(-1) if x.dim() == 1 else out

    def to_dense(self) -> Tensor:
        dense = self.value.new_zeros(self.num_nodes * self.num_nodes)
        dense = dense.index_put((self.row * self.num_nodes + self.col,), self.value)
        return dense.view(self.num_nodes, self.num_nodes)

    def to_scipy(self):
        """A SciPy CSR matrix (float64, detached) for ARPACK."""
        import scipy.sparse as sp

        return sp.csr_matrix((self.value.detach().cpu().double().numpy(),
                              self.col.cpu().numpy(), self.crow.cpu().numpy()), shape=tuple(self.shape))

    def check_finite(self) -> None:
        check_finite("the operator's values (edge weights after normalisation)", self.value.detach())

    @property
    def symmetric(self) -> bool:
        """``True`` iff the pattern is symmetric and ``A_ij == A_ji`` to :func:`symmetry_tolerance`."""
        if self._symmetric is None:
            _, col_t, perm = self._transpose_pattern()
            value = self.value.detach()
            scale = value.abs().amax().clamp_min(torch.finfo(self.dtype).tiny) if value.numel() else 1.0
            self._symmetric = bool(torch.equal(col_t, self.col) and torch.equal(self._transpose[0], self.crow)
                                   and ((value - value[perm]).abs() <= symmetry_tolerance(self.dtype) * scale).all())
        return self._symmetric

    def __repr__(self) -> str:
        return (f"GraphOperator(num_nodes={self.num_nodes}, nnz={self.nnz}, dtype={self.dtype}, "
                f"device={self.device})")
