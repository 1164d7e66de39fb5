"""Custom backward rules of the partitioned pieces, by gradcheck in float64 on one process.

With one rank every collective is the identity, so these check the local rules (the row-block
product, TSQR, the distributed eigen step); their cross-rank parts are checked against the
single-process autograd in test_partitioned.py.
"""
import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call

from lowrank_gnn.distributed import (Communicator, DistributedAmortizedBackend, PartitionedBasis,
                                    RowPartitionedOperator, RowPartition, tsqr_orthonormalize)
from lowrank_gnn.eigen import AmortizedBasis
from lowrank_gnn.linalg import qr_orthonormalize


def test_row_block_matmul_gradcheck():
    generator = torch.Generator().manual_seed(0)
    row = torch.tensor([0, 0, 1, 2, 2, 3, 4, 4])
    col = torch.tensor([1, 4, 0, 2, 3, 2, 0, 4])
    value = torch.rand(8, generator=generator, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    partition, comm = RowPartition.even(5, 1), Communicator()
    gradcheck(lambda v, x: RowPartitionedOperator(row, col, v, partition, comm).matmul(x), (value, x))


def test_tsqr_matches_qr_and_passes_gradcheck():
    weight = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    vectors, diagonal = tsqr_orthonormalize(weight, Communicator())
    expected, expected_diagonal = qr_orthonormalize(weight)
    assert torch.allclose(vectors, expected, atol=1e-12) and torch.allclose(diagonal, expected_diagonal, atol=1e-12)
    gradcheck(lambda w: tsqr_orthonormalize(w, Communicator())[0], (weight,))


def test_distributed_eigen_step_gradcheck_gauge_invariant():
    """U diag(l) U^T as a function of the basis W and of the operator values; the eigen loss of W."""
    row = torch.tensor([0, 1, 1, 2, 2, 3, 3, 4, 0, 4])
    col = torch.tensor([1, 0, 2, 1, 3, 2, 4, 3, 4, 0])
    pair = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])  # both directions of 5 undirected edges share a weight
    value = torch.tensor([0.3, 0.5, 0.9, 0.4, 0.7], dtype=torch.float64, requires_grad=True)
    partition, comm = RowPartition.even(5, 1), Communicator()
    backend = DistributedAmortizedBackend(2, partition, comm)
    backend.initialize(RowPartitionedOperator(row, col, value.detach()[pair], partition, comm))
    weight = backend.basis.weight.detach().clone().requires_grad_()

    def pairs_of(w, v):
        op = RowPartitionedOperator(row, col, v[pair], partition, comm)
        return functional_call(backend, {"basis.weight": w}, (op,))

    def projector(w, v):
        pairs = pairs_of(w, v)
        return pairs.eigenvectors @ torch.diag(pairs.eigenvalues) @ pairs.eigenvectors.T

    gradcheck(projector, (weight, value))
    # the eigen loss holds the operator constant by design (it trains W only): check it in W
    gradcheck(lambda w: pairs_of(w, value.detach()).aux_loss, (weight,))


def test_partitioned_basis_repairs_and_rejects_like_the_single_process_basis():
    """PartitionedBasis shares AmortizedBasis's checks and repair (TSQR and row-sliced draws as its hooks):
    on one rank a dependent column is redrawn exactly as the single-process basis redraws it, and a
    non-finite W raises the same error, naming the ranks."""
    single, partitioned = AmortizedBasis(seed=4), PartitionedBasis(RowPartition.even(12, 1), Communicator(), seed=4)
    for basis in (single, partitioned):
        basis.reset((12, 3), torch.float64, torch.device("cpu"))
    assert torch.equal(partitioned.weight, single.weight)  # the same seeded draw
    for basis in (single, partitioned):
        with torch.no_grad():
            basis.weight[:, 2] = 2 * basis.weight[:, 0]  # dependent column: QR breaks down
        with pytest.warns(RuntimeWarning, match="lost rank"):
            basis.orthonormal()
    assert torch.allclose(partitioned.weight, single.weight, atol=1e-12)
    vectors = partitioned.orthonormal().detach()
    assert torch.allclose(vectors.T @ vectors, torch.eye(3, dtype=torch.float64), atol=1e-12)
    with torch.no_grad():
        partitioned.weight[5, 1] = float("nan")
    with pytest.raises(ValueError, match="W contains NaN or Inf on some rank.*initialize"):
        partitioned.orthonormal()
