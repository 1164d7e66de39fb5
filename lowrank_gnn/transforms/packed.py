"""Many graphs in one set of flat tensors, and dense graph operators built from it per size bucket."""
from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from ..operators.base import symmetry_tolerance

#: Largest number of float64 entries of one batch of dense operators (``B * n * n``): 256 MB.
MAX_BATCH_ENTRIES = 32 * 1024 * 1024


class PackedGraphs(NamedTuple):
    r"""``G`` graphs as flat tensors, each graph's nodes numbered from 0.

    Attributes:
        num_nodes (LongTensor): ``(G,)`` nodes per graph.
        edge_ptr (LongTensor): ``(G + 1,)``: graph ``g``'s edges are columns
            ``edge_ptr[g]:edge_ptr[g + 1]`` of ``edge_index``.
        edge_index (LongTensor): ``(2, E)`` edges, local node indices.
        edge_weight (Tensor): ``(E,)`` float64 weights (1 for graphs without ``edge_weight``).
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


def _edge_index_of(data: Data, g: int) -> Tensor:
    edge_index = getattr(data, "edge_index", None)
    if edge_index is None:
        raise ValueError(f"graph {g} has no edge_index; every graph needs data.edge_index (use an empty "
                         f"(2, 0) tensor for a graph without edges)")
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        shape = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index).__name__
        raise ValueError(f"graph {g}: data.edge_index must have shape (2, num_edges) (got {shape})")
    if edge_index.dtype not in (torch.long, torch.int):
        raise TypeError(f"graph {g}: data.edge_index must have an integer dtype (got {edge_index.dtype})")
    return edge_index


def pack_graphs(graphs: Sequence[Data]) -> PackedGraphs:
    """Flatten a sequence of ``Data`` objects (with or without ``edge_weight``, mixed) into :class:`PackedGraphs`."""
    indices, weights, num_nodes = [], [], []
    for g, data in enumerate(graphs):
        edge_index = _edge_index_of(data, g)
        n = data.num_nodes
        if n is None:
            raise ValueError(f"graph {g} has no nodes attribute from which num_nodes follows; set data.num_nodes")
        weight = getattr(data, "edge_weight", None)
        if weight is None:
            weight = torch.ones(edge_index.shape[1], dtype=torch.float64, device=edge_index.device)
        elif not isinstance(weight, Tensor) or weight.shape != (edge_index.shape[1],):
            shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
            raise ValueError(f"graph {g}: data.edge_weight must have shape (num_edges,) = "
                             f"({edge_index.shape[1]},) (got {shape})")
        elif not torch.is_floating_point(weight):
            raise TypeError(f"graph {g}: data.edge_weight must have a floating-point dtype (got {weight.dtype})")
        indices.append(edge_index)
        weights.append(weight.detach())
        num_nodes.append(int(n))
    device = indices[0].device if indices else torch.device("cpu")
    counts = torch.tensor([index.shape[1] for index in indices], dtype=torch.long)
    edge_index = (torch.cat(indices, 1).long() if indices else torch.empty(2, 0, dtype=torch.long)).to(device)
    edge_weight = (torch.cat([w.to(device, torch.float64) for w in weights]) if weights
                   else torch.empty(0, dtype=torch.float64))
    packed = PackedGraphs(torch.tensor(num_nodes, dtype=torch.long, device=device),
                          torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(device), edge_index, edge_weight)
    check_packed(packed)
    return packed


def check_packed(packed: PackedGraphs) -> None:
    """Vectorised input checks; each error names the first offending graph."""
    num_nodes, edge_index, weight = packed.num_nodes, packed.edge_index, packed.edge_weight
    if bool((num_nodes < 0).any()):
        g = int((num_nodes < 0).nonzero()[0])
        raise ValueError(f"graph {g} has num_nodes={int(num_nodes[g])}; it must be >= 0")
    if not edge_index.numel():
        return
    owner = edge_graph(packed) if packed.num_graphs > 1 else torch.zeros_like(edge_index[0])
    bad = (edge_index < 0).any(0) | (edge_index >= num_nodes[owner]).any(0)
    if bool(bad.any()):
        g = int(owner[bad.nonzero()[0]])
        local = edge_index[:, owner == g]
        raise ValueError(f"graph {g}: edge_index entries must lie in [0, num_nodes) = [0, {int(num_nodes[g])}) "
                         f"(got min {int(local.min())}, max {int(local.max())})")
    finite = torch.isfinite(weight)
    if not bool(finite.all()):
        g = int(owner[(~finite).nonzero()[0]])
        raise ValueError(f"graph {g}: edge_weight contains NaN or Inf; clean the input first")
    if bool((weight < 0).any()):
        g = int(owner[(weight < 0).nonzero()[0]])
        raise ValueError(f"graph {g}: edge weights must be non-negative (got min edge_weight="
                         f"{float(weight[owner == g].min()):.4g}); degrees D^(-1/2) are undefined otherwise")


def edge_graph(packed: PackedGraphs) -> Tensor:
    """``(E,)``: the graph each edge belongs to."""
    counts = packed.edge_ptr.diff()
    return torch.repeat_interleave(torch.arange(packed.num_graphs, device=counts.device), counts)


class SizeBucket(NamedTuple):
    """Graphs of one size ``n``: their indices, and their edges with the graph's position in the bucket."""

    n: int
    graphs: Tensor        # (B,) indices into the packed graphs
    edge_index: Tensor    # (2, E_b) local node indices
    edge_weight: Tensor   # (E_b,)
    edge_position: Tensor  # (E_b,) position of each edge's graph in ``graphs``


