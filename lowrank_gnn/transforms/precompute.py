"""precompute_eigenpairs: one batched, cached pass of an eigenpair transform over a whole dataset."""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data, HeteroData, InMemoryDataset

from .._validation import check_index_dtype
from .add_eigenpairs import AddEigenpairs
from .cache import cache_file, cache_key, load_cached, save_cached
from .laplacian_pe import LaplacianEigenvectorPE
from .packed import (ADJ_T_FIX, PackedGraphs, check_edge_weight_dtype, check_edge_weight_shape, check_packed,
                     pack_graphs, plain_index)

EigenpairTransform = Union[AddEigenpairs, LaplacianEigenvectorPE]


def precompute_eigenpairs(dataset: Union[InMemoryDataset, Sequence[Data]], transform: EigenpairTransform,
                          cache_dir: Union[str, os.PathLike, None, bool] = None, progress: Optional[bool] = None,
                          device: Union[str, torch.device, None] = None) -> Union[InMemoryDataset, List[Data]]:
    r"""Applies an eigenpair transform to every graph of a dataset at once: batched, cached, deterministic.

    Equivalent to applying ``transform`` (:class:`AddEigenpairs` or
    :class:`LaplacianEigenvectorPE`) to each graph, bit for bit with LAPACK's solvers (on the
    CPU, every backend except ``"batched_dc"`` with ``method="dc"``; see **Bits** below), but
    graphs with the same number of nodes are solved together: their dense operators are
    scattered into one ``(B, n, n)`` float64 tensor and decomposed by one
    :func:`~lowrank_gnn.eigen.batched_eigh` call (LAPACK on the CPU; on a GPU as the backend
    decides), signs are fixed for the whole batch at once, and the results are split back.
    Graphs the batched path does not cover (the sparse path for graphs above
    ``dense_max_nodes``, ``deflate_components=True``, a backend instance) are solved one by one,
    with the same code as the transform.

    **Bits.** A solver whose arithmetic depends on the batch gives each graph the same eigenvalues
    and eigenspaces to rounding as the per-graph transform, not the same bits, and within an
    exactly repeated eigenvalue possibly another basis of its eigenspace: ``batched_dc``'s own
    divide and conquer (``method="dc"``; its products take other BLAS kernels for other batch
    sizes) and, on a GPU, PyTorch's ``eigh``, which solves a batch of matrices of up to 32 rows
    by cuSOLVER's batched Jacobi method and a single matrix by divide and conquer (not measured
    on a GPU).

    **Cache.** The results are stored in one file per dataset and option set, named by a
    content hash of everything they depend on: each graph's node count, edges and edge weights,
    the transform's options, the default dtype, the device type, the versions of this
    library, of PyTorch, NumPy and SciPy, PyTorch's thread count and CPU code path, and the
    environment variables that pick MKL's and OpenBLAS's code path and threads. A later call
    with equal inputs loads the file instead of solving; any change gives another key, hence a
    recomputation. Files are written to a temporary name and renamed into place
    (``os.replace``), so concurrent writers are safe, and read with
    ``torch.load(weights_only=True)`` (no pickled code is ever run). Each tensor is stored with
    the SHA-256 digest of its bytes, checked on load (about 1 ms per MB). A corrupt, truncated,
    foreign or inconsistent file (an entry of another shape, dtype or layout than the transform
    computes, a view, or with NaN/Inf, or bytes that do not match their digest) is ignored with
    a warning and recomputed; a folder that cannot be searched or written, or a write that fails
    part-way (a full disk), gives a warning and uncached results. Transforms with a backend
    *instance* (possibly with learned state) are never cached.

    Args:
        dataset (InMemoryDataset or sequence of Data): the graphs. An
            :class:`~torch_geometric.data.InMemoryDataset` is read from its collated storage
            (without building a ``Data`` object per graph) and a shallow copy of it is returned
            whose storage holds the new attributes. The eigenpairs are those of the **stored**
            graphs, as a ``pre_transform`` would compute them: ``dataset.transform`` is not
            applied to the graphs solved, and it still runs on access, on the stored graph with
            its new attributes. A ``transform`` that changes ``edge_index``, ``edge_weight`` or
            the node count (``AddSelfLoops``, ``ToUndirected``) therefore shows graphs whose
            eigenpairs are of the stored structure: make it a ``pre_transform``, or pass
            ``list(dataset)`` to solve the transformed graphs.
            Views (``dataset[1::2]``), datasets of one graph (Planetoid's Cora, which PyG stores
            without slices) and one-graph views are accepted; an empty view gives an empty copy.
            Any other sequence (a list, a ``Dataset``) is solved as iterating it yields its
            graphs (a ``Dataset``'s ``transform`` applied) and gives a list of shallow copies of
            those graphs with the attributes set. Graphs may mix having and not having
            ``edge_weight``; empty graphs get empty attributes.
        transform (AddEigenpairs or LaplacianEigenvectorPE): what to compute.
        cache_dir (str or PathLike or bool, optional): the cache folder. ``None``: the
            dataset's ``processed_dir`` when it has one (beside PyG's processed files), else no
            cache; ``True``: the ``processed_dir``, an error without one; ``False``: no cache.
            (default: ``None``)
        progress (bool, optional): show a tqdm progress bar; ``None`` shows it when stderr is a
            terminal. (default: ``None``)
        device (str or torch.device, optional): where to solve, e.g. ``"cuda"``; the results are
            returned on the graphs' own device. A device that is not available here is a
            ``ValueError`` before any work. (default: the graphs' device)

    Example:
        >>> from torch_geometric.data import Data
        >>> from lowrank_gnn.testing import cycle_graph, path_graph
        >>> from lowrank_gnn.transforms import AddEigenpairs, precompute_eigenpairs
        >>> graphs = [Data(edge_index=g.edge_index, num_nodes=g.num_nodes) for g in (path_graph(4), cycle_graph(6))]
        >>> out = precompute_eigenpairs(graphs, AddEigenpairs(k=3, operator="laplacian"))
        >>> [tuple(data.eigvecs.shape) for data in out]
        [(4, 3), (6, 3)]
    """
    if not isinstance(transform, (AddEigenpairs, LaplacianEigenvectorPE)):
        raise TypeError(f"transform must be an AddEigenpairs or a LaplacianEigenvectorPE "
                        f"(got {type(transform).__name__})")
    if isinstance(dataset, (Data, HeteroData)):  # one graph or a Batch: iterating gives its attributes
        fix = "batch.to_data_list()" if isinstance(dataset, Batch) else \
            "[data], or apply the transform: transform(data)"
        raise TypeError(f"dataset must be a sequence of Data objects or an InMemoryDataset (got a "
                        f"{type(dataset).__name__}); pass {fix}")
    device = _check_device(device)
    if isinstance(dataset, InMemoryDataset):
        if not len(dataset):  # an empty view (dataset[0:0]): nothing to solve, and PyG cannot collate it
            return copy.copy(dataset)
        if dataset._indices is not None:  # a view (dataset[...]): materialise the selected graphs
            dataset = dataset.copy()
        packed, graphs = pack_in_memory(dataset), None
    else:
        graphs = list(dataset)
        _check_graphs(graphs)
        packed = pack_graphs(graphs)
    home = packed.edge_index.device
    if device is not None:
        packed = PackedGraphs(*(tensor.to(device) for tensor in packed))
    outputs = _solve_or_load(packed, transform, _cache_folder(dataset, cache_dir), progress)
    outputs = {name: value.to(home) for name, value in outputs.items()}
    if graphs is None:
        return _attach_to_storage(dataset, packed, outputs, transform.node_level)
    return _attach_to_graphs(graphs, packed, outputs, transform.node_level)


