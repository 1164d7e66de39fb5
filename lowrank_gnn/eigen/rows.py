r"""Where the rows of an amortized basis live: the one seam between one process and many.

The amortized step (:meth:`AmortizedBackend.solve <lowrank_gnn.eigen.AmortizedBackend.solve>`,
its eigen loss and diagnostics, :meth:`AmortizedBasis.orthonormal
<lowrank_gnn.eigen.AmortizedBasis.orthonormal>`) touches the ``n`` rows of :math:`W`, :math:`U`
and :math:`A U` only through sums over rows, the QR of :math:`W` and the sign convention. It
reaches all three through the basis's ``rows`` object:

* :class:`LocalRows` (here): every row is in this process, every sum over rows is already
  complete (the reductions are the identity), the QR is
  :func:`~lowrank_gnn.linalg.qr_orthonormalize` and the signs are
  :func:`~lowrank_gnn.eigen.canonical_signs`;
* :class:`~lowrank_gnn.distributed.PartitionedRows`: the rows are split over the ranks of a
  :class:`~lowrank_gnn.distributed.Communicator`; sums are all-reduced, the QR is TSQR and the
  sign pivot is searched across ranks.

So the single-process and the row-distributed backends run the same code.
"""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor

from ..linalg.qr import QRFactors, cholesky_qr, qr_orthonormalize
from .base import canonical_signs


class LocalRows:
    """All rows in this process: the reductions of the amortized step are the identity.

    The interface a row-distributed implementation provides as well (see the module docstring).
    """

    #: Number of processes that hold rows.
    world_size = 1
    #: Where a non-finite basis is said to be, in the error of :meth:`AmortizedBasis.orthonormal`.
    where = ""

    def all_reduce(self, tensor: Tensor) -> Tensor:
        """Sum over the processes holding rows, differentiable: here ``tensor`` itself."""
        return tensor

    def all_reduce_(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """In-place reduction (``op``: ``"sum"``, ``"max"`` or ``"min"``) without autograd: here ``tensor`` itself."""
        return tensor

    def orthonormalize(self, weight: Tensor) -> Tuple[Tensor, Tensor]:
        """Thin QR of ``W`` with ``diag(R) > 0``: ``(U, diag(R))`` (:func:`~lowrank_gnn.linalg.qr_orthonormalize`)."""
        return qr_orthonormalize(weight)

    def qr_factors(self, weight: Tensor) -> Optional[QRFactors]:
        """CholeskyQR factors of a well-conditioned ``W`` (:func:`~lowrank_gnn.linalg.cholesky_qr`), else
        ``None`` (then :meth:`orthonormalize`); with them the amortized step's eigen loss takes its
        gradient through :func:`~lowrank_gnn.linalg.q_projection`.

        A subclass that overrides :meth:`orthonormalize` but not this method gets ``None`` here, so
        its own :meth:`orthonormalize` is used: the local CholeskyQR applies only to
        :class:`LocalRows`' own QR."""
        if type(self).orthonormalize is not LocalRows.orthonormalize:
            return None
        return cholesky_qr(weight)

    #: The sign convention of every backend (:func:`~lowrank_gnn.eigen.canonical_signs`) itself, so that
    #: :func:`~lowrank_gnn.eigen.select_eigenpairs` recognises it and signs its fresh copy in place.
    canonical_signs = staticmethod(canonical_signs)

    def __repr__(self) -> str:
        return "LocalRows()"


__all__ = ["LocalRows"]
