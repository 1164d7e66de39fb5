r"""Amortized SVD of rectangular matrices, and a nuclear-norm regulariser built on it.

Li, Shi, Zhao & Lin, "Amortized Eigendecomposition for Neural Networks", NeurIPS 2024
(`paper <https://openreview.net/forum?id=OYOkkqRLvj>`_), applied to singular vectors: two
persistent bases :math:`W_U, W_V`, orthonormalised every step, and an SVD loss that makes
them converge to singular vectors while the model trains.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from .._validation import check_choice, check_k, check_positive_int
from ..eigen.amortized import AmortizedBasis, brockett_weights
from ..eigen.base import canonical_signs
from ..linalg.norms import frobenius_norm
from .polar_tracker import DEFAULT_DEFLATE, DEFAULT_SIGN_BLOCK, PolarTracker, check_matrix


class SingularTriplets(NamedTuple):
    """The result of :class:`AmortizedSVD`.

    Attributes:
        left (Tensor): ``(*batch, m, k)`` left singular vectors (canonical signs).
        singular_values (Tensor): ``(*batch, k)``, descending.
        right (Tensor): ``(*batch, n, k)`` right singular vectors (signs follow ``left``).
        aux_loss (Tensor): the SVD loss to add to the training loss.
    """

    left: Tensor
    singular_values: Tensor
    right: Tensor
    aux_loss: Tensor


def _scale(matrix: Tensor) -> Tensor:
    """``||X||_F`` per batch entry, detached: makes the SVD loss dimensionless. Shape ``(*batch, 1)``."""
    return frobenius_norm(matrix).unsqueeze(-1).clamp_min(torch.finfo(matrix.dtype).tiny)


class AmortizedSVD(nn.Module):
    r"""Amortized singular value decomposition: ``k`` singular triplets as learned bases.

    Each forward orthonormalises two persistent bases, :math:`U = \operatorname{QR}(W_U)`
    ``(m, k)`` and :math:`V = \operatorname{QR}(W_V)` ``(n, k)``, returns
    :math:`\sigma_i = u_i^T X v_i` and the columns, and the SVD loss

    * ``"brockett"``: :math:`g = -\sum_i \nu_i\, u_i^T X v_i / \|X\|_F` with
      :math:`\nu_1 > \dots > \nu_k > 0`; its maximisers over orthonormal :math:`U, V` are
      the top-``k`` singular pairs, in order, with :math:`\sigma_i \ge 0` (von Neumann's
      trace inequality with weights);
    * ``"trace"``: :math:`g = -\operatorname{tr}(U^T X V) / \|X\|_F`: the top-``k`` singular
      *subspaces* only (the pairs are then not individually identified; enough for the
      nuclear norm, where only :math:`U V^T` matters).

    As in :class:`~lowrank_gnn.eigen.AmortizedBackend`, :math:`X` is a constant inside the
    loss (it trains the bases only), while the returned triplets carry gradients to
    :math:`X` and to both bases. The bases are sized on the first forward; ``k=None``
    means ``min(m, n)``.

    Args:
        k (int, optional): number of triplets. (default: ``None``, all ``min(m, n)``)
        loss (str): ``"brockett"`` or ``"trace"``. (default: ``"brockett"``)
        eta (float): weight of the SVD loss, > 0. (default: ``1.0``)
        orthogonalization (str): ``W -> U`` map (see
            :data:`~lowrank_gnn.eigen.ORTHOGONALIZATIONS`). (default: ``"qr"``)
        seed (int): seed of the random initialisation. (default: ``0``)

    Shapes:
        matrix ``(*batch, m, n)``; see :class:`SingularTriplets` for the output.

    Example:
        >>> import torch
        >>> from lowrank_gnn.nn import AmortizedSVD
        >>> svd = AmortizedSVD(k=4)
        >>> triplets = svd(torch.randn(20, 10))   # add triplets.aux_loss to the training loss
        >>> triplets.singular_values.shape
        torch.Size([4])
    """

    LOSSES = ("brockett", "trace")

    def __init__(self, k: Optional[int] = None, loss: str = "brockett", eta: float = 1.0,
                 orthogonalization: str = "qr", seed: int = 0) -> None:
        super().__init__()
        self.k = None if k is None else check_positive_int("k", k)
        self.loss = check_choice("loss", loss, self.LOSSES)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 0:
            raise ValueError(f"eta must be a positive number (got eta={eta!r})")
        self.eta = float(eta)
        self.left_basis = AmortizedBasis(orthogonalization, seed)
        self.right_basis = AmortizedBasis(orthogonalization, seed + 1)

    def _rank(self, matrix: Tensor) -> int:
        m, n = matrix.shape[-2:]
        if self.k is None:
            return min(m, n)
        return check_k(self.k, min(m, n), what="min(m, n)")

    def bases(self, matrix: Tensor) -> Tuple[Tensor, Tensor]:
        """``(U, V)`` orthonormalised from the bases, sized for ``matrix`` on first use.

        Shapes:
            ``(*batch, m, k)`` and ``(*batch, n, k)``.
        """
        k = self._rank(matrix)
        *batch, m, n = matrix.shape
        for basis, rows in ((self.left_basis, m), (self.right_basis, n)):
            shape = (*batch, rows, k)
            if not basis.initialized:
                basis.reset(shape, matrix.dtype, matrix.device)
            basis.check_matches(shape, matrix.dtype, matrix.device, f"a matrix of shape {tuple(matrix.shape)}")
        return self.left_basis.orthonormal(), self.right_basis.orthonormal()

    def svd_loss(self, matrix: Tensor, left: Tensor, right: Tensor) -> Tensor:
        """``eta * g`` with ``matrix`` held constant: its gradient reaches the bases only."""
        values = (left * (matrix.detach() @ right)).sum(-2) / _scale(matrix)
        if self.loss == "brockett":
            values = brockett_weights(values.shape[-1], values.dtype, values.device) * values
        return -self.eta * values.sum()

    def forward(self, matrix: Tensor) -> SingularTriplets:
        matrix = check_matrix(matrix)
        left, right = self.bases(matrix)
        aux_loss = self.svd_loss(matrix, left, right)
        values = (left * (matrix @ right)).sum(-2)
        order = torch.argsort(values.detach(), dim=-1, descending=True, stable=True)
        values = values.gather(-1, order)
        left = left.gather(-1, order.unsqueeze(-2).expand_as(left))
        right = right.gather(-1, order.unsqueeze(-2).expand_as(right))
        signed = canonical_signs(left)
        flips = (signed.detach() * left.detach()).sum(-2, keepdim=True).sign()  # +-1 per column
        return SingularTriplets(signed, values, right * flips, aux_loss)

    def extra_repr(self) -> str:
        return f"k={self.k}, loss={self.loss!r}, eta={self.eta}"


class NuclearNormRegularizer(nn.Module):
    r"""Nuclear-norm penalty :math:`\gamma \|X\|_*` without an SVD per step (amortized).

    Li et al. (NeurIPS 2024) replace the SVD inside nuclear-norm regularisation by two
    learned orthonormal bases (:class:`AmortizedSVD`, ``loss="trace"``). The forward returns

    .. math::
        \gamma \operatorname{tr}(U^T X V) \quad \text{with } U, V \text{ held constant,}

    whose gradient with respect to :math:`X` is :math:`\gamma\, U V^T`; and it sets
    :attr:`aux_loss` :math:`= -\eta \operatorname{tr}(U^T X V) / \|X\|_F` (with :math:`X`
    held constant) which trains the bases towards :math:`\max_{U, V} \operatorname{tr}(U^T X V)
    = \|X\|_*` (von Neumann). At that optimum the value *is* :math:`\|X\|_*` and the
    gradient :math:`U V^T` is exactly the subgradient of the nuclear norm (for full-rank
    :math:`X`, the gradient; for rank-deficient :math:`X`, one valid subgradient).
    Holding the bases constant in the penalty matters: the penalty *decreases*
    :math:`\operatorname{tr}(U^T X V)`, and letting it move :math:`U, V` would push them
    away from the singular vectors.

    Add both to the loss: ``loss = task + reg(W) + reg.aux_loss`` (or
    :func:`~lowrank_gnn.nn.total_aux_loss`). With ``rank=k`` smaller than ``min(m, n)`` it
    is the Ky Fan ``k``-norm (the sum of the ``k`` largest singular values).

    **Methods.** ``"qr"`` is the paper's method above: two learned bases, trained by the
    optimiser through :attr:`aux_loss`, each QR-orthonormalised every step. ``"polar"`` keeps
    no parameters: a :class:`PolarTracker` updates its estimate of the polar factor inside
    the forward (subspace iteration on the leading ``deflate`` triplets, a sign block of
    ``sign_block`` directions by shifted inverse iteration on every second call, one Riemannian ascent step with a
    Newton-Schulz retraction on the rest; one SVD at the first call), the penalty is
    :math:`\gamma\,\hat\nu` with gradient :math:`\gamma \hat P`, and :attr:`aux_loss` is
    ``None``. Measured against the exact SVD (``benchmarks/amortized_vs_eigh.py``, one CPU
    thread, square weights of 128-512) it tracks the norm within 1% and is 1.1-2.6x as fast as
    the SVD step; with ``sign_block=0`` it is 1.5-3.0x as fast but the estimate is 0.7-2.8% low
    (see the SVD and PCA guide), so it is not the default. With ``rank=k`` it is subspace
    iteration alone (products with ``k`` columns only).

    Args:
        strength (float): :math:`\gamma \ge 0`. (default: ``1.0``)
        eta (float): weight of the basis loss, > 0. (default: ``1.0``)
        rank (int, optional): number of singular values summed. (default: ``None``, all)
        orthogonalization (str): ``W -> U`` map of ``method="qr"``. (default: ``"qr"``)
        seed (int): seed of the random initialisation of ``method="qr"``. (default: ``0``)
        method (str): ``"qr"`` (learned bases, the paper's) or ``"polar"`` (a
            :class:`PolarTracker`). (default: ``"qr"``)
        deflate (int): leading block of ``method="polar"`` (see :class:`PolarTracker`).
            (default: ``16``)
        sign_block (int): sign block of ``method="polar"`` (see :class:`PolarTracker`), ``0`` for
            none. (default: ``32``)

    Shapes:
        matrix ``(*batch, m, n)`` (a batch sums the penalties); returns a scalar.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from lowrank_gnn.nn import NuclearNormRegularizer
        >>> model, x, y = torch.nn.Linear(8, 6), torch.randn(32, 8), torch.randn(32, 6)
        >>> reg = NuclearNormRegularizer(strength=1e-3)
        >>> loss = F.mse_loss(model(x), y) + reg(model.weight) + reg.aux_loss
        >>> loss.backward()
    """

    METHODS = ("qr", "polar")

    def __init__(self, strength: float = 1.0, eta: float = 1.0, rank: Optional[int] = None,
                 orthogonalization: str = "qr", seed: int = 0, method: str = "qr",
                 deflate: int = DEFAULT_DEFLATE, sign_block: int = DEFAULT_SIGN_BLOCK) -> None:
        super().__init__()
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength >= 0:
            raise ValueError(f"strength must be a number >= 0 (got strength={strength!r})")
        self.strength = float(strength)
        self.method = check_choice("method", method, self.METHODS)
        self.rank = None if rank is None else check_positive_int("rank", rank)
        self.svd: Optional[AmortizedSVD] = None
        self.tracker: Optional[PolarTracker] = None
        if self.method == "polar":
            self.tracker = PolarTracker(rank, deflate, sign_block=sign_block)
        else:
            self.svd = AmortizedSVD(rank, loss="trace", eta=eta, orthogonalization=orthogonalization, seed=seed)
        self.aux_loss: Optional[Tensor] = None

    def forward(self, matrix: Tensor) -> Tensor:
        if self.tracker is not None:
            value, direction = self.tracker(matrix)    # checks matrix
            return self.strength * _TrackedValue.apply(matrix, value.sum(), direction)
        assert self.svd is not None  # method="qr"
        matrix = check_matrix(matrix)
        if self.rank is not None:
            check_k(self.rank, min(matrix.shape[-2:]), what="min(m, n)", name="rank")
        left, right = self.svd.bases(matrix)
        self.aux_loss = self.svd.svd_loss(matrix, left, right)
        direction = (left @ right.mT).detach()  # U V^T: the (sub)gradient of ||X||_*
        return self.strength * (matrix * direction).sum()

    def extra_repr(self) -> str:
        if self.svd is None:
            return f"strength={self.strength}, rank={self.rank}, method={self.method!r}"
        return f"strength={self.strength}, eta={self.svd.eta}, rank={self.rank}, method={self.method!r}"


class _TrackedValue(torch.autograd.Function):
    """``value`` (a constant estimate of ``||X||_*``) with the gradient ``direction`` to ``X``."""

    @staticmethod
    def forward(ctx, matrix: Tensor, value: Tensor, direction: Tensor) -> Tensor:
        ctx.save_for_backward(direction)
        return value.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        (direction,) = ctx.saved_tensors
        return grad * direction, None, None


__all__ = ["AmortizedSVD", "SingularTriplets", "NuclearNormRegularizer"]