def _check_graphs(graphs: List[Any]) -> None:
    """Every item is one graph: a ``Batch`` (from a ``DataLoader``) would be solved as the disjoint union
    of its graphs, one spectrum for all of them."""
    for g, data in enumerate(graphs):
        if isinstance(data, Batch):
            raise TypeError(f"graph {g} is a Batch of {data.num_graphs} graphs (a DataLoader yields these), which "
                            f"would be solved as one graph, the disjoint union of its graphs; pass the dataset "
                            f"itself, or the graphs: [g for batch in loader for g in batch.to_data_list()]")
        if not isinstance(data, Data):
            raise TypeError(f"graph {g} is a {type(data).__name__}, not a torch_geometric.data.Data; pass an "
                            f"InMemoryDataset or a sequence of Data objects")


def _check_device(device: Union[str, torch.device, None]) -> Optional[torch.device]:
    """``device`` parsed and known to be usable here (one empty allocation), before any work."""
    if device is None:
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be a torch.device or a device string such as 'cpu' or 'cuda:0' (got "
                         f"device={device!r}: {error})") from None
    if resolved.type == "meta":  # allocations succeed there, but no tensor on it holds values
        raise ValueError("device='meta' holds no values, so no eigenpairs can be computed on it; pass device=None to "
                         "solve on the graphs' own device, or a device such as 'cpu' or 'cuda'")
    try:
        torch.empty(0, device=resolved)
    except (RuntimeError, AssertionError) as error:  # AssertionError: a build without that backend
        raise ValueError(f"device={device!r} is not available here ({error}); pass device=None to solve on the "
                         "graphs' own device, or an available device such as 'cpu'") from None
    return resolved


def _cache_folder(dataset: Any, cache_dir: Union[str, os.PathLike, None, bool]) -> Optional[Path]:
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        processed = getattr(dataset, "processed_dir", None) if getattr(dataset, "root", None) else None
        if processed is None and cache_dir is True:
            raise ValueError("cache_dir=True needs a dataset with a processed_dir; pass a folder instead")
        return None if processed is None else Path(processed)
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a folder path, None or False (got {type(cache_dir).__name__})")
    return Path(cache_dir)


