r"""The reusable structure of one graph, from which its operators are built.

A :class:`GraphStructure` is built once from ``edge_index`` (one sort) and then turns any
edge weights on that graph into an operator in ``O(E)``: the normalized adjacency of GCN,
with or without self-loops, a Laplacian, or the symmetrised adjacency that symmetric eigen
solvers need for a directed graph. Operators built from one structure share its sorted
sparsity pattern, its transpose permutation and its connected components, so learnable
edge weights never trigger a sort, a structural symmetry check or a component search again.
"""
from __future__ import annotations

import warnings
import weakref
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .._validation import (check_choice, check_edge_index, check_finite, check_floating, check_floating_dtype,
                           check_index_range, check_num_nodes)
from .sparse import GraphOperator, SparsityPattern, check_graph_size

LAPLACIAN_NORMALIZATIONS = ("sym", "rw", None)


def _is_compiling() -> bool:
    """Under ``torch.compile``: checks that need a host sync (``.item()``) run in eager mode only."""
    return torch.compiler.is_compiling()


class GraphStructure:
    r"""The sorted, symmetrised pattern of a graph and where each input edge is stored in it.

    Built once from ``edge_index`` (duplicates allowed, any order, directed or not):

    * the **pattern**: the union of both directions of every edge plus the whole diagonal,
      sorted by (row, column) as CSR (:class:`~lowrank_gnn.operators.sparse.SparsityPattern`).
      It is symmetric by construction, so every operator built on it is checked for
      symmetry by comparing values only;
    * the **slot** of every input edge and of its reverse (:attr:`edge_slot`,
      :attr:`reverse_slot`): duplicate edges land in the same slot and are **summed**, as
      PyG's ``GCNConv`` sums their messages;
    * whether the input is **undirected** (every edge's reverse is present) and, per slot,
      how many of the two directions were given;
    * the **connected components** (weakly connected, cached on the pattern the first time
      they are needed, see :func:`~lowrank_gnn.operators.connected_components`);
    * a **version check**: a reference to ``edge_index`` with its version counter, so that an
      in-place edit of it is noticed (:meth:`matches`).

    Operators then cost ``O(E + n)`` each: :meth:`normalized_adjacency`, :meth:`laplacian`
    (values identical to PyG's ``gcn_norm`` and ``get_laplacian``), :meth:`adjacency`.

    **Directed input** (``symmetrize=True``): a symmetric eigendecomposition needs
    :math:`A_{ij} = A_{ji}`. The symmetrised adjacency averages the given directions of each
    pair, :math:`S_{ij} = (A_{ij} + A_{ji}) / d_{ij}` with :math:`d_{ij} \in \{1, 2\}` the
    number of directions present: a one-way edge counts in both directions with its weight,
    two different weights are averaged, a symmetric graph is unchanged. A warning says so
    whenever the input is not symmetric.

    Args:
        edge_index (LongTensor): the graph; messages flow from ``edge_index[0]`` to
            ``edge_index[1]``.
        num_nodes (int, optional): number of nodes. (default: ``edge_index.max() + 1``)

    Shapes:
        edge_index ``(2, E)``; every operator is ``(n, n)``.

    Example:
        >>> import torch
        >>> from lowrank_gnn.operators import GraphStructure
        >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> structure = GraphStructure(edge_index)
        >>> weight = torch.rand(4, requires_grad=True)
        >>> op = structure.normalized_adjacency(weight)  # O(E): no sort
        >>> op.shape, op.symmetric
        (torch.Size([3, 3]), False)
    """

    def __init__(self, edge_index: Tensor, num_nodes: Optional[int] = None) -> None:
        check_edge_index(edge_index)
        if num_nodes is None:
            num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
            if num_nodes < 1:
                raise ValueError("the graph is empty (num_nodes=0); an operator needs at least one node. "
                                 "Pass num_nodes= when the graph has nodes but no edges")
        n = check_num_nodes(num_nodes)
        check_graph_size(n, edge_index.shape[1], edge_index.device, "the graph structure")  # before allocating
        if not _is_compiling():
            check_index_range("edge_index", edge_index, n)
        self._source, self._version = edge_index, edge_index._version
        self.num_nodes = n
        self.num_edges = edge_index.shape[1]
        index = edge_index.long()
        loops = torch.arange(n, device=index.device)
        entries = torch.cat([index, index.flip(0), torch.stack([loops, loops])], dim=1)  # (2, 2E + n)
        #: the symmetrised pattern with the whole diagonal
        self.pattern = SparsityPattern(entries, n, check=False)
        slot = torch.empty(entries.shape[1], dtype=torch.long, device=index.device)
        stored = self.pattern.inverse if self.pattern.inverse is not None else torch.arange(
            self.pattern.nnz, device=index.device)
        slot[self.pattern.order] = stored
        E = self.num_edges
        #: storage slot of each input edge ``(i, j)``, shape ``(E,)``
        self.edge_slot = slot[:E]
        #: storage slot of its reverse ``(j, i)``, shape ``(E,)``
        self.reverse_slot = slot[E:2 * E]
        #: storage slot of each diagonal entry ``(i, i)``, shape ``(n,)``
        self.diagonal_slot = slot[2 * E:]
        #: ``mirror[s]`` is the slot of the transpose of slot ``s`` (the pattern is symmetric): every slot
        #: holds an input edge, the reverse of one or a diagonal entry, whose transposes' slots are known
        self.mirror = torch.empty(self.pattern.nnz, dtype=torch.long, device=index.device)
        self.mirror[self.edge_slot] = self.reverse_slot
        self.mirror[self.reverse_slot] = self.edge_slot
        self.mirror[self.diagonal_slot] = self.diagonal_slot
        self.pattern.set_symmetric(self.mirror)
        given = torch.zeros(self.pattern.nnz, dtype=torch.bool, device=index.device)
        given[self.edge_slot] = True
        #: per slot, how many of its two directions were given (diagonal: 2 if the self-loop was)
        self.directions = given.long() + given[self.mirror].long()
        #: whether node ``i`` has a self-loop in the input, shape ``(n,)``
        self.has_self_loop = given[self.diagonal_slot]
        self._off_diagonal = self.pattern.row != self.pattern.col
        loop_edges = (index[0] == index[1]).nonzero().squeeze(-1)
        #: the last input self-loop of each node (-1: none); with add_self_loops=True GCN keeps one copy
        self._last_self_loop = torch.full((n,), -1, dtype=torch.long, device=index.device).scatter_reduce(
            0, index[0, loop_edges], loop_edges, reduce="amax")
        self._repeated_self_loops = bool(loop_edges.numel()) and bool(
            torch.bincount(index[0, loop_edges], minlength=n).max() > 1)
        #: whether every input edge's reverse is also in the input
        self.undirected = bool(given[self.mirror[self.edge_slot]].all()) if E else True
        self._unit: Dict[tuple, GraphOperator] = {}
        self._pairs: Optional[Tuple[Tensor, int, bool]] = None
        #: the tensor undirected_edge_weight returned last (a weak reference) and its version then
        self._pair_weight: Optional[Tuple[weakref.ref, int]] = None

    # --- identity ---------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.pattern.row.device

    @property
    def edited(self) -> bool:
        """Whether the ``edge_index`` this was built from has been modified in place since."""
        return self._source._version != self._version

    def matches(self, edge_index: Tensor, num_nodes: Optional[int] = None) -> bool:
        """Unedited, and ``edge_index`` holds the same entries in the same order (and ``num_nodes`` agrees)."""
        held = self._source
        if self.edited or (num_nodes is not None and num_nodes != self.num_nodes):
            return False
        return held is edge_index or (held.shape == edge_index.shape and held.device == edge_index.device
                                      and torch.equal(held, edge_index))

    # --- undirected pairs ---------------------------------------------------------------------

    def _pairing(self) -> Tuple[Tensor, int, bool]:
        """``(edge_pair, num_pairs, balanced)``, computed once: the pair id of each input edge (its slot's or
        its reverse's, whichever is above the diagonal, ranked), and whether every ``(i, j)`` is given as
        often as ``(j, i)`` (then weights that are a function of the pair give exactly symmetric sums)."""
        if self._pairs is None:
            canonical = torch.minimum(self.edge_slot, self.reverse_slot)  # row-major slots: the upper one
            used = torch.zeros(self.pattern.nnz, dtype=torch.bool, device=self.device)
            used[canonical] = True
            rank = torch.cumsum(used, 0) - 1
            count = torch.bincount(self.edge_slot, minlength=self.pattern.nnz)
            self._pairs = (rank[canonical], int(used.sum()), bool(torch.equal(count, count[self.mirror])))
        return self._pairs

    @property
    def edge_pair(self) -> Tensor:
        """The undirected pair of each input edge, ``(E,)`` in ``[0, num_pairs)``: ``(i, j)`` and ``(j, i)``
        share one (a self-loop is a pair of its own); pairs are numbered in the row-major order of ``(i, j)``,
        ``i <= j``."""
        return self._pairing()[0]

    @property
    def num_pairs(self) -> int:
        """Number of undirected pairs ``{i, j}`` among the input edges."""
        return self._pairing()[1]

    def undirected_edge_weight(self, pair_weight: Tensor) -> Tensor:
        r"""Edge weights ``(E,)`` that give both directions of each undirected pair the same weight:
        ``pair_weight[edge_pair]``, differentiable in ``pair_weight``.

        The natural parametrisation of learnable weights on an undirected graph, and a proof of
        symmetry: an operator that :meth:`normalized_adjacency`, :meth:`adjacency`-based
        :meth:`laplacian` (``"sym"`` or ``None``) builds from the returned tensor, while it is not
        edited in place, is symmetric by construction, so the eigen backends' ``O(nnz)`` comparison of
        each value with its transpose's is skipped. That needs every edge ``(i, j)`` to be given as
        often as ``(j, i)`` (an undirected ``edge_index``, e.g. from ``to_undirected``); otherwise the
        operator is checked as any other. Any other tensor, also one with equal values, is checked, and so
        is a tensor this method returned before the last call. In-place edits are seen through the
        tensor's version counter, as autograd sees them; writes that bypass it (through ``.data`` or
        a NumPy view of the tensor) are not, so edit the pair weights and call this method again.

        Args:
            pair_weight (Tensor): one weight per undirected pair, floating point.

        Shapes:
            pair_weight ``(num_pairs,)``; returns ``(E,)``.

        Example:
            >>> import torch
            >>> from lowrank_gnn.operators import GraphStructure
            >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
            >>> structure = GraphStructure(edge_index)
            >>> pair_weight = torch.tensor([0.5, 2.0], requires_grad=True)  # {0, 1}, {1, 2}
            >>> structure.undirected_edge_weight(pair_weight)
            tensor([0.5000, 0.5000, 2.0000, 2.0000], grad_fn=<IndexBackward0>)
        """
        check_floating("pair_weight", pair_weight)
        edge_pair, num_pairs, _ = self._pairing()
        if pair_weight.shape != (num_pairs,):
            raise ValueError(f"pair_weight must have shape (num_pairs,) = ({num_pairs},), one weight per undirected "
                             f"pair of the graph (got {tuple(pair_weight.shape)}); see GraphStructure.edge_pair")
        if pair_weight.device != self.device:
            raise ValueError(f"pair_weight is on {pair_weight.device} but edge_index is on {self.device}; "
                             "move it with .to(device)")
        weight = pair_weight[edge_pair]
        self._pair_weight = (weakref.ref(weight), weight._version)
        return weight

    def _exactly_symmetric(self, edge_weight: Optional[Tensor], symmetrize: bool) -> bool:
        """Whether the adjacency values of ``edge_weight`` are equal to their transposes' bit for bit by
        construction: symmetrised, or pair weights (or none) on a pattern given equally often both ways."""
        if symmetrize:
            return True
        if edge_weight is not None:
            made = self._pair_weight
            if made is None or made[1] != edge_weight._version or made[0]() is not edge_weight:
                return False
        return self._pairing()[2]

    # --- values -----------------------------------------------------------------------------

    def edge_values(self, edge_weight: Optional[Tensor], dtype: Optional[torch.dtype] = None,
                    nonnegative: bool = True) -> Tensor:
        """Validated input weights ``(E,)``: all ones (in ``dtype``: float32 or float64) when ``edge_weight`` is
        ``None``; ``nonnegative=False`` admits negative weights (for operators without a normalisation)."""
        if dtype is not None:
            check_floating_dtype("dtype", dtype)
        if edge_weight is None:
            return torch.ones(self.num_edges, dtype=dtype or torch.get_default_dtype(), device=self.device)
        if not isinstance(edge_weight, Tensor):
            raise TypeError(f"edge_weight must be a tensor of shape (num_edges,) (got {type(edge_weight).__name__})")
        check_floating("edge_weight", edge_weight)
        if edge_weight.device != self.device:
            raise ValueError(f"edge_weight is on {edge_weight.device} but edge_index is on {self.device}; "
                             "move both to one device with .to(device)")
        if edge_weight.shape != (self.num_edges,):
            raise ValueError(f"edge_weight must have shape (num_edges,) = ({self.num_edges},), one weight per "
                             f"column of edge_index (got {tuple(edge_weight.shape)})")
        if not _is_compiling():
            check_finite("edge_weight", edge_weight.detach())
            if nonnegative and self.num_edges and bool((edge_weight.detach() < 0).any()):
                raise ValueError("edge_weight must be non-negative for a normalised operator (got min edge_weight="
                                 f"{float(edge_weight.min()):.4g}): the normalisations D^{{-1/2}} and D^{{-1}} "
                                 "need non-negative degrees; signed weights are taken without a normalisation "
                                 "(normalize=False, or laplacian's normalization=None)")
        return edge_weight

    def adjacency(self, edge_weight: Optional[Tensor] = None, symmetrize: bool = False,
                  dtype: Optional[torch.dtype] = None, nonnegative: bool = True) -> Tensor:
        r"""Stored values ``(nnz,)`` of the adjacency :math:`A` (duplicates summed), or of its symmetrisation.

        ``symmetrize=True`` gives :math:`S_{ij} = (A_{ij} + A_{ji}) / d_{ij}` (see the class) and
        warns when that differs from :math:`A` (directed pattern or asymmetric weights).
        """
        return self._adjacency(self.edge_values(edge_weight, dtype, nonnegative), edge_weight is not None, symmetrize)

    def _adjacency(self, weight: Tensor, weighted: bool, symmetrize: bool) -> Tensor:
        value = weight.new_zeros(self.pattern.nnz).index_add(0, self.edge_slot, weight)
        if not symmetrize:
            return value
        if not self.undirected:
            warnings.warn("the graph is directed (some edges have no reverse in edge_index); a symmetric "
                          "eigendecomposition needs an undirected graph, so it is symmetrised: each pair gets "
                          "the mean of its given directions (a one-way edge counts both ways). Pass "
                          "torch_geometric.utils.to_undirected(edge_index) to choose the symmetrisation yourself",
                          UserWarning, stacklevel=3)
        elif weighted and not _is_compiling():
            # the pattern is undirected: A is symmetric iff every stored entry equals its mirror
            detached = value.detach()
            scale = detached.abs().amax().clamp_min(torch.finfo(detached.dtype).tiny) if detached.numel() else 1.0
            if bool(((detached - detached[self.mirror]).abs() > 100 * torch.finfo(detached.dtype).eps * scale).any()):
                warnings.warn("edge_weight is not symmetric (w(i, j) != w(j, i) for some edge); a symmetric "
                              "eigendecomposition needs A == A^T, so both directions get their mean "
                              "(w(i, j) + w(j, i)) / 2, and each receives half of its gradient",
                              UserWarning, stacklevel=3)
        return (value + value[self.mirror]) / self.directions.clamp_min(1).to(value.dtype)

    # --- operators --------------------------------------------------------------------------

    def normalized_adjacency(self, edge_weight: Optional[Tensor] = None, add_self_loops: bool = True,
                             improved: bool = False, normalize: bool = True, symmetrize: bool = False,
                             dtype: Optional[torch.dtype] = None) -> GraphOperator:
        r"""GCN's :math:`\hat D^{-1/2}(A + \mathrm{fill}\cdot I)\hat D^{-1/2}`, as PyG's ``gcn_norm``.

        Self-loops are added with weight 1 (2 with ``improved=True``) to the nodes that have
        none (an existing self-loop keeps its weight: ``add_remaining_self_loops``);
        degrees are column sums (in-degrees, ``flow="source_to_target"``); nodes of degree
        zero get zero rows. With ``normalize=False`` the operator is the adjacency itself.
        Without ``edge_weight`` the operator is built once per option set and dtype and reused.

        Args:
            edge_weight (Tensor, optional): non-negative weights, one per input edge; gradients
                flow to them. (default: all ones)
            add_self_loops (bool): add the missing self-loops. (default: ``True``)
            improved (bool): self-loops of weight 2. (default: ``False``)
            normalize (bool): apply the symmetric normalisation. (default: ``True``)
            symmetrize (bool): use the symmetrised adjacency (see the class). (default: ``False``)
            dtype (torch.dtype, optional): the dtype without ``edge_weight``, float32 or float64.
                (default: ``torch.get_default_dtype()``)

        Shapes:
            edge_weight ``(E,)``; the operator is ``(n, n)`` with the degrees ``(n,)``
            (``normalize=True``).
        """
        if edge_weight is None:
            key = (add_self_loops, improved, normalize, symmetrize, dtype or torch.get_default_dtype())
            if key not in self._unit:
                self._unit[key] = self._normalized(None, add_self_loops, improved, normalize, symmetrize, dtype)
            return self._unit[key]
        return self._normalized(edge_weight, add_self_loops, improved, normalize, symmetrize, dtype)

    def _normalized(self, edge_weight: Optional[Tensor], add_self_loops: bool, improved: bool, normalize: bool,
                    symmetrize: bool, dtype: Optional[torch.dtype]) -> GraphOperator:
        weight = self.edge_values(edge_weight, dtype, nonnegative=normalize)
        value = self._adjacency(weight, edge_weight is not None, symmetrize)
        # D^{-1/2} A D^{-1/2} of an exactly symmetric A is symmetric to two roundings per entry
        exact = self._exactly_symmetric(edge_weight, symmetrize)
        if not normalize:
            return self._operator(value, None, exact)
        if add_self_loops:
            if self._repeated_self_loops:  # add_remaining_self_loops keeps one copy of a repeated self-loop: the last
                last = self._last_self_loop
                kept = torch.where(last >= 0, weight[last.clamp_min(0)], torch.zeros_like(value[self.diagonal_slot]))
                value = value.index_put((self.diagonal_slot,), kept)
            fill = 2.0 if improved else 1.0
            value = value.index_add(0, self.diagonal_slot, fill * (~self.has_self_loop).to(value.dtype))
        row, col = self.pattern.row, self.pattern.col
        degree = value.new_zeros(self.num_nodes).index_add(0, col, value)
        inverse_root = degree.pow(-0.5).masked_fill(degree == 0, 0.0)
        return self._operator(inverse_root[row] * value * inverse_root[col], degree, exact)

    def _operator(self, value: Tensor, degree: Optional[Tensor], symmetric: bool) -> GraphOperator:
        """The operator on the structure's pattern; ``symmetric``: its values are so by construction."""
        op = GraphOperator.from_pattern(self.pattern, value, degree=degree)
        if symmetric:
            op._symmetric_by_construction()
        return op

    def laplacian(self, edge_weight: Optional[Tensor] = None, normalization: Optional[str] = "sym",
                  dtype: Optional[torch.dtype] = None) -> GraphOperator:
        r"""A graph Laplacian with PyG's ``get_laplacian`` values (self-loops of the input ignored).

        * ``None``: :math:`L = D - A`,
        * ``"sym"``: :math:`L = I - D^{-1/2} A D^{-1/2}` (eigenvalues in :math:`[0, 2]`),
        * ``"rw"``: :math:`L = I - D^{-1} A` (not symmetric: the symmetric eigen backends reject it),

        with :math:`D` the out-degrees (row sums).

        Args:
            edge_weight (Tensor, optional): weights, non-negative for ``"sym"`` and ``"rw"``; ``None``
                (:math:`D - A`, no normalisation) takes weights of any sign, a signed Laplacian, as
                PyG's ``get_laplacian`` does. (default: all ones)
            normalization (str, optional): ``"sym"``, ``"rw"`` or ``None``. (default: ``"sym"``)
            dtype (torch.dtype, optional): the dtype without ``edge_weight``, float32 or float64.
                (default: ``torch.get_default_dtype()``)
        """
        check_choice("normalization", normalization if normalization is not None else "None",
                     [str(c) for c in LAPLACIAN_NORMALIZATIONS])
        value = self.adjacency(edge_weight, dtype=dtype, nonnegative=normalization is not None) * self._off_diagonal
        row, col = self.pattern.row, self.pattern.col
        degree = value.new_zeros(self.num_nodes).index_add(0, row, value)
        if normalization is None:
            laplacian = (-value).index_add(0, self.diagonal_slot, degree)
        else:
            if normalization == "sym":
                root = degree.pow(-0.5).masked_fill(degree == 0, 0.0)
                off = -root[row] * value * root[col]
            else:
                off = -degree.reciprocal().masked_fill(degree == 0, 0.0)[row] * value
            laplacian = off.index_add(0, self.diagonal_slot, off.new_ones(self.num_nodes))
        return self._operator(laplacian, None, normalization != "rw" and self._exactly_symmetric(edge_weight, False))

    def __repr__(self) -> str:
        return (f"GraphStructure(num_nodes={self.num_nodes}, num_edges={self.num_edges}, nnz={self.pattern.nnz}, "
                f"undirected={self.undirected})")
