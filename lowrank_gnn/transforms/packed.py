"""Many graphs in one set of flat tensors, and dense graph operators built from it per size bucket."""
from __future__ import annotations

from itertools import accumulate
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import numpy
import torch
from torch import Tensor
from torch_geometric.data import Data

from .._validation import check_floating, check_index_dtype
from ..eigen.base import SIGN_PIVOT_FRACTION
from ..operators.base import symmetry_tolerance

#: Largest number of float64 entries of one buffer of dense operators, hence of one batch
#: (``B * n * n``): 3.75 Mi entries, 30 MB, just below glibc's largest mmap threshold (32 MB), so
#: that a freed buffer (and each batch's LAPACK copy and outputs) can stay on the heap for reuse
#: instead of being mapped and page-faulted afresh, and a dataset whose operators fit in one buffer
#: (PROTEINS: 27 MB) is built in one. Measured (one thread, ``precompute_eigenpairs`` of
#: ``LaplacianEigenvectorPE(8)``, best of 5 per process, three alternating rounds, load 2.0-2.7):
#: 20,000 synthetic molecules (``benchmarks/precompute.py``) 907-966 ms per pass against 940-973 ms
#: with 32 Mi entries (256 MB) and 942-975 ms with 2 Mi; PROTEINS 198-211 ms against 199-203 ms
#: (the same single buffer) and 197-209 ms with 2 Mi, whose two buffers page-faulted again in most
#: passes (non-solver time 28-33 ms against 29-30 and 31-33 ms).
MAX_BATCH_ENTRIES = 3840 * 1024

#: The same bound on other devices (GPUs): 32 Mi entries (256 MB), larger batches for the batched
#: solvers; the CPU bound's reason (glibc's mmap threshold) does not apply there. Not measured on a GPU.
MAX_DEVICE_BATCH_ENTRIES = 32 * 1024 * 1024

#: Entries of ``vectors`` that :func:`canonical_signs_per_graph` handles at a time: 512 Ki (2 MB of
#: float32, about a core's L2 cache). Measured (one thread, float32 ``(N, 9)`` vectors of graphs of
#: 9-38 nodes, best of 3, load 1.5-1.9): 250,000 graphs 407-416 ms against 632 ms in one block
#: (744 ms for the single-block code with two more ``(N, k)`` temporaries), 1 Mi entries 430-445 ms,
#: 2 Mi 448-619 ms; 20,000 graphs 29-34 ms against 45 ms in one block.
SIGN_BLOCK_ENTRIES = 512 * 1024


class PackedGraphs(NamedTuple):
    r"""``G`` graphs as flat tensors, each graph's nodes numbered from 0.

    Attributes:
        num_nodes (LongTensor): ``(G,)`` nodes per graph.
        edge_ptr (LongTensor): ``(G + 1,)``: graph ``g``'s edges are columns
            ``edge_ptr[g]:edge_ptr[g + 1]`` of ``edge_index``.
        edge_index (LongTensor): ``(2, E)`` edges, local node indices.
        edge_weight (Tensor): ``(E,)`` float64 weights (1 for graphs without ``edge_weight``).

    For one graph, ``edge_index`` and ``edge_weight`` may be the graph's own tensors (no copy):
    code that takes a ``PackedGraphs`` reads them and never writes into them.
    """

    num_nodes: Tensor
    edge_ptr: Tensor
    edge_index: Tensor
    edge_weight: Tensor

    @property
    def num_graphs(self) -> int:
        return self.num_nodes.numel()

    @property
    def node_ptr(self) -> Tensor:
        """``(G + 1,)``: graph ``g``'s nodes are rows ``node_ptr[g]:node_ptr[g + 1]`` of node-level outputs."""
        return torch.cat([self.num_nodes.new_zeros(1), self.num_nodes.cumsum(0)])

    def graph(self, g: int) -> Data:
        """Graph ``g`` as a ``Data`` object (edge_index, edge_weight, num_nodes)."""
        start, end = int(self.edge_ptr[g]), int(self.edge_ptr[g + 1])
        return Data(edge_index=self.edge_index[:, start:end], edge_weight=self.edge_weight[start:end],
                    num_nodes=int(self.num_nodes[g]))


