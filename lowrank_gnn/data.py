"""Data root resolution and dataset loaders.

The data root is, in order: the ``root=`` argument of a loader; the environment variable
``LOWRANK_GNN_DATA``; the ``datasets/`` folder of the source checkout this package runs
from; ``~/.cache/lowrank_gnn/datasets`` for a non-editable install. Loaders are PyG's own
(``Planetoid``, ``TUDataset``): on a connected machine they download as usual; offline,
seed the root with raw files first (``python -m lowrank_gnn.data seed SOURCE``), which
copies ``SOURCE/<name>/raw/`` (and OGB's ``SOURCE/<name>/split/``) into the folder the loader
reads, so the source is never written to. A load that fails offline leaves no empty folders.
"""
from __future__ import annotations

import argparse
import numbers
import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Union

ENV_VAR = "LOWRANK_GNN_DATA"
PLANETOID_NAMES = ("Cora", "CiteSeer", "PubMed")
SEEDED_FOLDERS = ("raw", "split")  # copied by seed_data_root; processed/ is rebuilt by the loader


def data_root(root: Union[str, Path, None] = None) -> Path:
    """The folder datasets live in (see the module docstring for the order of precedence)."""
    if root is not None:
        return Path(root)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout / "datasets"
    return Path.home() / ".cache" / "lowrank_gnn" / "datasets"


def dataset_folder(name: str) -> str:
    """The folder of dataset ``name`` under the data root: OGB names use ``_`` for ``-``.

    OGB's loaders read ``ogbn-arxiv`` from ``<root>/ogbn_arxiv``; PyG's read ``Cora`` from
    ``<root>/Cora``.

    Example:
        >>> from lowrank_gnn.data import dataset_folder
        >>> dataset_folder("ogbn-arxiv"), dataset_folder("Cora")
        ('ogbn_arxiv', 'Cora')
    """
    return name.replace("-", "_") if name.startswith("ogb") else name


def seed_data_root(source: Union[str, Path], root: Union[str, Path, None] = None) -> list[str]:
    """Copy ``source/<name>/raw/`` and ``source/<name>/split/`` into the data root.

    Each dataset lands in the folder its loader reads (:func:`dataset_folder`: ``ogbn-arxiv``
    and ``ogbn_arxiv`` both seed ``<root>/ogbn_arxiv``). Files that already exist are left
    alone; ``processed/`` folders are never copied (the loader builds them next to ``raw/``,
    in the writable root).

    Args:
        source (str or Path): a folder holding ``<name>/raw/`` for each dataset.
        root (str or Path, optional): the data root. (default: :func:`data_root`)

    Returns:
        The names of the datasets seeded (their folder names in the root); a missing
        ``source`` seeds nothing.
    """
    source, target = Path(source), data_root(root)
    seeded: list[str] = []
    if not source.is_dir():
        return seeded
    for raw in sorted(source.glob("*/raw")):
        name = dataset_folder(raw.parent.name)
        for folder in SEEDED_FOLDERS:
            origin = raw.parent / folder
            if not origin.is_dir():
                continue
            for file in sorted(origin.rglob("*")):
                destination = target / name / folder / file.relative_to(origin)
                if file.is_file() and not destination.exists():
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, destination)
            (target / name / folder).mkdir(parents=True, exist_ok=True)
        seeded.append(name)
    return seeded


PLANETOID_RAW = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def _load(make: Callable, name: str, raw_dir: Path, expected: str):
    """Run a loader; if its raw files were missing and fetching them failed, say where they go.

    Folders the failed attempt created (an empty ``raw/``, the dataset folder) are removed, so
    that the next attempt, or a seed, starts from a clean root.
    """
    had_raw = raw_dir.is_dir() and any(raw_dir.iterdir())
    folder = raw_dir.parent
    existed = {path for path in [folder, *folder.rglob("*")] if path.exists()} if folder.exists() else set()
    try:
        return make()
    except Exception as error:  # the download's error type depends on the transport (fsspec, urllib)
        if had_raw:
            raise
        _remove_empty_folders(folder, keep=existed)
        raise RuntimeError(f"could not load {name}: its raw files are not in {raw_dir} and downloading them "
                           f"failed ({type(error).__name__}: {error}). On a machine without internet put "
                           f"{expected} there (or run `python -m lowrank_gnn.data seed <folder holding "
                           f"{name}/raw/>`), or point {ENV_VAR} at a data root that has them") from error


