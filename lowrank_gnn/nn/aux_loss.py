"""Collecting the auxiliary losses that eigen backends expose through layers."""
from __future__ import annotations

from torch import Tensor, nn


def total_aux_loss(model: nn.Module) -> Tensor | float:
    """Sum of ``aux_loss`` over all submodules that set one in their last forward.

    Learnable backends (e.g. ``amortized``) return an eigen loss that must be added to the
    task loss so that their basis keeps converging; exact backends return ``None``.

    Example:
        >>> loss = F.cross_entropy(model(x, edge_index)[mask], y[mask]) + total_aux_loss(model)
    """
    losses = [m.aux_loss for m in model.modules() if getattr(m, "aux_loss", None) is not None]
    return sum(losses[1:], losses[0]) if losses else 0.0
