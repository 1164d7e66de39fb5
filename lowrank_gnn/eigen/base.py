"""The eigen-backend interface shared by every solver.

Conventions, identical for every backend:

* **Order.** ``which="largest"``: eigenvalues in descending order; ``"smallest"``:
  ascending; ``"magnitude"``: descending ``|lambda|``, and for equal magnitudes (equal to
  :data:`MAGNITUDE_TIE_EPS` epsilons of the largest, so that rounding does not decide) the
  positive eigenvalue first.
* **Signs.** Each eigenvector is flipped so that its first *significant* entry is
  positive, where significant means ``|u_i| >= 0.1 * max_j |u_j|`` (:func:`canonical_signs`).
  Unlike "largest entry positive", this does not depend on rounding when two entries have
  the same magnitude (as on symmetric graphs). Within an exactly repeated eigenvalue the
  eigenvectors are not unique; only their span is, and only if the block is not cut by ``k``.
* **Shapes.** eigenvalues ``(*batch, k)``, eigenvectors ``(*batch, n, k)``.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from .._validation import broadcasts_to, check_choice, check_k, check_positive_int
from ..operators.base import Operator, as_operator

WHICH = ("largest", "smallest", "magnitude")

#: How to do without a second derivative through an eigen backend's (first-order) backward.
SECOND_DERIVATIVE_FIX = ("for higher derivatives on matrices with simple eigenvalues use torch.linalg.eigh itself "
                         "(all n pairs), or detach the operator in the term that is differentiated twice")

#: ``which="magnitude"``: magnitudes within this many machine epsilons (relative to the largest)
#: are a tie, broken "positive first" (the rounding of an eigensolver is a few epsilons).
MAGNITUDE_TIE_EPS = 64

#: Entries below this fraction of a vector's largest magnitude never decide its sign.
SIGN_PIVOT_FRACTION = 0.1


class EigenPairs(NamedTuple):
    """The result of an eigen backend.

    Attributes:
        eigenvalues (Tensor): ``(*batch, k)``, in the backend's ``which`` order.
        eigenvectors (Tensor): ``(*batch, n, k)``, orthonormal columns, canonical signs.
        aux_loss (Tensor, optional): a scalar to add to the training loss (backends that
            learn their eigenvectors, e.g. ``amortized``), else ``None``.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    aux_loss: Optional[Tensor] = None


#: Rows searched first for each column's pivot in a column longer than :data:`SIGN_WHOLE_COLUMN_ROWS`
#: (the first significant entry is almost always among them); columns that have none there are
#: searched further (each on its own, or, in a tall block of graph eigenvectors, whose localised
#: columns often miss the head, the whole block at once).
SIGN_PIVOT_PREFIX = 8

#: Columns of at most this many rows are searched whole at once (no head, no second search).
SIGN_WHOLE_COLUMN_ROWS = 16


def canonical_signs(vectors: Tensor) -> Tensor:
    """Flip each column so that its first entry with ``|u_i| >= 0.1 max|u|`` is positive.

    Costs one reduction over each column (its largest magnitude), a search of its first rows
    (all of a column of at most :data:`SIGN_WHOLE_COLUMN_ROWS`, else the first
    :data:`SIGN_PIVOT_PREFIX`) and one multiplication; a column with no significant entry there
    is searched whole on its own. A tall block (``n > 16 k``, graph eigenvectors, whose localised
    columns mostly miss the head) is searched whole at once instead, with two maxima over its
    rows (:func:`_first_significant_rows`). A zero column is kept.
    Differentiable (the signs are constants).
    Shapes: ``(*batch, n, k)`` in and out.
    """
    _check_vectors("vectors", vectors)
    return vectors * sign_factors(vectors)


def sign_factors(vectors: Tensor) -> Tensor:
    """The ``+-1`` factors :func:`canonical_signs` multiplies the columns by, shape ``(*batch, 1, k)``.

    Detached; a caller that already owns a fresh copy of ``vectors`` can apply them in place.
    """
    detached = vectors.detach()
    if detached.numel() == 0:
        return detached.new_ones(*detached.shape[:-2], 1, detached.shape[-1])
    if detached.shape[-2] > 16 * detached.shape[-1]:    # tall (graph eigenvectors): the whole block at once
        sign = torch.sign(detached.gather(-2, _first_significant_rows(detached.abs())))
        return sign.masked_fill_(sign == 0, 1)          # a zero column is kept (sign is a fresh tensor)
    return _head_pivot_factors(detached)


