import pytest
import torch

from lowrank_gnn.nn import LowRankGCNConv, total_aux_loss
from lowrank_gnn.testing import cycle_graph


def test_total_aux_loss_sums_the_layers_losses_and_is_zero_without_any():
    graph = cycle_graph(12)
    model = torch.nn.ModuleList([LowRankGCNConv(4, 4, k=3, backend="amortized"), LowRankGCNConv(4, 2, k=3)])
    h = model[0](torch.randn(12, 4), graph.edge_index)
    model[1](h, graph.edge_index)
    assert model[1].aux_loss is None
    assert torch.equal(total_aux_loss(model), model[0].aux_loss)
    assert total_aux_loss(torch.nn.Linear(2, 2)) == 0.0


@pytest.mark.parametrize("model", [5, [LowRankGCNConv(4, 2, k=3)], None])
def test_total_aux_loss_refuses_what_is_not_a_module(model):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        total_aux_loss(model)
