"""Exact vs stable eigen backward: finiteness, accuracy and backward time on many operators.

For each operator (random with separated spectra, random with a dense spectrum, graphs with
repeated eigenvalues, an identity block, optionally Cora), each ``which`` and a few random
losses ``sum(U^3) + <R, U diag(l) U^T>`` it measures, for ``exact`` (dense eigh backward) and
``stable`` (``taylor`` and ``power_iteration``, dense path):

* ``nonfinite``: fraction of runs whose gradient has a NaN/Inf entry,
* ``rel_err``: ``||g - g_ref|| / ||g_ref||`` against the float64 eigh gradient, only where that
  reference is meaningful (every gap that enters it is >= 1e-6 relative: simple spectra),
* ``max_grad_norm``: the largest gradient norm over the runs (inf if any is non-finite),
* ``backward_ms`` and ``ratio`` = stable / exact backward time (same forward, same run).

With ``--sparse`` it also measures the sparse path (ARPACK forward, block-Krylov partial backward)
on Cora's deflated normalized adjacency (``LowRankGCNConv``'s operator), against the dense
stable path: edge-weight gradient error and backward time for several ``krylov_dim``.

Run: ``PYTHONPATH=. python benchmarks/stable_backward.py [--cora] [--sparse] [--threads 1]``
Writes benchmarks/results/stable_backward.csv (+ _sparse.csv) and .png.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from lowrank_gnn.eigen import ExactBackend, StableBackend
from lowrank_gnn.operators import normalized_adjacency
from lowrank_gnn.testing import complete_graph, cycle_graph, disjoint_union, path_graph
from lowrank_gnn.testing.conformance import random_symmetric

RESULTS = Path(__file__).resolve().parent / "results"
#: Gaps below this (relative to max|lambda|) make the float64 eigh gradient itself unreliable.
REFERENCE_MIN_GAP = 1e-6


def graph_matrix(graph):
    edge_index = graph.edge_index
    weight = torch.ones(edge_index.shape[1], dtype=torch.float64)
    return normalized_adjacency(edge_index, weight, graph.num_nodes).to_dense()


def identity_blocks(n, seed):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    values = torch.cat([torch.full((n // 2,), 2.0), torch.ones(n // 4), -torch.ones(n - n // 2 - n // 4)])
    return (q * values.to(torch.float64)) @ q.T


def cases(with_cora: bool):
    """(name, float64 matrix, k, kind) with kind 'separated' | 'dense spectrum' | 'repeated'."""
    out = [
        ("random n=64 (min gap 1.5% of max abs eig.)", random_symmetric(64, seed=1, gap=0.5), 8, "separated"),
        ("random n=128 (min gap 0.8% of max abs eig.)", random_symmetric(128, seed=2, gap=0.5), 8, "separated"),
        ("random n=512 (min gap 0.2% of max abs eig.)", random_symmetric(512, seed=4, gap=0.5), 16, "separated"),
        ("path P_64, normalized adj.", graph_matrix(path_graph(64)), 8, "dense spectrum"),
        ("cycle C_64 (pairs)", graph_matrix(cycle_graph(64)), 8, "repeated"),
        ("complete K_32 (0 x31)", graph_matrix(complete_graph(32)), 8, "repeated"),
        ("6 components (1 x6)", graph_matrix(disjoint_union(cycle_graph(10), path_graph(9), complete_graph(6),
                                                           cycle_graph(12), path_graph(7), path_graph(11))),
         4, "repeated"),
        ("identity blocks (2 x32, 1 x16, -1 x16)", identity_blocks(64, seed=3), 8, "repeated"),
    ]
    if with_cora:
        from lowrank_gnn.data import load_planetoid

        data = load_planetoid("Cora", root=os.environ.get("LOWRANK_GNN_DATA"))[0]
        matrix = normalized_adjacency(data.edge_index, num_nodes=data.num_nodes).to_dense().double()
        out.append(("Cora normalized adj. (1 x78)", matrix, 16, "repeated"))
    return out


def reference_is_meaningful(matrix: torch.Tensor) -> bool:
    """All eigenvalues distinct (relative gap >= REFERENCE_MIN_GAP): eigh's gradient is the true one."""
    values = torch.linalg.eigvalsh(matrix)
    gaps = values.diff()
    return bool((gaps >= REFERENCE_MIN_GAP * values.abs().max()).all())


