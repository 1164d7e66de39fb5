"""Graph operators: normalized adjacency, Laplacians, and their closed-form eigenvectors."""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .._validation import check_finite, check_floating, check_index_dtype, check_index_range
from .base import DeflatedOperator, DeflatedOperatorBase, DenseOperator, as_operator, check_orthonormal
from .sparse import GraphOperator
from .structure import GraphStructure


def normalized_adjacency(edge_index: Tensor, edge_weight: Optional[Tensor] = None,
                         num_nodes: Optional[int] = None, add_self_loops: bool = True,
                         improved: bool = False) -> GraphOperator:
    r"""The GCN propagation matrix :math:`\hat A = \hat D^{-1/2} (A + I) \hat D^{-1/2}`.

    Identical to PyG's :func:`~torch_geometric.nn.conv.gcn_conv.gcn_norm` (Kipf & Welling,
    `ICLR 2017 <https://arxiv.org/abs/1609.02907>`_): duplicate edges are summed, missing
    self-loops are added with weight 1 (2 with ``improved=True``) when ``add_self_loops=True``;
    nodes of degree zero get zero rows, not NaN. Its eigenvalues lie in :math:`[-1, 1]`,
    with eigenvalue 1 once per connected component. A directed graph gives a non-symmetric
    operator, which the symmetric eigen backends refuse.

    One call builds a :class:`~lowrank_gnn.operators.GraphStructure` (one sort); for a graph
    whose weights change every step (learnable edge weights) build the structure once and
    call its :meth:`~lowrank_gnn.operators.GraphStructure.normalized_adjacency`, ``O(E)``.

    Args:
        edge_index (LongTensor): the graph, both directions of every undirected edge.
        edge_weight (Tensor, optional): non-negative weights; gradients flow to them.
            (default: all ones)
        num_nodes (int, optional): number of nodes. (default: ``edge_index.max() + 1``)
        add_self_loops (bool, optional): add the identity first. (default: ``True``)
        improved (bool, optional): self-loops of weight 2, as ``GCNConv(improved=True)``.
            (default: ``False``)

    Shapes:
        edge_index ``(2, E)``, edge_weight ``(E,)``; the operator is ``(n, n)``.

    Example:
        >>> import torch
        >>> from lowrank_gnn.operators import normalized_adjacency
        >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> op = normalized_adjacency(edge_index)
        >>> op.shape
        torch.Size([3, 3])
    """
    return GraphStructure(edge_index, num_nodes).normalized_adjacency(edge_weight, add_self_loops=add_self_loops,
                                                                      improved=improved)


def laplacian(edge_index: Tensor, edge_weight: Optional[Tensor] = None, num_nodes: Optional[int] = None,
              normalization: Optional[str] = "sym") -> GraphOperator:
    r"""A graph Laplacian, identical to PyG's :func:`~torch_geometric.utils.get_laplacian`.

    * ``None``: :math:`L = D - A`,
    * ``"sym"``: :math:`L = I - D^{-1/2} A D^{-1/2}` (eigenvalues in :math:`[0, 2]`),
    * ``"rw"``: :math:`L = I - D^{-1} A` (not symmetric: the symmetric eigen backends reject it).

    For repeated builds on one graph use
    :meth:`GraphStructure.laplacian <lowrank_gnn.operators.GraphStructure.laplacian>`.

    Args:
        edge_index (LongTensor): the graph.
        edge_weight (Tensor, optional): weights, non-negative for ``"sym"`` and ``"rw"``; with
            ``normalization=None`` any sign (a signed Laplacian, as PyG). (default: all ones)
        num_nodes (int, optional): number of nodes. (default: ``edge_index.max() + 1``)
        normalization (str, optional): ``"sym"``, ``"rw"`` or ``None``. (default: ``"sym"``)

    Shapes:
        edge_index ``(2, E)``, edge_weight ``(E,)``; the operator is ``(n, n)``.
    """
    return GraphStructure(edge_index, num_nodes).laplacian(edge_weight, normalization)