def pivot_sign_factors(vectors: Tensor, pivots: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """:func:`sign_factors` of a tall ``(n, k)`` block, and each column's pivot (first significant) row;
    ``pivots`` (``(k,)``, a previous block's) are reused where they still are the pivots.

    A basis tracked over training keeps its pivot rows from step to step. Checking that they
    still are the first rows with ``|u| >= 0.1 max|u|`` needs no search: the column maxima and
    minima of the row segments between the sorted pivots (maxima over rows, no ``|u|`` copy)
    give each column's ``max|u|`` and the largest ``|u|`` above its pivot, and the pivot entry
    is read. Exact: where any check fails, the whole block is searched (the result is the same
    as :func:`sign_factors`' either way). Blocks that are not tall, or batched, get
    :func:`sign_factors` and ``None``.

    Shapes:
        vectors ``(n, k)``; returns ``(1, k)`` factors and ``(k,)`` pivot rows (or ``None``).
    """
    detached = vectors.detach()
    n, k = detached.shape[-2:]
    if detached.dim() != 2 or not detached.numel() or n <= 16 * k:
        return sign_factors(detached), None
    columns = torch.arange(k, device=detached.device)
    if pivots is not None and pivots.shape == (k,) and pivots.device == detached.device:
        rank = torch.argsort(pivots, stable=True)
        bounds = [0, *pivots[rank].tolist(), n]
        # the largest |u| of the segments between the sorted pivots, cumulated: cumulative[j] covers rows < bounds[j]
        cumulative = [detached.new_zeros(k)]
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            segment = detached[start:stop]
            if stop > start:
                largest = torch.maximum(_column_max(segment), _column_max(segment, torch.amin).neg_()).squeeze(-2)
                cumulative.append(torch.maximum(cumulative[-1], largest))
            else:
                cumulative.append(cumulative[-1])
        table = torch.stack(cumulative)                                 # (k + 2, k)
        threshold = SIGN_PIVOT_FRACTION * table[-1:]                    # as _first_significant_rows computes it
        position = torch.empty_like(rank).scatter_(0, rank, torch.arange(1, k + 1, device=rank.device))
        above = table[position, columns]                                # largest |u| above each column's pivot
        entry = detached[pivots, columns]
        if bool(((above < threshold[0]) & (entry.abs() >= threshold[0])).all()):
            sign = torch.sign(entry).unsqueeze(0)
            return sign.masked_fill_(sign == 0, 1), pivots
    rows = _first_significant_rows(detached.abs())
    sign = torch.sign(detached.gather(-2, rows))
    return sign.masked_fill_(sign == 0, 1), rows.squeeze(-2)


def _head_pivot_factors(detached: Tensor) -> Tensor:
    """:func:`sign_factors` of a block that is not tall: :func:`_short_column_factors` for columns of at
    most :data:`SIGN_WHOLE_COLUMN_ROWS` rows, :func:`_long_column_factors` for longer ones (measured:
    each is the faster one in its range)."""
    if detached.shape[-2] <= SIGN_WHOLE_COLUMN_ROWS:
        return _short_column_factors(detached)
    return _long_column_factors(detached)


def _short_column_factors(detached: Tensor) -> Tensor:
    """Each column's first significant entry, searched in the whole (short) column at once.

    ``|u|`` is copied with the row as the outer dimension, ``(n, columns)``, so that every pass over
    it is long and contiguous (maxima over the rows of a block stored column by column, and
    comparisons that write booleans, run several times slower on the CPU than such passes: measured
    at batch 2048, n = 8 and 16). Marked 1.0 where ``|u_r| >= 0.1 max|u|`` and weighted by
    ``2^(n - 1 - r)``, the rows sum (one matrix-vector product, exact: distinct powers of two below
    ``2^n``, also with TF32 or bf16 inputs and float32 accumulation) to a number whose highest bit
    (read from its exponent) is the first significant row. A threshold of 0 (a zero column, or a
    largest magnitude whose tenth underflows) makes every entry significant: row 0 is the pivot, and
    a zero there keeps the column.
    """
    n, k = detached.shape[-2:]
    batch = detached.shape[:-2]
    # (groups, n, g, k): the rows outermost within groups of g matrices, so that the transposition stays in
    # the cache (twice as fast as one over the whole batch at batch 2048, n = 16)
    count = math.prod(batch)                            # at least 1: sign_factors has returned on empty blocks
    g = min(_TRANSPOSE_GROUP, count & -count)
    groups = detached.reshape(count // g, g, n, k).permute(0, 2, 1, 3)
    absolute = torch.abs(groups, out=detached.new_empty(groups.shape)).reshape(count // g, n, g * k)
    threshold = SIGN_PIVOT_FRACTION * absolute.amax(1)
    marks = absolute.ge_(threshold.unsqueeze(1))        # 1.0 where row r is significant, else 0.0
    if marks.dtype not in _FLOAT_LAYOUT:                # half precision: the marks are exact in float32
        marks = marks.float()
    code = (_rank_weights(n, marks.dtype, marks.device) @ marks).reshape(-1)   # bit n - 1 - r: row r significant
    first = _first_set_row(code, n).clamp_(max=n - 1)  # code 0 (NaN entries only) gives row n - 1
    pivot = detached.gather(-2, first.reshape(batch + (1, k)))
    return pivot.sign_().add_(0.5).sign_()              # -1 where negative, else 1 (-0.0: a zero column)


def _long_column_factors(detached: Tensor) -> Tensor:
    """Each column's first significant entry, searched in its first :data:`SIGN_PIVOT_PREFIX` rows and,
    for the columns without one there, in the whole column.

    ``|u|`` is overwritten in its head rows by ``1.0`` / ``0.0`` (significant or not). A column searched
    further has no significant head entry, so ``0.0`` there still compares as not significant (its
    threshold is positive: with a zero threshold every entry is significant).
    """
    absolute = detached.abs()
    threshold = SIGN_PIVOT_FRACTION * absolute.amax(dim=-2, keepdim=True)   # one reduction over the rows
    significant = absolute[..., :SIGN_PIVOT_PREFIX, :].ge_(threshold)       # in place: no boolean copy
    found, pivot = significant.max(dim=-2, keepdim=True)  # first 1.0 per column (max returns the first maximum)
    sign = torch.sign(detached.gather(-2, pivot))
    if not bool(found.all()):
        # the few columns without a significant entry in the head: search each of them whole
        where = (found == 0).nonzero(as_tuple=True)                     # (*batch, 0, column) coordinates
        index = where[:-2] + (where[-1],)
        columns = absolute.movedim(-1, -2)[index] >= threshold[where].unsqueeze(-1)  # (m, n), missing columns only
        sign[where] = torch.sign(detached.movedim(-1, -2)[index].gather(
            -1, columns.max(dim=-1, keepdim=True).indices)).squeeze(-1)
    return sign.masked_fill_(sign == 0, 1)              # a zero column is kept


#: Matrices whose sign search is transposed together (the largest power of two dividing the batch, at most this).
_TRANSPOSE_GROUP = 64


@functools.lru_cache(maxsize=None)
def _rank_weights(h: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``2^(h - 1 - r)`` for ``r < h`` (exact; made once per size, dtype and device, never written to)."""
    return torch.tensor([2.0 ** (h - 1 - r) for r in range(h)], dtype=dtype, device=device)


#: Per floating dtype: the integer of its width, its mantissa bits and its exponent bias.
_FLOAT_LAYOUT = {torch.float32: (torch.int32, 23, 127), torch.float64: (torch.int64, 52, 1023)}


def _first_set_row(code: Tensor, h: int) -> Tensor:
    """``h - 1 - floor(log2(code))`` of positive integers stored as floats, exactly (read from the
    exponent bits), as ``int64``: the row of the highest bit set by the weights ``2^(h - 1 - r)``."""
    integer, mantissa, bias = _FLOAT_LAYOUT[code.dtype]
    return torch.rsub(code.view(integer).bitwise_right_shift(mantissa).long(), h - 1 + bias)


def _first_significant_rows(absolute: Tensor) -> Tensor:
    """Per column of a tall block ``|u|`` ``(*batch, n, k)``: the first row with ``|u| >= 0.1 max|u|``.

    Returns ``(*batch, 1, k)`` row indices. ``absolute`` is a scratch copy, overwritten.

    Only elementwise passes and maxima over rows (:func:`_column_max`), which are several times
    faster on the CPU than a search that returns indices (``max(dim).indices`` or ``argmax``
    over the rows of a block with few columns, both measured): with ``m = 0.1 max |u|`` per
    column, the entries ``[|u_r| >= m] (n - r)`` have their maximum ``n - r`` at the first
    significant row ``r``. The ranks ``n - r`` are exact in the block's dtype up to
    ``n = 2 / eps`` (float32: 16.7 million rows); beyond, the key is formed in float64.
    A zero column gives row 0.
    """
    n = absolute.shape[-2]
    threshold = SIGN_PIVOT_FRACTION * _column_max(absolute)
    if n <= 2 / torch.finfo(absolute.dtype).eps:
        key = absolute.ge_(threshold)                   # 1.0 / 0.0 in place: |u| is a scratch copy
    else:
        key = (absolute >= threshold).to(torch.float64)
    key.mul_(torch.arange(n, 0, -1, dtype=key.dtype, device=key.device).unsqueeze(-1))
    return (n - _column_max(key)).long().clamp_(0, n - 1)


#: Rows folded into one row of the reshaped block that :func:`_column_max` reduces.
COLUMN_MAX_FOLD = 128


def _column_max(values: Tensor, reduce=torch.amax) -> Tensor:
    """``values.amax(dim=-2, keepdim=True)`` of a tall ``(*batch, n, k)`` tensor, bit for bit, faster
    (``reduce=torch.amin``: the minimum).

    A reduction over the rows of a row-major block with few columns runs one short row at a
    time; viewing :data:`COLUMN_MAX_FOLD` consecutive rows as one row of ``COLUMN_MAX_FOLD * k``
    entries reduces long contiguous rows instead (about twice as fast at ``169,343 x 16``), and a
    second, small reduction folds the result back to ``k`` columns. The maximum is exact, so
    the order of the comparisons does not change it.
    """
    n, k = values.shape[-2:]
    whole = n // COLUMN_MAX_FOLD * COLUMN_MAX_FOLD
    if whole == 0 or not values.is_contiguous():
        return reduce(values, dim=-2, keepdim=True)
    batch = values.shape[:-2]
    folded = values[..., :whole, :].reshape(*batch, whole // COLUMN_MAX_FOLD, COLUMN_MAX_FOLD * k)
    largest = reduce(reduce(folded, dim=-2).reshape(*batch, COLUMN_MAX_FOLD, k), dim=-2, keepdim=True)
    if whole < n:
        rest = reduce(values[..., whole:, :], dim=-2, keepdim=True)
        largest = torch.maximum(largest, rest) if reduce is torch.amax else torch.minimum(largest, rest)
    return largest


def order_indices(eigenvalues: Tensor, which: str) -> Tensor:
    """Indices that put ``eigenvalues (*batch, m)`` in the documented ``which`` order."""
    check_choice("which", which, WHICH)
    if which == "largest":
        return torch.argsort(eigenvalues, dim=-1, descending=True, stable=True)
    if which == "smallest":
        return torch.argsort(eigenvalues, dim=-1, stable=True)
    # magnitude: descending |value|, where magnitudes within MAGNITUDE_TIE_EPS epsilons (of the
    # largest) count as equal, and equal ones go in descending value order (+a before -a): computed
    # eigenvalues of a +-a pair differ in magnitude by rounding, which must not decide the order.
    magnitude = eigenvalues.abs()
    by_magnitude = torch.argsort(magnitude, dim=-1, descending=True, stable=True)
    ordered = magnitude.gather(-1, by_magnitude)
    tolerance = MAGNITUDE_TIE_EPS * torch.finfo(eigenvalues.dtype).eps * ordered[..., :1]
    step = (ordered[..., :-1] - ordered[..., 1:]) > tolerance              # a new magnitude starts here
    group = torch.cat([torch.zeros_like(by_magnitude[..., :1]), step.long().cumsum(-1)], dim=-1)
    group = torch.empty_like(group).scatter_(-1, by_magnitude, group)    # group of each eigenvalue
    by_value = torch.argsort(eigenvalues, dim=-1, descending=True, stable=True)
    return by_value.gather(-1, torch.argsort(group.gather(-1, by_value), dim=-1, stable=True))


def select_eigenpairs(eigenvalues: Tensor, eigenvectors: Tensor, k: int, which: str,
                      signs: Callable[[Tensor], Tensor] = canonical_signs) -> Tuple[Tensor, Tensor]:
    """The first ``k`` pairs in ``which`` order, with canonical signs.

    ``which`` must be one of :data:`WHICH`, ``1 <= k <= m``, and each eigenvalue pairs with one
    column (checked from the shapes, O(1)); otherwise a ``ValueError`` says which.

    Args:
        signs (callable): the sign convention applied to the selected columns; a row-distributed
            backend passes the one that searches the pivot across ranks. (default: :func:`canonical_signs`)

    Shapes:
        eigenvalues ``(*batch, m)`` (or a batch shape that broadcasts to the eigenvectors', e.g. one
        shared ``(m,)``), eigenvectors ``(*batch, n, m)`` in; ``(*batch, k)``, ``(*batch, n, k)`` out.
    """
    check_choice("which", which, WHICH)
    _check_vectors("eigenvectors", eigenvectors)
    if not isinstance(eigenvalues, Tensor):
        raise TypeError(f"eigenvalues must be a torch.Tensor of shape (*batch, m) (got {type(eigenvalues).__name__})")
    m = eigenvalues.shape[-1] if eigenvalues.dim() else -1
    if eigenvectors.shape[-1] != m or not broadcasts_to(eigenvalues.shape[:-1], eigenvectors.shape[:-2]):
        raise ValueError(f"eigenvalues (*batch, m) and eigenvectors (*batch, n, m) must pair one value with each "
                         f"column (got eigenvalues.shape={tuple(eigenvalues.shape)}, "
                         f"eigenvectors.shape={tuple(eigenvectors.shape)})")
    check_k(k, m, what="the number of eigenpairs m")
    order = _monotone_order(eigenvalues, which)
    if signs is canonical_signs and eigenvectors.stride(-2) == 1 and order != "sort":   # LAPACK's layout
        # each eigenvector is a contiguous row of eigenvectors.mT: the kept ones are copied whole (reversed
        # by index_select, which reads every row forwards), signed in place, and stay stored column by column
        if order == "same":   # already in order (a tracked basis, an ascending solver for "smallest")
            values = eigenvalues[..., :k]
            rows = eigenvectors.mT[..., :k, :].clone(memory_format=torch.contiguous_format)
        else:                 # an ascending solver's output for "largest"
            index = torch.arange(m - 1, m - k - 1, -1, device=eigenvalues.device)
            values, rows = eigenvalues.index_select(-1, index), eigenvectors.mT.index_select(-2, index)
        return values, rows.mul_(sign_factors(rows.mT).mT).mT
    if order == "same":
        return eigenvalues[..., :k], signs(eigenvectors[..., :k])
    if order == "reversed":
        values, vectors = eigenvalues[..., m - k:].flip(-1), eigenvectors[..., m - k:].flip(-1)
    else:
        index = order_indices(eigenvalues, which)[..., :k]
        values = eigenvalues.gather(-1, index)
        vectors = (eigenvectors.index_select(-1, index) if index.dim() == 1  # one matrix: a cheaper column gather
                   else eigenvectors.gather(-1, index.unsqueeze(-2).expand(*eigenvectors.shape[:-1], k)))
    if signs is canonical_signs:  # a fresh copy: signed in place, where a sign changes at all
        factors = sign_factors(vectors)
        return values, vectors.mul_(factors) if bool((factors < 0).any()) else vectors
    return values, signs(vectors)


def _monotone_order(eigenvalues: Tensor, which: str) -> str:
    """``"same"`` or ``"reversed"`` when ``which`` order is the given or the reversed one (strictly
    monotone values, so the stable sort of :func:`order_indices` is unique), else ``"sort"``.

    Two comparisons of neighbours instead of a sort; ``"magnitude"`` always sorts.
    """
    if which == "magnitude":
        return "sort"
    if eigenvalues.shape[-1] < 2:
        return "same"
    ascending = bool((eigenvalues[..., 1:] > eigenvalues[..., :-1]).all())
    if ascending:
        return "same" if which == "smallest" else "reversed"
    if bool((eigenvalues[..., 1:] < eigenvalues[..., :-1]).all()):
        return "same" if which == "largest" else "reversed"
    return "sort"


def _check_vectors(name: str, vectors: Tensor) -> None:
    """A tensor of column vectors ``(*batch, n, k)`` (its shape only: O(1))."""
    if not isinstance(vectors, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (*batch, n, k) (got {type(vectors).__name__})")
    if vectors.dim() < 2:
        raise ValueError(f"{name} must have shape (*batch, n, k), one vector per column (got {name}.shape="
                         f"{tuple(vectors.shape)}); pass {name}.unsqueeze(-1) for a single vector")


class EigenBackend(nn.Module):
    """Base class: ``k`` eigenpairs of a symmetric operator, selected by ``which``.

    Subclasses implement :meth:`solve`; :meth:`forward` converts and validates the input
    once (operator type, ``k`` in range, symmetry, NaN/Inf) so every backend rejects bad
    input the same way. A backend is an ``nn.Module`` so that learnable state (e.g. the
    amortized basis) moves with ``.to()``, is saved in ``state_dict()`` and is seen by
    the optimizer.

    Args:
        k (int): number of eigenpairs.
        which (str): ``"largest"``, ``"smallest"`` or ``"magnitude"``. (default: ``"largest"``)
    """

    def __init__(self, k: int, which: str = "largest") -> None:
        super().__init__()
        self.k = check_positive_int("k", k)
        self.which = check_choice("which", which, WHICH)

    @property
    def learns_state(self) -> bool:
        """Whether the backend holds parameters trained with the model (the amortized basis): its pairs
        are then tracked across calls, not a solve of each call's operator, so a cache, a dataset
        precompute or a per-batch pool of unrelated graphs cannot use it."""
        return any(True for _ in self.parameters())

    def forward(self, op) -> EigenPairs:
        """Shapes: ``op`` is ``(*batch, n, n)``; see :class:`EigenPairs` for the output."""
        op = as_operator(op)
        check_k(self.k, op.shape[-1], what="n")
        op.check_finite()
        if not op.symmetric:
            raise ValueError(f"{type(self).__name__} needs a symmetric operator, and this one is not "
                             "(A != A^T beyond rounding). For a dense matrix pass (A + A.mT) / 2; "
                             "for a directed graph symmetrise edge_index first, e.g. "
                             "torch_geometric.utils.to_undirected(edge_index, edge_weight, reduce='mean')")
        return self.solve(op)

    def solve(self, op: Operator) -> EigenPairs:  # pragma: no cover - abstract
        r"""The ``k`` eigenpairs of ``op`` selected by ``which``: what every backend implements.

        **Input.** An :class:`~lowrank_gnn.operators.Operator` that :meth:`forward` has already
        validated: ``k <= n``, finite, symmetric (:attr:`~lowrank_gnn.operators.Operator.symmetric`).
        Call the backend (``backend(op)``), not ``solve``, so that bad input is rejected the same
        way by every backend. A backend reads the operator only through the protocol
        (:meth:`~lowrank_gnn.operators.Operator.matmul`, and :meth:`~lowrank_gnn.operators.Operator.to_dense`
        or :meth:`~lowrank_gnn.operators.Operator.to_scipy` where it needs the matrix).

        **Output.** :class:`EigenPairs` with

        * ``eigenvalues`` ``(*batch, k)`` in ``which`` order (``"largest"``: descending;
          ``"smallest"``: ascending; ``"magnitude"``: descending :math:`|\lambda|`, the positive
          one first on ties; :func:`order_indices`);
        * ``eigenvectors`` ``(*batch, n, k)`` with orthonormal columns, column ``i`` belonging to
          eigenvalue ``i``, each with the canonical sign (first entry with
          :math:`|u_j| \ge 0.1 \max |u|` positive; :func:`canonical_signs`). Within a repeated
          eigenvalue only the span is determined, and only if the block is not cut by ``k``;
        * ``aux_loss``: ``None``, or a scalar for backends that learn their eigenvectors
          (``amortized``: the eigen loss, to be added to the training loss).

        **Batching.** A batched operator ``(*batch, n, n)`` (dense) gives one set of pairs per
        batch entry, each as if solved alone; a backend that takes one matrix at a time raises a
        ``ValueError`` saying so.

        **dtype and device** of the outputs are the operator's; nothing is moved to another
        device, except that ARPACK (``method="sparse"``) runs on the CPU in float64 and its
        results are converted back.

        **Gradients** flow to the operator's tensors (dense entries, graph edge weights) where
        the backend is differentiable; each backend's docstring says how.

        **Errors.** ``ValueError`` with a message naming the problem for input this backend
        cannot take (e.g. a batched operator or ``k = n`` for ARPACK, an operator of another
        size than a learned basis). Accuracy: ``exact``, ``stable`` and ``batched_dc`` return
        converged pairs (ARPACK's own ``ArpackNoConvergence`` propagates); ``amortized`` tracks
        them over training and reports how far they are in its ``diagnostics``.

        Args:
            op (Operator): the validated operator.

        Returns:
            :class:`EigenPairs`.
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"k={self.k}, which={self.which!r}"
