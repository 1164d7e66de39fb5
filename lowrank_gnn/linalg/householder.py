r"""Products of Householder reflections in blocked compact WY form (FastH), and the
orthonormal (Stiefel) parametrisation built on them.

A Householder reflection :math:`H(v) = I - 2 v v^\top / \|v\|^2` is orthogonal, and every
:math:`n \times k` matrix with orthonormal columns is the first :math:`k` columns of a
product of :math:`k` of them (Householder QR). Applying :math:`m` reflections one after the
other is :math:`m` sequential rank-one updates; FastH (Mathiasen et al., "What if Neural
Networks had SVDs?", NeurIPS 2020, https://arxiv.org/abs/2009.13977) groups them into
blocks whose products are built in parallel and then applied as a short sequence of
matrix products, forward and backward.

Each block of :math:`b` reflections is kept in the "UT" form of the compact WY
representation (Schreiber & Van Loan, SIAM J. Sci. Stat. Comput. 10(1), 1989; Joffrain,
Low, Quintana-Ortí, van de Geijn & Van Zee, "Accumulating Householder transformations,
revisited", ACM TOMS 32(2), 2006):

.. math::
    H(v_1) \cdots H(v_b) = I - V S^{-1} V^\top, \qquad
    S = \operatorname{striu}(V^\top V) + \tfrac12 \operatorname{diag}(\|v_1\|^2, \dots, \|v_b\|^2),

with :math:`S` upper triangular, so applying a block to :math:`X` costs two matrix products
and one small triangular solve. (FastH writes the same block as :math:`I - 2 W Y^\top`;
:math:`W = V S^{-1}/2`, :math:`Y = V`.)

**Scale.** Each column is divided by its largest magnitude first (:func:`_unit_columns`;
:math:`H(cv) = H(v)`), so columns of any finite size, 1e-30 or 1e30 in float32, give the same
reflection, and NaN or Inf in ``V`` or ``X`` is refused with a clear error.

**Zero vectors.** :math:`H(0)` is undefined; here a zero column of ``V`` (all entries exactly 0)
is the identity (no reflection), implemented by putting 1 on its diagonal of :math:`S` (its row and column
of :math:`S` are otherwise zero, so it drops out exactly). Its gradient is defined as zero:
the reflection's direction is undefined at :math:`v = 0`, and no finite limit exists.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import (broadcast_shape, check_finite, check_floating, check_positive_int, check_same_device,
                           check_same_dtype, first_order_only)

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "householder_product",
    "householder_orthonormal",
    "householder_vectors",
    "HouseholderOrthogonal",
]

#: The blocked WY backward has no graph of its own: a second derivative through it is a clear error.
_first_order = first_order_only("the Householder product's backward (householder_product, householder_orthonormal; "
                                "orthogonalization='householder')",
                                "detach W (or the operator) in the term that is differentiated twice")

#: Reflections per block. The Gram matrices cost ``2 d b m`` flops and the sequential part
#: is ``m / b`` block applications; on a 2-core CPU 64 was the fastest or within 20% of it
#: for d = 64 ... 1024 (``python benchmarks/householder.py --block-sizes 32,64,128,256``).
DEFAULT_BLOCK_SIZE = 64


def _split_blocks(V: Tensor, block_size: int) -> Tensor:
    """``(*, d, m) -> (*, K, d, b)`` with ``K = ceil(m / b)``; the last block is padded with
    zero vectors (identity reflections), so it is exact whether or not ``b`` divides ``m``."""
    m = V.shape[-1]
    num_blocks = -(-m // block_size)
    pad = num_blocks * block_size - m
    if pad:
        V = F.pad(V, (0, pad))
    return V.unflatten(-1, (num_blocks, block_size)).movedim(-2, -3).contiguous()


def _unit_columns(V: Tensor) -> Tensor:
    r"""Each column divided by its largest magnitude (zero columns stay zero).

    :math:`H(c v) = H(v)`, so this changes no reflection, and it keeps :math:`\|v\|^2` in
    ``[1, d]``: without it a float32 column below ~1e-19 has :math:`\|v\|^2 = 0` (taken for the
    identity) and one above ~1e19 overflows. The scale is held constant in autograd; the gradient
    is still exact, because the gradient of a scale-invariant function is orthogonal to ``v``.
    """
    scale = V.detach().abs().amax(-2, keepdim=True)
    return V / torch.where(scale > 0, scale, torch.ones_like(scale))


def _ut_factors(blocks: Tensor) -> Tensor:
    """The triangular factors ``S`` of all blocks at once, ``(*, K, b, b)``."""
    S = (blocks.mT @ blocks).triu_()
    half_norms = S.diagonal(dim1=-2, dim2=-1)
    half_norms.div_(2)
    # A zero vector gets S_ii = 1: its row and column of S are zero, so it acts as I.
    half_norms.masked_fill_(half_norms == 0, 1.0)
    return S


def _block_vector_grad(V: Tensor, X: Tensor, W: Tensor, G: Tensor, Q: Tensor) -> Tensor:
    """Gradient of one WY block ``Y = X - V W`` (``W = S^{-1} V^T X``) with respect to ``V``.

    ``G`` is the gradient at the block's output and ``Q = S^{-T} V^T G``; the symmetric
    part of ``Q W^T`` (strict upper part mirrored, diagonal once) is the term contributed by
    ``S``, whose upper triangle is built from ``V^T V``.
    """
    R = Q @ W.mT
    strict = R.triu(1)
    sym = strict + strict.mT + torch.diag_embed(R.diagonal(dim1=-2, dim2=-1))
    return V @ sym - G @ W.mT - X @ Q.mT


class _HouseholderProduct(torch.autograd.Function):
    r"""``Y = H(v_1) \cdots H(v_m) X`` applied block by block, with a blocked backward.

    Derivation of the backward for one block :math:`Y = X - V W`, :math:`W = S^{-1} V^\top X`,
    with upstream gradient :math:`G = \partial L / \partial Y`. Differentiating,
    :math:`dY = dX - dV\,W - V S^{-1}(dV^\top X - dS\,W)`. With
    :math:`Q = S^{-\top} V^\top G` (a lower-triangular solve) and :math:`R = Q W^\top`:

    .. math::
        \partial L/\partial X = G - V Q = \text{block}^\top G, \qquad
        \partial L/\partial V = -G W^\top - X Q^\top
            + V\,(\operatorname{striu}(R) + \operatorname{striu}(R)^\top + \operatorname{diag}(R)),

    the last term from :math:`dS = \operatorname{striu}(dV^\top V + V^\top dV)
    + \operatorname{diag}(v_i^\top dv_i)` (it vanishes for a zero vector, whose :math:`S_{ii}`
    is the constant 1). Blocks are visited in the order opposite to the forward pass and the
    gradient is carried from block to block as :math:`G \leftarrow \text{block}^\top G`, so
    the backward is again ``K`` short sequences of matrix products, as in FastH's backward pass.
    The block inputs :math:`X` and :math:`W` are kept from the forward pass (``m c + K d c``
    extra numbers) instead of being recomputed through the orthogonality of the blocks.
    """

    @staticmethod
    def forward(ctx, V: Tensor, X: Tensor, block_size: int) -> Tensor:
        blocks = _split_blocks(V, block_size)
        factors = _ut_factors(blocks)
        num_blocks = blocks.shape[-3]
        inputs: list = [None] * num_blocks
        coefficients: list = [None] * num_blocks
        Y = X
        for j in reversed(range(num_blocks)):  # H(v_m) acts first
            Vj, Sj = blocks[..., j, :, :], factors[..., j, :, :]
            Wj = torch.linalg.solve_triangular(Sj, Vj.mT @ Y, upper=True)
            inputs[j], coefficients[j] = Y, Wj
            Y = Y - Vj @ Wj
        ctx.save_for_backward(blocks, factors, *inputs, *coefficients)
        ctx.shapes = (V.shape, X.shape)
        return Y

    @staticmethod
    @_first_order
    def backward(ctx, grad: Tensor):
        blocks, factors, *saved = ctx.saved_tensors
        num_blocks = blocks.shape[-3]
        inputs, coefficients = saved[:num_blocks], saved[num_blocks:]
        v_shape, x_shape = ctx.shapes
        need_v = ctx.needs_input_grad[0]
        grad_blocks = []
        G = grad
        for j in range(num_blocks):
            Vj, Sj, Xj, Wj = blocks[..., j, :, :], factors[..., j, :, :], inputs[j], coefficients[j]
            Q = torch.linalg.solve_triangular(Sj.mT, Vj.mT @ G, upper=False)
            if need_v:
                grad_blocks.append(_block_vector_grad(Vj, Xj, Wj, G, Q))
            G = G - Vj @ Q
        grad_v = None
        if need_v:
            grad_v = torch.cat(grad_blocks, dim=-1)[..., : v_shape[-1]].sum_to_size(v_shape)
        grad_x = G.sum_to_size(x_shape) if ctx.needs_input_grad[1] else None
        return grad_v, grad_x, None


class _HouseholderOrthonormal(torch.autograd.Function):
    r"""``H(u_1) \cdots H(u_k) [I_k; 0]`` for lower-trapezoidal ``u`` (``u_i`` zero above row
    ``i``), as LAPACK's ``orgqr`` exploits it: block ``j`` (first vector ``r = j b``) is zero in
    rows ``< r`` and, when it is applied, the columns ``< r`` are still ``e_0 .. e_{r-1}`` and
    the rows ``< r`` of the other columns still zero, so it only changes the trailing
    ``(n - r) x (k - r)`` submatrix. Forward and backward are ``_HouseholderProduct``'s
    restricted to those submatrices: in the backward, the gradient of block ``j``'s rows
    ``>= r`` and the gradient passed on to blocks ``> j`` depend only on the trailing part of
    the incoming gradient (the other rows of the block's vectors are structurally zero and
    get no gradient). About ``4/3 n^3`` instead of ``4 n^3`` flops forward for a square matrix.
    """

    @staticmethod
    def forward(ctx, V: Tensor, block_size: int) -> Tensor:
        n, k = V.shape[-2:]
        blocks = _split_blocks(V, block_size)
        factors = _ut_factors(blocks)
        num_blocks = blocks.shape[-3]
        inputs: list = [None] * num_blocks
        coefficients: list = [None] * num_blocks
        last = (num_blocks - 1) * block_size
        T = torch.eye(n - last, k - last, dtype=V.dtype, device=V.device).expand(*V.shape[:-2], -1, -1)
        for j in reversed(range(num_blocks)):
            start = j * block_size
            Vt = blocks[..., j, start:, :]
            Wt = torch.linalg.solve_triangular(factors[..., j, :, :], Vt.mT @ T, upper=True)
            inputs[j], coefficients[j] = T, Wt
            T = T - Vt @ Wt
            if j > 0:  # the next block also sees b more leading rows and columns, identity there
                T = F.pad(T, (block_size, 0, block_size, 0))
                T[..., :block_size, :block_size] = torch.eye(block_size, dtype=V.dtype, device=V.device)
        ctx.save_for_backward(blocks, factors, *inputs, *coefficients)
        ctx.k = k
        return T

    @staticmethod
    @_first_order
    def backward(ctx, grad: Tensor):
        blocks, factors, *saved = ctx.saved_tensors
        num_blocks = blocks.shape[-3]
        inputs, coefficients = saved[:num_blocks], saved[num_blocks:]
        block_size = blocks.shape[-1]
        grad_blocks = torch.zeros_like(blocks)
        G = grad
        for j in range(num_blocks):
            start = j * block_size
            Vt, Sj, Xt, Wt = blocks[..., j, start:, :], factors[..., j, :, :], inputs[j], coefficients[j]
            Q = torch.linalg.solve_triangular(Sj.mT, Vt.mT @ G, upper=False)
            grad_blocks[..., j, start:, :] = _block_vector_grad(Vt, Xt, Wt, G, Q)
            if j + 1 < num_blocks:  # block j + 1 needs only the trailing part of block_j^T G
                G = G[..., block_size:, block_size:] - Vt[..., block_size:, :] @ Q[..., block_size:]
        grad_v = grad_blocks.movedim(-3, -2).flatten(-2)[..., : ctx.k]
        return grad_v, None


def householder_product(V: Tensor, X: Tensor, block_size: Optional[int] = None) -> Tensor:
    r"""Apply the product of the Householder reflections in the columns of ``V`` to ``X``.

    FastH (Mathiasen et al., NeurIPS 2020): computes

    .. math::
        Y = H(v_1) H(v_2) \cdots H(v_m)\, X, \qquad H(v) = I - 2\,\frac{v v^\top}{\|v\|^2},

    grouping the reflections into blocks of ``block_size`` whose compact WY factors are built
    in parallel, then applying the ``ceil(m / block_size)`` blocks one after the other as
    matrix products. The backward pass has the same blocked structure (see
    ``_HouseholderProduct``); it supports first derivatives (no double backward). Pass
    ``X = torch.eye(d)`` to get the orthogonal matrix itself.

    A zero column of ``V`` is the identity (no reflection) and receives a zero gradient.
    The scale of each column does not matter. :func:`torch.linalg.householder_product`
    (LAPACK's ``orgqr``) instead takes ``tau`` per reflection and reads only the strictly
    lower part of its ``A (d, m)``, with an implicit unit diagonal; with
    ``V = A.tril(-1) + torch.eye(d, m)`` and ``tau = 2 / (V * V).sum(0)`` it returns
    ``householder_product(V, torch.eye(d, m))``. Here ``V`` is used as given, with no
    implicit structure (see :func:`householder_orthonormal` for the LAPACK layout).

    Args:
        V (Tensor): the Householder vectors, one per column, applied right to left.
        X (Tensor): the matrix to transform.
        block_size (int, optional): reflections per block, ``>= 1``; need not divide ``m``
            (the last block is smaller), values above ``m`` mean one block.
            (default: :data:`DEFAULT_BLOCK_SIZE`)

    Shapes:
        - **V**: ``(*batch, d, m)`` with ``1 <= m <= d``
        - **X**: ``(*batch, d, c)``; the batch dimensions of ``V`` and ``X`` broadcast
        - **output**: ``(*batch, d, c)``

    Example:
        >>> import torch
        >>> from lowrank_gnn.linalg import householder_product
        >>> V = torch.randn(6, 6, dtype=torch.float64)
        >>> P = householder_product(V, torch.eye(6, dtype=torch.float64), block_size=4)
        >>> torch.allclose(P.T @ P, torch.eye(6, dtype=torch.float64))
        True
    """
    _check_product_args(V, X)
    block_size = DEFAULT_BLOCK_SIZE if block_size is None else check_positive_int("block_size", block_size)
    return _HouseholderProduct.apply(_unit_columns(V), X, min(block_size, V.shape[-1]))


def _check_product_args(V: Tensor, X: Tensor) -> None:
    for name, tensor in (("V", V), ("X", X)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor (got {type(tensor).__name__})")
        check_floating(name, tensor)
        if tensor.dim() < 2:
            raise ValueError(f"{name} must have shape (*batch, d, {'m' if name == 'V' else 'c'}) "
                             f"(got {name}.shape={tuple(tensor.shape)})")
    check_same_dtype("X", X, "V", V)
    check_same_device("X", X, "V", V)
    check_finite("V", V.detach())
    check_finite("X", X.detach())
    d, m = V.shape[-2:]
    if not 1 <= m <= d:
        raise ValueError(f"V must hold 1 <= m <= d Householder vectors of length d as columns "
                         f"(got V.shape={tuple(V.shape)}, so d={d}, m={m})")
    if X.shape[-2] != d:
        raise ValueError(f"X must have d={d} rows to match V (got X.shape={tuple(X.shape)}, "
                         f"V.shape={tuple(V.shape)})")
    if broadcast_shape(V.shape[:-2], X.shape[:-2]) is None:
        raise ValueError(f"the batch dimensions of V and X must broadcast (got V.shape={tuple(V.shape)}, "
                         f"X.shape={tuple(X.shape)})")


def householder_orthonormal(V: Tensor, signs: Optional[Tensor] = None,
                            block_size: Optional[int] = None) -> Tensor:
    r"""An ``n x k`` matrix with orthonormal columns from ``k`` Householder vectors.

    The Stiefel parametrisation of LAPACK's Householder QR (``geqrf`` / ``orgqr``) applied
    with FastH: the strictly lower part of ``V`` holds the vectors, the diagonal is an
    implicit 1 (so no reflection is ever degenerate),

    .. math::
        U = H(u_1) \cdots H(u_k) \begin{bmatrix} I_k \\ 0 \end{bmatrix} \operatorname{diag}(s),
        \qquad u_i = e_i + \operatorname{tril}(V, -1)_{:, i},

    and ``signs`` :math:`s \in \{\pm 1\}^k`, kept fixed (e.g. as a buffer), make every such
    matrix reachable (for ``k = n`` they fix the sign of the determinant, i.e. the connected
    component of the orthogonal group); :func:`householder_vectors` is the inverse map. Every matrix with
    orthonormal columns, and the Q factor of every full-rank matrix, has this form. The
    diagonal and upper part of ``V`` are ignored (their gradient is zero).

    Args:
        V (Tensor): unconstrained parameters; only the strictly lower part is read.
        signs (Tensor, optional): column signs. (default: all ``+1``)
        block_size (int, optional): see :func:`householder_product`.

    Shapes:
        - **V**: ``(*batch, n, k)`` with ``1 <= k <= n``
        - **signs**: ``(*batch, k)``
        - **output**: ``(*batch, n, k)``, orthonormal columns

    Example:
        >>> import torch
        >>> from lowrank_gnn.linalg import householder_orthonormal
        >>> U = householder_orthonormal(torch.randn(5, 3))
        >>> torch.allclose(U.T @ U, torch.eye(3), atol=1e-6)
        True
    """
    if not isinstance(V, Tensor):
        raise TypeError(f"V must be a torch.Tensor (got {type(V).__name__})")
    check_floating("V", V)
    if V.dim() < 2 or not 1 <= V.shape[-1] <= V.shape[-2]:
        raise ValueError(f"V must have shape (*batch, n, k) with 1 <= k <= n "
                         f"(got V.shape={tuple(V.shape)}); transpose a wide matrix first")
    check_finite("V", V.detach())
    n, k = V.shape[-2:]
    block_size = DEFAULT_BLOCK_SIZE if block_size is None else check_positive_int("block_size", block_size)
    U = _HouseholderOrthonormal.apply(_unit_columns(V.tril(-1) + torch.eye(n, k, dtype=V.dtype, device=V.device)),
                                      min(block_size, k))
    if signs is not None:
        if signs.shape[-1:] != (k,):
            raise ValueError(f"signs must have shape (*batch, k) with k={k} (got signs.shape={tuple(signs.shape)})")
        U = U * signs.unsqueeze(-2)
    return U


@torch.no_grad()
def householder_vectors(Q: Tensor) -> Tuple[Tensor, Tensor]:
    r"""The inverse of :func:`householder_orthonormal`: Householder QR of ``Q``.

    Returns ``(V, signs)`` with ``householder_orthonormal(V, signs)`` equal to ``Q`` when
    ``Q`` has orthonormal columns, and to the Q factor of ``Q = QR`` with a positive
    diagonal of ``R`` otherwise (the closest point in a QR sense; full column rank needed).
    Computed by LAPACK's ``geqrf``: its reflections are :math:`I - \tau u u^\top` with
    :math:`\tau = 2/\|u\|^2`, or the identity (``tau = 0``) when a column needs no
    reflection; the implicit-unit-diagonal vector is then a sign flip, which ``signs``
    undoes. Not differentiable.

    Shapes:
        - **Q**: ``(*batch, n, k)`` with ``1 <= k <= n``
        - **output**: ``V`` ``(*batch, n, k)`` strictly lower trapezoidal, ``signs`` ``(*batch, k)``
    """
    if not isinstance(Q, Tensor):
        raise TypeError(f"Q must be a torch.Tensor (got {type(Q).__name__})")
    check_floating("Q", Q)
    if Q.dim() < 2 or not 1 <= Q.shape[-1] <= Q.shape[-2]:
        raise ValueError(f"Q must have shape (*batch, n, k) with 1 <= k <= n (got Q.shape={tuple(Q.shape)})")
    check_finite("Q", Q)
    A, tau = torch.geqrf(Q)
    diag = A.diagonal(dim1=-2, dim2=-1)
    signs = torch.where(diag < 0, -torch.ones_like(diag), torch.ones_like(diag))
    signs = torch.where(tau == 0, -signs, signs)
    return A.tril(-1), signs


class HouseholderOrthogonal(nn.Module):
    r"""A ``torch.nn.utils.parametrize`` parametrisation onto matrices with orthonormal
    columns (or rows, for a wide matrix), by :func:`householder_orthonormal`.

    ``forward`` maps the unconstrained tensor to the orthonormal one; ``right_inverse``
    (called by :func:`~torch.nn.utils.parametrize.register_parametrization` and on assignment
    ``module.weight = Q``) computes the Householder vectors of ``Q``'s orthonormal factor and
    stores the column signs in the buffer ``signs``. A wide ``(n, k)`` matrix, ``n < k``, is
    handled through its transpose, so its rows are orthonormal. Same role as
    :func:`torch.nn.utils.parametrizations.orthogonal` with ``orthogonal_map="householder"``,
    applied with FastH blocks.

    Args:
        block_size (int, optional): see :func:`householder_product`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.nn.utils import parametrize
        >>> from lowrank_gnn.linalg import HouseholderOrthogonal
        >>> layer = nn.Linear(4, 6)
        >>> _ = parametrize.register_parametrization(layer, "weight", HouseholderOrthogonal())
        >>> torch.allclose(layer.weight.T @ layer.weight, torch.eye(4), atol=1e-5)
        True
    """

    def __init__(self, block_size: Optional[int] = None) -> None:
        super().__init__()
        self.block_size = None if block_size is None else check_positive_int("block_size", block_size)
        self.register_buffer("signs", None)

    def forward(self, V: Tensor) -> Tensor:
        wide = V.dim() >= 2 and V.shape[-2] < V.shape[-1]
        U = householder_orthonormal(V.mT if wide else V, self.signs, self.block_size)
        return U.mT if wide else U

    @torch.no_grad()
    def right_inverse(self, Q: Tensor) -> Tensor:
        wide = Q.dim() >= 2 and Q.shape[-2] < Q.shape[-1]
        V, self.signs = householder_vectors(Q.mT if wide else Q)
        return V.mT if wide else V

    def extra_repr(self) -> str:
        return "" if self.block_size is None else f"block_size={self.block_size}"
