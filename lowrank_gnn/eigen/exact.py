"""The exact backend: dense LAPACK ``eigh``, or ARPACK top-``k`` for large sparse operators."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .._validation import check_choice, check_positive_int, first_order_only
from ..linalg import eigh_extremal
from .base import (SECOND_DERIVATIVE_FIX, EigenBackend, EigenPairs, canonical_signs, order_indices,
                   select_eigenpairs, sign_factors)
from .diagnostics import operator_frobenius_norm

#: ``which`` -> ARPACK's ``which`` for ``scipy.sparse.linalg.eigsh``.
ARPACK_WHICH = {"largest": "LA", "smallest": "SA", "magnitude": "LM"}

#: Seed of the fixed ARPACK start vectors: the same operator gives the same result every run, except
#: where ARPACK restarts from a vector of its own (a Krylov space exhausted at every step, as on an
#: operator that is zero to rounding), which it draws from a seed it keeps across calls.
ARPACK_START_SEED = 0

#: An eigenvalue found outside the span of ARPACK's ``k`` pairs counts as missed (see
#: :meth:`ExactBackend._solve_sparse`) when it beats the ``k``-th by more than this many units of
#: ``||A||_F``, plus ``tol`` times the ``k``-th (ARPACK's relative accuracy when ``tol > 0``):
#: closer ones are ties to the solver's accuracy (a repeated eigenvalue split by ``k``), which
#: either pair answers.
MISSED_EIGENVALUE_RTOL = 1000 * float(np.finfo(np.float64).eps)

#: Lanczos vectors of the search for one missed eigenvalue: on Cora (``k = 64``, the deflated
#: normalized adjacency) 40 took 0.13 s against 0.28 s with ARPACK's default of 20 for one pair.
MISSED_EIGENVALUE_NCV = 40

#: ARPACK solves ``A + ZERO_SHIFT ||A||_F I`` for ``which="largest"`` and ``"smallest"`` (see
#: :func:`_arpack_pairs`): an exact zero eigenvalue could be passed over.
ZERO_SHIFT = float(np.sqrt(np.finfo(np.float64).eps))


class _NoEigenvectorGradient(torch.autograd.Function):
    """Passes eigenvectors through; refuses to backpropagate into them.

    The sparse path differentiates eigenvalues only (``d lambda = u^T dA u``). Without this
    guard a loss that uses the eigenvectors would get a silent zero gradient with respect
    to the operator; with it, the backward pass raises and says what to use instead.
    """

    @staticmethod
    def forward(ctx, vectors: Tensor, anchor: Tensor) -> Tensor:
        ctx.set_materialize_grads(False)
        return vectors.clone()

    @staticmethod
    def backward(ctx, grad_vectors: Optional[Tensor]):
        if grad_vectors is not None and bool(grad_vectors.ne(0).any()):
            raise RuntimeError(
                "the exact backend's sparse (ARPACK) path differentiates eigenvalues only, and this loss "
                "needs gradients through the eigenvectors. Use method='dense' (graphs that fit in memory), "
                "backend='stable' or backend='amortized', or detach the operator (e.g. cached=True)")
        return None, None


class _PartialEigh(torch.autograd.Function):
    r"""Dense ``eigh`` that keeps ``k`` pairs, with the backward of the kept pairs only.

    ``torch.linalg.eigh``'s backward forms :math:`1/(\lambda_i - \lambda_j)` for *every* pair,
    and the zero gradient of a discarded pair times the infinite weight of a tie between two
    discarded eigenvalues is NaN. Deflated graph operators discard hundreds of exact zeros, so
    that made every gradient NaN. First-order perturbation of a kept pair :math:`i`
    (Magnus, Econometric Theory 1985): :math:`d\lambda_i = u_i^T dA\, u_i`,
    :math:`du_i = \sum_{j \ne i} u_j u_j^T dA\, u_i / (\lambda_i - \lambda_j)`, hence

    .. math::
        \bar A = U_k \operatorname{diag}(\bar\lambda) U_k^T + V C U_k^T, \qquad
        C_{ji} = \frac{v_j^T \bar u_i}{\lambda_i - \lambda_j} \; (j \ne i),

    which divides only by gaps *to kept eigenvalues*. A term whose numerator
    :math:`v_j^T \bar u_i` is exactly zero is zero whatever the gap: the loss does not see that
    rotation of :math:`u_i`, as it does not see a discarded pair. That keeps the gradient finite
    where a kept eigenvalue ties with directions the loss ignores, e.g. the exact zeros of
    isolated nodes without self-loops under a filter that vanishes at 0 (:math:`\bar u_i = 0`
    for :math:`\lambda_i = 0`). A tie that involves a kept pair the loss does see is still
    non-finite, as in PyTorch: that gradient does not exist (``backend="stable"``).
    """

    @staticmethod
    def forward(ctx, matrix: Tensor, k: int, which: str, eigh=torch.linalg.eigh):
        values, vectors = eigh(matrix)
        index = order_indices(values, which)
        values = values.gather(-1, index)
        vectors = vectors.gather(-1, index.unsqueeze(-2).expand_as(vectors))
        ctx.save_for_backward(values, vectors)
        ctx.k = k
        return values[..., :k], vectors[..., :k]

    @staticmethod
    @first_order_only("the dense eigendecomposition's backward (backends 'exact' and 'batched_dc')",
                      SECOND_DERIVATIVE_FIX)
    def backward(ctx, grad_values: Tensor, grad_vectors: Tensor):
        values, vectors = ctx.saved_tensors
        k = ctx.k
        kept = vectors[..., :k]
        gaps = values[..., :k].unsqueeze(-2) - values.unsqueeze(-1)  # (*, n, k): lambda_i - lambda_j
        own = torch.eye(values.shape[-1], k, dtype=torch.bool, device=values.device)
        projected = vectors.mT @ grad_vectors  # v_j^T u_i-bar
        # no term for j = i, nor where the loss does not see the direction (v_j^T u_i-bar = 0), whatever the gap
        coupling = torch.where(own | (projected == 0), 0.0, projected / gaps)
        grad = (kept * grad_values.unsqueeze(-2)) @ kept.mT + vectors @ coupling @ kept.mT
        return grad, None, None, None


class ExactBackend(EigenBackend):
    r"""Exact eigenpairs: ``torch.linalg.eigh`` on a dense matrix, ARPACK on a sparse one.

    The dense path computes the full decomposition and keeps ``k`` pairs; it is
    differentiable, with the backward of the kept pairs only (:class:`_PartialEigh`: gaps
    between two discarded eigenvalues never enter), to first order: a backward through its
    gradient (after ``create_graph=True``) raises and says to use ``torch.linalg.eigh``.
    It still contains :math:`1/(\lambda_i - \lambda_j)` for kept :math:`i`, so it is not
    finite when a kept eigenvalue is repeated: use ``backend="stable"`` there. When no gradient is needed (the
    operator does not require grad, or grad mode is off) the dense path computes the ``k`` kept
    pairs only, by :func:`~lowrank_gnn.linalg.eigh_extremal` (LAPACK's subset solver where it
    measures faster, ``which="magnitude"`` excepted). The sparse path runs
    ``scipy.sparse.linalg.eigsh`` (implicitly restarted Lanczos, in float64 on the CPU)
    from a fixed start vector, so results are reproducible run to run, and then searches the
    complement of its ``k`` pairs for copies of repeated eigenvalues that Lanczos missed (one
    more ARPACK solve, for one pair, when nothing was missed). Its eigenvalues are
    differentiable as Rayleigh quotients :math:`\lambda_i = u_i^T A u_i` with :math:`u_i`
    held fixed (exact first-order gradient :math:`u_i u_i^T`); a gradient through its
    eigenvectors raises an error rather than silently being zero.

    The dense backward's exception to the repeated-eigenvalue rule: a coupling term the loss does
    not see (:math:`v_j^T \bar u_i = 0`) is zero whatever the gap, so a kept eigenvalue that ties
    only with such directions keeps a finite gradient (:class:`_PartialEigh`). The sparse path
    decides that the operator is zero by its product with ARPACK's start vector, not by its norm.

    Args:
        k (int): number of eigenpairs.
        which (str): ``"largest"``, ``"smallest"`` or ``"magnitude"``. (default: ``"largest"``)
        method (str): ``"auto"``, ``"dense"`` or ``"sparse"``. ``"auto"`` takes the dense
            path for batches and for ``n <= dense_max_nodes``. (default: ``"auto"``)
        dense_max_nodes (int): the ``"auto"`` threshold. At 5000 nodes a dense float32
            matrix takes 100 MB and ``eigh`` a few seconds on 2 CPU cores (2708 nodes:
            ~1.7 s). (default: ``5000``)
        tol (float): ARPACK's relative accuracy; 0 means machine precision. Copies of repeated
            eigenvalues that Lanczos missed are found reliably at 0 only: with ``tol > 0`` the
            search for them is as loose as the solve. (default: ``0.0``)
        maxiter (int, optional): ARPACK's iteration limit. (default: SciPy's, ``10 n``)

    Example:
        >>> import torch
        >>> from lowrank_gnn.eigen import ExactBackend
        >>> backend = ExactBackend(k=2)
        >>> pairs = backend(torch.diag(torch.tensor([1.0, 3.0, 2.0])))
        >>> pairs.eigenvalues
        tensor([3., 2.])
    """

    METHODS = ("auto", "dense", "sparse")

    def __init__(self, k: int, which: str = "largest", method: str = "auto", dense_max_nodes: int = 5000,
                 tol: float = 0.0, maxiter: Optional[int] = None) -> None:
        super().__init__(k, which)
        self.method = check_choice("method", method, self.METHODS)
        self.dense_max_nodes = check_positive_int("dense_max_nodes", dense_max_nodes)
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0 (got tol={tol!r})")
        self.tol = float(tol)
        self.maxiter = None if maxiter is None else check_positive_int("maxiter", maxiter)

    def uses_dense_path(self, op) -> bool:
        if self.method != "auto":
            return self.method == "dense"
        return len(op.shape) > 2 or op.shape[-1] <= self.dense_max_nodes

    def solve(self, op) -> EigenPairs:
        if self.uses_dense_path(op):
            return self._solve_dense(op)
        return self._solve_sparse(op)

    def _solve_dense(self, op) -> EigenPairs:
        matrix = op.to_dense()
        if not (matrix.requires_grad and torch.is_grad_enabled()):
            # no gradient to carry: eigh reads the lower triangle, and only the k kept columns are ordered
            with torch.no_grad():
                if self.which == "magnitude":
                    values, vectors = torch.linalg.eigh(matrix)
                    return EigenPairs(*select_eigenpairs(values, vectors, self.k, self.which))
                # the k wanted pairs only (LAPACK's subset solver where it pays); solve's operators are finite
                values, vectors = eigh_extremal(matrix, self.k, self.which, check_finite=False)
                vectors = vectors.contiguous()
                return EigenPairs(values, vectors.mul_(sign_factors(vectors)))
        matrix = (matrix + matrix.mT) / 2  # eigh reads one triangle; symmetrise so gradients are symmetric
        eigenvalues, eigenvectors = _PartialEigh.apply(matrix, self.k, self.which)
        return EigenPairs(eigenvalues, canonical_signs(eigenvectors))

    def _solve_sparse(self, op) -> EigenPairs:
        from scipy.sparse.linalg import ArpackError, ArpackNoConvergence

        if len(op.shape) > 2:
            raise ValueError(f"method='sparse' needs an unbatched (n, n) operator (got shape {tuple(op.shape)}); "
                             "use method='dense' for batches")
        n = op.shape[-1]
        if self.k >= n:
            raise ValueError(f"the sparse path (ARPACK) needs k < n (got k={self.k}, n={n}); "
                             "use method='dense' for all eigenpairs")
        matrix = op.to_scipy()
        rng = np.random.default_rng(ARPACK_START_SEED)
        start = rng.standard_normal(n)
        if not np.any(matrix @ start):
            # A v0 = 0 exactly, where ARPACK stops ("starting vector is zero"). A Gaussian v0 is mapped to
            # exactly 0 only by an operator that is zero to rounding (a zero graph, or a clique with
            # self-loops deflated): every vector is then an eigenvector of eigenvalue 0, so return the
            # first k unit vectors. (A zero test on ||A||_F would not do: for a deflated operator the
            # norm is a sum that cancels, and its rounding decides either way.)
            values = torch.zeros(self.k, dtype=op.dtype, device=op.device)
            vectors = torch.eye(n, self.k, dtype=op.dtype, device=op.device)
        else:
            try:
                found_values, found_vectors = _arpack_pairs(matrix, start, rng, self.k, self.which, self.tol,
                                                            self.maxiter, float(operator_frobenius_norm(op)))
            except ArpackNoConvergence as err:
                raise RuntimeError(f"ARPACK did not converge to k={self.k} eigenpairs within maxiter="
                                   f"{self.maxiter or 10 * n} iterations; raise maxiter, set tol > 0, or use "
                                   "method='dense' for graphs that fit in memory") from err
            except ArpackError as err:  # e.g. error 3, no shifts: an operator that is zero to rounding
                raise RuntimeError(f"ARPACK failed on this operator ({err}); operators that are zero to rounding "
                                   f"(a deflated union of cliques) or have very few distinct eigenvalues can make it "
                                   f"fail; use method='dense' for graphs that fit in memory") from err
            values = torch.as_tensor(found_values, dtype=op.dtype, device=op.device)
            vectors = torch.as_tensor(found_vectors, dtype=op.dtype, device=op.device)
        values, vectors = select_eigenpairs(values, vectors, self.k, self.which)
        rayleigh = (vectors * op.matmul(vectors)).sum(-2)
        if rayleigh.requires_grad:
            # Same value up to the solver's accuracy; carries d lambda_i = u_i^T dA u_i.
            return EigenPairs(rayleigh, _NoEigenvectorGradient.apply(vectors, rayleigh))
        return EigenPairs(values, vectors)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, method={self.method!r}"


def _arpack_pairs(matrix, start: np.ndarray, rng: np.random.Generator, k: int, which: str, tol: float,
                  maxiter: Optional[int], norm: float) -> Tuple[np.ndarray, np.ndarray]:
    r"""The ``k`` extremal eigenpairs of a symmetric SciPy matrix or ``LinearOperator`` by ARPACK, with
    the copies of repeated eigenvalues that its Lanczos process misses searched for and added.

    Single-vector Lanczos finds one vector per distinct eigenvalue of the start vector's Krylov
    space; further copies of a repeated eigenvalue (one per connected component for a graph
    operator's extreme eigenvalue, two for most eigenvalues of a cycle) enter only through
    rounding, so ``eigsh`` may return a later eigenvalue in their place, with small residuals.
    After the ``k`` pairs :math:`(\Theta, V)` are found, the one extremal eigenpair of
    :math:`B = A + V (s - \Theta) V^\top` is computed, which moves the found pairs to
    :math:`s` and leaves :math:`A` on the rest of the space; :math:`s` lies :math:`\|A\|_F` past
    the ``k``-th found eigenvalue on the unwanted side (0 for ``"magnitude"``), so that a found
    pair is never a better candidate than the ``k``-th. If the candidate beats
    the ``k``-th found eigenvalue by more than :data:`MISSED_EIGENVALUE_RTOL` times
    :math:`\|A\|_F` plus ``tol`` times the ``k``-th, it was missed: it replaces the ``k``-th and
    the search repeats. Each round adds a genuine eigenpair better than the one it drops, so at most ``k`` rounds run; a
    result that misses nothing costs one extra ARPACK solve for a single pair. The search runs at
    ``tol``: with ``tol > 0`` it is as loose as the first solve and may stop at a Ritz value short of
    the extreme one (30 disjoint paths at ``tol=1e-6``: a missed zero), and at ``tol=0`` on pairs
    found to a loose ``tol`` it may not converge at all (Cora), so the copies are only searched for
    reliably at ``tol=0``, the default. A candidate
    less than half outside the found pairs' span is one of them (the shift cannot set the pairs
    of an operator that is zero to rounding apart) and ends the search, so the vectors stay
    orthonormal; an operator that maps the rest of the space to zero gives the candidate 0.
    ``start`` is the first solve's start vector; ``rng`` draws those of the searches.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = matrix.shape[0]
    arpack_which = ARPACK_WHICH[which]
    # ARPACK can return a later eigenvalue in place of an exact 0 (the Laplacian of 100 disjoint edges,
    # eigenvalues 0 and 2 only: smallest 2); solving A + sigma I with sigma = sqrt(eps) ||A||_F (the same
    # pairs, shifted) moves such eigenvalues off 0 at no measurable cost in accuracy
    shift = ZERO_SHIFT * norm if which != "magnitude" else 0.0
    if shift:
        plain = matrix
        matrix = LinearOperator((n, n), matvec=lambda x: plain @ x.reshape(n) + shift * x.reshape(n),
                                dtype=np.float64)
    values, vectors = eigsh(matrix, k=k, which=arpack_which, v0=start, tol=tol, maxiter=maxiter)
    for _ in range(k):
        beyond = {"largest": values.min() - norm, "smallest": values.max() + norm, "magnitude": 0.0}[which]
        move = beyond - values

        def deflated(x: np.ndarray, basis: np.ndarray = vectors, move: np.ndarray = move) -> np.ndarray:
            x = x.reshape(n)
            return matrix @ x + basis @ (move * (basis.T @ x))

        start = rng.standard_normal(n)
        start -= vectors @ (vectors.T @ start)
        rest_of_space = LinearOperator((n, n), matvec=deflated, dtype=np.float64)
        if np.any(rest_of_space @ start):
            candidate, vector = eigsh(rest_of_space, k=1, which=arpack_which, v0=start, tol=tol, maxiter=maxiter,
                                      ncv=min(n, MISSED_EIGENVALUE_NCV))
        else:  # A maps the rest of the space to 0 (ARPACK would stop: "starting vector is zero")
            candidate, vector = np.zeros(1), start[:, None] / np.linalg.norm(start)
        # the part outside the found pairs' span; less than half of it: the shift did not set the found
        # pairs apart (an operator zero to rounding), and the candidate is one of them
        outside = vector[:, 0] - vectors @ (vectors.T @ vector[:, 0])
        length = float(np.linalg.norm(outside))
        worst = int(np.argmin(_score(values, which)))  # the k-th found; ARPACK's tol is relative to it
        margin = MISSED_EIGENVALUE_RTOL * norm + tol * abs(float(values[worst]))
        if length < 0.5 or not _score(candidate, which)[0] > _score(values, which)[worst] + margin:
            break
        values, vectors = np.append(values, candidate), np.column_stack([vectors, outside / length])
        keep = np.argsort(-_score(values, which), kind="stable")[:k]
        values, vectors = values[keep], vectors[:, keep]
    return values - shift, vectors


def _score(values: np.ndarray, which: str) -> np.ndarray:
    """Larger is better in ``which`` order."""
    return {"largest": values, "smallest": -values, "magnitude": np.abs(values)}[which]
