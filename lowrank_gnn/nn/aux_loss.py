"""Collecting the auxiliary losses that eigen backends expose through layers."""
from __future__ import annotations

from typing import List, cast

from torch import Tensor, nn


def total_aux_loss(model: nn.Module) -> Tensor | float:
    """Sum of ``aux_loss`` over all submodules that set one in their last forward.

    Learnable backends (e.g. ``amortized``) return an eigen loss that must be added to the
    task loss so that their basis keeps converging; exact backends return ``None``. A
    spectrum shared between layers (``LowRankGCNConv.eigenpairs`` passed as
    ``eigenpairs=``) counts once: the layer that computed it holds its loss, the others ``None``.

    Example:
        >>> import torch
        >>> from lowrank_gnn.nn import LowRankGCNConv, total_aux_loss
        >>> from lowrank_gnn.testing import cycle_graph
        >>> graph = cycle_graph(12)
        >>> model = torch.nn.ModuleList([LowRankGCNConv(4, 2, k=4, backend="amortized")])
        >>> out = model[0](torch.randn(12, 4), graph.edge_index)
        >>> loss = out.square().mean() + total_aux_loss(model)  # the eigen loss of every layer
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module whose layers set aux_loss (got {type(model).__name__}); "
                        "pass the model itself, e.g. loss = task_loss + total_aux_loss(model)")
    losses: List[Tensor] = [cast(Tensor, m.aux_loss) for m in model.modules()
                            if getattr(m, "aux_loss", None) is not None]
    return sum(losses[1:], losses[0]) if losses else 0.0
