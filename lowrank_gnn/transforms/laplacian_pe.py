"""LaplacianEigenvectorPE: PyG's ``laplacian_eigenvector_pe``, deterministic and float64-accurate."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from .._validation import check_positive_int
from .add_eigenpairs import AddEigenpairs, result_dtype
from .cache import OutputSpecs
from .packed import PackedGraphs, pack_graphs


class LaplacianEigenvectorPE(BaseTransform):
    r"""Laplacian eigenvector positional encodings with the meaning of PyG's
    :class:`~torch_geometric.transforms.AddLaplacianEigenvectorPE` (Dwivedi et al.,
    `"Benchmarking Graph Neural Networks" <https://arxiv.org/abs/2003.00982>`_), computed
    deterministically in float64.

    For :math:`L = I - D^{-1/2} A D^{-1/2}` with eigenvalues
    :math:`0 = \lambda_0 \le \lambda_1 \le \dots`, the encoding of a graph is
    :math:`[u_1, \dots, u_k]`: the ``k`` eigenvectors after the first, as in PyG (which skips
    :math:`u_0`; :class:`AddEigenpairs` keeps it). Differences from PyG, all deliberate:

    * **signs** follow the library's canonical convention (first significant entry positive,
      :func:`~lowrank_gnn.eigen.canonical_signs`) instead of being flipped at random on each
      call, so the same graph always gets the same encoding; flip signs at random during
      training (an augmentation) if the model should not rely on them;
    * **accuracy**: float64 LAPACK for every graph up to 5000 nodes (a full ``eigh``, or
      ``dsyevr`` for the ``k + 1`` wanted pairs only on larger graphs, see
      :func:`~lowrank_gnn.linalg.eigh_extremal`; PyG uses ``numpy.linalg.eig`` below 100 nodes
      and float32 ARPACK above), stored in ``torch.get_default_dtype()``;
    * **small graphs**: a graph with ``n <= k`` nodes has only ``n - 1`` such eigenvectors; they
      fill the first columns and the remaining ones are zero (PyG raises). An empty graph
      gets a ``(0, k)`` encoding;
    * ``attr_name=None`` (PyG: concatenate to ``x``) is not offered: concatenate in the model.

    Args:
        k (int): number of eigenvectors, not counting the first.
        attr_name (str): the node-level attribute written.
            (default: ``"laplacian_eigenvector_pe"``)
        is_undirected (bool): PyG's third argument, its hint that every graph is undirected,
            accepted (also positionally) so that PyG code swaps in unchanged. It changes
            nothing here: the encoding is computed from the symmetric normalized Laplacian and
            every graph's symmetry is checked whatever its value (a directed graph raises a
            ``ValueError``). PyG's other keyword arguments (options of SciPy's
            ``eigs``/``eigsh``) are not accepted. (default: ``False``)
        backend (str): keyword-only: an eigen backend name for :class:`AddEigenpairs`, one that
            solves every graph to convergence (``"exact"``, ``"stable"``, ``"batched_dc"``).
            (default: ``"exact"``)
        backend_kwargs (dict, optional): keyword-only: its options.

    Shapes:
        writes ``data[attr_name]`` of shape ``(num_nodes, k)``.

    Example:
        >>> from torch_geometric.data import Data
        >>> from lowrank_gnn.testing import cycle_graph
        >>> from lowrank_gnn.transforms import LaplacianEigenvectorPE
        >>> graph = cycle_graph(6)
        >>> data = Data(edge_index=graph.edge_index, num_nodes=graph.num_nodes)
        >>> LaplacianEigenvectorPE(k=3)(data).laplacian_eigenvector_pe.shape
        torch.Size([6, 3])
    """

    def __init__(self, k: int, attr_name: str = "laplacian_eigenvector_pe", is_undirected: bool = False, *,
                 backend: str = "exact", backend_kwargs: Optional[Dict[str, Any]] = None) -> None:
        self.k = check_positive_int("k", k)
        if not isinstance(is_undirected, (bool, np.bool_)):
            raise TypeError(f"is_undirected must be a bool (got is_undirected={is_undirected!r})")
        self.is_undirected = bool(is_undirected)
        if not isinstance(attr_name, str) or not attr_name:
            raise ValueError(f"attr_name must be a non-empty string (got attr_name={attr_name!r}); to use the "
                             f"encoding as node features, concatenate it to x in the model, e.g. "
                             f"torch.cat([data.x, data.laplacian_eigenvector_pe], dim=-1)")
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a backend name (got {type(backend).__name__})")
        self.attr_name = attr_name
        self.eigenpairs = AddEigenpairs(k + 1, operator="laplacian", which="smallest", backend=backend,
                                        backend_kwargs=backend_kwargs)

    @property
    def node_level(self) -> Tuple[str, ...]:
        return (self.attr_name,)

    def output_specs(self, num_nodes: int, num_graphs: int) -> OutputSpecs:
        """The shape and dtype of the attribute :meth:`compute` returns (see :meth:`AddEigenpairs.output_specs`)."""
        return {self.attr_name: ((num_nodes, self.k), result_dtype())}

    def cache_config(self) -> Optional[Dict[str, Any]]:
        """:meth:`AddEigenpairs.cache_config` of the inner transform, nested under this transform's name (which
        names the cache file) and ``attr_name``."""
        inner = self.eigenpairs.cache_config()
        return None if inner is None else {"transform": type(self).__name__, "attr_name": self.attr_name,
                                           "eigenpairs": inner}

    def forward(self, data: Data) -> Data:
        data[self.attr_name] = self.compute(pack_graphs([data]), progress=False)[self.attr_name]
        return data

    def compute(self, packed: PackedGraphs, progress: Optional[bool] = None) -> Dict[str, Tensor]:
        """``{attr_name: (total_nodes, k)}`` for every packed graph (see :meth:`AddEigenpairs.compute`)."""
        vectors = self.eigenpairs.compute(packed, progress)["eigvecs"]
        return {self.attr_name: vectors[:, 1:].contiguous()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, attr_name={self.attr_name!r})"
