"""The operator protocol and its dense and deflated implementations.

Every eigen backend consumes an :class:`Operator`: an abstract base with

* ``shape`` ``(*batch, n, n)``, ``dtype``, ``device``,
* ``matmul(X)`` for ``X`` of shape ``(*batch, n, d)``,
* ``to_dense()`` returning ``(*batch, n, n)``,
* ``symmetric``: whether the matrix equals its transpose (to a dtype-dependent tolerance),
* ``check_finite()``: raises a clear error on NaN/Inf entries,
* ``frobenius_norm()``: :math:`\\|A\\|_F` per batch entry, detached (exact where a closed form
  exists, else a Hutchinson estimate),
* ``to_scipy()`` (unbatched operators only): a SciPy matrix or ``LinearOperator`` for
  ARPACK, detached from autograd.

:class:`~lowrank_gnn.operators.GraphOperator` (sparse, from ``edge_index``),
:class:`DenseOperator` (a dense tensor, possibly batched) and :class:`DeflatedOperator`
(an operator minus a known low-rank part) implement it; :func:`as_operator` converts a
plain tensor at the boundary. :class:`~lowrank_gnn.testing.conformance.OperatorConformance`
is the test suite every implementation passes.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .._validation import broadcast_shape, check_finite, check_floating
from ..linalg.norms import frobenius_norm

#: Random probes for the Hutchinson estimate of ||A||_F^2 on operators without a closed form
#: (relative standard deviation ~ sqrt(2 / probes), ~30% at 16: enough for a normalisation).
FROBENIUS_PROBES = 16


#: Tolerance of a deflation basis's orthonormality, in units of :math:`\sqrt{n}` machine epsilons
#: (:func:`orthonormality_tolerance`). Orthonormal bases measured :math:`\max |V^\top V - I|` of at most
#: :math:`1.9 \sqrt{n}` epsilons (``torch.linalg.qr``, ``eigh`` and ``svd`` vectors and the per-component
#: vectors :math:`D^{1/2} 1_C / \|D^{1/2} 1_C\|`, float32 and float64, ``n`` from 50 to :math:`10^6`,
#: up to 256 columns); 100 leaves a 50-fold margin.
ORTHONORMALITY_TOLERANCE = 100.0


#: Where :meth:`DeflatedOperator.frobenius_norm`'s closed form :math:`s = \|A - P\|_F^2 / \|A\|_F^2`
#: gives way to the Hutchinson estimate: :math:`s \le` this many :math:`\sqrt{n}\, \epsilon\, m` (``m`` the
#: magnitude of the cancelling terms, :math:`1 + (2 \sum_c |\mu_c v_c^T A v_c| + \|\mu\|^2) / \|A\|_F^2`).
#: The closed form's relative error was measured at up to :math:`30 / r` for
#: :math:`r = s / (\sqrt{n}\, \epsilon\, m)` (dense float32 and float64, ``n`` 50 to 3000, 1 and 16 removed
#: vectors, ``A = V diag(mu) V^T + E`` with :math:`\|E\|_F` from :math:`10^{-1}` to :math:`10^{-15}`), and
#: it rounded to zero at :math:`r` up to 22; below 100 the estimate (about 30%) is as good or better.
FROBENIUS_CANCELLATION = 100.0


#: The integer dtype of each floating dtype's width: its bits, compared as integers.
_SAME_WIDTH_INTEGER = {torch.float32: torch.int32, torch.float64: torch.int64}


def symmetry_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance for ``A == A^T``: 100 machine epsilons of ``dtype``.

    Rounding in the normalisation ``D^{-1/2} A D^{-1/2}`` gives asymmetries of a few
    epsilons; 100 leaves room for that and still rejects genuinely directed input.
    """
    return 100.0 * torch.finfo(dtype).eps


def orthonormality_tolerance(n: int, dtype: torch.dtype) -> float:
    r"""Largest :math:`\max_{ij} |(V^\top V - I)_{ij}|` accepted for an orthonormal ``(n, c)`` basis:
    :data:`ORTHONORMALITY_TOLERANCE` :math:`\sqrt{n}` machine epsilons of ``dtype``.

    Rounding in a QR factorisation or a normalisation grows like :math:`\sqrt{n}` epsilons; a basis
    that misses this is not orthonormal, and the closed forms that assume it
    (:meth:`DeflatedOperator.frobenius_norm`) would be wrong.
    """
    return ORTHONORMALITY_TOLERANCE * math.sqrt(max(n, 1)) * torch.finfo(dtype).eps


