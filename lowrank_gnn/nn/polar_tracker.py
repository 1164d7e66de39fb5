r"""A warm-started polar factor of a matrix that changes a little between calls.

The nuclear norm is a maximum over orthogonal matrices (von Neumann),
:math:`\|X\|_* = \max_{Q^T Q = I} \operatorname{tr}(Q^T X)`, attained at the polar factor
:math:`P = U V^T` of :math:`X`, which is also its gradient. An estimate
:math:`\operatorname{tr}(Q^T X)` from an orthonormal :math:`Q` near :math:`P` is a lower bound,
accurate to second order in :math:`Q`'s error. :class:`PolarTracker` keeps such a :math:`Q`
from call to call and improves it with a few matrix products per call, instead of an SVD.
"""
from __future__ import annotations

from typing import Optional, Tuple, cast

import torch
from torch import Tensor, nn

from .._validation import check_finite, check_floating, check_k, check_positive_int

#: Leading singular triplets that :class:`PolarTracker` deflates by default.
DEFAULT_DEFLATE = 16
#: Width of :class:`PolarTracker`'s sign block by default.
DEFAULT_SIGN_BLOCK = 32
#: The sign block's inverse-iteration shift sits this far below its lowest Ritz value: a quarter of
#: that value, plus this share of sigma_max(R) (so the shifted matrix stays nonsingular near zero).
_SHIFT_RELATIVE, _SHIFT_ABSOLUTE = 0.25, 0.01
#: Seed of the Gaussian block a loaded checkpoint without a matching sign block starts that block from.
_SIGN_BLOCK_SEED = 0
#: The sign block runs on every this-many-th call, with this many inverse-iteration solves of its one LU.
#: Measured on ``benchmarks/amortized_vs_eigh.py --rows nuclear --nuclear-method polar`` (200 steps, one
#: thread, the two schedules in alternating runs): every call with one solve left the norm 0.03%, 0.16% and
#: 0.75% low at d = 128, 256 and 512 at 0.9x, 1.3-1.4x and 2.2-2.3x the speed of the SVD step; every second
#: call with two solves 0.03%, 0.11% and 0.79% low at 1.0-1.1x, 1.6x and 2.5x. Every second call with one
#: solve left it 1.2% low at 512, every third with three 1.0%; and the rest of the step bounds the gain (every
#: fourth call, three solves, 64 directions: 1.1x, 1.6x, 2.7x, the norm 0.82% low at 512).
_SIGN_EVERY, _SIGN_SOLVES = 2, 2


def check_matrix(matrix: Tensor) -> Tensor:
    """``matrix`` for a singular-value tracker: a finite float32/float64 tensor ``(*batch, m, n)``, not empty."""
    if not isinstance(matrix, Tensor):
        raise TypeError(f"matrix must be a torch.Tensor (got {type(matrix).__name__})")
    check_floating("matrix", matrix)
    if matrix.dim() < 2:
        raise ValueError(f"matrix must have shape (*batch, m, n) (got shape {tuple(matrix.shape)})")
    if matrix.shape[-2] == 0 or matrix.shape[-1] == 0:
        raise ValueError(f"matrix must have at least one row and one column (got shape {tuple(matrix.shape)}): "
                         "an empty matrix has no singular vectors")
    check_finite("matrix", matrix.detach())
    return matrix