#: How to give a graph stored as a sparse ``adj_t`` (PyG's ``ToSparseTensor``) the ``edge_index`` it needs.
ADJ_T_FIX = ("keep edge_index with ToSparseTensor(remove_edge_index=False), or set it from adj_t: "
             "data.edge_index, data.edge_weight = torch_geometric.utils.to_edge_index(data.adj_t) (adj_t is the "
             "transposed adjacency, whose edges are the same for an undirected graph)")


def _edge_index_of(data: Data, g: int) -> Tensor:
    edge_index = getattr(data, "edge_index", None)
    if edge_index is None:
        if getattr(data, "adj_t", None) is not None:
            raise ValueError(f"graph {g} holds its edges as a sparse adj_t (ToSparseTensor) and has no edge_index, "
                             f"which every graph needs; {ADJ_T_FIX}")
        raise ValueError(f"graph {g} has no edge_index; every graph needs data.edge_index of shape (2, num_edges) "
                         f"(only a graph that has no edges at all takes torch.empty(2, 0, dtype=torch.long))")
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        shape = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index).__name__
        raise ValueError(f"graph {g}: data.edge_index must have shape (2, num_edges) (got {shape})")
    try:
        check_index_dtype("data.edge_index", edge_index)
    except TypeError as error:
        raise TypeError(f"graph {g}: {error}") from None
    return plain_index(edge_index)


def plain_index(edge_index: Tensor) -> Tensor:
    """``edge_index`` as a plain tensor: PyG's ``EdgeIndex`` gives its index tensor (no copy), whose
    operations then follow PyTorch's rules instead of ``EdgeIndex``'s (which needs sparse sizes)."""
    as_tensor = getattr(edge_index, "as_tensor", None)
    return as_tensor() if type(edge_index) is not Tensor and callable(as_tensor) else edge_index


def check_edge_weight_dtype(weight: Tensor, where: str = "") -> None:
    """``data.edge_weight`` is float32 or float64: the library's precision policy refuses half precision
    (and integer or complex weights) with a message that says how to cast; ``where`` prefixes it."""
    try:
        check_floating("data.edge_weight", weight)
    except TypeError as error:
        raise TypeError(f"{where}{error}") from None


def check_edge_weight_shape(shape: Any, num_edges: int, g: int) -> None:
    """Graph ``g``'s ``data.edge_weight`` has shape ``(num_edges,)`` (``shape``: a tuple, or the type name
    of something that is not a tensor); ``(num_edges, 1)`` would broadcast against the edges instead."""
    if shape != (num_edges,):
        raise ValueError(f"graph {g}: data.edge_weight must have shape (num_edges,) = ({num_edges},) (got {shape})")


def pack_graphs(graphs: Sequence[Data]) -> PackedGraphs:
    """Flatten a sequence of ``Data`` objects (with or without ``edge_weight``, mixed) into :class:`PackedGraphs`.

    One graph's ``edge_index`` (int64) and float64 ``edge_weight`` are used as they are, without
    a copy: the packed tensors are only read.
    """
    indices, weights, num_nodes, weighted = [], [], [], False
    for g, data in enumerate(graphs):
        edge_index = _edge_index_of(data, g)
        n = data.num_nodes
        if n is None:
            raise ValueError(f"graph {g} has no nodes attribute from which num_nodes follows; set data.num_nodes")
        weight = getattr(data, "edge_weight", None)
        if weight is None:
            weight = torch.ones(edge_index.shape[1], dtype=torch.float64, device=edge_index.device)
        else:
            check_edge_weight_shape(tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__,
                                    edge_index.shape[1], g)
            check_edge_weight_dtype(weight, f"graph {g}: ")
            weighted = True
        indices.append(edge_index)
        weights.append(weight.detach())
        num_nodes.append(int(n))
    device = indices[0].device if indices else torch.device("cpu")
    edge_ptr = [0, *accumulate(index.shape[1] for index in indices)]
    edge_index = (_concatenate(indices, 1).long() if indices else torch.empty(2, 0, dtype=torch.long)).to(device)
    edge_weight = (_concatenate([w.to(device, torch.float64) for w in weights], 0) if weights
                   else torch.empty(0, dtype=torch.float64))
    packed = PackedGraphs(torch.tensor(num_nodes, dtype=torch.long, device=device),
                          torch.tensor(edge_ptr, dtype=torch.long, device=device), edge_index, edge_weight)
    check_packed(packed, weighted)
    return packed