def _remove_empty_folders(folder: Path, keep: set) -> None:
    """Remove the empty folders under (and including) ``folder`` that are not in ``keep``."""
    if not folder.is_dir():
        return
    for path in sorted((p for p in [folder, *folder.rglob("*")] if p.is_dir()), key=lambda p: -len(p.parts)):
        if path not in keep and not any(path.iterdir()):
            path.rmdir()


def load_planetoid(name: str, root: Union[str, Path, None] = None, transform: Optional[Callable] = None):
    """PyG's ``Planetoid`` (Cora, CiteSeer, PubMed; public split) from the data root.

    Example:
        >>> from lowrank_gnn.data import load_planetoid
        >>> dataset = load_planetoid("Cora")
        >>> dataset[0].num_nodes
        2708
    """
    from torch_geometric.datasets import Planetoid

    if name not in PLANETOID_NAMES:
        raise ValueError(f"name must be one of {', '.join(map(repr, PLANETOID_NAMES))} (got name={name!r})")
    path = data_root(root)
    files = ", ".join(f"ind.{name.lower()}.{part}" for part in PLANETOID_RAW)
    return _load(lambda: Planetoid(str(path), name, transform=transform), name, path / name / "raw", files)


def load_tu(name: str, root: Union[str, Path, None] = None, transform: Optional[Callable] = None, **kwargs):
    """PyG's ``TUDataset`` (e.g. MUTAG, PROTEINS, ENZYMES) from the data root."""
    from torch_geometric.datasets import TUDataset

    path = data_root(root)
    files = f"{name}_A.txt, {name}_graph_indicator.txt, {name}_graph_labels.txt, ..."
    return _load(lambda: TUDataset(str(path), name, transform=transform, **kwargs), name, path / name / "raw", files)


def load_ogb_node(name: str = "ogbn-arxiv", root: Union[str, Path, None] = None,
                  transform: Optional[Callable] = None):
    """OGB's ``PygNodePropPredDataset`` (e.g. ``ogbn-arxiv``) from the data root, non-interactively.

    Two problems of ``ogb`` 1.3.6 are handled here: with torch >= 2.6 its ``torch.load`` of
    the processed file fails (``weights_only=True`` rejects PyG's classes), so the load runs
    with PyG's data classes allow-listed; and when the dataset folder exists without OGB's
    ``RELEASE_v<version>.txt`` (raw files placed by hand) it calls ``input()``, which blocks
    a non-interactive run, so the marker is written first: a folder in place counts as the
    current release. Needs the ``[ogb]`` extra. ogbn-arxiv is a *directed* citation graph:
    symmetrise it (``torch_geometric.utils.to_undirected``) before a symmetric eigensolver.
    """
    try:
        import pandas as pd
        from ogb.nodeproppred import PygNodePropPredDataset
        from ogb.nodeproppred import __file__ as ogb_file
    except ImportError as error:
        raise ImportError("load_ogb_node needs the ogb package: pip install 'lowrank_gnn[ogb]'") from error
    master = pd.read_csv(Path(ogb_file).parent / "master.csv", index_col=0, keep_default_na=False)
    if name not in master:
        raise ValueError(f"name must be an OGB node-property dataset such as 'ogbn-arxiv' (got name={name!r})")
    path = data_root(root)
    folder = path / dataset_folder(name)
    marker = folder / f"RELEASE_v{master[name]['version']}.txt"
    if folder.is_dir() and not marker.exists():
        marker.write_text(f"written by lowrank_gnn.data.load_ogb_node: files in {folder} taken as this release\n")
    expected = "edge.csv.gz, node-feat.csv.gz, node-label.csv.gz, ... (and split/<type>/*.csv.gz beside raw/)"
    return _load(lambda: _ogb_dataset(PygNodePropPredDataset, name, path, transform), name, folder / "raw", expected)


def _ogb_dataset(dataset_class, name: str, path: Path, transform: Optional[Callable]):
    import torch
    from torch_geometric.data.data import Data, DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    # only the classes not yet allow-listed: leaving the context removes every class it was given,
    # including those PyG registered itself at import (Data), and later PyG loads would then warn
    allowed = torch.serialization.get_safe_globals()
    missing = [cls for cls in (Data, DataEdgeAttr, DataTensorAttr, GlobalStorage) if cls not in allowed]
    with torch.serialization.safe_globals(missing):
        return dataset_class(name, root=str(path), transform=transform)


