r"""ZCA whitening of node features through the stable eigendecomposition."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .._validation import (check_finite, check_floating, check_index_dtype, check_index_range, check_num_nodes,
                           check_positive_int, check_same_device)
from ..eigen import StableBackend


class ZCAWhitening(nn.Module):
    r"""Decorrelates node features: :math:`x' = (x - \mu)\, \Sigma^{-1/2}` (ZCA whitening).

    The application of Wang, Dang, Hu, Fua & Salzmann, `Backpropagation-Friendly
    Eigendecomposition <https://arxiv.org/abs/1906.09023>`_ (NeurIPS 2019), after
    decorrelated batch normalization (Huang et al., `CVPR 2018
    <https://arxiv.org/abs/1804.08450>`_):

    .. math::
        \Sigma = \frac{1}{n} \sum_{v} (x_v - \mu)(x_v - \mu)^T = V \Lambda V^T,
        \qquad \Sigma^{-1/2} = V (\Lambda + \epsilon I)^{-1/2} V^T,

    with the eigendecomposition from :class:`~lowrank_gnn.eigen.StableBackend`: exact
    forward, a backward that stays finite when feature covariances have repeated
    eigenvalues (duplicated, constant or isotropic features), where ``torch.linalg.eigh``
    returns NaN (within a repeated eigenvalue the gradient is then an approximation: the
    :math:`f'(\lambda)` term of :math:`f(\lambda) = (\lambda + \epsilon)^{-1/2}` is dropped, see
    :mod:`lowrank_gnn.eigen.stable`). ZCA (rather than PCA) whitening keeps the output as close as possible to
    the input, so no feature is rotated away. Statistics are per graph when ``batch`` is
    given (as :class:`torch_geometric.nn.norm.InstanceNorm`), else over all nodes.
    Running statistics (the mean of the per-graph means and covariances, updated with
    ``momentum``) are used in evaluation mode, as in ``BatchNorm``. Graphs without nodes
    (``batch_size`` above the graphs present) have no statistics and do not enter them; a
    batch without nodes leaves them unchanged.

    Args:
        in_channels (int): number of features ``F``.
        eps (float): added to the eigenvalues before the inverse square root; keeps
            rank-deficient covariances finite. (default: ``1e-5``)
        momentum (float): weight of the new batch in the running statistics, in ``[0, 1]``.
            (default: ``0.1``)
        track_running_stats (bool): keep running statistics and use them in ``eval()``;
            otherwise every call uses the statistics of its input. (default: ``True``)
        backend_kwargs (dict, optional): options of the stable backend (e.g.
            ``{"method": "power_iteration"}``); ``k`` is ``in_channels``.

    Shapes:
        - **input:** node features ``(N, F)``, batch vector ``(N,)`` *(optional)*
        - **output:** node features ``(N, F)``

    Example:
        >>> import torch
        >>> from lowrank_gnn.nn import ZCAWhitening
        >>> norm = ZCAWhitening(16)
        >>> x, batch = torch.randn(60, 16), torch.arange(3).repeat_interleave(20)
        >>> norm(x, batch).shape   # per-graph whitened features
        torch.Size([60, 16])
    """

    running_mean: Optional[Tensor]
    running_cov: Optional[Tensor]

    def __init__(self, in_channels: int, eps: float = 1e-5, momentum: float = 0.1,
                 track_running_stats: bool = True, backend_kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive number (got eps={eps!r})")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be a number in [0, 1] (got momentum={momentum!r})")
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.track_running_stats = track_running_stats
        self.backend = StableBackend(in_channels, "largest", **{"forward_method": "dense", **(backend_kwargs or {})})
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(in_channels))
            self.register_buffer("running_cov", torch.eye(in_channels))
        else:
            self.running_mean = self.running_cov = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reset the running statistics to zero mean and identity covariance."""
        if self.track_running_stats:
            running_mean, running_cov = self._running_stats()
            running_mean.zero_()
            running_cov.copy_(torch.eye(self.in_channels, dtype=running_cov.dtype, device=running_cov.device))

    def _running_stats(self) -> Tuple[Tensor, Tensor]:
        if self.running_mean is None or self.running_cov is None:
            raise RuntimeError("ZCAWhitening(track_running_stats=False) keeps no running statistics")
        return self.running_mean, self.running_cov

    def inverse_sqrt(self, cov: Tensor) -> Tensor:
        r""":math:`V (\Lambda + \epsilon I)^{-1/2} V^T` via the stable backend. Shapes: ``(*, F, F)``."""
        pairs = self.backend(cov)
        scale = (pairs.eigenvalues.clamp_min(0) + self.eps).rsqrt()
        return (pairs.eigenvectors * scale.unsqueeze(-2)) @ pairs.eigenvectors.mT

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, cov: Tensor, present: Tensor, x: Tensor) -> None:
        """Move the running statistics towards the mean of the per-graph ``mean (B, F)`` and ``cov (B, F, F)``
        over the graphs with nodes (``present (B,)``): an empty graph has no statistics, and its zeros
        would pull both towards 0. A batch without nodes leaves them unchanged."""
        if not bool(present.any()):
            return
        running_mean, running_cov = self._running_stats()
        running = cov[present].mean(0).to(running_cov.dtype)
        if not bool(torch.isfinite(running).all()):
            raise ValueError(f"the covariance of x (entries up to {float(x.abs().amax()):.3g}) overflows "
                             f"the {running_cov.dtype} running statistics; scale x down, or keep "
                             "the module in float64 (.double())")
        running_mean.lerp_(mean[present].mean(0).to(running_mean.dtype), self.momentum)
        running_cov.lerp_(running, self.momentum)

    def forward(self, x: Tensor, batch: Optional[Tensor] = None, batch_size: Optional[int] = None) -> Tensor:
        r"""
        Args:
            x (Tensor): node features ``(N, F)``.
            batch (LongTensor, optional): graph index of each node ``(N,)``. (default: one graph)
            batch_size (int, optional): number of graphs. (default: ``batch.max() + 1``)
        """
        check_floating("x", x)
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (num_nodes, in_channels={self.in_channels}) "
                             f"(got shape {tuple(x.shape)})")
        check_finite("x", x.detach())
        if batch is None:
            if batch_size not in (None, 1):
                raise ValueError(f"batch=None means one graph, but batch_size={batch_size!r} was given")
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            batch_size = 1
        else:
            check_index_dtype("batch", batch)
            check_same_device("batch", batch, "x", x)
            if batch.shape != (x.shape[0],):
                raise ValueError(f"batch must have shape (num_nodes,) = ({x.shape[0]},), one graph index per node "
                                 f"(got {tuple(batch.shape)})")
        if batch_size is None:
            batch_size = int(batch.max()) + 1 if batch.numel() else 1
        batch_size = check_num_nodes(batch_size, "batch_size")
        check_index_range("batch", batch, batch_size, "batch_size")
        batch = batch.long()

        if self.training or not self.track_running_stats:
            dtype = x.dtype
            if dtype == torch.float32 and x.numel() and not 1e-15 < float(x.detach().abs().amax()) < 1e15:
                # the covariance (squares of x) would overflow or underflow float32: statistics in float64
                x = x.double()
            nodes = torch.zeros(batch_size, dtype=x.dtype, device=x.device).index_add_(
                0, batch, torch.ones_like(x[:, 0]))                                        # (B,)
            count = nodes.clamp_min(1)
            mean = x.new_zeros(batch_size, self.in_channels).index_add_(0, batch, x) / count[:, None]
            centered = x - mean[batch]
            outer = centered.unsqueeze(-1) * centered.unsqueeze(-2)                              # (N, F, F)
            cov = x.new_zeros(batch_size, self.in_channels, self.in_channels).index_add_(0, batch, outer)
            cov = cov / count[:, None, None]
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, cov, nodes > 0, x)
            whitening = self.inverse_sqrt(cov)                                                   # (B, F, F)
            return (centered.unsqueeze(-2) @ whitening[batch]).squeeze(-2).to(dtype)
        running_mean, running_cov = self._running_stats()
        return (x - running_mean.to(x.dtype)) @ self.inverse_sqrt(running_cov.to(x.dtype))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels})"