def _concatenate(tensors: Sequence[Tensor], dim: int) -> Tensor:
    """``torch.cat`` of ``tensors`` along ``dim``; one tensor is returned as it is (no copy)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors), dim)


def check_packed(packed: PackedGraphs, weighted: bool = True) -> None:
    """Vectorised input checks; each error names the first offending graph.

    Valid input costs one reduction per check (edge index range, weights finite and
    non-negative); the offending graph is searched only once a check has failed.
    ``weighted=False`` (every weight is a 1 filled in for a graph without ``edge_weight``)
    skips the weight check.
    """
    num_nodes, edge_index, weight = packed.num_nodes, packed.edge_index, packed.edge_weight
    if bool((num_nodes < 0).any()):
        g = int((num_nodes < 0).nonzero()[0])
        raise ValueError(f"graph {g} has num_nodes={int(num_nodes[g])}; it must be >= 0")
    if not edge_index.numel():
        return
    bound = _per_edge(packed, num_nodes)
    if bool(edge_index.min() < 0) or bool((edge_index.amax(0) >= bound).any()):
        owner = edge_graph(packed)
        bad = (edge_index < 0).any(0) | (edge_index >= bound).any(0)
        g = int(owner[bad.nonzero()[0]])
        local = edge_index[:, owner == g]
        raise ValueError(f"graph {g}: edge_index entries must lie in [0, num_nodes) = [0, {int(num_nodes[g])}) "
                         f"(got min {int(local.min())}, max {int(local.max())})")
    if not weighted:
        return
    low, high = torch.aminmax(weight)
    if bool(low >= 0) and bool(high < float("inf")):  # both False for NaN
        return
    owner = edge_graph(packed)
    finite = torch.isfinite(weight)
    if not bool(finite.all()):
        g = int(owner[(~finite).nonzero()[0]])
        raise ValueError(f"graph {g}: edge_weight contains NaN or Inf; clean the input first")
    g = int(owner[(weight < 0).nonzero()[0]])
    raise ValueError(f"graph {g}: edge weights must be non-negative (got min edge_weight="
                     f"{float(weight[owner == g].min()):.4g}); degrees D^(-1/2) are undefined otherwise")


def _per_edge(packed: PackedGraphs, values: Tensor) -> Tensor:
    """``values (G,)`` repeated for each of its graph's edges, ``(E,)``; for one graph the ``(1,)`` tensor
    itself, which broadcasts to the same values in elementwise operations."""
    if packed.num_graphs == 1:
        return values
    return torch.repeat_interleave(values, packed.edge_ptr.diff(), output_size=packed.edge_index.shape[1])


def edge_graph(packed: PackedGraphs) -> Tensor:
    """``(E,)``: the graph each edge belongs to."""
    counts = packed.edge_ptr.diff()
    return torch.repeat_interleave(torch.arange(packed.num_graphs, device=counts.device), counts)


class NormalizedEdges(NamedTuple):
    """A packed dataset's operator entries: one value per edge and one diagonal entry per node."""

    value: Tensor     # (E,) off-diagonal entry A_rc of each edge (0 for a self-loop folded into the diagonal)
    diagonal: Tensor  # (N,) diagonal entry of each node (before the self-loop edges still in ``value``)


def normalized_edges(packed: PackedGraphs, operator: str, add_self_loops: bool = True) -> NormalizedEdges:
    r"""The entries of every graph's operator, computed for the whole dataset at once.

    * ``"laplacian"``: :math:`L = I - D^{-1/2} A D^{-1/2}`, self-loops dropped first (as PyG's
      ``get_laplacian(normalization="sym")``),
    * ``"normalized_adjacency"``: :math:`\hat D^{-1/2}(A + I)\hat D^{-1/2}`, a self-loop of weight 1
      added to every node that has none and an existing one kept (as ``gcn_norm``);
      ``add_self_loops=False`` keeps ``A`` as given.

    Nodes of degree zero get ``D^{-1/2} = 0``. Duplicate edges add up. Every graph's sums run over
    its own edges in their order, so a graph gets the same bits alone or within a dataset.
    """
    total = int(packed.num_nodes.sum())
    if packed.num_graphs > 1:  # global node ids: each edge's graph's first node added
        offset = _per_edge(packed, packed.node_ptr[:-1])
        row, col = packed.edge_index[0] + offset, offset.add_(packed.edge_index[1])
    else:
        row, col = packed.edge_index
    weight, device = packed.edge_weight, packed.edge_weight.device
    loop = row == col
    if operator == "laplacian" or add_self_loops:
        weight = weight.masked_fill(loop, 0.0)
    loops = torch.zeros(total, dtype=torch.float64, device=device)
    if operator == "normalized_adjacency" and add_self_loops:
        loops += 1.0
        where = loop.nonzero().squeeze(1)
        loops[row[where]] = packed.edge_weight[where]
    degree = loops.index_add(0, row if operator == "laplacian" else col, weight)
    inverse_root = degree.pow(-0.5)
    inverse_root.masked_fill_(torch.isinf(inverse_root), 0.0)
    value = inverse_root.index_select(0, row).mul_(weight).mul_(inverse_root.index_select(0, col))
    if bool((value == 0).any()):  # rare (zero weights, dropped self-loops, overflowing degrees): the exact tests
        _check_degrees_finite(packed, degree)
        _check_no_edge_at_isolated_node(packed, weight, torch.minimum(inverse_root[row], inverse_root[col]))
    if operator == "laplacian":
        return NormalizedEdges(value.neg_(), torch.ones(total, dtype=torch.float64, device=device))
    return NormalizedEdges(value, loops * inverse_root ** 2)


