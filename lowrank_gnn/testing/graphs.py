"""Small graphs whose spectra are known in closed form.

Each :class:`ReferenceGraph` carries the eigenvalues (float64, ascending) of its
combinatorial Laplacian ``L = D - A`` (build it with
``laplacian(edge_index, num_nodes=n, normalization=None)``):

* path :math:`P_n`: :math:`2 - 2\\cos(\\pi j / n)`, :math:`j = 0..n-1` (all simple),
* cycle :math:`C_n`: :math:`2 - 2\\cos(2 \\pi j / n)` (pairs: repeated eigenvalues),
* complete :math:`K_n`: 0 once and :math:`n` with multiplicity :math:`n - 1`,
* a disconnected union: the union of its parts' spectra (0 once per component).

``n`` is an integer: ``n >= 0`` for paths and complete graphs (``n = 0`` is the empty graph,
``n = 1`` a single node; both have ``edge_index`` of shape ``(2, 0)``), ``n >= 3`` for cycles.
"""
from __future__ import annotations

import math
from typing import List, NamedTuple

import torch
from torch import Tensor

from .._validation import check_num_nodes


class ReferenceGraph(NamedTuple):
    name: str
    edge_index: Tensor          # (2, E), both directions
    num_nodes: int
    laplacian_eigenvalues: Tensor  # (n,), float64, ascending


def _undirected(pairs: List[tuple]) -> Tensor:
    index = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).t()   # (2, 0) without pairs
    return torch.cat([index, index.flip(0)], dim=1)


def path_graph(n: int) -> ReferenceGraph:
    n = check_num_nodes(n, "n", minimum=0)
    values = torch.tensor([2 - 2 * math.cos(math.pi * j / n) for j in range(n)], dtype=torch.float64)
    return ReferenceGraph(f"path{n}", _undirected([(i, i + 1) for i in range(n - 1)]), n, values.sort().values)


def cycle_graph(n: int) -> ReferenceGraph:
    n = check_num_nodes(n, "n", minimum=0)
    if n < 3:
        what = ("a doubled edge", "a self-loop", "no graph")[2 - n]
        raise ValueError(f"a cycle needs n >= 3 nodes (got n={n}: it would be {what}); use path_graph({n}) instead")
    values = torch.tensor([2 - 2 * math.cos(2 * math.pi * j / n) for j in range(n)], dtype=torch.float64)
    return ReferenceGraph(f"cycle{n}", _undirected([(i, (i + 1) % n) for i in range(n)]), n, values.sort().values)


def complete_graph(n: int) -> ReferenceGraph:
    n = check_num_nodes(n, "n", minimum=0)
    values = torch.tensor([0.0] * min(n, 1) + [float(n)] * (n - 1), dtype=torch.float64)
    return ReferenceGraph(f"complete{n}", _undirected([(i, j) for i in range(n) for j in range(i + 1, n)]), n, values)


def disjoint_union(*graphs: ReferenceGraph) -> ReferenceGraph:
    if not graphs:
        raise ValueError("disjoint_union needs at least one graph, e.g. disjoint_union(path_graph(3), cycle_graph(4))")
    for position, graph in enumerate(graphs):
        if not isinstance(graph, ReferenceGraph):
            raise TypeError(f"disjoint_union takes ReferenceGraph arguments (path_graph, cycle_graph, ...); "
                            f"argument {position} is a {type(graph).__name__}")
    offset, parts = 0, []
    for graph in graphs:
        parts.append(graph.edge_index + offset)
        offset += graph.num_nodes
    values = torch.cat([g.laplacian_eigenvalues for g in graphs]).sort().values
    return ReferenceGraph("+".join(g.name for g in graphs), torch.cat(parts, dim=1), offset, values)


def reference_graphs() -> List[ReferenceGraph]:
    """The graphs the conformance suite runs on: simple, repeated, and disconnected spectra."""
    return [
        path_graph(12),
        cycle_graph(10),
        complete_graph(6),
        disjoint_union(complete_graph(4), path_graph(5), cycle_graph(6)),
    ]
