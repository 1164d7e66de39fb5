"""Band solver against the dense one for the k smallest eigenpairs of sparse graph Laplacians.

For each matrix the script times, interleaved in one process (one thread, CPU seconds of the
calling thread, best of ``--repeats``):

* ``band``: ``lowrank_gnn.linalg.sparse_eigh_extremal(L, k, method="band")`` on the SciPy CSR
  matrix: reverse Cuthill-McKee, LAPACK ``dsbevx`` without eigenvectors, band inverse iteration,
  Rayleigh-Ritz;
* ``dense``: ``lowrank_gnn.linalg.eigh_extremal(L, k)`` on the dense float64 matrix (LAPACK
  ``dsyevr`` with an index range from 64 rows): what the precompute calls for graphs below
  ``BAND_MIN_SIZE``.

Matrices: the normalized Laplacians of synthetic contact-like chains (node ``i`` joined to
``i + 1`` and, with probability 0.25 each, to ``i + 2 .. i + w``; nodes then shuffled, so the
reordering has work to do), for ``n`` in ``--sizes`` and ``w`` in ``--widths``, and of the
``--real`` largest graphs of PROTEINS (when the data root has it). Reported per matrix: ``n``,
the bandwidth ``b`` after reordering, both times, their ratio, and ``band``'s largest residual
``||L u - lambda u||``. The rule ``band_pays`` of ``sparse_eigh_extremal``'s ``"auto"`` method
is read off this table.

Writes ``benchmarks/results/banded_eigh.csv`` and ``banded_eigh.md``.

Example::

    python benchmarks/banded_eigh.py
    python benchmarks/banded_eigh.py --sizes 500 1000 --widths 8 --repeats 3
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from functools import partial
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import scipy.sparse
import torch

from lowrank_gnn.linalg import eigh_extremal, sparse_eigh_extremal

RESULTS = Path(__file__).resolve().parent / "results"


def normalized_laplacian(n: int, rows: np.ndarray, cols: np.ndarray) -> scipy.sparse.csr_matrix:
    adjacency = scipy.sparse.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    adjacency = (adjacency + adjacency.T).tocsr()
    adjacency.data[:] = 1.0
    degree = np.asarray(adjacency.sum(1)).ravel()
    scale = scipy.sparse.diags(np.where(degree > 0, degree, 1.0) ** -0.5)
    return scipy.sparse.csr_matrix(scipy.sparse.eye(n) - scale @ adjacency @ scale)


def contact_chain(n: int, width: int, seed: int) -> scipy.sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for d in range(1, width + 1):
        i = np.nonzero(rng.random(n - d) < (1.0 if d == 1 else 0.25))[0]
        rows.append(i)
        cols.append(i + d)
    order = rng.permutation(n)
    return normalized_laplacian(n, order[np.concatenate(rows)], order[np.concatenate(cols)])


def protein_graphs(count: int) -> List[Tuple[str, scipy.sparse.csr_matrix]]:
    if count <= 0:
        return []
    from lowrank_gnn.data import load_tu

    try:
        dataset = load_tu("PROTEINS")
    except Exception as error:  # no network and no seeded data root
        print(f"PROTEINS skipped: {error}")
        return []
    sizes = np.array([dataset[i].num_nodes for i in range(len(dataset))])
    out = []
    for index in np.argsort(-sizes, kind="stable")[:count]:
        data = dataset[int(index)]
        rows, cols = data.edge_index.numpy()
        out.append((f"PROTEINS[{index}]", normalized_laplacian(data.num_nodes, rows, cols)))
    return out


def bandwidth(matrix: scipy.sparse.csr_matrix) -> int:
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    perm = reverse_cuthill_mckee(matrix, symmetric_mode=True)
    coo = matrix[perm][:, perm].tocoo()
    return int(np.abs(coo.row - coo.col).max())


def cpu_seconds(fn: Callable[[], object]) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 300, 400, 500, 700, 1000, 1500])
    parser.add_argument("--widths", type=int, nargs="+", default=[3, 6, 12, 24, 48], help="chain reach w")
    parser.add_argument("--real", type=int, default=6, help="largest PROTEINS graphs to add")
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "banded_eigh"), help="output path without suffix")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = [(f"chain n={n} w={w}", contact_chain(n, w, seed=n + w)) for n in args.sizes for w in args.widths]
    cases += protein_graphs(args.real)
    sparse_eigh_extremal(cases[0][1], args.k, method="band")  # imports and first-call costs, not timed
    fields = ["matrix", "n", "bandwidth", "b_over_n", "band_s", "dense_s", "band_over_dense", "band_residual"]
    rows = []
    for name, matrix in cases:
        dense = torch.from_numpy(matrix.toarray())
        band = partial(sparse_eigh_extremal, matrix, args.k, method="band")
        full = partial(eigh_extremal, dense, args.k)
        band_s, dense_s = float("inf"), float("inf")
        for _ in range(args.repeats):  # interleaved: a change of load hits both alike
            band_s, dense_s = min(band_s, cpu_seconds(band)), min(dense_s, cpu_seconds(full))
        values, vectors = sparse_eigh_extremal(matrix, args.k, method="band")
        u, w = vectors.numpy(), values.numpy()
        residual = float(np.linalg.norm(matrix @ u - u * w, axis=0).max())
        n, b = matrix.shape[0], bandwidth(matrix)
        row = dict(matrix=name, n=n, bandwidth=b, b_over_n=f"{b / n:.3f}", band_s=f"{band_s:.4f}",
                   dense_s=f"{dense_s:.4f}", band_over_dense=f"{band_s / dense_s:.2f}",
                   band_residual=f"{residual:.1e}")
        rows.append(row)
        print(" | ".join(str(v) for v in row.values()), flush=True)
    load = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"k={args.k}, threads=1, {platform.processor() or platform.machine()}, load average "
             f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}", "",
             "| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(str(row[f]) for f in fields) + " |" for row in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(lines[0])


if __name__ == "__main__":
    main()