def _solve_or_load(packed: PackedGraphs, transform: EigenpairTransform, folder: Optional[Path],
                   progress: Optional[bool]) -> Dict[str, Tensor]:
    config = transform.cache_config()
    if folder is None or config is None:
        if folder is not None:
            warnings.warn(f"{transform!r} uses a backend instance, whose state is not part of the cache key; "
                          f"computing without the cache (pass the backend by name to cache)", stacklevel=3)
        return transform.compute(packed, progress)
    key = cache_key(packed, config, packed.edge_index.device)
    path = cache_file(folder, config, key)
    specs = transform.output_specs(int(packed.num_nodes.sum()), packed.num_graphs)
    cached = load_cached(path, key, specs, packed.edge_index.device)
    if cached is not None:
        return cached
    outputs = transform.compute(packed, progress)
    save_cached(path, key, outputs)
    return outputs


def pack_in_memory(dataset: InMemoryDataset) -> PackedGraphs:
    """The graphs of an ``InMemoryDataset`` read from its collated storage, without per-graph ``Data`` objects.

    A dataset of one graph (Planetoid's Cora, a one-graph view ``dataset[i:i + 1]``) has no slices:
    PyG stores that graph itself, which is packed like a list of one graph.
    """
    store, slices = dataset._data, dataset.slices
    if slices is None:
        return pack_graphs([store])
    if "edge_index" not in store or "edge_index" not in slices:
        if "adj_t" in store:
            raise ValueError(f"this dataset's graphs hold their edges as a sparse adj_t (ToSparseTensor) and have no "
                             f"edge_index, which every graph needs; {ADJ_T_FIX}, in a pre_transform or on the graphs "
                             f"of list(dataset)")
        raise ValueError("every graph needs data.edge_index of shape (2, num_edges), and this dataset's storage has "
                         "none")
    edge_index = plain_index(store.edge_index)
    check_index_dtype("data.edge_index", edge_index)
    edge_ptr = slices["edge_index"].to(edge_index.device)
    num_graphs = edge_ptr.numel() - 1
    counts = getattr(store, "_num_nodes", None)
    if counts is not None:
        num_nodes = torch.as_tensor(list(counts), dtype=torch.long)
    else:
        key = next((k for k in ("x", "pos") if k in slices and store.__cat_dim__(k, store[k]) == 0), None)
        if key is not None:
            num_nodes = slices[key].diff()
        else:  # node counts not recorded in the storage: ask each graph
            num_nodes = torch.tensor([dataset.get(i).num_nodes for i in range(num_graphs)], dtype=torch.long)
    weight = store.edge_weight if "edge_weight" in store else None
    if weight is None:
        weight = torch.ones(edge_index.shape[1], dtype=torch.float64, device=edge_index.device)
    else:
        _check_stored_edge_weight(weight, edge_ptr, slices.get("edge_weight"))
    packed = PackedGraphs(num_nodes.to(edge_index.device), edge_ptr, edge_index.long(),
                          weight.detach().to(torch.float64))
    check_packed(packed)
    return packed


def _check_stored_edge_weight(weight: Tensor, edge_ptr: Tensor, weight_ptr: Optional[Tensor]) -> None:
    """The collated ``edge_weight`` pairs with the edges graph by graph (the list path's shape check,
    naming the first graph whose weights are not ``(num_edges,)``), and is float32 or float64."""
    counts = edge_ptr.diff()
    weight_counts = counts if weight_ptr is None else weight_ptr.to(counts.device).diff()
    if weight.dim() != 1 or not torch.equal(weight_counts, counts):
        g = 0 if weight.dim() != 1 else int((weight_counts != counts).nonzero()[0])
        check_edge_weight_shape((int(weight_counts[g]), *weight.shape[1:]), int(counts[g]), g)
    check_edge_weight_dtype(weight)


def _attach_to_storage(dataset: InMemoryDataset, packed: PackedGraphs, outputs: Dict[str, Tensor],
                       node_level: Sequence[str]) -> InMemoryDataset:
    out = copy.copy(dataset)
    store = copy.copy(dataset._data)
    if dataset.slices is None:  # one graph, stored as itself: its attributes as the transform sets them
        for name, value in outputs.items():
            store[name] = value
        out._data, out._data_list = store, None
        return out
    slices = dict(dataset.slices)
    node_ptr = packed.node_ptr.cpu()
    graph_ptr = torch.arange(packed.num_graphs + 1)
    for name, value in outputs.items():
        store[name] = value
        slices[name] = node_ptr if name in node_level else graph_ptr
    out._data, out.slices, out._data_list = store, slices, None
    return out


def _attach_to_graphs(graphs: List[Data], packed: PackedGraphs, outputs: Dict[str, Tensor],
                      node_level: Sequence[str]) -> List[Data]:
    sizes = packed.num_nodes.tolist()
    parts = {name: value.split(sizes) if name in node_level else value.split(1) for name, value in outputs.items()}
    result = []
    for i, data in enumerate(graphs):
        data = copy.copy(data)
        for name, pieces in parts.items():
            data[name] = pieces[i]
        result.append(data)
    return result
