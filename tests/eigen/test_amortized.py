import warnings

import pytest
import torch

from lowrank_gnn.eigen import AmortizedBackend, EigenPairs, ExactBackend, resolve_eigen_backend, subspace_angle
from lowrank_gnn.eigen.amortized import ORTHOGONALIZATIONS
from lowrank_gnn.operators import normalized_adjacency
from lowrank_gnn.testing import assert_eigenpairs_close, complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.testing.conformance import EigenBackendConformance, random_symmetric


class TestAmortizedConverged(EigenBackendConformance):
    """The suite on the converged basis: warm-started, then fit() to the tolerance.

    Convergence from a random start is tested separately below (it takes hundreds of
    L-BFGS evaluations per case, too slow to repeat over the whole suite).
    """

    backend_name = "amortized"
    backend_kwargs = {"init": "exact"}
    tolerances = {torch.float32: 1e-4, torch.float64: 1e-8}

    def solve(self, backend, op):
        tol = self.tolerances.get(getattr(op, "dtype", None))  # None for bad input: fit() rejects it
        backend.fit(op, steps=200, tol=None if tol is None else tol / 10)
        return backend(op)


@pytest.mark.parametrize("loss", AmortizedBackend.LOSSES)
@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude"])
def test_converges_from_random_start(which, loss):
    torch.manual_seed(0)
    matrix = random_symmetric(16, dtype=torch.float64, seed=5, gap=1.0)
    backend = AmortizedBackend(k=3, which=which, loss=loss, init="random", seed=1)
    diagnostics = backend.fit(matrix, steps=3000, tol=1e-7)
    assert float(diagnostics.residual) <= 1e-7
    assert_eigenpairs_close(backend(matrix), matrix, 3, which, rtol=1e-6)
