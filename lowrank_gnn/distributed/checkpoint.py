"""Checkpoints that resume on any number of ranks.

A model trained with ``DistributedDataParallel`` holds the same parameters on every rank,
so its checkpoint is rank 0's ``state_dict``. A row-partitioned amortized basis
(:class:`~lowrank_gnn.distributed.PartitionedBasis`) is different on every rank: here it is
gathered into the whole ``n x k`` matrix (with the optimizer's per-row state, e.g. Adam's
moments), so the file has the layout of a single-process model and is re-split by rows for
whatever partition loads it, including one process with a plain
:class:`~lowrank_gnn.eigen.AmortizedBackend`.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .backend import PartitionedBasis
from .comm import Communicator

#: Format tag stored in every checkpoint (bumped if the layout changes).
CHECKPOINT_FORMAT = "lowrank_gnn.distributed.checkpoint/1"


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def partitioned_bases(model: nn.Module) -> List[Tuple[str, PartitionedBasis]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, PartitionedBasis)]


def _optimizer_index(optimizer: torch.optim.Optimizer) -> Dict[int, int]:
    """``id(param) -> index`` in the order of ``optimizer.state_dict()``."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return {id(p): i for i, p in enumerate(params)}


def save_checkpoint(path: str, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    comm: Optional[Communicator] = None, **extra: Any) -> None:
    r"""Save ``model`` (and ``optimizer``) from rank 0, in a layout any number of ranks can load.

    Collective: every rank must call it (partitioned bases are all-gathered: ``n x k`` numbers,
    plus the same for each per-row optimizer state). Only rank 0 writes ``path``; all ranks
    return after it is written.

    Args:
        path (str): file to write on rank 0.
        model (nn.Module): the model, optionally wrapped in ``DistributedDataParallel``.
        optimizer (Optimizer, optional): saved with its per-row state gathered.
        comm (Communicator, optional): the group of the partitioned bases.
            (default: ``Communicator()``)
        **extra: anything else to store (epoch, RNG state, ...); returned by :func:`load_checkpoint`.
    """
    comm = comm if comm is not None else Communicator()
    model = unwrap(model)
    state = model.state_dict()
    optimizer_state = optimizer.state_dict() if optimizer is not None else None
    index = _optimizer_index(optimizer) if optimizer is not None else {}
    partitioned = {}
    for name, basis in partitioned_bases(model):
        prefix = f"{name}." if name else ""
        if not basis.initialized:
            raise ValueError(f"the partitioned basis {name!r} is not initialised yet; run one forward pass first")
        sizes = basis.partition.sizes
        state[prefix + "weight"] = basis.comm.all_gather_rows(basis.weight.detach(), sizes)
        state.pop(prefix + "_extra_state", None)
        partitioned[prefix + "weight"] = basis.partition.num_nodes
        slot = index.get(id(basis.weight))
        if slot is not None and optimizer_state is not None and slot in optimizer_state["state"]:
            entry = optimizer_state["state"][slot]
            for key, value in list(entry.items()):
                if isinstance(value, Tensor) and value.shape == basis.weight.shape:
                    entry[key] = basis.comm.all_gather_rows(value, sizes)
    if comm.rank == 0:
        checkpoint = {"format": CHECKPOINT_FORMAT, "world_size": comm.world_size, "model": state,
                      "optimizer": optimizer_state, "partitioned": partitioned, "extra": extra}
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        torch.save(checkpoint, path + ".tmp")
        os.replace(path + ".tmp", path)  # never leave a half-written checkpoint behind
    comm.barrier()


def load_checkpoint(path: str, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a :func:`save_checkpoint` file on any number of ranks (not collective).

    Each rank reads ``path`` (a shared or copied file) and keeps its own rows of every
    partitioned basis and of its optimizer state. A checkpoint whose basis has another number
    of nodes than the current partition raises; a model without partitioned bases (one
    process, ``AmortizedBackend``) takes the whole basis.

    Returns:
        the ``**extra`` given to :func:`save_checkpoint`, plus ``"world_size"`` at saving time.
    """
    checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by lowrank_gnn.distributed.save_checkpoint "
                         f"(format {checkpoint.get('format') if isinstance(checkpoint, dict) else None!r}, "
                         f"expected {CHECKPOINT_FORMAT!r}); per-rank state_dicts load with model.load_state_dict "
                         f"under the partition they were saved with")
    model = unwrap(model)
    state = dict(checkpoint["model"])
    optimizer_state = checkpoint["optimizer"]
    index = _optimizer_index(optimizer) if optimizer is not None else {}
    for name, basis in partitioned_bases(model):
        prefix = f"{name}." if name else ""
        key = prefix + "weight"
        saved_nodes = checkpoint["partitioned"].get(key)
        if saved_nodes is None:
            continue  # a missing key is reported by load_state_dict
        if saved_nodes != basis.partition.num_nodes:
            raise ValueError(f"the checkpoint's basis {key!r} has {saved_nodes} rows but this run's partition has "
                             f"num_nodes={basis.partition.num_nodes}: it was saved for another graph")
        state[key] = state[key][basis.start:basis.stop].clone()
        state[prefix + "_extra_state"] = basis.layout()
        slot = index.get(id(basis.weight))
        if optimizer_state is not None and slot is not None and slot in optimizer_state["state"]:
            entry = optimizer_state["state"][slot]
            for name_, value in list(entry.items()):
                if isinstance(value, Tensor) and value.dim() == 2 and value.shape[0] == saved_nodes:
                    entry[name_] = value[basis.start:basis.stop].clone()
    model.load_state_dict(state)
    if optimizer is not None:
        if optimizer_state is None:
            raise ValueError(f"{path} holds no optimizer state (save_checkpoint was called without optimizer)")
        optimizer.load_state_dict(optimizer_state)
    return {**checkpoint["extra"], "world_size": checkpoint["world_size"]}


__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT"]
