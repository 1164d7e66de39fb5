import urllib.error
from pathlib import Path

import pytest

from lowrank_gnn import data
from lowrank_gnn.data import data_root, load_planetoid, seed_data_root


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    assert data_root() == Path(data.__file__).resolve().parents[1] / "datasets"  # the checkout's datasets/
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"


def test_seed_copies_raw_files_only_and_keeps_existing(tmp_path):
    source = tmp_path / "source"
    (source / "Toy" / "raw").mkdir(parents=True)
    (source / "Toy" / "processed").mkdir()
    (source / "Toy" / "raw" / "a.txt").write_text("new")
    (source / "Toy" / "processed" / "data.pt").write_text("x")
    target = tmp_path / "root"
    (target / "Toy" / "raw").mkdir(parents=True)
    (target / "Toy" / "raw" / "a.txt").write_text("old")
    (source / "Toy" / "raw" / "b.txt").write_text("b")
    assert seed_data_root(source, target) == ["Toy"]
    assert (target / "Toy" / "raw" / "a.txt").read_text() == "old"
    assert (target / "Toy" / "raw" / "b.txt").read_text() == "b"
    assert not (target / "Toy" / "processed").exists()
    assert seed_data_root(tmp_path / "missing", target) == []


def test_seed_command_line(tmp_path, capsys):
    (tmp_path / "src" / "Toy" / "raw").mkdir(parents=True)
    (tmp_path / "src" / "Toy" / "raw" / "f").write_text("1")
    data.main(["seed", str(tmp_path / "src"), "--root", str(tmp_path / "root")])
    assert "seeded Toy" in capsys.readouterr().out and (tmp_path / "root" / "Toy" / "raw" / "f").exists()


def test_load_planetoid_from_the_seeded_root(planetoid_root):
    dataset = load_planetoid("Cora", root=planetoid_root)
    graph = dataset[0]
    assert (graph.num_nodes, graph.num_edges, dataset.num_classes) == (2708, 10556, 7)
    assert (int(graph.train_mask.sum()), int(graph.val_mask.sum()), int(graph.test_mask.sum())) == (140, 500, 1000)


def test_offline_loader_says_where_to_put_the_files(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr("torch_geometric.datasets.planetoid.fs.cp", no_network)
    with pytest.raises(RuntimeError, match=r"put ind\.cora\.x, .* there"):
        load_planetoid("Cora", root=tmp_path)


def test_unknown_planetoid_name():
    with pytest.raises(ValueError, match="name must be one of 'Cora', 'CiteSeer', 'PubMed'"):
        load_planetoid("Pubmed")


def test_seed_puts_ogb_datasets_where_the_loader_reads_them_with_their_split(tmp_path):
    source = tmp_path / "source"
    (source / "ogbn-arxiv" / "raw").mkdir(parents=True)
    (source / "ogbn-arxiv" / "raw" / "edge.csv.gz").write_text("e")
    (source / "ogbn-arxiv" / "split" / "time").mkdir(parents=True)
    (source / "ogbn-arxiv" / "split" / "time" / "train.csv.gz").write_text("t")
    (source / "ogbn-arxiv" / "processed").mkdir()
    (source / "ogbn-arxiv" / "processed" / "geometric_data_processed.pt").write_text("p")
    target = tmp_path / "root"
    assert seed_data_root(source, target) == ["ogbn_arxiv"]
    assert (target / "ogbn_arxiv" / "raw" / "edge.csv.gz").read_text() == "e"
    assert (target / "ogbn_arxiv" / "split" / "time" / "train.csv.gz").read_text() == "t"
    assert not (target / "ogbn_arxiv" / "processed").exists()
    assert not (target / "ogbn-arxiv").exists()
    assert data.dataset_folder("ogbn-arxiv") == data.dataset_folder("ogbn_arxiv") == "ogbn_arxiv"
    assert data.dataset_folder("Cora") == "Cora"


def test_failed_offline_load_leaves_no_empty_folders(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr("torch_geometric.datasets.planetoid.fs.cp", no_network)
    (tmp_path / "CiteSeer" / "raw").mkdir(parents=True)  # another dataset's folders are left alone
    with pytest.raises(RuntimeError, match="could not load Cora"):
        load_planetoid("Cora", root=tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["CiteSeer", "CiteSeer/raw"]
    (tmp_path / "Cora").mkdir()  # a folder that was there before the attempt stays
    with pytest.raises(RuntimeError, match="could not load Cora"):
        load_planetoid("Cora", root=tmp_path)
    assert (tmp_path / "Cora").is_dir() and not (tmp_path / "Cora" / "raw").exists()
