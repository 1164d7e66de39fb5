"""The conformance suite every :class:`~lowrank_gnn.eigen.EigenBackend` must pass.

Subclass :class:`EigenBackendConformance` in a pytest module and set ``backend_name``
(plus ``backend_kwargs``); override :meth:`~EigenBackendConformance.solve` for backends
that must be run to convergence first (e.g. ``amortized``), and the capability flags for
what a backend does not support. Every test compares with a float64 dense reference in a
sign-invariant way (:func:`~lowrank_gnn.testing.assert_eigenpairs_close`).

Example::

    from lowrank_gnn.testing.conformance import EigenBackendConformance

    class TestExact(EigenBackendConformance):
        backend_name = "exact"
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import pytest
import torch

from ..eigen import WHICH, EigenBackend, EigenPairs, resolve_eigen_backend
from ..operators import laplacian, normalized_adjacency
from .asserts import TOLERANCES, assert_eigenpairs_close, assert_matches_reference_vectors
from .graphs import ReferenceGraph, complete_graph, cycle_graph, disjoint_union, path_graph, reference_graphs

DTYPES = (torch.float32, torch.float64)
DEVICES = ("cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="CUDA is not available")))


def random_symmetric(n: int, *batch: int, dtype=torch.float64, seed: int = 0, gap: float = 0.5) -> torch.Tensor:
    """Random symmetric matrices with eigenvalues spaced at least ``gap`` apart (all simple)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(*batch, n, n, generator=g, dtype=torch.float64))
    steps = gap + torch.rand(*batch, n, generator=g, dtype=torch.float64)
    values = steps.cumsum(-1) - steps.sum(-1, keepdim=True) / 2  # indefinite, simple
    return ((q * values.unsqueeze(-2)) @ q.mT).to(dtype)


