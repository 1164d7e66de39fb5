r"""Learnable spectral filters :math:`g_\theta(\lambda)` for :class:`SpectralFilterConv`.

Every filter maps eigenvalues ``(*batch, k)`` to filter values ``(*batch, k, channels)``:
one scalar response per eigenvalue, shared by all channels (``channels=1``) or one per
output channel. Eigenvalues are first mapped affinely from ``interval`` (the operator's
spectrum: ``(-1, 1)`` for the normalized adjacency, ``(0, 2)`` for the normalized
Laplacian; finite, ``low < high``) onto the basis' natural domain and clamped there, because
polynomial bases grow without bound outside it (:class:`SpectralFilterConv` warns when its
eigenvalues exceed ``interval`` beyond rounding).
"""
from __future__ import annotations

import math
import numbers
from typing import Dict, Tuple, Type, Union

import torch
from torch import Tensor, nn

from ..._validation import check_positive_int


def _check_interval(interval: Tuple[float, float]) -> Tuple[float, float]:
    """A pair of finite reals ``low < high`` (an infinite end would map every eigenvalue to one point)."""
    if not (isinstance(interval, (tuple, list)) and len(interval) == 2
            and all(isinstance(end, numbers.Real) and not isinstance(end, bool) for end in interval)
            and math.isfinite(interval[0]) and math.isfinite(interval[1]) and interval[0] < interval[1]):
        raise ValueError(f"interval must be a pair (low, high) of finite numbers with low < high, the operator's "
                         f"spectrum, e.g. (-1.0, 1.0) for the normalized adjacency or (0.0, 2.0) for the normalized "
                         f"Laplacian (got interval={interval!r})")
    return float(interval[0]), float(interval[1])


class SpectralFilter(nn.Module):
    """Base class: ``forward(eigenvalues (*batch, k)) -> (*batch, k, channels)``.

    Args:
        interval (tuple): the operator's spectrum ``(low, high)``. (default: ``(-1.0, 1.0)``)
        channels (int): independent responses (1 = shared by all channels). (default: ``1``)
    """

    def __init__(self, interval: Tuple[float, float] = (-1.0, 1.0), channels: int = 1) -> None:
        super().__init__()
        self.interval = _check_interval(interval)
        self.channels = check_positive_int("channels", channels)

    def reset_parameters(self) -> None:
        """Re-initialise the learnable coefficients; filters with parameters override this."""

    def unit(self, eigenvalues: Tensor) -> Tensor:
        """Eigenvalues mapped from ``interval`` onto ``[0, 1]`` and clamped."""
        low, high = self.interval
        return ((eigenvalues - low) / (high - low)).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"interval={self.interval}, channels={self.channels}"


class PolynomialFilter(SpectralFilter):
    r"""Base class of polynomial filters :math:`g(\lambda) = \sum_{j=0}^{K} \theta_j b_j(\lambda)`.

    Subclasses give the basis :math:`b_j` (:meth:`basis`) and the all-pass initialisation
    (:meth:`reset_parameters`); ``weight`` :math:`\theta` has shape ``(K + 1, channels)``.

    Args:
        order (int): polynomial degree :math:`K`. (default: ``3``)
        interval, channels: see :class:`SpectralFilter`.
    """

    def __init__(self, order: int = 3, interval: Tuple[float, float] = (-1.0, 1.0), channels: int = 1) -> None:
        super().__init__(interval, channels)
        self.order = check_positive_int("order", order)
        self.weight = nn.Parameter(torch.empty(order + 1, channels))

    def basis(self, eigenvalues: Tensor) -> Tensor:
        """The basis polynomials at the eigenvalues: ``(*batch, k) -> (*batch, k, order + 1)``."""
        raise NotImplementedError

    def forward(self, eigenvalues: Tensor) -> Tensor:
        basis = self.basis(eigenvalues)
        return basis @ self.weight.to(basis.dtype)

    def extra_repr(self) -> str:
        return f"order={self.order}, {super().extra_repr()}"


