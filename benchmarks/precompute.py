"""Dataset-wide Laplacian eigenvector precompute: PyG's transform against this library's, same run.

For each dataset (MUTAG, PROTEINS, ENZYMES and a synthetic ZINC-scale molecule set) the script
times, interleaved in one process:

* ``pyg``: ``torch_geometric.transforms.AddLaplacianEigenvectorPE(k)`` applied graph by graph
  (its defaults: ``numpy.linalg.eig`` below 100 nodes, ARPACK ``eigs`` above). It raises on
  graphs with ``num_nodes <= k``; those are counted as failures and the time is over the graphs
  it accepts;
* ``per_graph``: ``LaplacianEigenvectorPE(k)`` (same meaning as PyG's) applied graph by graph;
* ``batched``: ``precompute_eigenpairs(dataset, LaplacianEigenvectorPE(k), cache_dir=False)``;
* ``cached``: the same call reloading from a warm on-disk cache;
* ``eigh_only``: ``torch.linalg.eigh`` alone on the dense Laplacians of all graphs, grouped by
  size (already built, not timed): a full dense solve of every graph;
* ``solver_only``: the solvers the batched path calls, alone on the same matrices, without
  building, signs or attaching: ``lowrank_gnn.linalg.eigh_extremal(L, min(k + 1, n))`` on the
  batches below ``BAND_MIN_SIZE`` nodes and ``sparse_eigh_extremal`` on the SciPy CSR matrix of
  each larger graph (the band solver where its bandwidth pays, else dense);
* ``tridiag_only``: LAPACK's Householder reduction to tridiagonal form (``dsytrd`` through SciPy,
  with its optimal workspace) alone on every dense Laplacian: the first step of every dense
  symmetric eigensolver, full or partial, hence a floor under any of them.

The methods run in turn (round-robin), ``--repeats`` times each (``--synthetic-repeats`` on the
synthetic set), and each keeps its best pass, so that changes of machine load hit all of them alike. With
``--baseline-sample S`` (the default for the synthetic set) ``pyg`` and ``per_graph`` are timed
on a random sample of ``S`` graphs and scaled by ``num_graphs / S`` (their cost is a sum of
independent per-graph costs); the table says so. Peak memory is the largest resident-set (CPU)
or allocated (CUDA) increase during the call, sampled every 5 ms. Accuracy, on every
graph (or the sample) against float64 ``numpy.linalg.eigh`` of the dense Laplacian: the largest
error of the Rayleigh quotients ``u^T L u`` against the reference eigenvalues, and the largest
residual ``||L u - (u^T L u) u||``, over the encoding's columns.

The synthetic set (``--zinc-graphs``, default 250,000, like ZINC-full): graph sizes uniform in
9..38; each graph is a random tree in which node ``i`` attaches to one of nodes
``i-1 .. i-3`` (a chain-like backbone with short branches), plus 0-3 ring closures between a
node ``j`` and node ``j - 5`` (6-rings), seeded.

Writes ``benchmarks/results/precompute.csv`` and ``precompute.md``.

Example::

    python benchmarks/precompute.py --zinc-graphs 20000          # quick
    python benchmarks/precompute.py                               # 250,000 synthetic graphs
    python benchmarks/precompute.py --device cuda
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import scipy.sparse
import torch
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.transforms import AddLaplacianEigenvectorPE

from lowrank_gnn.data import load_tu
from lowrank_gnn.linalg import BAND_MIN_SIZE, eigh_extremal, sparse_eigh_extremal
from lowrank_gnn.transforms import LaplacianEigenvectorPE, precompute_eigenpairs
from lowrank_gnn.transforms.packed import dense_batches, normalized_edges
from lowrank_gnn.transforms.precompute import pack_in_memory

RESULTS = Path(__file__).resolve().parent / "results"


class PeakMemory:
    """Largest increase of resident memory (CPU) or allocated memory (CUDA) while inside the block."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss() - self.base)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self.rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss() - self.base)