def run_backward(backend, matrix, mix, cube_weight, repeats=1):
    """The gradient, and the fastest of ``repeats`` backward passes (the machine is shared: the
    minimum is the least disturbed measurement)."""
    times = []
    for _ in range(repeats):
        a = matrix.detach().clone().requires_grad_()
        pairs = backend(a)
        vectors = pairs.eigenvectors
        loss = ((vectors * pairs.eigenvalues.unsqueeze(-2)) @ vectors.mT * mix).sum() \
            + (vectors.pow(3) * cube_weight).sum()
        start = time.perf_counter()
        loss.backward()
        times.append(time.perf_counter() - start)
    return a.grad, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cora", action="store_true", help="add Cora (2708 nodes: ~2 s per dense eigh)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--seeds", type=int, default=3, help="random losses per case")
    parser.add_argument("--sparse", action="store_true", help="sparse path on deflated Cora (a few minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"cpu_count={os.cpu_count()} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"python={platform.python_version()} machine={platform.machine()}")

    rows = []
    backends = {
        "exact": lambda k, w: ExactBackend(k, w, method="dense"),
        "stable-taylor": lambda k, w: StableBackend(k, w, forward_method="dense"),
        "stable-taylor gap=1e-2": lambda k, w: StableBackend(k, w, relative_gap=1e-2, forward_method="dense"),
        "stable-power_iteration": lambda k, w: StableBackend(k, w, method="power_iteration", forward_method="dense"),
    }
    for name, matrix64, k, kind in cases(args.cora):
        n = matrix64.shape[-1]
        whiches = ("largest",) if n > 1000 else ("largest", "smallest", "magnitude")
        seeds = 1 if n > 1000 else args.seeds
        meaningful = reference_is_meaningful(matrix64)
        for dtype in (torch.float32,) if n > 1000 else (torch.float32, torch.float64):
            matrix = matrix64.to(dtype)
            stats = {b: {"nonfinite": 0, "runs": 0, "errors": [], "times": [], "norms": []} for b in backends}
            for which in whiches:
                for seed in range(seeds):
                    g = torch.Generator().manual_seed(seed)
                    mix = torch.randn(n, n, generator=g, dtype=torch.float64)
                    cube = torch.randn(n, k, generator=g, dtype=torch.float64)
                    reference = run_backward(ExactBackend(k, which, method="dense"), matrix64, mix, cube)[0] \
                        if meaningful else None
                    for label, make in backends.items():
                        grad, seconds = run_backward(make(k, which), matrix, mix.to(dtype), cube.to(dtype),
                                                     repeats=1 if n > 1000 else 3)
                        entry = stats[label]
                        entry["runs"] += 1
                        entry["times"].append(seconds)
                        entry["norms"].append(float(grad.double().norm()))
                        finite = bool(torch.isfinite(grad).all())
                        entry["nonfinite"] += not finite
                        if reference is not None and finite:
                            entry["errors"].append(float((grad.double() - reference).norm() / reference.norm()))
            exact_ms = 1e3 * statistics.median(stats["exact"]["times"])
            for label, entry in stats.items():
                ms = 1e3 * statistics.median(entry["times"])
                rows.append({
                    "case": name, "kind": kind, "n": n, "k": k, "dtype": str(dtype).replace("torch.", ""),
                    "backend": label, "runs": entry["runs"],
                    "nonfinite": entry["nonfinite"] / entry["runs"],
                    "rel_err": max(entry["errors"]) if entry["errors"] else float("nan"),
                    "max_grad_norm": max(entry["norms"]),
                    "backward_ms": ms, "ratio": ms / exact_ms,
                })
                row = rows[-1]
                print(f"{name:42s} {row['dtype']:8s} {label:23s} nonfinite={row['nonfinite']:6.1%} "
                      f"rel_err={row['rel_err']:.2e} max|g|={row['max_grad_norm']:.2e} backward={ms:8.2f} ms "
                      f"ratio={row['ratio']:.2f}", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "stable_backward.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print_table(rows)
    print_summary(rows)
    plot(rows)
    if args.sparse:
        sparse_path_on_cora()


def sparse_path_on_cora() -> None:
    """Edge-weight gradient of U diag(l) U^T X through k = 16 pairs of deflated Cora: sparse vs dense."""
    from lowrank_gnn.data import load_planetoid
    from lowrank_gnn.operators import deflate_components

    data = load_planetoid("Cora", root=os.environ.get("LOWRANK_GNN_DATA"))[0]
    upper = data.edge_index[:, data.edge_index[0] < data.edge_index[1]]
    edge_index = torch.cat([upper, upper.flip(0)], dim=1)
    features = torch.randn(data.num_nodes, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def gradient(backend):
        weight = torch.ones(upper.shape[1], dtype=torch.float64, requires_grad=True)
        op = deflate_components(normalized_adjacency(edge_index, torch.cat([weight, weight]), data.num_nodes))
        start = time.perf_counter()
        pairs = backend(op)
        forward = time.perf_counter() - start
        vectors = pairs.eigenvectors
        loss = (vectors @ (pairs.eigenvalues[:, None] * (vectors.T @ features))).pow(2).sum()
        start = time.perf_counter()
        loss.backward()
        return weight.grad, forward, time.perf_counter() - start

    reference, forward, backward = gradient(StableBackend(16, forward_method="dense"))
    rows = [{"path": "dense (eigh, all pairs)", "krylov_dim": "", "rel_err": 0.0,
             "forward_s": forward, "backward_s": backward}]
    for dim in (64, 256, 512, 1024):
        grad, forward, backward = gradient(StableBackend(16, forward_method="sparse", krylov_dim=dim))
        rows.append({"path": "sparse (ARPACK + block Krylov)", "krylov_dim": dim,
                     "rel_err": float((grad - reference).norm() / reference.norm()),
                     "forward_s": forward, "backward_s": backward})
    with open(RESULTS / "stable_backward_sparse.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("\n| Cora, deflated, k=16, float64 | krylov_dim | edge-weight grad rel. error vs dense | forward s | "
          "backward s |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['path']} | {row['krylov_dim']} | {row['rel_err']:.1e} | {row['forward_s']:.2f} | "
              f"{row['backward_s']:.2f} |")


def print_table(rows) -> None:
    print("\n| operator | dtype | backend | non-finite | max rel. grad error vs float64 eigh | max ‖grad‖ | "
          "backward ms | time / exact |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        err = "n/a (no reference)" if math.isnan(row["rel_err"]) else f"{row['rel_err']:.1e}"
        print(f"| {row['case']} | {row['dtype']} | {row['backend']} | {row['nonfinite']:.0%} | {err} | "
              f"{row['max_grad_norm']:.1e} | "
              f"{row['backward_ms']:.2f} | {row['ratio']:.2f} |")


def print_summary(rows) -> None:
    """One line per operator (the README table)."""
    def get(case, backend, dtype, key):
        found = [r for r in rows if r["case"] == case and r["backend"] == backend and r["dtype"] == dtype]
        return float(found[0][key]) if found else float("nan")

    def err(value):
        return "n/a" if math.isnan(value) else f"{value:.0e}"

    print("\n| operator | k | non-finite: exact / taylor / power_it. | rel. grad error, float64: taylor / "
          "power_it. (float32: exact / taylor) | max ‖grad‖ exact / taylor | backward time taylor / exact "
          "(float32) |")
    print("|---|---|---|---|---|---|")
    for case in dict.fromkeys(r["case"] for r in rows):
        first = next(r for r in rows if r["case"] == case)
        dtype = "float64" if any(r["case"] == case and r["dtype"] == "float64" for r in rows) else "float32"
        nonfinite = " / ".join(f"{get(case, b, 'float32', 'nonfinite'):.0%}"
                               for b in ("exact", "stable-taylor", "stable-power_iteration"))
        errors = (f"{err(get(case, 'stable-taylor', 'float64', 'rel_err'))} / "
                  f"{err(get(case, 'stable-power_iteration', 'float64', 'rel_err'))} "
                  f"({err(get(case, 'exact', 'float32', 'rel_err'))} / "
                  f"{err(get(case, 'stable-taylor', 'float32', 'rel_err'))})")
        norms = (f"{get(case, 'exact', dtype, 'max_grad_norm'):.0e} / "
                 f"{get(case, 'stable-taylor', dtype, 'max_grad_norm'):.0e}")
        ratio = get(case, "stable-taylor", "float32", "ratio")
        print(f"| {case} | {first['k']} | {nonfinite} | {errors} | {norms} | {ratio:.2f} |")


def plot(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["dtype"] == "float32"]
    names = list(dict.fromkeys(r["case"] for r in rows))
    labels = list(dict.fromkeys(r["backend"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        chosen = [next(r for r in rows if r["case"] == c and r["backend"] == label) for c in names]
        xs = [j + i * width for j in range(len(names))]
        axes[0].bar(xs, [100 * r["nonfinite"] for r in chosen], width, label=label)
        axes[1].bar(xs, [r["ratio"] for r in chosen], width, label=label)
    for ax, title in zip(axes, ("runs with non-finite gradient (%)", "backward time / exact backward time"),
                         strict=True):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=7)
        ax.set_title(title + " (float32)")
    axes[1].axhline(1.0, color="gray", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "stable_backward.png", dpi=120)


if __name__ == "__main__":
    main()
