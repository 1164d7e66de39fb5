"""AddEigenpairs: precompute eigenpairs of a graph operator onto each ``Data`` object."""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from .._validation import check_choice, check_positive_int
from ..eigen import WHICH, EigenBackend, resolve_eigen_backend
from ..operators import connected_components, deflate_components, laplacian, normalized_adjacency

OPERATORS = ("normalized_adjacency", "laplacian")

#: The end of the spectrum each operator is usually filtered from.
DEFAULT_WHICH = {"normalized_adjacency": "largest", "laplacian": "smallest"}

#: Eigenvalue given to the deflated directions, strictly outside the normalized adjacency's
#: spectrum [-1, 1] on the side that ``which`` never reaches, so a solve cannot return them.
DEFLATED_SENTINEL = {"largest": -2.0, "smallest": 2.0}


class AddEigenpairs(BaseTransform):
    r"""Adds ``k`` eigenpairs of a graph operator to each graph, deterministically.

    For fixed graphs (one large graph, or datasets of many small graphs) the eigenpairs are
    computed once, in float64, by any eigen backend, and stored on the ``Data`` object so that
    spectral layers such as :class:`~lowrank_gnn.nn.SpectralFilterConv` never solve an
    eigenproblem during training. Unlike PyG's ``AddLaplacianEigenvectorPE``, which flips
    eigenvector signs at random, signs follow the library's canonical convention
    (:func:`~lowrank_gnn.eigen.canonical_signs`), so the same graph always gets the same
    vectors (within an exactly repeated eigenvalue the basis is deterministic for a given
    input but not unique; only its span is).

    Operators (``operator=``):

    * ``"normalized_adjacency"``: :math:`\hat A = \hat D^{-1/2}(A + I)\hat D^{-1/2}`,
      spectrum in :math:`[-1, 1]`; default ``which="largest"`` (low frequencies).
    * ``"laplacian"``: :math:`L = I - D^{-1/2} A D^{-1/2}` (PyG's ``get_laplacian`` with
      ``"sym"``), spectrum in :math:`[0, 2]`; default ``which="smallest"``.

    **Deflation** (``deflate_components=True``, normalized adjacency only): :math:`\hat A` has
    eigenvalue 1 once per connected component, with eigenvectors
    :math:`v_C = \hat D^{1/2} 1_C / \|\cdot\|`. That block is stored exactly, as two node-level
    attributes, and the ``k`` eigenpairs are taken from the rest of the spectrum
    (see :func:`~lowrank_gnn.operators.deflate_components`). A layer adds the block back as
    :math:`g(1) P_0 X` with :math:`P_0 = \sum_C v_C v_C^T`.

    **Stored attributes** (chosen so that ``DataLoader`` batching keeps each graph's
    eigenpairs together):

    * ``eigvecs`` ``(num_nodes, k)``: node-level, concatenated along nodes by collation,
    * ``eigvals`` ``(1, k)``: graph-level, stacked to ``(num_graphs, k)``,
    * ``eig_mask`` ``(1, k)`` bool: which columns are real,
    * with deflation: ``eig_component_vector`` ``(num_nodes,)``, the entry of :math:`v_C` at
      each node (0 on isolated nodes without self-loops), and ``eig_component_index``
      ``(num_nodes,)``, the lowest node index of each node's component (incremented by
      collation like any ``*index`` attribute, so components of different graphs never merge).

    **Small graphs.** A graph with fewer than ``k`` available eigenpairs (``num_nodes``, minus
    the number of deflated components) gets all of them; the missing columns of ``eigvecs``
    and entries of ``eigvals`` are zero and ``eig_mask`` is ``False`` there. A one-node graph
    with deflation has no eigenpairs left at all: everything is in the deflated block.

    Args:
        k (int): eigenpairs per graph.
        operator (str): ``"normalized_adjacency"`` or ``"laplacian"``.
            (default: ``"normalized_adjacency"``)
        which (str, optional): ``"largest"``, ``"smallest"`` or ``"magnitude"``.
            (default: ``"largest"`` for the adjacency, ``"smallest"`` for the Laplacian)
        backend (str or EigenBackend): a backend name, sized per graph, or an instance
            with ``k`` and ``which`` equal to the transform's (then every graph must have
            ``k`` available eigenpairs). (default: ``"exact"``)
        backend_kwargs (dict, optional): options for a backend given by name.
        deflate_components (bool): store the per-component eigenvalue-1 block exactly and
            take the ``k`` pairs from the rest (``which`` must be ``"largest"`` or
            ``"smallest"``). (default: ``False``)
        add_self_loops (bool): for the normalized adjacency. (default: ``True``)

    The graph's ``edge_weight`` attribute is used when present. Values are computed in
    float64 and stored in ``torch.get_default_dtype()``.

    Example:
        >>> from torch_geometric.loader import DataLoader
        >>> from lowrank_gnn.data import load_tu
        >>> from lowrank_gnn.transforms import AddEigenpairs
        >>> dataset = load_tu("MUTAG", transform=AddEigenpairs(k=8))
        >>> batch = next(iter(DataLoader(dataset, batch_size=32)))
        >>> batch.eigvecs.shape[1], batch.eigvals.shape, batch.eig_mask.shape
        (8, torch.Size([32, 8]), torch.Size([32, 8]))
    """

    def __init__(self, k: int, operator: str = "normalized_adjacency", which: Optional[str] = None,
                 backend: Union[str, EigenBackend] = "exact", backend_kwargs: Optional[Dict[str, Any]] = None,
                 deflate_components: bool = False, add_self_loops: bool = True) -> None:
        self.k = check_positive_int("k", k)
        self.operator = check_choice("operator", operator, OPERATORS)
        self.which = DEFAULT_WHICH[operator] if which is None else check_choice("which", which, WHICH)
        if deflate_components and operator != "normalized_adjacency":
            raise ValueError(f"deflate_components=True needs operator='normalized_adjacency' (got "
                             f"operator={operator!r}): its eigenvalue-1 block is the one known in closed form")
        if deflate_components and self.which not in DEFLATED_SENTINEL:
            raise ValueError(f"deflate_components=True needs which='largest' or 'smallest' (got which="
                             f"{self.which!r}): with 'magnitude' the removed directions would tie with "
                             f"genuine zero eigenvalues")
        if isinstance(backend, EigenBackend):
            resolve_eigen_backend(backend, **(backend_kwargs or {}))  # refuses options for an instance
            if backend.k != self.k or backend.which != self.which:
                raise ValueError(f"the backend instance has k={backend.k}, which={backend.which!r} but the "
                                 f"transform has k={self.k}, which={self.which!r}; make them equal or pass "
                                 f"a backend name")
        elif not isinstance(backend, str):
            raise TypeError(f"backend must be a name or an EigenBackend (got {type(backend).__name__})")
        else:
            resolve_eigen_backend(backend, k=self.k, which=self.which, **(backend_kwargs or {}))  # validate now
        self.backend = backend
        self.backend_kwargs = dict(backend_kwargs or {})
        self.deflate_components = deflate_components
        self.add_self_loops = add_self_loops

    def _backend(self, k: int) -> EigenBackend:
        if isinstance(self.backend, EigenBackend):
            if k != self.backend.k:
                raise ValueError(f"this graph has only {k} available eigenpairs but the backend instance "
                                 f"computes k={self.backend.k}; pass the backend by name so that the "
                                 f"transform can size it per graph")
            return self.backend
        return resolve_eigen_backend(self.backend, k=k, which=self.which, **self.backend_kwargs)

    def forward(self, data: Data) -> Data:
        edge_index = getattr(data, "edge_index", None)
        if edge_index is None:
            raise ValueError("AddEigenpairs needs data.edge_index (use an empty (2, 0) tensor for a "
                             "graph without edges)")
        if not isinstance(edge_index, torch.Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
            shape = tuple(edge_index.shape) if isinstance(edge_index, torch.Tensor) else type(edge_index).__name__
            raise ValueError(f"data.edge_index must have shape (2, num_edges) (got {shape})")
        n = data.num_nodes
        if n is None or n < 1:
            raise ValueError(f"AddEigenpairs needs a graph with at least one node (got num_nodes={n})")
        weight = getattr(data, "edge_weight", None)
        weight = (torch.ones(edge_index.shape[1], device=edge_index.device) if weight is None else weight)
        weight = weight.to(torch.float64)
        if self.operator == "laplacian":
            op = laplacian(edge_index, weight, n, normalization="sym")
        else:
            op = normalized_adjacency(edge_index, weight, n, add_self_loops=self.add_self_loops)
        dtype = torch.get_default_dtype()
        available = n
        if self.deflate_components:
            _, labels = connected_components(op)
            op = deflate_components(op, eigenvalue=DEFLATED_SENTINEL[self.which])  # O(n), no (n, c) basis
            available = n - op.num_components
            root = torch.arange(n, device=labels.device)
            data.eig_component_index = root.new_full((int(labels.max()) + 1,), n).scatter_reduce(
                0, labels, root, reduce="amin")[labels]
            data.eig_component_vector = op.entries.to(dtype)  # v_C at each node (0 where no vector)
        m = min(self.k, available)
        values = torch.zeros(1, self.k, dtype=dtype, device=edge_index.device)
        vectors = torch.zeros(n, self.k, dtype=dtype, device=edge_index.device)
        if m > 0:
            pairs = self._backend(m)(op)
            values[0, :m] = pairs.eigenvalues.detach().to(dtype)
            vectors[:, :m] = pairs.eigenvectors.detach().to(dtype)
        data.eigvals, data.eigvecs = values, vectors
        data.eig_mask = torch.arange(self.k, device=edge_index.device).unsqueeze(0) < m
        return data

    def __repr__(self) -> str:
        extra = ", deflate_components=True" if self.deflate_components else ""
        return f"{type(self).__name__}(k={self.k}, operator={self.operator!r}, which={self.which!r}{extra})"