class ChebyshevFilter(PolynomialFilter):
    r"""Chebyshev polynomial :math:`g(\lambda) = \sum_{j=0}^{K} \theta_j T_j(\tilde\lambda)`.

    As in ChebNet (Defferrard et al., `NeurIPS 2016 <https://arxiv.org/abs/1606.09375>`_),
    with :math:`\tilde\lambda \in [-1, 1]` the rescaled eigenvalue and the three-term
    recurrence :math:`T_{j+1} = 2\tilde\lambda T_j - T_{j-1}` (bounded by 1 on the interval,
    a well-conditioned basis). Initialised to the all-pass filter :math:`g \equiv 1`.

    Args:
        order (int): polynomial degree :math:`K`. (default: ``3``)
        interval, channels: see :class:`SpectralFilter`.
    """

    def __init__(self, order: int = 3, interval: Tuple[float, float] = (-1.0, 1.0), channels: int = 1) -> None:
        super().__init__(order, interval, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.zero_()
            self.weight[0] = 1.0

    def basis(self, eigenvalues: Tensor) -> Tensor:
        t = 2.0 * self.unit(eigenvalues) - 1.0
        basis = [torch.ones_like(t), t]
        for _ in range(2, self.order + 1):
            basis.append(2.0 * t * basis[-1] - basis[-2])
        return torch.stack(basis[: self.order + 1], dim=-1)


class BernsteinFilter(PolynomialFilter):
    r"""Bernstein polynomial :math:`g(\lambda) = \sum_{j=0}^{K} \theta_j \binom{K}{j} t^j (1 - t)^{K - j}`.

    As in BernNet (He et al., `NeurIPS 2021 <https://arxiv.org/abs/2106.10994>`_), with
    :math:`t \in [0, 1]` the rescaled eigenvalue. The basis is non-negative and sums to 1,
    so :math:`\theta_j` is the filter's value near :math:`t = j/K` and ``theta >= 0`` gives
    a non-negative filter (not enforced here). Initialised to the all-pass filter.

    Args:
        order (int): polynomial degree :math:`K`. (default: ``3``)
        interval, channels: see :class:`SpectralFilter`.
    """

    def __init__(self, order: int = 3, interval: Tuple[float, float] = (-1.0, 1.0), channels: int = 1) -> None:
        super().__init__(order, interval, channels)
        self.binomial: Tensor
        self.register_buffer("binomial", torch.tensor([float(math.comb(order, j)) for j in range(order + 1)]),
                             persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)

    def basis(self, eigenvalues: Tensor) -> Tensor:
        t = self.unit(eigenvalues).unsqueeze(-1)
        j = torch.arange(self.order + 1, device=t.device, dtype=t.dtype)
        return self.binomial.to(t.dtype) * t.pow(j) * (1.0 - t).pow(self.order - j)


class MLPFilter(SpectralFilter):
    r""":math:`g(\lambda) = W_2\, \tanh(W_1 \tilde\lambda + b_1) + b_2`, a small MLP on eigenvalues.

    A free-form learned response, not tied to a polynomial degree: the idea behind spectral
    networks that learn directly from eigenvalues (Specformer, Bo et al.,
    `ICLR 2023 <https://arxiv.org/abs/2303.01028>`_, uses a transformer over eigenvalue
    encodings; this is the small MLP version), applied to the rescaled eigenvalue
    :math:`\tilde\lambda \in [-1, 1]`; ``tanh`` keeps the response smooth in :math:`\lambda`.
    Output bias initialised to 1 (near all-pass).

    Args:
        hidden (int): hidden units. (default: ``32``)
        interval, channels: see :class:`SpectralFilter`.
    """

    def __init__(self, hidden: int = 32, interval: Tuple[float, float] = (-1.0, 1.0), channels: int = 1) -> None:
        super().__init__(interval, channels)
        self.hidden = check_positive_int("hidden", hidden)
        self.lin1 = nn.Linear(1, hidden)
        self.lin2 = nn.Linear(hidden, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()
        with torch.no_grad():
            self.lin2.bias.fill_(1.0)

    def forward(self, eigenvalues: Tensor) -> Tensor:
        t = (2.0 * self.unit(eigenvalues) - 1.0).unsqueeze(-1)
        return self.lin2(torch.tanh(self.lin1(t.to(self.lin1.weight.dtype)))).to(t.dtype)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, {super().extra_repr()}"


#: Name -> filter class.
FILTERS: Dict[str, Type[SpectralFilter]] = {
    "chebyshev": ChebyshevFilter,
    "bernstein": BernsteinFilter,
    "mlp": MLPFilter,
}


def resolve_filter(filter: Union[str, SpectralFilter], **kwargs) -> SpectralFilter:
    """Build a filter from its name in :data:`FILTERS`, or pass an instance through."""
    if isinstance(filter, SpectralFilter):
        if kwargs:
            raise ValueError(f"options {sorted(kwargs)} cannot be applied to an existing {type(filter).__name__}; "
                             "pass a filter name instead")
        return filter
    if not isinstance(filter, str) or filter not in FILTERS:
        raise ValueError(f"filter must be a SpectralFilter or one of {', '.join(repr(f) for f in FILTERS)} "
                         f"(got filter={filter!r})")
    return FILTERS[filter](**kwargs)