def check_orthonormal(deviation: float, basis: Tensor, n: int, what: str, fix: str) -> None:
    r"""Raise a ``ValueError`` unless ``deviation`` (:math:`\max |V^\top V - I|` of an ``(n, c)`` basis, given
    by ``basis``'s entries) is within :func:`orthonormality_tolerance`: the NaN/Inf error of
    :func:`check_finite` where an entry is not finite, else one naming ``what`` and saying how to ``fix`` it."""
    if not math.isfinite(deviation):
        check_finite(what, basis.detach())
    dtype = basis.dtype
    tolerance = orthonormality_tolerance(n, dtype)
    if not deviation <= tolerance:
        raise ValueError(f"{what}: the vectors are not orthonormal (max |V^T V - I| = {deviation:.3g} > "
                         f"{tolerance:.3g}, {ORTHONORMALITY_TOLERANCE:g} sqrt(n) machine epsilons of {dtype} at "
                         f"n={n}); {fix}")


def check_operand(x: Tensor, n: int, batch: Optional[Tuple[int, ...]] = None) -> None:
    """``x`` for ``A @ x``: a float32/float64 tensor of shape ``(n,)`` or ``(n, d)``, or, for a dense ``A`` of
    shape ``(*batch, n, n)`` (``batch`` given), ``(*b, n, d)`` with ``b`` broadcasting against ``batch``. O(1)."""
    check_floating("x", x)
    rows = x.shape[0] if x.dim() == 1 else (x.shape[-2] if x.dim() else None)
    if rows != n or (x.dim() > 2 and batch is None):
        allowed = "(n,) or (n, d)" if batch is None else "(n,), (n, d) or (*batch, n, d)"
        raise ValueError(f"x must have shape {allowed} with n={n} (got x.shape={tuple(x.shape)})")
    if x.dim() > 2 and batch is not None and broadcast_shape(x.shape[:-2], batch) is None:
        raise ValueError(f"x's batch {tuple(x.shape[:-2])} does not broadcast against the operator's batch "
                         f"{tuple(batch)} (got x.shape={tuple(x.shape)})")


class Operator(ABC):
    r"""The interface every eigen backend consumes: a square matrix (or a batch of them) that
    it applies by :meth:`matmul`.

    A subclass implements :attr:`shape`, :attr:`dtype`, :attr:`device`, :meth:`matmul`,
    :meth:`to_dense`, :attr:`symmetric` and :meth:`check_finite`; it overrides
    :meth:`frobenius_norm` where a closed form exists (the default is a Hutchinson
    estimate) and :meth:`to_scipy` where ARPACK can use it (the default raises).
    :class:`~lowrank_gnn.testing.conformance.OperatorConformance` checks an implementation
    against a float64 dense reference.

    Shapes:
        the operator ``(*batch, n, n)``; :meth:`matmul` maps ``(*batch, n, d)`` to
        ``(*batch, n, d)`` (a row-distributed operator: this rank's rows of both).
    """

    @property
    @abstractmethod
    def shape(self) -> torch.Size:
        """``(*batch, n, n)``."""

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """The dtype of :meth:`matmul`'s result."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the operator's data lives."""

    @abstractmethod
    def matmul(self, x: Tensor) -> Tensor:
        """``A @ x``, differentiable in ``x`` and in the operator's own tensors."""

    @abstractmethod
    def to_dense(self) -> Tensor:
        """The matrix ``(*batch, n, n)`` (or a ``ValueError`` saying why there is none)."""

    @property
    @abstractmethod
    def symmetric(self) -> bool:
        """Whether ``A == A^T`` to :func:`symmetry_tolerance` of the dtype."""

    @abstractmethod
    def check_finite(self) -> None:
        """Raise a ``ValueError`` naming the input if any entry is NaN or Inf."""

    @torch.no_grad()
    def frobenius_norm(self) -> Tensor:
        r""":math:`\|A\|_F` per batch entry, detached: here a Hutchinson estimate
        :math:`(E\|A z\|^2)^{1/2}` with :data:`FROBENIUS_PROBES` fixed Rademacher probes.

        Shapes:
            returns ``(*batch,)``.
        """
        n = self.shape[-1]
        generator = torch.Generator().manual_seed(0)
        probes = torch.randint(0, 2, (*self.shape[:-2], n, FROBENIUS_PROBES), generator=generator)
        probes = (2 * probes - 1).to(dtype=self.dtype, device=self.device)
        return frobenius_norm(self.matmul(probes)) / FROBENIUS_PROBES ** 0.5

    def to_scipy(self):
        """A SciPy matrix or ``LinearOperator`` (float64, detached) for ARPACK."""
        raise ValueError(f"{type(self).__name__} has no SciPy form, so ARPACK (method='sparse' of the exact and "
                         f"stable backends) cannot use it; use method='dense' or another backend")


