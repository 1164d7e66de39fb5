"""Sign-invariant checks of eigenpairs against a float64 dense reference."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from ..eigen.base import EigenPairs, canonical_signs, order_indices

#: Default relative tolerance per dtype for residuals, orthonormality and eigenvalues.
TOLERANCES: Dict[torch.dtype, float] = {torch.float32: 1e-4, torch.float64: 1e-9}


def _residual(matrix: Tensor, values: Tensor, vectors: Tensor) -> Tensor:
    """``||A U - U diag(l)||_F / ||A||_F`` per batch entry."""
    scale = torch.linalg.matrix_norm(matrix).clamp_min(torch.finfo(matrix.dtype).tiny)
    return torch.linalg.matrix_norm(matrix @ vectors - vectors * values.unsqueeze(-2)) / scale


def assert_eigenpairs_close(pairs: EigenPairs, matrix: Tensor, k: int, which: str,
                            rtol: Optional[float] = None) -> None:
    """Check ``pairs`` against ``torch.linalg.eigh`` of ``matrix`` in float64.

    Checks, each to ``rtol`` relative to the matrix scale: shapes; eigenvalues (in the
    ``which`` order); the residual ``||A U - U diag(l)|| / ||A||``; orthonormality
    ``||U^T U - I||``; the canonical sign convention; and, for every cluster of equal
    reference eigenvalues that lies wholly among the first ``k``, the projector
    ``U_c U_c^T`` (sign- and basis-invariant). A cluster cut by ``k`` is only checked
    through eigenvalues and residual: its basis is not identifiable.

    Shapes:
        matrix ``(*batch, n, n)``.
    """
    values, vectors = pairs.eigenvalues, pairs.eigenvectors
    rtol = TOLERANCES[values.dtype] if rtol is None else rtol
    reference = matrix.detach().to(torch.float64)
    batch, n = reference.shape[:-2], reference.shape[-1]
    assert values.shape == (*batch, k), f"eigenvalues shape {tuple(values.shape)} != {(*batch, k)}"
    assert vectors.shape == (*batch, n, k), f"eigenvectors shape {tuple(vectors.shape)} != {(*batch, n, k)}"
    values, vectors = values.detach().to(torch.float64), vectors.detach().to(torch.float64)
    assert bool(torch.isfinite(values).all() and torch.isfinite(vectors).all()), "non-finite eigenpairs"

    ref_values, ref_vectors = torch.linalg.eigh(reference)
    index = order_indices(ref_values, which)
    ref_values = ref_values.gather(-1, index)
    ref_vectors = ref_vectors.gather(-1, index.unsqueeze(-2).expand_as(ref_vectors))
    scale = reference.abs().amax(dim=(-2, -1)).clamp_min(1e-300)

    value_error = ((values - ref_values[..., :k]).abs().amax(-1) / scale).max()
    assert value_error <= rtol, f"eigenvalue error {value_error:.3g} > {rtol:.1g}"
    residual = _residual(reference, values, vectors).max()
    assert residual <= rtol, f"relative residual {residual:.3g} > {rtol:.1g}"
    identity = torch.eye(k, dtype=torch.float64)
    orthogonality = (vectors.mT @ vectors - identity).abs().max()
    assert orthogonality <= rtol, f"||U^T U - I||_max = {orthogonality:.3g} > {rtol:.1g}"
    assert torch.equal(canonical_signs(vectors), vectors), "eigenvectors do not follow the sign convention"

    for b in torch.cartesian_prod(*[torch.arange(s) for s in batch]).view(-1, len(batch)) if batch else [()]:
        b = tuple(int(i) for i in b)
        ref_b, vec_b, refvec_b, sc = ref_values[b], vectors[b], ref_vectors[b], float(scale[b])
        gap_tol = max(1e3 * rtol, 1e-6) * sc
        start = 0
        while start < k:
            stop = start + 1
            while stop < n and abs(float(ref_b[stop] - ref_b[start])) <= gap_tol:
                stop += 1
            if stop <= k:
                mine = vec_b[:, start:stop] @ vec_b[:, start:stop].mT
                theirs = refvec_b[:, start:stop] @ refvec_b[:, start:stop].mT
                error = (mine - theirs).abs().max()
                assert error <= max(1e2 * rtol, 1e-7), (
                    f"eigenspace of eigenvalue {float(ref_b[start]):.6g} (pairs {start}..{stop - 1}) differs "
                    f"from the reference by {error:.3g}")
            start = stop


def assert_matches_reference_vectors(pairs: EigenPairs, matrix: Tensor, which: str,
                                     rtol: Optional[float] = None) -> None:
    """For simple eigenvalues: the eigenvectors equal the reference's *with* canonical signs."""
    rtol = TOLERANCES[pairs.eigenvalues.dtype] if rtol is None else rtol
    ref_values, ref_vectors = torch.linalg.eigh(matrix.detach().to(torch.float64))
    index = order_indices(ref_values, which)[..., : pairs.eigenvalues.shape[-1]]
    ref_vectors = canonical_signs(ref_vectors.gather(-1, index.unsqueeze(-2).expand(*ref_vectors.shape[:-1], -1)))
    error = (pairs.eigenvectors.detach().to(torch.float64) - ref_vectors).abs().max()
    assert error <= 1e2 * rtol, f"eigenvectors differ from the reference by {error:.3g}"
