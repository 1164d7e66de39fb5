"""Per-graph eigenpairs of a mini-batch of graphs: padded size classes, solved and applied in one layout."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ...eigen import EigenBackend, EigenPairs
from ...operators import ComponentDeflatedOperator, DenseOperator, GraphOperator

#: Graphs of a mini-batch with more than ``k`` nodes whose sizes differ by at most this factor are
#: padded to one size and solved in one batched call. On a CPU LAPACK solves the matrices of a batch
#: one after the other, so padding is pure extra work (up to ``ratio^3``) against the fixed cost of
#: one more call (a few tensor operations): 1.2 there. On a GPU fewer, larger calls pay: 1.5
#: (padding costs at most ``1.5^3 ~ 3.4x`` the work of a class).
SIZE_CLASS_RATIO = {"cpu": 1.2, "other": 1.5}


class SizeClass(NamedTuple):
    """Graphs of a mini-batch padded to one size and propagated together (see :class:`BatchSpectrum`).

    The class of the graphs with at most ``k`` nodes is applied exactly through its operators
    (``pairs`` and ``factors`` are ``None``); every other class was solved by one backend call.
    """

    graphs: Tensor                   #: ``(G,)`` the class' graphs (batch indices), in the order of its matrices
    operator: Tensor                 #: ``(G, n_pad, n_pad)`` the padded dense operators (solved, or applied directly)
    pairs: Optional[EigenPairs]      #: the ``k`` eigenpairs: eigenvalues ``(G, k)``, eigenvectors ``(G, n_pad, k)``
    factors: Optional[EigenPairs]    #: ``pairs`` and the deflated component vectors: ``(G, r)``, ``(G, n_pad, r)``


@dataclass
class BatchSpectrum:
    """The spectrum of a mini-batch of graphs, as :meth:`LowRankGCNConv.eigenpairs` returns it with ``batch``/``ptr``.

    Pass it as ``forward(..., batch=..., eigenpairs=...)`` to share one solve between the
    layers of a model (every layer with the same ``k``, normalisation and backend). The layer
    refuses a spectrum of another batch, of another ``k`` (its solved classes hold another
    number of eigenpairs, or its class applied directly holds graphs of more than the layer's
    ``k`` nodes), dtype or device.

    Every non-empty graph belongs to one :class:`SizeClass`, padded to the class' largest
    graph: the graphs with at most ``k`` nodes to one class applied exactly (dense, at most
    ``k x k`` per graph), the larger ones by size, each class solved in one batched call. The
    classes' padded rows, class after class and graph after graph, form one layout of
    ``R = sum_c G_c n_c`` rows in which every node has a row (:attr:`rows`).

    Attributes:
        operator: the batch's normalized adjacency (sparse), which the per-graph operators are cut from.
        deflated: the exact per-component block of the graphs with more than ``k`` nodes, or
            ``None``.
        classes: the :class:`SizeClass` es.
        ptr: ``(num_graphs + 1,)`` the graphs' node offsets.
        rows: ``(num_nodes,)`` each node's padded row.
        source: ``(R,)`` the node of each padded row, ``num_nodes`` for a padding row.
    """

    operator: GraphOperator
    deflated: Optional[ComponentDeflatedOperator]
    classes: List[SizeClass] = field(default_factory=list)
    ptr: Optional[Tensor] = None
    aux_loss: Optional[Tensor] = None  #: the batched backends have no auxiliary loss
    rows: Optional[Tensor] = None
    source: Optional[Tensor] = None


def size_classes(sizes: List[int], k: int, ratio: float) -> List[Tuple[List[int], int]]:
    """The non-empty graphs grouped for padding: ``(graphs, n_pad)`` per class, graphs in batch order.

    First the graphs with ``1 <= n_g <= k`` nodes (one class, if any), then the larger ones
    grouped so that sizes within a class differ by at most ``ratio``; ``n_pad`` is the
    largest size of the class.
    """
    small = [g for g, size in enumerate(sizes) if 0 < size <= k]
    ordered = sorted((g for g, size in enumerate(sizes) if size > k), key=lambda g: sizes[g])
    classes: List[List[int]] = []
    for g in ordered:
        if classes and sizes[g] <= ratio * sizes[classes[-1][0]]:
            classes[-1].append(g)
        else:
            classes.append([g])
    grouped = [(sorted(members), sizes[members[-1]]) for members in classes]
    return ([(small, max(sizes[g] for g in small))] if small else []) + grouped


def solve_batch(op: GraphOperator, deflated: Optional[ComponentDeflatedOperator], batch: Tensor, ptr: Tensor,
                k: int, backend: EigenBackend) -> BatchSpectrum:
    r"""Every graph of the batch with more than ``k`` nodes its own ``k`` eigenpairs, one backend call per size class.

    The classes' padded operators are assembled in one flat buffer with one ``index_copy_``:
    the stored entries of ``op`` at their positions and, on the diagonal of each padding row
    of a solved class, a decoupled entry beyond the spectrum (below it for
    ``which="largest"``, above for ``"smallest"``; distinct, so that gradients stay finite),
    so that a graph's own ``k`` eigenpairs come first and the padding never enters. The
    deflated block :math:`\mu \sum_C v_C v_C^T` is subtracted per class and its vectors
    appended to the eigenpairs as the propagation :attr:`SizeClass.factors`. ``op`` and
    ``deflated`` are built by the layer from validated input, so the backend's
    :meth:`~lowrank_gnn.eigen.EigenBackend.solve` is called directly, without its input checks.

    Shapes:
        ``op`` ``(n, n)``, ``batch`` ``(n,)``, ``ptr`` ``(num_graphs + 1,)``.
    """
    sizes = ptr.diff().tolist()
    ratio = SIZE_CLASS_RATIO["cpu" if op.device.type == "cpu" else "other"]
    classes = size_classes(sizes, k, ratio)
    device, n = op.device, op.shape[-1]
    # per graph: padded size, first padded row, first entry of its matrix (empty graphs: none)
    pad, first_row, first_entry = [0] * len(sizes), [0] * len(sizes), [0] * len(sizes)
    order: List[int] = []
    rows = entries = 0
    for members, n_pad in classes:
        for g in members:
            pad[g], first_row[g], first_entry[g] = n_pad, rows, entries
            rows, entries = rows + n_pad, entries + n_pad * n_pad
        order += members
    graph_pad, graph_row, graph_entry = torch.tensor([pad, first_row, first_entry], device=device)
    local = torch.arange(n, device=device) - ptr[batch]                      # position inside its graph
    node_row = graph_row[batch] + local                                       # (n,)
    # index_copy_ into fresh buffers: the out-of-place index_put would copy the buffer first
    source = torch.full((rows,), n, dtype=torch.long, device=device).index_copy_(
        0, node_row, torch.arange(n, device=device))

    # every stored entry at (graph, row, col) of the flat buffer
    entry_graph = batch[op.row]
    entry_pad = graph_pad[entry_graph]
    position = graph_entry[entry_graph] + local[op.row] * entry_pad + local[op.col]
    # padding rows of the solved classes: (row of the layout) -> graph, position p in [n_g, n_pad), diagonal entry
    ordered = torch.tensor(order, device=device)
    row_graph = torch.repeat_interleave(ordered, graph_pad[ordered])
    row_pad = graph_pad[row_graph]
    padding = ((source == n) & (row_pad > k)).nonzero().squeeze(-1)
    padding_pad = row_pad[padding]
    padding_within = (torch.arange(rows, device=device) - graph_row[row_graph])[padding]
    diagonal = graph_entry[row_graph[padding]] + padding_within * (padding_pad + 1)
    # beyond every eigenvalue: |lambda| <= max row sum |A| (Gershgorin), plus the deflated block's |mu|
    value = op.value
    magnitude = value.detach().abs()
    bound = magnitude.new_zeros(n).index_add(0, op.row, magnitude).amax() + 1
    if deflated is not None:
        bound = bound + abs(deflated.value)
    padding_value = bound + padding_within.to(value.dtype) / padding_pad.to(value.dtype)   # distinct, in [b, b + 1)
    if backend.which == "largest":
        padding_value = -padding_value
    flat = value.new_zeros(entries).index_copy_(0, torch.cat([position, diagonal]), torch.cat([value, padding_value]))
    class_rows = [len(members) * n_pad for members, n_pad in classes]
    matrices = flat.split([count * n_pad for count, (_, n_pad) in zip(class_rows, classes, strict=True)])
    class_graphs = ordered.split([len(members) for members, _ in classes])
    components: Optional[Tuple[Tensor, ...]] = None
    if deflated is not None:
        components = _component_columns(deflated, batch, node_row, graph_pad > k, rows).split(class_rows)
    spectrum = BatchSpectrum(op, deflated, [], ptr, rows=node_row, source=source)
    for index, (members, n_pad) in enumerate(classes):
        count = len(members)
        dense = matrices[index].view(count, n_pad, n_pad)
        if n_pad <= k:    # the graphs with at most k nodes: all their eigenpairs are the operator itself
            spectrum.classes.append(SizeClass(class_graphs[index], dense, None, None))
            continue
        vectors = None
        if components is not None and deflated is not None:
            vectors = components[index].view(count, n_pad, -1)               # 0 on padding rows
            dense = torch.baddbmm(dense, vectors, vectors.mT, alpha=-deflated.value)
        pairs = backend.solve(DenseOperator(dense))                          # (G, k), (G, n_pad, k)
        factors = pairs
        if vectors is not None and deflated is not None:
            factors = EigenPairs(torch.cat([pairs.eigenvalues, pairs.eigenvalues.new_full(
                vectors.shape[::2], deflated.value)], -1), torch.cat([pairs.eigenvectors, vectors], -1))
        spectrum.classes.append(SizeClass(class_graphs[index], dense, pairs, factors))
    return spectrum


def _component_columns(deflated: ComponentDeflatedOperator, batch: Tensor, node_row: Tensor, solved: Tensor,
                       rows: int) -> Tensor:
    """The deflated component vectors of the solved graphs in the padded layout: ``(R, c)``, column ``j`` of a
    graph's rows its ``j``-th component (``c``: the most components of one solved graph)."""
    entries, labels = deflated.entries, deflated.labels
    counted = ((entries > 0) & solved[batch]).nonzero().squeeze(-1)      # nodes of kept components, solved graphs
    if counted.numel() == 0:
        return entries.new_zeros(rows, 1)
    graph = batch[counted]
    first = torch.full_like(solved, labels.numel(), dtype=labels.dtype).scatter_reduce(
        0, graph, labels[counted], reduce="amin")                         # a graph's components: labels first, ...
    column = labels[counted] - first[graph]                               # distinct within a graph, from 0
    width = int(column.max()) + 1
    return entries.new_zeros(rows, width).index_put_((node_row[counted], column), entries[counted])


