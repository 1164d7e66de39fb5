"""The ``k`` smallest or largest eigenpairs of a batch of dense symmetric matrices."""
from __future__ import annotations

import math
from typing import Any, Tuple

import numpy
import torch
from torch import Tensor

from .._validation import check_choice, check_floating, check_k
from .._validation import check_finite as check_finite_entries  # the name check_finite is the keyword

__all__ = ["eigh_extremal", "EXTREMAL_METHODS", "SUBSET_MIN_SIZE", "SUBSET_MAX_FRACTION", "subset_pays"]

#: The ``method`` values of :func:`eigh_extremal`.
EXTREMAL_METHODS = ("auto", "subset", "full")

#: Smallest matrix for which ``method="auto"`` asks LAPACK for the wanted pairs only. Measured
#: (one thread, float64 graph Laplacians, ``k = 9``): ``?syevr`` with an index range takes 1.1x
#: the time of a full ``torch.linalg.eigh`` at ``n = 64``, 0.89x at 96, 0.64x at 200, 0.47x at 400.
SUBSET_MIN_SIZE = 64

#: Largest ``k / n`` for which ``method="auto"`` uses the subset solver: its bisection and inverse
#: iteration cost grows with ``k`` (measured break-even ``k`` about 0.12 n at n = 96-200).
SUBSET_MAX_FRACTION = 0.1


def subset_pays(n: int, k: int, device: torch.device) -> bool:
    """Whether ``method="auto"`` takes LAPACK's subset solver for ``k`` pairs of an ``(n, n)`` matrix:
    on the CPU, for ``n >= SUBSET_MIN_SIZE`` and ``k <= SUBSET_MAX_FRACTION * n``."""
    return torch.device(device).type == "cpu" and n >= SUBSET_MIN_SIZE and k <= SUBSET_MAX_FRACTION * n


def eigh_extremal(matrices: Tensor, k: int, which: str = "smallest", method: str = "auto",
                  check_finite: bool = True) -> Tuple[Tensor, Tensor]:
    r"""The ``k`` smallest or largest eigenpairs of each symmetric matrix of a batch, deterministically.

    For :math:`A = U \Lambda U^\top` with eigenvalues :math:`\lambda_1 \le \dots \le \lambda_n`,
    returns :math:`(\lambda_1, \dots, \lambda_k)` and their eigenvectors (``which="smallest"``,
    ascending) or :math:`(\lambda_n, \dots, \lambda_{n-k+1})` and theirs (``which="largest"``,
    descending). Only the lower triangle of each matrix is read, as by ``torch.linalg.eigh``.

    Methods (``method=``):

    * ``"subset"``: LAPACK's ``?syevr`` through SciPy (``dsyevr`` for float64, ``ssyevr`` for
      float32) with an index range: the Householder tridiagonalisation, then bisection and
      inverse iteration for the ``k`` wanted pairs only, and the back-transformation of those
      ``k`` vectors, so the :math:`O(n^3)` work of a full solve's eigenvectors is skipped. CPU
      tensors only. Should LAPACK report a failure for a matrix, that matrix is solved by
      ``torch.linalg.eigh`` instead;
    * ``"full"``: ``torch.linalg.eigh`` of the whole batch, then the ``k`` wanted columns, on any
      device;
    * ``"auto"``: ``"subset"`` for CPU matrices with :math:`n \ge` :data:`SUBSET_MIN_SIZE` and
      :math:`k \le` :data:`SUBSET_MAX_FRACTION` :math:`\cdot n` (:func:`subset_pays`), where it
      measured faster, else ``"full"``. The choice depends on ``n``, ``k`` and the device only,
      so a matrix gets the same bits alone or within any batch.

    Both methods are deterministic for a given input and thread count. Eigenvector signs (and,
    within a repeated eigenvalue, the basis of its eigenspace) are whatever LAPACK returns and
    may differ between the methods; fix signs with :func:`~lowrank_gnn.eigen.canonical_signs`
    where they matter. The results carry no gradient (use ``torch.linalg.eigh`` to differentiate).

    Args:
        matrices (Tensor): symmetric float32 or float64 matrices, finite. Only the lower triangle is
            read and symmetry is not checked: a non-symmetric matrix is solved as the symmetric
            matrix of its lower triangle, as by ``torch.linalg.eigh``.
        k (int): eigenpairs per matrix, ``1 <= k <= n``.
        which (str): ``"smallest"`` or ``"largest"``. (default: ``"smallest"``)
        method (str): ``"auto"``, ``"subset"`` or ``"full"``. (default: ``"auto"``)
        check_finite (bool): check that the entries are finite (one pass over the batch and a
            host synchronisation). Pass ``False`` only for matrices known to be finite: LAPACK's
            result on NaN or Inf entries is undefined. (default: ``True``)

    Shapes:
        matrices ``(*batch, n, n)`` -> eigenvalues ``(*batch, k)``, eigenvectors ``(*batch, n, k)``
        (columns), both with the input's dtype and device.

    Example:
        >>> import torch
        >>> from lowrank_gnn.linalg import eigh_extremal
        >>> path = torch.diag(torch.full((4,), 2.0)) - torch.diag(torch.ones(3), 1) - torch.diag(torch.ones(3), -1)
        >>> values, vectors = eigh_extremal(path.expand(5, 4, 4), k=2)
        >>> values.shape, vectors.shape
        (torch.Size([5, 2]), torch.Size([5, 4, 2]))
    """
    check_floating("matrices", matrices)
    if matrices.dim() < 2 or matrices.shape[-1] != matrices.shape[-2]:
        raise ValueError(f"matrices must have shape (*batch, n, n) (got {tuple(matrices.shape)})")
    n = matrices.shape[-1]
    check_k(k, n, what="the matrix size n")
    check_choice("which", which, ("smallest", "largest"))
    check_choice("method", method, EXTREMAL_METHODS)
    if method == "subset" and matrices.device.type != "cpu":
        raise ValueError(f"method='subset' runs on CPU tensors only (got a tensor on {matrices.device}); "
                         f"use method='auto' or 'full', or move the matrices with .cpu()")
    if matrices.requires_grad and torch.is_grad_enabled():
        raise ValueError("eigh_extremal gives no gradient, and matrices requires grad; use torch.linalg.eigh to "
                         "differentiate, or pass matrices.detach()")
    if check_finite:
        check_finite_entries("matrices", matrices)
    if method == "full" or (method == "auto" and not subset_pays(n, k, matrices.device)):
        return _full(matrices, k, which)
    batch = matrices.shape[:-2]
    values, vectors = _subset(matrices.reshape(math.prod(batch), n, n), k, which)
    return values.reshape(*batch, k), vectors.reshape(*batch, n, k)


