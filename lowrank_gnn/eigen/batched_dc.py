r"""The ``batched_dc`` backend: batch-efficient divide-and-conquer ``eigh`` for mini-batches.

Method: Song, "A Short Note on Batch-efficient Divide-and-Conquer Algorithm for
EigenDecomposition" (BatchED), extended to indefinite, singular and repeated spectra, to
every ``n >= 1`` and with deflation. Every stage runs on the whole batch at once:

1. scale each matrix by its largest entry (no overflow, no underflow in ``float32``);
2. batched Householder tridiagonalisation :math:`A = Q T Q^\top`;
3. Cuppen's divide and conquer on :math:`T`, one recursion level of every matrix per step,
   with deflation of tiny weights and of (nearly) equal poles, roots of all secular
   equations of a level solved together, Gu-Eisenstat eigenvectors
   (:mod:`lowrank_gnn.linalg.tridiagonal`);
4. back-transformation :math:`U = Q V`.

On a CPU LAPACK is already efficient per matrix, and the batched method did not beat it in
any cell of the measured grid (``docs/benchmarks/batched_eigh.md``), so ``method="auto"`` uses
``torch.linalg.eigh`` there and the divide and conquer on GPUs for ``n <= 64``, where the
published advantage lies (unmeasured here).

Accuracy (measured on the stress set of ``tests/eigen/test_batched_dc.py``: random,
clustered, repeated, zero, identity, diagonal, rank-one, Wilkinson, graded, badly scaled,
disconnected-graph Laplacians): relative residual :math:`\|AU - U\Lambda\|_F / \|A\|_F`,
:math:`\|U^\top U - I\|_{\max}` and eigenvalue error against LAPACK stay below
``4 n eps`` in both dtypes (the tests assert ``16 n eps``); LAPACK's own residual is
about half of ours.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._validation import check_choice, check_floating
from ..linalg.tridiagonal import apply_reflectors, householder_tridiagonalize, tridiagonal_eigh
from ..operators.base import DenseOperator
from .base import EigenBackend, EigenPairs, canonical_signs, select_eigenpairs
from .exact import _PartialEigh

METHODS = ("auto", "dc", "lapack")

#: Largest n for which ``method="auto"`` picks the divide and conquer off the CPU (Song's
#: reported GPU advantage is for small and medium matrices; unmeasured on this project's machines).
AUTO_DC_MAX_N = 64


def _divide_and_conquer(matrix: Tensor) -> Tuple[Tensor, Tensor]:
    """Ascending eigenpairs of symmetric ``(B, n, n)`` by the batched pipeline (no autograd)."""
    scale = matrix.abs().amax(dim=(-2, -1)) if matrix.numel() else matrix.new_ones(matrix.shape[0])
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    diagonal, off, reflectors, taus = householder_tridiagonalize(matrix / scale[:, None, None])
    values, vectors = tridiagonal_eigh(diagonal, off, check_finite=False)   # checked by the reduction
    return values * scale.unsqueeze(-1), apply_reflectors(reflectors, taus, vectors)


class _DivideAndConquerEigh(torch.autograd.Function):
    r"""Eigenpairs with the standard ``eigh`` backward.

    For a symmetric perturbation :math:`dA`, :math:`d\lambda_i = u_i^\top dA\, u_i` and
    :math:`dU = U (F \circ U^\top dA\, U)`, :math:`F_{ij} = 1/(\lambda_j - \lambda_i)`
    (:math:`F_{ii} = 0`), so the adjoint is
    :math:`\bar A = U (\operatorname{diag}(\bar\lambda) + F \circ U^\top \bar U) U^\top`,
    symmetrised because :math:`A` ranges over symmetric matrices (Giles, "An extended
    collection of matrix derivative results", 2008, Sec. 3.1; the rule
    ``torch.linalg.eigh`` uses). Like it, the result is not finite when eigenvalues repeat
    and the loss depends on the basis inside the repeated eigenspace.
    """

    @staticmethod
    def forward(ctx, matrix: Tensor) -> Tuple[Tensor, Tensor]:
        values, vectors = _divide_and_conquer(matrix)
        ctx.save_for_backward(values, vectors)
        return values, vectors

    @staticmethod
    def backward(ctx, grad_values: Optional[Tensor], grad_vectors: Optional[Tensor]):
        values, vectors = ctx.saved_tensors
        inner = torch.zeros_like(vectors)
        if grad_vectors is not None:
            difference = values.unsqueeze(-2) - values.unsqueeze(-1)         # (i, j): lambda_j - lambda_i
            difference.diagonal(dim1=-2, dim2=-1).fill_(1.0)
            inner = (vectors.mT @ grad_vectors) / difference
            inner.diagonal(dim1=-2, dim2=-1).zero_()
        if grad_values is not None:
            inner = inner + torch.diag_embed(grad_values)
        grad = vectors @ inner @ vectors.mT
        return (grad + grad.mT) / 2


def batched_eigh(matrix: Tensor, method: str = "dc") -> Tuple[Tensor, Tensor]:
    r"""All eigenpairs of a batch of symmetric matrices, ascending, like ``torch.linalg.eigh``.

    Batch-efficient divide and conquer (Song, BatchED; see :mod:`lowrank_gnn.eigen.batched_dc`).
    The input is symmetrised as :math:`(A + A^\top)/2` (``torch.linalg.eigh`` reads one
    triangle instead); the result is differentiable with the standard ``eigh`` backward.

    Args:
        matrix (Tensor): symmetric matrices, floating point, finite.
        method (str): ``"dc"`` (the batched divide and conquer), ``"lapack"``
            (``torch.linalg.eigh``) or ``"auto"`` (:func:`auto_method`). (default: ``"dc"``)

    Shapes:
        matrix ``(*batch, n, n)`` -> eigenvalues ``(*batch, n)`` ascending,
        eigenvectors ``(*batch, n, n)`` (columns).

    Example:
        >>> import torch
        >>> from lowrank_gnn.eigen import batched_eigh
        >>> values, vectors = batched_eigh(torch.eye(3).expand(5, 3, 3))
        >>> values.shape, vectors.shape
        (torch.Size([5, 3]), torch.Size([5, 3, 3]))
    """
    check_choice("method", method, METHODS)
    operator = DenseOperator(matrix)   # checks: tensor, floating point, shape (*batch, n, n)
    operator.check_finite()
    return _symmetric_eigh(operator.symmetrized(), method)


def _symmetric_eigh(symmetric: Tensor, method: str) -> Tuple[Tensor, Tensor]:
    """:func:`batched_eigh` of an already checked, symmetrised batch."""
    if method == "auto":
        method = auto_method(symmetric)
    if method == "lapack":
        return torch.linalg.eigh(symmetric)
    batch, n = symmetric.shape[:-2], symmetric.shape[-1]
    values, vectors = _DivideAndConquerEigh.apply(symmetric.reshape(math.prod(batch), n, n))
    return values.reshape(*batch, n), vectors.reshape(*batch, n, n)


def auto_method(matrix: Tensor) -> str:
    """The path ``method="auto"`` takes for this batch: LAPACK on CPUs, D&C for small GPU matrices.

    Measured on a 2-core CPU (``benchmarks/batched_eigh.py``, ``docs/benchmarks/batched_eigh.md``):
    ``torch.linalg.eigh`` was faster than the divide and conquer in every cell of the grid
    (batch 64-4096, n 4-256), so there is no CPU crossover and the CPU always takes LAPACK.
    On other devices the divide and conquer is taken for ``n <= AUTO_DC_MAX_N`` -- the
    regime of the method's published GPU advantage; this is not measured here (no GPU).
    """
    check_floating("matrix", matrix)
    if matrix.device.type == "cpu" or matrix.shape[-1] > AUTO_DC_MAX_N:
        return "lapack"
    return "dc"


class BatchedDCBackend(EigenBackend):
    r"""Eigen backend for mini-batches of small and medium symmetric matrices.

    Computes all eigenpairs with :func:`batched_eigh` (batch-efficient divide and conquer,
    Song's BatchED with deflation) and keeps ``k`` in the ``which`` order with canonical
    signs; differentiable to first order, with the exact backend's backward of the kept
    pairs (a second derivative raises). Accepts any symmetric input: indefinite, singular,
    zero, repeated eigenvalues, every ``n >= 1``, ``float32`` and ``float64``, on any
    device; a batch of size 0 gives empty results.

    Args:
        k (int): number of eigenpairs.
        which (str): ``"largest"``, ``"smallest"`` or ``"magnitude"``. (default: ``"largest"``)
        method (str): ``"dc"``, ``"lapack"`` or ``"auto"`` (LAPACK on CPUs, where it was
            measured faster in every cell, divide and conquer on GPUs for ``n <= 64``;
            :func:`auto_method`). (default: ``"auto"``)

    Shapes:
        op ``(*batch, n, n)`` -> eigenvalues ``(*batch, k)``, eigenvectors ``(*batch, n, k)``.

    Example:
        >>> import torch
        >>> from lowrank_gnn.eigen import BatchedDCBackend
        >>> backend = BatchedDCBackend(k=2, method="dc")
        >>> pairs = backend(torch.diag_embed(torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])))
        >>> pairs.eigenvalues
        tensor([[3., 2.],
                [5., 0.]])
    """

    def __init__(self, k: int, which: str = "largest", method: str = "auto") -> None:
        super().__init__(k, which)
        self.method = check_choice("method", method, METHODS)

    def solve(self, op) -> EigenPairs:
        # forward() has checked the operator (finite, symmetric): only symmetrise, and only if needed
        op = op if isinstance(op, DenseOperator) else DenseOperator(op.to_dense())
        if op.matrix.requires_grad:
            # the backward of the k kept pairs only (as the exact backend's): gaps between two discarded
            # eigenvalues never enter, so a repeated eigenvalue that is not returned gives no NaN
            values, vectors = _PartialEigh.apply(op.symmetrized(), self.k, self.which,
                                                 functools.partial(_symmetric_eigh, method=self.method))
            return EigenPairs(values, canonical_signs(vectors))
        method = auto_method(op.matrix) if self.method == "auto" else self.method
        # LAPACK reads the matrix column by column: handed over so stored, eigh copies it without transposing
        values, vectors = _symmetric_eigh(op.symmetrized(column_major=method == "lapack"), method)
        return EigenPairs(*select_eigenpairs(values, vectors, self.k, self.which))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, method={self.method!r}"