def _check_degrees_finite(packed: PackedGraphs, degree: Tensor) -> None:
    """Raises, naming the graph and node, for a degree that overflows float64 (finite weights whose sum
    is not): its ``D^{-1/2}`` is 0, so its entries vanish as a directed graph's would."""
    overflow = torch.isinf(degree)
    if bool(overflow.any()):
        node = int(overflow.nonzero()[0])
        g = int(torch.searchsorted(packed.node_ptr, node, right=True)) - 1
        largest = float(packed.edge_weight[int(packed.edge_ptr[g]):int(packed.edge_ptr[g + 1])].max())
        raise ValueError(f"graph {g}: the weighted degree of node {node - int(packed.node_ptr[g])} overflows float64 "
                         f"(its edge weights sum to inf; the graph's largest weight is {largest:.4g}); "
                         f"rescale data.edge_weight, e.g. divide it by its maximum (the normalized Laplacian does not "
                         f"change when all weights are scaled alike)")


def _check_no_edge_at_isolated_node(packed: PackedGraphs, weight: Tensor, smaller_root: Tensor) -> None:
    """Raises, naming the graph, for an edge of positive weight at a node of degree zero: only a directed
    graph has one (its reverse edge would give that node a degree), and its entry is 0 on both sides of
    the operator, which no symmetry check of an operator can see."""
    orphan = (weight > 0) & (smaller_root == 0)
    if bool(orphan.any()):
        _raise_not_undirected(int(edge_graph(packed)[orphan.nonzero()[0]]))


class DenseBatch(NamedTuple):
    """Graphs of one size ``n`` and their dense float64 operators."""

    n: int
    graphs: Tensor     # (B,) indices into the packed graphs
    rows: Tensor       # (B * n,) the rows of node-level outputs of these graphs' nodes, graph by graph
    operators: Tensor  # (B, n, n)