def interleaved(methods: Dict[str, Callable[[], Any]], repeats: int, device: torch.device) -> Dict[str, tuple]:
    """``{name: (best wall seconds, best CPU seconds, peak memory of the first call, last result)}``.

    The methods are called in turn (round-robin) ``repeats`` times, so that a change of machine
    load hits all of them alike. CPU seconds are those of the calling thread (every method here
    is single-threaded with ``--threads 1``), which a busy machine disturbs far less than wall time.
    """
    wall = {name: float("inf") for name in methods}
    cpu = dict(wall)
    peak: Dict[str, int] = {}
    result: Dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            with PeakMemory(device) as memory:
                start, start_cpu = time.perf_counter(), time.thread_time()
                result[name] = fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                wall[name] = min(wall[name], time.perf_counter() - start)
                cpu[name] = min(cpu[name], time.thread_time() - start_cpu)
            peak.setdefault(name, memory.peak)
    return {name: (wall[name], cpu[name], peak[name], result[name]) for name in methods}


class Collated(InMemoryDataset):
    """An in-memory dataset from an already collated storage (no per-graph ``Data`` objects built)."""

    def __init__(self, store: Data, slices: Dict[str, torch.Tensor]) -> None:
        super().__init__(None)
        self._data, self.slices = store, slices

    def _download(self) -> None:
        pass

    def _process(self) -> None:
        pass


def synthetic_molecules(num_graphs: int, seed: int = 0) -> Collated:
    """Molecule-like graphs of 9..38 nodes: a random tree backbone plus 0-3 six-ring closures."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(9, 39, num_graphs)
    node_ptr = np.concatenate([[0], np.cumsum(sizes)])
    graph_of_node = np.repeat(np.arange(num_graphs), sizes)
    local = np.arange(node_ptr[-1]) - node_ptr[graph_of_node]
    child = local[local > 0]
    child_graph = graph_of_node[local > 0]
    parent = child - 1 - rng.integers(0, 3, child.size) % np.minimum(child, 3)
    rings = rng.integers(0, 4, num_graphs)
    ring_graph = np.repeat(np.arange(num_graphs), rings)
    ring_node = 5 + (rng.random(ring_graph.size) * (sizes[ring_graph] - 5)).astype(np.int64)
    source = np.concatenate([child, ring_node])
    target = np.concatenate([parent, ring_node - 5])
    owner = np.concatenate([child_graph, ring_graph])
    pairs = np.unique(np.stack([owner, np.minimum(source, target), np.maximum(source, target)], 1), axis=0)
    owner, low, high = pairs.T
    both = np.stack([np.concatenate([low, high]), np.concatenate([high, low])])
    edge_owner = np.concatenate([owner, owner])
    order = np.argsort(edge_owner, kind="stable")
    edge_index = torch.from_numpy(both[:, order].copy())
    edge_counts = np.bincount(edge_owner, minlength=num_graphs)
    store = Data(x=torch.zeros(int(node_ptr[-1]), 1), edge_index=edge_index)
    edge_ptr = np.concatenate([[0], np.cumsum(edge_counts)])
    slices = {"x": torch.from_numpy(node_ptr), "edge_index": torch.from_numpy(edge_ptr)}
    return Collated(store, slices)


def dense_laplacians(dataset: InMemoryDataset) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    packed = pack_in_memory(dataset)
    entries = normalized_edges(packed, "laplacian")
    return [(batch.graphs, batch.operators)
            for batch in dense_batches(packed, entries, (packed.num_nodes > 0).nonzero().squeeze(1))]


def solve_all(matrices: List[torch.Tensor], sparse: List[Optional[List[Any]]], k: int) -> None:
    """What the batched path's solvers do: ``eigh_extremal`` on each dense batch, or, for graphs of
    ``BAND_MIN_SIZE`` nodes or more on the CPU, ``sparse_eigh_extremal`` on each CSR matrix."""
    for batch, csr in zip(matrices, sparse, strict=True):
        n = batch.shape[-1]
        if csr is None:
            eigh_extremal(batch, min(k, n))
        else:
            for matrix in csr:
                sparse_eigh_extremal(matrix, min(k, n), check_finite=False)


def tridiagonalize_all(matrices: List[torch.Tensor]) -> None:
    """LAPACK's ``dsytrd`` (lower triangle, optimal workspace) on every matrix of every batch."""
    from scipy.linalg import lapack

    for batch in matrices:
        n = batch.shape[-1]
        lwork = int(lapack.dsytrd_lwork(n, lower=1)[0])
        for matrix in batch.cpu().numpy():
            lapack.dsytrd(matrix, lower=1, lwork=max(1, lwork))


