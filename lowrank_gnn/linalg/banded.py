"""The ``k`` smallest or largest eigenpairs of a sparse symmetric matrix of small bandwidth."""
from __future__ import annotations

from typing import Any, List, Tuple

import numpy
import torch
from torch import Tensor

from .._validation import check_choice, check_k
from .partial_eigh import eigh_extremal

__all__ = ["sparse_eigh_extremal", "band_pays", "BAND_METHODS", "BAND_MIN_SIZE", "BAND_MAX_FRACTION"]

#: The ``method`` values of :func:`sparse_eigh_extremal`.
BAND_METHODS = ("auto", "band", "dense")

#: Smallest matrix for which ``method="auto"`` takes the band path. Measured (one thread, float64
#: normalized Laplacians of contact-like chains and of PROTEINS' largest graphs, ``k = 9``,
#: ``benchmarks/banded_eigh.py``), band time over the dense ``?syevr`` time: 1.2-4.4 at ``n = 200-300``
#: whatever the bandwidth ``b`` (down to 0.02 n); at 400, 0.64 for ``b = 0.01 n`` but 1.16 for 0.03 n;
#: at 500, 0.58-0.84 for ``b <= 0.018 n`` and 1.08 for 0.03 n; at 700, 0.32-0.91 for ``b <= 0.02 n``;
#: at 1000, 0.17-0.59 for ``b <= 0.036 n`` and 0.96 for 0.075 n; at 1500, 0.12-0.33 for
#: ``b <= 0.024 n``. LAPACK's band reduction (``dsbtrd``, Givens rotations) runs at a fraction of the
#: speed of the dense one (blocked ``dsytrd``), so its :math:`O(n^2 b)` wins only for large ``n``.
BAND_MIN_SIZE = 500

#: Largest bandwidth, as a fraction of ``n``, for which ``method="auto"`` takes the band path (see
#: :data:`BAND_MIN_SIZE`: the break-even bandwidth measured about 0.025 n at ``n = 500`` and grows with
#: ``n``, to about 0.08 n at 1000; the rule keeps the smallest).
BAND_MAX_FRACTION = 0.02

_EPS = float(numpy.finfo(numpy.float64).eps)
#: Eigenvalues closer than this (times the matrix's 1-norm) share one shift and one block of vectors.
_CLUSTER = 1e-8
#: Each shift lies this far (times the 1-norm) outside its cluster, on the side away from the unwanted end.
_SHIFT = 1e4 * _EPS
#: Inverse iteration steps per round; rounds until every residual passes, else the dense solver.
_STEPS, _ROUNDS = 3, 3
#: A cluster reaching past the ``k``-th eigenvalue is followed up to about 4 k + 32 eigenvalues (then dense).
_MAX_VALUES_PER_K, _MAX_VALUES_EXTRA = 4, 32
#: A pair is accepted when ``||B u - theta u|| <= _RESIDUAL * sqrt(n) * eps * ||B||_1``.
_RESIDUAL = 16.0


def band_pays(n: int, bandwidth: int) -> bool:
    """Whether ``method="auto"`` takes the band path for an ``(n, n)`` matrix whose bandwidth after
    the reverse Cuthill-McKee reordering is ``bandwidth``: ``n >= BAND_MIN_SIZE`` and
    ``bandwidth <= BAND_MAX_FRACTION * n``."""
    return n >= BAND_MIN_SIZE and bandwidth <= BAND_MAX_FRACTION * n