def size_buckets(packed: PackedGraphs, selected: Tensor, max_entries: int = MAX_BATCH_ENTRIES) -> Iterator[SizeBucket]:
    """The ``selected`` graphs grouped by node count, in batches of at most ``max_entries`` dense entries.

    Graphs keep their dataset order inside a bucket; buckets come in increasing ``n``.
    """
    if selected.numel() <= 1:  # one graph (the per-graph transform): no sorting
        for g in selected.tolist():
            start, end = int(packed.edge_ptr[g]), int(packed.edge_ptr[g + 1])
            yield SizeBucket(int(packed.num_nodes[g]), selected, packed.edge_index[:, start:end],
                             packed.edge_weight[start:end], selected.new_zeros(end - start))
        return
    sizes = packed.num_nodes[selected]
    order = selected[torch.argsort(sizes, stable=True)]
    sizes = packed.num_nodes[order]
    starts = packed.edge_ptr[order]
    counts = packed.edge_ptr[order + 1] - starts
    # the edges of the graphs in ``order``, contiguous: range [start_g, start_g + count_g) per graph
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    total = int(offsets[-1])
    edge_perm = (torch.repeat_interleave(starts - offsets[:-1], counts, output_size=total)
                 + torch.arange(total, device=counts.device))
    values, first = torch.unique_consecutive(sizes, return_counts=True)
    bounds = torch.cat([first.new_zeros(1), first.cumsum(0)]).tolist()
    for i, n in enumerate(values.tolist()):
        per_batch = max(1, max_entries // max(1, n * n))
        for lo in range(bounds[i], bounds[i + 1], per_batch):
            hi = min(lo + per_batch, bounds[i + 1])
            e_lo, e_hi = int(offsets[lo]), int(offsets[hi])
            edges = edge_perm[e_lo:e_hi]
            position = torch.repeat_interleave(torch.arange(hi - lo, device=counts.device), counts[lo:hi],
                                               output_size=e_hi - e_lo)
            yield SizeBucket(n, order[lo:hi], packed.edge_index[:, edges], packed.edge_weight[edges], position)


def dense_operators(bucket: SizeBucket, operator: str, add_self_loops: bool = True) -> Tensor:
    r"""The dense float64 operators of a bucket of ``B`` graphs of ``n`` nodes, built in one scatter.

    * ``"laplacian"``: :math:`L = I - D^{-1/2} A D^{-1/2}`, self-loops dropped first (as PyG's
      ``get_laplacian(normalization="sym")``),
    * ``"normalized_adjacency"``: :math:`\hat D^{-1/2}(A + I)\hat D^{-1/2}`, a self-loop of weight 1
      added to every node that has none (as ``gcn_norm``); ``add_self_loops=False`` keeps ``A`` as given.

    Nodes of degree zero get ``D^{-1/2} = 0``. Duplicate edges add up.

    Shapes:
        returns ``(B, n, n)``.
    """
    n, device = bucket.n, bucket.edge_index.device
    batch = bucket.graphs.numel()
    row, col = bucket.edge_index
    weight, base = bucket.edge_weight, bucket.edge_position * n
    loop = row == col
    keep = ~loop if (operator == "laplacian" or add_self_loops) else torch.ones_like(loop)
    row, col, weight, base = row[keep], col[keep], weight[keep], base[keep]
    diagonal = torch.zeros(batch * n, dtype=torch.float64, device=device)
    if operator == "normalized_adjacency" and add_self_loops:
        diagonal += 1.0
        loops = loop.nonzero().squeeze(1)
        diagonal[bucket.edge_position[loops] * n + bucket.edge_index[0, loops]] = bucket.edge_weight[loops]
    degree_index = base + (row if operator == "laplacian" else col)
    degree = diagonal.index_add(0, degree_index, weight)
    inverse_root = degree.pow(-0.5)
    inverse_root.masked_fill_(torch.isinf(inverse_root), 0.0)
    value = inverse_root[base + row] * weight * inverse_root[base + col]
    dense = torch.zeros(batch * n * n, dtype=torch.float64, device=device)
    if operator == "laplacian":
        dense.index_add_(0, (base + row) * n + col, value.neg_())
        dense = dense.view(batch, n, n)
        dense.diagonal(dim1=1, dim2=2).add_(1.0)
    else:
        dense.index_add_(0, (base + row) * n + col, value)
        dense = dense.view(batch, n, n)
        dense.diagonal(dim1=1, dim2=2).add_(diagonal.view(batch, n) * inverse_root.view(batch, n) ** 2)
    return dense


def check_symmetric(dense: Tensor, bucket: SizeBucket) -> None:
    """Raise, naming the first graph, when an operator is not symmetric (a directed graph).

    Compares each edge's entry with its mirror, ``O(E)``: ``|A_ij - A_ji| <= tol * max(|A_ij|, |A_ji|)``
    with :func:`~lowrank_gnn.operators.base.symmetry_tolerance` (rounding in the normalisation
    leaves a few ulps; a missing reverse edge leaves ``A_ji = 0``).
    """
    n = bucket.n
    flat = dense.view(-1)
    row, col = bucket.edge_index
    base = bucket.edge_position * n
    entry, mirror = flat[(base + row) * n + col], flat[(base + col) * n + row]
    bad = (entry - mirror).abs() > symmetry_tolerance(dense.dtype) * torch.maximum(entry.abs(), mirror.abs())
    if bool(bad.any()):
        g = int(bucket.graphs[bucket.edge_position[bad.nonzero()[0]]])
        raise ValueError(f"graph {g} is not undirected (its operator is not symmetric), and the eigenpairs "
                         f"of a symmetric operator are computed; symmetrise its edge_index first, e.g. "
                         f"torch_geometric.utils.to_undirected(edge_index, edge_weight, reduce='mean')")


def scatter_rows(out: Tensor, node_ptr: Tensor, graphs: Tensor, n: int, block: Tensor) -> None:
    """Write ``block (B, n, m)`` into rows ``node_ptr[g]:node_ptr[g] + n`` of ``out`` for each ``g`` in ``graphs``."""
    rows = (node_ptr[graphs].unsqueeze(1) + torch.arange(n, device=graphs.device)).reshape(-1)
    out[rows, : block.shape[-1]] = block.reshape(-1, block.shape[-1]).to(out.dtype)
