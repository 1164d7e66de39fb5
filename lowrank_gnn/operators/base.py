"""The operator protocol and its dense and deflated implementations.

Every eigen backend consumes an *operator*: an object with

* ``shape`` ``(*batch, n, n)``, ``dtype``, ``device``,
* ``matmul(X)`` for ``X`` of shape ``(*batch, n, d)``,
* ``to_dense()`` returning ``(*batch, n, n)``,
* ``symmetric``: whether the matrix equals its transpose (to a dtype-dependent tolerance),
* ``check_finite()``: raises a clear error on NaN/Inf entries,
* ``to_scipy()`` (unbatched operators only): a SciPy matrix or ``LinearOperator`` for
  ARPACK, detached from autograd.

:class:`~lowrank_gnn.operators.GraphOperator` (sparse, from ``edge_index``),
:class:`DenseOperator` (a dense tensor, possibly batched) and :class:`DeflatedOperator`
(an operator minus a known low-rank part) implement it; :func:`as_operator` converts a
plain tensor at the boundary.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch
from torch import Tensor

from .._validation import check_finite, check_floating


def symmetry_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance for ``A == A^T``: 100 machine epsilons of ``dtype``.

    Rounding in the normalisation ``D^{-1/2} A D^{-1/2}`` gives asymmetries of a few
    epsilons; 100 leaves room for that and still rejects genuinely directed input.
    """
    return 100.0 * torch.finfo(dtype).eps


class DenseOperator:
    """A dense square matrix or batch of matrices, shape ``(*batch, n, n)``."""

    def __init__(self, matrix: Tensor) -> None:
        if not isinstance(matrix, Tensor):
            raise TypeError(f"matrix must be a torch.Tensor (got {type(matrix).__name__})")
        check_floating("matrix", matrix)
        if matrix.dim() < 2 or matrix.shape[-1] != matrix.shape[-2]:
            raise ValueError(f"matrix must have shape (*batch, n, n) (got shape {tuple(matrix.shape)})")
        self.matrix = matrix
        self._symmetric: bool | None = None
        self._exactly_symmetric = False
        self._largest_magnitude: Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        return self.matrix.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def matmul(self, x: Tensor) -> Tensor:
        return self.matrix @ x

    def to_dense(self) -> Tensor:
        return self.matrix

    def largest_magnitude(self) -> Tensor:
        """``max |a_ij|`` over the whole (batch of) matrices, a 0-dim tensor; NaN or Inf if an entry is.

        One pass, computed once and shared by :meth:`check_finite` and :attr:`symmetric`.
        """
        if self._largest_magnitude is None:
            a = self.matrix.detach()
            if a.numel() == 0:
                self._largest_magnitude = a.new_zeros(())
            else:
                low, high = torch.aminmax(a)   # propagates NaN; an Inf entry gives an infinite extreme
                self._largest_magnitude = torch.maximum(high, -low)
        return self._largest_magnitude

    def check_finite(self) -> None:
        if bool(torch.isfinite(self.largest_magnitude())):
            return
        bad = ~torch.isfinite(self.matrix.detach())
        if bool(bad.any()):
            where = tuple(int(i) for i in bad.nonzero()[0])
            batch = f" in matrix {where[:-2]} of the batch" if len(where) > 2 else ""
            raise ValueError(f"the operator contains NaN or Inf{batch} (first at entry {where[-2:]}); "
                             f"clean the input first")

    @property
    def symmetric(self) -> bool:
        if self._symmetric is None:
            a = self.matrix.detach()
            if a.numel() == 0:  # an empty batch is (vacuously) symmetric
                self._symmetric, self._exactly_symmetric = True, True
                return True
            scale = self.largest_magnitude().clamp_min(torch.finfo(a.dtype).tiny)
            low, high = torch.aminmax(a - a.mT)   # max |a_ij - a_ji|: one pass over the difference, no |.| copy
            asymmetry = torch.maximum(high, -low)
            self._symmetric = bool(asymmetry <= symmetry_tolerance(a.dtype) * scale)
            self._exactly_symmetric = bool(asymmetry == 0)
        return self._symmetric

    def symmetrized(self) -> Tensor:
        r"""The symmetric part :math:`(A + A^\top)/2`.

        The matrix itself, without a copy, when the symmetry check has already found it exactly
        symmetric (the two are then equal) and it needs no gradient (the gradient of the
        symmetric part is the symmetrised one).
        """
        if self._exactly_symmetric and not self.matrix.requires_grad:
            return self.matrix
        return (self.matrix + self.matrix.mT) / 2

    def to_scipy(self) -> np.ndarray:
        if self.matrix.dim() != 2:
            raise ValueError("to_scipy() needs an unbatched operator of shape (n, n)")
        return self.matrix.detach().cpu().double().numpy()


