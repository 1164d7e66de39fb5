"""Batched divide and conquer (``batched_eigh``) against ``torch.linalg.eigh``, same batch, same run.

For every cell of the grid (batch size x matrix size) both solvers decompose the same batch
of random symmetric matrices; the script reports the median wall time of each, the ratio
``dc / lapack`` (below 1: the divide and conquer is faster) and the divide and conquer's
accuracy (relative residual, orthogonality, eigenvalue error against float64 LAPACK).
Cells whose estimated time exceeds ``--cell-budget`` seconds, or whose working set
exceeds ``--max-memory-gb``, are skipped and listed as such.

A second table measures the backend's own overhead: ``resolve_eigen_backend("batched_dc", k)``
with ``method="auto"`` (``torch.linalg.eigh`` on a CPU, plus the input checks, the
symmetrisation, the ``which`` order and the sign convention) against a raw
``torch.linalg.eigh`` of the same batch, the two calls alternating ``--overhead-repeats`` times
(medians of process CPU time; ratio backend / raw, 1.10 = 10% overhead).

Writes ``benchmarks/results/batched_eigh.csv``, ``.md`` (the tables) and ``.png`` (heatmap).

Example::

    python benchmarks/batched_eigh.py --quick
    python benchmarks/batched_eigh.py            # full grid: batch 64/512/4096, n = 4..256
    python benchmarks/batched_eigh.py --overhead-only --threads 1
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

from lowrank_gnn.eigen import batched_eigh, resolve_eigen_backend

RESULTS = Path(__file__).resolve().parent / "results"
FULL_GRID = ([64, 512, 4096], [4, 8, 16, 32, 64, 128, 256])
QUICK_GRID = ([64, 512], [4, 16, 64])
#: (batch, n) of the backend-overhead table.
OVERHEAD_CELLS = [(2048, 8), (2048, 16), (512, 64)]
#: Largest (P, m, m) arrays the divide and conquer holds at once, per matrix: about 12 of size n^2.
WORKING_ARRAYS = 12


def random_batch(batch: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, n, generator=g, dtype=torch.float64)
    return ((a + a.mT) / 2).to(dtype)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(first, second, repeats: int):
    """Medians of ``first()`` and ``second()`` timed alternately (so load changes hit both alike).

    Process CPU time, not wall time: on a shared machine wall time mostly measures the other jobs.
    """
    first(), second()  # warm-up
    times_first: list = []
    times_second: list = []
    for _ in range(repeats):
        for fn, times in ((first, times_first), (second, times_second)):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
    return statistics.median(times_first), statistics.median(times_second)


def backend_overhead(dtype: torch.dtype, repeats: int, cells=OVERHEAD_CELLS):
    """Rows ``(batch, n, k, raw ms, backend ms, ratio)``: the batched_dc backend (``method="auto"``) vs raw eigh."""
    rows = []
    for batch, n in cells:
        a = random_batch(batch, n, dtype, seed=n)
        for k in sorted({n, min(4, n)}, reverse=True):
            backend = resolve_eigen_backend("batched_dc", k=k, which="largest", method="auto")
            raw, wrapped = interleaved(lambda: torch.linalg.eigh(a), lambda: backend(a), repeats)  # noqa: B023
            rows.append({"batch": batch, "n": n, "k": k, "raw_ms": 1e3 * raw, "backend_ms": 1e3 * wrapped,
                         "ratio": wrapped / raw})
            print(f"overhead batch {batch:5d} n {n:3d} k {k:3d}: torch.linalg.eigh {1e3 * raw:8.2f} ms  "
                  f"backend {1e3 * wrapped:8.2f} ms  ratio {wrapped / raw:.3f}")
    return rows


def overhead_table(rows) -> list:
    table = ["| batch | n | k | torch.linalg.eigh (ms) | batched_dc backend, auto (ms) | ratio backend / raw |",
             "|---|---|---|---|---|---|"]
    table += [f"| {r['batch']} | {r['n']} | {r['k']} | {r['raw_ms']:.2f} | {r['backend_ms']:.2f} | {r['ratio']:.3f} |"
              for r in rows]
    return table


def accuracy(a: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor):
    a, lam, u = a.double(), values.double(), vectors.double()
    norm = torch.linalg.matrix_norm(a).clamp_min(1e-300)
    residual = (torch.linalg.matrix_norm(a @ u - u * lam.unsqueeze(-2)) / norm).max()
    orthogonality = (u.mT @ u - torch.eye(a.shape[-1], dtype=torch.float64)).abs().max()
    value_error = ((lam - torch.linalg.eigvalsh(a)).abs().amax(-1) / norm).max()
    return float(residual), float(orthogonality), float(value_error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid: batch 64/512, n = 4/16/64")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median) (default: 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--cell-budget", type=float, default=60.0,
                        help="skip a cell whose estimated total time exceeds this many seconds (default: 60)")
    parser.add_argument("--max-memory-gb", type=float, default=6.0,
                        help="skip a cell whose estimated working set exceeds this (default: 6)")
    parser.add_argument("--overhead-repeats", type=int, default=21,
                        help="alternating timed runs per cell of the overhead table (default: 21)")
    parser.add_argument("--overhead-only", action="store_true", help="only the backend-overhead table")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    batches, sizes = QUICK_GRID if args.quick else FULL_GRID
    print(f"cpu count {os.cpu_count()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}, dtype {args.dtype}, repeats {args.repeats}")

    overhead = backend_overhead(dtype, args.overhead_repeats)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.overhead_only:
        (RESULTS / "batched_eigh_overhead.md").write_text("\n".join(overhead_table(overhead)) + "\n")
        print("\n".join(overhead_table(overhead)))
        return

    rows = []
    per_matrix: dict = {}  # n -> seconds per matrix of (lapack + dc) at the largest batch run so far
    for n in sizes:
        for batch in batches:
            cell = {"batch": batch, "n": n}
            memory = WORKING_ARRAYS * batch * n * n * torch.finfo(dtype).bits / 8 / 2 ** 30
            estimate = per_matrix.get(n, 0.0) * batch * (args.repeats + 1)
            if memory > args.max_memory_gb or estimate > args.cell_budget:
                why = (f"working set ~{memory:.1f} GB" if memory > args.max_memory_gb
                       else f"estimated {estimate:.0f} s")
                print(f"batch {batch:5d} n {n:4d}: skipped ({why})")
                rows.append({**cell, "skipped": why})
                continue
            a = random_batch(batch, n, dtype, seed=n)
            lapack = timed(lambda: torch.linalg.eigh(a), args.repeats)  # noqa: B023 (called at once)
            dc = timed(lambda: batched_eigh(a, method="dc"), args.repeats)  # noqa: B023
            per_matrix[n] = (lapack + dc) / batch
            residual, orthogonality, value_error = accuracy(a, *batched_eigh(a, method="dc"))
            ref_residual, ref_orthogonality, _ = accuracy(a, *torch.linalg.eigh(a))
            row = {**cell, "lapack_ms": 1e3 * lapack, "dc_ms": 1e3 * dc, "ratio": dc / lapack,
                   "lapack_us_per_matrix": 1e6 * lapack / batch, "dc_us_per_matrix": 1e6 * dc / batch,
                   "dc_residual": residual, "dc_orthogonality": orthogonality, "dc_eigenvalue_error": value_error,
                   "lapack_residual": ref_residual, "lapack_orthogonality": ref_orthogonality, "skipped": ""}
            rows.append(row)
            print(f"batch {batch:5d} n {n:4d}: lapack {row['lapack_ms']:9.1f} ms  dc {row['dc_ms']:9.1f} ms  "
                  f"ratio {row['ratio']:6.2f}  residual {residual:.1e} (lapack {ref_residual:.1e})  "
                  f"orth {orthogonality:.1e}  eig err {value_error:.1e}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    fields = ["batch", "n", "lapack_ms", "dc_ms", "ratio", "lapack_us_per_matrix", "dc_us_per_matrix",
              "dc_residual", "dc_orthogonality", "dc_eigenvalue_error", "lapack_residual", "lapack_orthogonality",
              "skipped"]
    with open(RESULTS / "batched_eigh.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    table = ["| batch | n | torch.linalg.eigh (ms) | batched D&C (ms) | ratio D&C / LAPACK | D&C residual | "
             "D&C orthogonality | LAPACK residual |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["skipped"]:
            table.append(f"| {row['batch']} | {row['n']} | skipped: {row['skipped']} | | | | | |")
        else:
            table.append(f"| {row['batch']} | {row['n']} | {row['lapack_ms']:.1f} | {row['dc_ms']:.1f} | "
                         f"{row['ratio']:.2f} | {row['dc_residual']:.1e} | {row['dc_orthogonality']:.1e} | "
                         f"{row['lapack_residual']:.1e} |")
    table += ["", "Backend overhead:", ""] + overhead_table(overhead)
    (RESULTS / "batched_eigh.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    plot(rows, batches, sizes, args)


def plot(rows, batches, sizes, args) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install matplotlib): no heatmap written")
        return
    import math

    grid = [[math.nan] * len(sizes) for _ in batches]
    for row in rows:
        if not row["skipped"]:
            grid[batches.index(row["batch"])][sizes.index(row["n"])] = row["ratio"]
    fig, ax = plt.subplots(figsize=(1.1 * len(sizes) + 2, 0.8 * len(batches) + 1.5))
    logs = [[math.log10(v) if v == v else math.nan for v in line] for line in grid]
    image = ax.imshow(logs, cmap="RdYlGn_r", vmin=-1, vmax=1, aspect="auto")
    for i, line in enumerate(grid):
        for j, value in enumerate(line):
            ax.text(j, i, "skipped" if value != value else f"{value:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(sizes)), [str(n) for n in sizes])
    ax.set_yticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlabel("n")
    ax.set_ylabel("batch")
    ax.set_title(f"batched D&C time / torch.linalg.eigh time ({args.dtype}, {torch.get_num_threads()} threads)\n"
                 "< 1: D&C faster")
    fig.colorbar(image, ax=ax, label="log10 ratio")
    fig.tight_layout()
    fig.savefig(RESULTS / "batched_eigh.png", dpi=120)
    print(f"wrote {RESULTS / 'batched_eigh.png'}")


if __name__ == "__main__":
    main()
