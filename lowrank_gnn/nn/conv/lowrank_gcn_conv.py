"""LowRankGCNConv: GCN propagation through k eigenpairs of the normalized adjacency."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union, cast, overload

import torch
from torch import Tensor, nn
from torch_geometric import EdgeIndex
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import zeros
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor, to_edge_index

from ..._validation import (check_finite, check_floating, check_index_dtype, check_positive_int, check_same_device,
                             check_same_dtype)
from ...eigen import (BatchedDCBackend, EigenBackend, EigenPairs, ExactBackend, StableBackend,
                      resolve_eigen_backend)
from ...operators import (DeflatedOperatorBase, GraphOperator, GraphStructure,
                          deflate_components)
from .._batch import check_graph_layout
from .batch_spectrum import BatchSpectrum, apply_batch, solve_batch

#: Number of eigenpairs when ``k`` is not given.
DEFAULT_K = 16

#: Backends that can solve a padded batch of per-graph operators in one call (``StableBackend``: the
#: finite backward where a graph of the batch repeats a kept eigenvalue, e.g. every cycle).
BATCHED_BACKENDS = (ExactBackend, BatchedDCBackend, StableBackend)

#: Backends without learned state: given by name, the layer builds one per clamped ``k = num_nodes``.
#: Their eigenpairs are exact, so on a graph of at most ``k`` nodes the layer applies the operator itself.
CLAMPED_BACKENDS = (ExactBackend, BatchedDCBackend, StableBackend)

#: The option that fixes a backend's forward to dense ``eigh``, by backend name. A padded batch and all
#: of one graph's eigenpairs (``k >= num_nodes``: ARPACK needs ``k < n``) are solved with it.
DENSE_FORWARD = {"exact": "method", "stable": "forward_method"}

Spectrum = Tuple[EigenPairs, Optional[DeflatedOperatorBase]]

#: What ``cached=True`` keeps: a graph's spectrum, or the dense operator of a graph of at most ``k`` nodes.
CacheEntry = TypeVar("CacheEntry", Tensor, Spectrum)


def _check_pairs(pairs: Any, x: Tensor) -> None:
    """``pairs`` is one graph's :class:`~lowrank_gnn.eigen.EigenPairs` for ``x`` ``(n, d)`` or ``(n,)``:
    eigenvectors ``(n, k)``, eigenvalues ``(k,)``, both of ``x``'s dtype and device (metadata only, ``O(1)``)."""
    if not isinstance(pairs, EigenPairs):
        raise TypeError(f"pairs must be an EigenPairs (eigenvalues (k,), eigenvectors (n, k)), as an eigen backend "
                        f"returns it (got {type(pairs).__name__}); e.g. ExactBackend(k)(operator)")
    vectors, values = pairs.eigenvectors, pairs.eigenvalues
    for part, tensor in (("eigenvectors", vectors), ("eigenvalues", values)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"pairs.{part} must be a tensor (got {type(tensor).__name__})")
    n = x.shape[0]
    if vectors.dim() != 2 or vectors.shape[0] != n:
        raise ValueError(f"pairs.eigenvectors must have shape (num_nodes, k) = ({n}, k), one graph's eigenvectors "
                         f"for x of shape {tuple(x.shape)} (got shape {tuple(vectors.shape)})")
    k = vectors.shape[1]
    if values.shape != (k,):
        raise ValueError(f"pairs.eigenvalues must have shape (k,) = ({k},), one per eigenvector "
                         f"(got shape {tuple(values.shape)})")
    for part, tensor in (("eigenvectors", vectors), ("eigenvalues", values)):
        check_same_dtype(f"pairs.{part}", tensor, "x", x)
        check_same_device(f"pairs.{part}", tensor, "x", x)


def low_rank_propagate(pairs: EigenPairs, x: Tensor, deflated: Optional[DeflatedOperatorBase] = None) -> Tensor:
    r""":math:`U \operatorname{diag}(\lambda) U^T x`, plus the exact deflated block :math:`P x` if any.

    The propagation of :class:`LowRankGCNConv` on one graph. Shapes, dtypes and devices are
    checked (metadata only: no pass over the data), so a mismatched input is an error naming
    it rather than a broadcast.

    Args:
        pairs (EigenPairs): ``k`` eigenpairs of one graph's operator, e.g. ``backend(op)``.
        x (Tensor): node features ``(n, d)``, or one node signal ``(n,)``, of the pairs' dtype.
        deflated (DeflatedOperatorBase, optional): the deflated operator the pairs were taken
            from (e.g. :func:`~lowrank_gnn.operators.deflate_components`); its removed block
            :math:`P` is added back exactly. (default: ``None``)

    Shapes:
        eigenvectors ``(n, k)``, eigenvalues ``(k,)``, x ``(n, d)`` or ``(n,)``; returns the
        shape of ``x``.

    Example:
        >>> import torch
        >>> from lowrank_gnn.eigen import ExactBackend
        >>> from lowrank_gnn.nn import low_rank_propagate
        >>> from lowrank_gnn.operators import normalized_adjacency
        >>> from lowrank_gnn.testing import cycle_graph
        >>> op = normalized_adjacency(cycle_graph(6).edge_index)
        >>> x = torch.randn(6)
        >>> out = low_rank_propagate(ExactBackend(6)(op), x)   # all pairs: the operator itself
        >>> out.shape, torch.allclose(out, op.matmul(x), atol=1e-5)
        (torch.Size([6]), True)
    """
    check_floating("x", x)
    if x.dim() not in (1, 2):
        raise ValueError(f"x must have shape (num_nodes, d) or (num_nodes,) (got shape {tuple(x.shape)}); "
                         "fold further feature dimensions into d first")
    _check_pairs(pairs, x)
    columns = x.unsqueeze(-1) if x.dim() == 1 else x
    if deflated is not None:
        if not isinstance(deflated, DeflatedOperatorBase):
            raise TypeError(f"deflated must be the DeflatedOperatorBase the pairs were taken from, or None (got "
                            f"{type(deflated).__name__})")
        if tuple(deflated.shape) != (x.shape[0], x.shape[0]):
            raise ValueError(f"deflated has shape {tuple(deflated.shape)} but x has {x.shape[0]} nodes; pass the "
                             "deflated operator of this graph")
        if deflated.dtype != x.dtype:
            raise TypeError(f"deflated has dtype {deflated.dtype} but x has dtype {x.dtype}; build the operator "
                            f"in {x.dtype} or cast x")
        if deflated.device != x.device:
            raise ValueError(f"deflated is on {deflated.device} but x is on {x.device}; move both to one device")
    out = _spectral_product(pairs, columns, deflated)
    return out.squeeze(-1) if x.dim() == 1 else out


