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


def check_graph_layout(batch: Optional[Tensor], ptr: Optional[Tensor], num_nodes: int,
                       ref: Tensor) -> Tuple[Tensor, Tensor]:
    """Return ``(batch, ptr)`` of a mini-batch of graphs given by ``batch``, ``ptr`` or both.

    ``ptr`` (``(num_graphs + 1,)``, as ``Batch.ptr``) may describe empty graphs, which a
    ``batch`` vector cannot; given together, both must describe the same layout.
    """
    if ptr is None:
        batch, num_graphs = check_batch(batch, num_nodes, ref)
        counts = torch.bincount(batch, minlength=num_graphs)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        return batch, ptr
    if not isinstance(ptr, Tensor) or ptr.dtype not in (torch.long, torch.int) or ptr.dim() != 1 or ptr.numel() < 1:
        what = f"dtype {ptr.dtype}, shape {tuple(ptr.shape)}" if isinstance(ptr, Tensor) else type(ptr).__name__
        raise ValueError(f"ptr must be an integer vector of shape (num_graphs + 1,) (got {what})")
    check_same_device("ptr", ptr, "x", ref)
    ptr = ptr.long()
    if int(ptr[0]) != 0 or int(ptr[-1]) != num_nodes or bool((ptr[1:] < ptr[:-1]).any()):
        raise ValueError(f"ptr must start at 0, never decrease and end at num_nodes={num_nodes}, as Batch.ptr "
                         f"(got ptr={ptr.tolist() if ptr.numel() <= 10 else tuple(ptr.shape)})")
    from_ptr = torch.repeat_interleave(torch.arange(ptr.numel() - 1, device=ptr.device), ptr.diff())
    if batch is not None:
        batch, _ = check_batch(batch, num_nodes, ref)
        if not torch.equal(batch, from_ptr):
            raise ValueError("batch and ptr describe different graphs (batch must equal "
                             "repeat_interleave(arange(num_graphs), ptr.diff())); pass one of them")
    return from_ptr, ptr
