"""Dense symmetric eigensolvers on the small graphs (under ``--max-nodes`` nodes) of TU datasets.

The dense float64 Laplacians of every graph below ``--max-nodes`` nodes are built once (grouped by
size, as the dataset precompute batches them), then each driver solves all of them, the drivers
in turn (round-robin), ``--repeats`` times, keeping each one's best CPU time:

* ``torch_batched``: ``torch.linalg.eigh`` once per size batch (LAPACK ``?syevd``), what the
  precompute runs;
* ``scipy_syev`` / ``scipy_syevd`` / ``scipy_syevr``: SciPy's LAPACK wrappers per matrix, all pairs;
* ``scipy_syevr_subset``: ``dsyevr`` per matrix for the ``k`` smallest pairs only;
* ``numpy_batched``: ``numpy.linalg.eigh`` once per size batch.

Example::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/small_graph_eigh.py
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from scipy.linalg import lapack

from lowrank_gnn.data import load_tu
from lowrank_gnn.transforms.packed import dense_batches, normalized_edges
from lowrank_gnn.transforms.precompute import pack_in_memory


def drivers(batches: List[torch.Tensor], k: int) -> Dict[str, Callable[[], object]]:
    arrays = [batch.numpy() for batch in batches]

    def per_matrix(solve: Callable[[np.ndarray], object]) -> Callable[[], object]:
        return lambda: [solve(matrix) for batch in arrays for matrix in batch]

    return {
        "torch_batched": lambda: [torch.linalg.eigh(batch) for batch in batches],
        "scipy_syev": per_matrix(lambda a: lapack.dsyev(a, compute_v=1, lower=1, lwork=max(1, 3 * a.shape[0]))),
        "scipy_syevd": per_matrix(lambda a: lapack.dsyevd(a, compute_v=1, lower=1)),
        "scipy_syevr": per_matrix(lambda a: lapack.dsyevr(a, compute_v=1, lower=1)),
        "scipy_syevr_subset": per_matrix(lambda a: lapack.dsyevr(a, compute_v=1, range="I", lower=1, il=1,
                                                                 iu=min(k, a.shape[0]))),
        "numpy_batched": lambda: [np.linalg.eigh(array) for array in arrays],
    }


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["MUTAG", "PROTEINS", "ENZYMES"])
    parser.add_argument("--max-nodes", type=int, default=32, help="graphs with fewer nodes are solved")
    parser.add_argument("--k", type=int, default=9, help="pairs wanted by the subset driver")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    columns: Dict[str, Dict[str, float]] = {}
    for name in args.datasets:
        packed = pack_in_memory(load_tu(name))
        chosen = ((packed.num_nodes > 0) & (packed.num_nodes < args.max_nodes)).nonzero().squeeze(1)
        entries = normalized_edges(packed, "laplacian")
        batches = [batch.operators.clone() for batch in dense_batches(packed, entries, chosen)]
        methods = drivers(batches, args.k)
        best = {method: float("inf") for method in methods}
        for _ in range(args.repeats):
            for method, solve in methods.items():
                start = time.thread_time()
                solve()
                best[method] = min(best[method], time.thread_time() - start)
        columns[f"{name} ({chosen.numel()} graphs)"] = best
    load = os.getloadavg()
    print(f"CPU ms, best of {args.repeats}, 1 thread, graphs under {args.max_nodes} nodes; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| driver | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for method in next(iter(columns.values())):
        print(f"| {method} | " + " | ".join(f"{best[method] * 1e3:.1f}" for best in columns.values()) + " |")


if __name__ == "__main__":
    main()
