r"""An orthonormal basis of a block Krylov space, with the numerically exhausted directions dropped.

The block Lanczos process with full reorthogonalisation (Golub & Underwood, 1977; Saad,
"Numerical Methods for Large Eigenvalue Problems", 2nd ed., 2011, ch. 6): the basis of

.. math::
    \mathcal K_{r}(A, B) = \operatorname{span}\{B, P A B, (P A)^2 B, \dots, (P A)^r B\},
    \qquad P = I - C C^T,

built block by block, each new block orthogonalised against the earlier ones (block classical
Gram-Schmidt, twice) and orthonormalised by a rank-revealing step that drops the directions it
has lost to rounding. Rayleigh-Ritz on the basis (``eigh`` of :math:`Q^T A Q`) then gives the
Ritz pairs of :math:`A` in the space.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .._validation import check_floating

__all__ = ["KRYLOV_BREAKDOWN_EPS", "KrylovBasis", "block_krylov"]

#: A new block's directions whose singular value is at most this many machine epsilons of the
#: block it was drawn from (before the projection; at least the operator's scale) are dropped: what
#: is left of them is the rounding of the projection, the space is exhausted there.
KRYLOV_BREAKDOWN_EPS = 10.0

#: Second pass: a unit direction that loses more than half its norm to the repeated projection was
#: mostly made of the earlier basis (rounding noise of an exhausted space), and is dropped.
_SECOND_PASS_FLOOR = 0.5


class KrylovBasis(NamedTuple):
    """The result of :func:`block_krylov`.

    Attributes:
        basis (Tensor): :math:`Q`, ``(*batch, n, d)``, orthonormal columns; zero columns where
            ``kept`` is False.
        projection (Tensor): :math:`Q^T A Q`, ``(*batch, d, d)``, symmetric.
        kept (Tensor): ``(*batch, d)``, which columns of :math:`Q` are directions (False: a zero
            column of a batch entry that dropped it, see :func:`block_krylov`).
    """

    basis: Tensor
    projection: Tensor
    kept: Tensor


def _power_of_two(largest: Tensor) -> Tensor:
    """``2^floor(log2(largest))`` where ``largest > 0``, else 1: dividing by it is exact."""
    positive = largest > 0
    return torch.where(positive, torch.exp2(torch.floor(torch.log2(torch.where(positive, largest, 1.0)))), 1.0)


def _gram_resolution(dtype: torch.dtype) -> float:
    """Smallest ``sigma_i^2 / sigma_max^2`` that the Gram matrix of a block resolves.

    The computed Gram matrix (and its eigenvalues) is off by about ``eps * sigma_max^2``, so a
    direction with ``sigma_i^2 >= sqrt(eps) sigma_max^2`` comes out with a relative error of
    at most about ``sqrt(eps)``: orthonormal to that accuracy after one pass and to rounding
    after the second (as in CholeskyQR2).
    """
    return torch.finfo(dtype).eps ** 0.5


def _orthonormal_directions(block: Tensor, removed: Tensor, least: Tensor,
                            tolerance: float) -> Tuple[Tensor, Tensor, int]:
    r"""Orthonormal directions of a projected ``block`` above ``tolerance`` times its scale, smallest first.

    The scale :math:`\rho` is the largest column norm the block had before its projection
    (``||x||^2 = ||P x||^2 + ||(I - P) x||^2``, from the Gram diagonal and ``removed``, the
    coefficients of the components the projection took off), at least ``least``; singular directions at or
    below ``tolerance * rho`` are dropped. They are found by the Gram matrix's ``eigh`` (one
    ``(c, c)`` product, one small ``eigh``) where that resolves every direction that matters:
    each eigenvalue is resolved (:func:`_gram_resolution`) or certainly below the threshold;
    otherwise, per batch entry, by the SVD of the block, which resolves singular values down to
    rounding. A Gram matrix that overflows is recomputed with the block scaled by a power of two.

    Shapes:
        block ``(*batch, n, c)``, removed ``(*batch, m, c)``, least ``(*batch,)``; returns the
        directions ``(*batch, n, c)`` (ascending singular values, zero columns where dropped, so
        the kept ones are a suffix), the mask of kept columns ``(*batch, c)`` and the largest
        number of kept columns in a batch entry (one host synchronisation, two where the SVD runs).
    """
    for scaled in (False, True):
        gram = block.mT @ block
        # |G_ij| <= sqrt(G_ii G_jj): a finite diagonal is a finite Gram matrix (else eigh of zeros, then redo)
        diagonal = torch.diagonal(gram, dim1=-2, dim2=-1)
        finite = torch.isfinite(diagonal).all()
        values, rotation = torch.linalg.eigh(torch.where(finite, gram, 0.0))
        reference = torch.maximum((diagonal + removed.square().sum(-2)).amax(-1), least.square())
        floor = (tolerance ** 2 * reference)[..., None]                   # squared threshold, (*batch, 1)
        resolution = _gram_resolution(block.dtype)
        top = values[..., -1:].clamp_min(0)
        resolved = values >= resolution * top
        # an unresolved eigenvalue is below about (resolution + eps) * top: certainly dropped if that is below floor
        ambiguous = (~resolved & (2 * resolution * top > floor)).any(-1)
        keep = resolved & (values > floor)
        finite, fallback, count = torch.stack([finite.long(), ambiguous.any().long(), keep.sum(-1).amax()]).tolist()
        if finite or scaled:
            break
        unit = _power_of_two(block.abs().amax((-2, -1)))                 # squares overflowed: scale and redo
        block, removed, least = block / unit[..., None, None], removed / unit[..., None, None], least / unit
    scaling = torch.where(keep, values.clamp_min(torch.finfo(values.dtype).tiny).rsqrt(), 0.0)
    directions = block @ (rotation * scaling.unsqueeze(-2))
    if fallback:
        left, singular, _ = torch.linalg.svd(block, full_matrices=False)
        left, singular = left.flip(-1), singular.flip(-1)                       # ascending, as eigh
        missing = block.shape[-1] - singular.shape[-1]                          # a block wider than tall
        if missing:
            left = torch.cat([left.new_zeros(*left.shape[:-1], missing), left], -1)
            singular = torch.cat([singular.new_zeros(*singular.shape[:-1], missing), singular], -1)
        exact_keep = singular.square() > floor
        directions = torch.where(ambiguous[..., None, None], left * exact_keep.unsqueeze(-2), directions)
        keep = torch.where(ambiguous[..., None], exact_keep, keep)
        count = int(keep.sum(-1).amax())
    return directions, keep, int(count)


def _project_out(block: Tensor, done: Tensor, coefficients: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """``block`` projected off ``done`` (``coefficients = done^T block`` if already known), and those coefficients."""
    if not done.shape[-1]:
        return block, block.new_zeros(*block.shape[:-2], 0, block.shape[-1])
    if coefficients is None:
        coefficients = done.mT @ block
    return block - done @ coefficients, coefficients


def _new_block(block: Tensor, least: Tensor, done: Tensor, limit: int,
               coefficients: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The next orthonormal block from ``block``: at most ``limit`` directions, orthogonal to ``done``.

    Pass 1 (with ``coefficients = done^T block`` if given) drops directions at or below
    ``KRYLOV_BREAKDOWN_EPS`` eps times the block's largest column (at least ``least``) and keeps
    the ``limit`` largest; pass 2 drops those that lose more than half their norm to the repeated
    projection.
    """
    tolerance = KRYLOV_BREAKDOWN_EPS * torch.finfo(block.dtype).eps
    for first in (True, False):
        block, keep, count = _orthonormal_directions(*_project_out(block, done, coefficients), least, tolerance)
        count = min(count, limit) if first else count
        block, keep = block[..., block.shape[-1] - count:], keep[..., keep.shape[-1] - count:]
        if not count:
            break
        tolerance, least, coefficients = _SECOND_PASS_FLOOR, torch.zeros_like(least), None
    return block, keep


