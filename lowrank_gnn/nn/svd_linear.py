r"""A linear layer kept in SVD form, with Householder-parametrised singular vectors."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_choice, check_floating, check_positive_int
from ..linalg.householder import householder_orthonormal, householder_vectors

__all__ = ["SVDLinear"]

#: A sigmoid never reaches its ends: initial singular values at or beyond a bound start this
#: fraction of the interval inside it.
BOUND_MARGIN = 1e-3


class SVDLinear(nn.Module):
    r"""A drop-in for :class:`torch.nn.Linear` whose weight is kept as its SVD.

    The SVD reparametrisation of Zhang, Lei & Dhillon ("Stabilizing Gradients for Deep
    Neural Networks via Efficient SVD Parameterization", ICML 2018,
    https://arxiv.org/abs/1803.09327), applied with FastH (Mathiasen et al., NeurIPS 2020):

    .. math::
        W = U \operatorname{diag}(s) V^\top, \qquad y = x W^\top + b,

    where :math:`U` (``out x r``) and :math:`V` (``in x r``), ``r = min(in, out)``, have
    orthonormal columns by construction (:func:`~lowrank_gnn.linalg.householder_orthonormal`
    of the parameters ``left_vectors`` and ``right_vectors``), so the singular values of
    :math:`W` are exactly :math:`|s|` and can be controlled directly:

    * ``max_singular_value`` bounds the spectral norm, :math:`\|W\|_2 \le` ``max``, at every
      step and for any optimizer, through the smooth map of Zhang et al.,
      :math:`s = lo + (hi - lo)\,\sigma(\theta)` with ``lo = min_singular_value`` (default 0);
    * ``learn_singular_values=False`` fixes :math:`s` at its initial values (clamped into the
      bounds), e.g. ``init="orthogonal"`` with ``max_singular_value=c`` keeps ``W`` equal to
      ``c`` times a matrix with orthonormal rows or columns throughout training.

    ``raw_singular_values`` is :math:`\theta` under a learned bound and :math:`s` itself
    otherwise (unbounded :math:`s` may change sign; the spectral norm is then
    :math:`\max_i |s_i|`). Building ``weight`` costs :math:`O(\text{out}\,r^2 + \text{in}\,r^2)`
    per forward pass on top of the matrix product.

    Args:
        in_features (int): size of each input sample.
        out_features (int): size of each output sample.
        bias (bool): learn an additive bias. (default: ``True``)
        max_singular_value (float, optional): upper bound on every singular value, ``> 0``.
            (default: ``None``, unbounded)
        min_singular_value (float, optional): lower bound, ``0 <= min < max``; needs
            ``max_singular_value``. (default: ``None``, i.e. 0 under a bound)
        learn_singular_values (bool): learn :math:`s`; if ``False`` it is a buffer.
            (default: ``True``)
        init (str): ``"linear"`` draws the weight like :class:`torch.nn.Linear` (Kaiming
            uniform) and stores its SVD; ``"orthogonal"`` draws Haar-random :math:`U, V` and
            sets every :math:`s_i` to ``max_singular_value`` (1 if unbounded). Values at or
            outside the bounds of a learned :math:`s` start just inside them.
            (default: ``"linear"``)
        block_size (int, optional): Householder block size, see
            :func:`~lowrank_gnn.linalg.householder_product`. (default: ``None``)

    Shapes:
        - **input**: ``(*, in_features)``
        - **output**: ``(*, out_features)``

    Example:
        >>> import torch
        >>> from lowrank_gnn.nn import SVDLinear
        >>> layer = SVDLinear(16, 32, max_singular_value=1.0)
        >>> layer
        SVDLinear(16, 32, max_singular_value=1.0)
        >>> bool(torch.linalg.matrix_norm(layer.weight, 2) <= 1.0)
        True
    """

    INITS = ("linear", "orthogonal")

    left_signs: Tensor
    right_signs: Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 max_singular_value: Optional[float] = None, min_singular_value: Optional[float] = None,
                 learn_singular_values: bool = True, init: str = "linear", block_size: Optional[int] = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.max_singular_value, self.min_singular_value = _check_bounds(max_singular_value, min_singular_value)
        self.learn_singular_values = bool(learn_singular_values)
        self.init = check_choice("init", init, self.INITS)
        self.block_size = None if block_size is None else check_positive_int("block_size", block_size)
        factory = {"device": device, "dtype": dtype}
        rank = min(in_features, out_features)
        self.left_vectors = nn.Parameter(torch.empty(out_features, rank, **factory))
        self.right_vectors = nn.Parameter(torch.empty(in_features, rank, **factory))
        self.register_buffer("left_signs", torch.ones(rank, **factory))
        self.register_buffer("right_signs", torch.ones(rank, **factory))
        raw = torch.empty(rank, **factory)
        if self.learn_singular_values:
            self.raw_singular_values = nn.Parameter(raw)
        else:
            self.register_buffer("raw_singular_values", raw)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def _sigmoid_bounded(self) -> bool:
        return self.max_singular_value is not None and self.learn_singular_values

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw a new weight as described by ``init`` (and a new bias like ``nn.Linear``)."""
        like = self.left_vectors
        if self.init == "linear":
            weight = torch.empty(self.out_features, self.in_features, dtype=like.dtype, device=like.device)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Linear's default
            left, values, right_t = torch.linalg.svd(weight, full_matrices=False)
            right = right_t.mT
        else:  # the Q factor of a Gaussian matrix (positive diagonal of R) is Haar-distributed
            left = torch.randn_like(self.left_vectors)
            right = torch.randn_like(self.right_vectors)
            values = torch.full_like(self.raw_singular_values, self.max_singular_value or 1.0)
        for vectors, signs, basis in ((self.left_vectors, self.left_signs, left),
                                      (self.right_vectors, self.right_signs, right)):
            new_vectors, new_signs = householder_vectors(basis)
            vectors.copy_(new_vectors)
            signs.copy_(new_signs)
        self.raw_singular_values.copy_(self._raw_from_values(values))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def _raw_from_values(self, values: Tensor) -> Tensor:
        if self.max_singular_value is None:
            return values
        low, high = self.min_singular_value or 0.0, self.max_singular_value
        if not self.learn_singular_values:
            return values.clamp(low, high)
        margin = BOUND_MARGIN * (high - low)
        fraction = (values.clamp(low + margin, high - margin) - low) / (high - low)
        return torch.logit(fraction)

    @property
    def singular_values(self) -> Tensor:
        """The vector :math:`s` of ``W = U diag(s) V^T``, ``(r,)``, differentiable."""
        if not self._sigmoid_bounded:
            return self.raw_singular_values
        low, high = self.min_singular_value or 0.0, self.max_singular_value
        return low + (high - low) * torch.sigmoid(self.raw_singular_values)

    def svd(self):
        """``(U, s, Vh)`` with ``weight == U @ diag(s) @ Vh``, as ``torch.linalg.svd(...,
        full_matrices=False)`` orders them (``s`` is not sorted). Differentiable.

        Shapes: ``U (out, r)``, ``s (r,)``, ``Vh (r, in)``.
        """
        left = householder_orthonormal(self.left_vectors, self.left_signs, self.block_size)
        right = householder_orthonormal(self.right_vectors, self.right_signs, self.block_size)
        return left, self.singular_values, right.mT

    @property
    def weight(self) -> Tensor:
        """``U diag(s) V^T``, ``(out_features, in_features)``, rebuilt on every access."""
        left, values, right_t = self.svd()
        return (left * values) @ right_t

    def forward(self, x: Tensor) -> Tensor:
        check_floating("x", x)
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have in_features={self.in_features} entries in its last dimension, shape "
                             f"(*, {self.in_features}) (got shape {tuple(x.shape)})")
        if x.dtype != self.left_vectors.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer's parameters are {self.left_vectors.dtype}; "
                            f"cast x with x.to({self.left_vectors.dtype}) or the layer with .to({x.dtype})")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        parts = [f"{self.in_features}, {self.out_features}"]
        if self.bias is None:
            parts.append("bias=False")
        if self.max_singular_value is not None:
            parts.append(f"max_singular_value={self.max_singular_value}")
        if self.min_singular_value is not None:
            parts.append(f"min_singular_value={self.min_singular_value}")
        if not self.learn_singular_values:
            parts.append("learn_singular_values=False")
        if self.init != "linear":
            parts.append(f"init={self.init!r}")
        if self.block_size is not None:
            parts.append(f"block_size={self.block_size}")
        return ", ".join(parts)


def _check_bounds(max_value: Optional[float], min_value: Optional[float]):
    for name, value in (("max_singular_value", max_value), ("min_singular_value", min_value)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number or None (got {name}={value!r})")
    if max_value is not None and max_value <= 0:
        raise ValueError(f"max_singular_value must be > 0 (got max_singular_value={max_value!r})")
    if min_value is not None:
        if max_value is None:
            raise ValueError(f"min_singular_value needs max_singular_value: the bounds are enforced "
                             f"together (got min_singular_value={min_value!r}, max_singular_value=None)")
        if not 0 <= min_value < max_value:
            raise ValueError(f"min_singular_value must satisfy 0 <= min_singular_value < max_singular_value "
                             f"(got min_singular_value={min_value!r}, max_singular_value={max_value!r})")
    return (None if max_value is None else float(max_value)), (None if min_value is None else float(min_value))
