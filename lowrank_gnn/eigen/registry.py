"""The one place backends are registered and resolved by name."""
from __future__ import annotations

from typing import Dict, Type, Union

from .amortized import AmortizedBackend
from .base import EigenBackend
from .batched_dc import BatchedDCBackend
from .exact import ExactBackend
from .stable import StableBackend

#: Name -> backend class. New backends are added here, and only here.
BACKENDS: Dict[str, Type[EigenBackend]] = {
    "exact": ExactBackend,
    "stable": StableBackend,
    "batched_dc": BatchedDCBackend,
    "amortized": AmortizedBackend,
}


def resolve_eigen_backend(backend: Union[str, EigenBackend], **kwargs) -> EigenBackend:
    """Build a backend from its name, or pass an instance through.

    Args:
        backend (str or EigenBackend): a name in :data:`BACKENDS` or a ready instance.
        **kwargs: constructor arguments (``k``, ``which``, and the backend's own options);
            not allowed with an instance, whose options are already fixed.

    Example:
        >>> from lowrank_gnn.eigen import resolve_eigen_backend
        >>> backend = resolve_eigen_backend("exact", k=16, which="largest")
    """
    if isinstance(backend, EigenBackend):
        if kwargs:
            raise ValueError(f"options {sorted(kwargs)} cannot be applied to an existing {type(backend).__name__}; "
                             "pass a backend name instead, or configure the instance when creating it")
        return backend
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be an EigenBackend or one of {', '.join(repr(b) for b in BACKENDS)} "
                         f"(got backend={backend!r})")
    return BACKENDS[backend](**kwargs)
