"""SpectralFilterConv: a learnable filter applied in a (truncated) eigenbasis, per graph."""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import zeros
from torch_geometric.utils import scatter, to_dense_batch

from ..._validation import check_finite, check_floating, check_index_dtype, check_same_device, check_same_dtype
from .._batch import check_batch, check_graph_layout
from .filters import SpectralFilter, resolve_filter

#: Eigenvalue of the deflated block (per-component vectors of the normalized adjacency).
DEFLATED_EIGENVALUE = 1.0


def component_project(x: Tensor, vector: Tensor, index: Tensor) -> Tensor:
    r""":math:`P_0 x = \sum_C v_C v_C^T x`, with each node in exactly one component.

    Shapes:
        x ``(n, d)``, vector ``(n,)`` (the entry of :math:`v_C` at each node), index ``(n,)``
        (any label unique per component, e.g. ``eig_component_index``); returns ``(n, d)``.
    """
    weighted = vector.unsqueeze(-1) * x
    sums = scatter(weighted, index, dim=0, dim_size=x.shape[0], reduce="sum")
    return vector.unsqueeze(-1) * sums[index]


class SpectralFilterConv(nn.Module):
    r"""Spectral convolution with a learnable filter on ``k`` eigenpairs, graph by graph.

    The spectral graph convolution of Bruna et al. (`ICLR 2014 <https://arxiv.org/abs/1312.6203>`_)
    with the smooth parametrised filters of ChebNet / BernNet / eigenvalue MLPs
    (see :mod:`~lowrank_gnn.nn.conv.filters`), evaluated exactly on the eigenvalues rather
    than through matrix polynomials:

    .. math::
        X' = U\, g_\theta(\Lambda)\, U^T X \Theta \;[+\, g_\theta(1)\, P_0 X \Theta]
             \;[+\, X \Theta_{\mathrm{root}}] + b,

    with :math:`U \in \mathbb{R}^{n \times k}` orthonormal eigenvectors and :math:`\Lambda`
    their eigenvalues, from any eigen backend (``pairs = backend(op)``; a learnable backend's
    ``pairs.aux_loss`` is then the caller's to add) or precomputed by
    :class:`~lowrank_gnn.transforms.AddEigenpairs`. The bracketed :math:`P_0` term is the
    exact per-component eigenvalue-1 block when the eigenpairs were deflated
    (``AddEigenpairs(deflate_components=True)``). With all eigenpairs the filter is exact:
    :math:`U g(\Lambda) U^T = g(\hat A)`. The self term :math:`X\Theta_{\mathrm{root}}`
    (default on) carries the part of :math:`X` outside the span of :math:`U`, which a
    truncated basis otherwise discards.

    **Mini-batches of graphs.** With ``batch`` (or ``ptr``, ``(B + 1,)`` as ``Batch.ptr``,
    which can also describe empty graphs; given together, both must agree), eigenvectors are
    node-level ``(N, k)`` and eigenvalues graph-level ``(B, k)``; each graph is filtered in its own basis
    (:math:`U_b^T X_b` per graph through ``to_dense_batch``), so no graph sees another's
    nodes: the output equals running each graph alone. Padded columns (``eig_mask`` False,
    for graphs with fewer than ``k`` eigenpairs) contribute nothing.

    Args:
        in_channels (int): input features; ``-1`` for lazy initialisation.
        out_channels (int): output features.
        filter (str or SpectralFilter): ``"chebyshev"``, ``"bernstein"`` or ``"mlp"``, or an
            instance. (default: ``"chebyshev"``)
        filter_kwargs (dict, optional): options of a filter given by name (``order``,
            ``hidden``).
        interval (tuple): the operator's spectrum, finite ``(low, high)`` with ``low < high``,
            mapped onto the basis' domain: ``(-1, 1)`` for the normalized adjacency,
            ``(0, 2)`` for the normalized Laplacian. Eigenvalues outside it are clamped to it,
            with a warning (once per layer) when they exceed it beyond rounding
            (:math:`\sqrt{\varepsilon}\,(high - low)`). (default: ``(-1.0, 1.0)``)
        per_channel (bool): one filter response per output channel instead of one shared.
            (default: ``False``)
        root_weight (bool): add the self term. (default: ``True``)
        bias (bool): learn an additive bias. (default: ``True``)

    Shapes:
        - **input:** x ``(N, F_in)``, eigvecs ``(N, k)``, eigvals ``(B, k)`` (or ``(k,)`` for
          one graph), batch ``(N,)`` / ptr ``(B + 1,)`` *(optional)*, eig_mask ``(B, k)`` *(optional)*,
          component_vector / component_index ``(N,)`` *(optional, together)*
        - **output:** ``(N, F_out)``

    Example:
        >>> from torch_geometric.loader import DataLoader
        >>> from lowrank_gnn.data import load_tu
        >>> from lowrank_gnn.nn import SpectralFilterConv
        >>> from lowrank_gnn.transforms import AddEigenpairs
        >>> dataset = load_tu("MUTAG", transform=AddEigenpairs(k=8))
        >>> conv = SpectralFilterConv(7, 32, filter="bernstein")
        >>> data = next(iter(DataLoader(dataset, batch_size=32)))
        >>> conv(data.x, data.eigvecs, data.eigvals, data.batch, data.eig_mask).shape == (data.num_nodes, 32)
        True
    """

    def __init__(self, in_channels: int, out_channels: int, filter: Union[str, SpectralFilter] = "chebyshev",
                 filter_kwargs: Optional[Dict[str, Any]] = None, interval: Tuple[float, float] = (-1.0, 1.0),
                 per_channel: bool = False, root_weight: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        channels = out_channels if per_channel else 1
        if isinstance(filter, SpectralFilter):
            self.filter: SpectralFilter = resolve_filter(filter, **(filter_kwargs or {}))
            if self.filter.channels not in (1, out_channels):
                raise ValueError(f"the filter instance has channels={self.filter.channels}; a layer with "
                                 f"out_channels={out_channels} needs 1 or {out_channels}")
        else:
            self.filter = resolve_filter(filter, interval=interval, channels=channels, **(filter_kwargs or {}))
        self.filter_name = filter if isinstance(filter, str) else type(filter).__name__
        self.lin = Linear(in_channels, out_channels, bias=False, weight_initializer="glorot")
        self.lin_root = Linear(in_channels, out_channels, bias=False) if root_weight else None
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._warned_interval = False  # eigenvalues outside interval are reported once per layer
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reset the weights and the filter (the layer keeps no cache)."""
        self.lin.reset_parameters()
        self.filter.reset_parameters()
        if self.lin_root is not None:
            self.lin_root.reset_parameters()
        if self.bias is not None:
            zeros(self.bias)

    def _check(self, x: Tensor, eigvecs: Tensor, eigvals: Tensor, batch: Optional[Tensor],
               eig_mask: Optional[Tensor], component_vector: Optional[Tensor],
               component_index: Optional[Tensor], ptr: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor, int]:
        eager = not torch.compiler.is_compiling()  # value checks (a host sync each) run in eager mode only
        check_floating("x", x)
        if x.dim() != 2:
            raise ValueError(f"x must have shape (num_nodes, in_channels) (got shape {tuple(x.shape)})")
        if self.in_channels > 0 and x.shape[1] != self.in_channels:
            raise ValueError(f"x must have in_channels={self.in_channels} features (got x of shape "
                             f"{tuple(x.shape)})")
        if eager:
            check_finite("x", x.detach())
        n = x.shape[0]
        if eigvecs.dim() != 2 or eigvecs.shape[0] != n:
            raise ValueError(f"eigvecs must have shape (num_nodes, k) = ({n}, k) (got shape {tuple(eigvecs.shape)})")
        k = eigvecs.shape[1]
        for name, tensor in (("eigvecs", eigvecs), ("eigvals", eigvals)):
            check_same_device(name, tensor, "x", x)
            check_same_dtype(name, tensor, "x", x)
            if eager:
                check_finite(name, tensor.detach())
        if eigvals.dim() == 1 and batch is None and ptr is None:
            eigvals = eigvals.unsqueeze(0)
        if eigvals.dim() != 2 or eigvals.shape[1] != k:
            raise ValueError(f"eigvals must have shape (num_graphs, k) with k={k} (or (k,) for one graph) "
                             f"(got shape {tuple(eigvals.shape)})")
        if ptr is not None:
            if eager:
                batch, ptr = check_graph_layout(batch, ptr, n, x)
            else:
                ptr = ptr.long()
                batch = batch.long() if batch is not None else torch.repeat_interleave(
                    torch.arange(ptr.numel() - 1, device=ptr.device), ptr.diff(), output_size=n)
            num_graphs = ptr.numel() - 1
        elif eager:
            batch, num_graphs = check_batch(batch, n, x)
        else:
            batch = batch.long() if batch is not None else x.new_zeros(n, dtype=torch.long)
            num_graphs = eigvals.shape[0]
        if num_graphs != eigvals.shape[0]:
            described = "ptr" if ptr is not None else "batch"
            raise ValueError(f"eigvals has {eigvals.shape[0]} rows but {described} describes {num_graphs} graph(s)")
        if eig_mask is None:
            eig_mask = torch.ones_like(eigvals, dtype=torch.bool)
        elif eig_mask.shape != eigvals.shape or eig_mask.dtype != torch.bool:
            raise ValueError(f"eig_mask must be a bool tensor of shape {tuple(eigvals.shape)} like eigvals "
                             f"(got {eig_mask.dtype}, shape {tuple(eig_mask.shape)})")
        if eager and eigvals.numel():
            self._warn_outside_interval(eigvals, eig_mask)
        if (component_vector is None) != (component_index is None):
            raise ValueError("component_vector and component_index go together (both from "
                             "AddEigenpairs(deflate_components=True)); pass both or neither")
        if component_vector is not None and component_index is not None:
            for name, tensor in (("component_vector", component_vector), ("component_index", component_index)):
                if tensor.shape != (n,):
                    raise ValueError(f"{name} must have shape (num_nodes,) = ({n},) (got {tuple(tensor.shape)})")
                check_same_device(name, tensor, "x", x)
            check_same_dtype("component_vector", component_vector, "x", x)
            check_index_dtype("component_index", component_index)
            if eager:
                check_finite("component_vector", component_vector.detach())
            if eager and n and (int(component_index.min()) < 0 or int(component_index.max()) >= n):
                raise ValueError(f"component_index entries must lie in [0, num_nodes) = [0, {n})")
        return eigvals, batch, eig_mask, num_graphs

    def _warn_outside_interval(self, eigvals: Tensor, eig_mask: Tensor) -> None:
        """Warn (once per layer) when real eigenvalues leave ``interval`` beyond rounding: one ``aminmax``."""
        if self._warned_interval:
            return
        low, high = self.filter.interval
        slack = math.sqrt(torch.finfo(eigvals.dtype).eps) * (high - low)
        real = eigvals.detach().masked_fill(~eig_mask, (low + high) / 2)  # padded columns never warn
        least_value, most_value = torch.stack(torch.aminmax(real)).tolist()  # one reduction, one host sync
        if least_value >= low - slack and most_value <= high + slack:
            return
        self._warned_interval = True
        warnings.warn(f"eigvals lie in [{least_value:.4g}, {most_value:.4g}], beyond the filter's interval="
                      f"{self.filter.interval}; they are clamped to it, so every eigenvalue beyond an end gets the "
                      "filter's value there. Pass the operator's spectrum as interval, e.g. interval=(0.0, 2.0) "
                      "for the normalized Laplacian (shown once per layer)", stacklevel=3)

    def forward(self, x: Tensor, eigvecs: Tensor, eigvals: Tensor, batch: Optional[Tensor] = None,
                eig_mask: Optional[Tensor] = None, component_vector: Optional[Tensor] = None,
                component_index: Optional[Tensor] = None, ptr: Optional[Tensor] = None) -> Tensor:
        """Shapes: see the class docstring."""
        eigvals, batch, eig_mask, num_graphs = self._check(x, eigvecs, eigvals, batch, eig_mask,
                                                           component_vector, component_index, ptr)
        h = self.lin(x)
        basis, node_mask = to_dense_batch(eigvecs, batch, batch_size=num_graphs)  # (B, n_max, k)
        features, _ = to_dense_batch(h, batch, batch_size=num_graphs)             # (B, n_max, F_out)
        response = self.filter(eigvals) * eig_mask.unsqueeze(-1)                   # (B, k, 1 or F_out)
        out = (basis @ (response * (basis.mT @ features)))[node_mask]              # (N, F_out)
        if component_vector is not None and component_index is not None:
            one = torch.full((1,), DEFLATED_EIGENVALUE, dtype=x.dtype, device=x.device)
            out = out + self.filter(one)[0] * component_project(h, component_vector, component_index)
        if self.lin_root is not None:
            out = out + self.lin_root(x)
        if self.bias is not None:
            out = out + self.bias
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, filter={self.filter_name!r})"