def accuracy(graphs: List[Data], encodings: List[torch.Tensor], k: int) -> Tuple[float, float]:
    """Largest Rayleigh-quotient error against numpy.linalg.eigh, and largest residual, over graphs and columns."""
    from torch_geometric.utils import get_laplacian, to_dense_adj

    value_error, residual = 0.0, 0.0
    for data, pe in zip(graphs, encodings, strict=True):
        n = data.num_nodes
        index, weight = get_laplacian(data.edge_index, normalization="sym", num_nodes=n, dtype=torch.float64)
        matrix = to_dense_adj(index, edge_attr=weight, max_num_nodes=n)[0].numpy()
        reference = np.linalg.eigh(matrix)[0][1:k + 1]
        u = pe.detach().cpu().double().numpy()[:, : reference.size]
        if not u.size:
            continue
        u = u / np.linalg.norm(u, axis=0, keepdims=True)
        rayleigh = np.einsum("ij,ij->j", u, matrix @ u)
        value_error = max(value_error, float(np.abs(rayleigh - reference).max()))
        residual = max(residual, float(np.linalg.norm(matrix @ u - u * rayleigh, axis=0).max()))
    return value_error, residual


def pyg_fails(data: Data, k: int) -> bool:
    try:
        AddLaplacianEigenvectorPE(k=k)(data)
        return False
    except Exception:
        return True


