r"""The amortized backend: eigenvectors learned alongside the model.

Li, Shi, Zhao & Lin, "Amortized Eigendecomposition for Neural Networks", NeurIPS 2024
(`paper <https://openreview.net/forum?id=OYOkkqRLvj>`_). An eigendecomposition is itself
the optimum of a loss over orthonormal bases; inside training it need not be solved at
every step, only tracked, so a persistent basis :math:`W` is updated by the same
optimiser step as the model:

.. math::
    U = \operatorname{orth}(W), \qquad \lambda_i = u_i^T A u_i, \qquad
    \mathcal{L} = \mathcal{L}_{\text{task}}(U, \lambda) + \eta\, g(A, U).

One step costs a thin QR of :math:`W` and one product :math:`A U`, instead of an
eigendecomposition.
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple, cast

import torch
from torch import Tensor, nn

from .._validation import check_choice, check_positive_int
from ..linalg.householder import householder_orthonormal, householder_vectors
from ..linalg.krylov import block_krylov
from ..linalg.qr import QRFactors, q_factor, q_projection
from .base import EigenBackend, EigenPairs, canonical_signs, order_indices, pivot_sign_factors, select_eigenpairs
from .diagnostics import EigenDiagnostics, operator_frobenius_norm, relative_residual, subspace_angle
from .rows import LocalRows


def _rank_tolerance(dtype: torch.dtype) -> float:
    """Relative ``|R_ii|`` below which ``W`` counts as rank deficient.

    sqrt(eps): below it the QR factor has lost half its digits and its backward, which
    applies ``R^{-1}``, amplifies gradients by more than ``1 / sqrt(eps)``.
    """
    return torch.finfo(dtype).eps ** 0.5


#: The ``W -> U`` maps, validated at construction: ``"qr"`` (thin QR, ``diag(R) > 0``,
#: :func:`~lowrank_gnn.linalg.qr_orthonormalize`) and ``"householder"`` (``W`` holds Householder vectors and
#: ``U`` is their product applied in blocked WY form, :func:`~lowrank_gnn.linalg.householder_orthonormal`).
ORTHOGONALIZATIONS = ("qr", "householder")


class AmortizedBasis(nn.Module):
    r"""A learnable basis :math:`W` of shape ``(*batch, n, k)``, sized on first use (:meth:`reset`).

    ``n`` (and the batch shape) are unknown until an operator is seen, so :attr:`weight`
    starts as an :class:`~torch.nn.parameter.UninitializedParameter` and is materialised
    in place by :meth:`reset`: an optimizer created *before* the first forward holds the
    same object and trains it. Loading a ``state_dict`` into a fresh basis materialises it
    with the checkpoint's shape, so training resumes from the same basis.

    **Orthogonalisations** (:meth:`orthonormal`, ``W -> U``):

    * ``"qr"``: :math:`U = Q` of :math:`W = QR` with :math:`\operatorname{diag}(R) > 0`. ``W``
      is any full-rank matrix; one that loses rank is repaired (see :meth:`orthonormal`).
    * ``"householder"``: :math:`W = \sqrt{n}\, V` holds Householder vectors (strictly lower
      part; implicit unit diagonal) and :math:`U = H(v_1) \cdots H(v_k) [I_k; 0]
      \operatorname{diag}(s)`, applied in blocked compact WY form (FastH,
      :func:`~lowrank_gnn.linalg.householder_orthonormal`); the column signs :math:`s` are a
      buffer. Every ``W`` gives an orthonormal ``U`` (no rank to lose, no ``R^{-1}`` in the
      backward). The :math:`\sqrt{n}` keeps the entries of ``W`` O(1) as with ``"qr"``, so
      the same learning rates apply.

    Both start from the same ``U`` for the same seed: a random (or given) ``W_0`` is
    orthonormalised by QR, and ``"householder"`` stores that ``Q`` as Householder vectors.

    Args:
        orthogonalization (str): one of :data:`ORTHOGONALIZATIONS`. (default: ``"qr"``)
        seed (int): seed of the random initialisation, for reproducible runs. (default: ``0``)
        rows (LocalRows, optional): where the rows of ``W`` live: the reductions, QR and sign
            convention of the amortized step (:mod:`lowrank_gnn.eigen.rows`; a row-distributed
            basis passes :class:`~lowrank_gnn.distributed.PartitionedRows`). (default: all rows in
            this process, :class:`~lowrank_gnn.eigen.LocalRows`)
    """

    def __init__(self, orthogonalization: str = "qr", seed: int = 0, rows: Optional[LocalRows] = None) -> None:
        super().__init__()
        self.orthogonalization = check_choice("orthogonalization", orthogonalization, ORTHOGONALIZATIONS)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer (got seed={seed!r})")
        self.seed = seed
        self.rows = rows if rows is not None else LocalRows()
        self.weight = nn.UninitializedParameter()
        self.register_buffer("signs", None)  # (*batch, k) column signs of "householder"

    @property
    def initialized(self) -> bool:
        return not isinstance(self.weight, nn.UninitializedParameter)

    def reset(self, shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device,
              value: Optional[Tensor] = None) -> None:
        """(Re)initialise the basis with shape ``shape`` so that ``U`` spans ``value`` (a full-rank
        ``(*batch, n, k)`` matrix) if given, else a Gaussian matrix.

        Materialises in place on first use and when the shape is unchanged (optimizers
        keep working); a *different* shape creates a new parameter, and an optimizer made
        for the old one must be recreated.
        """
        if value is None:
            value = self.random(shape, dtype, device, self.seed)
        if not self.initialized:
            self.weight.materialize(shape, device=device, dtype=dtype)
        elif self.weight.shape != torch.Size(shape) or self.weight.dtype != dtype or self.weight.device != device:
            self.weight = nn.Parameter(torch.empty(shape, dtype=dtype, device=device))  # type: ignore[assignment]
        if self.orthogonalization == "householder":
            self.assign(value.to(dtype))  # Householder QR of the value
        else:
            with torch.no_grad():
                self.weight.copy_(value)

    def random(self, shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int) -> Tensor:
        """The Gaussian matrix drawn with ``seed``: the initial ``W``, and (``seed + 1``) a repair's fresh columns."""
        generator = torch.Generator(device=device).manual_seed(seed)
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def _all_finite(self) -> bool:
        # one reduction: any NaN/Inf makes the sum so; over all ranks for a row-distributed W
        finite = torch.isfinite(self.weight.detach().sum()).to(torch.float64).reshape(1)
        return bool(self.rows.all_reduce_(finite, op="min"))

    @torch.no_grad()
    def assign(self, vectors: Tensor) -> None:
        r"""Set ``W`` in place so that :meth:`orthonormal` returns ``vectors`` (orthonormal columns).

        ``W`` gets columns of norm :math:`\sqrt{n}` (``"qr"``: ``W = \sqrt{n}\, U``;
        ``"householder"``: :math:`\sqrt{n}` times the Householder vectors of ``U``, and their
        column signs), the scale on which the optimiser's learning rate is a relative step.
        For ``"householder"`` a full-rank ``vectors`` without orthonormal columns is
        replaced by its Q factor.

        Shapes:
            vectors ``(*batch, n, k)``, the shape of ``W``.
        """
        scale = vectors.shape[-2] ** 0.5
        if self.orthogonalization == "householder":
            vectors, self.signs = householder_vectors(vectors)
        self.weight.copy_(vectors * scale)

    def check_matches(self, shape: Tuple[int, ...], dtype: torch.dtype, device: torch.device, what: str) -> None:
        """Raise if ``W`` was sized for a different operator (never reuse a wrong-shaped basis)."""
        if self.weight.shape != torch.Size(shape):
            raise ValueError(
                f"the amortized basis W has shape {tuple(self.weight.shape)} but {what} needs {tuple(shape)}: "
                f"it was sized for another operator. Use one backend per operator size, or call "
                f"initialize(op) to start a new basis (and recreate the optimizer)")
        if self.weight.dtype != dtype or self.weight.device != device:
            raise ValueError(f"the amortized basis W is {self.weight.dtype} on {self.weight.device} but {what} is "
                             f"{dtype} on {device}; move the module with .to(...) first")

    def orthonormal(self) -> Tensor:
        """``U = orth(W)``, differentiable in ``W``; for ``"qr"``, repairs a rank-deficient ``W`` first.

        A column of ``W`` that has become (numerically) dependent on the others has no
        well-defined direction and an unbounded QR gradient. Such columns are redrawn at
        random, the basis is re-orthonormalised in place (keeping the span of the healthy
        columns) and a ``RuntimeWarning`` says so; the solver then converges again.

        Shapes:
            returns ``(*batch, n, k)``.
        """
        return self.orthonormalize()[0]

    def orthonormalize(self) -> Tuple[Tensor, Optional[QRFactors]]:
        """:meth:`orthonormal`, and the CholeskyQR factors of ``W`` where the ``U`` is built from them
        (``"qr"``, one process, a well-conditioned ``W``: :meth:`LocalRows.qr_factors
        <lowrank_gnn.eigen.LocalRows.qr_factors>`), else ``None``."""
        if self.orthogonalization == "qr":
            factors = self.rows.qr_factors(self.weight)  # factors only for a finite W: no separate check
            if factors is not None and not bool(self._deficient(factors.diagonal)[0].any()):
                return q_factor(self.weight, factors), factors
        if not self._all_finite():
            raise ValueError(f"the amortized basis W contains NaN or Inf{self.rows.where}, usually after a "
                             "diverging optimiser step (learning rate too large, or a non-finite loss); lower the "
                             "learning rate and call initialize(op) to restart the basis")
        if self.orthogonalization == "householder":
            return householder_orthonormal(self.weight / self.weight.shape[-2] ** 0.5, self.signs), None
        vectors, diagonal = self.rows.orthonormalize(self.weight)
        deficient, scale = self._deficient(diagonal)
        if bool(deficient.any()):
            self._repair(vectors.detach(), deficient, scale)
            vectors, _ = self.rows.orthonormalize(self.weight)
        return vectors, None

    @staticmethod
    def _deficient(diagonal: Tensor) -> Tuple[Tensor, Tensor]:
        """Which columns of ``W`` count as dependent (``diag(R)`` below the rank tolerance), and the scale."""
        scale = diagonal.detach().amax(-1, keepdim=True)
        return diagonal.detach() <= _rank_tolerance(diagonal.dtype) * scale, scale

    @torch.no_grad()
    def _repair(self, vectors: Tensor, deficient: Tensor, scale: Tensor) -> None:
        count = int(deficient.sum())
        warnings.warn(f"the amortized basis W lost rank ({count} dependent column(s)); redrawing them at "
                      f"random and re-orthonormalising W in place", RuntimeWarning, stacklevel=4)
        fresh = self.random(vectors.shape, vectors.dtype, vectors.device, self.seed + 1)
        mixed = torch.where(deficient.unsqueeze(-2), fresh, vectors)
        repaired, _ = self.rows.orthonormalize(mixed)
        # Keep the column scale of W, so that the optimiser's step size keeps its meaning.
        self.weight.copy_(repaired * scale.clamp_min(torch.finfo(scale.dtype).tiny).unsqueeze(-2))

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        if self.initialized:
            super()._save_to_state_dict(destination, prefix, keep_vars)
            return
        # before the first forward: the uninitialized parameter itself, as PyTorch's lazy modules
        # (LazyLinear) save it; it loads back into a fresh basis (see _load_from_state_dict)
        weight = self._parameters.pop("weight")
        try:
            super()._save_to_state_dict(destination, prefix, keep_vars)
        finally:
            self._parameters["weight"] = weight
        destination[prefix + "weight"] = weight

    def _check_orthogonalization(self, state_dict, prefix) -> None:
        """Refuse a checkpoint of the other ``W -> U`` map: the same ``W`` means another basis there.

        A started ``"householder"`` basis always saves its column ``signs`` and a ``"qr"`` one
        never does, so the buffer tells the two apart.
        """
        weight = state_dict.get(prefix + "weight")
        if weight is None or nn.parameter.is_lazy(weight):
            return
        saved = "householder" if state_dict.get(prefix + "signs") is not None else "qr"
        if saved != self.orthogonalization:
            raise ValueError(
                f"this checkpoint's amortized basis {prefix + 'weight'!r} was saved with orthogonalization={saved!r}, "
                f"but this module has orthogonalization={self.orthogonalization!r}: the same W maps to a different "
                f"basis under the other orthogonalization. Create the module with orthogonalization={saved!r} to "
                "load it")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        key = prefix + "weight"
        self._check_orthogonalization(state_dict, prefix)
        saved = state_dict.get(key)
        if saved is not None and nn.parameter.is_lazy(saved):
            # a checkpoint taken before the first forward: the basis is not started yet there either
            if self.initialized:
                self.weight = nn.UninitializedParameter()
                self.register_buffer("signs", None)
            state_dict = {name: value for name, value in state_dict.items() if name != key}
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)
            if key in missing_keys:
                missing_keys.remove(key)
            return
        if not self.initialized and key in state_dict:
            # the module's own dtype and device (set by .to() before loading), as in PyTorch's
            # lazy modules; the copy below converts the checkpoint's tensor
            self.weight.materialize(state_dict[key].shape)
        signs = state_dict.get(prefix + "signs")
        if signs is not None and (self.signs is None or self.signs.shape != signs.shape):
            like = self.weight if self.initialized else signs
            self.signs = torch.empty(signs.shape, dtype=like.dtype, device=like.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        shape = tuple(self.weight.shape) if self.initialized else "uninitialized"
        return f"orthogonalization={self.orthogonalization!r}, weight={shape}"


def _signed_already(vectors: Tensor) -> Tensor:
    """The sign convention of :meth:`AmortizedBackend.solve`'s pairs, applied before they are selected."""
    return vectors


class _RowSums(torch.autograd.Function):
    r"""The row sums :math:`q_i = \sum_r U_{ri} (AU)_{ri}` from an already computed value, with the gradient of
    ``(U * AU).sum(-2)``: ``U`` and ``A U`` each get the other times the incoming gradient (``A U``
    only if it is passed attached).

    The Rayleigh quotients and the eigen loss's quotients (``A U`` held constant) have the same
    value: computed once and given to two of these nodes, they cost one elementwise pass and one
    reduction instead of two each, with the same numbers and gradients.
    """

    @staticmethod
    def forward(ctx, vectors: Tensor, product: Tensor, sums: Tensor) -> Tensor:
        ctx.save_for_backward(vectors, product)
        return sums.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        vectors, product = ctx.saved_tensors
        grad_vectors = grad.unsqueeze(-2) * product if ctx.needs_input_grad[0] else None
        grad_product = grad.unsqueeze(-2) * vectors if ctx.needs_input_grad[1] else None
        return grad_vectors, grad_product, None


#: L-BFGS history for :meth:`AmortizedBackend.fit`: enough curvature pairs for the
#: ill-conditioned rotations between close eigenvalues, negligible memory next to W.
FIT_HISTORY = 50
#: :meth:`AmortizedBackend.fit` with ``which="magnitude"``: residual of the ``A^2`` phase (subspace only).
FIT_SUBSPACE_TOL = 1e-3
#: Evaluations per L-BFGS call in :meth:`AmortizedBackend.fit`, between convergence checks.
FIT_CHUNK = 25


def brockett_weights(k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    r"""Brockett's :math:`N = \operatorname{diag}(\nu_1 > \dots > \nu_k > 0)`: :math:`\nu_i = (k - i + 1)/k`.

    Equally spaced: the loss separates each pair of neighbours at the same rate.
    """
    return torch.arange(k, 0, -1, dtype=dtype, device=device) / k


class AmortizedBackend(EigenBackend):
    r"""Amortized eigendecomposition (Li et al., NeurIPS 2024): eigenvectors as parameters.

    Each forward orthonormalises a persistent basis, :math:`U = \operatorname{QR}(W)` with
    :math:`\operatorname{diag}(R) > 0` (or, with ``orthogonalization="householder"``, a
    product of Householder reflections in blocked WY form; see :class:`AmortizedBasis`), returns the Rayleigh quotients
    :math:`\lambda_i = u_i^T A u_i` and the columns :math:`u_i` (in the ``which`` order,
    canonical signs), and sets ``aux_loss`` :math:`= \eta\, g(A, U)`. The training loss is
    ``task_loss + aux_loss`` (:func:`~lowrank_gnn.nn.total_aux_loss` collects it), and one
    optimiser step updates the model and :math:`W` together; at a stationary point of
    :math:`g`, :math:`U` holds the requested eigenvectors.

    **Eigen losses** (:math:`d_i = u_i^T A u_i / s`, :math:`s = \max_i |u_i^T A u_i|` held
    constant, so that :math:`g` is dimensionless and :math:`\eta` does not depend on the
    scale of :math:`A`):

    * ``"brockett"``: :math:`g = -\sum_i \nu_i d_i` with :math:`\nu_1 > \dots > \nu_k > 0`
      (Brockett's cost :math:`-\operatorname{tr}(U^T A U N)`); its maximisers are the
      top-:math:`k` eigenvectors, each in its own slot.
    * ``"convex"``: :math:`g = -\sum_i \exp(d_i)`; for strictly convex increasing
      :math:`f`, :math:`\sum_i f(u_i^T A u_i) \le \sum_i f(\lambda_i)` with equality only
      at eigenvectors (majorisation), so it identifies eigenvectors too, unordered.
    * ``"trace"``: :math:`g = -\sum_i d_i = -\operatorname{tr}(U^T A U)/s` finds the
      top-:math:`k` *subspace* only; individual pairs then come from a ``k x k``
      Rayleigh–Ritz step (``eigh`` of :math:`U^T A U`), whose backward contains
      :math:`1/(\lambda_i - \lambda_j)` and is not finite at repeated eigenvalues.

    **which.** ``"smallest"`` runs the same losses on :math:`-A`. ``"magnitude"`` squares
    the quotients: ``brockett`` :math:`-\sum_i \nu_i d_i^2`, ``convex``
    :math:`-\sum_i \exp(d_i^2)`, ``trace`` :math:`-\|A U\|_F^2 / s^2`
    (:math:`\operatorname{tr}(U^T A^2 U)`, the subspace of :math:`A^2`). Since
    :math:`(u^T A u)^2 \le \|A u\|^2` with equality only for eigenvectors of :math:`A`, the
    first two separate :math:`+\lambda` from :math:`-\lambda`, which :math:`A^2` alone
    cannot.

    **Gradients.** The returned eigenvalues and eigenvectors depend on both :math:`A` and
    :math:`W`, so the task loss trains the model through the operator and also moves
    :math:`W`, as in the paper. The eigen loss uses :math:`A` as a constant: it only
    updates :math:`W` (otherwise it would also reshape the operator to enlarge its own
    top eigenvalues). Its gradient :math:`2 A u_i\, \partial g/\partial \lambda_i` is
    obtained from the one product :math:`A U` of the forward (valid because :math:`A` is
    symmetric), so a step costs a single operator application.

    **What is identifiable.** At an eigenvalue of multiplicity :math:`m > 1` only the
    :math:`m`-dimensional eigenspace is determined; the losses are flat inside it and the
    basis stays wherever it converged. If the block is cut by ``k``
    (:math:`\lambda_k = \lambda_{k+1}`, e.g. eigenvalue 1 once per component of a
    disconnected graph) the returned columns converge to *some* orthonormal vectors of
    that eigenspace: eigenvalues and residuals converge, the particular vectors do not.
    Deflate such blocks when the vectors matter (``LowRankGCNConv`` does).

    **Training.** :math:`W` is materialised on the first forward with the operator's
    shape, dtype and device (``init="random"``: Gaussian; ``"exact"``: the exact
    eigenvectors of that first operator, one exact solve as a warm start). An optimizer
    made before the first forward still trains it (the parameter is materialised in
    place); :meth:`initialize` restarts the basis explicitly. Adam is the recommended
    optimiser. ``W`` has O(1) entries (columns of norm :math:`\sqrt{n}`), so its learning
    rate is a relative step: give the basis its own parameter group, lr ~1e-3 when the
    operator drifts slowly (learnable edge weights; Cora: eigenvalues tracked to ~1e-4,
    residual ~1e-3) up to ~5e-2 when it jumps every step (a minibatch covariance). A larger
    ``eta`` weighs the eigen loss against the task loss's pull on ``W``. From
    ``init="random"`` expect hundreds of steps before the pairs are useful.
    :meth:`fit` runs the basis to convergence on a fixed operator.

    **Refinement** (``refine > 0``, an addition to the paper's method). The gradient step
    moves :math:`W` by a learning rate, which on a drifting operator lags behind: on graphs
    whose top spectrum is dense (power-law graphs; ``benchmarks/large_graph.py``) the tracked
    basis stays at a residual of ~1e-2. With ``refine=r`` every forward first runs one
    Rayleigh–Ritz step, without gradient, on the block Krylov subspace
    :math:`\operatorname{span}[U, A U, \dots, A^r U]` of the *current* operator and writes the
    ``k`` Ritz vectors chosen by ``which`` into :math:`W` (signs kept continuous): each new
    block :math:`A B_{d-1}` is orthogonalised against all earlier ones (twice, dropping
    directions below rounding; :func:`~lowrank_gnn.linalg.block_krylov`), the ``(r+1)k x (r+1)k``
    matrix :math:`V^T A V` is diagonalised. This is a block Lanczos eigensolver warm-started from
    the previous basis and restarted every forward; ``refine=1`` is :math:`\operatorname{span}[U, A U]` (LOBPCG
    without its third block). It costs ``r + 1`` operator products with ``k`` columns, and the
    differentiable forward then runs on the refined basis. Deeper subspaces resolve the drift
    far better per product than repeated shallow steps: a Ritz vector is a degree-``r``
    polynomial in :math:`A` applied to :math:`U`. Like any block eigensolver restarted to
    ``k`` vectors, it converges to *an* invariant subspace: from a random start it can settle
    on one that misses a wanted eigenvalue (seen with ``which="magnitude"`` in float32 when
    :math:`|\lambda_k|` and :math:`|\lambda_{k+1}|` are close and of opposite sign), so start it
    from ``init="exact"`` or a :meth:`fit` basis. :meth:`fit` runs without it.

    Args:
        k (int): number of eigenpairs.
        which (str): ``"largest"``, ``"smallest"`` or ``"magnitude"``. (default: ``"largest"``)
        loss (str): ``"brockett"``, ``"convex"`` or ``"trace"``. (default: ``"brockett"``)
        eta (float): weight of the eigen loss, > 0. (default: ``1.0``)
        init (str): ``"random"`` or ``"exact"`` (warm start). (default: ``"random"``)
        refine (int): depth ``r`` of the block Krylov subspace of the Rayleigh–Ritz step
            run before each forward (``r + 1`` operator products), >= 0; ``0`` is the paper's
            gradient-only method. (default: ``0``)
        orthogonalization (str): ``W -> U`` map, ``"qr"`` or ``"householder"`` (see
            :class:`AmortizedBasis`). (default: ``"qr"``)
        seed (int): seed of the random initialisation. (default: ``0``)

    Shapes:
        operator ``(*batch, n, n)`` (batched: dense only; one basis per batch entry);
        :attr:`basis.weight` ``(*batch, n, k)``.

    Example:
        >>> import torch
        >>> from lowrank_gnn.eigen import AmortizedBackend
        >>> _ = torch.manual_seed(0)
        >>> A = torch.randn(30, 30, dtype=torch.float64); A = (A + A.mT) / 2
        >>> backend = AmortizedBackend(k=4, loss="brockett").double()
        >>> diagnostics = backend.fit(A, steps=500)   # or: train it inside the model
        >>> pairs = backend(A)
        >>> loss = pairs.eigenvalues.sum() + pairs.aux_loss   # a task loss, plus the eigen loss
        >>> torch.allclose(pairs.eigenvalues, torch.linalg.eigvalsh(A).flip(0)[:4], atol=1e-4)
        True
    """

    LOSSES = ("brockett", "convex", "trace")
    INITS = ("random", "exact")

    def __init__(self, k: int, which: str = "largest", loss: str = "brockett", eta: float = 1.0,
                 init: str = "random", refine: int = 0, orthogonalization: str = "qr", seed: int = 0) -> None:
        super().__init__(k, which)
        self.loss = check_choice("loss", loss, self.LOSSES)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 0:
            raise ValueError(f"eta must be a positive number (got eta={eta!r})")
        self.eta = float(eta)
        self.init = check_choice("init", init, self.INITS)
        if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
            raise ValueError(f"refine must be a non-negative integer (got refine={refine!r})")
        self.refine = refine
        self.basis = AmortizedBasis(orthogonalization, seed)
        self._diagnostics: Optional[EigenDiagnostics] = None
        self._last: Optional[tuple] = None
        self._previous: Optional[Tensor] = None
        self._pivots: Optional[Tensor] = None  # the last step's pivot rows of the sign convention, per column of U
        self._loss_on_square = False  # fit(which="magnitude"): Brockett's cost on A^2 first (see fit)
        self._brockett_weights: Optional[Tensor] = None  # brockett_weights(k) in the last dtype and device

    # -- state ------------------------------------------------------------------------------
    def basis_shape(self, op) -> Tuple[int, ...]:
        """The shape of ``W`` for ``op``: ``(*batch, n, k)`` (a row-distributed backend: this rank's rows)."""
        return (*op.shape[:-2], op.shape[-1], self.k)

    @torch.no_grad()
    def initialize(self, op) -> None:
        """(Re)start the basis for ``op``: Gaussian (``init="random"``) or exact eigenvectors.

        Called automatically on the first forward. Call it yourself to restart, or to size
        the basis before creating the optimizer. A new shape creates a new parameter.
        """
        from ..operators import as_operator
        from .exact import ExactBackend

        op = as_operator(op)
        value = None
        if self.init == "exact":
            # Columns of norm sqrt(n), like the Gaussian start: entries of W are O(1), so an
            # optimiser's learning rate is a relative step size whatever n is.
            value = ExactBackend(self.k, self.which)(op).eigenvectors.detach() * op.shape[-1] ** 0.5
        self.basis.reset(self.basis_shape(op), op.dtype, op.device, value)
        self._diagnostics, self._last, self._previous, self._pivots = None, None, None, None

    # -- the step ---------------------------------------------------------------------------
    def solve(self, op) -> EigenPairs:
        if not self.basis.initialized:
            self.initialize(op)
        self.basis.check_matches(self.basis_shape(op), op.dtype, op.device, "this operator")
        if self.refine:
            self._refine(op)
        rows = self.basis.rows                                  # sums over rows: all-reduced across ranks
        vectors, factors = self.basis.orthonormalize()          # (*batch, n, k), depends on W
        product = op.matmul(vectors)                            # A U: depends on A and W
        if factors is not None:
            # U^T (A U) with A U held constant, in one skinny product; its QR backward takes the gradient
            # (A U) diag(c) in factored form (q_projection)
            shadow = torch.diagonal(q_projection(self.basis.weight, factors, product.detach()), dim1=-2, dim2=-1)
            sums = shadow.detach()
        else:
            with torch.no_grad():
                sums = (vectors * product).sum(-2)              # this rank's u_i^T A u_i
            shadow = _RowSums.apply(vectors, product.detach(), sums)          # the same, A U held constant
        values = rows.all_reduce(_RowSums.apply(vectors, product, sums))       # Rayleigh quotients, (*batch, k)
        aux_loss = self._eigen_loss(op, vectors, product.detach(), values.detach(), shadow)
        if self.eta != 1.0:
            aux_loss = self.eta * aux_loss
        if self.loss == "trace":                                # Rayleigh-Ritz inside the subspace
            small = rows.all_reduce(vectors.mT @ product)
            values, rotation = torch.linalg.eigh((small + small.mT) / 2)
            vectors, product = vectors @ rotation, product @ rotation
        self._record_diagnostics(op, vectors.detach(), product.detach(), values.detach())
        if rows.canonical_signs is not canonical_signs:  # rows split over ranks: the pivot is searched across them
            values, vectors = select_eigenpairs(values, vectors, self.k, self.which, signs=rows.canonical_signs)
            return EigenPairs(values, vectors, aux_loss)
        # the basis keeps its pivot rows from step to step: verified, not searched (pivot_sign_factors)
        flips, self._pivots = pivot_sign_factors(vectors, self._pivots)
        signed = vectors * flips if bool((flips < 0).any()) else vectors
        values, selected = select_eigenpairs(values, signed, self.k, self.which, signs=_signed_already)
        # the pairs are a fresh tensor, as from every backend (not U itself, which the diagnostics keep)
        return EigenPairs(values, selected.clone() if selected.data_ptr() == vectors.data_ptr() else selected, aux_loss)

    @torch.no_grad()
    def _refine(self, op) -> None:
        """One Rayleigh–Ritz step on the block Krylov subspace ``span[U, A U, ..., A^r U]``, written into ``W``
        (``r = refine``; see the class docstring)."""
        vectors = self.basis.orthonormal()                                   # U, (*batch, n, k)
        krylov = block_krylov(op.matmul, vectors, self.refine, start_orthonormal=True)
        ritz_values, ritz_vectors = torch.linalg.eigh(krylov.projection)
        # a zero column of the basis (a direction dropped in this batch entry only) is decoupled in
        # the projection and gives a spurious Ritz pair (value 0, vector on that column): rank those last
        spurious = ~krylov.kept.gather(-1, ritz_vectors.abs().argmax(-2))
        index = order_indices(ritz_values, self.which)
        index = index.gather(-1, torch.argsort(spurious.gather(-1, index).to(torch.uint8), dim=-1, stable=True))
        k = self.k
        chosen = ritz_vectors.gather(-1, index[..., None, :k].expand(*ritz_vectors.shape[:-1], k))
        # keep each column's sign continuous (Adam's moments refer to it): sign of <u_old_i, u_new_i>
        sign = torch.sign(torch.diagonal(chosen[..., :k, :], dim1=-2, dim2=-1))
        chosen = chosen * torch.where(sign == 0, 1.0, sign).unsqueeze(-2)
        self.basis.assign(krylov.basis @ chosen)

    def _eigen_loss(self, op, vectors: Tensor, product: Tensor, quotients: Tensor, shadow: Tensor) -> Tensor:
        """``g`` with ``A`` held constant: gradient to ``W`` only (see the class docstring).

        ``live`` has the value of the Rayleigh quotients and, for symmetric constant ``A``,
        their exact gradient ``d(u_i^T A u_i)/du_i = 2 A u_i`` (``A u_i`` taken from the
        forward's product, so no second operator application is needed; ``shadow`` is this
        rank's row sums ``sum_r U_ri (A U)_ri`` with gradient ``A U`` to ``U`` only). With the rows split
        over ranks the row sums are all-reduced and each rank returns ``g / world_size`` (the
        objective is the sum of the ranks' losses).
        """
        rows = self.basis.rows
        scale = operator_frobenius_norm(op).unsqueeze(-1).clamp_min(torch.finfo(quotients.dtype).tiny)
        if self.which == "magnitude" and self.loss == "trace":  # -||A U||^2 / s^2 with gradient -2 A^2 U / s^2
            unit = product / scale.unsqueeze(-2)                      # in units of ||A||_F: no overflow in squares
            with torch.no_grad():
                second = op.matmul(unit) / scale.unsqueeze(-2)
            sums = rows.all_reduce(torch.stack([unit.square().sum((-2, -1)), (vectors * second).sum((-2, -1))]))
            squares, direction = sums[0], sums[1]
            return -(squares + 2 * (direction - direction.detach())).sum() / rows.world_size
        live = (2 * rows.all_reduce(shadow) - quotients) / scale
        if self.which == "smallest":
            live = -live
        if self.which == "magnitude":
            if self._loss_on_square:  # fit()'s first phase: u_i^T A^2 u_i / s^2 = ||A u_i||^2 / s^2
                with torch.no_grad():
                    second = op.matmul(product / scale.unsqueeze(-2)) / scale.unsqueeze(-2)  # A^2 U / s^2
                quadratic = rows.all_reduce((vectors.detach() * second).sum(-2))
                live = 2 * rows.all_reduce((vectors * second).sum(-2)) - quadratic  # gradient 2 A^2 u_i / s^2
            else:
                live = live.square()
        loss = self._quotient_loss(live)
        return loss / rows.world_size if rows.world_size > 1 else loss

    def _quotient_loss(self, live: Tensor) -> Tensor:
        """``g`` from the scaled (and, for ``"magnitude"``, squared) quotients ``(*batch, k)``."""
        if self.loss == "brockett":
            weights = self._brockett_weights
            if weights is None or weights.dtype != live.dtype or weights.device != live.device:
                weights = self._brockett_weights = brockett_weights(self.k, live.dtype, live.device)
            return -(weights * live).sum()
        if self.loss == "convex":
            return -live.exp().sum()
        return -live.sum()

    def _record_diagnostics(self, op, vectors: Tensor, product: Tensor, values: Tensor) -> None:
        previous = self._previous
        self._last = (op, vectors, product, values, previous if previous is not None
                      and previous.shape == vectors.shape else None)
        self._diagnostics = None
        self._previous = vectors
        if self.basis.rows.world_size > 1:
            self._diagnose()  # collective: computed now on every rank, so that reading it on one rank is safe

    @property
    def diagnostics(self) -> Optional[EigenDiagnostics]:
        """Convergence of the last forward (``None`` before the first): relative residual and
        subspace angle to the previous forward's eigenvectors. Computed on first access from
        the last step's ``A U`` (no further operator products except ``||A||_F``), so
        logging it every step is cheap and not logging it is free. (A basis split over ranks
        computes it during the forward: its sums over rows are collective.)
        """
        return self._diagnose()

    def _diagnose(self) -> Optional[EigenDiagnostics]:
        if self._diagnostics is None and self._last is not None:
            op, vectors, product, values, previous = self._last
            rows = self.basis.rows
            residual = relative_residual(product, vectors, values, operator_frobenius_norm(op), rows)
            angle = None if previous is None else subspace_angle(previous, vectors, rows)
            self._diagnostics, self._last = EigenDiagnostics(residual, angle), None
        return self._diagnostics

    # -- running to convergence -------------------------------------------------------------
    def fit(self, op, steps: int = 2000, tol: Optional[float] = None) -> EigenDiagnostics:
        """Run the basis to convergence on a fixed operator, minimising the eigen loss alone.

        On a fixed operator the amortized method is an ordinary iterative eigensolver; this
        runs it with L-BFGS (strong-Wolfe line search), which reaches a small residual in far
        fewer evaluations than a first-order optimiser. Use it to warm up a basis before
        training, in tests, or to check what the method converges to. Only ``W`` moves.

        Args:
            op: the operator ``(*batch, n, n)``.
            steps (int): maximum number of loss evaluations. (default: ``2000``)
            tol (float, optional): stop once the relative residual (:attr:`diagnostics`) is
                ``<= tol`` for every batch entry. (default: ``sqrt(eps)`` of the dtype, the
                accuracy to which a residual determines eigenvectors)

        Returns:
            the :class:`EigenDiagnostics` of the final basis.
        """
        from ..operators import as_operator

        op = as_operator(op)
        steps = check_positive_int("steps", steps)
        if tol is not None and not tol > 0:
            raise ValueError(f"tol must be > 0 (got tol={tol!r})")
        tol = torch.finfo(op.dtype).eps ** 0.5 if tol is None else float(tol)
        refine, self.refine = self.refine, 0  # a refinement inside the line search would move W under L-BFGS
        try:
            return self._fit(op, steps, tol)
        finally:
            self.refine = refine

    def _fit(self, op, steps: int, tol: float) -> EigenDiagnostics:
        with torch.no_grad():
            self(op)  # validates op and materialises W
        if self.which == "magnitude" and self.loss != "trace":
            # The squared quotients (u^T A u)^2 have spurious local maxima: on the span of two eigenvectors
            # of opposite sign the quotient passes through 0, so both ends are maxima, and from a random
            # start L-BFGS can settle on an eigenvector of smaller |lambda| (reporting a small residual).
            # Brockett's cost on A^2 has no local maxima but the wanted one (its other stationary points
            # are saddles); it finds the top-|lambda| subspace, a k x k Rayleigh-Ritz step separates
            # +lambda from -lambda inside it, and the squared-quotient loss then only polishes.
            self._loss_on_square = True
            try:
                # only the basin matters here (the spurious maxima are O(1) away): a loose tolerance
                evaluations = self._minimise(op, steps // 2, max(tol, FIT_SUBSPACE_TOL), subspace=True)
            finally:
                self._loss_on_square = False
            self._rotate_to_ritz_vectors(op)
            self._minimise(op, max(steps - evaluations, 1), tol)
            # the squared quotients resolve the residual only to about its square root of precision; the Ritz
            # vectors of the final span have the smallest residual it allows
            self._rotate_to_ritz_vectors(op)
        else:
            self._minimise(op, steps, tol)
        return cast(EigenDiagnostics, self.diagnostics)

    @torch.no_grad()
    def _subspace_residual(self, op) -> Tensor:
        """Relative residual of the Ritz pairs of ``span(U)`` (rotation-invariant)."""
        rows = self.basis.rows
        vectors = self.basis.orthonormal()
        product = op.matmul(vectors)
        small = rows.all_reduce(vectors.mT @ product)
        values, rotation = torch.linalg.eigh((small + small.mT) / 2)
        return relative_residual(product @ rotation, vectors @ rotation, values, operator_frobenius_norm(op), rows)

    @torch.no_grad()
    def _rotate_to_ritz_vectors(self, op) -> None:
        vectors = self.basis.orthonormal()
        small = self.basis.rows.all_reduce(vectors.mT @ op.matmul(vectors))
        values, rotation = torch.linalg.eigh((small + small.mT) / 2)
        index = order_indices(values, self.which)
        self.basis.assign(vectors @ rotation.gather(-1, index.unsqueeze(-2).expand_as(rotation)))
        self(op)

    def _minimise(self, op, steps: int, tol: float, subspace: bool = False) -> int:
        """L-BFGS on the eigen loss until the residual is ``<= tol`` or ``steps`` evaluations; returns the count."""
        optimizer = torch.optim.LBFGS([self.basis.weight], lr=1.0, max_iter=FIT_CHUNK, history_size=FIT_HISTORY,
                                      line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
        evaluations = 0

        def closure() -> Tensor:
            nonlocal evaluations
            evaluations += 1
            optimizer.zero_grad(set_to_none=True)
            aux_loss = self(op).aux_loss
            aux_loss.backward()
            return aux_loss

        def converged() -> bool:
            residual = self._subspace_residual(op) if subspace else cast(EigenDiagnostics, self.diagnostics).residual
            return bool((residual <= tol).all())

        while evaluations < steps and not converged():
            optimizer.param_groups[0]["max_eval"] = min(FIT_CHUNK, steps - evaluations)
            optimizer.step(closure)
            with torch.no_grad():
                self(op)  # the diagnostics of the accepted iterate, not of a line-search trial
        return evaluations

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, loss={self.loss!r}, eta={self.eta}, init={self.init!r}, "
                f"refine={self.refine}, orthogonalization={self.basis.orthogonalization!r}")


__all__ = ["AmortizedBackend", "AmortizedBasis", "ORTHOGONALIZATIONS", "brockett_weights"]
