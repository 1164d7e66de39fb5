"""The conformance suites every :class:`~lowrank_gnn.eigen.EigenBackend` and every
:class:`~lowrank_gnn.operators.Operator` must pass.

Subclass :class:`EigenBackendConformance` in a pytest module and set ``backend_name``
(plus ``backend_kwargs``); override :meth:`~EigenBackendConformance.solve` for backends
that must be run to convergence first (e.g. ``amortized``), and the capability flags for
what a backend does not support. Every test compares with a float64 dense reference in a
sign-invariant way (:func:`~lowrank_gnn.testing.assert_eigenpairs_close`).

Example::

    from lowrank_gnn.testing.conformance import EigenBackendConformance

    class TestExact(EigenBackendConformance):
        backend_name = "exact"

Subclass :class:`OperatorConformance` and implement
:meth:`~OperatorConformance.make_case`, which builds the operator together with a float64
dense reference of its matrix (computed without the operator) and, for a differentiable
operator, that reference as a function of the tensor the operator is differentiable in.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np
import pytest
import torch
from torch import Tensor

from ..eigen import WHICH, EigenBackend, EigenPairs, resolve_eigen_backend
from ..operators import Operator, as_operator, laplacian, normalized_adjacency
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


class OperatorCase(NamedTuple):
    """What :meth:`OperatorConformance.make_case` returns.

    Attributes:
        operator (Operator): the operator under test.
        dense (Tensor): float64 reference of the whole matrix ``(*batch, n, n)``, computed
            without the operator.
        rows (slice): the rows of ``X`` and ``A X`` that :meth:`~Operator.matmul` takes and
            returns (``slice(None)``: all; a row-distributed operator: this rank's).
        leaf (Tensor, optional): a tensor the operator is differentiable in (``requires_grad``).
        dense_of (callable, optional): the float64 reference as a function of a float64 copy of
            ``leaf``, differentiable, for the gradient checks.
    """

    operator: Operator
    dense: Tensor
    rows: slice = slice(None)
    leaf: Optional[Tensor] = None
    dense_of: Optional[Callable[[Tensor], Tensor]] = None


#: The matrices :meth:`OperatorConformance.make_case` is asked for: a symmetric one, one that is
#: not symmetric, and a symmetric one with a NaN entry.
VARIANTS = ("symmetric", "asymmetric", "nan")


class OperatorConformance:
    """Shared tests of the operator protocol; a subclass builds the operator (:meth:`make_case`).

    Every check compares with the float64 dense reference of the case: shape, dtype and
    device; :meth:`~Operator.matmul` (blocks and single vectors); :meth:`~Operator.to_dense`;
    :attr:`~Operator.symmetric` on a symmetric and a non-symmetric matrix;
    :meth:`~Operator.frobenius_norm`; :meth:`~Operator.check_finite` on a NaN;
    :meth:`~Operator.to_scipy`; gradients of ``matmul`` to ``X`` and to the operator's values;
    and that every public member a class inherits runs.
    """

    #: The variants of :data:`VARIANTS` that :meth:`make_case` can build.
    variants: Tuple[str, ...] = VARIANTS
    #: False for operators that hold no whole matrix: ``to_dense`` must raise ``ValueError``.
    has_dense: bool = True
    #: False for operators without a SciPy form: ``to_scipy`` must raise ``ValueError``.
    has_scipy: bool = True
    #: False when :meth:`~Operator.frobenius_norm` is an estimate (checked to 50% only).
    exact_frobenius: bool = True

    def make_case(self, dtype: torch.dtype, device: str, variant: str) -> OperatorCase:
        """Build the operator of ``variant`` (one of :attr:`variants`) in ``dtype`` on ``device``."""
        raise NotImplementedError

    # helpers -----------------------------------------------------------------------------
    def case(self, dtype: torch.dtype = torch.float64, device: str = "cpu", variant: str = "symmetric") -> OperatorCase:
        if variant not in self.variants:
            pytest.skip(f"{type(self).__name__} builds no {variant!r} operator")
        case = self.make_case(dtype, device, variant)
        return case._replace(dense=case.dense.detach().to(torch.float64))

    @staticmethod
    def probe(case: OperatorCase, columns: int = 3, seed: int = 0) -> Tensor:
        """Float64 ``X (*batch, n, columns)``, on the reference's device."""
        generator = torch.Generator().manual_seed(seed)
        shape = (*case.dense.shape[:-1], columns)
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(case.dense.device)

    @staticmethod
    def assert_close(actual: Tensor, expected: Tensor, dtype: torch.dtype, what: str) -> None:
        scale = max(float(expected.abs().max()) if expected.numel() else 0.0, 1.0)
        difference = actual.detach().double().cpu() - expected.detach().cpu()
        error = float(difference.abs().max()) if expected.numel() else 0.0
        assert error <= 10 * TOLERANCES[dtype] * scale, f"{what}: max error {error:.3g} (scale {scale:.3g})"

    # protocol -----------------------------------------------------------------------------
    def test_is_an_operator(self) -> None:
        case = self.case()
        assert isinstance(case.operator, Operator)
        assert as_operator(case.operator) is case.operator

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_shape_dtype_device(self, dtype: torch.dtype, device: str) -> None:
        case = self.case(dtype, device)
        assert case.operator.shape == case.dense.shape
        assert case.operator.dtype == dtype
        assert case.operator.device.type == device

    @pytest.mark.parametrize("device", DEVICES)
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_matmul_matches_dense_reference(self, dtype: torch.dtype, device: str) -> None:
        case = self.case(dtype, device)
        x = self.probe(case)
        out = case.operator.matmul(x[..., case.rows, :].to(dtype))
        assert out.dtype == dtype and out.device.type == device
        self.assert_close(out, (case.dense @ x)[..., case.rows, :], dtype, "matmul")

    def test_matmul_of_a_vector(self) -> None:
        case = self.case()
        if case.dense.dim() > 2:
            pytest.skip("a batched operator takes (*batch, n, d) blocks")
        x = self.probe(case, columns=1)[case.rows]
        out = case.operator.matmul(x[:, 0])
        assert out.shape == x.shape[:1]
        self.assert_close(out, (case.dense @ self.probe(case, columns=1))[case.rows, 0], torch.float64, "matvec")

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_to_dense(self, dtype: torch.dtype) -> None:
        case = self.case(dtype)
        if not self.has_dense:
            with pytest.raises(ValueError):
                case.operator.to_dense()
            return
        dense = case.operator.to_dense()
        assert dense.shape == case.dense.shape and dense.dtype == dtype
        self.assert_close(dense, case.dense, dtype, "to_dense")

    def test_symmetric(self) -> None:
        assert self.case().operator.symmetric is True

    def test_asymmetric_is_detected(self) -> None:
        case = self.case(variant="asymmetric")
        assert not torch.allclose(case.dense, case.dense.mT), "the asymmetric case must not be symmetric"
        assert case.operator.symmetric is False

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_frobenius_norm(self, dtype: torch.dtype) -> None:
        case = self.case(dtype)
        norm = case.operator.frobenius_norm()
        expected = torch.linalg.matrix_norm(case.dense)
        assert norm.shape == expected.shape and not norm.requires_grad
        if self.exact_frobenius:
            self.assert_close(norm, expected, dtype, "frobenius_norm")
        else:
            assert torch.allclose(norm.double().cpu(), expected.cpu(), rtol=0.5)

    def test_check_finite(self) -> None:
        self.case().operator.check_finite()  # a finite operator passes
        with pytest.raises(ValueError, match="NaN"):
            self.case(variant="nan").operator.check_finite()

    def test_to_scipy(self) -> None:
        case = self.case()
        if not self.has_scipy:
            with pytest.raises(ValueError):
                case.operator.to_scipy()
            return
        n = case.dense.shape[-1]
        matrix = np.asarray(case.operator.to_scipy() @ np.eye(n))
        scale = max(1.0, float(case.dense.abs().max()))
        assert np.allclose(matrix, case.dense.cpu().numpy(), rtol=0, atol=1e-12 * scale)

    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    def test_gradients_match_dense_reference(self, dtype: torch.dtype) -> None:
        case = self.case(dtype)
        x = self.probe(case)[..., case.rows, :].to(dtype).requires_grad_()
        weights = self.probe(case, seed=1)[..., case.rows, :].to(dtype)
        (weights * case.operator.matmul(x)).sum().backward()
        # reference: d/dX <W, (A X)_rows> = A[rows, :]^T W restricted to the operator's rows of X
        full = torch.zeros_like(self.probe(case))
        full[..., case.rows, :] = weights.double()
        expected_x = (case.dense.mT @ full)[..., case.rows, :]
        assert x.grad is not None
        self.assert_close(x.grad, expected_x, dtype, "gradient to X")
        if case.leaf is None or case.dense_of is None:
            return  # not differentiable in any values
        leaf = case.leaf.detach().double().requires_grad_()
        full_x = torch.zeros_like(full)
        full_x[..., case.rows, :] = x.detach().double()
        (full * (case.dense_of(leaf) @ full_x)).sum().backward()
        assert case.leaf.grad is not None and leaf.grad is not None, "no gradient reached the operator's values"
        self.assert_close(case.leaf.grad, leaf.grad, dtype, "gradient to the values")

    def test_inherited_members_work(self) -> None:
        """Every public method or property a class inherits runs (no attribute of a parent it skipped)."""
        case = self.case()
        op, cls = case.operator, type(case.operator)
        x = self.probe(case)[..., case.rows, :]
        refused = {name for name, flag in (("to_dense", self.has_dense), ("to_scipy", self.has_scipy)) if not flag}
        for name in dir(cls):
            owner = next(c for c in cls.__mro__ if name in vars(c))
            if name.startswith("_") or owner is cls or owner is object:
                continue
            member = inspect.getattr_static(cls, name)
            if isinstance(member, property):
                getattr(op, name)
                continue
            if not callable(member):
                continue
            required = [p for p in inspect.signature(getattr(op, name)).parameters.values()
                        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY,
                                                                               p.POSITIONAL_OR_KEYWORD)]
            arguments = (x,) if required else ()
            if name in refused:
                with pytest.raises(ValueError):
                    getattr(op, name)(*arguments)
            else:
                getattr(op, name)(*arguments)


__all__ = ["EigenBackendConformance", "OperatorConformance", "OperatorCase", "VARIANTS", "random_symmetric", "DTYPES",
           "DEVICES"]