def chung_lu_graph(num_nodes: int, num_edges: int, exponent: float = 2.5, seed: int = 0):
    r"""A random graph with a power-law degree distribution (Chung-Lu expected-degree model).

    Chung & Lu, "Connected components in random graphs with given expected degree
    sequences", Annals of Combinatorics 6, 2002. Node :math:`i` gets the weight
    :math:`w_i \propto (i + 1)^{-1/(\gamma - 1)}` (so degrees follow a power law with
    exponent :math:`\gamma`), node ids are shuffled, and edges are drawn with both end
    points chosen with probability :math:`\propto w` until ``num_edges`` distinct pairs
    remain (self-loops and repeats dropped). Vectorised numpy: seconds for
    ogbn-arxiv's 169,343 nodes and 1,166,243 edges. Each pair appears once, in a random
    direction, like a citation graph: symmetrise with ``to_undirected`` before a
    symmetric eigensolver. Used where real data cannot be had offline (scale benchmarks,
    ``examples/ogbn_arxiv.py --synthetic``).

    Args:
        num_nodes (int): ``n``.
        num_edges (int): distinct undirected pairs; at most ``n (n - 1) / 2``.
        exponent (float): the degree exponent :math:`\gamma > 2`; ``float("inf")`` gives every
            node the same weight: the uniform random graph :math:`G(n, m)` (Erdős–Rényi).
            (default: ``2.5``)
        seed (int): numpy seed. (default: ``0``)

    Shapes:
        returns edge_index ``(2, num_edges)`` (int64).

    Example:
        >>> from lowrank_gnn.data import chung_lu_graph
        >>> chung_lu_graph(19717, 44324).shape
        torch.Size([2, 44324])
    """
    import numpy as np
    import torch

    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 2:
        raise ValueError(f"num_nodes must be an integer >= 2 (got num_nodes={num_nodes!r})")
    max_edges = num_nodes * (num_nodes - 1) // 2
    if isinstance(num_edges, bool) or not isinstance(num_edges, int) or not 1 <= num_edges <= max_edges:
        raise ValueError(f"num_edges must satisfy 1 <= num_edges <= n (n - 1) / 2 = {max_edges} "
                         f"(got num_edges={num_edges!r})")
    if not exponent > 2:
        raise ValueError(f"exponent must be > 2 (got exponent={exponent!r}); the mean degree diverges below")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (got seed={seed!r})")
    rng = np.random.default_rng(seed)
    weight = (np.arange(num_nodes) + 1.0) ** (-1.0 / (exponent - 1.0))
    cumulative = np.cumsum(rng.permutation(weight))
    cumulative /= cumulative[-1]
    keys = np.empty(0, dtype=np.int64)
    while keys.size < num_edges:
        draw = max(2 * (num_edges - keys.size), 1024)  # oversample: repeats and self-loops are dropped
        ends = np.searchsorted(cumulative, rng.random((2, draw)), side="right").clip(max=num_nodes - 1)
        ends = ends[:, ends[0] != ends[1]]
        low, high = ends.min(0).astype(np.int64), ends.max(0).astype(np.int64)
        keys = np.unique(np.concatenate([keys, low * num_nodes + high]))
    keys = rng.permutation(keys)[:num_edges]
    pairs = np.stack([keys // num_nodes, keys % num_nodes])
    flip = rng.random(num_edges) < 0.5
    pairs[:, flip] = pairs[::-1, flip]
    return torch.from_numpy(pairs)


__all__ = ["ENV_VAR", "PLANETOID_NAMES", "data_root", "dataset_folder", "seed_data_root", "load_planetoid", "load_tu",
           "load_ogb_node", "chung_lu_graph"]


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lowrank_gnn.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    seed = commands.add_parser("seed", help="copy SOURCE/<name>/raw/ (and split/) into the data root")
    seed.add_argument("source")
    seed.add_argument("--root", default=None, help=f"data root (default: ${ENV_VAR} or the checkout's datasets/)")
    args = parser.parse_args(argv)
    names = seed_data_root(args.source, args.root)
    where = data_root(args.root)
    print(f"seeded {', '.join(names)} into {where}" if names else f"nothing to seed from {args.source}")


if __name__ == "__main__":
    main()