def _full(matrices: Tensor, k: int, which: str) -> Tuple[Tensor, Tensor]:
    """``torch.linalg.eigh`` of any batch shape, then the ``k`` wanted columns (the whole result when ``k = n``)."""
    values, vectors = torch.linalg.eigh(matrices)
    if which == "smallest":
        return (values, vectors) if k == values.shape[-1] else (values[..., :k], vectors[..., :k])
    return values[..., -k:].flip(-1), vectors[..., -k:].flip(-1)


def _subset(matrices: Tensor, k: int, which: str) -> Tuple[Tensor, Tensor]:
    """``?syevr`` with the index range of the ``k`` wanted pairs, one matrix at a time."""
    from scipy.linalg import get_lapack_funcs

    n = matrices.shape[-1]
    arrays = matrices.detach().numpy()
    syevr = get_lapack_funcs("syevr", dtype=arrays.dtype)
    low, high = (1, k) if which == "smallest" else (n - k + 1, n)  # LAPACK's 1-based index range
    values = numpy.empty((arrays.shape[0], k), dtype=arrays.dtype)
    vectors = numpy.empty((arrays.shape[0], n, k), dtype=arrays.dtype)
    for b, array in enumerate(arrays):
        # f2py copies the C-ordered array to Fortran order (the same matrix): lower=1 reads its lower triangle
        result: Any = syevr(array, compute_v=1, range="I", lower=1, il=low, iu=high)
        w, z, found, _, info = result
        if info != 0 or found != k:  # LAPACK failed on this matrix: the same index range of a full solve
            all_values, all_vectors = torch.linalg.eigh(torch.from_numpy(array))
            w, z = all_values.numpy()[low - 1:high], all_vectors.numpy()[:, low - 1:high]
        values[b], vectors[b] = w[:k], z
    values_t, vectors_t = torch.from_numpy(values), torch.from_numpy(vectors)
    if which == "largest":
        values_t, vectors_t = values_t.flip(-1), vectors_t.flip(-1)
    return values_t, vectors_t
