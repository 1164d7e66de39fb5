r"""Thin QR with a positive diagonal, the ``W -> U`` map of an amortized basis.

CholeskyQR (one pass when that is orthonormal to rounding already, else CholeskyQR2, Fukaya et al.,
2014) with the QR backward in closed form when the input is well conditioned, Householder QR
(LAPACK) with the signs fixed otherwise. Both give the same unique
factor, so the choice changes neither the result nor its gradient.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .._validation import broadcasts_to, check_finite, check_floating, first_order_only

__all__ = ["CHOLESKY_QR_ACCEPT", "CHOLESKY_QR_ONE_PASS", "QRFactors", "cholesky_qr", "q_factor", "q_projection",
           "qr_backward", "qr_orthonormalize"]


#: The closed-form backward has no graph of its own: a second derivative through it is a clear error.
_first_order = first_order_only("the closed-form QR backward (linalg.q_factor, q_projection: the amortized basis' "
                                "CholeskyQR)", "detach W (or the operator) in the term that is differentiated twice")

#: CholeskyQR2's second pass is accepted when the Gram matrix of the first pass is within this
#: Frobenius distance of I: its eigenvalues then lie in [0.5, 1.5] (condition number <= 3), and
#: the second pass orthonormalises to a few epsilons.
CHOLESKY_QR_ACCEPT = 0.5

#: The first CholeskyQR pass is kept, and the second skipped, when its Gram matrix is within
#: ``CHOLESKY_QR_ONE_PASS * sqrt(k)`` machine epsilons of I (Frobenius): ``Q`` is then orthonormal to
#: the rounding of one Gram matrix already. A nearly orthonormal ``W`` (an amortized basis between
#: steps) can get there in one pass: at ``169,343 x 16`` in float32 the first pass leaves
#: ``||Q^T Q - I||_F`` at 6-7 ``sqrt(k)`` epsilons (3.4e-6), the second at about 1 (5.5e-7), and both
#: ``Q`` are equally close to the float64 factor (4.5e-7 and 5.0e-7 at most per entry). Looser bounds
#: (32) let float64 fits to a residual of 1e-8 stall just short of it: their loss needs the last digits.
CHOLESKY_QR_ONE_PASS = 8


class QRFactors(NamedTuple):
    """The factors of ``W = QR`` (``diag(R) > 0``) that :func:`cholesky_qr` returns, all detached.

    Attributes:
        vectors (Tensor): ``Q``, ``(*batch, n, k)``.
        inverse (Tensor): ``R^{-1}``, ``(*batch, k, k)``, upper triangular.
        diagonal (Tensor): ``diag(R)``, ``(*batch, k)``, positive.
    """

    vectors: Tensor
    inverse: Tensor
    diagonal: Tensor


@torch.no_grad()
def cholesky_qr(weight: Tensor) -> Optional[QRFactors]:
    r"""CholeskyQR2 (Fukaya et al., 2014): :class:`QRFactors`, or ``None`` where it would break down.

    Pass 1: :math:`R_1 = \operatorname{chol}(W^T W)^T`, :math:`Q_1 = W R_1^{-1}`. Pass 2:
    :math:`R_2 = \operatorname{chol}(Q_1^T Q_1)^T`, :math:`Q = Q_1 R_2^{-1}`,
    :math:`R = R_2 R_1`. Up to four ``(n, k)`` products, all in the input's memory layout: several
    times faster than Householder QR for ``n >> k`` (which also returns a column-major ``Q``
    that slows every later elementwise op). Pass 1 alone loses orthogonality like
    :math:`\kappa(W)^2 \epsilon`; the Gram matrix :math:`Q_1^T Q_1` that pass 2 factors says by how
    much. Within :data:`CHOLESKY_QR_ONE_PASS` epsilons of the identity :math:`Q_1` is returned as it
    is (one product saved); otherwise pass 2 restores orthogonality to rounding once
    :math:`Q_1^T Q_1` is within :data:`CHOLESKY_QR_ACCEPT` of the identity. Beyond that (or if a
    Cholesky factorisation fails) ``None`` sends the caller to Householder QR. A ``W`` with a NaN or
    Inf entry always gets ``None`` (its Gram matrix is not finite, and LAPACK's Cholesky rejects a
    NaN pivot), so factors are a proof that ``W`` is finite. An empty or wide ``W`` (``n < k``, no
    orthonormal columns) gets ``None`` as well.

    A ``weight`` that is not a float32 or float64 tensor of at least two dimensions is refused
    (``TypeError`` / ``ValueError``): ``None`` is only ever about the values.

    Shapes:
        weight ``(*batch, n, k)``.
    """
    _check_weight(weight)
    if not weight.numel() or weight.shape[-2] < weight.shape[-1]:
        return None
    k = weight.shape[-1]
    eye = torch.eye(k, dtype=weight.dtype, device=weight.device)
    one_pass = CHOLESKY_QR_ONE_PASS * k ** 0.5 * torch.finfo(weight.dtype).eps
    inverse = None
    vectors = weight
    for check in (False, True):
        gram = vectors.mT @ vectors
        if check:
            distance = torch.linalg.matrix_norm(gram - eye)
            if bool((distance <= one_pass).all()):
                break
            if not bool((distance <= CHOLESKY_QR_ACCEPT).all()):
                return None
        lower, info = torch.linalg.cholesky_ex(gram)
        if bool((info != 0).any()):
            return None
        step = torch.linalg.solve_triangular(lower.mT, eye, upper=True)    # R_i^{-1}
        vectors = vectors @ step
        inverse = step if inverse is None else inverse @ step              # R^{-1} = R_1^{-1} R_2^{-1}
    assert inverse is not None  # the first pass always runs
    return QRFactors(vectors, inverse, torch.diagonal(inverse, dim1=-2, dim2=-1).reciprocal())


def _check_weight(weight: Tensor) -> None:
    """``weight`` is a float32/float64 tensor ``(*batch, n, k)`` (dtype and shape only: O(1))."""
    check_floating("weight", weight)
    if weight.dim() < 2:
        raise ValueError(f"weight must have shape (*batch, n, k), one vector per column (got weight.shape="
                         f"{tuple(weight.shape)}); pass weight.unsqueeze(-1) for a single column")


def qr_backward(vectors: Tensor, inverse: Tensor, grad: Tensor, coefficients: Optional[Tensor] = None,
                projection: Optional[Tensor] = None) -> Tensor:
    r""":math:`\partial L / \partial W` of ``Q = Q(W)`` (``W = QR``, ``diag(R) > 0``) for
    :math:`\partial L / \partial Q = G = B C`, with ``B = grad`` and ``C = coefficients`` (``k x k``;
    default the identity).

    With :math:`M = Q^T G`: :math:`\partial L / \partial W = G R^{-T} + Q\, (\operatorname{tril}(M - M^T, -1) - M)\,
    R^{-T}` (from :math:`dQ = Q X + (I - Q Q^T)\, dW R^{-1}` with the skew :math:`X` fixed by
    :math:`dR\,R^{-1}` being upper triangular). Two skinny products, the second accumulating into the
    first; a third forms :math:`M` unless ``projection`` :math:`= Q^T B` is given. A gradient known as
    ``B C`` (the columns of a fixed matrix, rescaled) is never formed: :math:`G R^{-T} = B (C R^{-T})`.

    Args:
        vectors (Tensor): ``Q``.
        inverse (Tensor): ``R^{-1}`` (:attr:`QRFactors.inverse`).
        grad (Tensor): ``B``, the gradient with respect to ``Q`` when ``coefficients`` is ``None``.
        coefficients (Tensor, optional): ``C``. (default: ``None``, the identity)
        projection (Tensor, optional): ``Q^T B``, if already known. (default: ``None``, computed)

    Shapes:
        vectors, grad ``(*batch, n, k)``; inverse (``R^{-1}``), coefficients, projection ``(*batch, k, k)``;
        returns ``(*batch, n, k)``.
    """
    if projection is None:
        projection = vectors.mT @ grad
    if coefficients is not None:
        projection = projection @ coefficients
    correction = ((projection - projection.mT).tril(-1) - projection) @ inverse.mT
    out = grad @ (inverse.mT if coefficients is None else coefficients @ inverse.mT)
    if out.dim() == 2:
        return out.addmm_(vectors, correction)
    n, k = out.shape[-2:]
    out.view(-1, n, k).baddbmm_(vectors.reshape(-1, n, k), correction.reshape(-1, k, k))  # out is fresh: a view
    return out


class _QFactor(torch.autograd.Function):
    """``Q`` of ``W = QR`` from precomputed factors, with the QR backward in closed form
    (:func:`qr_backward`: three skinny products, where autograd through the two Cholesky passes
    takes about ten). First-order only."""

    @staticmethod
    def forward(ctx, weight: Tensor, factors: QRFactors) -> Tensor:
        ctx.save_for_backward(factors.vectors, factors.inverse)
        return factors.vectors

    @staticmethod
    @_first_order
    def backward(ctx, grad: Tensor):
        vectors, inverse = ctx.saved_tensors
        return qr_backward(vectors, inverse, grad), None


class _QProjection(torch.autograd.Function):
    r""":math:`Q^T B` for a constant ``B``, differentiable in ``W`` through ``Q``: for
    :math:`\partial L / \partial (Q^T B) = H`, :math:`\partial L / \partial Q = B H^T` and
    :math:`Q^T B H^T` is the forward's value times :math:`H^T`, so the QR backward takes two skinny
    products and forms neither :math:`B H^T` nor :math:`Q^T (B H^T)`. First-order only."""

    @staticmethod
    def forward(ctx, weight: Tensor, factors: QRFactors, other: Tensor) -> Tensor:
        projection = factors.vectors.mT @ other
        ctx.save_for_backward(factors.vectors, factors.inverse, other, projection)
        return projection

    @staticmethod
    @_first_order
    def backward(ctx, grad: Tensor):
        vectors, inverse, other, projection = ctx.saved_tensors
        coefficients = grad.mT
        return qr_backward(vectors, inverse, other, coefficients, projection), None, None


def _check_factors(weight: Tensor, factors: QRFactors) -> None:
    """Raise a ``ValueError`` unless ``factors`` can be :func:`cholesky_qr` of ``weight`` (same shape)."""
    if not isinstance(factors, QRFactors):
        raise TypeError(f"factors must be the QRFactors that cholesky_qr(weight) returns (got "
                        f"{type(factors).__name__}); cholesky_qr gives None where it breaks down, and then "
                        f"there are no factors to pass")
    if factors.vectors.shape != weight.shape:
        raise ValueError(f"factors are those of a W of shape {tuple(factors.vectors.shape)}, but weight has shape "
                         f"{tuple(weight.shape)}; pass factors=cholesky_qr(weight)")


def q_factor(weight: Tensor, factors: QRFactors) -> Tensor:
    """``Q`` of ``W = QR`` from ``factors = cholesky_qr(W)``, differentiable in ``W`` (closed-form backward,
    :func:`qr_backward`; first-order only).

    Shapes:
        weight ``(*batch, n, k)``; returns ``(*batch, n, k)``.
    """
    _check_factors(weight, factors)
    return _QFactor.apply(weight, factors)


def q_projection(weight: Tensor, factors: QRFactors, other: Tensor) -> Tensor:
    r""":math:`Q^T B` for ``Q`` of ``W = QR`` (``factors = cholesky_qr(W)``) and a constant ``B = other``,
    differentiable in ``W``.

    Its diagonal is the column dot products :math:`q_i^T b_i` (the Rayleigh quotients of an
    amortized basis, with ``B = A Q``). One skinny product forward (the ``k x k`` matrix, not an
    ``n x k`` elementwise product and a sum) and two backward (:func:`qr_backward` with the
    gradient in factored form), where ``(q_factor(W, factors) * B).sum(-2)`` takes three and two
    more. First-order only.

    Args:
        weight (Tensor): ``W``, which the result is differentiable in.
        factors (QRFactors): :func:`cholesky_qr` of ``weight``.
        other (Tensor): ``B``, held constant: it gets no gradient, so one that requires grad is refused
            (pass ``other.detach()``, or ``q_factor(weight, factors).mT @ other`` for a gradient in both).

    Shapes:
        weight ``(*batch, n, k)``, other ``(*batch, n, m)`` (its batch may broadcast, e.g. one shared
        ``(n, m)``); returns ``(*batch, k, m)``.

    Example:
        >>> import torch
        >>> from lowrank_gnn.linalg import cholesky_qr, q_projection
        >>> weight = torch.randn(50, 3, dtype=torch.float64, requires_grad=True)
        >>> other = torch.randn(50, 3, dtype=torch.float64)
        >>> projection = q_projection(weight, cholesky_qr(weight), other)
        >>> torch.diagonal(projection).sum().backward()   # d/dW of sum_i q_i^T b_i
        >>> weight.grad.shape
        torch.Size([50, 3])
    """
    _check_factors(weight, factors)
    if other.dim() < 2 or other.shape[-2] != weight.shape[-2] or not broadcasts_to(other.shape[:-2],
                                                                                   weight.shape[:-2]):
        raise ValueError(f"other must have shape (*batch, n, m), with the n of weight {tuple(weight.shape)} and a "
                         f"batch that broadcasts to its batch (got {tuple(other.shape)})")
    if other.requires_grad and torch.is_grad_enabled():
        raise ValueError("q_projection holds other constant and gives it no gradient, and other requires grad; "
                         "pass other.detach(), or use q_factor(weight, factors).mT @ other for a gradient in both")
    return _QProjection.apply(weight, factors, other)


def qr_orthonormalize(weight: Tensor) -> Tuple[Tensor, Tensor]:
    """Thin QR with ``diag(R) > 0``: a smooth map ``W -> U``.

    The QR factorisation with a positive diagonal is unique, so how it is computed does not
    change ``U`` or its gradient: CholeskyQR, one pass or two (:func:`cholesky_qr`, with the closed-form
    QR backward of :func:`qr_backward`) when ``W`` is well conditioned, as an amortized basis
    is, else Householder QR (LAPACK) with the signs fixed. Without the sign fix LAPACK may
    flip a column between two steps and the amortized basis would not be a continuous
    function of ``W``.

    ``weight`` must be float32 or float64, finite, with ``n >= k`` (else a ``TypeError`` or
    ``ValueError`` that says how to fix it). The finiteness check costs nothing on the CholeskyQR
    path (its factors prove ``W`` finite) and one pass before Householder QR.

    Shapes:
        weight ``(*batch, n, k)``; returns ``U (*batch, n, k)`` and ``diag(R) (*batch, k)``
        (non-negative, detached).
    """
    _check_weight(weight)
    if weight.shape[-2] < weight.shape[-1]:
        raise ValueError(f"weight must have shape (*batch, n, k) with k <= n for k orthonormal columns (got "
                         f"weight.shape={tuple(weight.shape)}); transpose a wide matrix first")
    fast = cholesky_qr(weight)
    if fast is not None:
        return q_factor(weight, fast), fast.diagonal
    check_finite("weight", weight.detach())
    q, r = torch.linalg.qr(weight)
    diagonal = torch.diagonal(r, dim1=-2, dim2=-1).detach()
    sign = torch.where(diagonal < 0, -1.0, 1.0).to(q.dtype)
    return q * sign.unsqueeze(-2), diagonal * sign