class DenseOperator(Operator):
    """A dense square matrix or batch of matrices, shape ``(*batch, n, n)``."""

    def __init__(self, matrix: Tensor) -> None:
        if not isinstance(matrix, Tensor):
            raise TypeError(f"matrix must be a torch.Tensor (got {type(matrix).__name__})")
        check_floating("matrix", matrix)
        if matrix.dim() < 2 or matrix.shape[-1] != matrix.shape[-2]:
            raise ValueError(f"matrix must have shape (*batch, n, n) (got shape {tuple(matrix.shape)})")
        self.matrix = matrix
        self._checked_matrix: tuple[int, int] | None = None
        self._clear_checks()

    def _clear_checks(self) -> None:
        self._symmetric: bool | None = None
        self._exactly_symmetric = False
        self._bitwise_symmetric = False
        self._largest_magnitude: Tensor | None = None
        self._asymmetry: Tensor | None = None
        self._exact_check: bool | None = None

    def _matrix_unchanged(self) -> bool:
        """Whether :attr:`matrix` is the tensor, at the version, that the cached checks were computed on.

        The checks (finite, symmetric) are computed once and reused; an in-place edit of ``matrix``
        (its version counter moves) or a new tensor assigned to it clears them. Writes that bypass
        the version counter (through ``.data`` or a NumPy view) are not seen, as by autograd.
        """
        key = (id(self.matrix), self.matrix._version)
        if self._checked_matrix != key:
            self._clear_checks()
            self._checked_matrix = key
            return False
        return True

    @property
    def shape(self) -> torch.Size:
        return self.matrix.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def matmul(self, x: Tensor) -> Tensor:
        """``A @ x`` for ``x`` of shape ``(n,)``, ``(n, d)`` or ``(*batch, n, d)``, cast to the operator's dtype
        (as :meth:`GraphOperator.matmul <lowrank_gnn.operators.GraphOperator.matmul>` does)."""
        check_operand(x, self.matrix.shape[-1], tuple(self.matrix.shape[:-2]))
        return self.matrix @ x.to(self.matrix.dtype)

    def to_dense(self) -> Tensor:
        return self.matrix

    @torch.no_grad()
    def frobenius_norm(self) -> Tensor:
        """Exact: the norm of the entries (no overflow or underflow in the squares). Shape ``(*batch,)``."""
        return frobenius_norm(self.matrix)

    def largest_magnitude(self) -> Tensor:
        """``max |a_ij|`` over the whole (batch of) matrices, a 0-dim tensor; NaN or Inf if an entry is.

        One pass, computed once and shared by :meth:`check_finite` and :attr:`symmetric` where the
        asymmetry pass alone does not already prove the matrix finite and exactly symmetric.
        """
        if not self._matrix_unchanged() or self._largest_magnitude is None:
            a = self.matrix.detach()
            if a.numel() == 0:
                self._largest_magnitude = a.new_zeros(())
            else:
                low, high = torch.aminmax(a)   # propagates NaN; an Inf entry gives an infinite extreme
                self._largest_magnitude = torch.maximum(high, -low)
        return self._largest_magnitude

    def _asymmetry_extremes(self) -> Tensor:
        """``(min, max)`` of the entries of :math:`A - A^T` as one ``(2,)`` tensor (one pass, no ``|.|`` copy)."""
        if not self._matrix_unchanged() or self._asymmetry is None:
            a = self.matrix.detach()
            self._asymmetry = torch.stack(torch.aminmax(a - a.mT)) if a.numel() else a.new_zeros(2)
        return self._asymmetry

    def _finite_and_exactly_symmetric(self) -> bool:
        """Whether ``A == A^T`` entry by entry and every entry is finite (then cached).

        Passes that allocate nothing: ``A`` against ``A^T`` bit for bit (their bits compared as integers,
        a little faster than as floats), only where that fails as floats (``-0.0 == 0.0``; false when an
        entry is NaN), and the sum of the entries, finite only if every entry is (an infinite entry makes
        it infinite or NaN). Either one failing (or a finite sum that overflows) leaves the decision to the
        exact checks, :meth:`largest_magnitude` and :meth:`_asymmetry_extremes`.
        """
        if not self._matrix_unchanged() or self._exact_check is None:
            a = self.matrix.detach()
            bits = a.view(_SAME_WIDTH_INTEGER[a.dtype])
            self._bitwise_symmetric = not a.numel() or torch.equal(bits, bits.mT)
            self._exact_check = not a.numel() or (
                (self._bitwise_symmetric or torch.equal(a, a.mT)) and bool(torch.isfinite(a.sum())))
            if self._exact_check:
                self._symmetric, self._exactly_symmetric = True, True
        return self._exact_check

    def check_finite(self) -> None:
        if self._finite_and_exactly_symmetric() or bool(torch.isfinite(self.largest_magnitude())):
            return
        bad = ~torch.isfinite(self.matrix.detach())
        if bool(bad.any()):
            where = tuple(int(i) for i in bad.nonzero()[0])
            batch = f" in matrix {where[:-2]} of the batch" if len(where) > 2 else ""
            raise ValueError(f"the operator contains NaN or Inf{batch} (first at entry {where[-2:]}); "
                             f"clean the input first")

    @property
    def symmetric(self) -> bool:
        if not self._matrix_unchanged() or self._symmetric is None:
            if self._finite_and_exactly_symmetric():   # the usual (A + A.mT) / 2, and an empty batch
                return True
            low, high = self._asymmetry_extremes()
            asymmetry = torch.maximum(high, -low)
            scale = self.largest_magnitude().clamp_min(torch.finfo(self.dtype).tiny)
            self._symmetric = bool(asymmetry <= symmetry_tolerance(self.dtype) * scale)
            self._exactly_symmetric = bool(asymmetry == 0)
        return self._symmetric

    def symmetrized(self, column_major: bool = False) -> Tensor:
        r"""The symmetric part :math:`(A + A^\top)/2`.

        The matrix itself, without a copy, when the symmetry check has already found it exactly
        symmetric (the two are then equal) and it needs no gradient (the gradient of the
        symmetric part is the symmetrised one).

        Args:
            column_major (bool): return the symmetric part stored column by column where a transpose
                view gives it: :math:`A^\top` of a row-major :math:`A` found equal to it bit for bit,
                or the transpose of the computed :math:`(A + A^\top)/2`, which equals it bit for bit.
                The entries are the same; ``torch.linalg.eigh`` reads its input column by column and
                then copies it without transposing. (default: ``False``)
        """
        if self._matrix_unchanged() and self._exactly_symmetric and not self.matrix.requires_grad:
            return _column_major(self.matrix) if column_major and self._bitwise_symmetric else self.matrix
        symmetric = (self.matrix + self.matrix.mT) / 2
        return _column_major(symmetric) if column_major else symmetric

    def to_scipy(self) -> np.ndarray:
        if self.matrix.dim() != 2:
            raise ValueError("to_scipy() needs an unbatched operator of shape (n, n)")
        return self.matrix.detach().cpu().double().numpy()


