"""FastH (blocked compact-WY Householder products) against its baselines, forward + backward.

The task of Mathiasen et al. (NeurIPS 2020): a d x d orthogonal matrix given by d Householder
vectors (or by one of PyTorch's orthogonal parametrisations) multiplies a mini-batch
X of shape (d, batch); one training step is the forward product, a linear loss, the
backward pass and an SGD update. Every method runs in the same process, on the same inputs:

  fasth                 householder_product(V, X): blocks applied to X, nothing materialised
  sequential            d rank-one updates X <- X - tau v (v^T X) with autograd (Zhang et al. 2018)
  fasth (matrix)        householder_orthonormal(A) @ X: the d x d matrix built with FastH
  linalg.householder_product   torch.linalg.householder_product(A, tau) @ X (LAPACK orgqr + its backward)
  parametrize fasth     nn.Linear + parametrize.register_parametrization(HouseholderOrthogonal())
  parametrize householder | cayley | matrix_exp
                        nn.Linear + torch.nn.utils.parametrizations.orthogonal(orthogonal_map=...)

With --amortized it times instead one training step of the amortized eigen backend with each
orthogonalisation (AmortizedBackend(orthogonalization="qr" | "householder"): U from W, A U,
Rayleigh quotients, task + eigen loss, backward, Adam step) on GCN-normalised adjacencies of
synthetic Chung-Lu graphs with Cora's and PubMed's node and edge counts, k = 16 and 64.

Usage:
    python benchmarks/householder.py            # d = 64, 128, 256, 512, 1024
    python benchmarks/householder.py --quick    # d = 64, 128, 256
    python benchmarks/householder.py --block-sizes 8,16,32,64,128   # sweep fasth's block size
    python benchmarks/householder.py --amortized                    # qr vs householder in the amortized backend

Writes benchmarks/results/householder.csv and .png (or householder_block_sizes.csv, or
householder_amortized.csv).
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from lowrank_gnn.data import chung_lu_graph
from lowrank_gnn.eigen import AmortizedBackend
from lowrank_gnn.linalg import HouseholderOrthogonal, householder_orthonormal, householder_product
from lowrank_gnn.operators import normalized_adjacency

RESULTS = Path(__file__).resolve().parent / "results"
#: Node and edge counts of the graphs for --amortized.
AMORTIZED_GRAPHS = {"Cora-size": (2_708, 5_278), "PubMed-size": (19_717, 44_324)}
#: Mathiasen et al. 2020 (RTX 2080 Ti), FastH over the sequential algorithm at d = 512.
PAPER_SPEEDUP_D512 = {"matrix inversion": 27.1, "multiplication": 44.5}


def sequential_product(V, X):
    """Zhang et al. (2018): apply H(v_m), ..., H(v_1) one rank-one update at a time."""
    tau = 2 / (V * V).sum(dim=0)
    for i in reversed(range(V.shape[1])):
        v = V[:, i:i + 1]
        X = X - (tau[i] * v) @ (v.T @ X)
    return X


def torch_householder_product(A, X):
    """LAPACK's convention: unit diagonal implied, tau = 2 / ||v||^2 makes each factor a reflection."""
    V = A.tril(-1) + torch.eye(*A.shape, dtype=A.dtype, device=A.device)
    return torch.linalg.householder_product(A, 2 / (V * V).sum(dim=0)) @ X


def parametrized_linear(d, parametrization):
    layer = nn.Linear(d, d, bias=False)
    if parametrization == "fasth":
        parametrize.register_parametrization(layer, "weight", HouseholderOrthogonal())
    else:
        parametrizations.orthogonal(layer, orthogonal_map=parametrization)
    return layer


def make_methods(d, X, block_size=None):
    """name -> (parameters, forward)."""
    torch.manual_seed(d)
    V = nn.Parameter(torch.randn(d, d))  # full Householder vectors (FastH's setting)
    A = nn.Parameter(torch.randn(d, d) / d ** 0.5)  # lower-trapezoidal LAPACK-style vectors
    methods = {
        "fasth": ([V], lambda: householder_product(V, X, block_size)),
        "sequential": ([V], lambda: sequential_product(V, X)),
        "fasth (matrix)": ([A], lambda: householder_orthonormal(A, block_size=block_size) @ X),
        "linalg.householder_product": ([A], lambda: torch_householder_product(A, X)),
    }
    for name in ("fasth", "householder", "cayley", "matrix_exp"):
        layer = parametrized_linear(d, name)
        methods[f"parametrize {name}"] = (list(layer.parameters()), lambda layer=layer: layer.weight @ X)
    return methods


