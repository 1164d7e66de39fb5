"""LowRankGCNConv: GCN propagation through k eigenpairs of the normalized adjacency."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import zeros
from torch_geometric.utils import is_torch_sparse_tensor, to_edge_index

from ..._validation import check_finite, check_positive_int, check_same_device
from ...eigen import EigenBackend, EigenPairs, resolve_eigen_backend
from ...operators import DeflatedOperator, deflate_components, normalized_adjacency
from ...operators.graph import EdgeIndexRef


def low_rank_propagate(pairs: EigenPairs, x: Tensor, deflated: Optional[DeflatedOperator] = None) -> Tensor:
    r""":math:`U \operatorname{diag}(\lambda) U^T x` (plus the exact deflated block, if any).

    Shapes:
        eigenvectors ``(n, k)``, eigenvalues ``(k,)``, x ``(n, d)``; returns ``(n, d)``.
    """
    vectors, values = pairs.eigenvectors, pairs.eigenvalues
    out = vectors @ (values.unsqueeze(-1) * (vectors.mT @ x))
    if deflated is not None:
        out = out + deflated.project(x)
    return out


class _SymmetrisedGraph:
    """One input graph made undirected, prepared once and reused while the layer sees it.

    ``to_undirected(edge_index, edge_weight, reduce="mean")`` as a fixed scatter: the merged
    pattern and the slot of every input edge (both directions) are computed once, with one
    sort. Each forward then averages the weights into their slots in ``O(E)`` and rebuilds
    the operator on the first one's sorted structure (``structure=``), so learnable edge
    weights never trigger a sort, a structural symmetry check or a connected-components
    search again. Without edge weights the operator itself is the same at every forward:
    it is built (and its symmetry checked) once per dtype and reused.
    """

    def __init__(self, edge_index: Tensor, num_nodes: int, add_self_loops: bool) -> None:
        n = num_nodes
        both = torch.cat([edge_index, edge_index.flip(0)], dim=1).long()
        keys, self.slot = torch.unique(both[0] * n + both[1], return_inverse=True)
        self.count = torch.bincount(self.slot, minlength=keys.numel())
        self.edge_index = torch.stack([torch.div(keys, n, rounding_mode="floor"), keys % n])
        self.source, self.num_nodes, self.add_self_loops = EdgeIndexRef(edge_index), num_nodes, add_self_loops
        self.structure = None
        self.unit = None  # the operator with unit weights, once built

    def matches(self, edge_index: Tensor, num_nodes: int, add_self_loops: bool) -> bool:
        return (self.source.same_as(edge_index) and num_nodes == self.num_nodes
                and add_self_loops == self.add_self_loops)

    def operator(self, edge_weight: Optional[Tensor], dtype: torch.dtype):
        if edge_weight is None:
            if self.unit is None or self.unit.dtype != dtype:
                self.unit = self._build(torch.ones(self.count.numel(), dtype=dtype, device=self.count.device))
            return self.unit
        # the mean over every stored copy of each undirected pair
        return self._build(edge_weight.new_zeros(self.count.numel()).index_add(
            0, self.slot, torch.cat([edge_weight, edge_weight])) / self.count)

    def _build(self, weight: Tensor):
        if self.structure is None:  # sorts once; holds no autograd graph
            self.structure = normalized_adjacency(self.edge_index, weight.detach(), self.num_nodes,
                                                  add_self_loops=self.add_self_loops)
        return normalized_adjacency(self.edge_index, weight, self.num_nodes, add_self_loops=self.add_self_loops,
                                    structure=self.structure)


class LowRankGCNConv(nn.Module):
    r"""GCN layer that propagates through ``k`` eigenpairs of the normalized adjacency.

    GCN (Kipf & Welling, `ICLR 2017 <https://arxiv.org/abs/1609.02907>`_) computes
    :math:`\hat A X \Theta` with :math:`\hat A = \hat D^{-1/2}(A + I)\hat D^{-1/2}`. This
    layer replaces :math:`\hat A` by a rank-``k`` spectral approximation

    .. math::
        X' = P_0 X\Theta + U_k \operatorname{diag}(\lambda_k) U_k^T X \Theta
             \; [+\, X \Theta_{\mathrm{root}}] + b,

    with eigenpairs from any eigen backend (``"exact"``, ``"amortized"``, ``"stable"``, ...).
    With ``k = num_nodes`` (and ``root_weight=False``) it equals ``GCNConv``.

    **Directed input.** Eigenpairs need a symmetric operator, so the layer propagates over
    the undirected graph ``to_undirected(edge_index, edge_weight, reduce="mean")``: a
    one-way edge counts in both directions and the weights of the two directions are
    averaged (with one learnable weight per direction, both receive half the gradient).

    **Disconnected graphs.** :math:`\hat A` has eigenvalue 1 once per connected component
    (78 times on Cora, 438 on CiteSeer), with eigenvectors :math:`D^{1/2} 1_C`. A plain
    top-``k`` solve spends all ``k`` pairs on an arbitrary basis of that block, and
    accuracy collapses (Cora, k=16: ~15%). With ``deflate_components=True`` (default) that
    block is applied exactly as :math:`P_0 = \sum_C v_C v_C^T` (a per-component weighted
    mean, ``O(n)``) and the ``k`` eigenpairs are taken from :math:`\hat A - P_0`, the
    informative part (Cora, k=16: ~71%; see the README's accuracy-vs-k table).

    Args:
        in_channels (int): input features; ``-1`` for lazy initialisation.
        out_channels (int): output features.
        k (int): number of eigenpairs.
        backend (str or EigenBackend): eigen backend name or instance. (default: ``"exact"``)
        backend_kwargs (dict, optional): options for a backend given by name.
        deflate_components (bool): handle the per-component eigenvalue-1 block exactly.
            (default: ``True``)
        root_weight (bool): add a self term :math:`X \Theta_{\mathrm{root}}` (as in
            ``GraphConv``/``SAGEConv``); helps at small ``k``. (default: ``False``)
        cached (bool): compute the eigenpairs once and reuse them (fixed graph,
            transductive setting). Refused when ``edge_weight`` requires grad, since the
            cache would silently stop its gradient. (default: ``False``)
        add_self_loops (bool): as in ``GCNConv``. (default: ``True``)
        bias (bool): learn an additive bias. (default: ``True``)

    Shapes:
        - **input:** node features ``(n, F_in)``, edge indices ``(2, E)`` or a sparse
          ``(n, n)`` adjacency, edge weights ``(E,)`` *(optional)*, precomputed
          ``eigenpairs`` *(optional, from* :meth:`eigenpairs` *)*
        - **output:** node features ``(n, F_out)``

    After each forward, :attr:`aux_loss` holds the backend's auxiliary loss (or ``None``);
    add it to the task loss (see :func:`~lowrank_gnn.nn.total_aux_loss`).

    Example:
        >>> import torch
        >>> from lowrank_gnn.nn import LowRankGCNConv
        >>> from lowrank_gnn.testing import cycle_graph
        >>> graph = cycle_graph(20)
        >>> conv = LowRankGCNConv(16, 32, k=8)
        >>> conv(torch.randn(20, 16), graph.edge_index).shape
        torch.Size([20, 32])
    """

    def __init__(self, in_channels: int, out_channels: int, k: int,
                 backend: Union[str, EigenBackend] = "exact", backend_kwargs: Optional[Dict[str, Any]] = None,
                 deflate_components: bool = True, root_weight: bool = False, cached: bool = False,
                 add_self_loops: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.k = check_positive_int("k", k)
        if isinstance(backend, str):
            self.backend = resolve_eigen_backend(backend, k=k, **(backend_kwargs or {}))
        else:
            self.backend = resolve_eigen_backend(backend, **(backend_kwargs or {}))
            if self.backend.k != k:
                raise ValueError(f"the backend instance computes k={self.backend.k} eigenpairs but the layer "
                                 f"has k={k}; make both equal")
        self.deflate_components = deflate_components
        self.cached = cached
        self.add_self_loops = add_self_loops
        self.lin = Linear(in_channels, out_channels, bias=False, weight_initializer="glorot")
        self.lin_root = Linear(in_channels, out_channels, bias=False) if root_weight else None
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.aux_loss: Optional[Tensor] = None
        self._cache: Optional[tuple] = None
        self._graph: Optional[_SymmetrisedGraph] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reset weights and clear the eigenpair cache."""
        self.lin.reset_parameters()
        if self.lin_root is not None:
            self.lin_root.reset_parameters()
        if self.bias is not None:
            zeros(self.bias)
        self._cache = None
        self.aux_loss = None

    def _operator(self, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int, dtype: torch.dtype):
        # Symmetric eigensolvers need A_ij == A_ji: merge both directions of every edge
        # (a one-way edge counts both ways, two weights are averaged). A no-op on
        # undirected input; keeps per-direction learnable weights usable.
        if self._graph is None or not self._graph.matches(edge_index, num_nodes, self.add_self_loops):
            self._graph = _SymmetrisedGraph(edge_index, num_nodes, self.add_self_loops)
        op = self._graph.operator(edge_weight, dtype)
        return deflate_components(op) if self.deflate_components else op

    def eigenpairs(self, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int,
                   dtype: Optional[torch.dtype] = None) -> Tuple[EigenPairs, Optional[DeflatedOperator]]:
        """The spectrum this layer propagates with: ``(EigenPairs, deflated operator or None)``.

        Computed by the layer's backend (or taken from the cache with ``cached=True``). Pass
        the result as ``forward(..., eigenpairs=...)`` to share one computation between
        layers, or between models, on the same fixed graph. ``dtype`` is the operator's
        dtype when ``edge_weight`` is ``None`` (default: ``torch.get_default_dtype()``;
        ``forward`` passes ``x.dtype``); given weights set it themselves.
        """
        if self.cached and self._cache is not None:
            return self._cache
        if self.cached and edge_weight is not None and edge_weight.requires_grad:
            raise ValueError("cached=True would freeze the eigenpairs and silently stop the gradient to "
                             "edge_weight; use cached=False with learnable edge weights")
        if edge_weight is not None:
            dtype = edge_weight.dtype
        op = self._operator(edge_index, edge_weight, num_nodes, dtype or torch.get_default_dtype())
        pairs = self.backend(op)
        deflated = op if isinstance(op, DeflatedOperator) else None
        if self.cached:
            self._cache = (pairs, deflated)
        return pairs, deflated

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Optional[Tensor] = None,
                eigenpairs: Optional[Tuple[EigenPairs, Optional[DeflatedOperator]]] = None) -> Tensor:
        """Shapes: see the class docstring; ``eigenpairs`` as returned by :meth:`eigenpairs`."""
        if x.dim() != 2:
            raise ValueError(f"x must have shape (num_nodes, in_channels) (got shape {tuple(x.shape)})")
        check_same_device("edge_index", edge_index, "x", x)
        check_finite("x", x.detach())
        if is_torch_sparse_tensor(edge_index):
            edge_index, edge_weight = to_edge_index(edge_index)
        if edge_weight is not None:
            check_same_device("edge_weight", edge_weight, "x", x)
            if edge_weight.dtype != x.dtype:
                raise TypeError(f"edge_weight has dtype {edge_weight.dtype} but x has dtype {x.dtype}; "
                                f"cast edge_weight with .to({x.dtype})")
        if eigenpairs is None:
            eigenpairs = self.eigenpairs(edge_index, edge_weight, x.shape[0], x.dtype)
            self.aux_loss = eigenpairs[0].aux_loss
        else:
            self.aux_loss = None  # precomputed: whoever computed them owns their auxiliary loss
        pairs, deflated = eigenpairs
        if pairs.eigenvectors.shape[-2] != x.shape[0] or pairs.eigenvectors.shape[-1] != self.k:
            raise ValueError(f"eigenpairs has eigenvectors of shape {tuple(pairs.eigenvectors.shape)} but this layer "
                             f"needs ({x.shape[0]}, {self.k}) (num_nodes, k)")
        h = self.lin(x)
        out = self.propagate(pairs, h, deflated)
        if self.lin_root is not None:
            out = out + self.lin_root(x)
        if self.bias is not None:
            out = out + self.bias
        return out

    def propagate(self, pairs: EigenPairs, h: Tensor, deflated: Optional[DeflatedOperator]) -> Tensor:
        """:func:`low_rank_propagate`; row-distributed subclasses reduce ``U^T h`` across ranks here."""
        return low_rank_propagate(pairs, h, deflated)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, k={self.k})"