def dense_batches(packed: PackedGraphs, entries: NormalizedEdges, selected: Tensor,
                  max_entries: Optional[int] = None) -> Iterator[DenseBatch]:
    """The dense operators of the ``selected`` graphs from :func:`normalized_edges`, grouped by node count.

    Graphs keep their dataset order within a size and sizes come in increasing order; a batch
    holds at most ``max_entries`` dense entries (one larger graph alone; by default
    :data:`MAX_BATCH_ENTRIES` on the CPU, :data:`MAX_DEVICE_BATCH_ENTRIES` elsewhere). Consecutive batches
    are built together, up to ``max_entries`` entries at a time, by one scatter of their edges
    into one flat buffer, of which each batch is a view (one ``split`` per chunk), so many small
    size groups cost little more than one. Each operator's entries are summed in the same
    order (its graph's edges in their order, then the diagonal) whatever the other graphs, so a
    graph gets the same bits alone or within a dataset.

    Raises, naming a graph (the first in size order), when an operator is not symmetric (a directed
    graph): each edge's entry is compared with its mirror, ``O(E)``, ``|A_ij - A_ji| <= tol * max(|A_ij|, |A_ji|)``
    with :func:`~lowrank_gnn.operators.base.symmetry_tolerance` (rounding in the normalisation
    leaves a few ulps; a missing reverse edge leaves ``A_ji = 0``); a chunk whose entries all equal
    their mirrors exactly (unweighted graphs: both are ``d_i^{-1/2} d_j^{-1/2}``) skips that
    comparison after one ``torch.equal``.

    One selected graph is one batch, whose edges, values and diagonal are contiguous ranges of the
    packed tensors, taken as views: the same entries, summed in the same order, as within a chunk.
    """
    if selected.numel() == 1:
        yield _graph_batch(packed, entries, selected)
        return
    if max_entries is None:
        max_entries = MAX_BATCH_ENTRIES if packed.edge_index.device.type == "cpu" else MAX_DEVICE_BATCH_ENTRIES
    graphs = _sorted_graphs(packed, selected)
    batches = []  # (first, end, n): positions in ``graphs.order``
    values, group_sizes = torch.unique_consecutive(graphs.sizes, return_counts=True)
    first = 0
    for n, count in zip(values.tolist(), group_sizes.tolist(), strict=True):
        per_batch = max(1, max_entries // max(1, n * n))
        batches += [(lo, min(lo + per_batch, first + count), n) for lo in range(first, first + count, per_batch)]
        first += count
    chunk: list = []
    for index, batch in enumerate(batches):
        chunk.append(batch)
        following = batches[index + 1] if index + 1 < len(batches) else None
        if following is None or graphs.area_ptr[following[1]] - graphs.area_ptr[chunk[0][0]] > max_entries:
            yield from _chunk_batches(packed, entries, graphs, chunk)
            chunk = []


class _SortedGraphs(NamedTuple):
    """The selected graphs in size order (stable), with what their chunks are cut from."""

    order: Tensor       # (G,) graph indices, sizes non-decreasing, dataset order within a size
    sizes: Tensor       # (G,) their node counts
    starts: Tensor      # (G,) their first edges in the packed tensors
    counts: Tensor      # (G,) their edge counts
    graph_rows: Tensor  # (G,) their first rows of node-level outputs
    pointers: Tensor    # (3, G + 1) dense entries, nodes and edges of the graphs before each position
    area_ptr: list      # pointers[0] as ints
    node_ptr: list      # pointers[1] as ints
    edge_ptr: list      # pointers[2] as ints


def _sorted_graphs(packed: PackedGraphs, selected: Tensor) -> _SortedGraphs:
    order = selected[torch.argsort(packed.num_nodes[selected], stable=True)]
    sizes = packed.num_nodes[order]
    starts = packed.edge_ptr[order]
    counts = packed.edge_ptr[order + 1] - starts
    pointers = torch.stack([sizes * sizes, sizes, counts]).cumsum(1)
    pointers = torch.cat([pointers.new_zeros(3, 1), pointers], 1)
    area_ptr, node_ptr, edge_ptr = pointers.tolist()
    return _SortedGraphs(order, sizes, starts, counts, packed.node_ptr.index_select(0, order), pointers,
                         area_ptr, node_ptr, edge_ptr)


def _chunk_batches(packed: PackedGraphs, entries: NormalizedEdges, graphs: _SortedGraphs,
                   chunk: list) -> Iterator[DenseBatch]:
    """The batches of one chunk (consecutive positions ``lo:hi`` of ``graphs.order``), from one flat buffer."""
    lo, hi = chunk[0][0], chunk[-1][1]
    order, sizes = graphs.order, graphs.sizes
    area_ptr, node_ptr, edge_ptr = graphs.area_ptr, graphs.node_ptr, graphs.edge_ptr
    num_edges, num_nodes = edge_ptr[hi] - edge_ptr[lo], node_ptr[hi] - node_ptr[lo]
    if hi - lo == 1:
        layout = _graph_layout(packed, entries, chunk[0][2], int(graphs.starts[lo]), int(graphs.graph_rows[lo]),
                               num_edges)
    else:
        # each graph's first entry, node and edge within the chunk
        block, node_offset, edge_offset = graphs.pointers[:, lo:hi] - graphs.pointers[:, lo:lo + 1]
        layout = _chunk_layout(packed, entries, sizes[lo:hi], graphs.starts[lo:hi] - edge_offset,
                               graphs.counts[lo:hi], graphs.graph_rows[lo:hi] - node_offset,
                               block - node_offset * (sizes[lo:hi] + 1), block, num_edges, num_nodes)
    flat = _scatter(layout, area_ptr[hi] - area_ptr[lo], order[lo:hi])
    if len(chunk) == 1:
        yield DenseBatch(chunk[0][2], order[lo:hi], layout.rows, flat.view(hi - lo, chunk[0][2], chunk[0][2]))
        return
    # every batch's views at once (one split per tensor instead of a slice per batch and tensor)
    batch_graphs = order[lo:hi].split([end - first for first, end, _ in chunk])
    batch_rows = layout.rows.split([node_ptr[end] - node_ptr[first] for first, end, _ in chunk])
    operators = flat.split([area_ptr[end] - area_ptr[first] for first, end, _ in chunk])
    for (first, end, n_batch), graph_block, row_block, operator_block in zip(chunk, batch_graphs, batch_rows,
                                                                            operators, strict=True):
        yield DenseBatch(n_batch, graph_block, row_block, operator_block.view(end - first, n_batch, n_batch))


def _graph_batch(packed: PackedGraphs, entries: NormalizedEdges, selected: Tensor) -> DenseBatch:
    """The dense batch of the one ``selected`` graph."""
    g = int(selected[0])
    n, first_edge, end_edge, first_row = torch.cat([packed.num_nodes[g:g + 1], packed.edge_ptr[g:g + 2],
                                                    packed.node_ptr[g:g + 1]]).tolist()
    layout = _graph_layout(packed, entries, n, first_edge, first_row, end_edge - first_edge)
    return DenseBatch(n, selected, layout.rows, _scatter(layout, n * n, selected).view(1, n, n))


def _scatter(layout: "_Layout", area: int, graphs: Tensor) -> Tensor:
    """The flat buffer (``area`` float64 entries) of the dense operators of a chunk's ``graphs``:
    the edges' values added at their addresses, each compared with its mirror, then the diagonal."""
    flat = torch.zeros(area, dtype=torch.float64, device=layout.address.device)
    flat.index_add_(0, layout.address, layout.value)
    entry, reflected = flat.index_select(0, layout.address), flat.index_select(0, layout.mirror)
    if not torch.equal(entry, reflected):  # exactly symmetric (e.g. unweighted graphs): no tolerance pass
        difference = (entry - reflected).abs_()
        bad = difference > torch.maximum(entry.abs_(), reflected.abs_()).mul_(symmetry_tolerance(flat.dtype))
        if bool(bad.any()):
            owner = 0 if layout.edge_graph is None else int(layout.edge_graph[bad.nonzero()[0]])
            _raise_not_undirected(int(graphs[owner]))
    flat.index_add_(0, layout.diagonal, layout.diagonal_value)
    return flat


class _Layout(NamedTuple):
    """Where a chunk's operator entries go in its flat buffer of dense operators."""

    address: Tensor         # (E,) each edge's entry A_rc
    mirror: Tensor          # (E,) its mirror A_cr
    value: Tensor           # (E,) the value added at ``address``
    diagonal: Tensor        # (N,) each node's diagonal entry
    diagonal_value: Tensor  # (N,) the value added there
    rows: Tensor            # (N,) the rows of node-level outputs of the chunk's nodes, graph by graph
    edge_graph: Optional[Tensor]  # (E,) each edge's graph, a position within the chunk (None: one graph)


def _chunk_layout(packed: PackedGraphs, entries: NormalizedEdges, size: Tensor, edge_start: Tensor, counts: Tensor,
                  row_start: Tensor, diagonal_start: Tensor, block: Tensor, num_edges: int, num_nodes: int) -> _Layout:
    """The layout of a chunk's graphs (sizes ``size``, edges ``counts``): each graph's first edge, first
    output row and first diagonal entry less its first edge, node and node's entry within the chunk
    (``edge_start``, ``row_start``, ``diagonal_start``), and its first entry in the buffer (``block``)."""
    device = size.device
    position = torch.arange(size.numel(), device=device)
    edge_graph_position = torch.repeat_interleave(position, counts, output_size=num_edges)
    edges = edge_start.index_select(0, edge_graph_position).add_(torch.arange(num_edges, device=device))
    # one gather per row: faster than index_select(1, ...) of the (2, E) tensor
    row, col = packed.edge_index[0].index_select(0, edges), packed.edge_index[1].index_select(0, edges)
    n, base = size.index_select(0, edge_graph_position), block.index_select(0, edge_graph_position)
    address = torch.addcmul(base, row, n).add_(col)
    mirror = base.addcmul_(col, n).add_(row)
    node_graph_position = torch.repeat_interleave(position, size, output_size=num_nodes)
    nodes = torch.arange(num_nodes, device=device)
    rows = row_start.index_select(0, node_graph_position).add_(nodes)
    stride = size + 1  # from one diagonal entry to the next
    diagonal = torch.addcmul(diagonal_start.index_select(0, node_graph_position), nodes,
                             stride.index_select(0, node_graph_position))
    return _Layout(address, mirror, entries.value.index_select(0, edges), diagonal,
                   entries.diagonal.index_select(0, rows), rows, edge_graph_position)


def _graph_layout(packed: PackedGraphs, entries: NormalizedEdges, n: int, first_edge: int, first_row: int,
                  num_edges: int) -> _Layout:
    """:func:`_chunk_layout` of one graph of ``n`` nodes: its edges and rows are contiguous ranges
    (``first_edge``, ``first_row`` on), taken as views, and its block starts at entry 0."""
    device = packed.edge_index.device
    edges = slice(first_edge, first_edge + num_edges)
    row, col = packed.edge_index[0, edges], packed.edge_index[1, edges]
    rows = torch.arange(first_row, first_row + n, device=device)
    return _Layout(row.mul(n).add_(col), col.mul(n).add_(row), entries.value[edges],
                   torch.arange(0, n * n, n + 1, device=device), entries.diagonal[first_row:first_row + n], rows, None)


Spread = Callable[..., Tensor]


def _spreader(counts: Tensor, total: int) -> Spread:
    """``spread(values, out=None)``: a ``(G, ...)`` tensor's row ``g`` repeated ``counts[g]`` times
    (``total`` rows; ``index_select``, into ``out`` when given).

    For one graph it returns the ``(1, ...)`` tensor itself: elementwise operations broadcast it
    to the same values, without the ``repeat_interleave`` and ``index_select`` of the general case.
    """
    if counts.numel() == 1:
        return _same
    position = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts,
                                       output_size=total)

    def spread(values: Tensor, out: Optional[Tensor] = None) -> Tensor:
        return torch.index_select(values, 0, position, out=out)

    return spread