def _column_major(symmetric: Tensor) -> Tensor:
    """``symmetric``, or its transpose (a view), whichever is stored column by column; for a matrix equal
    to its transpose bit for bit."""
    return symmetric if symmetric.stride(-2) == 1 else symmetric.mT


class DeflatedOperatorBase(Operator):
    r"""``A - P``: an operator with a known symmetric part :math:`P` removed, applied by :meth:`project`.

    Shape, dtype, device and symmetry are those of ``A`` (:attr:`base`); a subclass says
    what :math:`P` is (:meth:`project`) and how to form the rest of the protocol.
    :class:`DeflatedOperator` (a dense orthonormal basis),
    :class:`~lowrank_gnn.operators.ComponentDeflatedOperator` (one vector per connected
    component) and the row-distributed
    :class:`~lowrank_gnn.distributed.PartitionedComponentDeflatedOperator` implement it; a layer
    adds the removed part back exactly with :meth:`project`.

    Args:
        base (Operator): the operator ``A``.
    """

    def __init__(self, base: Operator) -> None:
        self.base = base

    @property
    def shape(self) -> torch.Size:
        return self.base.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def symmetric(self) -> bool:
        return self.base.symmetric

    @abstractmethod
    def project(self, x: Tensor) -> Tensor:
        """``P x``: the removed part applied to ``x`` (same shape as ``x``)."""

    def matmul(self, x: Tensor) -> Tensor:
        out = self.base.matmul(x)   # checks x
        return out - self.project(x.to(out.dtype))


