"""AddEigenpairs: precompute eigenpairs of a graph operator onto each ``Data`` object."""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from .._validation import HALF_PRECISION, check_choice, check_positive_int
from ..eigen import WHICH, EigenBackend, batched_eigh, order_indices, resolve_eigen_backend
from ..linalg import BAND_MIN_SIZE, eigh_extremal, sparse_eigh_extremal
from ..operators import connected_components, deflate_components, laplacian, normalized_adjacency
from .cache import OutputSpecs
from .packed import (NormalizedEdges, PackedGraphs, canonical_signs_per_graph, dense_batches, normalized_edges,
                     pack_graphs, sparse_operator)
from .progress import progress_bar

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
    with deflation has no eigenpairs left at all: everything is in the deflated block. An
    empty graph (``num_nodes=0``) gets ``eigvecs`` of shape ``(0, k)`` and an all-``False`` mask.

    **Whole datasets.** :func:`~lowrank_gnn.transforms.precompute_eigenpairs` applies the
    transform to a dataset in one batched, cached pass; :meth:`forward` is the same routine
    (:meth:`compute`) on a batch of one, so both give the same bits with LAPACK's solvers (the
    limits are in :func:`~lowrank_gnn.transforms.precompute_eigenpairs`). With the ``"exact"`` and
    ``"batched_dc"`` backends (by name, without deflation) graphs up to ``dense_max_nodes`` are
    solved as dense float64 matrices by LAPACK's ``eigh`` (``batched_eigh`` for ``"batched_dc"``);
    with ``"exact"`` (or ``"batched_dc"`` with ``method="lapack"``) on the CPU, graphs of
    :data:`~lowrank_gnn.linalg.BAND_MIN_SIZE` nodes or
    more (and ``which`` other than ``"magnitude"``) by
    :func:`~lowrank_gnn.linalg.sparse_eigh_extremal` from their sparse operator instead: the band
    solver where their bandwidth after reordering pays, else the same dense solver.

    Args:
        k (int): eigenpairs per graph.
        operator (str): ``"normalized_adjacency"`` or ``"laplacian"``.
            (default: ``"normalized_adjacency"``)
        which (str, optional): ``"largest"``, ``"smallest"`` or ``"magnitude"``.
            (default: ``"largest"`` for the adjacency, ``"smallest"`` for the Laplacian)
        backend (str or EigenBackend): a backend name, sized per graph, or an instance
            with ``k`` and ``which`` equal to the transform's (then every graph must have
            ``k`` available eigenpairs); one that solves every call to convergence
            (``"exact"``, ``"stable"``, ``"batched_dc"``: not one with learned state).
            ``"amortized"`` (name or instance) is refused: its basis is trained across calls
            with a model, so a graph solved once would get its random start. (default: ``"exact"``)
        backend_kwargs (dict, optional): options for a backend given by name.
        deflate_components (bool): store the per-component eigenvalue-1 block exactly and
            take the ``k`` pairs from the rest (``which`` must be ``"largest"`` or
            ``"smallest"``). (default: ``False``)
        add_self_loops (bool): for the normalized adjacency. (default: ``True``)

    The graph's ``edge_weight`` attribute is used when present. Values are computed in
    float64 and stored in ``torch.get_default_dtype()``, which must be float32 or float64 (half
    precision is refused with a ``TypeError``, as everywhere in the library).

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
            _check_solving(backend)
            if backend.k != self.k or backend.which != self.which:
                raise ValueError(f"the backend instance has k={backend.k}, which={backend.which!r} but the "
                                 f"transform has k={self.k}, which={self.which!r}; make them equal or pass "
                                 f"a backend name")
        elif not isinstance(backend, str):
            raise TypeError(f"backend must be a name or an EigenBackend (got {type(backend).__name__})")
        else:
            _check_solving(resolve_eigen_backend(backend, k=self.k, which=self.which,
                                                 **(backend_kwargs or {})))  # validate now
        self.backend = backend
        self.backend_kwargs = dict(backend_kwargs or {})
        self.deflate_components = deflate_components
        self.add_self_loops = add_self_loops

    @property
    def node_level(self) -> Tuple[str, ...]:
        """The attributes :meth:`compute` returns per node (the others are per graph)."""
        return ("eigvecs", "eig_component_vector", "eig_component_index") if self.deflate_components else ("eigvecs",)

    def output_specs(self, num_nodes: int, num_graphs: int) -> OutputSpecs:
        """The shape and dtype of each attribute :meth:`compute` returns for ``num_graphs`` graphs of
        ``num_nodes`` nodes in all (what a cache file must hold to be used)."""
        dtype = result_dtype()
        specs: OutputSpecs = {"eigvecs": ((num_nodes, self.k), dtype), "eigvals": ((num_graphs, self.k), dtype),
                 "eig_mask": ((num_graphs, self.k), torch.bool)}
        if self.deflate_components:
            specs["eig_component_vector"] = ((num_nodes,), dtype)
            specs["eig_component_index"] = ((num_nodes,), torch.long)
        return specs

    def cache_config(self) -> Optional[Dict[str, Any]]:
        """Everything besides the graphs that the result depends on, or ``None`` (a backend instance,
        whose state is not hashed: no cache)."""
        if not isinstance(self.backend, str):
            return None
        return {"transform": type(self).__name__, "k": self.k, "operator": self.operator, "which": self.which,
                "backend": self.backend, "backend_kwargs": {key: repr(value) for key, value in
                                                            sorted(self.backend_kwargs.items())},
                "deflate_components": self.deflate_components, "add_self_loops": self.add_self_loops}

    @property
    def batched_solver(self) -> Optional[Tuple[str, int]]:
        """``(eigh_method, max_nodes)`` when graphs up to ``max_nodes`` nodes are solved densely in
        batches (backends ``"exact"`` and ``"batched_dc"`` by name, without deflation), else ``None``."""
        if self.deflate_components or not isinstance(self.backend, str):
            return None
        if self.backend == "batched_dc":
            return self.backend_kwargs.get("method", "auto"), sys.maxsize
        if self.backend == "exact":
            method = self.backend_kwargs.get("method", "auto")
            if method == "sparse":
                return None
            limit = sys.maxsize if method == "dense" else self.backend_kwargs.get("dense_max_nodes", 5000)
            return "lapack", limit
        return None

    def _backend(self, k: int) -> EigenBackend:
        if isinstance(self.backend, EigenBackend):
            if k != self.backend.k:
                raise ValueError(f"this graph has only {k} available eigenpairs but the backend instance "
                                 f"computes k={self.backend.k}; pass the backend by name so that the "
                                 f"transform can size it per graph")
            return self.backend
        return resolve_eigen_backend(self.backend, k=k, which=self.which, **self.backend_kwargs)

    def forward(self, data: Data) -> Data:
        out = self.compute(pack_graphs([data]), progress=False)
        for key, value in out.items():
            setattr(data, key, value)
        return data

    def compute(self, packed: PackedGraphs, progress: Optional[bool] = None) -> Dict[str, Tensor]:
        """The attributes of every packed graph, concatenated: node-level ones along nodes,
        graph-level ones (``eigvals``, ``eig_mask``) along graphs.

        Graphs with the same node count are solved together (one dense ``(B, n, n)`` batch, one
        :func:`~lowrank_gnn.linalg.eigh_extremal` or :func:`~lowrank_gnn.eigen.batched_eigh`
        call); the others (graphs of ``BAND_MIN_SIZE`` nodes or more on the CPU LAPACK path, by
        :func:`~lowrank_gnn.linalg.sparse_eigh_extremal`; large graphs on the sparse path,
        deflation, backend instances) one at a time. A graph gets the same bits either way
        it is reached: :meth:`forward` is this method on a batch of one.

        When every graph is solved densely and the batches come in dataset order (one graph, or
        sizes non-decreasing), the solved buffers are the outputs themselves, without zero-filled
        outputs and ``index_copy_``; one graph's route is decided from its size as a Python ``int``
        by the same comparisons as the masks of a batch. Both skip per-call tensor work that
        dominates the per-graph transform on small graphs.
        """
        dtype, device = result_dtype(), packed.edge_index.device
        num_nodes, k, num_graphs = packed.num_nodes, self.k, packed.num_graphs
        if num_graphs == 1:  # one graph: its route from its size as a Python int, by the same rule
            n = int(num_nodes[0])
            routes = self._routes(n, device)  # three bools
            dense_count, sparse_count, single_count = (int(route) for route in routes)
            total, dense_rows = n, n * dense_count
            dense, sparse, single = torch.tensor([routes], device=device).unbind(1)  # as (1,) masks
        else:
            dense, sparse, single = self._routes(num_nodes, device)
            # nodes in all and in dense graphs, graphs per route: one host synchronisation
            total, dense_rows, dense_count, sparse_count, single_count = torch.stack(
                [num_nodes.sum(), (num_nodes * dense).sum(), dense.sum(), sparse.sum(), single.sum()]).tolist()
        out: Dict[str, Tensor] = {}
        with progress_bar(num_graphs, progress, desc=repr(self)) as bar, torch.no_grad():
            bar.update(num_graphs - dense_count - single_count)  # empty graphs: nothing to solve
            in_order = False
            # the operator entries of every graph; they also refuse a directed graph whose missing reverse
            # edges the solvers cannot see (see normalized_edges), whichever route its graph takes
            entries = normalized_edges(packed, self.operator, self.add_self_loops) if dense_count or single_count \
                else None
            if entries is not None and dense_count:
                solved_values, solved_vectors, graphs, rows = self._solve_dense_graphs(
                    packed, entries, dense, sparse, (dense_count, dense_rows, dense_count - sparse_count), bar)
                # every graph solved densely in dataset order (one graph, or sizes non-decreasing): the
                # solved buffers are the outputs; otherwise they are copied to their graphs' places
                in_order = dense_count == num_graphs and (num_graphs == 1 or torch.equal(
                    torch.cat(graphs), torch.arange(num_graphs, device=device)))
            if in_order:
                values, available = solved_values, num_nodes.clamp(max=k)
                vectors = canonical_signs_per_graph(solved_vectors, num_nodes)
            else:
                values = torch.zeros(num_graphs, k, dtype=dtype, device=device)
                vectors = torch.zeros(total, k, dtype=dtype, device=device)
                available = torch.zeros(num_graphs, dtype=torch.long, device=device)
                if dense_count:
                    order = torch.cat(graphs)
                    values.index_copy_(0, order, solved_values)
                    vectors.index_copy_(0, torch.cat(rows), canonical_signs_per_graph(
                        solved_vectors, num_nodes.index_select(0, order)))
                    available[dense] = num_nodes[dense].clamp(max=k)
            if self.deflate_components:
                out["eig_component_vector"] = torch.zeros(total, dtype=dtype, device=device)
                out["eig_component_index"] = torch.zeros(total, dtype=torch.long, device=device)
            if single_count:
                self._solve_singles(packed, single, values, vectors, available, out, bar)
        out["eigvals"], out["eigvecs"] = values, vectors
        out["eig_mask"] = torch.arange(k, device=device) < available.unsqueeze(1)
        return out

    def _solve_singles(self, packed: PackedGraphs, single: Tensor, values: Tensor, vectors: Tensor, available: Tensor,
                       out: Dict[str, Tensor], bar: Any) -> None:
        """The ``single`` graphs through the backend, one at a time, written into the outputs."""
        node_ptr = packed.node_ptr
        for g in single.nonzero().squeeze(1).tolist():
            start, end = int(node_ptr[g]), int(node_ptr[g + 1])
            try:
                m, graph_values, graph_vectors, component = self._solve_one(packed.graph(g))
            except ValueError as error:  # the backend's check (a directed graph), with the graph it refused
                raise ValueError(f"graph {g}: {error}") from None
            values[g, :m], vectors[start:end, :m], available[g] = graph_values, graph_vectors, m
            if component is not None:
                out["eig_component_vector"][start:end], out["eig_component_index"][start:end] = component
            bar.update(1)

    def _routes(self, num_nodes: Union[int, Tensor], device: torch.device) -> Tuple[Any, Any, Any]:
        """Which graphs are solved densely (``dense``; of them, ``sparse``: large graphs of LAPACK's
        path, by :func:`~lowrank_gnn.linalg.sparse_eigh_extremal`, the band solver where the bandwidth
        pays, else dense) and which one at a time through the backend (``single``): bool masks ``(G,)``
        for a tensor of sizes, bools for one size as an ``int`` (the same comparisons)."""
        solver = self.batched_solver
        solvable = num_nodes >= 1
        dense = solvable & (num_nodes <= (solver[1] if solver is not None else 0))
        on_band_path = solver is not None and solver[0] == "lapack" and self.which != "magnitude" and \
            device.type == "cpu"
        sparse = dense & (num_nodes >= BAND_MIN_SIZE) & on_band_path
        return dense, sparse, solvable ^ dense  # single: solvable and not dense (dense graphs are solvable)

    def _solve_dense_graphs(self, packed: PackedGraphs, entries: NormalizedEdges, dense: Tensor, sparse: Tensor,
                            counts: Tuple[int, int, int],
                            bar: Any) -> Tuple[Tensor, Tensor, List[Tensor], List[Tensor]]:
        """The eigenpairs (signs not yet fixed) of the ``dense`` graphs: dense batches by size of those
        not ``sparse``, then the ``sparse`` ones one at a time. ``counts``: the ``dense`` graphs, their
        nodes, and the graphs not ``sparse`` among them.

        Returns the solved values ``(dense_count, k)`` and vectors ``(dense_rows, k)``, filled graph
        after graph, with the graph indices and node rows of each filled block, in filling order.
        """
        num_nodes, k, device = packed.num_nodes, self.k, packed.edge_index.device
        dense_count, dense_rows, batched_count = counts
        method = self.batched_solver[0]  # type: ignore[index]
        solved_values = torch.zeros(dense_count, k, dtype=torch.get_default_dtype(), device=device)
        solved_vectors = solved_values.new_zeros(dense_rows, k)
        graphs, rows, first, row = [], [], 0, 0
        selected = (torch.arange(batched_count, device=device) if batched_count == packed.num_graphs
                    else (dense & ~sparse).nonzero().squeeze(1))
        for batch in dense_batches(packed, entries, selected):
            count, n = batch.graphs.numel(), batch.n
            m = min(k, n)
            pair_values, pair_vectors = self._solve_dense(batch.operators, method, m)
            into_values = solved_values[first:first + count]
            into_vectors = solved_vectors[row:row + count * n].view(count, n, k)
            (into_values if m == k else into_values[:, :m]).copy_(pair_values)
            (into_vectors if m == k else into_vectors[..., :m]).copy_(pair_vectors)
            graphs.append(batch.graphs)
            rows.append(batch.rows)
            first, row = first + count, row + count * n
            bar.update(count)
        for g in (sparse.nonzero().squeeze(1).tolist() if first < dense_count else ()):
            n, start = int(num_nodes[g]), int(packed.node_ptr[g])
            m = min(k, n)
            pair_values, pair_vectors = sparse_eigh_extremal(sparse_operator(packed, entries, g), m,
                                                             self.which, check_finite=False)
            solved_values[first, :m], solved_vectors[row:row + n, :m] = pair_values, pair_vectors
            graphs.append(torch.tensor([g], device=device))
            rows.append(torch.arange(start, start + n, device=device))
            first, row = first + 1, row + n
            bar.update(1)
        return solved_values, solved_vectors, graphs, rows

    def _solve_dense(self, operators: Tensor, method: str, m: int) -> Tuple[Tensor, Tensor]:
        """``m`` pairs of each dense operator ``(B, n, n)`` in ``which`` order (signs not yet fixed).

        ``method="lapack"`` calls LAPACK directly: the operators are symmetric by construction
        (checked to rounding by :func:`~lowrank_gnn.transforms.packed.dense_batches`; LAPACK
        reads one triangle) and their entries finite (the weights were checked), so
        :func:`~lowrank_gnn.eigen.batched_eigh`'s symmetrisation pass is skipped. With
        ``which="smallest"`` or ``"largest"`` it is :func:`~lowrank_gnn.linalg.eigh_extremal`
        (on the CPU, LAPACK's ``?syevr`` for the ``m`` wanted pairs only where that measured
        faster than a full ``eigh``: from 64 nodes and ``m <= n / 10``); with ``"magnitude"`` a
        full ``eigh`` and the documented order.
        """
        if method == "lapack" and self.which != "magnitude":
            return eigh_extremal(operators, m, self.which, check_finite=False)
        values, vectors = torch.linalg.eigh(operators) if method == "lapack" else batched_eigh(operators, method)
        if self.which == "smallest":
            return values[..., :m], vectors[..., :m]
        index = order_indices(values, self.which)[..., :m]
        return values.gather(-1, index), vectors.gather(-1, index.unsqueeze(-2).expand(*vectors.shape[:-1], m))

    def _solve_one(self, data: Data) -> Tuple[int, Tensor, Tensor, Optional[Tuple[Tensor, Tensor]]]:
        """One graph through the backend: ``(m, values (m,), vectors (n, m), component attributes)``."""
        edge_index, weight, n = data.edge_index, data.edge_weight, data.num_nodes
        op: Any
        if self.operator == "laplacian":
            op = laplacian(edge_index, weight, n, normalization="sym")
        else:
            op = normalized_adjacency(edge_index, weight, n, add_self_loops=self.add_self_loops)
        dtype = torch.get_default_dtype()
        available, component = n, None
        if self.deflate_components:
            _, labels = connected_components(op)
            op = deflate_components(op, eigenvalue=DEFLATED_SENTINEL[self.which])  # O(n), no (n, c) basis
            available = n - op.num_components
            root = torch.arange(n, device=labels.device)
            index = root.new_full((int(labels.max()) + 1,), n).scatter_reduce(0, labels, root, reduce="amin")
            component = (op.entries.to(dtype), index[labels])  # v_C at each node (0 where no vector)
        m = min(self.k, available)
        if m == 0:  # a deflated graph whose every direction is in the deflated block
            return 0, torch.zeros(0, dtype=dtype), torch.zeros(n, 0, dtype=dtype), component
        pairs = self._backend(m)(op)
        return m, pairs.eigenvalues.detach().to(dtype), pairs.eigenvectors.detach().to(dtype), component

    def __repr__(self) -> str:
        extra = ", deflate_components=True" if self.deflate_components else ""
        return f"{type(self).__name__}(k={self.k}, operator={self.operator!r}, which={self.which!r}{extra})"


def result_dtype() -> torch.dtype:
    """``torch.get_default_dtype()``, the dtype the transforms store their results in; half precision
    is refused, as everywhere in the library (the precision policy of ``docs/guides/reliability.md``)."""
    dtype = torch.get_default_dtype()
    if dtype in HALF_PRECISION:
        raise TypeError(f"torch.get_default_dtype() is {dtype}, the dtype eigenpairs are stored in, but lowrank_gnn "
                        f"computes in float32 or float64 only (half precision cannot resolve eigenvalue gaps or keep "
                        f"a basis orthonormal); compute them under torch.set_default_dtype(torch.float32) and cast "
                        f"the stored attributes afterwards if needed")
    return dtype


def _check_solving(backend: EigenBackend) -> None:
    """Refuses a backend with learned state (:attr:`~lowrank_gnn.eigen.EigenBackend.learns_state`)."""
    if backend.learns_state:
        raise ValueError(f"backend {type(backend).__name__} does not solve the eigenproblem: it returns a basis "
                         f"trained across calls alongside a model, which for a graph solved once is its random "
                         f"starting basis; pass 'exact', 'stable' or 'batched_dc', which solve every graph to "
                         f"convergence, or use the amortized backend inside a layer such as LowRankGCNConv")