def _same(values: Tensor, out: Optional[Tensor] = None) -> Tensor:
    return values


def _raise_not_undirected(g: int) -> None:
    raise ValueError(f"graph {g} is not undirected (its operator is not symmetric), and the eigenpairs "
                     f"of a symmetric operator are computed; symmetrise its edge_index first, e.g. "
                     f"torch_geometric.utils.to_undirected(edge_index, edge_weight, reduce='mean')")


def sparse_operator(packed: PackedGraphs, entries: NormalizedEdges, g: int) -> Any:
    """Graph ``g``'s operator from :func:`normalized_edges` as a SciPy CSR matrix (float64, CPU).

    Duplicate entries add up, as in :func:`dense_batches`, and the same symmetry check raises,
    naming the graph, for a directed graph (entries compared with their mirrors to
    :func:`~lowrank_gnn.operators.base.symmetry_tolerance`).
    """
    import scipy.sparse

    start, end = int(packed.edge_ptr[g]), int(packed.edge_ptr[g + 1])
    first, n = int(packed.node_ptr[g]), int(packed.num_nodes[g])
    row, col = packed.edge_index[:, start:end].cpu().numpy()
    nodes = numpy.arange(n)
    diagonal = entries.diagonal[first:first + n].cpu().numpy()
    values = numpy.concatenate([entries.value[start:end].cpu().numpy(), diagonal])
    matrix = scipy.sparse.csr_matrix((values, (numpy.concatenate([row, nodes]), numpy.concatenate([col, nodes]))),
                                     shape=(n, n))
    mirror = matrix.T.tocsr()
    excess = abs(matrix - mirror) - symmetry_tolerance(torch.float64) * abs(matrix).maximum(abs(mirror))
    if excess.nnz and excess.data.max() > 0:
        _raise_not_undirected(g)
    return matrix


