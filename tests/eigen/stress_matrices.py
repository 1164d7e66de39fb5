"""The stress set for symmetric eigensolvers: every family the divide and conquer must survive.

Each family returns a float64 batch ``(count, n, n)``; tests cast to the dtype under test.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import Tensor


def _orthogonal(count: int, n: int, g: torch.Generator) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(count, n, n, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def _with_spectrum(values: Tensor, g: torch.Generator) -> Tensor:
    q = _orthogonal(values.shape[0], values.shape[1], g)
    a = (q * values.unsqueeze(-2)) @ q.mT
    return (a + a.mT) / 2


def random_gaussian(count: int, n: int, g: torch.Generator) -> Tensor:
    a = torch.randn(count, n, n, generator=g, dtype=torch.float64)
    return (a + a.mT) / 2


def clustered(count: int, n: int, g: torch.Generator) -> Tensor:
    """Three clusters of eigenvalues, each spread by 1e-9 relative."""
    centres = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
    pick = torch.randint(0, 3, (count, n), generator=g)
    return _with_spectrum(centres[pick] + 1e-9 * torch.randn(count, n, generator=g, dtype=torch.float64), g)


def repeated(count: int, n: int, g: torch.Generator) -> Tensor:
    """Exactly repeated eigenvalues (integers with multiplicities), rotated."""
    values = torch.randint(-2, 3, (count, n), generator=g).to(torch.float64)
    return _with_spectrum(values, g)


def repeated_blocks(count: int, n: int, g: torch.Generator) -> Tensor:
    """Block diagonal with identical blocks: repeated eigenvalues that stay exact in floating point."""
    block = max(1, n // 3)
    base = random_gaussian(count, block, g)
    a = torch.zeros(count, n, n, dtype=torch.float64)
    for start in range(0, n - block + 1, block):
        a[:, start:start + block, start:start + block] = base
    return a


def zero(count: int, n: int, g: torch.Generator) -> Tensor:
    return torch.zeros(count, n, n, dtype=torch.float64)


def identity(count: int, n: int, g: torch.Generator) -> Tensor:
    scale = torch.rand(count, 1, 1, generator=g, dtype=torch.float64) * 4 - 2
    return scale * torch.eye(n, dtype=torch.float64)


def diagonal(count: int, n: int, g: torch.Generator) -> Tensor:
    """Diagonal, with some entries repeated exactly."""
    values = torch.randint(-3, 4, (count, n), generator=g).to(torch.float64)
    values = values + torch.where(torch.rand(count, n, generator=g) < 0.5, 0.0, 0.1 * torch.randn(count, n, generator=g,
                                                                                               dtype=torch.float64))
    return torch.diag_embed(values)


def rank_one(count: int, n: int, g: torch.Generator) -> Tensor:
    v = torch.randn(count, n, 1, generator=g, dtype=torch.float64)
    sign = torch.where(torch.rand(count, 1, 1, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    return sign * v @ v.mT


def wilkinson(count: int, n: int, g: torch.Generator) -> Tensor:
    """W_n^+: diagonal |i - (n-1)/2|, off-diagonal 1; its top eigenvalues come in pairs agreeing to many digits."""
    d = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2).abs()
    w = torch.diag_embed(d) + torch.diag_embed(torch.ones(n - 1, dtype=torch.float64), 1) + \
        torch.diag_embed(torch.ones(n - 1, dtype=torch.float64), -1)
    return w.expand(count, n, n).clone()


def graded(count: int, n: int, g: torch.Generator) -> Tensor:
    """A_ij = g_i g_j R_ij with g_i from 1 down to 1e-12: entries spanning 24 orders of magnitude."""
    grades = torch.logspace(0, -12, n, dtype=torch.float64)
    return random_gaussian(count, n, g) * grades.unsqueeze(-1) * grades


def badly_scaled(count: int, n: int, g: torch.Generator) -> Tensor:
    """Random matrices times 1e-30 or 1e+30: squares under- or overflow even in float32's range."""
    exponent = torch.where(torch.rand(count, 1, 1, generator=g) < 0.5, -30.0, 30.0).to(torch.float64)
    return random_gaussian(count, n, g) * 10.0 ** exponent


def disconnected_laplacian(count: int, n: int, g: torch.Generator) -> Tensor:
    """Combinatorial Laplacians of random graphs with several components (eigenvalue 0 repeated)."""
    parts = max(1, min(4, n // 2))
    label = torch.randint(0, parts, (count, n), generator=g)
    same = label.unsqueeze(-1) == label.unsqueeze(-2)
    edges = (torch.rand(count, n, n, generator=g) < 0.5) & same
    adjacency = torch.triu(edges, 1)
    adjacency = (adjacency | adjacency.mT).to(torch.float64)
    return torch.diag_embed(adjacency.sum(-1)) - adjacency


FAMILIES: Dict[str, Callable[[int, int, torch.Generator], Tensor]] = {
    "random": random_gaussian,
    "clustered": clustered,
    "repeated": repeated,
    "repeated_blocks": repeated_blocks,
    "zero": zero,
    "identity": identity,
    "diagonal": diagonal,
    "rank_one": rank_one,
    "wilkinson": wilkinson,
    "graded": graded,
    "badly_scaled": badly_scaled,
    "disconnected_laplacian": disconnected_laplacian,
}


def stress_batch(family: str, count: int, n: int, dtype: torch.dtype, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed + 1000 * n)
    return FAMILIES[family](count, n, g).to(dtype)


__all__ = ["FAMILIES", "stress_batch"]
