r"""The stable backend: the exact forward, a backward that stays finite on repeated eigenvalues.

The backward of :math:`A = U \Lambda U^T` (selected pairs :math:`i \in K`, ``|K| = k``)
for gradients :math:`\bar\lambda_i, \bar u_i` is

.. math::
    \bar A = \operatorname{sym}\Big(\sum_{i \in K} \big(\bar\lambda_i u_i
        + \sum_{j \ne i} F_{ji}\, (u_j^T \bar u_i)\, u_j\big) u_i^T\Big),
    \qquad F_{ji} = \frac{1}{\lambda_i - \lambda_j},

where :math:`j` runs over *all* eigenvectors, including those not returned (the correct
partial backward; see e.g. Giles, "An extended collection of matrix derivative results",
2008, and ``torch/_lobpcg.py``). :math:`F` is infinite for repeated eigenvalues and huge
for close ones. Following Wang, Dang, Hu, Fua & Salzmann, `Backpropagation-Friendly
Eigendecomposition <https://arxiv.org/abs/1906.09023>`_ (NeurIPS 2019) and `Robust
Differentiable SVD <https://arxiv.org/abs/2104.03821>`_ (TPAMI 2021), the forward stays
exact and :math:`F` is replaced by a bounded function of the gap
:math:`g = |\lambda_i - \lambda_j|` of the form

.. math::
    \varphi_N(g; s) = \frac{1 - (1 - g/s)^N}{g} = \frac{1}{s}\sum_{m=0}^{N-1} (1 - g/s)^m,
    \qquad \varphi_N(0; s) = N / s,

* ``method="taylor"``: the degree-``N-1`` Taylor series of :math:`1/g` about
  :math:`g = s`, used for gaps below :math:`s = \text{relative\_gap} \cdot \max|\lambda|`,
  and :math:`1/g` itself above (the two meet with equal value and slope at :math:`g = s`).
  The TPAMI paper expands :math:`1/(\lambda_i - \lambda_j)` in :math:`\lambda_j/\lambda_i`
  for a PSD covariance, i.e. about :math:`g = s = \lambda_i`; expanding about a fixed
  relative gap instead is shift-invariant (graph operators are indefinite) and leaves the
  gradient *exact* wherever all gaps exceed :math:`s`.
* ``method="power_iteration"``: the NeurIPS 2019 gradient: the derivative of ``N`` steps of
  power iteration :math:`v \leftarrow Mv/\|Mv\|` started at the exact eigenvector, with
  :math:`M = A - cI` shifted to be positive semi-definite with :math:`u_i` dominant
  (``largest``: :math:`c = \lambda_{\min}`; ``smallest``: :math:`M = \lambda_{\max} I - A`;
  ``magnitude``: :math:`M = A`). Linearising :math:`v' = P_\perp(\delta M\, u_i + M\,\delta v)/\mu_i`
  at the fixed point gives the same :math:`\varphi_N` with :math:`s = \mu_i` (the shifted
  eigenvalue). It converges to the exact gradient as ``N`` grows, slowly when gaps are
  small compared with the spectral range.

Pairs inside the returned block use :math:`\varphi` with the sign of the pair that comes
first in ``which`` order and the opposite sign for the mirrored pair, so :math:`F` stays
antisymmetric there: for a loss that depends only on the returned eigenspace (e.g.
:math:`U U^T`) the terms of an exactly repeated eigenvalue cancel, as they do in the exact
gradient. (For ``power_iteration`` this replaces the deflation order of the paper, whose
gradient is not antisymmetric inside the block.)

**What is exact.** The forward, always. The backward of ``taylor`` on the dense path, for
every pair whose gap is at least :math:`s`. Within a repeated eigenvalue the exact derivative
of a spectral function :math:`U f(\Lambda) U^T` contains the divided difference
:math:`(f(\lambda_i) - f(\lambda_j))/(\lambda_i - \lambda_j) \to f'(\lambda)`, which the
backward cannot recover from :math:`\bar U` (exact ``eigh`` returns 0/0 there); bounded
weights times a vanishing difference drop it. So losses that are constant on each repeated
eigenvalue inside the ``k`` pairs (projectors :math:`U U^T`, eigenvalue sums) get their
exact gradient, other losses a finite approximation; a repeated eigenvalue cut by ``k``
has no gradient at all (its basis is arbitrary) and gets a finite, bounded one.

**Dense path** (``torch.linalg.eigh``, via :class:`~lowrank_gnn.eigen.ExactBackend`): all
:math:`n` pairs are known, the sum over :math:`j` is evaluated exactly with :math:`\varphi`.
**Sparse path** (ARPACK top-``k``): the terms with :math:`j \notin K` form
:math:`r_i(A)\, P_\perp \bar u_i` with :math:`r_i(\lambda_j) = F_{ji}` and :math:`P_\perp` the
projector onto the complement of the computed subspace. They are evaluated by a
Rayleigh-Ritz approximation of :math:`r_i(A) b` in the block Krylov space
:math:`\mathcal K = \operatorname{span}\{B, P_\perp A B, (P_\perp A)^2 B, \dots\}`,
:math:`B = P_\perp \bar U_K` (the Lanczos approach to matrix functions; Golub & Meurant,
"Matrices, Moments and Quadrature with Applications", 2010, and Saad, SIAM J. Numer. Anal.
29(1), 1992): with an orthonormal basis :math:`Q` of :math:`\mathcal K` and
:math:`Q^T A Q = S \Theta S^T`, :math:`r_i(A) b_i \approx Q S\, r_i(\Theta)\, S^T Q^T b_i`.
All ``k`` columns share one basis of dimension up to ``krylov_dim`` (built with dense
matrix products, cost ``O(n krylov_dim^2)``). It is exact once :math:`\mathcal K` contains
:math:`r_i(A) b_i`, in particular once ``krylov_dim`` reaches ``n - k``, and for
``power_iteration`` (:math:`\varphi_N` is a polynomial of degree ``N - 1``) once the space
holds ``N`` block steps, up to the spectral bound it needs, which comes from the Ritz
values :math:`\Theta`. Otherwise it is an approximation whose error falls as
``krylov_dim`` grows (measured in ``benchmarks/stable_backward.py --sparse`` and
``tests/eigen/test_stable.py``). Memory: the basis, ``n * krylov_dim`` numbers, plus one block.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch
from torch import Tensor

from .._validation import check_choice, check_positive_int, first_order_only
from ..linalg.krylov import block_krylov
from ..operators.base import DenseOperator
from .base import SECOND_DERIVATIVE_FIX, EigenBackend, EigenPairs
from .exact import ExactBackend

#: ``power_iteration``: the shift keeps ``mu_i >= 1e-3 max|lambda|`` so that a spectrum that
#: is a single point (an identity block) still gives a finite ``N / mu_i``.
SHIFT_MARGIN = 1e-3


class _GradientRule(NamedTuple):
    which: str
    method: str
    num_terms: int
    relative_gap: float
    krylov_dim: int


def _orientation(values: Tensor, which: str) -> Union[float, Tensor]:
    """``sigma_i``: the sign of ``lambda_i - lambda_j`` for pairs ``j`` after ``i`` in ``which`` order."""
    if which == "largest":
        return 1.0
    if which == "smallest":
        return -1.0
    return torch.where(values < 0, -1.0, 1.0).to(values.dtype)


def _damped_inverse(gap: Tensor, scale: Tensor, num_terms: int) -> Tensor:
    r""":math:`\varphi_N(g; s) = (1 - (1 - g/s)^N) / g` for ``g < s``, ``1 / g`` from ``s`` on; 0 where ``s == 0``.

    For ``g >= s`` the series is replaced by its limit ``1/g`` (``taylor``: by definition;
    ``power_iteration``: only reached for ``which="magnitude"`` pairs of opposite sign, whose
    ratio ``1 - g/s`` is negative and whose series would oscillate).
    """
    positive = scale > 0
    s = torch.where(positive, scale, torch.ones_like(scale))
    # The tie g -> 0 has the limit N / s; flooring g at eps * s reaches it without 0 / 0
    # (relative error N * eps).
    gap = torch.maximum(gap, torch.finfo(gap.dtype).eps * s)
    # 1 - (1 - x)^N without cancellation for small x: -expm1(N log1p(-x)); x >= 1 gives 1.
    phi = -torch.expm1(num_terms * torch.log1p(-(gap / s).clamp(max=1.0))) / gap
    return torch.where(positive, phi, torch.zeros_like(phi))


def _pair_weights(selected: Tensor, others: Tensor, rule: _GradientRule, lower: Tensor, upper: Tensor,
                  scale: Tensor) -> Tensor:
    r"""Bounded :math:`1/(\lambda_i - \lambda_j)` for every ``i`` in ``selected`` and ``j`` in ``others``.

    Treats each ``j`` as coming after ``i`` in ``which`` order (true for the complement).

    Shapes:
        selected ``(*batch, 1, k)``, others ``(*batch, m, 1)``, returns ``(*batch, m, k)``;
        lower, upper, scale (spectral bounds and ``max|lambda|``) broadcast against them.
    """
    sigma = _orientation(selected, rule.which)
    gap = (sigma * (selected - others)).clamp_min(0)
    if rule.method == "taylor":
        return sigma * _damped_inverse(gap, rule.relative_gap * scale, rule.num_terms)
    margin = SHIFT_MARGIN * scale
    if rule.which == "largest":
        mu = selected - lower + margin
    elif rule.which == "smallest":
        mu = upper - selected + margin
    else:
        mu = selected.abs().clamp_min(margin)
    return sigma * _damped_inverse(gap, mu, rule.num_terms)


def _antisymmetric_block(weights: Tensor) -> Tensor:
    """Keep ``F_ji`` for ``j`` after ``i``, mirror it with a minus sign above the diagonal. ``(*, k, k)``."""
    lower = torch.tril(weights, diagonal=-1)
    return lower - lower.mT


class _StableDenseEigh(torch.autograd.Function):
    r"""Attaches the bounded backward to exact dense eigenpairs (all ``n`` pairs known).

    Input ``anchor = A U_K`` (``U_K`` detached): its gradient ``W`` gives
    :math:`\bar A = \operatorname{sym}(W U_K^T)` through autograd, for any symmetric
    operator, without forming ``n x n`` gradients here. ``W = U (\Phi \circ U^T \bar U_K
    + [\operatorname{diag}(\bar\lambda); 0])`` with :math:`\Phi` from the module docstring.
    """

    @staticmethod
    def forward(ctx, anchor: Tensor, values: Tensor, vectors: Tensor, rule: _GradientRule):
        ctx.rule = rule
        ctx.set_materialize_grads(False)  # a loss on eigenvalues only skips the eigenvector terms
        ctx.save_for_backward(values, vectors)
        k = ctx.num_kept = anchor.shape[-1]
        return values[..., :k].clone(), vectors[..., :k].clone()

    @staticmethod
    @first_order_only("the stable eigen backend's backward", SECOND_DERIVATIVE_FIX)
    def backward(ctx, grad_values: Optional[Tensor], grad_vectors: Optional[Tensor]):
        values, vectors = ctx.saved_tensors              # (*, n), (*, n, n) in `which` order
        rule: _GradientRule = ctx.rule
        if grad_values is None and grad_vectors is None:
            return None, None, None, None
        k = ctx.num_kept
        coefficient = vectors.new_zeros(*vectors.shape[:-1], k)   # (*, n, k)
        if grad_vectors is not None:
            lower = values.amin(-1, keepdim=True).unsqueeze(-1)
            upper = values.amax(-1, keepdim=True).unsqueeze(-1)
            scale = values.abs().amax(-1, keepdim=True).unsqueeze(-1)
            weights = _pair_weights(values[..., None, :k], values[..., :, None], rule, lower, upper, scale)
            weights = torch.cat([_antisymmetric_block(weights[..., :k, :]), weights[..., k:, :]], dim=-2)
            coefficient = weights * (vectors.mT @ grad_vectors)
        if grad_values is not None:
            coefficient[..., :k, :] += torch.diag_embed(grad_values)
        return vectors @ coefficient, None, None, None


class _StableSparseEigh(torch.autograd.Function):
    r"""Attaches the bounded partial backward to ``k`` eigenpairs of a (sparse) operator.

    As :class:`_StableDenseEigh`, with the complement terms from a block Krylov space
    (:func:`~lowrank_gnn.linalg.block_krylov`): ``W = U (\Phi_K \circ U^T \bar U + \operatorname{diag}
    (\bar\lambda)) + [r_i(A) P_\perp \bar u_i]_i``.
    """

    @staticmethod
    def forward(ctx, anchor: Tensor, values: Tensor, vectors: Tensor, op, rule: _GradientRule):
        ctx.rule, ctx.op = rule, op
        ctx.set_materialize_grads(False)  # a loss on eigenvalues only skips the Krylov space
        ctx.save_for_backward(values, vectors)
        return values.clone(), vectors.clone()

    @staticmethod
    @first_order_only("the stable eigen backend's backward", SECOND_DERIVATIVE_FIX)
    def backward(ctx, grad_values: Optional[Tensor], grad_vectors: Optional[Tensor]):
        values, vectors = ctx.saved_tensors              # (k,), (n, k)
        rule: _GradientRule = ctx.rule
        n, k = vectors.shape
        coefficient = vectors.new_zeros(k, k)
        result = vectors.new_zeros(n, k)
        if grad_vectors is not None:
            inside = vectors.mT @ grad_vectors                              # (k, k)
            complement = grad_vectors - vectors @ inside                     # P_perp grad, (n, k)
            dim = min(rule.krylov_dim, n - k)
            q, projected, _ = block_krylov(ctx.op.matmul, grad_vectors, dim, deflate=vectors, max_dim=dim,
                                           scale=values.abs().max())
            ritz, ritz_vectors = torch.linalg.eigh(projected)                # (d,), (d, d)
            known = torch.cat([values, ritz])
            lower, upper, scale = known.min(), known.max(), known.abs().max()
            if ritz.numel():
                weights = _pair_weights(values[None, :], ritz[:, None], rule, lower, upper, scale)   # (d, k)
                coords = ritz_vectors.mT @ (q.mT @ complement)                                   # (d, k)
                result = q @ (ritz_vectors @ (weights * coords))
                result = result - vectors @ (vectors.mT @ result)
            weights = _pair_weights(values[None, :], values[:, None], rule, lower, upper, scale)
            coefficient = _antisymmetric_block(weights) * inside
        if grad_values is not None:
            coefficient = coefficient + torch.diag_embed(grad_values)
        return vectors @ coefficient + result, None, None, None, None


class StableBackend(EigenBackend):
    r"""Exact eigenpairs with a backward that is finite through repeated eigenvalues.

    Wang, Dang, Hu, Fua & Salzmann, `Backpropagation-Friendly Eigendecomposition
    <https://arxiv.org/abs/1906.09023>`_ (NeurIPS 2019) and `Robust Differentiable SVD
    <https://arxiv.org/abs/2104.03821>`_ (TPAMI 2021). The forward is that of
    :class:`~lowrank_gnn.eigen.ExactBackend` (dense ``eigh`` or ARPACK, identical output);
    the backward replaces :math:`1/(\lambda_i - \lambda_j)` by the bounded
    :math:`\varphi_N` described in :mod:`lowrank_gnn.eigen.stable`, so gradients are finite
    for repeated eigenvalues (disconnected graphs, symmetric graphs, identity blocks) and,
    with ``method="taylor"``, equal to the exact gradient where every gap
    :math:`|\lambda_i - \lambda_j|` involving a returned pair is at least
    ``relative_gap * max|lambda|``. Both paths give eigenvector gradients: the dense path
    from the full spectrum, the sparse path by a block Krylov (Rayleigh-Ritz) approximation
    in the complement of the ``k`` computed eigenvectors. The backward is first-order only
    (a backward through its gradient, after ``create_graph=True``, raises).

    Args:
        k (int): number of eigenpairs.
        which (str): ``"largest"``, ``"smallest"`` or ``"magnitude"``. (default: ``"largest"``)
        method (str): ``"taylor"`` or ``"power_iteration"``. (default: ``"taylor"``)
        degree (int, optional): ``taylor`` only: the series degree ``N - 1 >= 0``; the
            weight of a gap below the threshold ``s`` is at most ``(degree + 1) / s``, and
            within ``(1 - gap / s)^(degree + 1)`` (relative) of the exact ``1 / gap``.
            (default: ``9``)
        num_iterations (int, optional): ``power_iteration`` only: the number of power
            iterations ``N >= 1`` whose gradient is taken (closed form, so cost does not
            grow with it on the dense path). (default: ``100``)
        relative_gap (float): ``taylor`` only: gaps below ``relative_gap * max|lambda|``
            are regularised, larger ones are exact; in ``(0, 1]``. Well above float32
            eigenvalue noise (~1e-7 relative), small enough that a graph's distinct
            eigenvalues mostly stay exact; smaller values bound the gradient less.
            (default: ``1e-3``)
        krylov_dim (int): sparse path: largest dimension of the block Krylov space for
            the complement terms, shared by the ``k`` pairs (capped at ``n - k``; cost
            ``O(n krylov_dim^2)``; on Cora 512 gives 2e-6 relative error, 256 gives 12%).
            (default: ``512``)
        forward_method (str): ``"auto"``, ``"dense"`` or ``"sparse"``: the exact backend's
            ``method``. (default: ``"auto"``)
        dense_max_nodes (int): the exact backend's ``"auto"`` threshold. (default: ``5000``)
        tol (float): ARPACK's relative accuracy (sparse path). (default: ``0.0``)
        maxiter (int, optional): ARPACK's iteration limit. (default: SciPy's)

    Example:
        >>> import torch
        >>> from lowrank_gnn.eigen import StableBackend
        >>> backend = StableBackend(k=2)
        >>> a = torch.eye(3, requires_grad=True)            # eigenvalue 1, three times
        >>> pairs = backend(a)
        >>> pairs.eigenvectors.sum().backward()           # exact eigh: NaN; here finite
        >>> bool(torch.isfinite(a.grad).all())
        True
    """

    METHODS = ("taylor", "power_iteration")

    def __init__(self, k: int, which: str = "largest", method: str = "taylor", degree: Optional[int] = None,
                 num_iterations: Optional[int] = None, relative_gap: float = 1e-3, krylov_dim: int = 512,
                 forward_method: str = "auto", dense_max_nodes: int = 5000, tol: float = 0.0,
                 maxiter: Optional[int] = None) -> None:
        super().__init__(k, which)
        self.method = check_choice("method", method, self.METHODS)
        if method == "taylor":
            if num_iterations is not None:
                raise ValueError(f"num_iterations applies to method='power_iteration' only (got "
                                 f"num_iterations={num_iterations!r} with method='taylor'); use degree")
            degree = 9 if degree is None else degree
            if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
                raise ValueError(f"degree must be a non-negative integer (got degree={degree!r})")
            self.num_terms = degree + 1
        else:
            if degree is not None:
                raise ValueError(f"degree applies to method='taylor' only (got degree={degree!r} with "
                                 "method='power_iteration'); use num_iterations")
            self.num_terms = check_positive_int("num_iterations", 100 if num_iterations is None else num_iterations)
        if isinstance(relative_gap, bool) or not isinstance(relative_gap, (int, float)) or not 0 < relative_gap <= 1:
            raise ValueError(f"relative_gap must be a number in (0, 1] (got relative_gap={relative_gap!r})")
        self.relative_gap = float(relative_gap)
        self.krylov_dim = check_positive_int("krylov_dim", krylov_dim)
        check_choice("forward_method", forward_method, ExactBackend.METHODS)
        self.exact = ExactBackend(k, which, method=forward_method, dense_max_nodes=dense_max_nodes, tol=tol,
                                  maxiter=maxiter)

    @property
    def rule(self) -> _GradientRule:
        return _GradientRule(self.which, self.method, self.num_terms, self.relative_gap, self.krylov_dim)

    def solve(self, op) -> EigenPairs:
        dense = self.exact.uses_dense_path(op)
        with torch.no_grad():
            if dense:  # all n pairs: the dense backward uses the full spectrum
                values, vectors = ExactBackend(op.shape[-1], self.which, method="dense").solve(op)[:2]
            else:
                self._check_sparse_forward(op)
                values, vectors = self.exact.solve(op)[:2]
        selected = vectors[..., : self.k]
        # The gradient reaches the operator through anchor = A U_K (see _StableDenseEigh). Dense
        # matrices are symmetrised first, as in the exact backend, so the gradient with respect to
        # each entry is symmetric; a sparse operator gets W U_K^T, which acts identically on every
        # symmetric perturbation (e.g. one weight shared by both directions of an edge).
        if dense or isinstance(op, DenseOperator):
            matrix = op.to_dense()
            anchor = ((matrix + matrix.mT) / 2) @ selected
        else:
            anchor = op.matmul(selected)
        if not anchor.requires_grad:
            return EigenPairs(values[..., : self.k], selected)
        if dense:
            return EigenPairs(*_StableDenseEigh.apply(anchor, values, vectors, self.rule))
        return EigenPairs(*_StableSparseEigh.apply(anchor, values, vectors, op, self.rule))

    def _check_sparse_forward(self, op) -> None:
        """The ARPACK forward's conditions, with the fix in this backend's option (``forward_method``)."""
        if len(op.shape) > 2:
            raise ValueError(f"forward_method='sparse' needs an unbatched (n, n) operator (got shape "
                             f"{tuple(op.shape)}); use forward_method='dense' for batches")
        if self.k >= op.shape[-1]:
            raise ValueError(f"the sparse forward (ARPACK) needs k < n (got k={self.k}, n={op.shape[-1]}); use "
                             "forward_method='dense' for all eigenpairs")

    def extra_repr(self) -> str:
        order = f"degree={self.num_terms - 1}, relative_gap={self.relative_gap:g}" if self.method == "taylor" \
            else f"num_iterations={self.num_terms}"
        return f"k={self.k}, which={self.which!r}, method={self.method!r}, {order}"