def canonical_signs_per_graph(vectors: Tensor, num_nodes: Tensor) -> Tensor:
    """:func:`~lowrank_gnn.eigen.canonical_signs` applied to each graph's rows of ``vectors (N, k)`` at once.

    Each graph's column is flipped so that its first entry with ``|u_i| >= 0.1 max|u|`` (over the
    graph's rows) is positive: the same pivot, hence the same bits, as ``canonical_signs`` on the
    graph alone. Idempotent: columns already in canonical form are left unchanged.

    Only elementwise passes and two segment maxima over each graph's rows
    (``torch.segment_reduce``, several times faster on the CPU than ``scatter_reduce``): the
    largest ``|u|`` per graph and column, then the largest key ``[|u_r| >= 0.1 max|u|] (n - r)``
    (``r`` the row within its graph), which is ``n`` minus the first significant row. The keys are
    exact in ``vectors``' dtype up to ``N = 2 / eps`` rows (float32: 16.7 million); beyond, float64.

    One graph (the per-graph transform, or a block of one large graph) skips the per-row
    ``repeat_interleave`` and ``index_select`` of per-graph values: its ``(1, k)`` values
    broadcast, the same products on the same numbers.
    Graphs are taken in blocks of about :data:`SIGN_BLOCK_ENTRIES` entries (whole graphs, a larger
    graph alone), so that each block's temporaries stay small enough for the allocator to reuse
    instead of mapping (and page-faulting) fresh memory for every pass. The result carries no
    gradient (it is written into preallocated outputs): the transforms call it on solver output
    under ``torch.no_grad()``.
    """
    if not vectors.numel():
        return vectors
    rows = vectors.shape[0]
    block_rows = max(1, SIGN_BLOCK_ENTRIES // vectors.shape[1])
    if rows <= block_rows:
        return _block_signs(vectors, num_nodes)
    end = num_nodes.cumsum(0)
    cuts = torch.searchsorted(end, torch.arange(block_rows, rows, block_rows, device=vectors.device), right=True)
    # each block starts at the graph that holds its first row: distinct cuts give blocks with rows
    cuts = torch.cat([cuts.new_zeros(1), cuts, cuts.new_full((1,), num_nodes.numel())]).unique_consecutive()
    graph_cuts, row_cuts = cuts.tolist(), torch.cat([end.new_zeros(1), end]).index_select(0, cuts).tolist()
    out = torch.empty_like(vectors)
    for g0, g1, r0, r1 in zip(graph_cuts[:-1], graph_cuts[1:], row_cuts[:-1], row_cuts[1:], strict=True):
        _block_signs(vectors[r0:r1], num_nodes[g0:g1], out[r0:r1])
    return out


def _block_signs(vectors: Tensor, num_nodes: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """:func:`canonical_signs_per_graph` of graphs whose rows are all of ``vectors``, written to ``out``
    (by default the memory of the pivot threshold's ``(N, k)`` temporary)."""
    rows = vectors.shape[0]
    device = vectors.device
    spread = _spreader(num_nodes, rows)  # per graph -> per row
    magnitude = vectors.abs()
    largest = _segment_max(magnitude, num_nodes)  # 0 for no rows
    threshold = spread(largest.mul_(SIGN_PIVOT_FRACTION))
    key = magnitude.ge_(threshold)                              # 1.0 / 0.0 in place
    if rows > 2 / torch.finfo(key.dtype).eps:
        key = key.to(torch.float64)
    end = num_nodes.cumsum(0)                                   # one past each graph's last row
    rank = torch.sub(spread(end), torch.arange(rows, device=device))  # n - r: n at the graph's first row
    key.mul_(rank.to(key.dtype).unsqueeze(1))
    first = _segment_max(key, num_nodes)
    pivot = (end.unsqueeze(1) - first.long()).clamp_(max=rows - 1)  # graphs without rows: any row, never used
    sign = torch.sign(vectors.gather(0, pivot))
    sign.masked_fill_(sign == 0, 1.0)                           # a zero column is kept
    if out is None:
        out = threshold if threshold.shape == vectors.shape else torch.empty_like(vectors)
    return torch.mul(spread(sign, out), vectors, out=out)


def _segment_max(values: Tensor, num_nodes: Tensor) -> Tensor:
    """``(G, k)``: the largest of each graph's rows of ``values (N, k) >= 0`` (0 for a graph without rows).

    One graph: ``amax`` over all rows, the same maximum without ``segment_reduce``'s setup (a few
    times its cost on a small graph).
    """
    if num_nodes.numel() == 1 and values.shape[0]:
        return values.amax(0, keepdim=True)
    return torch.segment_reduce(values, "max", lengths=num_nodes, axis=0, initial=0)