def connected_components(op: Union[GraphOperator, DenseOperator, Tensor]) -> Tuple[int, Tensor]:
    """Connected components of the graph behind ``op`` (entries equal to 0 are ignored).

    ``op`` is a :class:`~lowrank_gnn.operators.GraphOperator` (:func:`normalized_adjacency`,
    :func:`laplacian`, :class:`~lowrank_gnn.operators.GraphStructure`) or an unbatched dense matrix
    (a :class:`~lowrank_gnn.operators.DenseOperator` or a tensor ``(n, n)``), whose nonzero
    off-diagonal entries are the edges; anything else is a ``TypeError``.

    Runs SciPy's ``connected_components`` on the CPU; the labels come back on the
    operator's device. When no stored off-diagonal value is 0 the components depend on the
    sparsity pattern alone, so they are computed once per graph and shared by every operator
    built on the same pattern (one :class:`~lowrank_gnn.operators.GraphStructure`,
    :meth:`GraphOperator.with_values`): learnable edge weights then cost one ``O(nnz)`` zero
    test per step instead of a trip through SciPy.

    Returns:
        ``(num_components, labels)`` with labels ``(n,)`` in ``[0, num_components)``.
    """
    import scipy.sparse
    from scipy.sparse.csgraph import connected_components as scipy_components

    if isinstance(op, (Tensor, DenseOperator)):
        dense = as_operator(op)
        if len(dense.shape) != 2:
            raise ValueError(f"connected_components needs one graph: a dense operator of shape (n, n) (got shape "
                             f"{tuple(dense.shape)}); pass each matrix of the batch on its own")
        matrix = scipy.sparse.csr_matrix(dense.to_dense().detach().cpu().numpy())
        count, labels = scipy_components(matrix, directed=True, connection="weak")
        return int(count), torch.as_tensor(labels, dtype=torch.long, device=dense.device)
    if not isinstance(op, GraphOperator):
        raise TypeError(f"connected_components takes a GraphOperator (normalized_adjacency, laplacian, "
                        f"GraphStructure) or a dense (n, n) matrix (got {type(op).__name__})")
    pattern = op._pattern
    no_zeros = not bool(((op.value.detach() == 0) & (op.row != op.col)).any())  # the diagonal never connects
    if no_zeros and pattern.components is not None:
        return pattern.components
    graph = op.to_scipy()
    graph.eliminate_zeros()
    count, labels = scipy_components(graph, directed=True, connection="weak")
    result = int(count), torch.as_tensor(labels, dtype=torch.long, device=op.device)
    if no_zeros:
        pattern.components = result
    return result


def _component_entries(labels: Tensor, degree: Tensor) -> Tuple[Tensor, Tensor, int]:
    r"""The per-component eigenvectors in ``O(n)`` form: ``(entries, kept_labels, c)``.

    Vector ``C`` is ``entries * [kept_labels == C]`` with ``entries = D^{1/2} 1 / \|D^{1/2} 1_C\|``;
    components of zero norm are dropped (their nodes get entry 0 and label 0).

    Shapes:
        labels ``(n,)``, degree ``(n,)``; returns ``(n,)``, ``(n,)`` and the count ``c``.
    """
    root = degree.clamp_min(0).sqrt()
    count = int(labels.max()) + 1
    norms = root.new_zeros(count).index_add(0, labels, root * root).sqrt()
    kept = norms > 0
    position = torch.cumsum(kept, 0) - 1  # new index of each kept component
    entries = root / norms.clamp_min(torch.finfo(root.dtype).tiny)[labels]
    kept_labels = torch.where(kept[labels], position[labels], torch.zeros_like(labels))
    return entries, kept_labels, int(kept.sum())


