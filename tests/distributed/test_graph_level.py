"""Datasets of many graphs under DistributedDataParallel on 2 gloo processes (float64)."""
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Batch, Data

from lowrank_gnn.distributed import check_replicated, load_checkpoint, save_checkpoint
from lowrank_gnn.nn import LatentPCAPool, SpectralFilterConv, total_aux_loss
from lowrank_gnn.transforms import AddEigenpairs

GRAPHS, PER_RANK, STEPS, TOL = 8, 4, 2, 1e-10


def dataset():
    generator = torch.Generator().manual_seed(0)
    graphs = []
    for i in range(GRAPHS):
        n = 5 + i % 4
        edges = torch.randint(0, n, (2, 2 * n), generator=generator)
        edges = torch.cat([edges, edges.flip(0)], dim=1)
        x = torch.randn(n, 3, generator=generator, dtype=torch.float64)
        graphs.append(AddEigenpairs(k=3)(Data(x=x, edge_index=edges, y=torch.tensor([i % 2]), num_nodes=n)))
    return graphs


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = SpectralFilterConv(3, 4)
        self.pool = LatentPCAPool(4, k=2)
        self.head = nn.Linear(self.pool.out_channels, 2)

    def forward(self, data):
        h = self.conv(data.x, data.eigvecs.double(), data.eigvals.double(), data.batch, data.eig_mask).relu()
        return self.head(self.pool(h, data.batch, data.num_graphs))


def step(model, optimizer, batch):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(batch), batch.y) + total_aux_loss(model)
    loss.backward()
    optimizer.step()


def parameters(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def ddp_worker(rank, world_size, path):
    graphs = dataset()
    local = Batch.from_data_list(graphs[rank * PER_RANK:(rank + 1) * PER_RANK])  # each rank: half the batch
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(Net().double())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(STEPS):
        step(model, optimizer, local)
    check_replicated(model)
    saved = parameters(model.module)
    save_checkpoint(path, model, optimizer, epoch=STEPS)
    step(model, optimizer, local)
    return {"saved": saved, "resumed_step": parameters(model.module)}


def test_ddp_training_and_resume_on_one_process(tmp_path):
    from lowrank_gnn.testing.distributed import run_distributed

    path = str(tmp_path / "graph_level.pt")
    results = [r.value for r in run_distributed(ddp_worker, 2, args=(path,), timeout=60)]
    full = Batch.from_data_list(dataset())
    # one process, the whole global batch: the same steps as DDP over 2 ranks with half each
    torch.manual_seed(0)
    model = Net().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(STEPS):
        step(model, optimizer, full)
    for name, value in parameters(model).items():
        for r in results:
            assert torch.allclose(r["saved"][name], value, atol=TOL, rtol=0), name
    # resume from rank 0's checkpoint on one process (fresh weights, state from the file)
    torch.manual_seed(1)
    resumed = Net().double()
    optimizer = torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9)
    extra = load_checkpoint(path, resumed, optimizer)
    assert extra == {"epoch": STEPS, "world_size": 2}
    step(resumed, optimizer, full)
    for name, value in parameters(resumed).items():
        assert torch.allclose(results[0]["resumed_step"][name], value, atol=TOL, rtol=0), name