def block_krylov(matmul: Callable[[Tensor], Tensor], start: Tensor, steps: int, *, deflate: Optional[Tensor] = None,
                 max_dim: Optional[int] = None, scale: Optional[Tensor] = None,
                 start_orthonormal: bool = False) -> KrylovBasis:
    r"""An orthonormal basis :math:`Q` of the block Krylov space
    :math:`\operatorname{span}\{B, PAB, \dots, (PA)^r B\}` (:math:`B` = ``start``,
    :math:`r` = ``steps``, :math:`P = I - CC^T` with :math:`C` = ``deflate``), and :math:`Q^T A Q`.

    Block Lanczos with full reorthogonalisation: each block :math:`A B_j` (one call of
    ``matmul``) is projected off :math:`C` and off the basis so far, orthonormalised keeping only
    its singular directions above :math:`\tau \cdot \rho`, projected again and orthonormalised
    again, dropping the directions that lose more than half their norm in the second projection
    (block classical Gram-Schmidt twice; "twice is enough"). Here

    * :math:`\tau` = :data:`KRYLOV_BREAKDOWN_EPS` machine epsilons of ``start``'s dtype,
    * :math:`\rho` is the largest column norm of the block *before* the projection (for later
      blocks at least ``scale``): a direction below :math:`\tau\rho` is what is left of a
      column that the projection cancelled, i.e. rounding. Dropping it, instead of normalising
      it to a unit vector of noise, is what keeps :math:`Q` orthonormal when the space is
      exhausted (``start`` with zero or dependent columns, an invariant subspace reached,
      ``(r + 1) c`` above ``n``). A direction that lost more than half its norm in the second
      projection was mostly made of the basis so far, i.e. also rounding.

    The orthonormalisation is rank revealing: the Gram matrix's ``eigh`` where its eigenvalues
    resolve every direction that matters (the well-conditioned blocks of a healthy Krylov
    space, a small ``(c, c)`` problem), else the block's SVD, which resolves singular values down to
    rounding. The start is taken in units of its largest entry and the images in units of
    :math:`\max |A B_0|` (powers of two: exact), and a Gram matrix that overflows all the same is
    recomputed scaled, so any :math:`\|A\|` the dtype holds works. A block with no direction
    left ends the space early. Each orthonormalisation reads one number back to the host (the
    width of the next block), two where the SVD runs.

    **Batches.** With a batch, every entry has the same number of columns: a column is removed
    where all entries dropped it, and is a zero column, marked False in
    :attr:`KrylovBasis.kept`, in the entries that dropped it while another kept it. Without a
    batch (or where all entries agree) every returned column is kept. A zero column makes a
    zero row and column of :math:`Q^T A Q`, whose Ritz pair (value 0) is spurious: a caller
    picking Ritz pairs ranks those last (see ``kept``).

    Args:
        matmul (callable): ``X -> A X`` for the symmetric operator :math:`A`, on
            ``(*batch, n, c)`` blocks. It is called ``steps + 1`` times at most (once per block,
            the last for :math:`Q^T A Q`), fewer when the space is exhausted or ``max_dim`` reached.
        start (Tensor): the start block :math:`B`.
        steps (int): :math:`r`, the number of blocks after the first, ``>= 0``.
        deflate (Tensor, optional): :math:`C`, orthonormal columns that the space is kept
            orthogonal to (the Krylov space of :math:`PA` on the complement of :math:`C`).
            (default: ``None``)
        max_dim (int, optional): largest number of columns of :math:`Q`, ``>= 0``; the last
            block keeps its largest directions. (default: ``(steps + 1) c``)
        scale (Tensor, optional): an estimate of :math:`\|A\|` ``(*batch,)`` or scalar, the least
            :math:`\rho` of the blocks after the first. (default: the largest column norm of
            :math:`A B_0`)
        start_orthonormal (bool): ``start`` already has orthonormal columns (orthogonal to
            ``deflate``) and is used as the first block as it is. (default: ``False``)

    Returns:
        :class:`KrylovBasis` ``(basis, projection, kept)``: :math:`Q`, :math:`Q^T A Q` and the
        mask of its non-zero columns.

    Shapes:
        start ``(*batch, n, c)``, deflate ``(*batch, n, m)``; basis ``(*batch, n, d)``,
        projection ``(*batch, d, d)``, kept ``(*batch, d)`` with ``d <= max_dim`` and
        ``d <= n - m``.

    Example:
        >>> import torch
        >>> from lowrank_gnn.linalg import block_krylov
        >>> a = torch.diag(torch.arange(6.0, dtype=torch.float64))
        >>> start = torch.ones(6, 1, dtype=torch.float64)
        >>> krylov = block_krylov(a.__matmul__, start, steps=10)   # the space is exhausted after 6
        >>> krylov.basis.shape
        torch.Size([6, 6])
        >>> torch.linalg.eigvalsh(krylov.projection).round()
        tensor([0., 1., 2., 3., 4., 5.], dtype=torch.float64)
    """
    check_floating("start", start)
    if start.dim() < 2:
        raise ValueError(f"start must have shape (*batch, n, c) (got shape {tuple(start.shape)})")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer (got steps={steps!r})")
    if max_dim is not None and (isinstance(max_dim, bool) or not isinstance(max_dim, int) or max_dim < 0):
        raise ValueError(f"max_dim must be a non-negative integer or None (got max_dim={max_dim!r})")
    if deflate is not None and (deflate.shape[:-1] != start.shape[:-1] or deflate.dtype != start.dtype):
        raise ValueError(f"deflate must have shape (*batch, n, m) and the dtype of start, (*batch, n) = "
                         f"{tuple(start.shape[:-1])}, {start.dtype} (got {tuple(deflate.shape)}, {deflate.dtype})")
    *batch, n, width = start.shape
    capacity = (steps + 1) * width if max_dim is None else min(max_dim, (steps + 1) * width)
    deflated = 0 if deflate is None else deflate.shape[-1]
    capacity = min(capacity, n - deflated)
    # filled block by block, after the columns of C (so that one product projects off both); only
    # the part written is returned
    columns = start.new_empty(*batch, n, deflated + max(capacity, 0))
    if deflate is not None:
        columns[..., :deflated] = deflate
    basis = columns[..., deflated:]
    projection = start.new_empty(*batch, max(capacity, 0), max(capacity, 0))
    kept = torch.empty(*batch, max(capacity, 0), dtype=torch.bool, device=start.device)
    if capacity <= 0:
        return KrylovBasis(basis, projection, kept)
    if start_orthonormal:
        block = start[..., :capacity]
        keep = torch.ones(*block.shape[:-2], block.shape[-1], dtype=torch.bool, device=start.device)
    else:  # in units of its largest entry (a power of two: exact), so that no square over- or underflows
        start = start / _power_of_two(start.abs().amax((-2, -1)))[..., None, None]
        block, keep = _new_block(start, start.new_zeros(batch), columns[..., :deflated], capacity)
    unit: Optional[Tensor] = None
    least: Optional[Tensor] = None
    size = 0
    for step in range(steps + 1):
        end = size + block.shape[-1]
        if end == size:
            break
        basis[..., size:end] = block
        kept[..., size:end] = keep
        image = matmul(block)
        if unit is None:  # every image in units of ~||A|| (a power of two), for the same reason
            unit = _power_of_two(image.abs().amax((-2, -1)))
        image = image / unit[..., None, None]
        if least is None:
            least = torch.diagonal(image.mT @ image, dim1=-2, dim2=-1).amax(-1).sqrt() if scale is None else \
                torch.as_tensor(scale, dtype=image.dtype, device=image.device) / unit
        # [C, Q]^T A Q_new: its lower part is the projection's new columns, and all of it the first
        # projection of the next block (one product for both)
        coefficients = columns[..., :deflated + end].mT @ image
        column = coefficients[..., deflated:, :]
        projection[..., :end, size:end] = column
        projection[..., size:end, :end] = column.mT
        size = end
        if step == steps or size == capacity:
            break
        block, keep = _new_block(image, least, columns[..., :deflated + size], capacity - size, coefficients)
    projection = projection[..., :size, :size]
    scaled = 1.0 if unit is None else unit[..., None, None]
    return KrylovBasis(basis[..., :size], (projection + projection.mT) / 2 * scaled, kept[..., :size])