def _spectral_product(pairs: EigenPairs, x: Tensor, deflated: Optional[DeflatedOperatorBase]) -> Tensor:
    """:func:`low_rank_propagate` on ``x (n, d)`` without its checks (the layer checks its own input)."""
    vectors, values = pairs.eigenvectors, pairs.eigenvalues
    out = vectors @ (values.unsqueeze(-1) * (vectors.mT @ x))
    if deflated is not None:
        out = out + deflated.project(x)
    return out


def _check_placement(tensors: Tuple[Any, ...], x: Tensor, call: str) -> None:
    """Precomputed spectrum ``tensors`` (tensors or operators) in ``x``'s dtype and on its device; ``call`` is the
    :meth:`LowRankGCNConv.eigenpairs` call that computes them for ``x`` (metadata only)."""
    for tensor in tensors:
        if tensor.dtype != x.dtype:
            raise TypeError(f"eigenpairs has dtype {tensor.dtype} but x has dtype {x.dtype}; compute them in "
                            f"x's dtype, {call} (with edge_weight of that dtype), or cast x")
        if tensor.device != x.device:
            raise ValueError(f"eigenpairs is on {tensor.device} but x is on {x.device}; compute them on x's "
                             "device or move x")


def _placement(entry: Union[Tensor, Spectrum]) -> Tuple[torch.dtype, torch.device]:
    """The dtype and device of a cache entry (its eigenvectors for a spectrum)."""
    tensor = entry if isinstance(entry, Tensor) else entry[0].eigenvectors
    return tensor.dtype, tensor.device


def _is_compiling() -> bool:
    return torch.compiler.is_compiling()


