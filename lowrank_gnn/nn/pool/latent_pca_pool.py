"""LatentPCAPool: graph readout from the principal directions of each graph's node embeddings."""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch

from ..._validation import check_finite, check_floating, check_k, check_positive_int
from ...eigen import EigenBackend, resolve_eigen_backend
from ...operators import DenseOperator
from .._batch import check_batch

#: Relative size of the tie-breaking ridge added to each covariance (see LatentPCAPool).
TIE_BREAK = 1e-4


class LatentPCAPool(nn.Module):
    r"""Readout through a per-graph PCA of the node embeddings (latent covariance).

    For each graph :math:`b` with node embeddings :math:`h_i \in \mathbb{R}^d`, mean
    :math:`\mu_b` and covariance
    :math:`C_b = \frac{1}{n_b}\sum_i (h_i - \mu_b)(h_i - \mu_b)^T`, the top-``k``
    eigenvectors :math:`u_j` of all :math:`C_b` are computed in one batched call of the eigen
    backend on the ``(B, d, d)`` stack (PCA as a differentiable layer, in the spirit of the
    batched eigendecomposition layers of Wang et al., "Backpropagation-friendly
    eigendecomposition", `NeurIPS 2019 <https://arxiv.org/abs/1906.09023>`_). The nodes are
    projected, :math:`p_{ij} = (h_i - \mu_b)^T u_j`, and the graph is represented by

    .. math::
        r_b = \big[\, \mu_b \;\|\; s_1 |u_1| \;\|\; \cdots \;\|\; s_k |u_k| \,\big]
        \in \mathbb{R}^{d (k + 1)}, \qquad s_j = \frac{1}{n_b} \sum_i p_{ij}^2,

    the mean (what ``global_mean_pool`` returns) followed by each principal axis, taken
    elementwise in absolute value and scaled by the variance of the nodes along it
    (:math:`s_j |u_j| = |C_b u_j|`). Every term is a mean over nodes, so :math:`r_b` is
    invariant to the order of the nodes, and every term is unchanged by
    :math:`u_j \to -u_j`, so it does not depend on the eigenvectors' signs (within an exactly
    repeated eigenvalue the axes are not unique, and neither is :math:`r_b`). Axes beyond a
    graph's rank (``n_b <= k``) get :math:`s_j = 0`.

    **Gradients.** The second moment :math:`s_j` (rather than, say, a mean absolute
    projection) keeps the backward well scaled: ``eigh``'s backward divides by eigenvalue gaps
    :math:`\lambda_j - \lambda_i`, and the gradient reaching :math:`u_j` is proportional to
    :math:`s_j \approx \lambda_j`, so the ratio stays bounded for axes with little or no
    variance. The covariances are formed and solved in float64 (they are only ``d x d``), and
    :math:`\rho\, \mathrm{diag}(1, 2, \dots, d)/d` with
    :math:`\rho = 10^{-4}\, \mathrm{tr}(C_b)/d + \sqrt{\text{tiny}}` is added before the
    solve: a one-node graph, identical embeddings or ``n_b < d`` give exactly repeated
    eigenvalues, for which ``eigh``'s backward computes :math:`0/0 = \mathrm{NaN}` even where
    the loss does not depend on those eigenvectors; the ridge makes them distinct (it shifts
    the axes by about :math:`10^{-4}` of the mean variance over the gap, and :math:`s_j` is
    measured on the nodes, without it). Genuinely near-repeated leading eigenvalues still give
    large gradients with ``"exact"``: the ``"stable"`` backend is meant for that.

    Args:
        in_channels (int): embedding size :math:`d`.
        k (int): principal directions, ``1 <= k <= in_channels``.
        backend (str or EigenBackend): eigen backend name or instance (``which="largest"``);
            ``"exact"`` batches through ``torch.linalg.eigh``; ``"stable"`` and ``"batched_dc"``
            also solve every batch afresh. A backend with learnable state (``"amortized"``:
            one basis per batch position, tracked across steps) is refused, since graph ``b``
            of one batch is unrelated to graph ``b`` of the next and the last batch of a
            ``DataLoader`` is smaller. (default: ``"exact"``)
        backend_kwargs (dict, optional): options for a backend given by name.

    After each forward, :attr:`aux_loss` holds the backend's auxiliary loss (or ``None``);
    :func:`~lowrank_gnn.nn.total_aux_loss` collects it.

    Shapes:
        - **input:** x ``(N, d)``, batch ``(N,)`` *(optional)*
        - **output:** ``(B, d (k + 1))`` (:attr:`out_channels`)

    Example:
        >>> import torch
        >>> from lowrank_gnn.nn import LatentPCAPool
        >>> pool = LatentPCAPool(64, k=2)
        >>> h, batch = torch.randn(30, 64), torch.arange(3).repeat_interleave(10)
        >>> pool(h, batch).shape  # (num_graphs, 64 (k + 1))
        torch.Size([3, 192])
    """

    def __init__(self, in_channels: int, k: int, backend: Union[str, EigenBackend] = "exact",
                 backend_kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.k = check_k(k, in_channels, what="in_channels")
        if isinstance(backend, str):
            self.backend = resolve_eigen_backend(backend, k=k, which="largest", **(backend_kwargs or {}))
        else:
            self.backend = resolve_eigen_backend(backend, **(backend_kwargs or {}))
            if self.backend.k != k or self.backend.which != "largest":
                raise ValueError(f"the backend instance has k={self.backend.k}, which={self.backend.which!r}; "
                                 f"the layer needs k={k}, which='largest'")
        if self.backend.learns_state:
            raise ValueError(f"backend {type(self.backend).__name__} learns state across calls (parameters; the "
                             "amortized basis is one basis per batch position), but LatentPCAPool solves the "
                             "covariances of new graphs in every batch: graph b of one batch is unrelated to graph b "
                             "of the next, and the last batch of a DataLoader is smaller; use backend='exact', "
                             "'stable' or 'batched_dc', which solve every batch afresh")
        self.aux_loss: Optional[Tensor] = None

    @property
    def out_channels(self) -> int:
        return self.in_channels * (self.k + 1)

    def reset_parameters(self) -> None:
        """The layer has no weights and its backend no state; this clears :attr:`aux_loss`."""
        self.aux_loss = None

    def forward(self, x: Tensor, batch: Optional[Tensor] = None, size: Optional[int] = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (num_nodes, in_channels) = (N, {self.in_channels}) "
                             f"(got shape {tuple(x.shape)})")
        check_floating("x", x)
        check_finite("x", x.detach())
        batch, num_graphs = check_batch(batch, x.shape[0], x, size)
        dense, mask = to_dense_batch(x, batch, batch_size=num_graphs)       # (B, n_max, d)
        count = mask.sum(1, keepdim=True).clamp_min(1).to(x.dtype)          # (B, 1)
        mean = dense.sum(1) / count                                          # (B, d)
        centered = (dense - mean.unsqueeze(1)) * mask.unsqueeze(-1)          # (B, n_max, d)
        wide = centered.to(torch.float64)
        cov = wide.mT @ wide / count.unsqueeze(-1).to(torch.float64)         # (B, d, d)
        cov = (cov + cov.mT) / 2
        d = self.in_channels
        rho = TIE_BREAK * cov.diagonal(dim1=-2, dim2=-1).mean(-1) + torch.finfo(torch.float64).tiny ** 0.5
        ramp = torch.arange(1, d + 1, dtype=torch.float64, device=x.device) / d
        pairs = self.backend(DenseOperator(cov + torch.diag_embed(rho.unsqueeze(-1) * ramp)))
        self.aux_loss = pairs.aux_loss
        axes = pairs.eigenvectors.to(x.dtype)                                # (B, d, k)
        variance = ((wide @ pairs.eigenvectors).pow(2).sum(1) / count.to(torch.float64)).to(x.dtype)  # (B, k)
        if not bool(torch.isfinite(variance.detach()).all()):
            raise ValueError(f"the variances along the principal axes of x (entries up to "
                             f"{float(x.abs().amax()):.3g}) overflow {x.dtype}, so the readout cannot be represented; "
                             "scale x down or pass x.double()")
        features = variance.unsqueeze(-1) * axes.abs().mT                    # (B, k, d)
        return torch.cat([mean, features.flatten(1)], dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, k={self.k}, backend={type(self.backend).__name__})"