def sparse_eigh_extremal(matrix: Any, k: int, which: str = "smallest", method: str = "auto",
                         check_finite: bool = True) -> Tuple[Tensor, Tensor]:
    r"""The ``k`` smallest or largest eigenpairs of a sparse symmetric matrix, by band reduction and
    inverse iteration, deterministically.

    For a sparse symmetric :math:`A` (the lower triangle is read), the rows and columns are
    reordered by reverse Cuthill-McKee, :math:`B = P A P^\top`, which gives many sparse matrices
    from meshes, chains or contact graphs a small bandwidth :math:`b` (:math:`B_{ij} = 0` for
    :math:`|i - j| > b`). Then (``method="band"``), with :math:`B` scaled by a power of two to
    :math:`\|B\|_1 \in [1/2, 1)` (exact, so that no step over- or underflows):

    1. the ``k`` wanted eigenvalues of :math:`B` in band storage, by LAPACK's ``dsbevx`` without
       eigenvectors (band reduction to tridiagonal form without forming its orthogonal factor,
       :math:`O(n^2 b)`, then bisection);
    2. their eigenvectors by inverse iteration with band LU factorisations (``dgbtrf`` /
       ``dgbtrs``, :math:`O(n b^2)` each), three steps: eigenvalues within :math:`10^{-8} \|B\|_1`
       of each other (repeated eigenvalues, e.g. the zero eigenvalue of a Laplacian once per
       connected component) share one factorisation and a block of start vectors, orthonormalised
       at each step; each shift lies :math:`10^4 \epsilon \|B\|_1` below its cluster (on the side
       away from the unwanted eigenvalues), so that an exact eigenvalue never gives a singular
       factorisation; start vectors come from a fixed-seed generator, so the result depends on
       the input only;
    3. a Rayleigh-Ritz step on all the vectors (an orthonormalisation, :math:`U^\top B U`, a
       small ``eigh``), which makes the pairs accurate to rounding and resolves clusters;
    4. the rows put back in the original order: :math:`U \leftarrow P^\top U`.

    Nothing of size :math:`n \times n` is formed. A cluster that reaches past the ``k``-th
    eigenvalue is taken whole, so the returned vectors of a repeated eigenvalue split by ``k``
    lie in its eigenspace (a cluster found to hold more than about :math:`4k + 32` eigenvalues,
    such as the identity's, goes to the dense solver). Each pair is checked: should a residual
    :math:`\|B u - \theta u\|` stay above :math:`16 \sqrt{n}\, \epsilon \|B\|_1` after three rounds
    of three steps (or LAPACK report a failure, or the entries be so large that :math:`\|B\|_1`
    overflows), the matrix is solved densely instead. ``method="dense"`` builds the dense matrix
    and calls :func:`eigh_extremal`; ``method="auto"`` takes the band path where it measured
    faster (:func:`band_pays`: from :data:`BAND_MIN_SIZE` rows and a bandwidth up to
    :data:`BAND_MAX_FRACTION` of ``n``), else the dense one.

    Eigenvalues are ascending for ``which="smallest"`` and descending for ``"largest"``, as in
    :func:`eigh_extremal`; eigenvector signs (and, within a repeated eigenvalue, the basis) are
    arbitrary and may differ from those of the dense solver. CPU only, float64.

    Args:
        matrix (scipy.sparse matrix or array): square, symmetric, float64; any SciPy sparse format.
            Only the lower triangle is read and the upper one is not compared with it (a matrix
            that stores its lower triangle alone is valid input): a non-symmetric matrix is solved
            as the symmetric matrix of its lower triangle.
        k (int): eigenpairs, ``1 <= k <= n``.
        which (str): ``"smallest"`` or ``"largest"``. (default: ``"smallest"``)
        method (str): ``"auto"``, ``"band"`` or ``"dense"``. (default: ``"auto"``)
        check_finite (bool): check that the stored entries are finite (both triangles). Pass ``False``
            only for matrices known to be finite. (default: ``True``)

    Shapes:
        matrix ``(n, n)`` -> eigenvalues ``(k,)``, eigenvectors ``(n, k)`` (columns), float64 CPU tensors.

    Example:
        >>> import numpy, scipy.sparse, torch
        >>> from lowrank_gnn.linalg import sparse_eigh_extremal
        >>> n = 500  # the path graph's Laplacian: eigenvalues 2 - 2 cos(pi j / n)
        >>> path = scipy.sparse.diags([-numpy.ones(n - 1), numpy.r_[1.0, numpy.full(n - 2, 2.0), 1.0],
        ...                            -numpy.ones(n - 1)], [-1, 0, 1], format="csr")
        >>> values, vectors = sparse_eigh_extremal(path, k=3, method="band")
        >>> expected = torch.tensor([2 - 2 * numpy.cos(numpy.pi * j / n) for j in range(3)], dtype=torch.float64)
        >>> bool(torch.allclose(values, expected, atol=1e-13)), tuple(vectors.shape)
        (True, (500, 3))
    """
    import scipy.sparse  # on first use: SciPy's sparse package is not needed at import time

    if not scipy.sparse.issparse(matrix):
        raise TypeError(f"matrix must be a SciPy sparse matrix or array (got {type(matrix).__name__}); "
                        f"for dense tensors use eigh_extremal")
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square (got shape {matrix.shape})")
    if matrix.dtype != numpy.float64:
        raise TypeError(f"matrix must have dtype float64 (got {matrix.dtype}); convert it with "
                        f"matrix.astype(numpy.float64)")
    n = matrix.shape[0]
    check_k(k, n, what="the matrix size n")
    check_choice("which", which, ("smallest", "largest"))
    check_choice("method", method, BAND_METHODS)
    if check_finite and not numpy.isfinite(matrix.tocoo().data).all():
        raise ValueError("matrix contains NaN or Inf entries; clean the input first")
    lower = scipy.sparse.tril(matrix, format="csr")  # duplicates summed
    if method != "dense":
        perm = _reverse_cuthill_mckee(lower)
        rows, cols, entries, bandwidth = _permuted_lower(lower, perm)
        if method == "band" or band_pays(n, bandwidth):
            sign = 1.0 if which == "smallest" else -1.0  # the largest pairs of B are the smallest of -B
            pairs = _band_smallest(rows, cols, sign * entries, n, bandwidth, k)
            if pairs is not None:
                values, vectors = pairs
                unpermuted = numpy.empty_like(vectors)
                unpermuted[perm] = vectors
                return torch.from_numpy(sign * values), torch.from_numpy(unpermuted)
    return eigh_extremal(torch.from_numpy(_dense(lower)), k, which, check_finite=False)


