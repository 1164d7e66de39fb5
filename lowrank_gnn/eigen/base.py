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

from typing import Callable, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from .._validation import check_choice, check_k, check_positive_int
from ..operators.base import Operator, as_operator

WHICH = ("largest", "smallest", "magnitude")

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


#: Rows searched first for each column's pivot (the first significant entry is usually near
#: the top); the whole column is searched only if some column has none there.
SIGN_PIVOT_PREFIX = 256


def canonical_signs(vectors: Tensor) -> Tensor:
    """Flip each column so that its first entry with ``|u_i| >= 0.1 max|u|`` is positive.

    Costs one reduction over the whole column (its largest magnitude) and a search of the
    first :data:`SIGN_PIVOT_PREFIX` rows, widened to all rows only when a column has no
    significant entry there. Differentiable (the signs are constants).
    Shapes: ``(*batch, n, k)`` in and out.
    """
    detached = vectors.detach()
    low, high = torch.aminmax(detached, dim=-2, keepdim=True)  # max |u| in one pass, without an |u| copy
    threshold = SIGN_PIVOT_FRACTION * torch.maximum(high, -low)
    head = detached[..., :SIGN_PIVOT_PREFIX, :]
    significant = head.abs() >= threshold
    if not bool(significant.any(dim=-2).all()):
        head = detached
        significant = head.abs() >= threshold
    pivot = significant.max(dim=-2, keepdim=True).indices  # first True per column (max returns the first maximum)
    sign = torch.sign(head.gather(-2, pivot))
    return vectors * torch.where(sign == 0, torch.ones_like(sign), sign)


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

    Args:
        signs (callable): the sign convention applied to the selected columns; a row-distributed
            backend passes the one that searches the pivot across ranks. (default: :func:`canonical_signs`)

    Shapes:
        eigenvalues ``(*batch, m)``, eigenvectors ``(*batch, n, m)`` in;
        ``(*batch, k)``, ``(*batch, n, k)`` out.
    """
    index = order_indices(eigenvalues, which)[..., :k]
    if k == eigenvalues.shape[-1] and bool((index == torch.arange(k, device=index.device)).all()):
        return eigenvalues, signs(eigenvectors)  # already in order (a tracked basis): no (n, k) gather
    values = eigenvalues.gather(-1, index)
    vectors = eigenvectors.gather(-1, index.unsqueeze(-2).expand(*eigenvectors.shape[:-1], k))
    return values, signs(vectors)


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
