r"""The sample covariance of a batch of samples as a dense operator that is symmetric by construction."""
from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_finite as check_finite_entries
from .._validation import check_floating
from .base import DenseOperator


class CovarianceOperator(DenseOperator):
    r"""The sample covariance of the rows of ``x`` (the latent covariance of a minibatch, as in
    the latent-PCA experiment of Li et al., "Amortized Eigendecomposition for Neural Networks",
    NeurIPS 2024):

    .. math::
        C = \frac{1}{m - c} (X - \mathbf{1}\mu^T)^T (X - \mathbf{1}\mu^T), \qquad
        \mu = \frac{1}{m} X^T \mathbf{1},

    for ``m`` samples (rows) of ``n`` variables and the correction ``c`` (``1``: the unbiased
    estimate, ``torch.cov``'s default). :attr:`matrix` is the ``(*batch, n, n)`` tensor, equal to
    ``torch.cov(x.mT, correction=c)`` for one batch entry and differentiable in ``x``; it is a
    :class:`DenseOperator` in every other respect.

    **Input checks, at the cost of ``n`` entries instead of ``n^2``.** Every eigen backend checks
    that its operator is symmetric and finite (:meth:`EigenBackend.forward
    <lowrank_gnn.eigen.EigenBackend.forward>`). For a :class:`DenseOperator` made from a tensor both
    are passes over the whole matrix (the symmetry one over :math:`A - A^T`), which at ``n`` of a
    few hundred cost as much as the amortized backend's whole step. Here the matrix is built
    from ``x`` by this class, so it is symmetric by construction (:attr:`symmetric` is ``True``
    without a pass), and its finiteness follows from its diagonal: a NaN or Inf sample makes its
    variable's mean, and so its variance :math:`C_{ii}`, non-finite, and by Cauchy--Schwarz
    :math:`|C_{ij}| \le \sqrt{C_{ii} C_{jj}}` (the same bound holds for the partial sums of the
    product), so a finite diagonal well below the dtype's maximum means a finite matrix. Only a
    diagonal that fails the test (a non-finite sample, an overflow, or variances within a factor
    ``2 (m - c)`` of the largest float) is followed by the full checks, which say which it is.
    Both shortcuts hold while :attr:`matrix` is the covariance computed here: after an in-place
    edit (its version counter moves) or an assignment of another tensor, the operator is checked
    like any :class:`DenseOperator`. Writes that bypass the version counter (through ``.data`` or
    a NumPy view) are not seen, as by autograd.

    Args:
        x (Tensor): the samples, ``(*batch, m, n)`` (rows are samples, as ``np.cov(...,
            rowvar=False)``; nodes before channels), float32 or float64, finite.
        correction (int): :math:`c`, the difference between the number of samples and the
            divisor, ``0 <= c < m``. (default: ``1``)

    Shapes:
        - **input:** x ``(*batch, m, n)``
        - **operator:** ``(*batch, n, n)``

    Example:
        >>> import torch
        >>> from lowrank_gnn.eigen import AmortizedBackend
        >>> from lowrank_gnn.operators import CovarianceOperator
        >>> z = torch.randn(64, 10, dtype=torch.float64)
        >>> op = CovarianceOperator(z)
        >>> torch.allclose(op.matrix, torch.cov(z.mT)), op.symmetric
        (True, True)
        >>> backend = AmortizedBackend(k=2, init="exact").double()
        >>> backend(op).eigenvalues.shape   # the top-2 principal variances
        torch.Size([2])
    """

    def __init__(self, x: Tensor, correction: int = 1) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of samples (*batch, m, n) (got {type(x).__name__})")
        check_floating("x", x)
        if x.dim() < 2:
            raise ValueError(f"x must have shape (*batch, m, n): m samples (rows) of n variables "
                             f"(got shape {tuple(x.shape)})")
        if isinstance(correction, bool) or not isinstance(correction, int) or correction < 0:
            raise ValueError(f"correction must be a non-negative integer (got correction={correction!r})")
        m = x.shape[-2]
        if m <= correction:
            raise ValueError(f"the covariance needs more samples than correction: x has m={m} rows "
                             f"(shape {tuple(x.shape)}) and correction={correction}; pass more samples or a "
                             f"smaller correction")
        centered = x - x.mean(dim=-2, keepdim=True)
        super().__init__((centered.mT @ centered).div_(m - correction))
        self.samples = x
        self.correction = correction
        # the diagonal bound below which the whole matrix is finite (see the class docstring)
        self._diagonal_limit = torch.finfo(x.dtype).max / (2 * (m - correction))
        # the computed covariance is symmetric by construction and its diagonal proves it finite; both
        # facts live in DenseOperator's cached checks, which an in-place edit or a replacement clears
        self._matrix_unchanged()
        self._symmetric, self._by_construction = True, True

    def _clear_checks(self) -> None:
        super()._clear_checks()
        self._by_construction = False

    def check_finite(self) -> None:
        """Raise a ``ValueError`` if a sample is NaN or Inf or the covariance overflows; one
        reduction over the diagonal when neither is the case (see the class docstring). After an
        in-place edit or a replacement of :attr:`matrix`, the full check."""
        if not (self._matrix_unchanged() and self._by_construction):
            super().check_finite()
            return
        diagonal = self.matrix.detach().diagonal(dim1=-2, dim2=-1)
        if not diagonal.numel() or bool(diagonal.amax() <= self._diagonal_limit):  # NaN compares False
            return
        check_finite_entries("x (the covariance's samples)", self.samples.detach())
        if not bool(torch.isfinite(self.largest_magnitude())):
            scale = float(self.samples.detach().abs().amax())
            raise ValueError(f"the covariance of x (entries up to {scale:.3g}) overflows {self.dtype}; "
                             f"scale x down or pass x.double()")


__all__ = ["CovarianceOperator"]