def _reverse_cuthill_mckee(lower: Any) -> numpy.ndarray:
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    pattern = (lower + lower.T).tocsr()
    return numpy.asarray(reverse_cuthill_mckee(pattern, symmetric_mode=True), dtype=numpy.int64)


def _permuted_lower(lower: Any, perm: numpy.ndarray) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, int]:
    """The lower triangle of ``P A P^T`` as coordinates (row >= col) and its bandwidth."""
    coo = lower.tocoo()
    position = numpy.empty_like(perm)
    position[perm] = numpy.arange(perm.size)
    r, c = position[coo.row], position[coo.col]
    rows, cols = numpy.maximum(r, c), numpy.minimum(r, c)
    bandwidth = int((rows - cols).max()) if rows.size else 0
    return rows, cols, coo.data, bandwidth


def _dense(lower: Any) -> numpy.ndarray:
    dense = lower.toarray()
    return dense + numpy.tril(dense, -1).T


def _band_smallest(rows: numpy.ndarray, cols: numpy.ndarray, entries: numpy.ndarray, n: int, b: int,
                   k: int) -> Any:
    """``(values (k,), vectors (n, k))`` of the ``k`` smallest pairs of the band matrix, or ``None``
    where LAPACK fails or a residual does not pass (the caller then solves densely)."""
    import scipy.sparse
    from scipy.linalg import lapack

    magnitude = numpy.abs(entries)
    row_sums = numpy.bincount(rows, magnitude, n) + numpy.bincount(cols, numpy.where(rows != cols, magnitude, 0.0), n)
    norm = float(row_sums.max()) if n else 0.0  # ||B||_1
    if not numpy.isfinite(norm):  # entries near the overflow threshold: the dense solver scales them
        return None
    scale = 2.0 ** -numpy.frexp(norm)[1] if norm > 0 else 1.0  # exact: a power of 2
    entries = entries * scale  # now ||B||_1 is in [1/2, 1): no overflow in the shifted solves
    band = numpy.zeros((b + 1, n), order="F")  # LAPACK's lower band storage: band[i - j, j] = B[i, j]
    band[rows - cols, cols] = entries
    general = numpy.zeros((3 * b + 1, n), order="F")  # ?gbtrf's storage (kl = ku = b): general[2b + i - j, j]
    general[2 * b + rows - cols, cols] = entries
    general[2 * b - rows + cols, rows] = entries
    off = rows != cols
    full = scipy.sparse.csr_matrix((numpy.concatenate([entries, entries[off]]),
                                    (numpy.concatenate([rows, cols[off]]), numpy.concatenate([cols, rows[off]]))),
                                   shape=(n, n))
    norm = 1.0  # the scaled matrix's (a bound for the zero matrix too)
    values = _wanted_values(band, n, k, _CLUSTER * norm)
    if values is None:
        return None
    clusters = _clusters(values, _CLUSTER * norm)
    generator = numpy.random.default_rng(0)
    factors, blocks = [], []
    for first, end in clusters:
        factor = _shifted_lu(general, b, float(values[first]), _SHIFT * norm)
        if factor is None:
            return None
        factors.append(factor)
        blocks.append(_orthonormal(generator.standard_normal((n, end - first))))
    tolerance = _RESIDUAL * numpy.sqrt(n) * _EPS * norm
    for _ in range(_ROUNDS):
        for index, (lu, pivots) in enumerate(factors):
            for _ in range(_STEPS):
                blocks[index] = _orthonormal(lapack.dgbtrs(lu, b, b, blocks[index], pivots)[0])
        basis = numpy.linalg.qr(numpy.hstack(blocks))[0]
        image = full @ basis
        ritz_values, rotation = numpy.linalg.eigh(basis.T @ image)
        vectors = basis @ rotation[:, :k]
        residual = numpy.linalg.norm(image @ rotation[:, :k] - vectors * ritz_values[:k], axis=0)
        # small residuals, and the Ritz values those of the band reduction: no wanted pair replaced by another
        if residual.max() <= tolerance and numpy.abs(ritz_values[:k] - values[:k]).max() <= tolerance:
            return ritz_values[:k] / scale, vectors
    return None