class DeflatedOperator(DeflatedOperatorBase):
    r"""``A - V diag(mu) V^T``: an operator with a known part of its spectrum removed.

    Used to remove eigenpairs that are known in closed form, e.g. the eigenvalue-1
    eigenvectors ``D^{1/2} 1_C`` of a normalized adjacency, one per connected component
    (see :func:`~lowrank_gnn.operators.component_eigenvectors`), so that a top-``k``
    solve returns the informative part of the spectrum instead of an arbitrary basis of a
    highly repeated eigenvalue.

    The constructor checks that ``V`` is orthonormal, :math:`\max |V^\top V - I|` within
    :func:`orthonormality_tolerance` (:math:`100 \sqrt{n}` machine epsilons; the ``c x c`` Gram matrix
    in float64, one host sync), and raises a ``ValueError`` otherwise: :meth:`frobenius_norm`'s closed
    form, which the eigen backends' residuals and scales rely on, holds for orthonormal ``V`` only.

    Args:
        base (Operator or Tensor): the operator ``A`` (a dense tensor is wrapped by :func:`as_operator`).
        basis (Tensor): ``V``, orthonormal columns, of ``A``'s dtype and device (orthonormalise
            other columns first, e.g. ``torch.linalg.qr(basis).Q``).
        values (Tensor): ``mu``, the eigenvalues of ``A`` that belong to ``V``, of ``A``'s dtype and device.

    Shapes:
        basis ``(n, c)``, values ``(c,)``.
    """

    def __init__(self, base: Operator, basis: Tensor, values: Tensor) -> None:
        base = as_operator(base)
        check_floating("basis", basis)
        check_floating("values", values)
        for name, tensor in (("basis", basis), ("values", values)):
            if tensor.dtype != base.dtype or tensor.device != base.device:
                raise TypeError(f"{name} has dtype {tensor.dtype} on {tensor.device}, but the base operator has "
                                f"dtype {base.dtype} on {base.device}; pass {name}.to({base.dtype}) (and "
                                f".to({str(base.device)!r}))")
        if basis.dim() != 2 or basis.shape[0] != base.shape[-1]:
            raise ValueError(f"basis must have shape (n, c) with n={base.shape[-1]} "
                             f"(got shape {tuple(basis.shape)})")
        if values.shape != basis.shape[1:]:
            raise ValueError(f"values must have shape ({basis.shape[1]},) (got {tuple(values.shape)})")
        _check_orthonormal_basis(basis)
        super().__init__(base)
        self._basis = basis
        self._values = values

    @property
    def basis(self) -> Tensor:
        """``V``, ``(n, c)``."""
        return self._basis

    @property
    def values(self) -> Tensor:
        """``mu``, ``(c,)``."""
        return self._values

    def check_finite(self) -> None:
        self.base.check_finite()
        check_finite("basis", self.basis.detach())
        check_finite("values", self.values.detach())

    def project(self, x: Tensor) -> Tensor:
        """``V diag(mu) V^T x``: the removed part applied to ``x``."""
        columns = x.unsqueeze(-1) if x.dim() == 1 else x
        out = self.basis @ (self.values.unsqueeze(-1) * (self.basis.mT @ columns))
        return out.squeeze(-1) if x.dim() == 1 else out

    def basis_rayleigh_quotients(self) -> Tensor:
        """``v_c^T A v_c`` for every basis vector (e.g. for ``||A - V diag(mu) V^T||_F``). Shape ``(c,)``."""
        return (self.basis * self.base.matmul(self.basis)).sum(-2)

    @torch.no_grad()
    def frobenius_norm(self) -> Tensor:
        r"""Exact for orthonormal ``V``: :math:`\|A\|_F^2 - 2 \sum_c \mu_c v_c^T A v_c + \|\mu\|^2`
        (one product with ``V``, ``O(nnz)`` for per-component deflation).

        The sum cancels when the removed part is nearly all of ``A`` (a clique with self-loops
        deflated, or ``A = V diag(mu) V^T + E`` with a small ``E``), and rounding can take it to zero
        for a nonzero operator. Where it has lost its accuracy (the squared norm below
        :data:`FROBENIUS_CANCELLATION` :math:`\sqrt{n}\, \epsilon` times the cancelling terms) the norm
        is instead the Hutchinson estimate of :meth:`Operator.frobenius_norm`, from products with the
        operator itself, so a nonzero operator does not read as zero (one host sync to decide).
        """
        cross = self.basis_rayleigh_quotients()
        base = self.base.frobenius_norm()
        scale = base.clamp_min(torch.finfo(base.dtype).tiny)  # in units of ||A||_F: no overflow in the squares
        removed = (self.values / scale.unsqueeze(-1)).square().sum(-1)
        weighted = self.values * cross / scale.unsqueeze(-1) / scale.unsqueeze(-1)
        squared = 1 - 2 * weighted.sum(-1) + removed
        terms = 1 + 2 * weighted.abs().sum(-1) + removed
        rounding = FROBENIUS_CANCELLATION * self.shape[-1] ** 0.5 * torch.finfo(squared.dtype).eps
        cancelled = ~(squared > rounding * terms)
        norm = squared.clamp_min(0).sqrt() * scale
        if bool(cancelled.any()):
            return torch.where(cancelled, super().frobenius_norm(), norm)
        return norm

    def to_dense(self) -> Tensor:
        return self.base.to_dense() - (self.basis * self.values) @ self.basis.mT

    def to_scipy(self):
        from scipy.sparse.linalg import LinearOperator

        base = self.base.to_scipy()
        v = self.basis.detach().cpu().double().numpy()
        mu = self.values.detach().cpu().double().numpy()
        n = v.shape[0]

        def apply(x: np.ndarray) -> np.ndarray:
            columns = x.reshape(n, -1)
            return (base @ columns - v @ (mu[:, None] * (v.T @ columns))).reshape(x.shape)

        return LinearOperator((n, n), matvec=apply, matmat=apply, dtype=np.float64)


def _check_orthonormal_basis(basis: Tensor) -> None:
    """:func:`check_orthonormal` for a :class:`DeflatedOperator` basis ``(n, c)``: its Gram matrix in float64."""
    n, c = basis.shape
    if not c:
        return
    columns = basis.detach().to(torch.float64)
    gram = columns.mT @ columns
    deviation = float((gram - torch.eye(c, dtype=gram.dtype, device=gram.device)).abs().max())  # one sync
    check_orthonormal(deviation, basis, n, "basis",
                      "orthonormalise it first, e.g. basis = torch.linalg.qr(basis).Q (eigenvectors of distinct "
                      "eigenvalues keep their values: QR only normalises orthogonal columns)")


def as_operator(op) -> Operator:
    """Wrap a dense tensor as a :class:`DenseOperator`; pass an :class:`Operator` through."""
    if isinstance(op, Tensor):
        return DenseOperator(op)
    if isinstance(op, Operator):
        return op
    raise TypeError("expected a dense tensor of shape (*batch, n, n) or an operator from "
                    "lowrank_gnn.operators (e.g. normalized_adjacency(edge_index); a custom operator subclasses "
                    f"lowrank_gnn.operators.Operator); got {type(op).__name__}")