def time_step(params, forward, G, optimizer):
    """One training step; returns (forward, backward + update, wall-clock step) in seconds.
    The loss is ``(forward() * G).sum()``, or ``forward()`` itself when ``G`` is None.

    The first two are CPU time of this process: with one thread that is the compute time, and
    other jobs on a shared machine do not count in it (wall-clock time counts every time slice
    the scheduler gave to someone else, which inflates long steps more than short ones)."""
    optimizer.zero_grad()
    wall, start = time.perf_counter(), time.process_time()
    Y = forward()
    middle = time.process_time()
    (Y if G is None else (Y * G).sum()).backward()
    optimizer.step()
    end = time.process_time()
    return middle - start, end - middle, time.perf_counter() - wall


def measure_interleaved(methods, G, repeats, budget, optimizer=lambda params: torch.optim.SGD(params, lr=1e-4)):
    """Median step times of each method. The methods take turns, so a change in the machine's
    load falls on all of them alike; a method stops repeating once it has used ``budget``
    seconds (with at least 3 timed steps)."""
    optimizers = {name: optimizer(params) for name, (params, _) in methods.items()}
    times = {name: [] for name in methods}
    spent = dict.fromkeys(methods, 0.0)
    for name, (params, forward) in methods.items():
        time_step(params, forward, G, optimizers[name])  # warm-up
    for _ in range(repeats):
        for name, (params, forward) in methods.items():
            if len(times[name]) >= 3 and spent[name] > budget:
                continue
            run = time_step(params, forward, G, optimizers[name])
            times[name].append(run)
            spent[name] += run[2]
    return {name: tuple(statistics.median(column) for column in zip(*runs, strict=True)) + (len(runs),)
            for name, runs in times.items()}


