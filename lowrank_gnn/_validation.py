"""Argument checks shared by every public entry point.

Each function raises a ``ValueError`` (or ``TypeError``) whose message names the
argument, the value received and what is admissible, so the user can fix the call.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)} "
                         f"(got {name}={value!r})")
    return value


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (got {name}={value!r})")
    return value


def check_k(k: int, n: int, *, max_k: Optional[int] = None, what: str = "num_nodes") -> int:
    """``1 <= k <= max_k`` where ``max_k`` defaults to ``n``."""
    upper = n if max_k is None else max_k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= upper:
        bound = f"{what}={n}" if max_k is None else f"{upper}"
        raise ValueError(f"k must satisfy 1 <= k <= {bound} (got k={k!r})")
    return k


def check_floating(name: str, tensor: Tensor) -> Tensor:
    if not torch.is_floating_point(tensor):
        raise TypeError(f"{name} must have a floating-point dtype (got {name}.dtype={tensor.dtype}); "
                        f"convert it with {name}.float() or {name}.double()")
    return tensor


def check_finite(name: str, tensor: Tensor) -> Tensor:
    if tensor.numel() and bool(torch.isfinite(tensor.sum())):  # one pass; a NaN/Inf entry makes the sum non-finite
        return tensor
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name} contains NaN or Inf (first at index {first}, "
                         f"{int(bad.sum())} entries in all); clean the input first")
    return tensor


def check_same_device(name: str, tensor: Tensor, ref_name: str, ref: Tensor) -> None:
    if tensor.device != ref.device:
        raise ValueError(f"{name} is on {tensor.device} but {ref_name} is on {ref.device}; "
                         f"move both to one device with .to(device)")


def check_same_dtype(name: str, tensor: Tensor, ref_name: str, ref: Tensor) -> None:
    if tensor.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {tensor.dtype} but {ref_name} has dtype {ref.dtype}; "
                        f"cast one with .to({ref.dtype})")
