"""Validation of the ``batch`` vector shared by layers that work per graph."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._validation import check_same_device


def check_batch(batch: Optional[Tensor], num_nodes: int, ref: Tensor,
                num_graphs: Optional[int] = None) -> Tuple[Tensor, int]:
    """Return ``(batch, num_graphs)``; ``batch=None`` means one graph.

    ``batch`` must be an integer vector of shape ``(num_nodes,)``, sorted (as PyG's
    ``DataLoader`` produces it), with entries in ``[0, num_graphs)``.
    """
    if batch is None:
        if num_graphs not in (None, 1):
            raise ValueError(f"batch=None means one graph, but {num_graphs} graphs were given; pass the batch vector")
        return torch.zeros(num_nodes, dtype=torch.long, device=ref.device), 1
    if not isinstance(batch, Tensor) or batch.dtype not in (torch.long, torch.int) or batch.dim() != 1:
        what = f"dtype {batch.dtype}, shape {tuple(batch.shape)}" if isinstance(batch, Tensor) else type(batch).__name__
        raise ValueError(f"batch must be an integer vector of shape (num_nodes,) (got {what})")
    check_same_device("batch", batch, "x", ref)
    if batch.numel() != num_nodes:
        raise ValueError(f"batch must have one entry per node: shape ({num_nodes},) (got shape {tuple(batch.shape)})")
    if num_nodes and (bool((batch[1:] < batch[:-1]).any()) or int(batch[0]) < 0):
        raise ValueError("batch must be sorted and non-negative, as PyG's DataLoader produces it "
                         "(nodes of graph 0 first, then graph 1, ...)")
    needed = int(batch[-1]) + 1 if num_nodes else 0
    if num_graphs is None:
        num_graphs = max(needed, 1)
    elif needed > num_graphs:
        raise ValueError(f"batch refers to graph {needed - 1} but only {num_graphs} graphs were given "
                         f"(batch entries must lie in [0, {num_graphs}))")
    return batch.long(), num_graphs
