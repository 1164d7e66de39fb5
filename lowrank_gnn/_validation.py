"""Argument checks shared by every public entry point.

Each function raises a ``ValueError`` (or ``TypeError``) whose message names the
argument, the value received and what is admissible, so the user can fix the call.
"""
from __future__ import annotations

import functools
import numbers
import os
from typing import Any, Callable, Iterable, Optional, Tuple, TypeVar

import torch
from torch import Tensor


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)} "
                         f"(got {name}={value!r})")
    return value


def check_positive_int(name: str, value: object) -> int:
    """An integer ``>= 1`` of any integer type (NumPy's too, as :func:`check_k`), returned as ``int``; ``bool``
    refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer (got {name}={value!r})")
    return int(value)


def check_k(k: int, n: int, *, max_k: Optional[int] = None, what: str = "num_nodes", name: str = "k") -> int:
    """``1 <= k <= max_k`` where ``max_k`` defaults to ``n``; any integer type (NumPy's too), returned as ``int``.

    ``name`` is the argument's name in the caller's signature (e.g. ``"rank"``), used in the message."""
    upper = n if max_k is None else max_k
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= upper:
        bound = f"{what}={n}" if max_k is None else f"{upper}"
        raise ValueError(f"{name} must satisfy 1 <= {name} <= {bound} (got {name}={k!r})")
    return int(k)


def broadcast_shape(first: Tuple[int, ...], second: Tuple[int, ...]) -> Optional[Tuple[int, ...]]:
    """The shape two batch shapes broadcast to, or ``None`` where they do not broadcast."""
    try:
        return tuple(torch.broadcast_shapes(first, second))
    except RuntimeError:
        return None


def broadcasts_to(shape: Tuple[int, ...], target: Tuple[int, ...]) -> bool:
    """Whether a tensor of batch shape ``shape`` broadcasts to ``target`` without enlarging it."""
    return broadcast_shape(shape, target) == tuple(target)


#: Dtypes no entry point computes in (see :func:`check_floating` and ``docs/guides/reliability.md``).
HALF_PRECISION = (torch.float16, torch.bfloat16)


def check_floating(name: str, tensor: Tensor) -> Tensor:
    """A float32 or float64 tensor (complex and integer dtypes are refused, and so is half precision).

    **Precision policy** (the same at every entry point): eigensolvers, orthogonalisations
    and the eigen losses need the ~7 digits of float32 at least (float16 has 3, bfloat16 2:
    eigenvalue gaps, orthogonality and Gram matrices are lost in rounding), so
    ``float16``/``bfloat16`` input is a clear ``TypeError`` that says how to cast, rather
    than a silent upcast whose result would be cast back to a precision that cannot hold it.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (got {type(tensor).__name__})")
    if not torch.is_floating_point(tensor):
        raise TypeError(f"{name} must have a floating-point dtype, float32 or float64 (got {name}.dtype="
                        f"{tensor.dtype}); convert it with {name}.float() or {name}.double()")
    if tensor.dtype in HALF_PRECISION:
        raise TypeError(f"{name} has dtype {tensor.dtype}, but lowrank_gnn computes in float32 or float64 only "
                        f"(half precision cannot resolve eigenvalue gaps or keep a basis orthonormal); pass "
                        f"{name}.float() and cast the result back if needed; under torch.autocast, run this "
                        f"call with torch.autocast(device_type, enabled=False)")
    return tensor


def check_floating_dtype(name: str, dtype: object) -> torch.dtype:
    """``torch.float32`` or ``torch.float64``: the dtypes :func:`check_floating` admits, for a ``dtype=`` argument."""
    if not isinstance(dtype, torch.dtype) or dtype not in (torch.float32, torch.float64):
        why = (" (half precision cannot resolve eigenvalue gaps or keep a basis orthonormal)"
               if dtype in HALF_PRECISION else "")
        hint = getattr(torch, dtype, None) if isinstance(dtype, str) else None
        fix = f"torch.{dtype}" if isinstance(hint, torch.dtype) and hint in (torch.float32, torch.float64) \
            else "torch.float32"
        raise TypeError(f"{name} must be torch.float32 or torch.float64 (got {name}={dtype!r}): lowrank_gnn computes "
                        f"in float32 or float64 only{why}; pass {name}={fix}")
    return dtype


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


#: Integer dtypes accepted for node ids (PyG's own convention: int64, or int32 for memory).
INDEX_DTYPES = (torch.long, torch.int)


def check_index_dtype(name: str, index: Tensor) -> Tensor:
    """An int64 or int32 tensor of node ids; the message says what was wrong with any other dtype."""
    if not isinstance(index, Tensor):
        raise TypeError(f"{name} must be a torch.LongTensor (got {type(index).__name__})")
    if index.dtype in INDEX_DTYPES:
        return index
    if index.is_floating_point() or index.is_complex():
        raise TypeError(f"{name} must have an integer dtype, torch.long (int64) or torch.int32, for node ids, "
                        f"but has dtype {index.dtype}: floating-point ids would be truncated; convert them with "
                        f"{name}.long() after checking that they are whole numbers")
    if index.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, torch.long (int64) or torch.int32, for node ids "
                        "(got torch.bool, a mask?)")
    raise TypeError(f"{name} must have dtype torch.long (int64) or torch.int32 (got {index.dtype}: an integer dtype, "
                    f"but too narrow for the node ids of large graphs); convert it with {name}.long()")