class EigenBackendConformance:
    """Shared tests; a subclass names the backend and its capabilities."""

    backend_name: str = ""
    backend_kwargs: Dict[str, Any] = {}
    #: Relative tolerances per dtype; override for iterative backends.
    tolerances: Dict[torch.dtype, float] = TOLERANCES
    supports_batch: bool = True
    #: False for solvers that need k < n (ARPACK).
    supports_full_spectrum: bool = True

    # hooks -------------------------------------------------------------------------
    def make_backend(self, k: int, which: str = "largest", **kwargs) -> EigenBackend:
        return resolve_eigen_backend(self.backend_name, k=k, which=which, **{**self.backend_kwargs, **kwargs})

    def solve(self, backend: EigenBackend, op) -> EigenPairs:
        """How the suite obtains eigenpairs; iterative backends converge here first."""
        return backend(op)

    def check(self, pairs: EigenPairs, matrix: torch.Tensor, k: int, which: str) -> None:
        assert_eigenpairs_close(pairs, matrix, k, which, rtol=self.tolerances[pairs.eigenvalues.dtype])

    # numerical tests ---------------------------------------------------------------------
    @pytest.mark.parametrize("graph", reference_graphs(), ids=lambda g: g.name)
    @pytest.mark.parametrize("which", WHICH)
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_known_spectrum(self, graph: ReferenceGraph, which: str, dtype: torch.dtype) -> None:
        op = laplacian(graph.edge_index, torch.ones(graph.edge_index.shape[1], dtype=dtype),
                       graph.num_nodes, normalization=None)
        k = min(5, graph.num_nodes - 1)
        pairs = self.solve(self.make_backend(k, which), op)
        self.check(pairs, op.to_dense(), k, which)
        known = graph.laplacian_eigenvalues
        known = known[torch.argsort(-known if which != "smallest" else known, stable=True)][:k]
        assert torch.allclose(pairs.eigenvalues.double(), known,
                              atol=self.tolerances[dtype] * float(known.abs().max()) * 10), \
            f"{pairs.eigenvalues} != closed form {known}"

    @pytest.mark.parametrize("which", WHICH)
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_random_simple_spectrum(self, which: str, dtype: torch.dtype) -> None:
        matrix = random_symmetric(24, dtype=dtype, seed=1)
        pairs = self.solve(self.make_backend(6, which), matrix)
        self.check(pairs, matrix, 6, which)
        assert_matches_reference_vectors(pairs, matrix, which, rtol=self.tolerances[dtype])

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_disconnected_repeated_top_eigenvalue(self, dtype: torch.dtype) -> None:
        """The Cora situation: eigenvalue 1 once per component, and k cuts that block."""
        graph = disjoint_union(cycle_graph(5), path_graph(4), complete_graph(3), path_graph(2))
        op = normalized_adjacency(graph.edge_index, torch.ones(graph.edge_index.shape[1], dtype=dtype),
                                  graph.num_nodes)
        pairs = self.solve(self.make_backend(3, "largest"), op)
        self.check(pairs, op.to_dense(), 3, "largest")
        assert torch.allclose(pairs.eigenvalues, torch.ones(3, dtype=dtype), atol=10 * self.tolerances[dtype])

    def test_full_spectrum(self) -> None:
        if not self.supports_full_spectrum:
            pytest.skip("this backend needs k < n")
        matrix = random_symmetric(9, seed=2)
        self.check(self.solve(self.make_backend(9, "smallest"), matrix), matrix, 9, "smallest")

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_batch_equals_each_matrix(self, dtype: torch.dtype) -> None:
        if not self.supports_batch:
            pytest.skip("this backend takes one operator at a time")
        batch = random_symmetric(10, 3, dtype=dtype, seed=3)
        pairs = self.solve(self.make_backend(4, "magnitude"), batch)
        self.check(pairs, batch, 4, "magnitude")
        for b in range(3):
            single = self.solve(self.make_backend(4, "magnitude"), batch[b])
            tol = 1e2 * self.tolerances[dtype]
            assert torch.allclose(single.eigenvalues, pairs.eigenvalues[b], atol=tol)
            assert torch.allclose(single.eigenvectors, pairs.eigenvectors[b], atol=tol)

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_dtype_and_device_follow_input(self, device: str, dtype: torch.dtype) -> None:
        matrix = random_symmetric(12, dtype=dtype, seed=4).to(device)
        pairs = self.solve(self.make_backend(3).to(device), matrix)
        for tensor in (pairs.eigenvalues, pairs.eigenvectors):
            assert tensor.dtype == dtype and tensor.device.type == device
        self.check(pairs, matrix.cpu(), 3, "largest")

    # bad input ---------------------------------------------------------------------------
    @pytest.mark.parametrize("k", [0, -1, 2.0, True])
    def test_rejects_bad_k_at_construction(self, k) -> None:
        with pytest.raises(ValueError, match="k must"):
            self.make_backend(k)

    def test_rejects_k_larger_than_n(self) -> None:
        with pytest.raises(ValueError, match=r"k must satisfy 1 <= k <= n=4 \(got k=5\)"):
            self.solve(self.make_backend(5), random_symmetric(4))

    def test_rejects_unknown_which(self) -> None:
        with pytest.raises(ValueError, match="which must be one of 'largest', 'smallest', 'magnitude'"):
            self.make_backend(2, which="top")

    @pytest.mark.parametrize("shape", [(4, 5), (4,), (2, 3, 4)])
    def test_rejects_non_square(self, shape: Tuple[int, ...]) -> None:
        with pytest.raises(ValueError, match=r"shape \(\*batch, n, n\)"):
            self.solve(self.make_backend(2), torch.zeros(shape))

    def test_rejects_non_symmetric(self) -> None:
        matrix = random_symmetric(6)
        matrix[0, 1] += 1.0
        with pytest.raises(ValueError, match="symmetric"):
            self.solve(self.make_backend(2), matrix)

    @pytest.mark.parametrize("bad", [float("nan"), float("inf")])
    def test_rejects_non_finite(self, bad: float) -> None:
        matrix = random_symmetric(6)
        matrix[2, 3] = matrix[3, 2] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            self.solve(self.make_backend(2), matrix)

    def test_rejects_integer_dtype(self) -> None:
        with pytest.raises(TypeError, match="floating-point"):
            self.solve(self.make_backend(2), torch.eye(4, dtype=torch.long))

    def test_rejects_non_operator(self) -> None:
        with pytest.raises(TypeError, match="expected a dense tensor"):
            self.solve(self.make_backend(2), [[1.0, 0.0], [0.0, 1.0]])


__all__ = ["EigenBackendConformance", "random_symmetric", "DTYPES", "DEVICES"]
