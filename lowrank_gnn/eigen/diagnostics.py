"""Cheap convergence diagnostics for eigenpairs, meant to be logged every training step.

Both work for any backend's output; :class:`~lowrank_gnn.eigen.AmortizedBackend` computes
them on every forward (see :attr:`AmortizedBackend.diagnostics`).

* :func:`relative_residual`: :math:`\\|A U - U \\operatorname{diag}(\\lambda)\\|_F / \\|A\\|_F`,
  zero exactly when every column is an eigenvector with its eigenvalue. It needs ``A U``,
  which an amortized step has already computed, and :math:`\\|A\\|_F`, which is exact and
  ``O(nnz)`` for graph operators (:func:`operator_frobenius_norm`).
* :func:`subspace_angle`: the sine of the largest principal angle between two spans,
  e.g. the eigenvectors of this step and of the previous one; it goes to zero as an
  iterative solver settles (and stays at the operator's own drift when the operator is
  being trained).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..linalg.norms import frobenius_norm
from ..operators.base import as_operator
from .base import _check_vectors
from .rows import LocalRows

class EigenDiagnostics(NamedTuple):
    """Convergence measures of one solve, detached.

    Attributes:
        residual (Tensor): ``(*batch,)`` relative eigen-residual (see :func:`relative_residual`).
        subspace_angle (Tensor, optional): ``(*batch,)`` sine of the largest principal angle to
            the previous step's eigenvectors; ``None`` on the first step after (re)initialisation.
    """

    residual: Tensor
    subspace_angle: Optional[Tensor]


@torch.no_grad()
def operator_frobenius_norm(op) -> Tensor:
    r""":math:`\|A\|_F` of an operator, per batch entry, detached: :meth:`Operator.frobenius_norm
    <lowrank_gnn.operators.Operator.frobenius_norm>` (a dense tensor is wrapped first).

    Exact for dense matrices and :class:`~lowrank_gnn.operators.GraphOperator` (the norm of
    the stored values); for :class:`~lowrank_gnn.operators.DeflatedOperator`
    :math:`A - V \operatorname{diag}(\mu) V^T` (``V`` orthonormal, checked) it is exact too:
    :math:`\|A\|_F^2 - 2 \sum_c \mu_c v_c^T A v_c + \|\mu\|^2` (one product with ``V``), except
    where that sum cancels (the removed part nearly all of ``A``), which gets the estimate below. An
    operator without a closed form gets a Hutchinson estimate :math:`E\|A z\|^2` with
    :data:`~lowrank_gnn.operators.FROBENIUS_PROBES` fixed Rademacher probes.

    Shapes:
        ``op`` is ``(*batch, n, n)``; returns ``(*batch,)``.
    """
    return as_operator(op).frobenius_norm()


@torch.no_grad()
def relative_residual(op_times_vectors: Tensor, vectors: Tensor, values: Tensor, op_norm: Tensor,
                      rows: Optional[LocalRows] = None) -> Tensor:
    r""":math:`\|A U - U \operatorname{diag}(\lambda)\|_F / \|A\|_F` per batch entry.

    Args:
        op_times_vectors (Tensor): :math:`A U`, already computed by the caller.
        vectors (Tensor): :math:`U`.
        values (Tensor): :math:`\lambda`.
        op_norm (Tensor): :math:`\|A\|_F` (:func:`operator_frobenius_norm`).
        rows (LocalRows, optional): for vectors split by rows over ranks, what sums the squared
            residual over them (:mod:`lowrank_gnn.eigen.rows`). (default: all rows here)

    Shapes:
        ``(*batch, n, k)``, ``(*batch, n, k)``, ``(*batch, k)``, ``(*batch,)``; returns ``(*batch,)``.
    """
    _check_vectors("vectors", vectors)
    batch, k = vectors.shape[:-2], vectors.shape[-1]
    if op_times_vectors.shape != vectors.shape or values.shape != (*batch, k) or op_norm.shape not in (batch, ()):
        raise ValueError(f"op_times_vectors and vectors (*batch, n, k), values (*batch, k) and op_norm (*batch,) must "
                         f"agree (got op_times_vectors.shape={tuple(op_times_vectors.shape)}, vectors.shape="
                         f"{tuple(vectors.shape)}, values.shape={tuple(values.shape)}, "
                         f"op_norm.shape={tuple(op_norm.shape)})")
    error = frobenius_norm(op_times_vectors - vectors * values.unsqueeze(-2))
    if rows is not None and rows.world_size > 1:
        error = rows.all_reduce_(error.square()).sqrt()
    zero = op_norm == 0  # A = 0: every vector is an eigenvector, the residual is 0 / 0 := 0 (exact)
    return torch.where(zero, torch.zeros_like(error), error / torch.where(zero, torch.ones_like(op_norm), op_norm))


@torch.no_grad()
def subspace_angle(first: Tensor, second: Tensor, rows: Optional[LocalRows] = None) -> Tensor:
    r"""Sine of the largest principal angle between the spans of two orthonormal bases.

    :math:`\sin\theta_{\max} = \|(I - U_1 U_1^T) U_2\|_2`: 0 for the same span, 1 when some
    direction of one is orthogonal to the other. Invariant to signs and to rotations inside
    either span, so it also measures convergence of a repeated-eigenvalue block. The
    projection is formed explicitly (not as :math:`\sqrt{1 - \sigma_{\min}^2}`, which
    cancels to about :math:`\sqrt{\epsilon}`), so small angles are resolved to rounding.
    Costs ``O(n k^2)`` and a ``k x k`` symmetric eigenvalue problem. For bases split by rows
    over ranks, ``rows`` (:mod:`lowrank_gnn.eigen.rows`) all-reduces the two ``k x k`` Gram
    matrices (default: all rows here).

    Shapes:
        ``(*batch, n, k)`` twice; returns ``(*batch,)``.
    """
    _check_vectors("first", first)
    _check_vectors("second", second)
    if first.shape[:-1] != second.shape[:-1]:
        raise ValueError(f"first and second must be bases of the same rows, (*batch, n, k) with the same (*batch, n) "
                         f"(got first.shape={tuple(first.shape)}, second.shape={tuple(second.shape)})")
    rows = rows if rows is not None else LocalRows()
    outside = second - first @ rows.all_reduce_(first.mT @ second)
    return torch.linalg.eigvalsh(rows.all_reduce_(outside.mT @ outside))[..., -1].clamp_min(0).sqrt()


__all__ = ["EigenDiagnostics", "operator_frobenius_norm", "relative_residual", "subspace_angle"]