def check_edge_index(edge_index: Tensor, name: str = "edge_index") -> Tensor:
    """A ``(2, E)`` integer tensor (PyG's COO layout); an ``(E, 2)`` edge list gets a message saying so."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"{name} must be a torch.LongTensor of shape (2, num_edges) (got {type(edge_index).__name__})")
    if edge_index.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (2, num_edges) tensor (got layout {edge_index.layout}); convert a "
                        "sparse adjacency with torch_geometric.utils.to_edge_index")
    if edge_index.dim() == 2 and edge_index.shape[1] == 2 and edge_index.shape[0] != 2:
        raise ValueError(f"{name} must have shape (2, num_edges) (got shape {tuple(edge_index.shape)}, an edge "
                         f"list of (source, target) rows?); pass {name}.t()")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"{name} must have shape (2, num_edges) (got shape {tuple(edge_index.shape)})")
    return check_index_dtype(name, edge_index)


def check_num_nodes(num_nodes: object, name: str = "num_nodes", minimum: int = 1) -> int:
    """An integer ``>= minimum`` (Python int, NumPy integer or 0-d integer tensor); floats and strings refused."""
    value = num_nodes
    if isinstance(value, Tensor) and value.dim() == 0 and not value.is_floating_point() and value.dtype != torch.bool:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer (got {name}={num_nodes!r} of type {type(num_nodes).__name__}); "
                        f"pass int({name}) if it is a whole number")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum} (got {name}={value})")
    return value


def check_index_range(name: str, index: Tensor, upper: int, upper_name: str = "num_nodes") -> None:
    """Every entry of ``index`` in ``[0, upper)``."""
    if not index.numel():
        return
    low, high = (int(v) for v in torch.aminmax(index))
    if low < 0 or high >= upper:
        raise ValueError(f"{name} entries must lie in [0, {upper_name}) = [0, {upper}) "
                         f"(got min {low}, max {high})")


def device_memory(device: torch.device) -> Optional[int]:
    """Total memory of ``device`` in bytes (physical RAM for the CPU), or ``None`` where unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        if device.type == "cpu":
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None
    return None


def check_memory(nbytes: int, device: torch.device, what: str, fix: str) -> None:
    """Refuse, before allocating, an operation that needs more than the device's whole memory.

    ``nbytes`` is a lower bound on what the operation will allocate (from its declared sizes):
    if even that exceeds the device's total memory, the call could never succeed, and a
    clear error beats an out-of-memory kill halfway through.
    """
    total = device_memory(device)
    if total is not None and nbytes > total:
        raise ValueError(f"{what} needs at least {nbytes / 2**30:.1f} GiB on {device}, more than its "
                          f"{total / 2**30:.1f} GiB in all; {fix}")


_Backward = TypeVar("_Backward", bound=Callable[..., Any])


class _SecondDerivativeRefused(torch.autograd.Function):
    """Passes a first-order gradient through; a backward through it raises ``message``."""

    @staticmethod
    def forward(ctx, message: str, *grads: Tensor):
        ctx.message = message
        return tuple(grad.clone() for grad in grads)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        raise RuntimeError(ctx.message)


def first_order_only(what: str, fix: str) -> Callable[[_Backward], _Backward]:
    """Decorate the ``backward`` of a ``torch.autograd.Function`` whose gradient is not differentiable.

    Like ``torch.autograd.function.once_differentiable``, the backward runs without recording a
    graph, and under ``create_graph=True`` its gradients get a node that refuses to be
    differentiated, so a second derivative is an error rather than a silent zero; the error
    says which computation was differentiated twice (``what``) and how to do without (``fix``),
    instead of torch's "trying to differentiate twice a function marked with
    @once_differentiable". A double backward whose second pass does not reach this gradient
    (e.g. a gradient penalty on other weights) runs as usual.
    """
    message = (f"{what} is first-order only, and a second derivative through it was requested (create_graph=True, "
               f"then a backward through that gradient: a gradient penalty or a Hessian-vector product); {fix}")

    def decorate(backward: _Backward) -> _Backward:
        @functools.wraps(backward)
        def wrapper(ctx: Any, *grads: Any) -> Any:
            with torch.no_grad():
                outputs = backward(ctx, *grads)
            if not torch.is_grad_enabled():
                return outputs
            single = not isinstance(outputs, tuple)
            items = (outputs,) if single else outputs
            slots = [i for i, item in enumerate(items) if isinstance(item, Tensor)]
            if not slots:
                return outputs
            guarded = _SecondDerivativeRefused.apply(
                message, *(items[i].detach().requires_grad_() for i in slots))
            result = list(items)
            for i, tensor in zip(slots, guarded, strict=True):
                result[i] = tensor
            return result[0] if single else tuple(result)
        return wrapper  # type: ignore[return-value]
    return decorate
