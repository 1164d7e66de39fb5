"""The real loaders on small files in the real raw formats, generated here."""
import gzip
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch_geometric.data import Data
from torch_geometric.data.data import DataEdgeAttr

from lowrank_gnn.data import PLANETOID_RAW, load_ogb_node, load_planetoid, seed_data_root


def write_csv_gz(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as file:
        for row in rows:
            file.write(",".join(str(v) for v in np.atleast_1d(row)) + "\n")


def make_ogbn_arxiv(root, n=30, num_edges=60, features=128, seed=0):
    """OGB's ogbn-arxiv layout: raw/*.csv.gz and split/time/*.csv.gz (no RELEASE file)."""
    rng = np.random.default_rng(seed)
    folder = root / "ogbn_arxiv"
    edges = rng.integers(0, n, size=(num_edges, 2))
    write_csv_gz(folder / "raw" / "edge.csv.gz", edges)
    write_csv_gz(folder / "raw" / "node-feat.csv.gz", rng.standard_normal((n, features)).round(4))
    write_csv_gz(folder / "raw" / "node-label.csv.gz", rng.integers(0, 40, size=n))
    write_csv_gz(folder / "raw" / "node_year.csv.gz", rng.integers(1990, 2020, size=n))
    write_csv_gz(folder / "raw" / "num-node-list.csv.gz", [n])
    write_csv_gz(folder / "raw" / "num-edge-list.csv.gz", [num_edges])
    order = rng.permutation(n)
    for part, index in zip(("train", "valid", "test"), np.split(order, [n // 2, 3 * n // 4]), strict=True):
        write_csv_gz(folder / "split" / "time" / f"{part}.csv.gz", index)
    return edges


def test_ogbn_arxiv_loads_non_interactively_with_torch_weights_only_default(tmp_path, monkeypatch):
    pytest.importorskip("ogb")

    def no_prompt(*args):
        raise AssertionError("ogb asked for input(); a non-interactive run would block here")

    monkeypatch.setattr("builtins.input", no_prompt)
    edges = make_ogbn_arxiv(tmp_path)
    for _ in range(2):  # first load processes the raw files, the second reads processed/ with torch.load
        dataset = load_ogb_node("ogbn-arxiv", root=tmp_path)
        graph = dataset[0]
        assert graph.num_nodes == 30 and graph.x.shape == (30, 128)
        assert graph.edge_index.t().tolist() == edges.tolist()  # directed, as published
    split = dataset.get_idx_split()
    assert sorted(np.concatenate([split[p].numpy() for p in ("train", "valid", "test")]).tolist()) == list(range(30))
    # the process-wide torch.load allowlist keeps PyG's own entry (Data), so later PyG loads (Planetoid, ...)
    # still load with weights_only=True instead of warning, and the classes only OGB's load needed are gone again
    allowed = torch.serialization.get_safe_globals()
    assert Data in allowed and DataEdgeAttr not in allowed


def test_ogb_offline_error_says_where_the_files_go(tmp_path, monkeypatch):
    pytest.importorskip("ogb")

    def no_network(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr("ogb.nodeproppred.dataset_pyg.download_url", no_network)
    monkeypatch.setattr("ogb.nodeproppred.dataset_pyg.decide_download", lambda url: True)
    with pytest.raises(RuntimeError, match=r"put edge\.csv\.gz, node-feat\.csv\.gz"):
        load_ogb_node("ogbn-arxiv", root=tmp_path)
    assert not any(tmp_path.iterdir())  # no empty ogbn_arxiv/raw/ left behind


def test_ogb_files_seeded_as_the_offline_message_says_then_load(tmp_path, monkeypatch):
    """The message says: seed from a folder holding ogbn-arxiv/raw/ (and split/); that must load."""
    pytest.importorskip("ogb")
    monkeypatch.setattr("builtins.input", lambda *args: "n")
    make_ogbn_arxiv(tmp_path / "download")
    (tmp_path / "download" / "ogbn_arxiv").rename(tmp_path / "download" / "ogbn-arxiv")  # the published name
    assert seed_data_root(tmp_path / "download", tmp_path / "root") == ["ogbn_arxiv"]
    dataset = load_ogb_node("ogbn-arxiv", root=tmp_path / "root")
    assert dataset[0].num_nodes == 30 and sum(len(v) for v in dataset.get_idx_split().values()) == 30


def test_unknown_ogb_name(tmp_path):
    pytest.importorskip("ogb")
    with pytest.raises(ValueError, match="OGB node-property dataset"):
        load_ogb_node("ogbn-arxive", root=tmp_path)


def make_planetoid(root, name="PubMed", n_train=6, n_test=4, n_other=510, features=7, classes=3, seed=0):
    """Planetoid's ind.<name>.* pickles (x/tx/allx as scipy sparse, y/ty/ally one-hot, graph dict).

    PyG's reader takes the 500 nodes after the training nodes as validation set, hence n_other.
    """
    rng = np.random.default_rng(seed)
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    n_all = n_train + n_other
    n = n_all + n_test
    onehot = np.eye(classes)[rng.integers(0, classes, size=n)]
    feats = sp.csr_matrix(rng.random((n, features)).astype(np.float32))
    test_index = np.arange(n_all, n)
    graph = {i: [] for i in range(n)}  # adjacency lists, symmetric as in the published files
    for i in range(n):
        for j in rng.choice(n, size=2, replace=False):
            if j != i and int(j) not in graph[i]:
                graph[i].append(int(j))
                graph[int(j)].append(i)
    objects = {"x": feats[:n_train], "tx": feats[n_all:], "allx": feats[:n_all], "y": onehot[:n_train],
               "ty": onehot[n_all:], "ally": onehot[:n_all], "graph": graph}
    for part in PLANETOID_RAW:
        path = raw / f"ind.{name.lower()}.{part}"
        if part == "test.index":
            path.write_text("\n".join(str(i) for i in test_index) + "\n")
        else:
            with open(path, "wb") as file:
                pickle.dump(objects[part], file)
    return n, graph


def test_pubmed_loader_reads_generated_planetoid_files(tmp_path):
    n, graph = make_planetoid(tmp_path)
    dataset = load_planetoid("PubMed", root=tmp_path)
    data = dataset[0]
    assert data.num_nodes == n and data.num_features == 7 and dataset.num_classes == 3
    expected = sorted((i, j) for i, nbrs in graph.items() for j in nbrs)
    assert sorted(map(tuple, data.edge_index.t().tolist())) == expected
