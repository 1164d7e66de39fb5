"""Property-based tests: random small symmetric matrices through every backend and ``batched_eigh``.

Matrices are drawn as ``Q diag(spectrum) Q^T`` with spectra that are random, repeated,
clustered, zero, identity, graded (1 ... 1e-12) or rank-deficient, scaled by 1e-30 ... 1e30,
in float32 and float64. Every backend must return eigenpairs whose residual
``||A U - U diag(lambda)||_2 / ||A||_2``, orthogonality ``max|U^T U - I|`` and eigenvalue error
(against float64 ``eigvalsh``, relative to ``||A||_2``) are within ``50 n eps``.
The default run draws a fixed, bounded set of examples (``derandomize=True``); the ``slow``
variant draws many more.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowrank_gnn.eigen import AmortizedBackend, BatchedDCBackend, ExactBackend, StableBackend, batched_eigh

SPECTRA = ("random", "repeated", "clustered", "zero", "identity", "graded", "rank_one")


def _spectrum(kind: str, n: int, generator: torch.Generator) -> torch.Tensor:
    if kind == "random":
        return torch.randn(n, generator=generator, dtype=torch.float64)
    if kind == "repeated":
        values = torch.randn(max(1, n // 3), generator=generator, dtype=torch.float64)
        return values.repeat_interleave(3)[:n] if values.numel() * 3 >= n else torch.ones(n, dtype=torch.float64)
    if kind == "clustered":
        return 1 + 1e-9 * torch.arange(n, dtype=torch.float64) - 2.0 * (torch.arange(n) % 2).double()
    if kind == "zero":
        return torch.zeros(n, dtype=torch.float64)
    if kind == "identity":
        return torch.ones(n, dtype=torch.float64)
    if kind == "graded":
        return 10.0 ** (-12 * torch.arange(n, dtype=torch.float64) / max(n - 1, 1))
    values = torch.zeros(n, dtype=torch.float64)
    values[0] = -2.0
    return values


@st.composite
def symmetric_matrices(draw, max_n: int = 8):
    n = draw(st.integers(1, max_n))
    kind = draw(st.sampled_from(SPECTRA))
    exponent = draw(st.sampled_from((-30, -10, 0, 10, 30)))
    dtype = draw(st.sampled_from((torch.float32, torch.float64)))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    matrix = (q * _spectrum(kind, n, generator)) @ q.T
    matrix = ((matrix + matrix.T) / 2 * 10.0 ** exponent).to(dtype)
    return matrix, kind, exponent


def _check(matrix: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor, expected: torch.Tensor) -> None:
    n, eps = matrix.shape[-1], torch.finfo(matrix.dtype).eps
    a = matrix.double()
    norm = torch.linalg.matrix_norm(a, 2)
    tol = 50 * n * eps
    assert torch.isfinite(values).all() and torch.isfinite(vectors).all()
    u, lam = vectors.double(), values.double()
    k = u.shape[-1]
    assert float((u.mT @ u - torch.eye(k, dtype=torch.float64)).abs().max()) <= tol
    if float(norm) == 0:
        assert float(lam.abs().max()) == 0
        return
    residual = float(torch.linalg.matrix_norm(a @ u - u * lam, 2) / norm)
    assert residual <= tol, residual
    assert float((lam - expected).abs().max() / norm) <= tol


def _top(matrix: torch.Tensor, k: int) -> torch.Tensor:
    return torch.linalg.eigvalsh(matrix.double()).flip(-1)[:k]


BACKENDS = {
    "exact": lambda k, n: ExactBackend(k, method="dense"),
    "exact_sparse": lambda k, n: ExactBackend(k, method="sparse"),
    "stable": lambda k, n: StableBackend(k),
    "batched_dc": lambda k, n: BatchedDCBackend(k, method="dc"),
    "batched_lapack": lambda k, n: BatchedDCBackend(k, method="lapack"),
    # a Krylov depth that spans the whole space: the refinement is then an exact solve
    "amortized_refine": lambda k, n: AmortizedBackend(k, refine=math.ceil(n / k)),
    "amortized_householder_refine": lambda k, n: AmortizedBackend(k, refine=math.ceil(n / k),
                                                                  orthogonalization="householder"),
}


def _run_backend(name: str, data, k_fraction: float) -> None:
    matrix, _, _ = data
    n = matrix.shape[-1]
    k = max(1, min(n, round(k_fraction * n)))
    if name == "exact_sparse":
        if n < 3:
            return
        k = min(k, n - 1)
    with torch.no_grad():
        pairs = BACKENDS[name](k, n)(matrix)
    _check(matrix, pairs.eigenvalues, pairs.eigenvectors, _top(matrix, k))


def _run_batched_eigh(data, method: str) -> None:
    matrix, _, _ = data
    values, vectors = batched_eigh(matrix.unsqueeze(0), method=method)
    _check(matrix, values[0], vectors[0], torch.linalg.eigvalsh(matrix.double()))


FAST = settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(BACKENDS))
@FAST
@given(data=symmetric_matrices(), k_fraction=st.floats(0.1, 1.0))
def test_backend_eigenpairs(name, data, k_fraction):
    _run_backend(name, data, k_fraction)


@pytest.mark.parametrize("method", ["dc", "lapack"])
@FAST
@given(data=symmetric_matrices())
def test_batched_eigh(method, data):
    _run_batched_eigh(data, method)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BACKENDS))
@MANY
@given(data=symmetric_matrices(max_n=16), k_fraction=st.floats(0.1, 1.0))
def test_backend_eigenpairs_many(name, data, k_fraction):
    _run_backend(name, data, k_fraction)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dc", "lapack"])
@MANY
@given(data=symmetric_matrices(max_n=16))
def test_batched_eigh_many(method, data):
    _run_batched_eigh(data, method)