def component_eigenvectors(labels: Tensor, degree: Tensor) -> Tensor:
    r"""Orthonormal eigenvectors :math:`D^{1/2} 1_C / \|D^{1/2} 1_C\|`, one per component.

    For the normalized adjacency they belong to eigenvalue 1: the block that is repeated
    once per connected component (78 times on Cora) and that a top-``k`` solver can only
    return as an arbitrary basis. Components whose degrees are all zero (isolated nodes
    without self-loops) get no vector: their rows of the operator are zero.
    Differentiable in ``degree``. This is the dense ``(n, c)`` matrix, for inspection and
    small graphs; :func:`deflate_components` applies the same vectors in ``O(n)`` without it.

    Args:
        labels (LongTensor): each node's component, in ``[0, n)`` (e.g. from :func:`connected_components`).
        degree (Tensor): each node's degree, non-negative and finite (float32 or float64).

    Shapes:
        labels ``(n,)``, degree ``(n,)``; returns ``(n, c)``.
    """
    check_index_dtype("labels", labels)
    check_floating("degree", degree)
    if labels.dim() != 1 or degree.shape != labels.shape:
        raise ValueError(f"labels and degree must have shape (n,), one entry per node (got labels.shape="
                         f"{tuple(labels.shape)}, degree.shape={tuple(degree.shape)})")
    n = labels.numel()
    check_index_range("labels", labels, max(n, 1), "n")
    check_finite("degree", degree.detach())
    if n and float(degree.detach().min()) < 0:
        raise ValueError(f"degree must be non-negative (got min degree={float(degree.detach().min()):.4g}); pass "
                         f"the degrees of a graph with non-negative weights (GraphOperator.degree)")
    if not n:
        return degree.new_zeros(0, 0)
    entries, kept_labels, count = _component_entries(labels, degree)
    return _dense_basis(entries, kept_labels, count)


def _dense_basis(entries: Tensor, labels: Tensor, count: int) -> Tensor:
    """The ``(n, count)`` matrix with ``entries[i]`` in column ``labels[i]`` (nodes of dropped components: 0)."""
    n = entries.numel()
    if not count:
        return entries.new_zeros(n, 0)
    return entries.new_zeros(n, count).index_put((torch.arange(n, device=labels.device), labels), entries)


class ComponentDeflatedOperator(DeflatedOperator):
    r""":class:`DeflatedOperator` whose basis vectors have disjoint supports (one per component).

    Stores the ``n`` nonzero entries and each node's component instead of the ``(n, c)``
    basis, so :meth:`project` costs ``O(n d)`` by scatter-add, however many components
    there are (a graph with a million isolated nodes has a million of them). Built by
    :func:`deflate_components`; :attr:`basis` materialises the dense ``(n, c)`` matrix on
    request (small graphs, tests). The vectors have disjoint supports, so they are orthonormal
    when each has unit norm: the constructor checks that to
    :func:`~lowrank_gnn.operators.orthonormality_tolerance` (``O(n)``, in float64, one host
    sync), as :class:`DeflatedOperator` checks its basis.

    Args:
        base: the operator ``A``.
        entries (Tensor): the nonzero entry of each node's basis vector (0 for a node in no vector).
        labels (Tensor): the basis vector (component) each node belongs to, in ``[0, c)``.
        num_components (int): ``c``.
        value (float): the eigenvalue of ``A`` shared by all the vectors. (default: ``1.0``)

    Shapes:
        entries ``(n,)``, labels ``(n,)``.
    """

    base: GraphOperator

    def __init__(self, base: GraphOperator, entries: Tensor, labels: Tensor, num_components: int,
                 value: float = 1.0) -> None:
        n = base.shape[-1]
        if entries.shape != (n,) or labels.shape != (n,):
            raise ValueError(f"entries and labels must have shape (n,) = ({n},) "
                             f"(got {tuple(entries.shape)} and {tuple(labels.shape)})")
        # the basis is implicit (one vector per component, formed on demand by `basis`), so the
        # dense-basis constructor of DeflatedOperator is skipped; `basis` and `values` are properties
        DeflatedOperatorBase.__init__(self, base)
        self.entries = entries
        self.labels = labels
        self.num_components = int(num_components)
        self.value = float(value)
        if self.num_components:
            squares = entries.detach().to(torch.float64).square()
            norms = squares.new_zeros(self.num_components).index_add(0, labels, squares)
            check_orthonormal(float((norms - 1).abs().max()), entries, n, "entries",
                              "give each component's entries unit norm, D^{1/2} 1_C / ||D^{1/2} 1_C|| as "
                              "deflate_components does")

    @property
    def basis(self) -> Tensor:
        """The dense ``(n, c)`` basis (``n * c`` numbers: small graphs only)."""
        return _dense_basis(self.entries, self.labels, self.num_components)

    @property
    def values(self) -> Tensor:
        return self.entries.new_full((self.num_components,), self.value)

    def check_finite(self) -> None:
        self.base.check_finite()
        check_finite("basis", self.entries.detach())
        if not math.isfinite(self.value):
            raise ValueError(f"value must be finite (got value={self.value}); pass the finite eigenvalue the "
                             f"component vectors belong to")

    def project(self, x: Tensor) -> Tensor:
        columns = x.unsqueeze(-1) if x.dim() == 1 else x
        weighted = self.entries.unsqueeze(-1) * columns                                   # (n, d)
        coefficients = weighted.new_zeros(self.num_components, columns.shape[-1]).index_add(
            0, self.labels, weighted)                                                     # V^T x, (c, d)
        out = self.value * self.entries.unsqueeze(-1) * coefficients[self.labels]         # V (mu V^T x)
        return out.squeeze(-1) if x.dim() == 1 else out

    def basis_rayleigh_quotients(self) -> Tensor:
        """``v_c^T A v_c`` in ``O(nnz)``: every stored entry ``A_ij`` adds ``v_i A_ij v_j`` to its component."""
        base = self.base
        same = self.labels[base.row] == self.labels[base.col]
        contribution = torch.where(same, base.value * self.entries[base.row] * self.entries[base.col], 0.0)
        return contribution.new_zeros(self.num_components).index_add(0, self.labels[base.row], contribution)

    def to_scipy(self):
        import numpy as np
        import scipy.sparse as sp
        from scipy.sparse.linalg import LinearOperator

        base = self.base.to_scipy()
        n, c, mu = self.entries.numel(), self.num_components, self.value
        # the basis as a SciPy sparse matrix: one nonzero per row, n numbers
        v = sp.csr_matrix((self.entries.detach().cpu().double().numpy(), (np.arange(n), self.labels.cpu().numpy())),
                          shape=(n, c))
        vt = v.T.tocsr()

        def apply(x: np.ndarray) -> np.ndarray:
            columns = x.reshape(n, -1)
            return (base @ columns - mu * (v @ (vt @ columns))).reshape(x.shape)

        return LinearOperator((n, n), matvec=apply, matmat=apply, dtype=np.float64)


