"""Per-graph eigenpairs of a mini-batch of graphs: padded size classes, solved and applied in one layout."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ...eigen import EigenBackend, EigenPairs
from ...operators import ComponentDeflatedOperator, DenseOperator, GraphOperator

#: Graphs of a mini-batch whose sizes differ by at most this factor are padded to one size and
#: solved in one batched call. On a CPU LAPACK solves the matrices of a batch one after the other,
#: so padding is pure extra work (up to ``ratio^3``) against the fixed cost of one more call (a few
#: tensor operations); 1.2 was the fastest of 1.1 / 1.2 / 1.3 / 1.5 in ``benchmarks/minibatch.py``
#: on MUTAG / PROTEINS / ENZYMES. On a GPU fewer, larger calls pay: 1.5 (padding costs at most
#: ``1.5^3 ~ 3.4x`` the work of a class).
SIZE_CLASS_RATIO = {"cpu": 1.2, "other": 1.5}


class SizeClass(NamedTuple):
    """Graphs of a mini-batch solved together, padded to one size (see :class:`BatchSpectrum`)."""

    graphs: Tensor      #: ``(G,)`` the class' graphs (indices into the batch), in the order of its matrices
    operator: Tensor    #: ``(G, n_pad, n_pad)`` the padded dense operators that were solved
    pairs: EigenPairs   #: eigenvalues ``(G, k)``, eigenvectors ``(G, n_pad, k)``


@dataclass
class BatchSpectrum:
    """The spectrum of a mini-batch of graphs, as :meth:`LowRankGCNConv.eigenpairs` returns it with ``batch``/``ptr``.

    Pass it as ``forward(..., batch=..., eigenpairs=...)`` to share one solve between the
    layers of a model (every layer with the same ``k``, normalisation and backend).

    The graphs with more than ``k`` nodes are solved in size classes, each padded to its
    largest graph; their padded rows, class after class and graph after graph, form one
    layout of ``R = sum_c G_c n_c`` rows, in which every node of such a graph has a row
    (:attr:`rows`).

    Attributes:
        operator: the batch's normalized adjacency (sparse); applied directly to every graph
            with ``n_g <= k`` nodes.
        deflated: the exact per-component block of the graphs with more than ``k`` nodes, or
            ``None``.
        classes: one :class:`SizeClass` per batched solve.
        ptr: ``(num_graphs + 1,)`` the graphs' node offsets.
        rows: ``(num_nodes,)`` each node's padded row, ``R`` for the nodes of graphs applied
            directly (or ``None`` when no graph has more than ``k`` nodes).
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
    """The graphs with more than ``k`` nodes, grouped so that sizes within a class differ by at most ``ratio``.

    Returns ``(graphs, n_pad)`` per class, the graphs in batch order, ``n_pad`` the largest size.
    """
    ordered = sorted((g for g, size in enumerate(sizes) if size > k), key=lambda g: sizes[g])
    classes: List[List[int]] = []
    for g in ordered:
        if classes and sizes[g] <= ratio * sizes[classes[-1][0]]:
            classes[-1].append(g)
        else:
            classes.append([g])
    return [(sorted(members), sizes[members[-1]]) for members in classes]