class PolarTracker(nn.Module):
    r"""Tracks the polar factor, nuclear norm and Ky Fan norm of a slowly changing matrix.

    Each call takes the current matrix :math:`X` (``m >= n``; a wide matrix is handled as
    :math:`X^T`) and returns the estimate :math:`\hat\nu \approx \|X\|_*` (or the Ky Fan
    ``rank``-norm) and the direction :math:`\hat P \approx \partial \|X\|_* / \partial X`, both
    without gradient, from state kept since the previous call. The first call initialises that
    state from one SVD. Three parts:

    * **Leading block** (``r`` triplets, ``r = deflate``, or ``rank`` for the Ky Fan norm): one
      step of subspace iteration, :math:`U = \operatorname{orth}(X V)`,
      :math:`V \leftarrow \operatorname{orth}(X^T U)`, then the exact SVD of the ``r x r``
      matrix :math:`B = U^T X V`. Its rate is the ratio :math:`(\sigma_{r+1}/\sigma_r)^2`, not
      the scale of :math:`X`, and the products are ``(m, n) x (n, r)``.
    * **Remainder** (full nuclear norm only): :math:`R = X (I - V V^T)`, whose singular values are
      :math:`\sigma_{r+1}, \dots`, and its polar factor :math:`Q` (zero on :math:`\operatorname{span}
      V`). One Riemannian gradient-ascent step of :math:`\operatorname{tr}(Q^T R)` on the Stiefel
      manifold with heavy-ball momentum on the rotation, :math:`\Theta \leftarrow \beta K + \mu \Theta`,
      :math:`K = \operatorname{skew}(Q^T R)`, step :math:`\beta = b / \sigma_{\max}(R)` (a power
      iteration carried across calls), and one Newton-Schulz step as the retraction,
      :math:`Y \leftarrow Y (3 I - Y^T Y)/2`. The rotation between singular pairs
      :math:`i, j` of :math:`R` contracts like :math:`1 - b (\sigma_i + \sigma_j) / (2
      \sigma_{\max}(R))`: deflating the leading block removes the few large singular values that
      would otherwise make the step tiny for all the others. Four ``n x n``-sized products; the
      ``n x n`` state is updated in place (a fresh ``n x n`` tensor costs about a pass over it).
    * **Sign block** (``p = sign_block`` directions, before the ascent step, on every second call):
      the ascent cannot change the sign with which :math:`Q` pairs a singular vector, and a singular
      value that the penalty drives through zero leaves :math:`Q` pairing it with the wrong sign: the symmetric
      part :math:`S = \operatorname{sym}(Q^T R)` then has a negative eigenvalue :math:`-\sigma`,
      the estimate is :math:`2\sigma` low, and the penalty's gradient :math:`Q` *grows* that
      singular value. Two steps of shifted inverse iteration, :math:`Z \leftarrow \operatorname{orth}
      ((S - \sigma_0 I)^{-2} Z)` (one LU of an ``n x n`` matrix, two solves with ``p`` columns), keep
      ``Z`` on the lowest eigenvectors of :math:`S`; the Ritz pairs :math:`(\theta_i, w_i)` of :math:`S` on
      :math:`\operatorname{span} Z` (a ``p x p`` ``eigh``) with :math:`\theta_i < 0` are the wrong
      signs, and the reflection :math:`Q \leftarrow Q (I - 2 W W^T)`, :math:`W = [w_i]_{\theta_i < 0}`,
      turns them round: it keeps :math:`Q` orthogonal and raises :math:`\operatorname{tr}(Q^T R)` by
      :math:`2 \sum_{\theta_i < 0} |\theta_i|`. Where no Ritz value is negative it does nothing.
      Every second call with two solves tracks the norm as closely as every call with one, at
      less cost (measured: ``_SIGN_EVERY``; the SVD and PCA guide).

    The state is a checkpoint (``state_dict()``, with the position in the sign block's schedule as
    the module's extra state; a checkpoint without it starts the schedule again). Loading one makes
    the sign block match this tracker's ``sign_block``: a checkpoint's block is dropped where
    ``sign_block=0``, and where the checkpoint has none (``sign_block=0``) or one of another width,
    the block starts again from a
    fixed-seed Gaussian block projected onto the complement of :math:`V` (no SVD, the same on every
    load); its inverse iteration then moves it to the lowest eigenvectors of :math:`S`. Each call
    updates the ``n x n`` buffers in place, as an optimiser updates a module's parameters:
    ``state_dict()`` shares their storage, so keep a snapshot with ``copy.deepcopy``.

    The estimate is :math:`\sum \sigma(B) + \operatorname{tr}(Q^T R)` and the direction
    :math:`U \operatorname{polar}(B) V^T + Q`, orthogonal whatever the bases up to the
    Newton-Schulz step's remainder (the square of the last rotation's departure): the estimate
    is a lower bound of :math:`\|X\|_*` up to that remainder and, at a fixed :math:`X`, converges
    to it. On a matrix that changes between calls it lags: pairs of small singular
    values, whose vectors turn fastest, are the slowest to follow.

    Args:
        rank (int, optional): ``None`` for the nuclear norm, ``k`` for the Ky Fan ``k``-norm
            (the sum of the ``k`` largest singular values; only the leading block). (default: ``None``)
        deflate (int): size ``r`` of the leading block for the nuclear norm, ``>= 1``.
            (default: ``16``)
        sign_block (int): width ``p`` of the sign block (at most ``n - r``), ``0`` for none.
            (default: ``32``)
        step (float): :math:`b`, the ascent step in units of :math:`1/\sigma_{\max}(R)`, in
            ``(0, 2)``. (default: ``1.0``)
        momentum (float): :math:`\mu` in ``[0, 1)``. (default: ``0.8``)

    Shapes:
        matrix ``(*batch, m, n)``, float32 or float64, finite, not empty (else a clear error);
        returns the estimate ``(*batch,)`` and the direction ``(*batch, m, n)``.

    Example:
        >>> import torch
        >>> from lowrank_gnn.nn import PolarTracker
        >>> x = torch.randn(40, 30, dtype=torch.float64)
        >>> tracker = PolarTracker()
        >>> for _ in range(100):
        ...     value, direction = tracker(x)
        >>> bool(torch.isclose(value, torch.linalg.matrix_norm(x, ord="nuc"), rtol=1e-6))
        True
    """

    right: Optional[Tensor]       # V, (B, n, r)
    remainder: Optional[Tensor]   # Q of R = X (I - V V^T), (B, m, n)
    rotation: Optional[Tensor]    # the heavy-ball rotation Theta, (B, n, n)
    probe: Optional[Tensor]       # the power iteration's vector, (B, n, 1)
    lowest: Optional[Tensor]      # the sign block Z, (B, n, p)
    floor: Optional[Tensor]       # the sign block's lowest Ritz value, (B, 1, 1)

    STATE = ("right", "remainder", "rotation", "probe", "lowest", "floor")
    #: Calls since the start, modulo the sign block's period (the module's extra state in a checkpoint).
    _calls: int = 0

    def __init__(self, rank: Optional[int] = None, deflate: int = DEFAULT_DEFLATE, step: float = 1.0,
                 momentum: float = 0.8, sign_block: int = DEFAULT_SIGN_BLOCK) -> None:
        super().__init__()
        self.rank = None if rank is None else check_positive_int("rank", rank)
        self.deflate = check_positive_int("deflate", deflate)
        if isinstance(sign_block, bool) or not isinstance(sign_block, int) or sign_block < 0:
            raise ValueError(f"sign_block must be an integer >= 0 (got sign_block={sign_block!r})")
        self.sign_block = sign_block
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step < 2:
            raise ValueError(f"step must be a number in (0, 2) (got step={step!r}): the ascent is unstable "
                             "from 2 on")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be a number in [0, 1) (got momentum={momentum!r})")
        self.step, self.momentum = float(step), float(momentum)
        for name in self.STATE:
            self.register_buffer(name, None)

    def _block(self, m: int, n: int) -> int:
        small = min(m, n)
        if self.rank is not None:
            return check_k(self.rank, small, what="min(m, n)", name="rank")
        return min(self.deflate, small)

    @torch.no_grad()
    def _start(self, matrix: Tensor, block: int) -> None:
        """State of the exact polar factor of ``matrix`` (tall, ``(B, m, n)``): one SVD."""
        left, _, right_h = torch.linalg.svd(matrix, full_matrices=False)
        self.right = right_h[:, :block].mT.contiguous()
        if self.rank is None and block < matrix.shape[-1]:
            self.remainder = (left[:, :, block:] @ right_h[:, block:]).contiguous()
            self.rotation = matrix.new_zeros(matrix.shape[0], matrix.shape[-1], matrix.shape[-1])
            self.probe = right_h[:, block:block + 1].mT.contiguous()
            width = self._sign_width(self.right)
            # the sign block starts on the smallest singular values' right vectors
            self.lowest = right_h[:, matrix.shape[-1] - width:].mT.contiguous() if width else None
            self.floor = matrix.new_zeros(matrix.shape[0], 1, 1) if width else None
        else:
            self.remainder = self.rotation = self.probe = self.lowest = self.floor = None

    def _sign_width(self, right: Tensor) -> int:
        """Width of the sign block for the leading block ``right`` (``V``, ``(B, n, r)``) with a remainder."""
        return min(self.sign_block, right.shape[-2] - right.shape[-1])

    def _check_state(self, matrix: Tensor, block: int) -> None:
        right = cast(Tensor, self.right)
        state = right if self.remainder is None else self.remainder
        expected = (matrix.shape[0], matrix.shape[-1], block) if self.remainder is None else tuple(matrix.shape)
        if (right.shape[-1] != block or tuple(state.shape) != expected or state.dtype != matrix.dtype
                or state.device != matrix.device):
            raise ValueError(f"this PolarTracker tracks a matrix of another shape, dtype or device (state "
                             f"{tuple(state.shape)} {state.dtype} on {state.device}, the matrix needs {expected} "
                             f"{matrix.dtype} on {matrix.device}): use one tracker per matrix, or reset() it")
        width = 0 if self.remainder is None else self._sign_width(right)
        lowest, floor = self.lowest, self.floor
        need = (matrix.shape[0], matrix.shape[-1], width)
        if width == 0:
            ok = lowest is None and floor is None
        else:
            ok = (lowest is not None and floor is not None and tuple(lowest.shape) == need
                  and tuple(floor.shape) == (matrix.shape[0], 1, 1) and lowest.dtype == floor.dtype == matrix.dtype
                  and lowest.device == floor.device == matrix.device)
        if not ok:
            got = "none" if lowest is None else f"{tuple(lowest.shape)} {lowest.dtype} on {lowest.device}"
            want = "none" if width == 0 else f"{need} {matrix.dtype} on {matrix.device}"
            raise ValueError(f"this PolarTracker's sign block state ({got}) does not match "
                             f"sign_block={self.sign_block}, which needs {want}: reset() the tracker, or "
                             f"load_state_dict() a checkpoint (loading rebuilds the sign block)")

    def reset(self) -> None:
        """Forget the state: the next call starts again from an SVD."""
        for name in self.STATE:
            setattr(self, name, None)
        self._calls = 0

    def get_extra_state(self) -> int:
        """The position in the sign block's schedule (calls modulo its period), saved with the checkpoint."""
        return self._calls

    def set_extra_state(self, state: int) -> None:
        self._calls = int(state) % _SIGN_EVERY

    @torch.no_grad()
    def forward(self, matrix: Tensor) -> Tuple[Tensor, Tensor]:
        *batch, m, n = check_matrix(matrix).shape
        wide = m < n
        tall = (matrix.mT if wide else matrix).detach().reshape(-1, max(m, n), min(m, n))
        block = self._block(m, n)
        if self.right is None:
            self._start(tall, block)
        self._check_state(tall, block)
        value, direction = self._update(tall)
        direction = direction.reshape(*batch, max(m, n), min(m, n))
        return value.reshape(batch), (direction.mT if wide else direction)

    def _update(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        left = torch.linalg.qr(x @ cast(Tensor, self.right))[0]                       # U = orth(X V), (B, m, r)
        image = x.mT @ left                                               # X^T U, (B, n, r)
        right = torch.linalg.qr(image)[0]                                 # V = orth(X^T U)
        self.right = right
        small_left, values, small_right_h = torch.linalg.svd(image.mT @ right)   # B = U^T X V, r x r
        value = values.sum(-1)
        left_polar, right_polar = left @ small_left, small_right_h @ right.mT      # U polar(B) V^T, factored
        if self.remainder is None:
            return value, left_polar @ right_polar
        rest = torch.baddbmm(x, x @ right, right.mT, alpha=-1.0)               # R = X (I - V V^T)
        # the state's n x n buffers are updated in place below: a fresh 1 MiB tensor costs about as much as a pass
        # over it (its pages are new), and the step makes few passes
        polar = self.remainder
        # Q on the complements of U and V in one pass:
        # (I - U U^T) Q (I - V V^T) = Q - [Q V, U] [V^T; U^T Q (I - V V^T)]
        across = left.mT @ polar
        across = torch.baddbmm(across, across @ right, right.mT, alpha=-1.0)
        polar.baddbmm_(torch.cat([polar @ right, left], -1), torch.cat([right.mT, across], -2), alpha=-1.0)
        probe = cast(Tensor, self.probe)
        tiny = torch.finfo(x.dtype).tiny
        for _ in range(2):  # power iteration on R^T R, normalised after each product (no overflow of sigma^2)
            image_norm, probe = _normalized(rest @ probe, tiny)
            probe_norm, probe = _normalized(rest.mT @ probe, tiny)
        top = image_norm.sqrt() * probe_norm.sqrt()                       # sigma_max(R) estimate, (B, 1, 1)
        probe = torch.where(top > 0, probe, probe.new_full((), probe.shape[-2] ** -0.5))
        self.probe = probe
        beta = self.step / top.clamp_min(tiny)                            # b / sigma_max(R)
        product = polar.mT @ rest                                          # M = Q^T R
        if self.sign_block and self._calls == 0:
            self._flip_signs(polar, product, right, top)
        self._calls = (self._calls + 1) % _SIGN_EVERY
        # heavy-ball Theta = beta skew(M) + mu Theta_old
        rotation = cast(Tensor, self.rotation).mul_(self.momentum)
        rotation.addcmul_(product, beta * 0.5).addcmul_(product.mT, beta * 0.5, value=-1.0)
        # Y = Q + beta (R - Q sym(M)) + mu Q Theta_old = (Q + beta R) + Q (Theta - beta M)
        ascent = torch.addcmul(polar, rest, beta).baddbmm_(polar, product.mul_(-beta).add_(rotation))
        gram = (ascent.mT @ ascent).mul_(-0.5)                              # Newton-Schulz: Y (3 I - Y^T Y) / 2
        gram.diagonal(dim1=-2, dim2=-1).add_(1.5)
        polar = torch.bmm(ascent, gram, out=polar)
        value = value + (polar.flatten(-2).unsqueeze(-2) @ rest.flatten(-2).unsqueeze(-1)).squeeze((-2, -1))
        return value, torch.baddbmm(polar, left_polar, right_polar)

    def _flip_signs(self, polar: Tensor, product: Tensor, right: Tensor, top: Tensor) -> None:
        r"""The sign block, in place: ``Q <- Q G`` and ``M <- G M`` with :math:`G = I - 2 W W^T` the reflection
        on the Ritz vectors ``W`` of :math:`S = \operatorname{sym}(M)` in the span of ``Z`` (its lowest
        eigenvectors, two steps of shifted inverse iteration) whose Ritz values are negative; nothing where none
        is."""
        lowest, floor = cast(Tensor, self.lowest), cast(Tensor, self.floor)
        shift = floor.clamp(max=0) * (1 + _SHIFT_RELATIVE) - _SHIFT_ABSOLUTE * top       # sigma_0, (B, 1, 1)
        # 2 (S - sigma_0 I) (inverse iteration ignores the scale), with span V, where S is zero, moved up to
        # sigma_max(R) - sigma_0
        shifted = torch.baddbmm(product, right, right.mT * (2 * top)).add_(product.mT)
        shifted.diagonal(dim1=-2, dim2=-1).sub_(2 * shift.squeeze(-1))
        # symmetric: factor its column-major view, which LAPACK takes without a transposed copy
        factor, pivots, _ = torch.linalg.lu_factor_ex(shifted.mT)
        solved = lowest
        for _ in range(_SIGN_SOLVES):
            solved = torch.linalg.lu_solve(factor, pivots, solved)
        solved = torch.baddbmm(solved, right, right.mT @ solved, alpha=-1.0)
        # an exactly singular shifted matrix (e.g. a zero matrix) gives no new directions: keep the old ones
        finite = torch.isfinite(solved).all(-2, keepdim=True).all(-1, keepdim=True)
        lowest = torch.linalg.qr(torch.where(finite, solved, lowest))[0]
        self.lowest = lowest
        block = lowest.mT @ (product @ lowest)                                 # C = Z^T M Z, (B, p, p)
        ritz, vectors = torch.linalg.eigh(torch.add(block, block.mT).mul_(0.5))   # of sym(C), ascending
        self.floor = ritz[..., :1, None]
        count = int((ritz < 0).sum(-1).max())                                  # negative Ritz values, at most
        if count == 0:
            return
        mirror = lowest @ (vectors[..., :count] * (ritz[..., :count] < 0).unsqueeze(-2))   # W, (B, n, q)
        polar.baddbmm_(polar @ mirror, mirror.mT, alpha=-2.0)                       # Q G
        product.baddbmm_(mirror, mirror.mT @ product, alpha=-2.0)                   # G M

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # a started tracker saves its state; a fresh one (all None) takes the checkpoint's shapes, and a
        # checkpoint of a fresh tracker resets this one
        if prefix + "right" not in state_dict:
            self.reset()
        for name in self.STATE:
            saved = state_dict.get(prefix + name)
            if saved is not None and (getattr(self, name) is None or getattr(self, name).shape != saved.shape):
                setattr(self, name, torch.empty_like(saved))
            elif saved is None and name in ("lowest", "floor"):
                setattr(self, name, None)  # the sign block is optional in a checkpoint: rebuilt below
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if prefix + "_extra_state" not in state_dict:   # a checkpoint without the schedule: it starts again
            self._calls = 0
            if prefix + "_extra_state" in missing_keys:
                missing_keys.remove(prefix + "_extra_state")
        self._match_sign_block()

    @torch.no_grad()
    def _match_sign_block(self) -> None:
        """Make the loaded sign block state match ``sign_block``: drop it where there is none, and start it
        from a fixed-seed Gaussian block projected onto the complement of ``V`` where it is missing or of
        another width (the lowest singular vectors would need an SVD of the matrix, which a checkpoint lacks)."""
        right = self.right
        width = 0 if right is None or self.remainder is None else self._sign_width(right)
        if right is None or width == 0:
            self.lowest = self.floor = None
            return
        batch, n = right.shape[0], right.shape[-2]
        if self.lowest is not None and tuple(self.lowest.shape) == (batch, n, width):
            if self.floor is None or tuple(self.floor.shape) != (batch, 1, 1):
                self.floor = right.new_zeros(batch, 1, 1)
            return
        generator = torch.Generator().manual_seed(_SIGN_BLOCK_SEED)
        start = torch.randn(batch, n, width, dtype=torch.float64, generator=generator).to(right)
        for _ in range(2):  # twice: orthogonal to V to working precision
            start = start - right @ (right.mT @ start)
        self.lowest = torch.linalg.qr(start)[0].contiguous()
        self.floor = right.new_zeros(batch, 1, 1)
        self._calls = 0  # a new block runs on the next call

    def extra_repr(self) -> str:
        return (f"rank={self.rank}, deflate={self.deflate}, step={self.step}, momentum={self.momentum}, "
                f"sign_block={self.sign_block}")


def _normalized(block: Tensor, tiny: float) -> Tuple[Tensor, Tensor]:
    """``(||b||, b / ||b||)`` per column vector ``b`` of ``block (B, m, 1)`` (zero where ``b = 0``)."""
    norm = torch.linalg.vector_norm(block, dim=-2, keepdim=True)
    return norm, block / norm.clamp_min(tiny)


__all__ = ["PolarTracker", "DEFAULT_DEFLATE", "DEFAULT_SIGN_BLOCK"]