def apply_batch(spectrum: BatchSpectrum, h: Tensor) -> Tensor:
    """``h (n, d)`` through a :class:`BatchSpectrum`: each graph in its own eigenbasis, ``(n, d)`` out."""
    rows, source = spectrum.rows, spectrum.source
    if rows is None or source is None:
        raise ValueError("this BatchSpectrum has no padded layout (rows, source); build it with "
                         "LowRankGCNConv.eigenpairs(..., batch=batch)")
    padded = torch.cat([h, h.new_zeros(1, h.shape[-1])])[source]       # (R, d), zero on padding rows
    parts = []
    blocks = padded.split([c.operator.shape[0] * c.operator.shape[1] for c in spectrum.classes])
    for size_class, block in zip(spectrum.classes, blocks, strict=True):
        features = block.view(size_class.operator.shape[0], size_class.operator.shape[1], -1)
        if size_class.factors is None:
            out = size_class.operator @ features
        else:
            vectors, values = size_class.factors.eigenvectors, size_class.factors.eigenvalues
            out = vectors @ (values.unsqueeze(-1) * (vectors.mT @ features))
        parts.append(out.flatten(0, 1))
    return torch.cat(parts)[rows]


__all__: List[str] = ["BatchSpectrum", "SizeClass", "SIZE_CLASS_RATIO", "size_classes", "solve_batch",
                      "apply_batch"]