class DeflatedOperator:
    """``A - V diag(mu) V^T``: an operator with a known part of its spectrum removed.

    Used to remove eigenpairs that are known in closed form, e.g. the eigenvalue-1
    eigenvectors ``D^{1/2} 1_C`` of a normalized adjacency, one per connected component
    (see :func:`~lowrank_gnn.operators.component_eigenvectors`), so that a top-``k``
    solve returns the informative part of the spectrum instead of an arbitrary basis of a
    highly repeated eigenvalue.

    Args:
        base: the operator ``A``.
        basis (Tensor): ``V``, orthonormal columns.
        values (Tensor): ``mu``, the eigenvalues of ``A`` that belong to ``V``.

    Shapes:
        basis ``(n, c)``, values ``(c,)``.
    """

    def __init__(self, base, basis: Tensor, values: Tensor) -> None:
        if basis.dim() != 2 or basis.shape[0] != base.shape[-1]:
            raise ValueError(f"basis must have shape (n, c) with n={base.shape[-1]} "
                             f"(got shape {tuple(basis.shape)})")
        if values.shape != basis.shape[1:]:
            raise ValueError(f"values must have shape ({basis.shape[1]},) (got {tuple(values.shape)})")
        self.base = base
        self.basis = basis
        self.values = values

    @property
    def shape(self) -> torch.Size:
        return self.base.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def symmetric(self) -> bool:
        return self.base.symmetric

    def check_finite(self) -> None:
        self.base.check_finite()
        check_finite("basis", self.basis.detach())

    def project(self, x: Tensor) -> Tensor:
        """``V diag(mu) V^T x``: the removed part applied to ``x``."""
        columns = x.unsqueeze(-1) if x.dim() == 1 else x
        out = self.basis @ (self.values.unsqueeze(-1) * (self.basis.mT @ columns))
        return out.squeeze(-1) if x.dim() == 1 else out

    def matmul(self, x: Tensor) -> Tensor:
        return self.base.matmul(x) - self.project(x)

    def basis_rayleigh_quotients(self) -> Tensor:
        """``v_c^T A v_c`` for every basis vector (e.g. for ``||A - V diag(mu) V^T||_F``). Shape ``(c,)``."""
        return (self.basis * self.base.matmul(self.basis)).sum(-2)

    def to_dense(self) -> Tensor:
        return self.base.to_dense() - (self.basis * self.values) @ self.basis.mT

    def to_scipy(self):
        from scipy.sparse.linalg import LinearOperator

        base = self.base.to_scipy()
        v = self.basis.detach().cpu().double().numpy()
        mu = self.values.detach().cpu().double().numpy()
        n = v.shape[0]

        def apply(x: np.ndarray) -> np.ndarray:
            columns = x.reshape(n, -1)
            return (base @ columns - v @ (mu[:, None] * (v.T @ columns))).reshape(x.shape)

        return LinearOperator((n, n), matvec=apply, matmat=apply, dtype=np.float64)


Operator = Union["DenseOperator", "DeflatedOperator", "GraphOperator"]  # noqa: F821


def as_operator(op) -> Operator:
    """Wrap a dense tensor as a :class:`DenseOperator`; pass operators through."""
    if isinstance(op, Tensor):
        return DenseOperator(op)
    if all(hasattr(op, attr) for attr in ("shape", "matmul", "to_dense", "symmetric", "check_finite")):
        return op
    raise TypeError("expected a dense tensor of shape (*batch, n, n) or an operator from "
                    "lowrank_gnn.operators (e.g. normalized_adjacency(edge_index)); "
                    f"got {type(op).__name__}")
