"""Norms that neither overflow nor underflow in the input's precision."""
from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_floating

__all__ = ["frobenius_norm"]


@torch.no_grad()
def frobenius_norm(x: Tensor, dim=(-2, -1)) -> Tensor:
    r""":math:`\|x\|_2` over ``dim`` that neither overflows nor underflows, detached.

    One plain reduction when the squares are representable; where the result says they were
    not (``inf``, or below :math:`\sqrt{\text{tiny}}/\epsilon`: float32 entries above ~1e19 or
    below ~1e-19), recomputed as :math:`s \|x / s\|` with :math:`s = \max |x|`.

    Args:
        x (Tensor): float32 or float64 (half precision, integer and complex dtypes get a ``TypeError``).
        dim (int or tuple of int): the dimensions reduced; each must exist in ``x``. (default: ``(-2, -1)``)

    Shapes:
        ``x`` any with the dimensions ``dim``; returns ``x`` reduced over ``dim``.
    """
    check_floating("x", x)
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if not all(-x.dim() <= d < x.dim() for d in dims):
        hint = "; pass dim=-1 for a vector" if x.dim() == 1 else ""
        raise ValueError(f"dim={dim!r} is not a dimension of x, which has shape {tuple(x.shape)}{hint}")
    x = x.detach()
    norm = torch.linalg.vector_norm(x, dim=dim)
    if not x.numel():
        return norm
    info = torch.finfo(x.dtype)
    # the range of the norms read back at once (one value, or their extremes): no comparison kernels
    low, high = (float(norm),) * 2 if norm.dim() == 0 else (float(bound) for bound in torch.aminmax(norm))
    if info.tiny ** 0.5 / info.eps < low and high < info.max ** 0.5:  # False for NaN
        return norm
    scale = torch.amax(x.abs(), dim=dim, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.linalg.vector_norm(x / scale, dim=dim) * scale.squeeze(dim)