def deflate_components(op: GraphOperator, eigenvalue: float = 0.0) -> ComponentDeflatedOperator:
    r"""The normalized adjacency with its eigenvalue-1 block :math:`\sum_C v_C v_C^T` moved to ``eigenvalue``.

    ``op`` must come from :func:`normalized_adjacency` (it carries the degrees). The result is
    :math:`\hat A - (1 - \text{eigenvalue}) \sum_C v_C v_C^T`: with the default 0 the block
    is removed; a value outside the spectrum on the side a solver never reaches (e.g. -2
    for ``which="largest"``) keeps the removed directions out of a top-``k`` solve even
    when ``k`` is close to ``n``. The removed part is exact and cheap to apply (``O(n)`` per
    column whatever the number of components, see :class:`ComponentDeflatedOperator`), so a
    layer can add it back exactly and spend its ``k`` eigenpairs on the informative rest of
    the spectrum.

    Args:
        op (GraphOperator): a normalized adjacency.
        eigenvalue (float): the eigenvalue the component vectors get, a finite real number. (default: ``0.0``)
    """
    if not isinstance(op, GraphOperator):
        raise TypeError(f"deflate_components takes the GraphOperator of normalized_adjacency (got "
                        f"{type(op).__name__})")
    real = isinstance(eigenvalue, numbers.Real) and not isinstance(eigenvalue, bool)
    if not real or not math.isfinite(float(eigenvalue)):
        raise ValueError(f"eigenvalue must be a finite real number, e.g. 0.0 or -2.0 (got eigenvalue={eigenvalue!r})")
    if op.degree is None:
        raise ValueError("deflate_components needs an operator built by normalized_adjacency "
                         "(it uses its degrees); got one built without them")
    _, labels = connected_components(op)
    entries, kept_labels, count = _component_entries(labels, op.degree)
    return ComponentDeflatedOperator(op, entries, kept_labels, count, value=1.0 - float(eigenvalue))