def hardware():
    return (f"cpu: {platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}, "
            f"torch.get_num_threads()={torch.get_num_threads()}, torch {torch.__version__}, "
            f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def run_methods(dims, batch, repeats, budget):
    rows = []
    for d in dims:
        X, G = torch.randn(d, batch), torch.randn(d, batch)
        for name, (f, b, wall, n) in measure_interleaved(make_methods(d, X), G, repeats, budget).items():
            rows.append({"d": d, "method": name, "forward_ms": 1e3 * f, "backward_ms": 1e3 * b,
                         "step_ms": 1e3 * (f + b), "wall_step_ms": 1e3 * wall, "repeats": n})
            print(f"  d={d:5d} {name:28s} fwd {1e3 * f:9.2f} ms  bwd+update {1e3 * b:9.2f} ms  "
                  f"(median of {n}; wall-clock step {1e3 * wall:9.2f} ms)", flush=True)
    return rows


def print_table(rows, dims):
    step = {(r["d"], r["method"]): r["step_ms"] for r in rows}
    names = list(dict.fromkeys(r["method"] for r in rows))
    print("\nTraining step (forward + backward + SGD update), median CPU ms; x = time / fasth's time")
    print("| d | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for d in dims:
        base = step[(d, "fasth")]
        cells = [f"{step[(d, n)]:.2f}" + ("" if n == "fasth" else f" ({step[(d, n)] / base:.1f}x)") for n in names]
        print(f"| {d} | " + " | ".join(cells) + " |")
    print("\nParametrisations (the d x d matrix is built every step); x = time / parametrize fasth's time")
    for d in dims:
        base = step[(d, "parametrize fasth")]
        others = ", ".join(f"{n.split()[-1]} {step[(d, n)] / base:.2f}x" for n in names
                           if n.startswith("parametrize ") and n != "parametrize fasth")
        print(f"  d={d}: {others}")
    if 512 in dims:
        print(f"\nd=512: sequential / fasth = {step[(512, 'sequential')] / step[(512, 'fasth')]:.1f}x on this CPU; "
              f"paper (GPU): {PAPER_SPEEDUP_D512}")


def plot(rows, dims, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["method"] for r in rows):
        times = [next(r["step_ms"] for r in rows if r["d"] == d and r["method"] == name) for d in dims]
        ax.plot(dims, times, marker="o", label=name, linewidth=2.5 if name.endswith("fasth") else 1.2)
    ax.set(xscale="log", yscale="log", xlabel="d", ylabel="training step, CPU ms (median)",
           title=f"Orthogonal d x d matrix times X (d x batch), CPU, threads={torch.get_num_threads()}")
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_block_sizes(dims, batch, block_sizes, repeats, budget):
    """fasth (applied to X) and fasth (matrix) for each block size."""
    rows = []
    for d in dims:
        X, G = torch.randn(d, batch), torch.randn(d, batch)
        V = nn.Parameter(torch.randn(d, d))
        methods = {}
        for size in block_sizes:
            methods[("fasth", size)] = ([V], lambda size=size, V=V, X=X: householder_product(V, X, size))
            methods[("fasth (matrix)", size)] = (
                [V], lambda size=size, V=V, X=X: householder_orthonormal(V, block_size=size) @ X)
        for (mode, size), (f, b, wall, n) in measure_interleaved(methods, G, repeats, budget).items():
            rows.append({"d": d, "method": mode, "block_size": size, "step_ms": 1e3 * (f + b),
                         "wall_step_ms": 1e3 * wall, "repeats": n})
        for mode in ("fasth", "fasth (matrix)"):
            mine = [r for r in rows if r["d"] == d and r["method"] == mode]
            best = min(mine, key=lambda r: r["step_ms"])
            cells = "  ".join(f"b={r['block_size']}: {r['step_ms']:.2f}" for r in mine)
            print(f"  d={d:5d} {mode:15s} {cells}   fastest b={best['block_size']}", flush=True)
    return rows


def run_amortized(ks, repeats, budget):
    """One amortized-backend training step per orthogonalisation, on the same operator."""
    rows = []
    for graph, (num_nodes, num_edges) in AMORTIZED_GRAPHS.items():
        edge_index = chung_lu_graph(num_nodes, num_edges)
        op = normalized_adjacency(torch.cat([edge_index, edge_index.flip(0)], 1), num_nodes=num_nodes)
        for k in ks:
            G = torch.randn(num_nodes, k)
            methods = {}
            for name in ("qr", "householder"):
                backend = AmortizedBackend(k, orthogonalization=name)
                backend.initialize(op)

                def loss(backend=backend, op=op, G=G):
                    pairs = backend(op)
                    return (pairs.eigenvectors * G).sum() + pairs.aux_loss
                methods[name] = (list(backend.parameters()), loss)
            timed = measure_interleaved(methods, None, repeats, budget, lambda params: torch.optim.Adam(params, 1e-3))
            for name, (f, b, wall, n) in timed.items():
                rows.append({"graph": graph, "n": num_nodes, "k": k, "orthogonalization": name, "forward_ms": 1e3 * f,
                             "backward_ms": 1e3 * b, "step_ms": 1e3 * (f + b), "wall_step_ms": 1e3 * wall,
                             "repeats": n})
            qr, householder = (rows[-2]["step_ms"], rows[-1]["step_ms"])
            print(f"  {graph:12s} n={num_nodes:6d} k={k:3d}  qr {qr:8.2f} ms  householder {householder:8.2f} ms  "
                  f"householder / qr {householder / qr:.2f}", flush=True)
    return rows


def write_csv(rows, path):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="d = 64, 128, 256 only")
    parser.add_argument("--batch", type=int, default=32, help="columns of X, FastH's mini-batch (default: 32)")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per method and d (default: 7)")
    parser.add_argument("--budget", type=float, default=10.0,
                        help="stop repeating a method after this many seconds, at >= 3 runs (default: 10)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads; CPU time equals compute time only with 1 (default: 1)")
    parser.add_argument("--block-sizes", type=str, default=None,
                        help="comma-separated block sizes: sweep fasth's block size instead")
    parser.add_argument("--amortized", action="store_true",
                        help="time one amortized-backend step with qr vs householder orthogonalisation instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dims = [64, 128, 256] if args.quick else [64, 128, 256, 512, 1024]
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(hardware())
    if args.amortized:
        print(f"amortized backend step, float32; process CPU time, median of up to {args.repeats} interleaved steps "
              f"after one warm-up step")
        rows = run_amortized([16, 64], args.repeats, args.budget)
        write_csv(rows, RESULTS / "householder_amortized.csv")
        print(f"wrote {RESULTS / 'householder_amortized.csv'}")
        return
    print(f"X: (d, {args.batch}) float32; process CPU time, median of up to {args.repeats} interleaved steps "
          f"after one warm-up step")
    if torch.get_num_threads() > 1:
        print("note: with several threads, CPU time is summed over them (the work done, not the wall-clock time)")
    if args.block_sizes:
        sizes = [int(s) for s in args.block_sizes.split(",")]
        rows = run_block_sizes(dims, args.batch, sizes, args.repeats, args.budget)
        write_csv(rows, RESULTS / "householder_block_sizes.csv")
        print(f"wrote {RESULTS / 'householder_block_sizes.csv'}")
        return
    rows = run_methods(dims, args.batch, args.repeats, args.budget)
    print_table(rows, dims)
    write_csv(rows, RESULTS / "householder.csv")
    plot(rows, dims, RESULTS / "householder.png")
    print(f"wrote {RESULTS / 'householder.csv'} and {RESULTS / 'householder.png'}")


if __name__ == "__main__":
    main()