def _wanted_values(band: numpy.ndarray, n: int, k: int, cluster: float) -> Any:
    """The smallest eigenvalues up to the end of the cluster holding the ``k``-th, ascending."""
    from scipy.linalg import lapack

    count = min(n, k + 1)
    while True:
        result: Any = lapack.dsbevx(band, 0.0, 0.0, 1, count, compute_v=0, range=2, lower=1, abstol=0.0,
                                    overwrite_ab=0)
        w, found, info = result[0], result[2], result[4]
        if info != 0 or found != count:
            return None
        w = w[:count]
        ends = numpy.nonzero(numpy.diff(w) > cluster)[0]  # a gap after index e
        closing = ends[ends >= k - 1]
        if closing.size:
            return w[:int(closing[0]) + 1]
        if count == n:
            return w
        count = min(n, 4 * count)
        if count < n and count > _MAX_VALUES_PER_K * k + _MAX_VALUES_EXTRA:  # a huge cluster: dense is cheaper
            return None


def _clusters(values: numpy.ndarray, cluster: float) -> List[Tuple[int, int]]:
    """``[(first, end)]``: runs of ascending eigenvalues whose neighbours lie within ``cluster``."""
    breaks = (numpy.nonzero(numpy.diff(values) > cluster)[0] + 1).tolist()
    edges = [0] + breaks + [values.size]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _shifted_lu(general: numpy.ndarray, b: int, value: float, offset: float) -> Any:
    """``?gbtrf`` of ``B - (value - offset) I``; on an exactly singular pivot, the offset 16 times larger (twice)."""
    from scipy.linalg import lapack

    for attempt in range(3):
        shifted = general.copy(order="F")
        shifted[2 * b] -= value - offset * 16.0 ** attempt
        lu, pivots, info = lapack.dgbtrf(shifted, b, b, overwrite_ab=1)
        if info == 0:
            return lu, pivots
    return None


def _orthonormal(block: numpy.ndarray) -> numpy.ndarray:
    """An orthonormal basis of the columns of ``block`` (one column: scaled to unit norm), Fortran-ordered."""
    if block.shape[1] == 1:
        return block / numpy.linalg.norm(block)
    return numpy.asfortranarray(numpy.linalg.qr(block)[0])
