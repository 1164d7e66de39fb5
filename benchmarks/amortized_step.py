"""The amortized backend's gradient-only step at arxiv size, in sparse products' worth.

One training step's eigen work on a drifting operator (forward of ``AmortizedBackend`` on the new
operator, backward of ``pairs.aux_loss``, a fused Adam step on the basis) against one bare sparse
product ``A U`` (``k`` columns) of the same operator, interleaved in the same process so that both
see the same machine load. Reports medians and their ratio, the step cost in products, in wall time and
in this thread's CPU time (the run is single-threaded; CPU time is what other processes on a shared
machine do not inflate). The graph is
``large_graph.py``'s (Chung-Lu, exponent 2.5, small components joined to the giant one), the basis
starts converged (``init="exact"``, as there) and the edge weights drift by ``exp(0.01 N(0,1))``
per step. The operator rebuild (``GraphStructure.normalized_adjacency``) is timed apart: every method needs it.
The step is timed as a user runs it, in the two ways a user gives the weights: one per undirected
pair through ``GraphStructure.undirected_edge_weight`` (the operator is symmetric by construction)
and the same values as a plain per-edge tensor (the backend's input checks then include the value
half of the symmetry check, one comparison of each value with its transpose's).

Run (one thread; ``--profile`` adds a torch.profiler table of two steps):

    OMP_NUM_THREADS=1 python benchmarks/amortized_step.py
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from large_graph import connected_graph  # this directory is on sys.path when the script runs
from lowrank_gnn.eigen import AmortizedBackend
from lowrank_gnn.operators import GraphStructure

#: Both clocks per timed call: wall time, and this thread's CPU time, which other processes on a
#: shared machine do not inflate by preempting this one (the run is single-threaded).
CLOCKS = ("wall", "cpu")


def drifting_weights(structure, drift, generator):
    """Edge weights from one weight per undirected pair, each multiplied by exp(drift N(0,1)) per step."""
    weight = torch.ones(structure.num_pairs, dtype=torch.float64)
    while True:
        weight = weight * torch.exp(drift * torch.randn(structure.num_pairs, generator=generator, dtype=torch.float64))
        yield structure.undirected_edge_weight(weight.float())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=169_343)
    parser.add_argument("--edges", type=int, default=1_166_243)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--steps", type=int, default=15, help="timed steps (and products) per variant")
    parser.add_argument("--drift", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of two steps")
    parser.add_argument("--stack", action="store_true", help="with --profile: group the table by call stack")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="torch.set_flush_denormal(True): Adam's squared gradients of a converged basis can "
                             "underflow into denormal floats, which the CPU handles many times slower")
    args = parser.parse_args()
    if args.flush_denormal:
        torch.set_flush_denormal(True)

    edge_index, _ = connected_graph(args.nodes, args.edges, 2.5, args.seed)  # large_graph.py's arxiv-size graph
    structure = GraphStructure(edge_index, args.nodes)
    weights = drifting_weights(structure, args.drift, torch.Generator().manual_seed(args.seed + 1))
    first = structure.normalized_adjacency(next(weights))
    assert first.symmetric
    backend = AmortizedBackend(args.k, init="exact")  # converged, as in training: an eigsh solve, not timed
    backend.initialize(first)
    optimizer = torch.optim.Adam(backend.parameters(), lr=1e-3, fused=True)
    probe = torch.randn(args.nodes, args.k, generator=torch.Generator().manual_seed(args.seed + 2))

    def step(op):
        optimizer.zero_grad()
        pairs = backend(op)
        pairs.aux_loss.backward()
        optimizer.step()

    names = ("step (pair weights)", "step (edge weights)", "product A U")
    times = {clock: {name: [] for name in names} for clock in CLOCKS}

    def timed(run, *args):
        """(wall, CPU) seconds of one call."""
        wall, cpu = time.perf_counter(), time.thread_time()
        run(*args)
        return time.perf_counter() - wall, time.thread_time() - cpu

    def product(op):
        with torch.no_grad():
            op.matmul(probe)

    for index in range(args.steps + 2):  # two warm-up rounds
        op = structure.normalized_adjacency(next(weights))
        by_pair = timed(step, op)
        bare = timed(product, op)
        op = structure.normalized_adjacency(next(weights).clone())  # the same kind of values, as a plain tensor
        by_edge = timed(step, op)
        if index >= 2:
            for name, value in zip(names, (by_pair, by_edge, bare), strict=True):
                for clock, seconds in zip(CLOCKS, value, strict=True):
                    times[clock][name].append(seconds)
    print(f"n={args.nodes}, nnz={first.nnz}, k={args.k}, {args.steps} steps, threads={torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'median of':24s} {'wall':>9s} {'':13s} {'CPU (this thread)':>22s}")
    medians = {clock: {name: statistics.median(values) for name, values in times[clock].items()} for clock in CLOCKS}
    for name in names:
        row = [f"{1e3 * median[name]:7.1f} ms {median[name] / median['product A U']:5.2f} products"
               for median in (medians[clock] for clock in CLOCKS)]
        print(f"{name:24s} {row[0]}   {row[1]}")
    with torch.no_grad():
        pairs = backend(op)  # the basis after its last Adam step, on the operator of that step
    diagnostics = backend.diagnostics
    print(f"after the last step: relative residual {diagnostics.residual.item():.9e}, "
          f"eigenvalues {pairs.eigenvalues[0].item():.9f} ... {pairs.eigenvalues[-1].item():.9f}, "
          f"checksum of U {pairs.eigenvectors.double().sum().item():.9e}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        operators = [structure.normalized_adjacency(next(weights)) for _ in range(2)]
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_stack=args.stack) as prof:
            for op in operators:
                step(op)
        if args.stack:
            print(prof.key_averages(group_by_stack_n=6).table(sort_by="self_cpu_time_total", row_limit=25))
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