def run_dataset(name: str, dataset: InMemoryDataset, args, device: torch.device, writer) -> List[dict]:
    k, repeats = args.k, (args.synthetic_repeats if name.startswith("synthetic") else args.repeats)
    graphs = [dataset.get(i) for i in range(len(dataset))]
    rng = np.random.default_rng(1)
    sample_size = args.baseline_sample if name.startswith("synthetic") else 0
    sample = sorted(rng.choice(len(graphs), sample_size, replace=False).tolist()) if 0 < sample_size < len(graphs) \
        else list(range(len(graphs)))
    scale = len(graphs) / len(sample)
    baseline = [graphs[i] for i in sample]
    rejected = [g for g in baseline if g.num_nodes <= k]
    failures = sum(pyg_fails(g, k) for g in rejected)
    accepted = [g for g in baseline if g.num_nodes > k]
    if args.device != "cpu":
        baseline = [g.to(device) for g in baseline]
    pyg, ours = AddLaplacianEigenvectorPE(k=k), LaplacianEigenvectorPE(k=k)
    cache = tempfile.mkdtemp(prefix="precompute-bench-")
    precompute_eigenpairs(dataset, ours, cache_dir=cache, progress=False, device=device)  # fill the cache
    rows = []
    note = f"sample of {len(sample)} graphs, x{scale:.1f}" if scale > 1 else ""
    matrices = [m.to(device) for _, m in dense_laplacians(dataset)]
    sparse = [[scipy.sparse.csr_matrix(m) for m in batch.numpy()]  # built before timing
              if batch.shape[-1] >= BAND_MIN_SIZE and batch.device.type == "cpu" else None for batch in matrices]
    times = interleaved({
        "pyg": lambda: [pyg(g) for g in accepted],
        "per_graph": lambda: [ours(g) for g in baseline],
        "batched": lambda: precompute_eigenpairs(dataset, ours, cache_dir=False, progress=False, device=device),
        "cached": lambda: precompute_eigenpairs(dataset, ours, cache_dir=cache, progress=False, device=device),
        "eigh_only": lambda: [torch.linalg.eigh(m) for m in matrices],
        "solver_only": lambda: solve_all(matrices, sparse, k + 1),
        "tridiag_only": lambda: tridiagonalize_all(matrices),
    }, repeats, device)
    shutil.rmtree(cache, ignore_errors=True)
    (t_pyg, c_pyg, m_pyg, out_pyg), (t_per, c_per, m_per, _) = times["pyg"], times["per_graph"]
    (t_bat, c_bat, m_bat, out_bat), (t_hit, c_hit, m_hit, out_hit) = times["batched"], times["cached"]
    t_eigh, c_eigh = times["eigh_only"][:2]
    t_solve, c_solve = times["solver_only"][:2]
    t_tri, c_tri = times["tridiag_only"][:2]
    pyg_total, pyg_cpu = t_pyg * scale, c_pyg * scale
    assert all(torch.equal(out_bat[i].laplacian_eigenvector_pe, out_hit[i].laplacian_eigenvector_pe)
               for i in range(len(out_bat)))
    accepted_index = [i for i in sample if graphs[i].num_nodes > k]
    err_pyg = accuracy([graphs[i] for i in accepted_index], [d.laplacian_eigenvector_pe for d in out_pyg], k)
    err_ours = accuracy([graphs[i] for i in sample], [out_bat[i].laplacian_eigenvector_pe for i in sample], k)
    nan = (float("nan"), float("nan"))
    entries = [("pyg", pyg_total, pyg_cpu, m_pyg, err_pyg, failures, len(accepted), note),
               ("per_graph", t_per * scale, c_per * scale, m_per, err_ours, 0, len(baseline), note),
               ("batched", t_bat, c_bat, m_bat, err_ours, 0, len(graphs), ""),
               ("cached", t_hit, c_hit, m_hit, err_ours, 0, len(graphs), "reload"),
               ("eigh_only", t_eigh, c_eigh, 0, nan, 0, len(graphs), "torch.linalg.eigh alone"),
               ("solver_only", t_solve, c_solve, 0, nan, 0, len(graphs), "eigh_extremal / sparse_eigh_extremal alone"),
               ("tridiag_only", t_tri, c_tri, 0, nan, 0, len(graphs), "LAPACK dsytrd alone")]
    for method, seconds, cpu, memory, (value_error, residual), fails, timed_graphs, text in entries:
        row = dict(dataset=name, graphs=len(graphs), method=method, wall_s=f"{seconds:.4f}", cpu_s=f"{cpu:.4f}",
                   speedup_cpu=f"{pyg_cpu / cpu:.1f}", speedup_wall=f"{pyg_total / seconds:.1f}",
                   peak_mem_mb=f"{memory / 2**20:.1f}", max_eigval_err=f"{value_error:.1e}",
                   max_residual=f"{residual:.1e}", pyg_failures=fails, timed_graphs=timed_graphs, note=text)
        writer.writerow(row)
        rows.append(row)
        print(" | ".join(str(v) for v in row.values()), flush=True)
    return rows


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["MUTAG", "PROTEINS", "ENZYMES", "synthetic"],
                        help="TU dataset names and/or 'synthetic'")
    parser.add_argument("--zinc-graphs", type=int, default=250_000, help="graphs in the synthetic set")
    parser.add_argument("--baseline-sample", type=int, default=10_000,
                        help="synthetic set: time pyg and per_graph on this many graphs and scale up (0: all)")
    parser.add_argument("--k", type=int, default=8, help="encoding size (PyG's meaning of k)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="passes per method on the TU datasets, interleaved (best kept)")
    parser.add_argument("--synthetic-repeats", type=int, default=3,
                        help="passes per method on the synthetic set, interleaved (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="where this library solves, e.g. cuda (PyG: CPU)")
    parser.add_argument("--out", default=str(RESULTS / "precompute"), help="output path without suffix")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch_geometric")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["dataset", "graphs", "method", "wall_s", "cpu_s", "speedup_cpu", "speedup_wall", "peak_mem_mb",
              "max_eigval_err", "max_residual", "pyg_failures", "timed_graphs", "note"]
    rows = []
    with open(out.with_suffix(".csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        for name in args.datasets:
            if name == "synthetic":
                dataset, label = synthetic_molecules(args.zinc_graphs), f"synthetic ({args.zinc_graphs} graphs)"
            else:
                dataset, label = load_tu(name), name
            rows += run_dataset(label, dataset, args, device, writer)
    load = os.getloadavg()
    lines = [f"k={args.k}, threads={args.threads}, device={args.device}, {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}", "",
             "| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(str(row[f]) for f in fields) + " |" for row in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:1]))


if __name__ == "__main__":
    main()