def solve_batch(op: GraphOperator, deflated: Optional[ComponentDeflatedOperator], batch: Tensor, ptr: Tensor,
                k: int, backend: EigenBackend) -> BatchSpectrum:
    r"""Every graph of the batch with more than ``k`` nodes its own ``k`` eigenpairs, one backend call per size class.

    The classes' padded operators are assembled in one flat buffer with one ``index_put``: the
    stored entries of ``op`` (of the large graphs) at their positions and, on the diagonal of
    each padding row, a decoupled entry beyond the spectrum (below it for
    ``which="largest"``, above for ``"smallest"``; distinct, so that gradients stay finite),
    so that a graph's own ``k`` eigenpairs come first and the padding never enters. The
    deflated block :math:`\sum_C v_C v_C^T` is subtracted per class. ``op`` and ``deflated``
    are built by the layer from validated input, so the backend's :meth:`~EigenBackend.solve`
    is called directly, without its input checks.

    Shapes:
        ``op`` ``(n, n)``, ``batch`` ``(n,)``, ``ptr`` ``(num_graphs + 1,)``.
    """
    spectrum = BatchSpectrum(op, deflated, [], ptr)
    sizes = ptr.diff().tolist()
    ratio = SIZE_CLASS_RATIO["cpu" if op.device.type == "cpu" else "other"]
    classes = size_classes(sizes, k, ratio)
    if not classes:
        return spectrum
    device, n = op.device, op.shape[-1]
    # per graph: padded size (0: applied directly), first padded row, first entry of its matrix
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
    large = graph_pad[batch] > 0
    node_row = torch.where(large, graph_row[batch] + local, rows)            # (n,)
    large_nodes = large.nonzero().squeeze(-1)
    source = torch.full((rows,), n, dtype=torch.long, device=device).index_put(
        (node_row[large_nodes],), large_nodes)
    spectrum.rows, spectrum.source = node_row, source

    # the stored entries of the large graphs, at (graph, row, col) of the flat buffer
    entry_graph = batch[op.row]
    kept = (graph_pad[entry_graph] > 0).nonzero().squeeze(-1)
    kept_graph, kept_row, kept_col = entry_graph[kept], op.row[kept], op.col[kept]
    position = graph_entry[kept_graph] + local[kept_row] * graph_pad[kept_graph] + local[kept_col]
    # padding rows: (row of the layout) -> graph, position p in [n_g, n_pad), its diagonal entry
    ordered = torch.tensor(order, device=device)
    row_graph = torch.repeat_interleave(ordered, graph_pad[ordered])
    within = torch.arange(rows, device=device) - graph_row[row_graph]
    padding = (source == n).nonzero().squeeze(-1)
    padding_pad = graph_pad[row_graph[padding]]
    padding_within = within[padding]
    diagonal = graph_entry[row_graph[padding]] + padding_within * (padding_pad + 1)
    # beyond every eigenvalue: |lambda| <= max row sum |A| (Gershgorin), plus the deflated block's |mu|
    value = op.value
    bound = value.detach().abs().new_zeros(n).index_add(0, op.row, value.detach().abs()).amax() + 1
    if deflated is not None:
        bound = bound + abs(deflated.value)
    padding_value = bound + padding_within.to(value.dtype) / padding_pad.to(value.dtype)   # distinct, in [b, b + 1)
    if backend.which == "largest":
        padding_value = -padding_value
    flat = value.new_zeros(entries).index_put((torch.cat([position, diagonal]),),
                                              torch.cat([value[kept], padding_value]))
    row_counts = [len(members) * n_pad for members, n_pad in classes]
    matrices = flat.split([class_rows * n_pad for class_rows, (_, n_pad) in zip(row_counts, classes, strict=True)])
    class_graphs = ordered.split([len(members) for members, _ in classes])
    if deflated is not None:
        vector = deflated.entries.new_zeros(rows).index_put((node_row[large_nodes],), deflated.entries[large_nodes])
        label = deflated.labels.new_zeros(rows).index_put((node_row[large_nodes],), deflated.labels[large_nodes])
        # graphs of more than one component need the block of each component; connected ones v v^T
        counted = (deflated.entries > 0).nonzero().squeeze(-1)          # nodes of the kept components
        component_graph = batch.new_zeros(deflated.num_components).index_put((deflated.labels[counted],),
                                                                          batch[counted])
        several = (torch.bincount(component_graph, minlength=len(sizes)) > 1).tolist()
        vectors, labels = vector.split(row_counts), label.split(row_counts)
    for index, (members, n_pad) in enumerate(classes):
        count = len(members)
        dense = matrices[index].view(count, n_pad, n_pad)
        if deflated is not None:
            v = vectors[index].view(count, n_pad, 1)                     # 0 on padding rows
            if any(several[g] for g in members):
                c = labels[index].view(count, n_pad, 1)
                dense = dense - deflated.value * ((v * v.mT) * (c == c.mT))
            else:
                dense = torch.baddbmm(dense, v, v.mT, alpha=-deflated.value)
        pairs = backend.solve(DenseOperator(dense))                      # (G, k), (G, n_pad, k)
        spectrum.classes.append(SizeClass(class_graphs[index], dense, pairs))
    return spectrum


def apply_batch(spectrum: BatchSpectrum, h: Tensor) -> Tensor:
    """``h (n, d)`` through a :class:`BatchSpectrum`: each graph in its own eigenbasis, ``(n, d)`` out."""
    out = spectrum.operator.matmul(h)                                   # exact for every graph with n_g <= k
    if not spectrum.classes:
        return out
    rows, source = spectrum.rows, spectrum.source
    if rows is None or source is None:
        raise ValueError("this BatchSpectrum has size classes but no padded layout (rows, source); build it "
                         "with LowRankGCNConv.eigenpairs(..., batch=batch)")
    zero = h.new_zeros(1, h.shape[-1])
    padded = torch.cat([h, zero])[source]                               # (R, d), zero on padding rows
    parts = []
    blocks = padded.split([c.pairs.eigenvectors.shape[0] * c.pairs.eigenvectors.shape[1] for c in spectrum.classes])
    for size_class, block in zip(spectrum.classes, blocks, strict=True):
        vectors, values = size_class.pairs.eigenvectors, size_class.pairs.eigenvalues
        features = block.view(vectors.shape[0], vectors.shape[1], -1)
        parts.append((vectors @ (values.unsqueeze(-1) * (vectors.mT @ features))).flatten(0, 1))
    low_rank = torch.cat(parts + [zero])[rows]                          # (n, d), 0 for graphs applied directly
    if spectrum.deflated is not None:
        low_rank = low_rank + spectrum.deflated.project(h)              # P_0 h, exact, O(n d)
    return torch.where((rows < source.numel()).unsqueeze(-1), low_rank, out)


__all__: List[str] = ["BatchSpectrum", "SizeClass", "SIZE_CLASS_RATIO", "size_classes", "solve_batch",
                      "apply_batch"]