class LowRankGCNConv(MessagePassing):
    r"""GCN layer that propagates through ``k`` eigenpairs of the normalized adjacency; a drop-in for ``GCNConv``.

    GCN (Kipf & Welling, `ICLR 2017 <https://arxiv.org/abs/1609.02907>`_) computes
    :math:`\hat A X \Theta` with :math:`\hat A = \hat D^{-1/2}(A + I)\hat D^{-1/2}`. This
    layer replaces :math:`\hat A` by a rank-``k`` spectral approximation

    .. math::
        X' = P_0 X\Theta + U_k \operatorname{diag}(\lambda_k) U_k^T X \Theta
             \; [+\, X \Theta_{\mathrm{root}}] + b,

    with eigenpairs from any eigen backend (``"exact"``, ``"amortized"``, ``"stable"``, ...).
    With ``k >= num_nodes`` (and ``root_weight=False``) it equals ``GCNConv`` on every input
    ``GCNConv`` accepts: duplicate edges are summed, existing self-loops keep their weight,
    ``improved``, ``normalize=False``, ``torch.sparse`` / ``SparseTensor`` / ``EdgeIndex``
    adjacencies, a static graph with ``x`` of shape ``(B, n, F)``. A graph with fewer nodes
    than ``k`` gets all its ``n`` eigenpairs (``k`` is clamped per graph, solved with a dense
    forward also where ``backend_kwargs`` choose ARPACK, which needs ``k < n``) with the
    backends ``"exact"``, ``"stable"`` and ``"batched_dc"`` given by name; ``"amortized"`` (a
    learned basis of ``k`` columns) and a backend instance (fixed to its ``k``) raise on such a
    graph.

    **Graphs of at most** ``k`` **nodes.** With all ``n`` eigenpairs,
    :math:`P_0 + U \Lambda U^T = \hat A`: the forward then applies :math:`\hat A` itself
    (dense, at most ``k x k``, no eigendecomposition), on one graph as on each graph of a
    mini-batch. Its output is ``GCNConv``'s and so are its gradients, also to the edge weights
    where the ``eigh`` backward is not finite (a repeated eigenvalue, e.g. isolated nodes). This
    holds for the backends of exact eigenpairs (``"exact"``, ``"stable"``, ``"batched_dc"``);
    :meth:`eigenpairs` still returns the ``n`` eigenpairs.

    **Directed input.** Eigenpairs need a symmetric operator. A directed ``edge_index`` (or
    ``w(i, j) != w(j, i)``) is symmetrised, with a warning: each pair gets the mean of its
    given directions (a one-way edge counts in both directions, two different weights are
    averaged and each receives half the gradient); see
    :class:`~lowrank_gnn.operators.GraphStructure`.

    **Disconnected graphs.** :math:`\hat A` has eigenvalue 1 once per connected component
    (78 times on Cora), with eigenvectors :math:`D^{1/2} 1_C`. With
    ``deflate_components=True`` (the default with ``normalize=True``) that block is applied
    exactly as :math:`P_0 = \sum_C v_C v_C^T` (``O(n)``) and the ``k`` eigenpairs are taken
    from :math:`\hat A - P_0`, the informative part (Cora, k=16: ~71% instead of ~15%).

    **Mini-batches of graphs.** With ``batch`` (or ``ptr``) every graph gets its own
    ``min(k, n_g)`` eigenpairs, all solved in one batched call on padded per-graph operators,
    so a graph's output never depends on the other graphs of its batch (backends ``"exact"``,
    ``"stable"``, ``"batched_dc"``; ``"stable"`` where learnable edge weights meet repeated
    eigenvalues).

    As a :class:`~torch_geometric.nn.conv.MessagePassing` module it takes the ``explain``
    edge masks of PyG's explainers (as a scale on the edge weights), the propagate hooks,
    ``decomposed_layers`` (features propagated in chunks), ``node_dim`` and ``flow``. It
    passes no per-edge messages: ``aggr`` must be ``"add"`` and message / aggregate hooks
    cannot be registered.

    Args:
        in_channels (int): input features; ``-1`` for lazy initialisation.
        out_channels (int): output features.
        improved (bool): self-loops of weight 2, :math:`\hat A = A + 2I`. (default: ``False``)
        cached (bool): compute the eigenpairs (or, for a graph of at most ``k`` nodes, the
            dense operator) once and reuse them (a fixed graph, transductive setting). A later
            call on a graph of another size, or with ``batch``, raises; edge weights that
            require grad are refused at every call, and so is a backend with learned state
            (``"amortized"``), whose basis changes at every step. A call in another dtype or on another
            device than the cache (after ``conv.double()`` or ``conv.to(device)``) computes
            them again there. In explain mode (PyG's explainers) the cache is neither read nor
            filled: the explainer's edge mask changes the operator at every step.
            (default: ``False``)
        add_self_loops (bool, optional): add the missing self-loops; as in ``GCNConv``, only
            with ``normalize=True``. (default: ``normalize``)
        normalize (bool): the symmetric normalisation of GCN; ``False`` propagates with the
            (symmetrised) adjacency itself. (default: ``True``)
        bias (bool): learn an additive bias. (default: ``True``)
        k (int): number of eigenpairs. (default: ``16``)
        backend (str or EigenBackend): eigen backend name or instance; see above for graphs of
            fewer than ``k`` nodes. (default: ``"exact"``)
        backend_kwargs (dict, optional): options for a backend given by name.
        deflate_components (bool, optional): handle the per-component eigenvalue-1 block
            exactly; needs ``normalize=True``. (default: ``normalize``)
        root_weight (bool): add a self term :math:`X \Theta_{\mathrm{root}}` (as in
            ``GraphConv``/``SAGEConv``); helps at small ``k``. (default: ``False``)
        **kwargs: ``MessagePassing``'s ``aggr`` (``"add"`` only), ``flow``, ``node_dim``,
            ``decomposed_layers``.

    Shapes:
        - **input:** node features ``(n, F_in)`` or ``(B, n, F_in)`` (static graph), edge indices
          ``(2, E)`` or a sparse ``(n, n)`` adjacency, edge weights ``(E,)`` *(optional)*, batch
          ``(n,)`` / ptr ``(B + 1,)`` *(optional)*, precomputed ``eigenpairs`` *(optional, from*
          :meth:`eigenpairs` *)*
        - **output:** node features ``(n, F_out)`` or ``(B, n, F_out)``

    After each forward, :attr:`aux_loss` holds the backend's auxiliary loss (or ``None``);
    add it to the task loss (see :func:`~lowrank_gnn.nn.total_aux_loss`). With a spectrum
    shared between layers (``forward(..., eigenpairs=...)``) the layer whose
    :meth:`eigenpairs` computed it holds the loss, once.

    Example:
        >>> import torch
        >>> from lowrank_gnn.nn import LowRankGCNConv
        >>> from lowrank_gnn.testing import cycle_graph
        >>> conv = LowRankGCNConv(16, 32, k=4)
        >>> conv
        LowRankGCNConv(16, 32, k=4)
        >>> conv(torch.randn(6, 16), cycle_graph(6).edge_index).shape
        torch.Size([6, 32])
    """

    def __init__(self, in_channels: int, out_channels: int, improved: bool = False, cached: bool = False,
                 add_self_loops: Optional[bool] = None, normalize: bool = True, bias: bool = True, *,
                 k: int = DEFAULT_K, backend: Union[str, EigenBackend] = "exact",
                 backend_kwargs: Optional[Dict[str, Any]] = None, deflate_components: Optional[bool] = None,
                 root_weight: bool = False, **kwargs: Any) -> None:
        for name, flag in (("improved", improved), ("cached", cached), ("add_self_loops", add_self_loops),
                           ("normalize", normalize), ("bias", bias), ("deflate_components", deflate_components),
                           ("root_weight", root_weight)):
            optional = name in ("add_self_loops", "deflate_components")  # None: follows normalize
            if not isinstance(flag, bool) and not (optional and flag is None):
                allowed = "a bool or None (None follows normalize)" if optional else "a bool"
                raise TypeError(f"{name} must be {allowed} (got {name}={flag!r}); the arguments after out_channels "
                                "follow GCNConv (improved, cached, add_self_loops, normalize, bias) and k is "
                                f"keyword-only: LowRankGCNConv({in_channels}, {out_channels}, k=...)")
        aggr = kwargs.setdefault("aggr", "add")
        if aggr not in ("add", "sum"):
            raise ValueError(f"aggr must be 'add' (got aggr={aggr!r}): the layer propagates with the normalized "
                             "adjacency's eigenpairs, a sum; other aggregations have no spectral form")
        if kwargs.get("aggr_kwargs"):
            raise ValueError("aggr_kwargs cannot be honoured: the layer's aggregation is a fixed sum")
        super().__init__(**kwargs)
        if add_self_loops is None:
            add_self_loops = normalize
        if add_self_loops and not normalize:
            raise ValueError("add_self_loops=True needs normalize=True, as in GCNConv: self-loops are part of "
                             "the normalisation")
        if deflate_components is None:
            deflate_components = normalize
        if deflate_components and not normalize:
            raise ValueError("deflate_components=True needs normalize=True: the per-component eigenvectors "
                             "D^{1/2} 1_C belong to the normalized adjacency only")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.improved = improved
        self.cached = cached
        self.add_self_loops = add_self_loops
        self.normalize = normalize
        self.deflate_components = deflate_components
        self.k = check_positive_int("k", k)
        if isinstance(backend, str):
            self._backend_name: Optional[str] = backend
            self._backend_kwargs = dict(backend_kwargs or {})
            self.backend = resolve_eigen_backend(backend, k=k, **self._backend_kwargs)
        else:
            self._backend_name, self._backend_kwargs = None, {}
            self.backend = resolve_eigen_backend(backend, **(backend_kwargs or {}))
            if self.backend.k != k:
                raise ValueError(f"the backend instance computes k={self.backend.k} eigenpairs but the layer "
                                 f"has k={k}; make both equal")
        if cached and self.backend.learns_state:
            raise ValueError(f"cached=True computes the eigenpairs once and reuses them, but backend "
                             f"{type(self.backend).__name__} learns its basis at every step (parameters trained "
                             f"with the model); use cached=False with it, or cached=True with a backend without "
                             f"learned state ('exact', 'stable', 'batched_dc')")
        self._clamped: Dict[Tuple[int, bool], EigenBackend] = {}  # backends for k < self.k, by (k, batched)
        self.lin = Linear(in_channels, out_channels, bias=False, weight_initializer="glorot")
        self.lin_root = Linear(in_channels, out_channels, bias=False) if root_weight else None
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.aux_loss: Optional[Tensor] = None
        self._structure: Optional[GraphStructure] = None
        #: with ``cached=True``: the eigenpairs and deflated block in use, and the graph's size
        self._cached_eigenpairs: Optional[Spectrum] = None
        self._cached_size: Optional[Tuple[int, int]] = None
        #: with ``cached=True``: the dense operator of a graph of at most ``k`` nodes, applied directly
        self._cached_operator: Optional[Tensor] = None
        #: with ``cached=True``: the normalized operator's ``(edge_index, edge_weight)``, as ``GCNConv`` caches it
        self._cached_edge_index: Optional[Tuple[Tensor, Tensor]] = None
        self._cached_adj_t: Optional[Any] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reset weights and clear the eigenpair cache."""
        super().reset_parameters()
        self.lin.reset_parameters()
        if self.lin_root is not None:
            self.lin_root.reset_parameters()
        zeros(self.bias)
        self._cached_eigenpairs = self._cached_size = self._cached_operator = None
        self._cached_edge_index = self._cached_adj_t = None
        self.aux_loss = None

    # --- MessagePassing hooks without messages ----------------------------------------------

    def _no_messages(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"{type(self).__name__} passes no per-edge messages (it propagates through eigenpairs), "
                         "so message, aggregate and edge-update hooks would never run; use "
                         "register_propagate_forward_pre_hook / register_propagate_forward_hook instead")

    register_message_forward_pre_hook = _no_messages
    register_message_forward_hook = _no_messages
    register_aggregate_forward_pre_hook = _no_messages
    register_aggregate_forward_hook = _no_messages
    register_message_and_aggregate_forward_pre_hook = _no_messages
    register_message_and_aggregate_forward_hook = _no_messages
    register_edge_update_forward_pre_hook = _no_messages
    register_edge_update_forward_hook = _no_messages

    # --- input ------------------------------------------------------------------------------

    def _edges(self, edge_index: Any, edge_weight: Optional[Tensor],
               num_nodes: int) -> Tuple[Tensor, Optional[Tensor], str]:
        """Any adjacency GCNConv accepts -> ``(edge_index (2, E) source -> target, edge_weight, format)``."""
        if isinstance(edge_index, SparseTensor) or is_torch_sparse_tensor(edge_index):
            if edge_weight is not None:
                raise ValueError("edge_weight must be None when edge_index is a sparse adjacency: its values "
                                 "are the edge weights")
            sizes = tuple(edge_index.sparse_sizes() if isinstance(edge_index, SparseTensor) else edge_index.shape)
            if sizes != (num_nodes, num_nodes):
                raise ValueError(f"the sparse adjacency has size {sizes} but x has {num_nodes} nodes; pass an "
                                 f"adjacency of size ({num_nodes}, {num_nodes}), one row and column per node of x "
                                 "(e.g. SparseTensor(..., sparse_sizes=(n, n)) or torch.sparse_coo_tensor(..., "
                                 "size=(n, n)))")
            if self.flow == "target_to_source":
                raise ValueError('flow="target_to_source" is invalid with a sparse adjacency (adj_t); pass the '
                                 "transposed matrix instead, as in MessagePassing")
            if isinstance(edge_index, SparseTensor):
                row, col, value = edge_index.coo()
                index, value, kind = torch.stack([row, col]), value, "adj_t"
            else:
                index, value = to_edge_index(edge_index)
                kind = "sparse"
            if value is not None and not torch.is_floating_point(value):
                raise TypeError(f"the sparse adjacency's values are its edge weights and must be floating point "
                                f"(got dtype {value.dtype}); convert the adjacency with .float() or .double()")
            # adj_t[target, source]: messages flow from its column to its row
            return index.flip(0), value, kind
        if isinstance(edge_index, EdgeIndex):
            edge_index = edge_index.as_tensor()
        if not isinstance(edge_index, Tensor):
            raise TypeError("edge_index must be a LongTensor of shape (2, num_edges), a torch.sparse adjacency, "
                            f"an EdgeIndex or a SparseTensor (got {type(edge_index).__name__})")
        check_index_dtype("edge_index", edge_index)
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            hint = "; it looks transposed, pass edge_index.t()" if edge_index.dim() == 2 and edge_index.shape[1] == 2 \
                else ""
            raise ValueError(f"edge_index must have shape (2, num_edges) (got {tuple(edge_index.shape)}){hint}")
        if self.flow == "target_to_source":
            edge_index = edge_index.flip(0)
        return edge_index, edge_weight, "edge_index"

    def _check_x(self, x: Tensor) -> int:
        if isinstance(x, (tuple, list)):
            raise ValueError(f"{type(self).__name__} received a tuple of node features (bipartite message passing), "
                             "which a symmetric eigendecomposition cannot represent; use a layer such as SAGEConv "
                             "or GraphConv for bipartite graphs (to_hetero with edge types between two node types)")
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor of node features (got {type(x).__name__})")
        check_floating("x", x)
        if x.dim() < 2:
            raise ValueError(f"x must have shape (num_nodes, in_channels) or (batch, num_nodes, in_channels) "
                             f"(got shape {tuple(x.shape)})")
        if self.in_channels > 0 and x.shape[-1] != self.in_channels:
            raise ValueError(f"x must have in_channels={self.in_channels} features in its last dimension "
                             f"(got shape {tuple(x.shape)})")
        weight = self.lin.weight
        if not isinstance(weight, nn.parameter.UninitializedParameter) and x.dtype != weight.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer's weights have dtype {weight.dtype}; cast x or "
                            f"the layer (e.g. conv.to({x.dtype}))")
        return int(x.shape[self.node_dim])

    # --- the spectrum -----------------------------------------------------------------------

    def _structure_of(self, edge_index: Tensor, num_nodes: int) -> GraphStructure:
        if self._structure is None or not self._structure.matches(edge_index, num_nodes):
            self._structure = GraphStructure(edge_index, num_nodes)
        return self._structure

    def _adjacency(self, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int,
                   dtype: torch.dtype) -> GraphOperator:
        """The normalized (symmetrised) adjacency, built on the layer's :class:`GraphStructure`."""
        return self._structure_of(edge_index, num_nodes).normalized_adjacency(
            edge_weight, add_self_loops=self.add_self_loops, improved=self.improved, normalize=self.normalize,
            symmetrize=True, dtype=dtype)

    def _operator(self, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int, dtype: torch.dtype):
        """The (deflated) operator the eigenpairs are taken from."""
        op = self._adjacency(edge_index, edge_weight, num_nodes, dtype)
        return deflate_components(op) if self.deflate_components else op

    def _check_clamp(self, k: int) -> None:
        """Raise where the backend cannot take ``k < self.k`` eigenpairs (a graph of ``k`` nodes)."""
        if self._backend_name is None:
            raise ValueError(f"this graph has {k} nodes, fewer than k={self.k}, and the backend instance "
                             f"{type(self.backend).__name__} is fixed to k={self.backend.k}; give the backend by "
                             "name (backend='exact', 'stable' or 'batched_dc', options in backend_kwargs: the layer "
                             "then takes min(k, num_nodes) eigenpairs per graph) or use graphs with at least k nodes")
        if not isinstance(self.backend, CLAMPED_BACKENDS):
            raise ValueError(f"this graph has {k} nodes, fewer than k={self.k}, and backend={self._backend_name!r} "
                             f"learns a basis of k={self.backend.k} columns, which cannot shrink per graph; use "
                             f"k <= {k} (this graph's size), or backend='exact', 'stable' or 'batched_dc', "
                             "which take min(k, num_nodes) eigenpairs per graph")

    def _backend_for(self, k: int, batched: bool, all_pairs: bool = False) -> EigenBackend:
        """The layer's backend, or one of the same kind for ``k`` clamped to a graph's size or with a dense forward.

        A padded batch (``batched``) and all of a graph's eigenpairs (``all_pairs``: ARPACK needs
        ``k < n``) are solved by dense ``eigh``: a backend given by name whose forward option
        (:data:`DENSE_FORWARD`) is ``"sparse"``, or ``"auto"`` for all pairs (``"auto"`` takes
        ARPACK above ``dense_max_nodes``; it is dense for batches), gets ``"dense"`` instead.
        """
        backend = self.backend
        if batched and not isinstance(backend, BATCHED_BACKENDS):
            raise ValueError(f"backend={type(backend).__name__} cannot solve a mini-batch of graphs (batch/ptr given): "
                             "each graph needs its own eigenpairs; use backend='exact', 'stable' or 'batched_dc', "
                             "or call the layer on one graph at a time")
        option = DENSE_FORWARD.get(self._backend_name or "")
        forward = self._backend_kwargs.get(option, "auto") if option is not None else "dense"
        dense = (batched or all_pairs) and (forward == "sparse" or (all_pairs and forward == "auto"))
        if k == backend.k and not dense:
            return backend
        if k != backend.k:
            self._check_clamp(k)
        key = (k, dense)
        if key not in self._clamped:
            options = dict(self._backend_kwargs)
            if dense and option is not None:
                options[option] = "dense"
            self._clamped[key] = resolve_eigen_backend(cast(str, self._backend_name), k=k, **options)
        return self._clamped[key]

    def _applies_operator(self, num_nodes: int) -> bool:
        """Whether the forward applies this graph's operator itself: at most ``k`` nodes and exact eigenpairs.

        All ``n`` exact eigenpairs give :math:`P_0 + U \\Lambda U^T = \\hat A`, so the solve is
        skipped (as for the graphs of at most ``k`` nodes of a mini-batch). ``"amortized"``
        learns its eigenpairs and keeps its own path; a backend instance is fixed to its ``k``
        and raises on a graph of fewer nodes, as :meth:`eigenpairs` does.
        """
        if num_nodes > self.k or not isinstance(self.backend, CLAMPED_BACKENDS):
            return False
        if num_nodes < self.k:
            self._check_clamp(num_nodes)
        return True

    def _uses_cache(self) -> bool:
        """``cached=True`` outside explain mode: an explainer's edge mask scales the edge weights, a new operator
        at each of its steps, so in explain mode the layer neither reads nor fills the cache."""
        return self.cached and not self.explain

    def _cached_entry(self, entry: Optional[CacheEntry], size: Tuple[int, int], edge_weight: Optional[Tensor],
                      dtype: torch.dtype, device: torch.device) -> Optional[CacheEntry]:
        """With ``cached=True``: ``entry`` if it holds this graph in ``dtype`` on ``device``; ``None``: compute it.

        Raises for edge weights that require grad (checked at every call, also once the cache
        is filled: the cache would cut their gradient) and for another graph than the cached
        one. An entry of another dtype or device (after ``conv.double()``, ``conv.to(device)``)
        is computed again there.
        """
        if edge_weight is not None and edge_weight.requires_grad:
            raise ValueError("cached=True would freeze the eigenpairs and silently stop the gradient to "
                             "edge_weight; use cached=False with learnable edge weights")
        if self._cached_size is not None and size != self._cached_size:
            raise ValueError(f"cached=True reuses the eigenpairs of the first graph (num_nodes, num_edges) = "
                             f"{self._cached_size}, but this graph has {size}; use cached=False for changing "
                             "graphs or mini-batches, or call reset_parameters() to drop the cache")
        if entry is None or _placement(entry) != (dtype, device):
            return None
        return entry

    def _remember(self, size: Tuple[int, int], op: Any) -> None:
        """``cached=True``: the graph's size and its normalized operator as ``GCNConv`` caches it."""
        base = op.base if isinstance(op, DeflatedOperatorBase) else op
        self._cached_size = size
        if isinstance(base, GraphOperator):  # row-partitioned subclasses hold their rows only
            self._cached_edge_index = (torch.stack([base.row, base.col]), base.value)

    @overload
    def eigenpairs(self, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int,
                   dtype: Optional[torch.dtype] = None, *, batch: None = None, ptr: None = None) -> Spectrum: ...

    @overload
    def eigenpairs(self, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int,
                   dtype: Optional[torch.dtype] = None, *, batch: Tensor,
                   ptr: Optional[Tensor] = None) -> BatchSpectrum: ...

    @overload
    def eigenpairs(self, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int,
                   dtype: Optional[torch.dtype] = None, *, batch: Optional[Tensor] = None,
                   ptr: Tensor) -> BatchSpectrum: ...

    def eigenpairs(self, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int,
                   dtype: Optional[torch.dtype] = None, *, batch: Optional[Tensor] = None,
                   ptr: Optional[Tensor] = None) -> Union[Spectrum, BatchSpectrum]:
        """The spectrum this layer propagates with: ``(EigenPairs, deflated operator or None)``.

        ``min(k, num_nodes)`` eigenpairs, computed by the layer's backend (or taken from the
        cache with ``cached=True``). Pass the result as ``forward(..., eigenpairs=...)`` to
        share one computation between layers, or between models, on the same fixed graph.
        ``dtype`` is the operator's dtype when ``edge_weight`` is ``None`` (default:
        ``torch.get_default_dtype()``; ``forward`` passes ``x.dtype``); given weights set it.
        On a graph of at most ``k`` nodes ``forward`` applies the operator itself instead
        (the same output; see the class).

        With ``batch`` or ``ptr`` (a mini-batch of graphs, ``edge_index`` of shape ``(2, E)``)
        it returns a :class:`BatchSpectrum`, every graph with its own ``min(k, n_g)``
        eigenpairs; pass it as ``forward(x, edge_index, batch=batch, eigenpairs=spectrum)``
        so that all layers of a model share one solve per batch.

        The layer that computes the spectrum holds its auxiliary loss: this call sets
        :attr:`aux_loss` to the solve's (the eigen loss of ``backend="amortized"``, ``None``
        for the exact backends), and a forward with these ``eigenpairs`` keeps it, while a
        layer propagating with a spectrum it did not compute last holds ``None``. Shared
        between layers, the eigen loss thus enters :func:`~lowrank_gnn.nn.total_aux_loss`
        exactly once.
        """
        if batch is not None or ptr is not None:
            if self.cached:
                raise ValueError("cached=True reuses one graph's eigenpairs, but a mini-batch (batch/ptr) changes "
                                 "every step; use cached=False for mini-batches")
            if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
                raise ValueError("eigenpairs(..., batch=/ptr=) needs edge_index as a LongTensor of shape (2, E)")
            ref = cast(Tensor, batch if batch is not None else ptr)
            batch_spectrum = self._batch_spectrum(edge_index, edge_weight, batch, ptr, num_nodes,
                                                  dtype or torch.get_default_dtype(), ref)
            self.aux_loss = batch_spectrum.aux_loss
            return batch_spectrum
        if edge_weight is not None:
            dtype = check_floating("edge_weight", edge_weight).dtype
        dtype = dtype or torch.get_default_dtype()
        if not self._uses_cache():
            spectrum = self._solve(edge_index, edge_weight, num_nodes, dtype)
        else:
            size = (num_nodes, int(edge_index.shape[1]))
            spectrum = self._cached_entry(self._cached_eigenpairs, size, edge_weight, dtype, edge_index.device)
            if spectrum is None:
                spectrum = self._solve(edge_index, edge_weight, num_nodes, dtype, size)
                self._cached_eigenpairs = spectrum
        self.aux_loss = spectrum[0].aux_loss
        return spectrum

    @torch.compiler.disable
    def _solve(self, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int, dtype: torch.dtype,
               cache_size: Optional[Tuple[int, int]] = None) -> Spectrum:
        """Build the operator and solve; eager under ``torch.compile`` (sorts, SciPy components, dynamic sizes).

        With ``cache_size`` (``cached=True``) the graph's size and operator are remembered.
        """
        op = self._operator(edge_index, edge_weight, num_nodes, dtype)
        n = op.shape[-1]
        pairs = self._backend_for(min(self.k, n), batched=False, all_pairs=n <= self.k)(op)
        if cache_size is not None:
            self._remember(cache_size, op)
        return pairs, op if isinstance(op, DeflatedOperatorBase) else None

    def _direct_operator(self, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int,
                         dtype: torch.dtype) -> Tensor:
        """The dense ``(n, n)`` operator of a graph of at most ``k`` nodes, applied directly; cached with ``cached``."""
        if not self._uses_cache():
            return self._dense_adjacency(edge_index, edge_weight, num_nodes, dtype)
        size = (num_nodes, int(edge_index.shape[1]))
        dense = self._cached_entry(self._cached_operator, size, edge_weight, dtype, edge_index.device)
        if dense is None:
            dense = self._dense_adjacency(edge_index, edge_weight, num_nodes, dtype, size)
            self._cached_operator = dense
        return dense

    @torch.compiler.disable
    def _dense_adjacency(self, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int, dtype: torch.dtype,
                         cache_size: Optional[Tuple[int, int]] = None) -> Tensor:
        """:meth:`_adjacency` as a dense matrix (differentiable in the edge weights); eager under ``torch.compile``."""
        op = self._adjacency(edge_index, edge_weight, num_nodes, dtype)
        if cache_size is not None:
            self._remember(cache_size, op)
        return op.to_dense()

    # --- forward ----------------------------------------------------------------------------

    def forward(self, x: Tensor, edge_index: Any, edge_weight: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, ptr: Optional[Tensor] = None,
                eigenpairs: Optional[Union[Spectrum, BatchSpectrum]] = None) -> Tensor:
        """Shapes: see the class docstring; ``eigenpairs`` as returned by :meth:`eigenpairs`."""
        num_nodes = self._check_x(x)
        source_format = "edge_index"
        if isinstance(edge_index, Tensor) and not is_torch_sparse_tensor(edge_index):
            check_same_device("edge_index", edge_index, "x", x)
        if not x.is_sparse and not _is_compiling():
            check_finite("x", x.detach())
        edge_index, edge_weight, source_format = self._edges(edge_index, edge_weight, num_nodes)
        if isinstance(edge_weight, Tensor) and torch.is_floating_point(edge_weight) and edge_weight.dtype != x.dtype:
            edge_weight = edge_weight.to(x.dtype)  # the operator follows x, as GCNConv's messages do
        if self.explain:
            edge_weight = self._masked(edge_index, edge_weight, x.dtype)
        h = self.lin(x)
        if batch is not None or ptr is not None:
            if x.dim() != 2:
                raise ValueError(f"batch/ptr describe a mini-batch of graphs with x of shape (num_nodes, in_channels); "
                                 f"x has shape {tuple(x.shape)} (a static graph: one edge_index for every x[b]), "
                                 "which needs no batch vector")
            if self.cached:
                raise ValueError("cached=True reuses one graph's eigenpairs, but a mini-batch (batch/ptr) changes "
                                 "every step; use cached=False for mini-batches")
            if eigenpairs is not None and not isinstance(eigenpairs, BatchSpectrum):
                raise ValueError("with batch/ptr, eigenpairs must be the BatchSpectrum of "
                                 "conv.eigenpairs(edge_index, edge_weight, num_nodes, batch=batch) (got a "
                                 f"{type(eigenpairs).__name__}: one graph's eigenpairs)")
            if num_nodes == 0:
                check_graph_layout(batch, ptr, num_nodes, x)
                out = h.new_zeros(h.shape)
            else:
                out = self._batch_propagate(h, edge_index, edge_weight, batch, ptr, num_nodes, x, eigenpairs)
            self.aux_loss = None
        else:
            if isinstance(eigenpairs, BatchSpectrum):
                raise ValueError("eigenpairs is a BatchSpectrum (a mini-batch of graphs); pass the same batch= or "
                                 "ptr= to forward")
            if num_nodes == 0:
                self.aux_loss = None
                out = h.new_zeros(h.shape)
            elif eigenpairs is not None:
                pairs, deflated = self._check_spectrum(eigenpairs, x, num_nodes)
                if self.aux_loss is not pairs.aux_loss:
                    self.aux_loss = None  # not this layer's last solve: the layer that computed it holds its loss
                out = self._propagate(edge_index, h, lambda m: self.spectral_propagate(pairs, m, deflated))
            elif self._applies_operator(num_nodes):
                self.aux_loss = None  # no solve: the operator itself
                dense = self._direct_operator(edge_index, edge_weight, num_nodes, x.dtype)
                out = self._propagate(edge_index, h, lambda m: dense @ m)
            else:
                pairs, deflated = self.eigenpairs(edge_index, edge_weight, num_nodes, x.dtype)  # sets aux_loss
                out = self._propagate(edge_index, h, lambda m: self.spectral_propagate(pairs, m, deflated))
            if self._uses_cache() and source_format == "adj_t":
                self._cached_adj_t = self._cached_edge_index
        if self.lin_root is not None:
            out = out + self.lin_root(x)
        if self.bias is not None:
            out = out + self.bias
        return out

    def _check_spectrum(self, eigenpairs: Any, x: Tensor, num_nodes: int) -> Spectrum:
        """Precomputed ``eigenpairs`` for this forward: the pair :meth:`eigenpairs` returns, shaped for ``x``."""
        how = ("the pair (EigenPairs, deflated operator or None) that conv.eigenpairs(edge_index, edge_weight, "
               "num_nodes, x.dtype) returns")
        if isinstance(eigenpairs, EigenPairs):
            raise TypeError(f"eigenpairs must be {how}, not an EigenPairs alone; pass conv.eigenpairs(...) itself, or "
                            "(pairs, None) for pairs of the operator without deflation (deflate_components=False)")
        if not (isinstance(eigenpairs, tuple) and len(eigenpairs) == 2 and isinstance(eigenpairs[0], EigenPairs)
                and (eigenpairs[1] is None or isinstance(eigenpairs[1], DeflatedOperatorBase))):
            got = (f"a {type(eigenpairs).__name__} of "
                   f"({', '.join(type(item).__name__ for item in eigenpairs)})"
                   if isinstance(eigenpairs, (tuple, list)) else f"a {type(eigenpairs).__name__}")
            raise TypeError(f"eigenpairs must be {how} (got {got})")
        pairs, deflated = eigenpairs
        vectors, values = pairs.eigenvectors, pairs.eigenvalues
        shape = tuple(vectors.shape)
        if len(shape) != 2 or shape[0] != num_nodes or not 1 <= shape[1] <= self.k or values.shape != shape[1:]:
            raise ValueError(f"eigenpairs has eigenvectors of shape {shape} and eigenvalues of shape "
                             f"{tuple(values.shape)} but this layer needs ({num_nodes}, m) and (m,) with m <= "
                             f"k={self.k} (as eigenpairs() returns them)")
        _check_placement((vectors, values) + (() if deflated is None else (deflated,)), x,
                         f"conv.eigenpairs(edge_index, edge_weight, num_nodes, {x.dtype})")
        return pairs, deflated

    def _masked(self, edge_index: Tensor, edge_weight: Optional[Tensor], dtype: torch.dtype) -> Tensor:
        """Explain mode: the explainer's edge mask as a scale on the edge weights."""
        mask = self._edge_mask
        if mask is None:
            raise ValueError("explain is True but no edge mask was set; use torch_geometric.explain.Explainer "
                             "(it sets the mask), or set conv.explain = False")
        if mask.shape != (edge_index.shape[1],):
            raise ValueError(f"the explainer's edge mask has shape {tuple(mask.shape)} but edge_index has "
                             f"{edge_index.shape[1]} edges; explain with the edge_index passed to this layer")
        if self._apply_sigmoid:
            mask = mask.sigmoid()
        weight = edge_weight if edge_weight is not None else torch.ones(edge_index.shape[1], dtype=dtype,
                                                                          device=edge_index.device)
        return weight * mask.to(weight.dtype)

    def _propagate(self, edge_index: Tensor, h: Tensor, apply: Callable[[Tensor], Tensor]) -> Tensor:
        """Propagate hooks around ``apply``, on the node dimension first and in ``decomposed_layers`` chunks."""
        size = None
        for hook in self._propagate_forward_pre_hooks.values():
            result = hook(self, (edge_index, size, {"x": h}))
            if result is not None:
                edge_index, size, kwargs = result
                h = kwargs["x"]
        nodes_first = h.movedim(self.node_dim, 0)
        flat = nodes_first.reshape(nodes_first.shape[0], math.prod(nodes_first.shape[1:]))  # (n, B * F)
        chunks = flat.chunk(self.decomposed_layers, dim=-1) if self.decomposed_layers > 1 else (flat,)
        out_flat = torch.cat([apply(chunk) for chunk in chunks], dim=-1) if len(chunks) > 1 else apply(flat)
        out = out_flat.reshape(out_flat.shape[:1] + nodes_first.shape[1:]).movedim(0, self.node_dim)
        for hook in self._propagate_forward_hooks.values():
            result = hook(self, (edge_index, size, {"x": h}), out)
            if result is not None:
                out = result
        return out

    def spectral_propagate(self, pairs: EigenPairs, h: Tensor, deflated: Optional[DeflatedOperatorBase]) -> Tensor:
        """:func:`low_rank_propagate` on ``h (n, d)``; row-distributed subclasses reduce ``U^T h`` across ranks here."""
        return _spectral_product(pairs, h, deflated)

    # --- mini-batches -----------------------------------------------------------------------

    @torch.compiler.disable
    def _batch_propagate(self, h: Tensor, edge_index: Tensor, edge_weight: Optional[Tensor], batch: Optional[Tensor],
                         ptr: Optional[Tensor], num_nodes: int, x: Tensor,
                         eigenpairs: Optional[BatchSpectrum]) -> Tensor:
        """``h`` through each graph's own spectrum; eager under ``torch.compile``.

        The number and the shapes of the padded per-graph solves and products depend on the
        graph sizes of each batch (and the solves run in LAPACK through SciPy, the components in
        SciPy), so a traced graph would be specialised to one batch and recompiled for the next:
        this region stays eager, one graph break per layer call.
        """
        if eigenpairs is not None:
            spectrum = eigenpairs
            self._check_batch_spectrum(spectrum, batch, ptr, num_nodes, x)
        else:
            spectrum = self._batch_spectrum(edge_index, edge_weight, batch, ptr, num_nodes, x.dtype, x)
        return self._propagate(edge_index, h, lambda m: apply_batch(spectrum, m))

    @torch.compiler.disable
    def _batch_spectrum(self, edge_index: Tensor, edge_weight: Optional[Tensor], batch: Optional[Tensor],
                        ptr: Optional[Tensor], num_nodes: int, dtype: torch.dtype, ref: Tensor) -> "BatchSpectrum":
        r"""Each graph of the batch its own ``min(k, n_g)`` eigenpairs.

        A graph with ``n_g <= k`` nodes keeps all its eigenpairs, and
        :math:`U \Lambda U^T` is then its operator itself: it is applied directly (dense, at
        most ``k x k``, no eigendecomposition). The larger graphs are grouped by size (each
        class spans sizes within a factor
        :data:`~lowrank_gnn.nn.conv.batch_spectrum.SIZE_CLASS_RATIO`) and every class is
        solved in one batched backend call on its operators stacked as ``(G, n_pad, n_pad)``; a graph
        with fewer than ``n_pad`` nodes is padded with a decoupled diagonal block of distinct
        entries beyond its spectrum (below it for ``which="largest"``, above for
        ``"smallest"``), so its own ``k`` eigenpairs come first and the padding never enters.
        """
        batch, ptr = check_graph_layout(batch, ptr, num_nodes, ref)
        structure = self._structure_of(edge_index, num_nodes)
        if structure.num_edges and not _is_compiling():
            row, col = edge_index[0].long(), edge_index[1].long()
            if bool((batch[row] != batch[col]).any()):
                raise ValueError("edge_index connects nodes of different graphs of the batch; every edge must "
                                 "stay inside its graph (as PyG's DataLoader batches them)")
        if edge_weight is not None:
            dtype = check_floating("edge_weight", edge_weight).dtype
        op = structure.normalized_adjacency(edge_weight, add_self_loops=self.add_self_loops, improved=self.improved,
                                            normalize=self.normalize, symmetrize=True, dtype=dtype)
        deflated, backend = None, self.backend   # without a graph of more than k nodes nothing is solved
        if bool((ptr.diff() > self.k).any()):
            if self.backend.which == "magnitude":
                raise ValueError("which='magnitude' cannot be padded per graph in a mini-batch; use 'largest' or "
                                 "'smallest' with batch/ptr, or call the layer on one graph at a time")
            deflated = deflate_components(op) if self.deflate_components else None
            backend = self._backend_for(self.k, batched=True)
        return solve_batch(op, deflated, batch, ptr, self.k, backend)

    def _check_batch_spectrum(self, spectrum: BatchSpectrum, batch: Optional[Tensor], ptr: Optional[Tensor],
                              num_nodes: int, x: Tensor) -> None:
        """A shared :class:`BatchSpectrum` is the one this layer computes on this batch: the same graphs, the same
        ``k``, ``x``'s dtype and device (metadata only: no pass over the data)."""
        _, ptr = check_graph_layout(batch, ptr, num_nodes, x)
        if spectrum.ptr is None or not torch.equal(spectrum.ptr, ptr):
            raise ValueError("eigenpairs is the BatchSpectrum of another mini-batch (its graphs' sizes differ from "
                             "batch/ptr); compute it with conv.eigenpairs(..., batch=batch) on this batch")
        share = ("share a BatchSpectrum only between layers of the same k, or compute this layer's with "
                 "conv.eigenpairs(..., batch=batch)")
        for size_class in spectrum.classes:
            n_pad = size_class.operator.shape[-1]
            if size_class.factors is None and n_pad > self.k:
                raise ValueError(f"eigenpairs is the BatchSpectrum of a layer with k >= {n_pad} (it applies graphs "
                                 f"of {n_pad} nodes directly) but this layer has k={self.k} and takes k eigenpairs "
                                 f"of every graph with more than k nodes; {share}")
            if size_class.pairs is not None and size_class.pairs.eigenvalues.shape[-1] != self.k:
                raise ValueError(f"eigenpairs is the BatchSpectrum of a layer with k="
                                 f"{size_class.pairs.eigenvalues.shape[-1]} but this layer has k={self.k}; {share}")
            factors = () if size_class.factors is None else (size_class.factors.eigenvectors,
                                                              size_class.factors.eigenvalues)
            _check_placement((size_class.operator,) + factors, x,
                             f"conv.eigenpairs(edge_index, edge_weight, num_nodes, {x.dtype}, batch=batch)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, k={self.k})"


__all__: List[str] = ["LowRankGCNConv", "low_rank_propagate", "DEFAULT_K"]
