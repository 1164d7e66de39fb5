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

#: Random probes for the Hutchinson estimate of ||A||_F^2 on operators without a closed form
#: (relative standard deviation ~ sqrt(2 / probes), ~30% at 16: enough for a normalisation).
FROBENIUS_PROBES = 16


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
def frobenius_norm(x: Tensor, dim=(-2, -1)) -> Tensor:
    r""":math:`\|x\|_2` over ``dim`` that neither overflows nor underflows, detached.

    One plain reduction when the squares are representable; where the result says they were
    not (``inf``, or below :math:`\sqrt{\text{tiny}}/\epsilon`: float32 entries above ~1e19 or
    below ~1e-19), recomputed as :math:`s \|x / s\|` with :math:`s = \max |x|`.

    Shapes:
        ``x`` any; returns ``x`` reduced over ``dim``.
    """
    x = x.detach()
    norm = torch.linalg.vector_norm(x, dim=dim)
    info = torch.finfo(x.dtype)
    if not x.numel() or bool(((norm > info.tiny ** 0.5 / info.eps) & (norm < info.max ** 0.5)).all()):
        return norm
    scale = torch.amax(x.abs(), dim=dim, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.linalg.vector_norm(x / scale, dim=dim) * scale.squeeze(dim)


@torch.no_grad()
def operator_frobenius_norm(op) -> Tensor:
    r""":math:`\|A\|_F` of an operator, per batch entry, detached.

    Exact for dense matrices and :class:`~lowrank_gnn.operators.GraphOperator` (the norm of
    the stored values); for :class:`~lowrank_gnn.operators.DeflatedOperator`
    :math:`A - V \operatorname{diag}(\mu) V^T` with orthonormal ``V`` it is exact too:
    :math:`\|A\|_F^2 - 2 \sum_c \mu_c v_c^T A v_c + \|\mu\|^2` (one product with ``V``). Any
    other operator gets a Hutchinson estimate :math:`E\|A z\|^2` with
    :data:`FROBENIUS_PROBES` fixed Rademacher probes.

    Shapes:
        ``op`` is ``(*batch, n, n)``; returns ``(*batch,)``.
    """
    from ..operators import DeflatedOperator, DenseOperator, GraphOperator

    if isinstance(op, DenseOperator):
        return frobenius_norm(op.matrix)
    if isinstance(op, GraphOperator):
        return frobenius_norm(op.value, dim=-1)
    if isinstance(op, DeflatedOperator):
        base = operator_frobenius_norm(op.base)
        cross = op.basis_rayleigh_quotients()  # v_c^T A v_c, O(nnz) for per-component deflation
        scale = base.clamp_min(torch.finfo(base.dtype).tiny)  # in units of ||A||_F: no overflow in the squares
        squared = 1 - 2 * (op.values * cross).sum(-1) / scale / scale + (op.values / scale.unsqueeze(-1)).square().sum(-1)
        return squared.clamp_min(0).sqrt() * scale
    n = op.shape[-1]
    generator = torch.Generator().manual_seed(0)
    probes = torch.randint(0, 2, (*op.shape[:-2], n, FROBENIUS_PROBES), generator=generator)
    probes = (2 * probes - 1).to(dtype=op.dtype, device=op.device)
    return frobenius_norm(op.matmul(probes)) / FROBENIUS_PROBES ** 0.5


@torch.no_grad()
def relative_residual(op_times_vectors: Tensor, vectors: Tensor, values: Tensor, op_norm: Tensor) -> Tensor:
    r""":math:`\|A U - U \operatorname{diag}(\lambda)\|_F / \|A\|_F` per batch entry.

    Args:
        op_times_vectors (Tensor): :math:`A U`, already computed by the caller.
        vectors (Tensor): :math:`U`.
        values (Tensor): :math:`\lambda`.
        op_norm (Tensor): :math:`\|A\|_F` (:func:`operator_frobenius_norm`).

    Shapes:
        ``(*batch, n, k)``, ``(*batch, n, k)``, ``(*batch, k)``, ``(*batch,)``; returns ``(*batch,)``.
    """
    error = frobenius_norm(op_times_vectors - vectors * values.unsqueeze(-2))
    zero = op_norm == 0  # A = 0: every vector is an eigenvector, the residual is 0 / 0 := 0 (exact)
    return torch.where(zero, torch.zeros_like(error), error / torch.where(zero, torch.ones_like(op_norm), op_norm))


@torch.no_grad()
def subspace_angle(first: Tensor, second: Tensor) -> Tensor:
    r"""Sine of the largest principal angle between the spans of two orthonormal bases.

    :math:`\sin\theta_{\max} = \|(I - U_1 U_1^T) U_2\|_2`: 0 for the same span, 1 when some
    direction of one is orthogonal to the other. Invariant to signs and to rotations inside
    either span, so it also measures convergence of a repeated-eigenvalue block. The
    projection is formed explicitly (not as :math:`\sqrt{1 - \sigma_{\min}^2}`, which
    cancels to about :math:`\sqrt{\epsilon}`), so small angles are resolved to rounding.
    Costs ``O(n k^2)`` and a ``k x k`` symmetric eigenvalue problem.

    Shapes:
        ``(*batch, n, k)`` twice; returns ``(*batch,)``.
    """
    outside = second - first @ (first.mT @ second)
    return torch.linalg.eigvalsh(outside.mT @ outside)[..., -1].clamp_min(0).sqrt()


__all__ = ["EigenDiagnostics", "frobenius_norm", "operator_frobenius_norm", "relative_residual", "subspace_angle",
           "FROBENIUS_PROBES"]
