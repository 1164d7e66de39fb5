r"""Parallel cyclic Jacobi, vectorised over the batch: the small-``n`` path of ``batched_dc``.

Method: the two-sided Jacobi eigenvalue algorithm (Golub and Van Loan, *Matrix
Computations*, Sec. 8.5) with the parallel round-robin ordering of Brent and Luk (1985):
each *round* annihilates ``n/2`` disjoint off-diagonal pairs :math:`(p, q)` at once with
rotations :math:`J^\top A J`, :math:`J = \begin{bmatrix} c & s \\ -s & c \end{bmatrix}`,
:math:`t = \operatorname{sign}(\theta) / (|\theta| + \sqrt{1 + \theta^2})`,
:math:`\theta = (a_{qq} - a_{pp}) / 2 a_{pq}`; ``n - 1`` rounds make a sweep that meets
every pair once, and sweeps converge quadratically. Every round is a handful of
elementwise operations on the whole batch; matrices that have converged leave the batch.
Rotations are orthogonal by construction, so repeated eigenvalues need no special care.

For tiny ``n`` this beats both LAPACK's per-matrix calls and the divide and conquer's
many short stages on a CPU (measured crossover in ``README_SECTION.md``).
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor

#: Sweep cap: quadratic convergence needs about log2(n) + 4 sweeps; 30 is never reached
#: in practice and only bounds the loop.
MAX_SWEEPS = 30

#: Converged when ||offdiag(A)||_F <= this many eps times sqrt(n) ||A||_F: the rounding level
#: of one rotation sweep, which the quadratic convergence reaches one sweep after sqrt(eps).
OFF_DIAGONAL_TOL = 1.0


def _round_robin(n: int) -> List[List[int]]:
    """Brent-Luk / circle-method layouts: ``n - 1`` orders of ``0..n-1`` (n even) in which
    positions ``(2k, 2k+1)`` form the pairs of one round, every pair meeting once per sweep."""
    players = list(range(n))
    layouts = []
    for _ in range(n - 1):
        layout = []
        for k in range(n // 2):
            layout += [players[k], players[n - 1 - k]]
        layouts.append(layout)
        players = [players[0]] + [players[-1]] + players[1:-1]
    return layouts


class _Round:
    """Index tables of one round: the rotation of pairs ``(2k, 2k+1)`` followed by the move to
    the next round's layout, as one column map ``X -> X J P``:
    ``(X J P)[:, i] = alpha_i X[:, first[i]] + beta_i X[:, second[i]]``, with ``alpha`` and
    ``beta`` read from ``[cos, sin, -sin]`` at ``alpha_at`` and ``beta_at``."""

    def __init__(self, move: List[int], device) -> None:
        half = len(move) // 2
        first, second, alpha_at, beta_at = [], [], [], []
        for j in move:                      # new column i is old (rotated) column j
            k = j // 2
            if j % 2 == 0:                  # p column: c e_p - s e_q
                first.append(j), second.append(j + 1), alpha_at.append(k), beta_at.append(2 * half + k)
            else:                           # q column: s e_p + c e_q
                first.append(j - 1), second.append(j), alpha_at.append(half + k), beta_at.append(k)
        as_index = lambda values: torch.tensor(values, device=device)  # noqa: E731
        self.first, self.second = as_index(first), as_index(second)
        self.alpha_at, self.beta_at = as_index(alpha_at), as_index(beta_at)


def _apply_columns(x: Tensor, rnd: _Round, alpha: Tensor, beta: Tensor) -> Tensor:
    """``X J P`` for ``X`` of shape ``(B, r, n)``; alpha and beta ``(B, n)``."""
    return torch.addcmul(x.index_select(-1, rnd.first) * alpha.unsqueeze(-2), x.index_select(-1, rnd.second),
                         beta.unsqueeze(-2))


def jacobi_eigh(matrix: Tensor) -> Tuple[Tensor, Tensor]:
    r"""All eigenpairs of symmetric matrices by parallel cyclic Jacobi.

    Shapes:
        matrix ``(B, n, n)`` -> eigenvalues ``(B, n)`` ascending, eigenvectors ``(B, n, n)``.
    """
    batch, n = matrix.shape[0], matrix.shape[-1]
    size = n + n % 2
    a = matrix
    if size != n:  # a decoupled extra row/column: its pairs have a_pq = 0, so it never moves
        a = torch.nn.functional.pad(matrix, (0, 1, 0, 1))
    layouts = _round_robin(size) if size > 1 else [[0]]
    # Put A in the first round's layout; each round then rotates and moves it to the next one.
    first = torch.tensor(layouts[0], device=a.device)
    a = a[:, first][:, :, first]
    rows = torch.eye(size, dtype=a.dtype, device=a.device)[first].expand(batch, size, size).contiguous()  # V^T
    rounds = []
    for r in range(len(layouts)):
        position = {element: i for i, element in enumerate(layouts[r])}
        rounds.append(_Round([position[e] for e in layouts[(r + 1) % len(layouts)]], a.device))
    half = size // 2
    pair_entries = torch.cat([torch.arange(0, size, 2) * (size + 1), torch.arange(1, size, 2) * (size + 1),
                              torch.arange(0, size, 2) * (size + 1) + 1]).to(a.device)   # a_pp, a_qq, a_pq

    eps = torch.finfo(a.dtype).eps
    tiny = torch.finfo(a.dtype).tiny
    norm2 = a.square().sum((-2, -1))
    todo = torch.arange(batch, device=a.device)
    out_a, out_rows = a.clone(), rows.clone()
    off_diagonal = ~torch.eye(size, dtype=torch.bool, device=a.device)
    for _ in range(MAX_SWEEPS if size > 1 else 0):
        off2 = (a * off_diagonal).square().sum((-2, -1))  # directly: norm2 - sum(diag^2) cancels
        done = off2 <= (OFF_DIAGONAL_TOL * eps) ** 2 * size * norm2
        if bool(done.any()):
            out_a[todo[done]] = a[done]
            out_rows[todo[done]] = rows[done]
            keep = ~done
            todo, a, rows, norm2 = todo[keep], a[keep], rows[keep], norm2[keep]
            if todo.numel() == 0:
                break
        for rnd in rounds:
            app, aqq, apq = a.reshape(a.shape[0], -1).index_select(1, pair_entries).split(half, -1)
            # t = tan(angle) = sign(d) 2 a_pq / (|d| + sqrt(d^2 + 4 a_pq^2)), d = a_qq - a_pp: the
            # smaller root of t^2 + 2 theta t - 1 = 0; 0 when a_pq = 0 (the clamp avoids 0/0).
            difference = aqq - app
            twice = 2 * apq
            t = torch.copysign(twice, difference * twice) / (difference.abs() + torch.hypot(difference, twice)).clamp_min(tiny)
            cos = torch.rsqrt(torch.addcmul(torch.ones_like(t), t, t))
            sin = t * cos
            table = torch.cat((cos, sin, -sin), -1)
            alpha, beta = table.index_select(-1, rnd.alpha_at), table.index_select(-1, rnd.beta_at)
            a = _apply_columns(_apply_columns(a, rnd, alpha, beta).mT, rnd, alpha, beta)   # (JP)^T A (JP)
            rows = _apply_columns(rows.mT, rnd, alpha, beta).mT
    else:
        out_a[todo], out_rows[todo] = a, rows
    values = out_a.diagonal(dim1=-2, dim2=-1)
    values, order = torch.sort(values, dim=-1, stable=True)
    vectors = out_rows.gather(1, order.unsqueeze(-1).expand(batch, size, size)).mT   # columns
    if size != n:  # drop the extra pair: the one whose vector is e_n
        keep = vectors[:, n].abs() < 0.5
        values = values[keep].reshape(batch, n)
        vectors = vectors.mT[keep].reshape(batch, n, size).mT[:, :n]
    return values, vectors
